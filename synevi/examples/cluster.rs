//! A 3-node synevi cluster in one process: concurrent deposits submitted to every node,
//! executed in the same order everywhere.
//!
//! Run: `cargo run --release -p synevi --example cluster [-- <transactions per node>]`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use synevi::network::LocalHub;
use synevi::persistence::MemStore;
use synevi::{Executor, Keys, Node, SyneviError, SyneviResult, Transaction, Ulid};

/// Add `amount` to `account`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit {
    account: String,
    amount: u64,
}

impl Transaction for Deposit {
    type TxOk = u64;
    type TxErr = ();

    fn as_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        postcard::from_bytes(&bytes).map_err(|e| SyneviError::Decode {
            what: "Deposit",
            reason: e.to_string(),
        })
    }

    fn keys(&self) -> Keys {
        Keys::single(self.account.as_str())
    }
}

#[derive(Default)]
struct Bank {
    balances: Mutex<BTreeMap<String, u64>>,
}

#[synevi::async_trait]
impl Executor for Bank {
    type Tx = Deposit;

    async fn execute(&self, deposit: Deposit) -> SyneviResult<Self> {
        let mut balances = self.balances.lock().map_err(|_| SyneviError::ShutDown)?;
        let balance = balances.entry(deposit.account).or_default();
        *balance += deposit.amount;
        Ok(Ok(*balance))
    }
}

#[tokio::main]
async fn main() -> Result<(), SyneviError> {
    let per_node: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(2_000);
    let hub = LocalHub::new();
    let ids: Vec<Ulid> = (0..3).map(|_| Ulid::new()).collect();
    let mut nodes = Vec::new();
    let mut banks = Vec::new();
    for serial in 1..=3u16 {
        let bank = Arc::new(Bank::default());
        let node = Node::new(
            ids[usize::from(serial - 1)],
            serial,
            hub.network(serial),
            bank.clone(),
            MemStore::new(serial)?,
        )
        .await?;
        for peer in (1..=3u16).filter(|peer| *peer != serial) {
            node.add_member(
                ids[usize::from(peer - 1)],
                peer,
                format!("local:{peer}"),
                true,
            )
            .await?;
        }
        nodes.push(node);
        banks.push(bank);
    }
    println!("3 nodes up; submitting {per_node} deposits to each, concurrently");
    let started = Instant::now();
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..per_node {
            let node = node.clone();
            let deposit = Deposit {
                account: format!("account-{}", i % 16),
                amount: (n as u64 + 1) * 10 + i % 7,
            };
            clients.push(tokio::spawn(async move {
                node.transaction(u128::from(i), deposit).await
            }));
        }
    }
    for client in clients {
        match client.await {
            Ok(Ok(Ok(_balance))) => {}
            Ok(Ok(Err(()))) => unreachable!("deposits never fail"),
            Ok(Err(error)) => return Err(error),
            Err(join) => return Err(SyneviError::Store(join.to_string())),
        }
    }
    let elapsed = started.elapsed();
    let total = 3 * per_node;
    for node in &nodes {
        node.watch_status()
            .wait_for(|status| status.applied_count >= total)
            .await
            .map_err(|_| SyneviError::ShutDown)?;
    }
    println!(
        "{total} transactions committed and executed on all 3 nodes in {:.2?} ({:.0} txns/s)",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    for (node, bank) in nodes.iter().zip(&banks) {
        let status = node.status();
        let balances = bank.balances.lock().map_err(|_| SyneviError::ShutDown)?;
        println!(
            "node {}: fast path {:>5}, slow path {:>5}, executed {}, digest {}, sum of balances {}",
            node.serial(),
            status.stats.fast_path_commits,
            status.stats.slow_path_commits,
            status.applied_count,
            status.applied_digest[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            balances.values().sum::<u64>(),
        );
    }
    let reference = banks[0]
        .balances
        .lock()
        .map_err(|_| SyneviError::ShutDown)?
        .clone();
    for bank in &banks[1..] {
        let balances = bank.balances.lock().map_err(|_| SyneviError::ShutDown)?;
        assert_eq!(*balances, reference, "every node holds the same balances");
    }
    println!("every node holds the same balances");
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
