//! In-process throughput probe: `clients` concurrent clients, each submitting its next
//! transaction when the previous returned, round-robin over 3 nodes.
//!
//! Run: `cargo run --release -p synevi --example throughput -- <clients> <txns> <hot|disjoint|all>`
//! (the benchmark harness in `benches/` is the measured, documented variant over gRPC).

use std::sync::Arc;
use std::time::Instant;

use synevi::network::LocalHub;
use synevi::persistence::MemStore;
use synevi::{Executor, Keys, Node, SyneviError, SyneviResult, Transaction, Ulid};

#[derive(Debug, Clone, serde::Serialize)]
struct Put {
    key: u64,
    all: bool,
}

impl Transaction for Put {
    type TxOk = ();
    type TxErr = ();

    fn as_bytes(&self) -> Vec<u8> {
        let mut bytes = self.key.to_le_bytes().to_vec();
        bytes.push(u8::from(self.all));
        bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        let decode = || SyneviError::Decode {
            what: "Put",
            reason: "9 bytes".into(),
        };
        let key = u64::from_le_bytes(
            bytes
                .get(..8)
                .ok_or_else(decode)?
                .try_into()
                .map_err(|_| decode())?,
        );
        Ok(Put {
            key,
            all: bytes.get(8) == Some(&1),
        })
    }

    fn keys(&self) -> Keys {
        if self.all {
            Keys::All
        } else {
            Keys::single(self.key.to_le_bytes().to_vec())
        }
    }
}

struct Sink;

#[synevi::async_trait]
impl Executor for Sink {
    type Tx = Put;

    async fn execute(&self, _put: Put) -> SyneviResult<Self> {
        Ok(Ok(()))
    }
}

#[tokio::main]
async fn main() -> Result<(), SyneviError> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let txns: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = args.get(3).cloned().unwrap_or_else(|| "disjoint".into());
    let hub = LocalHub::new();
    let ids: Vec<Ulid> = (0..3).map(|_| Ulid::new()).collect();
    let mut nodes = Vec::new();
    for serial in 1..=3u16 {
        let node = Node::new(
            ids[usize::from(serial - 1)],
            serial,
            hub.network(serial),
            Sink,
            MemStore::new(serial)?,
        )
        .await?;
        for peer in (1..=3u16).filter(|peer| *peer != serial) {
            node.add_member(ids[usize::from(peer - 1)], peer, String::new(), true)
                .await?;
        }
        nodes.push(node);
    }
    let nodes = Arc::new(nodes);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let nodes = nodes.clone();
        let mode = mode.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = client;
            while i < txns {
                let put = Put {
                    key: if mode == "hot" { 0 } else { i as u64 },
                    all: mode == "all",
                };
                let _verdict = nodes[i % 3].transaction(i as u128, put).await?;
                i += clients;
            }
            Ok::<(), SyneviError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| SyneviError::Store(e.to_string()))??;
    }
    let elapsed = started.elapsed();
    let stats: Vec<_> = nodes.iter().map(|n| n.stats()).collect();
    let deps: u64 = stats.iter().map(|s| s.committed_deps_total).sum();
    println!(
        "{clients} clients, {txns} txns, {mode}: {:.0} txns/s; fast {} slow {}; mean deps {:.1}",
        txns as f64 / elapsed.as_secs_f64(),
        stats.iter().map(|s| s.fast_path_commits).sum::<u64>(),
        stats.iter().map(|s| s.slow_path_commits).sum::<u64>(),
        deps as f64 / (3 * txns) as f64,
    );
    for node in nodes.iter() {
        node.shutdown().await;
    }
    Ok(())
}
