//! [`KvServer`]: one KV node: a synevi [`Node`] over gRPC with the chosen store, and the
//! HTTP API in front of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synevi::network::GrpcNetwork;
use synevi::persistence::{LmdbStore, MemStore};
use synevi::types::{Member, Network};
use synevi::{Config, Node, SyneviError, Ulid};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{KvBackend, MeasuredStore, SyneviBackend};
use crate::executor::KvExecutor;
use crate::state::{AppState, Health, Limits, MemberView, Reachability};
use crate::transaction::KvTx;

/// How long one health probe waits for its `Ping` to commit before it tries again.
const PROBE_WAIT_MAX: Duration = Duration::from_secs(2);
/// The pause between failed health probes.
const PROBE_RETRY: Duration = Duration::from_millis(200);
/// How often the members' gRPC ports are probed for `/cluster`.
const MEMBER_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a member's TCP connect may take before it counts as unreachable.
const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long shutdown waits for HTTP requests in flight before it drops them.
const HTTP_DRAIN_MAX: Duration = Duration::from_secs(5);
/// Added to the node's transaction timeout for the HTTP layer's own deadline (a safety
/// net: the node answers within its timeout).
const REQUEST_TIMEOUT_SLACK: Duration = Duration::from_secs(2);

/// Where a node keeps its protocol state and event log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// LMDB on disk: the node's data survives restarts and crashes.
    #[default]
    Lmdb,
    /// In memory: everything is lost when the process ends.
    Memory,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Lmdb => "lmdb",
            StoreKind::Memory => "memory",
        })
    }
}

/// Another member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its serial (unique in the cluster, 1..=65535).
    pub serial: u16,
    /// Its node id.
    pub node_id: Ulid,
    /// Its gRPC URL, such as `http://10.0.0.2:13001`.
    pub url: String,
}

/// Everything needed to start one node.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This node's serial.
    pub serial: u16,
    /// This node's id.
    pub node_id: Ulid,
    /// Where the gRPC server listens (peer traffic).
    pub grpc_listen: SocketAddr,
    /// How peers reach this node's gRPC server.
    pub grpc_url: String,
    /// Where the HTTP API listens (port 0: the OS picks one; see [`KvServer::http_addr`]).
    pub http_listen: SocketAddr,
    /// The other members.
    pub peers: Vec<Peer>,
    /// The store.
    pub store: StoreKind,
    /// The LMDB directory (unused with [`StoreKind::Memory`]).
    pub store_path: PathBuf,
    /// Client input limits.
    pub limits: Limits,
    /// How long a transaction may take before the client gets 503
    /// ([`Config::transaction_timeout_ms`]).
    pub transaction_timeout_ms: u64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot work.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store or the node failed to open (the store belongs to another node, the gRPC
    /// port is taken, ...).
    #[error("cannot start the node: {0}")]
    Node(#[from] SyneviError),
}

/// A running KV node: the HTTP API is served and the synevi node is open. It becomes
/// ready ([`Health::Ready`], `/health` 200) once a transaction commits.
pub struct KvServer {
    state: AppState,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl KvServer {
    /// Binds the HTTP API (answering 503 while the node opens), opens the store (replaying
    /// its event log into the executor), starts the node, adds the peers, and starts probing
    /// for a quorum. Returns once the node is open; it is ready when `/health` says so.
    pub async fn start(settings: NodeSettings) -> Result<KvServer, StartError> {
        validate(&settings)?;
        let listener = TcpListener::bind(settings.http_listen)
            .await
            .map_err(|source| StartError::Http {
                addr: settings.http_listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Http {
            addr: settings.http_listen,
            source,
        })?;
        let members = settings
            .peers
            .iter()
            .map(|peer| MemberView::new(peer.serial, peer.node_id, peer.url.clone()))
            .collect();
        let request_timeout =
            Duration::from_millis(settings.transaction_timeout_ms) + REQUEST_TIMEOUT_SLACK;
        let state = AppState::new(
            settings.serial,
            settings.node_id,
            settings.grpc_url.clone(),
            members,
            settings.limits,
            request_timeout,
        );
        let (stop, stopped) = watch::channel(false);
        let http = tokio::spawn(serve_http(listener, state.clone(), stopped.clone()));
        let mut server = KvServer {
            state: state.clone(),
            http_addr,
            stop,
            http,
            tasks: Vec::new(),
        };
        let backend = match open_node(&settings).await {
            Ok(backend) => backend,
            Err(error) => {
                server.shutdown().await;
                return Err(error);
            }
        };
        state.set_backend(Arc::clone(&backend));
        state.set_health(Health::Starting {
            reason: "waiting for a quorum".into(),
        });
        let probe_wait = Duration::from_millis(settings.transaction_timeout_ms).min(PROBE_WAIT_MAX);
        server.tasks.push(tokio::spawn(probe_readiness(
            state.clone(),
            backend,
            probe_wait,
            stopped.clone(),
        )));
        server
            .tasks
            .push(tokio::spawn(probe_members(state, stopped)));
        Ok(server)
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The state the HTTP handlers share (health, metrics, the node).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Waits until the node is ready (a transaction committed), at most `limit`; whether it
    /// became ready.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut health = self.state.watch_health();
        tokio::time::timeout(limit, health.wait_for(|health| *health == Health::Ready))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Stops serving: refuses new HTTP requests, stops the node (requests in flight get
    /// 503), and waits for the HTTP server and the node's tasks to finish. What the node
    /// already handed to its store is durable.
    pub async fn shutdown(mut self) {
        self.state.set_health(Health::Stopping);
        let _ = self.stop.send(true);
        if let Some(backend) = self.state.backend() {
            backend.shutdown().await;
        }
        if tokio::time::timeout(HTTP_DRAIN_MAX, &mut self.http)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still in flight after {HTTP_DRAIN_MAX:?}; dropping them");
            self.http.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn validate(settings: &NodeSettings) -> Result<(), StartError> {
    let invalid = |reason: String| Err(StartError::InvalidSettings(reason));
    if settings.serial == 0 {
        return invalid("the serial must be between 1 and 65535".into());
    }
    if settings.transaction_timeout_ms == 0 {
        return invalid("the transaction timeout must be above 0 ms".into());
    }
    if settings.limits.key_bytes_max == 0 || settings.limits.value_bytes_max == 0 {
        return invalid("the key and value limits must be above 0 bytes".into());
    }
    let mut serials = vec![settings.serial];
    for peer in &settings.peers {
        if serials.contains(&peer.serial) {
            return invalid(format!(
                "serial {} appears twice (each member needs its own serial)",
                peer.serial
            ));
        }
        if peer.serial == 0 {
            return invalid("peer serials must be between 1 and 65535".into());
        }
        serials.push(peer.serial);
    }
    Ok(())
}

async fn serve_http(listener: TcpListener, state: AppState, mut stopped: watch::Receiver<bool>) {
    let app = crate::api::router(state);
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "the HTTP server failed");
    }
}

async fn open_node(settings: &NodeSettings) -> Result<Arc<dyn KvBackend>, StartError> {
    let config = Config {
        transaction_timeout_ms: settings.transaction_timeout_ms,
        ..Config::default()
    };
    config.validate()?;
    let network = GrpcNetwork::new(
        settings.grpc_listen,
        settings.grpc_url.clone(),
        settings.node_id,
        settings.serial,
    );
    match settings.store {
        StoreKind::Memory => {
            let store = MemStore::new(settings.serial)?;
            start_node(settings, config, network, store).await
        }
        StoreKind::Lmdb => {
            let path = settings.store_path.clone();
            let serial = settings.serial;
            let store = tokio::task::spawn_blocking(move || LmdbStore::new(path, serial))
                .await
                .map_err(|error| {
                    SyneviError::Store(format!("opening the LMDB store panicked: {error}"))
                })??;
            start_node(settings, config, network, store).await
        }
    }
}

async fn start_node<S: MeasuredStore>(
    settings: &NodeSettings,
    config: Config,
    network: GrpcNetwork,
    store: S,
) -> Result<Arc<dyn KvBackend>, StartError> {
    let executor = Arc::new(KvExecutor::new());
    // The network learns the members' addresses before the node starts: a node restarted
    // from its store knows its members already, and what it sends them from its first round
    // waits in the node only until `add_member` below.
    for peer in &settings.peers {
        network
            .add_member(Member {
                node_id: peer.node_id,
                serial: peer.serial,
                host: peer.url.clone(),
            })
            .await?;
    }
    let node = Node::with_config(
        settings.node_id,
        settings.serial,
        network.clone(),
        Arc::clone(&executor),
        store,
        config,
    )
    .await?;
    for peer in &settings.peers {
        if let Err(error) = node
            .add_member(peer.node_id, peer.serial, peer.url.clone(), true)
            .await
        {
            node.shutdown().await;
            return Err(error.into());
        }
    }
    tracing::info!(
        serial = settings.serial,
        node_id = %settings.node_id,
        applied = node.status().applied_count,
        keys = executor.len(),
        "node open"
    );
    Ok(Arc::new(SyneviBackend::new(node, network, executor)))
}

/// Resolves once `stopped` says stop (or its sender is gone).
async fn stop_signal(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Submits `Ping` transactions until one commits, whenever the node is not known to reach
/// a quorum (at start, and after a client's transaction found none).
async fn probe_readiness(
    state: AppState,
    backend: Arc<dyn KvBackend>,
    probe_wait: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if state.health() == Health::Ready {
            tokio::select! {
                _ = state.probe_requested() => continue,
                _ = stop_signal(&mut stopped) => return,
            }
        }
        let probe =
            tokio::time::timeout(probe_wait, backend.transaction(Ulid::new().0, KvTx::Ping));
        let outcome = tokio::select! {
            outcome = probe => outcome,
            _ = stop_signal(&mut stopped) => return,
        };
        let reason = match outcome {
            Ok(Ok(_)) => {
                state.set_health(Health::Ready);
                tracing::info!(serial = state.serial(), "ready: a quorum is reachable");
                continue;
            }
            Ok(Err(SyneviError::ShutDown)) => return,
            Ok(Err(error)) => format!("waiting for a quorum: {error}"),
            Err(_) => format!(
                "waiting for a quorum: the health probe did not commit within {} ms",
                probe_wait.as_millis()
            ),
        };
        match state.health() {
            Health::Starting { .. } => state.set_health(Health::Starting { reason }),
            Health::NoQuorum { .. } => state.set_health(Health::NoQuorum { reason }),
            Health::Ready | Health::Stopping => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_RETRY) => {}
            _ = stop_signal(&mut stopped) => return,
        }
    }
}

/// Tries a TCP connection to every member's gRPC address each second, for `/cluster`.
async fn probe_members(state: AppState, mut stopped: watch::Receiver<bool>) {
    loop {
        for member in state.members() {
            let reachability = match authority_of(&member.url) {
                None => Reachability::Unreachable {
                    error: format!("cannot find host and port in {:?}", member.url),
                },
                Some(authority) => {
                    match tokio::time::timeout(
                        MEMBER_CONNECT_TIMEOUT,
                        TcpStream::connect(authority),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Reachability::Reachable,
                        Ok(Err(error)) => Reachability::Unreachable {
                            error: error.to_string(),
                        },
                        Err(_) => Reachability::Unreachable {
                            error: format!(
                                "no TCP connection within {} ms",
                                MEMBER_CONNECT_TIMEOUT.as_millis()
                            ),
                        },
                    }
                }
            };
            member.set_reachability(reachability);
        }
        tokio::select! {
            _ = tokio::time::sleep(MEMBER_PROBE_INTERVAL) => {}
            _ = stop_signal(&mut stopped) => return,
        }
    }
}

/// `host:port` of a URL such as `http://10.0.0.2:13001/`.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(
            authority_of("http://10.0.0.2:13001"),
            Some("10.0.0.2:13001")
        );
        assert_eq!(authority_of("https://node2:13001/"), Some("node2:13001"));
        assert_eq!(authority_of("node2:1"), Some("node2:1"));
        assert_eq!(authority_of("http://"), None);
    }
}
