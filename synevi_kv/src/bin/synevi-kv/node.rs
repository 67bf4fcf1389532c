//! `synevi-kv node`: one node per process. Settings from flags, `SYNEVI_*` environment
//! variables and a TOML file, merged in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use synevi::Ulid;
use synevi_kv::identity::{default_node_id, Identity};
use synevi_kv::server::{KvServer, NodeSettings, Peer, StoreKind};
use synevi_kv::state::Limits;

/// Defaults of settings that have one.
const DEFAULT_LISTEN: &str = "127.0.0.1:13001";
const DEFAULT_HTTP: &str = "127.0.0.1:8081";
const DEFAULT_DATA_DIR: &str = "./data";
/// The default transaction timeout: a client gets 503 after this long without a quorum.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

#[derive(clap::Args, Debug, Default)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (keys as the flags, with `_` for `-`,
    /// and `peers` as a list of strings). Flags and environment variables take precedence.
    #[arg(long, env = "SYNEVI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's serial: unique in the cluster, 1 to 65535. Required.
    #[arg(long, env = "SYNEVI_SERIAL")]
    serial: Option<u16>,
    /// This node's id (a ULID). Default: derived from the serial, so peers given as
    /// SERIAL=URL need no id.
    #[arg(long, env = "SYNEVI_NODE_ID", value_name = "ULID")]
    node_id: Option<Ulid>,
    /// Where the gRPC server for peer traffic listens [default: 127.0.0.1:13001].
    #[arg(long, env = "SYNEVI_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The URL peers reach this node's gRPC server at [default: http://<listen>].
    #[arg(long, env = "SYNEVI_ADVERTISE", value_name = "URL")]
    advertise: Option<String>,
    /// Where the HTTP API listens [default: 127.0.0.1:8081].
    #[arg(long, env = "SYNEVI_HTTP", value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Another member, as SERIAL=URL (its id derived from its serial) or SERIAL=ULID@URL.
    /// Repeat for each member; in SYNEVI_PEERS, separate them with commas.
    #[arg(
        long = "peer",
        env = "SYNEVI_PEERS",
        value_delimiter = ',',
        value_name = "SERIAL=[ID@]URL"
    )]
    peers: Option<Vec<PeerSpec>>,
    /// The directory for this node's identity and LMDB store [default: ./data].
    #[arg(long, env = "SYNEVI_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the node keeps its state [default: lmdb].
    #[arg(long, env = "SYNEVI_STORE", value_enum)]
    store: Option<StoreKind>,
    /// How long a request waits for a quorum before it gets 503 [default: 10000].
    #[arg(long, env = "SYNEVI_TIMEOUT_MS", value_name = "MS")]
    timeout_ms: Option<u64>,
    /// The longest key accepted, in bytes [default: 1024].
    #[arg(long, env = "SYNEVI_KEY_BYTES_MAX", value_name = "BYTES")]
    key_bytes_max: Option<usize>,
    /// The longest value accepted, in bytes [default: 1048576].
    #[arg(long, env = "SYNEVI_VALUE_BYTES_MAX", value_name = "BYTES")]
    value_bytes_max: Option<usize>,
}

/// The same settings, from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    serial: Option<u16>,
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    http: Option<SocketAddr>,
    peers: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    store: Option<StoreKind>,
    timeout_ms: Option<u64>,
    key_bytes_max: Option<usize>,
    value_bytes_max: Option<usize>,
}

/// `SERIAL=URL` or `SERIAL=ULID@URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec(Peer);

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (serial, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not SERIAL=URL or SERIAL=ID@URL"))?;
        let serial: u16 = serial
            .trim()
            .parse()
            .map_err(|_| format!("{serial:?} is not a serial (1 to 65535)"))?;
        if serial == 0 {
            return Err("serial 0 is not allowed (serials are 1 to 65535)".into());
        }
        let (node_id, url) = match rest.split_once('@') {
            Some((id, url)) => {
                let id = Ulid::from_string(id.trim())
                    .map_err(|error| format!("{id:?} is not a ULID node id: {error}"))?;
                (id, url)
            }
            None => (default_node_id(serial), rest),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(format!("peer {serial} has no URL"));
        }
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        Ok(PeerSpec(Peer {
            serial,
            node_id,
            url,
        }))
    }
}

fn read_file(path: &Path) -> anyhow::Result<NodeFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
}

/// Merges flags (and environment, which clap already folded in) over the file over the
/// defaults, and resolves the node's identity.
fn resolve(args: NodeArgs) -> anyhow::Result<NodeSettings> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => NodeFile::default(),
    };
    let Some(serial) = args.serial.or(file.serial) else {
        bail!("missing the node's serial: --serial N, SYNEVI_SERIAL=N, or serial = N in the config file");
    };
    if serial == 0 {
        bail!("serial 0 is not allowed (serials are 1 to 65535)");
    }
    let file_node_id = file
        .node_id
        .as_deref()
        .map(Ulid::from_string)
        .transpose()
        .context("node_id in the config file is not a ULID")?;
    let node_id = args.node_id.or(file_node_id);
    let peers = match args.peers {
        Some(peers) => peers.into_iter().map(|spec| spec.0).collect(),
        None => file
            .peers
            .unwrap_or_default()
            .iter()
            .map(|text| PeerSpec::from_str(text).map(|spec| spec.0))
            .collect::<Result<Vec<Peer>, String>>()
            .map_err(|error| anyhow::anyhow!("peers in the config file: {error}"))?,
    };
    let listen = match args.listen.or(file.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN
            .parse()
            .context("the default listen address")?,
    };
    let http = match args.http.or(file.http) {
        Some(http) => http,
        None => DEFAULT_HTTP.parse().context("the default HTTP address")?,
    };
    let grpc_url = match args.advertise.or(file.advertise) {
        Some(url) => url,
        None if listen.ip().is_unspecified() => bail!(
            "--listen {listen} does not say how peers reach this node: set --advertise http://HOST:PORT"
        ),
        None => format!("http://{listen}"),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let store = args.store.or(file.store).unwrap_or_default();
    let defaults = Limits::default();
    let limits = Limits {
        key_bytes_max: args
            .key_bytes_max
            .or(file.key_bytes_max)
            .unwrap_or(defaults.key_bytes_max),
        value_bytes_max: args
            .value_bytes_max
            .or(file.value_bytes_max)
            .unwrap_or(defaults.value_bytes_max),
    };
    // An LMDB node records its identity beside its data, so it can never come back under
    // another one; an in-memory node keeps nothing, so it writes nothing.
    let node_id = match store {
        StoreKind::Lmdb => Identity::load_or_create(&data_dir, serial, node_id)?.node_id,
        StoreKind::Memory => node_id.unwrap_or_else(|| default_node_id(serial)),
    };
    Ok(NodeSettings {
        serial,
        node_id,
        grpc_listen: listen,
        grpc_url,
        http_listen: http,
        peers,
        store,
        store_path: data_dir.join("lmdb"),
        limits,
        transaction_timeout_ms: args
            .timeout_ms
            .or(file.timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
    })
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let settings = resolve(args)?;
    let summary = format!(
        "node {} (id {}): HTTP on http://{}, gRPC on {} ({}), {} peer(s), {} store",
        settings.serial,
        settings.node_id,
        settings.http_listen,
        settings.grpc_listen,
        settings.grpc_url,
        settings.peers.len(),
        settings.store,
    );
    let server = KvServer::start(settings).await?;
    tracing::info!("{summary}; HTTP bound to {}", server.http_addr());
    crate::shutdown_signal().await;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_ids() {
        let plain = PeerSpec::from_str("2=http://10.0.0.2:13001").expect("valid");
        assert_eq!(plain.0.serial, 2);
        assert_eq!(plain.0.node_id, default_node_id(2));
        assert_eq!(plain.0.url, "http://10.0.0.2:13001");
        let bare = PeerSpec::from_str("3=10.0.0.3:13001").expect("valid");
        assert_eq!(bare.0.url, "http://10.0.0.3:13001");
        let id = Ulid::new();
        let explicit = PeerSpec::from_str(&format!("4={id}@http://h:1")).expect("valid");
        assert_eq!(explicit.0.node_id, id);
        assert_eq!(explicit.0.url, "http://h:1");
        for bad in [
            "",
            "2",
            "x=http://h:1",
            "0=http://h:1",
            "2=",
            "2=nope@http://h:1",
        ] {
            assert!(PeerSpec::from_str(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "serial = 2\nhttp = \"127.0.0.1:9002\"\nlisten = \"127.0.0.1:14002\"\n\
             peers = [\"1=127.0.0.1:14001\"]\nstore = \"memory\"\ntimeout_ms = 1234\n",
        )
        .expect("written");
        let args = NodeArgs {
            config: Some(file),
            http: Some("127.0.0.1:9999".parse().expect("address")),
            ..NodeArgs::default()
        };
        let settings = resolve(args).expect("resolves");
        assert_eq!(settings.serial, 2);
        assert_eq!(settings.http_listen.port(), 9999, "the flag wins");
        assert_eq!(settings.grpc_listen.port(), 14002, "the file fills in");
        assert_eq!(settings.grpc_url, "http://127.0.0.1:14002");
        assert_eq!(settings.peers.len(), 1);
        assert_eq!(settings.store, StoreKind::Memory);
        assert_eq!(settings.transaction_timeout_ms, 1234);
        assert_eq!(settings.limits, Limits::default());
    }

    #[test]
    fn bad_settings_are_refused_with_a_message() {
        let error = resolve(NodeArgs::default()).expect_err("no serial");
        assert!(error.to_string().contains("serial"), "{error}");
        let args = NodeArgs {
            serial: Some(1),
            listen: Some("0.0.0.0:13001".parse().expect("address")),
            store: Some(StoreKind::Memory),
            ..NodeArgs::default()
        };
        let error = resolve(args).expect_err("unspecified listen address, no advertise");
        assert!(error.to_string().contains("--advertise"), "{error}");
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "serial = 1\nunknown_setting = true\n").expect("written");
        let args = NodeArgs {
            config: Some(file),
            ..NodeArgs::default()
        };
        assert!(resolve(args).is_err());
    }
}
