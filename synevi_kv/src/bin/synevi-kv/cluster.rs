//! `synevi-kv cluster`: a local cluster in one process: nodes on one host, gRPC between
//! them, LMDB stores under the data directory. The quickest way to try synevi.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use synevi_kv::identity::{default_node_id, ClusterLayout, Identity};
use synevi_kv::server::{KvServer, NodeSettings, Peer, StoreKind};
use synevi_kv::state::Limits;

/// The most nodes a local cluster may have (the fast quorum grows with n; a local cluster
/// is for trying things out).
const NODES_MAX: u16 = 9;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// How many nodes (1 to 9; 3 tolerates one failure, 5 tolerates two).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Where the nodes keep their data (one directory per node) and the cluster's layout.
    #[arg(long, default_value = "./data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Where the nodes keep their state.
    #[arg(long, value_enum, default_value_t = StoreKind::Lmdb)]
    store: StoreKind,
    /// The address every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Node 1's HTTP port; node N's is this + N - 1. 0: ports the OS picks.
    #[arg(long, default_value_t = 8081)]
    http_port: u16,
    /// Node 1's gRPC port; node N's is this + N - 1. 0: free ports picked at start.
    #[arg(long, default_value_t = 13001)]
    grpc_port: u16,
    /// How long a request waits for a quorum before it gets 503.
    #[arg(long, default_value_t = crate::node::DEFAULT_TIMEOUT_MS, value_name = "MS")]
    timeout_ms: u64,
}

/// The port of node `serial` counted from `base` (0 stays 0).
fn port(base: u16, serial: u16) -> anyhow::Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(serial - 1)
        .with_context(|| format!("port {base} + {} is above 65535", serial - 1))
}

/// `count` distinct free ports on `host`: bound to port 0 together, then released. Another
/// process could take one in between; then the node reports the port as taken.
fn free_ports(host: IpAddr, count: u16) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((host, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

fn node_dir(data_dir: &Path, serial: u16) -> PathBuf {
    data_dir.join(format!("node-{serial}"))
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > NODES_MAX {
        bail!("--nodes must be between 1 and {NODES_MAX}");
    }
    // Stable identities: recorded in the data directory on first start, read afterwards.
    // In-memory nodes keep nothing, so they get ids derived from their serials.
    let identities: Vec<Identity> = match args.store {
        StoreKind::Lmdb => {
            let layout = ClusterLayout::load_or_create(&args.data_dir, args.nodes)?;
            for identity in &layout.nodes {
                Identity::load_or_create(
                    &node_dir(&args.data_dir, identity.serial),
                    identity.serial,
                    Some(identity.node_id),
                )?;
            }
            layout.nodes
        }
        StoreKind::Memory => (1..=args.nodes)
            .map(|serial| Identity {
                serial,
                node_id: default_node_id(serial),
            })
            .collect(),
    };
    let grpc_ports = if args.grpc_port == 0 {
        free_ports(args.host, args.nodes)?
    } else {
        (1..=args.nodes)
            .map(|serial| port(args.grpc_port, serial))
            .collect::<anyhow::Result<_>>()?
    };
    let grpc: Vec<SocketAddr> = grpc_ports
        .iter()
        .map(|port| SocketAddr::new(args.host, *port))
        .collect();
    let url = |index: usize| format!("http://{}", grpc[index]);

    let mut servers: Vec<KvServer> = Vec::new();
    for (index, identity) in identities.iter().enumerate() {
        let peers = identities
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(other, peer)| Peer {
                serial: peer.serial,
                node_id: peer.node_id,
                url: url(other),
            })
            .collect();
        let settings = NodeSettings {
            serial: identity.serial,
            node_id: identity.node_id,
            grpc_listen: grpc[index],
            grpc_url: url(index),
            http_listen: SocketAddr::new(args.host, port(args.http_port, identity.serial)?),
            peers,
            store: args.store,
            store_path: node_dir(&args.data_dir, identity.serial).join("lmdb"),
            limits: Limits::default(),
            transaction_timeout_ms: args.timeout_ms,
        };
        match KvServer::start(settings).await {
            Ok(server) => servers.push(server),
            Err(error) => {
                for server in servers {
                    server.shutdown().await;
                }
                return Err(error)
                    .with_context(|| format!("node {} did not start", identity.serial));
            }
        }
    }

    let store = match args.store {
        StoreKind::Lmdb => format!("LMDB stores in {}", args.data_dir.display()),
        StoreKind::Memory => "in-memory stores (nothing is kept)".to_string(),
    };
    println!(
        "synevi-kv: a {}-node cluster on {}, {store}",
        args.nodes, args.host
    );
    for (index, server) in servers.iter().enumerate() {
        println!(
            "  node {}  http://{}  (gRPC {}, id {})",
            identities[index].serial,
            server.http_addr(),
            url(index),
            identities[index].node_id
        );
    }
    let _ = std::io::stdout().flush();

    let all_ready = async {
        for server in &servers {
            while !server.wait_ready(Duration::from_secs(5)).await {
                eprintln!(
                    "synevi-kv: node {} is waiting for a quorum",
                    server.state().serial()
                );
            }
        }
    };
    let interrupted = tokio::select! {
        _ = all_ready => false,
        _ = crate::shutdown_signal() => true,
    };
    if !interrupted {
        print_examples(&servers);
        crate::shutdown_signal().await;
    }
    println!("synevi-kv: stopping");
    let _ = std::io::stdout().flush();
    for server in servers {
        server.shutdown().await;
    }
    println!("synevi-kv: stopped");
    Ok(())
}

fn print_examples(servers: &[KvServer]) {
    let http = |index: usize| format!("http://{}", servers[index % servers.len()].http_addr());
    println!("Ready. Any node answers any request; try:");
    println!(
        "  curl -X PUT {}/kv/greeting -d '{{\"value\":\"hello\"}}'",
        http(0)
    );
    println!("  curl {}/kv/greeting", http(1));
    println!(
        "  curl -X POST {}/kv/greeting/cas -d '{{\"expected\":\"hello\",\"value\":\"hi\"}}'",
        http(2)
    );
    println!("  curl -X DELETE {}/kv/greeting", http(0));
    println!("  curl {}/cluster", http(0));
    println!("  curl {}/metrics", http(0));
    println!("Ctrl-C stops the cluster; the same command brings it back with its data.");
    let _ = std::io::stdout().flush();
}
