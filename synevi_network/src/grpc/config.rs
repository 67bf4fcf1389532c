//! [`GrpcConfig`] and [`TlsConfig`]: the limits, queue sizes, back-off and TLS of a
//! [`crate::GrpcNetwork`].

use std::path::PathBuf;
use std::time::Duration;

use synevi_types::SyneviError;

/// The smallest frame limit accepted: below this, ordinary protocol messages (a `Commit`
/// with a few hundred deps) would not fit.
pub const FRAME_BYTES_MAX_FLOOR: usize = 4 * 1024;

/// Limits and timings of a [`crate::GrpcNetwork`]. Every queue and every retry has a limit;
/// the defaults suit a LAN cluster of up to a few dozen nodes.
///
/// ```
/// use std::time::Duration;
/// use synevi_network::GrpcConfig;
///
/// let config = GrpcConfig {
///     queue_envelopes_max: 50_000,
///     backoff_max: Duration::from_secs(2),
///     ..GrpcConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// The largest encoded frame (one `Batch` of envelopes), in bytes, sent or accepted.
    /// A single envelope larger than this is never sent: it is dropped and logged as
    /// [`SyneviError::TooLarge`]. The server refuses larger frames (tonic's
    /// `max_decoding_message_size`), which ends the offending stream. Transactions'
    /// payloads must therefore stay well below this. Default 4 MiB.
    pub frame_bytes_max: usize,
    /// The most envelopes waiting to be sent to one peer. When the queue is full the newest
    /// envelope (the one being sent) is dropped and counted; see the crate docs for why.
    /// Default 16,384.
    pub queue_envelopes_max: usize,
    /// The most envelopes in one frame, so one frame cannot hold a receiver up for long.
    /// Default 1,024.
    pub batch_envelopes_max: usize,
    /// The first wait before reconnecting to a peer that failed. Default 50 ms.
    pub backoff_initial: Duration,
    /// The longest wait between reconnection attempts; the wait doubles from
    /// `backoff_initial` up to this, with jitter. Default 5 s.
    pub backoff_max: Duration,
    /// A stream that stayed up at least this long was healthy: the next failure starts the
    /// back-off from `backoff_initial` again. Default 1 s.
    pub backoff_reset_after: Duration,
    /// How long a TCP (and TLS) connect to a peer may take. Default 3 s.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 pings on idle and busy connections, which detect a peer that
    /// vanished without closing its connection (power loss, partition). Default 10 s.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed and re-established.
    /// Default 20 s.
    pub keepalive_timeout: Duration,
    /// Mutual TLS between nodes; `None` (the default) means plain HTTP/2.
    pub tls: Option<TlsConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            frame_bytes_max: 4 * 1024 * 1024,
            queue_envelopes_max: 16_384,
            batch_envelopes_max: 1_024,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            backoff_reset_after: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            tls: None,
        }
    }
}

impl GrpcConfig {
    /// Checks that the configuration can work; the error names the offending field.
    pub fn validate(&self) -> Result<(), SyneviError> {
        let invalid = |reason: String| Err(SyneviError::InvalidConfig(reason));
        if self.frame_bytes_max < FRAME_BYTES_MAX_FLOOR {
            return invalid(format!(
                "frame_bytes_max is {} bytes, below the floor of {FRAME_BYTES_MAX_FLOOR}",
                self.frame_bytes_max
            ));
        }
        // tonic takes the limit as usize but HTTP/2 and gRPC frame lengths are u32.
        if self.frame_bytes_max > u32::MAX as usize {
            return invalid(format!(
                "frame_bytes_max is {} bytes, above the gRPC maximum of {}",
                self.frame_bytes_max,
                u32::MAX
            ));
        }
        if self.queue_envelopes_max == 0 {
            return invalid("queue_envelopes_max must be at least 1".into());
        }
        if self.batch_envelopes_max == 0 {
            return invalid("batch_envelopes_max must be at least 1".into());
        }
        if self.backoff_initial.is_zero() {
            return invalid("backoff_initial must be above zero".into());
        }
        if self.backoff_initial > self.backoff_max {
            return invalid(format!(
                "backoff_initial ({:?}) is above backoff_max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be above zero".into());
        }
        if self.keepalive_interval.is_zero() || self.keepalive_timeout.is_zero() {
            return invalid("keepalive_interval and keepalive_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// Mutual TLS between nodes: every node presents a certificate signed by the cluster's CA
/// and accepts only peers that do the same, on both the server and the client side.
///
/// The files are PEM and are read once, when the network is built
/// ([`crate::GrpcNetwork::with_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM), presented as server and as client certificate.
    /// It must name the host peers connect to (DNS name or IP address in the
    /// subjectAltName), unless they override it with `domain_name`.
    pub cert_path: PathBuf,
    /// This node's private key (PEM).
    pub key_path: PathBuf,
    /// The CA that signs every member's certificate (PEM). Peers whose certificates it did
    /// not sign cannot connect to this node, and this node does not talk to them.
    pub ca_path: PathBuf,
    /// The name to verify in peers' server certificates instead of the host of their URL
    /// (useful when nodes are addressed by IP but certificates carry one DNS name).
    pub domain_name: Option<String>,
}

impl TlsConfig {
    /// Mutual TLS with the given certificate, key and CA files.
    pub fn new(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        ca_path: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            ca_path: ca_path.into(),
            domain_name: None,
        }
    }
}

/// The TLS material read from the files of a [`TlsConfig`].
#[derive(Clone, Debug)]
pub(crate) struct TlsMaterial {
    pub(crate) identity: tonic::transport::Identity,
    pub(crate) ca: tonic::transport::Certificate,
    pub(crate) domain_name: Option<String>,
}

impl TlsMaterial {
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, SyneviError> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|error| {
                SyneviError::InvalidConfig(format!(
                    "cannot read the TLS {what} at {}: {error}",
                    path.display()
                ))
            })
        };
        let cert = read("certificate", &config.cert_path)?;
        let key = read("private key", &config.key_path)?;
        let ca = read("CA certificate", &config.ca_path)?;
        // tonic parses PEM lazily (when a connection is made); check here that the files
        // hold PEM at all, so a wrong path fails at start-up with a clear message.
        for (what, path, bytes) in [
            ("certificate", &config.cert_path, &cert),
            ("private key", &config.key_path, &key),
            ("CA certificate", &config.ca_path, &ca),
        ] {
            if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
                return Err(SyneviError::InvalidConfig(format!(
                    "the TLS {what} at {} is not PEM",
                    path.display()
                )));
            }
        }
        Ok(TlsMaterial {
            identity: tonic::transport::Identity::from_pem(cert, key),
            ca: tonic::transport::Certificate::from_pem(ca),
            domain_name: config.domain_name.clone(),
        })
    }
}
