//! [`AppState`]: what the HTTP handlers share: the node (once it is open), its health, its
//! members as this node sees them, the limits and the metrics.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use synevi::Ulid;
use tokio::sync::{watch, Notify};

use crate::backend::KvBackend;
use crate::metrics::Metrics;

/// Size limits on client input, checked before anything reaches consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Limits {
    /// The longest key accepted, in bytes of UTF-8. Default 1 KiB.
    pub key_bytes_max: usize,
    /// The longest value accepted, in bytes of UTF-8. Default 1 MiB. Values travel inside
    /// protocol messages, whose frames the gRPC network limits to 4 MiB by default: keep
    /// this well below that.
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 1024,
            value_bytes_max: 1024 * 1024,
        }
    }
}

impl Limits {
    /// The largest request body accepted: a CAS body holds two values, and JSON may escape
    /// each byte of them into up to six (`\u0000`). Anything larger cannot be valid.
    pub fn body_bytes_max(&self) -> usize {
        self.value_bytes_max
            .saturating_mul(12)
            .saturating_add(self.key_bytes_max)
            .saturating_add(4096)
    }
}

/// Whether a node serves requests, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// The node is opening its store, replaying its event log, or has not yet reached a
    /// quorum since it started.
    Starting {
        /// What it waits for.
        reason: String,
    },
    /// A transaction (the health probe or a client's) committed: a quorum is reachable.
    Ready,
    /// A client's transaction found no quorum in time; the probe runs again until one does.
    NoQuorum {
        /// The error the transaction got.
        reason: String,
    },
    /// The node is shutting down.
    Stopping,
}

/// What this node last saw of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Not probed yet.
    Unknown,
    /// A TCP connection to its gRPC address succeeded at the last probe.
    Reachable,
    /// The last TCP connection attempt failed.
    Unreachable {
        /// Why.
        error: String,
    },
}

/// A member of the cluster, as this node knows it.
#[derive(Debug)]
pub struct MemberView {
    /// Its serial.
    pub serial: u16,
    /// Its node id.
    pub node_id: Ulid,
    /// Its gRPC URL.
    pub url: String,
    reachability: Mutex<(Reachability, Instant)>,
}

impl MemberView {
    /// A member not probed yet.
    pub fn new(serial: u16, node_id: Ulid, url: String) -> Self {
        MemberView {
            serial,
            node_id,
            url,
            reachability: Mutex::new((Reachability::Unknown, Instant::now())),
        }
    }

    /// What the last probe found, and since when it has been so.
    pub fn reachability(&self) -> (Reachability, Duration) {
        let guard = lock(&self.reachability);
        (guard.0.clone(), guard.1.elapsed())
    }

    /// Records a probe's finding.
    pub fn set_reachability(&self, reachability: Reachability) {
        let mut guard = lock(&self.reachability);
        if guard.0 != reachability {
            *guard = (reachability, Instant::now());
        }
    }
}

/// The values behind these locks are replaced whole, so whatever a panicking thread left is
/// valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Shared {
    serial: u16,
    node_id: Ulid,
    grpc_url: String,
    limits: Limits,
    request_timeout: Duration,
    backend: OnceLock<Arc<dyn KvBackend>>,
    health: watch::Sender<Health>,
    probe: Notify,
    metrics: Metrics,
    members: Vec<MemberView>,
}

/// The state every HTTP handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    /// The state of a node that is starting: no backend yet, [`Health::Starting`].
    ///
    /// `request_timeout` bounds how long a request waits for its transaction, on top of the
    /// node's own timeout (a safety net: the node answers within its own timeout).
    pub fn new(
        serial: u16,
        node_id: Ulid,
        grpc_url: String,
        members: Vec<MemberView>,
        limits: Limits,
        request_timeout: Duration,
    ) -> Self {
        let (health, _) = watch::channel(Health::Starting {
            reason: "the node is opening its store and replaying its event log".into(),
        });
        AppState {
            shared: Arc::new(Shared {
                serial,
                node_id,
                grpc_url,
                limits,
                request_timeout,
                backend: OnceLock::new(),
                health,
                probe: Notify::new(),
                metrics: Metrics::new(),
                members,
            }),
        }
    }

    /// This node's serial.
    pub fn serial(&self) -> u16 {
        self.shared.serial
    }

    /// This node's id.
    pub fn node_id(&self) -> Ulid {
        self.shared.node_id
    }

    /// This node's gRPC URL.
    pub fn grpc_url(&self) -> &str {
        &self.shared.grpc_url
    }

    /// The input limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// How long a request waits for its transaction at most.
    pub fn request_timeout(&self) -> Duration {
        self.shared.request_timeout
    }

    /// The node, once it is open.
    pub fn backend(&self) -> Option<&Arc<dyn KvBackend>> {
        self.shared.backend.get()
    }

    /// Hands over the open node (once; later calls are ignored).
    pub fn set_backend(&self, backend: Arc<dyn KvBackend>) {
        let _ = self.shared.backend.set(backend);
    }

    /// The other members.
    pub fn members(&self) -> &[MemberView] {
        &self.shared.members
    }

    /// The request metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The node's health now.
    pub fn health(&self) -> Health {
        self.shared.health.borrow().clone()
    }

    /// A receiver of every health change (await readiness with
    /// `watch_health().wait_for(|h| *h == Health::Ready)`).
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Sets the health, unless the node is already stopping (which is final).
    pub fn set_health(&self, health: Health) {
        self.shared.health.send_if_modified(|current| {
            if *current == Health::Stopping || *current == health {
                return false;
            }
            *current = health;
            true
        });
    }

    /// A transaction found no quorum in time: the node is no longer known to serve; wake the
    /// prober, which marks it ready again once a probe commits.
    pub fn quorum_lost(&self, reason: String) {
        if self.health() == Health::Ready {
            self.set_health(Health::NoQuorum { reason });
            self.shared.probe.notify_one();
        }
    }

    /// Resolves when [`AppState::quorum_lost`] asks for a new probe.
    pub async fn probe_requested(&self) {
        self.shared.probe.notified().await;
    }
}
