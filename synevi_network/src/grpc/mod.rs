//! [`GrpcNetwork`]: nodes in different processes and on different hosts, over gRPC
//! (tonic + prost), with one long-lived, batched stream per peer.

mod config;
mod peer;
mod server;
mod stats;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use synevi_types::{Envelope, Inbox, Member, Network, Serial, SyneviError, Ulid};
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{ClientTlsConfig, Endpoint, Server, ServerTlsConfig, Uri};

pub use config::{GrpcConfig, TlsConfig, FRAME_BYTES_MAX_FLOOR};
pub use stats::GrpcStats;

use config::TlsMaterial;
use peer::{PeerContext, PeerHandle};
use stats::{add, worth_logging, Counters};

/// The code generated from `proto/synevi.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub(crate) mod proto {
    tonic::include_proto!("synevi.v1");
}

/// The largest `StreamSummary` a sender accepts as the answer to its stream: a few varints.
const SUMMARY_BYTES_MAX: usize = 1024;

/// How long `shutdown` waits for the server and the peers' tasks to finish before it stops
/// them by force.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the sender tasks, the server and the network handle share.
pub(crate) struct Shared {
    pub(crate) serial: Serial,
    pub(crate) node_id: Ulid,
    pub(crate) config: Arc<GrpcConfig>,
    tls: Option<TlsMaterial>,
    /// The members, each with its queue and sender task.
    peers: RwLock<HashMap<Serial, PeerHandle>>,
    pub(crate) counters: Arc<Counters>,
    /// Cancelled by `shutdown`; every task and stream of the network ends with it.
    cancel: CancellationToken,
    /// The runtime `start` ran on: the server's tasks run there, and so do the peers'
    /// (`add_member` may be called from anywhere; a node starts its network on its core's
    /// thread, `Config::network_on_core_thread`).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Shared {
    fn peers(&self) -> RwLockReadGuard<'_, HashMap<Serial, PeerHandle>> {
        // The map is only ever inserted into or drained, never left half-updated by a
        // panic, so a poisoned lock still guards consistent data.
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, HashMap<Serial, PeerHandle>> {
        self.peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_member(&self, serial: Serial) -> bool {
        self.peers().contains_key(&serial)
    }
}

enum Lifecycle {
    Created,
    Running { server: JoinHandle<()> },
    ShutDown,
}

/// A [`Network`] over gRPC: nodes in different processes and on different hosts.
///
/// - **One stream per peer.** For every member the network keeps one HTTP/2 connection
///   with one long-lived client-streaming call (`synevi.v1.Peer/Stream`) open, and sends
///   frames (`Batch`es of envelopes) on it. No connection and no call per message.
/// - **Batching.** A frame carries every envelope that queued up for the peer while the
///   previous frame was being written (up to [`GrpcConfig::batch_envelopes_max`] and
///   [`GrpcConfig::frame_bytes_max`]); an idle link sends each envelope at once.
/// - **Never blocks.** [`Network::send`] pushes into the peer's bounded queue and returns.
///   When the queue is full, the newest envelope is dropped and counted (see
///   [`GrpcStats`]); the protocol's retries and recovery cover lost messages.
/// - **Faults.** A peer that is down, slow or restarting is reconnected with capped,
///   jittered exponential back-off; each peer has its own task, so one bad peer never
///   holds up the others. Received envelopes that are malformed, not addressed to this
///   node, or from a serial that is not a member are logged and dropped.
/// - **Members before the start.** [`Network::add_member`] may be called before
///   [`Network::start`]: what is sent to such a member waits in its queue, and its task
///   starts with the network. (A node restarted from a store already knows its members'
///   serials, not their addresses, and holds what it sends them until the application adds
///   them through `Node::add_member`, or for 5 s: adding them to the network before
///   handing it to the node, as `synevi-kv` does, lets those envelopes go at once.)
/// - **TLS.** Optional mutual TLS ([`TlsConfig`]): off by default.
///
/// ```no_run
/// # async fn run(inbox: std::sync::Arc<dyn synevi_types::Inbox>) -> Result<(), synevi_types::SyneviError> {
/// use synevi_network::GrpcNetwork;
/// use synevi_types::{Member, Network, Ulid};
///
/// let network = GrpcNetwork::new(
///     "0.0.0.0:13001".parse().expect("a socket address"),
///     "http://10.0.0.1:13001".to_string(),
///     Ulid::new(),
///     1,
/// );
/// network.start(inbox).await?;
/// network
///     .add_member(Member { node_id: Ulid::new(), serial: 2, host: "http://10.0.0.2:13001".into() })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrpcNetwork {
    shared: Arc<Shared>,
    socket_addr: SocketAddr,
    public_url: String,
    local_addr: Arc<OnceLock<SocketAddr>>,
    lifecycle: Arc<tokio::sync::Mutex<Lifecycle>>,
}

impl GrpcNetwork {
    /// A network for node `node_id` / `serial` that will listen on `socket_addr` (port 0
    /// picks a free port; see [`GrpcNetwork::local_addr`]) and that peers reach at
    /// `public_url`. Default configuration: plain HTTP/2, the limits of
    /// [`GrpcConfig::default`]. Nothing happens until [`Network::start`] and
    /// [`Network::add_member`], which report errors.
    pub fn new(socket_addr: SocketAddr, public_url: String, node_id: Ulid, serial: u16) -> Self {
        let config = GrpcConfig::default();
        debug_assert!(config.validate().is_ok(), "the defaults are valid");
        GrpcNetwork::build(socket_addr, public_url, node_id, serial, config, None)
    }

    /// Like [`GrpcNetwork::new`] with a configuration, which is validated here; TLS files
    /// are read here too, so a wrong path fails now with a clear error.
    pub fn with_config(
        socket_addr: SocketAddr,
        public_url: String,
        node_id: Ulid,
        serial: u16,
        config: GrpcConfig,
    ) -> Result<Self, SyneviError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(TlsMaterial::load).transpose()?;
        Ok(GrpcNetwork::build(
            socket_addr,
            public_url,
            node_id,
            serial,
            config,
            tls,
        ))
    }

    fn build(
        socket_addr: SocketAddr,
        public_url: String,
        node_id: Ulid,
        serial: Serial,
        config: GrpcConfig,
        tls: Option<TlsMaterial>,
    ) -> Self {
        GrpcNetwork {
            shared: Arc::new(Shared {
                serial,
                node_id,
                config: Arc::new(config),
                tls,
                peers: RwLock::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
                cancel: CancellationToken::new(),
                runtime: std::sync::OnceLock::new(),
            }),
            socket_addr,
            public_url,
            local_addr: Arc::new(OnceLock::new()),
            lifecycle: Arc::new(tokio::sync::Mutex::new(Lifecycle::Created)),
        }
    }

    /// This node's serial.
    pub fn serial(&self) -> Serial {
        self.shared.serial
    }

    /// This node's id.
    pub fn node_id(&self) -> Ulid {
        self.shared.node_id
    }

    /// The URL peers reach this node at, as given to [`GrpcNetwork::new`].
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The address the server listens on, once started (with port 0, the port picked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    /// The configuration in use.
    pub fn config(&self) -> &GrpcConfig {
        &self.shared.config
    }

    /// What the network sent, received and dropped so far.
    pub fn stats(&self) -> GrpcStats {
        self.shared.counters.snapshot()
    }

    /// The endpoint for a member's URL: the scheme decides nothing by itself, the network's
    /// TLS configuration does, so a cluster cannot fall back to plain text by a typo.
    fn endpoint(&self, member: &Member) -> Result<Endpoint, SyneviError> {
        let invalid = |reason: String| {
            SyneviError::InvalidConfig(format!(
                "member {} has the URL {:?}: {reason}",
                member.serial, member.host
            ))
        };
        let uri: Uri = member
            .host
            .parse()
            .map_err(|error| invalid(format!("not a URL ({error})")))?;
        let tls = self.shared.tls.as_ref();
        let uri = match (uri.scheme_str(), tls) {
            (Some("https"), Some(_)) | (Some("http"), None) => uri,
            // With TLS on, every connection uses it: an `http` URL is upgraded, never sent
            // in plain text.
            (Some("http"), Some(_)) => {
                let mut parts = uri.into_parts();
                parts.scheme = Some(tonic::codegen::http::uri::Scheme::HTTPS);
                Uri::from_parts(parts).map_err(|error| invalid(error.to_string()))?
            }
            (Some("https"), None) => {
                return Err(invalid(
                    "https needs TLS, which this network is not configured for".into(),
                ))
            }
            _ => return Err(invalid("the scheme must be http or https".into())),
        };
        if uri.host().is_none() {
            return Err(invalid("no host".into()));
        }
        let config = &self.shared.config;
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .http2_adaptive_window(true);
        if let Some(tls) = tls {
            let mut client_tls = ClientTlsConfig::new()
                .ca_certificate(tls.ca.clone())
                .identity(tls.identity.clone());
            if let Some(domain_name) = &tls.domain_name {
                client_tls = client_tls.domain_name(domain_name.clone());
            }
            endpoint = endpoint
                .tls_config(client_tls)
                .map_err(|error| invalid(format!("TLS: {}", describe(&error))))?;
        }
        Ok(endpoint)
    }

    fn server(&self) -> Result<Server, SyneviError> {
        let config = &self.shared.config;
        let server = Server::builder()
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .http2_adaptive_window(Some(true));
        match &self.shared.tls {
            None => Ok(server),
            Some(tls) => server
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(tls.identity.clone())
                        // Clients must present a certificate this CA signed.
                        .client_ca_root(tls.ca.clone()),
                )
                .map_err(|error| {
                    SyneviError::InvalidConfig(format!("server TLS: {}", describe(&error)))
                }),
        }
    }
}

#[async_trait::async_trait]
impl Network for GrpcNetwork {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), SyneviError> {
        let mut lifecycle = self.lifecycle.lock().await;
        match *lifecycle {
            Lifecycle::Created => {}
            Lifecycle::Running { .. } => {
                return Err(SyneviError::Network(format!(
                    "the network of serial {} is already started",
                    self.shared.serial
                )))
            }
            Lifecycle::ShutDown => return Err(SyneviError::ShutDown),
        }
        let server = self.server()?;
        let listener = tokio::net::TcpListener::bind(self.socket_addr)
            .await
            .map_err(|error| {
                SyneviError::Network(format!("cannot listen on {}: {error}", self.socket_addr))
            })?;
        let local_addr = listener.local_addr().map_err(|error| {
            SyneviError::Network(format!("cannot read the listening address: {error}"))
        })?;
        // Set once: a network starts at most once (checked above).
        let _ = self.local_addr.set(local_addr);
        let runtime = tokio::runtime::Handle::current();
        let _ = self.shared.runtime.set(runtime.clone());
        // Members added before the start: their queues may hold envelopes already.
        for peer in self.shared.peers_mut().values_mut() {
            peer.start(&runtime);
        }

        let receiver = server::Receiver {
            shared: self.shared.clone(),
            inbox,
            cancel: self.shared.cancel.clone(),
        };
        let service = proto::peer_server::PeerServer::new(receiver)
            // Frames above the limit are refused before they are decoded.
            .max_decoding_message_size(self.shared.config.frame_bytes_max)
            .max_encoding_message_size(SUMMARY_BYTES_MAX);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = self.shared.cancel.clone().cancelled_owned();
        let serial = self.shared.serial;
        let server = tokio::spawn(async move {
            if let Err(error) = server
                .serve_with_incoming_shutdown(service, incoming, signal)
                .await
            {
                tracing::error!(serial, error = %describe(&error), "the gRPC server failed");
            }
        });
        tracing::info!(serial, %local_addr, public_url = %self.public_url,
            tls = self.shared.tls.is_some(), "gRPC network listening");
        *lifecycle = Lifecycle::Running { server };
        Ok(())
    }

    async fn add_member(&self, member: Member) -> Result<(), SyneviError> {
        if member.serial == self.shared.serial {
            return Err(SyneviError::InvalidConfig(format!(
                "a node cannot add itself (serial {}) as a member",
                member.serial
            )));
        }
        if self.shared.cancel.is_cancelled() {
            return Err(SyneviError::ShutDown);
        }
        let endpoint = self.endpoint(&member)?;
        let mut peers = self.shared.peers_mut();
        if let Some(existing) = peers.get(&member.serial) {
            if existing.member == member {
                return Ok(());
            }
            // The member moved (or was re-created): its old task stops, queued envelopes
            // for the old address are dropped.
            existing.cancel.cancel();
        }
        tracing::debug!(serial = self.shared.serial, peer = member.serial,
            host = %member.host, "member added");
        let context = PeerContext {
            member: member.clone(),
            endpoint,
            config: self.shared.config.clone(),
            counters: self.shared.counters.clone(),
            own_serial: self.shared.serial,
            own_node_id: self.shared.node_id,
        };
        let mut handle = peer::create(context, self.shared.cancel.child_token());
        // Under the peers' lock, which `start` takes after setting the runtime: a member
        // added before or while the network starts is started by one of the two.
        if let Some(runtime) = self.shared.runtime.get() {
            handle.start(runtime);
        }
        peers.insert(member.serial, handle);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        debug_assert_eq!(
            envelope.from, self.shared.serial,
            "a node sends only as itself"
        );
        let counters = &self.shared.counters;
        if self.shared.cancel.is_cancelled() {
            // After shutdown the peers are gone; a node's last rounds may still send
            // (announcements its persister releases late). Nothing is wrong: count it.
            add(&counters.dropped_disconnected, 1);
            return;
        }
        let peers = self.shared.peers();
        let Some(peer) = peers.get(&envelope.to) else {
            let total = add(&counters.dropped_unknown_destination, 1);
            if worth_logging(total) {
                tracing::warn!(
                    serial = self.shared.serial,
                    to = envelope.to,
                    kind = envelope.message.kind(),
                    total,
                    "dropped an envelope for a serial that is not a member"
                );
            }
            return;
        };
        match peer.queue.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(envelope)) => {
                let total = add(&counters.dropped_queue_full, 1);
                if worth_logging(total) {
                    tracing::warn!(
                        serial = self.shared.serial,
                        to = envelope.to,
                        kind = envelope.message.kind(),
                        total,
                        "the peer's queue is full; dropped the newest envelope"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {
                // Only after shutdown: the task that drained the queue is gone.
                add(&counters.dropped_disconnected, 1);
            }
        }
    }

    async fn shutdown(&self) {
        let mut lifecycle = self.lifecycle.lock().await;
        self.shared.cancel.cancel();
        let peers: Vec<PeerHandle> = self.shared.peers_mut().drain().map(|(_, p)| p).collect();
        for mut task in peers.into_iter().filter_map(|peer| peer.task) {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        if let Lifecycle::Running { server } =
            std::mem::replace(&mut *lifecycle, Lifecycle::ShutDown)
        {
            let mut server = server;
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                tracing::warn!(
                    serial = self.shared.serial,
                    "the gRPC server did not stop within {SHUTDOWN_GRACE:?}; aborted it"
                );
                server.abort();
            }
        }
        tracing::info!(serial = self.shared.serial, "gRPC network shut down");
    }

    fn runs_tasks(&self) -> bool {
        true
    }
}

/// An error with its chain of sources: tonic's transport errors say little at the top
/// ("transport error") and the cause ("connection refused") only further down.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
