//! [`LmdbCluster`]: three nodes in one process on a [`LocalHub`], each on its own
//! [`LmdbStore`] directory, each with a [`Ledger`] executor.
//!
//! Node ids are derived from the serial, so a process that starts the cluster again on the
//! same root directory (after a clean stop or after SIGKILL) starts the same nodes: a store
//! refuses a node id other than the one that created it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use synevi::network::{LocalHub, LocalNetwork};
use synevi::persistence::LmdbStore;
use synevi::types::{Event, Serial, Store};
use synevi::{Config, Node, NodeStatus, SyneviError, Ulid};
use tokio::sync::watch;

use crate::ledger::Ledger;

/// How long a restarted node may take to publish its first status.
const FIRST_ROUND_WAIT_MAX: Duration = Duration::from_secs(10);

/// The cluster's serials: three voters, so one may be down and the others still commit.
pub const SERIALS: [Serial; 3] = [1, 2, 3];

/// A node of the cluster.
pub type LedgerNode = Node<LocalNetwork, Arc<Ledger>, LmdbStore>;

/// The id of the node with `serial`: fixed, so that every process agrees on it.
pub fn node_id(serial: Serial) -> Ulid {
    Ulid::from_parts(0x5e5e_5e5e, u128::from(serial))
}

/// Where the node with `serial` keeps its store under `root`.
pub fn node_dir(root: &Path, serial: Serial) -> PathBuf {
    root.join(format!("node-{serial}"))
}

/// Reads a whole event log.
pub fn read_log(store: &impl Store) -> Result<Vec<Event>, SyneviError> {
    store.events_after(0, usize::MAX)
}

struct Running {
    node: LedgerNode,
    ledger: Arc<Ledger>,
}

impl Running {
    fn view(&self, expected: &BTreeSet<u64>) -> NodeView {
        NodeView {
            serial: self.node.serial(),
            status: self.node.status(),
            executions: self.ledger.executions(),
            missing: expected
                .iter()
                .filter(|id| !self.ledger.has_executed(**id))
                .copied()
                .collect(),
        }
    }
}

/// What [`LmdbCluster::settle`] looks at on one node.
struct NodeView {
    serial: Serial,
    status: NodeStatus,
    /// Executions the node's executor ran (replayed ones included).
    executions: u64,
    /// Expected ids its executor has not executed.
    missing: Vec<u64>,
}

impl NodeView {
    fn describe(&self) -> String {
        let status = &self.status;
        format!(
            "node {}: applied {}, digest {}, pending execution {}, executions {}, held {}, \
             recoveries {}, missing {} of the expected: {:?}",
            self.serial,
            status.applied_count,
            hex(&status.applied_digest[..8]),
            status.stats.pending_execution,
            self.executions,
            status.stats.transactions_held,
            status.stats.recoveries_started,
            self.missing.len(),
            &self.missing[..self.missing.len().min(20)],
        )
    }
}

/// Whether the nodes agree and nothing is left to do (see [`LmdbCluster::settle`]).
fn settled(views: &[NodeView]) -> bool {
    let Some(first) = views.first() else {
        return true;
    };
    views.iter().all(|view| {
        view.status.applied_count == first.status.applied_count
            && view.status.applied_digest == first.status.applied_digest
            && view.status.stats.pending_execution == 0
            // Every execution's result reached the core: its event is on its way to the store.
            && view.executions == view.status.applied_count
            && view.missing.is_empty()
    })
}

/// Three nodes on LMDB stores under one root directory.
pub struct LmdbCluster {
    root: PathBuf,
    config: Config,
    hub: LocalHub,
    running: Vec<Option<Running>>,
}

impl LmdbCluster {
    /// Starts every node on its directory under `root` (creating the stores, or resuming
    /// from them).
    pub async fn start(root: &Path, config: Config) -> Result<LmdbCluster, SyneviError> {
        let mut cluster = LmdbCluster {
            root: root.to_path_buf(),
            config,
            hub: LocalHub::new(),
            running: SERIALS.iter().map(|_| None).collect(),
        };
        for serial in SERIALS {
            cluster.start_node(serial).await?;
        }
        Ok(cluster)
    }

    fn index(serial: Serial) -> usize {
        let index = SERIALS.iter().position(|s| *s == serial);
        index.unwrap_or_else(|| panic!("serial {serial} is not in the cluster"))
    }

    /// Starts the node with `serial` on its directory with a fresh [`Ledger`]: the node
    /// replays its event log into it (`Config::replay_events_on_start`).
    pub async fn start_node(&mut self, serial: Serial) -> Result<(), SyneviError> {
        self.start_node_inner(serial, false).await
    }

    /// Like [`LmdbCluster::start_node`], but adds the members only after the node published
    /// a status that shows its restored state and a protocol message sent since the restart
    /// (timers armed on restore fire in its first rounds), that is after it has sent to
    /// members it knows from its store but has not been given again. An application that
    /// learns its peers from elsewhere (discovery, configuration service) starts its node
    /// this way; nothing in the API says members must be added before the node runs. The
    /// store must hold applied transactions (the first status is recognised by its applied
    /// count) and the node must have something to send (a commit it still owes a member).
    pub async fn start_node_with_late_members(
        &mut self,
        serial: Serial,
    ) -> Result<(), SyneviError> {
        self.start_node_inner(serial, true).await
    }

    async fn start_node_inner(
        &mut self,
        serial: Serial,
        late_members: bool,
    ) -> Result<(), SyneviError> {
        let index = Self::index(serial);
        assert!(self.running[index].is_none(), "node {serial} is running");
        let store = LmdbStore::new(node_dir(&self.root, serial), serial)?;
        let ledger = Arc::new(Ledger::default());
        let node = Node::with_config(
            node_id(serial),
            serial,
            self.hub.network(serial),
            Arc::clone(&ledger),
            store,
            self.config.clone(),
        )
        .await?;
        if late_members {
            // The restored applied count shows the first round ran; a message sent, that the
            // node tried to reach a member it was not given again. Its envelope left the core
            // with the round, and reaches the outbox (held) or the network (dropped there)
            // once the round is durable, which no status announces: polled.
            let mut status = node.watch_status();
            let first_round = async {
                status
                    .wait_for(|status| status.applied_count > 0 && status.stats.messages_sent > 0)
                    .await
                    .map(|_| ())?;
                while node.held_envelopes() == 0 && self.hub.dropped_unknown() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<(), tokio::sync::watch::error::RecvError>(())
            };
            let waited = tokio::time::timeout(FIRST_ROUND_WAIT_MAX, first_round).await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "node {serial} published no status with its restored applied count and a message \
                 sent within {FIRST_ROUND_WAIT_MAX:?} (late members need a store that applied \
                 something, and something to send)"
            );
        }
        // The store keeps the members' serials, not their addresses: a restarted node is
        // given its members again, like at first start.
        for peer in SERIALS.into_iter().filter(|peer| *peer != serial) {
            node.add_member(node_id(peer), peer, format!("local:{peer}"), true)
                .await?;
        }
        self.running[index] = Some(Running { node, ledger });
        Ok(())
    }

    /// Shuts the node with `serial` down and closes its store; returns its event log as
    /// the store holds it after the shutdown.
    ///
    /// Every clone of the node handle must be dropped first (client tasks finished):
    /// otherwise the LMDB environment stays open and the directory cannot be opened again
    /// in this process.
    pub async fn stop_node(&mut self, serial: Serial) -> Result<Vec<Event>, SyneviError> {
        let running = self.running[Self::index(serial)]
            .take()
            .unwrap_or_else(|| panic!("node {serial} is not running"));
        running.node.shutdown().await;
        read_log(running.node.store())
    }

    /// Shuts every running node down; returns each one's event log, by serial.
    pub async fn stop(&mut self) -> Result<Vec<(Serial, Vec<Event>)>, SyneviError> {
        let mut logs = Vec::new();
        for serial in SERIALS {
            if self.running[Self::index(serial)].is_some() {
                logs.push((serial, self.stop_node(serial).await?));
            }
        }
        Ok(logs)
    }

    /// The hub the nodes talk through (to cut and heal links).
    pub fn hub(&self) -> &LocalHub {
        &self.hub
    }

    fn running(&self, serial: Serial) -> &Running {
        let running = self.running[Self::index(serial)].as_ref();
        running.unwrap_or_else(|| panic!("node {serial} is not running"))
    }

    /// The running node with `serial`.
    pub fn node(&self, serial: Serial) -> &LedgerNode {
        &self.running(serial).node
    }

    /// The executor of the running node with `serial`.
    pub fn ledger(&self, serial: Serial) -> &Arc<Ledger> {
        &self.running(serial).ledger
    }

    /// Waits until the running nodes agree: every one has applied exactly what every other
    /// applied (equal counts and digests), nothing committed waits to execute, every
    /// execution's result has reached the core (so its event is on its way to the store),
    /// and every id in `expected` has executed on every node. Returns the statuses then, or
    /// after `limit` a description of what was still missing.
    ///
    /// `expected` closes a gap the statuses cannot: a transaction the core has released but
    /// the executor has not run yet shows in no counter, so without it a cluster that just
    /// restarted could look settled just before it re-executes what the kill cut off.
    pub async fn settle(
        &self,
        expected: &BTreeSet<u64>,
        limit: Duration,
    ) -> Result<Vec<NodeStatus>, String> {
        let running: Vec<&Running> = self.running.iter().flatten().collect();
        // One channel that changes whenever any node's status or executor changes, so the
        // condition is re-checked on every event and never polled.
        let (changed_sender, mut changed) = watch::channel(());
        let mut forwarders = Vec::new();
        for member in &running {
            let mut status = member.node.watch_status();
            let sender = changed_sender.clone();
            forwarders.push(tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    sender.send_replace(());
                }
            }));
            let mut executions = member.ledger.watch_executions();
            let sender = changed_sender.clone();
            forwarders.push(tokio::spawn(async move {
                while executions.changed().await.is_ok() {
                    sender.send_replace(());
                }
            }));
        }
        let deadline = tokio::time::Instant::now() + limit;
        let outcome = loop {
            // Marked seen before the check: a change after it wakes the wait below.
            changed.borrow_and_update();
            let views: Vec<NodeView> = running.iter().map(|m| m.view(expected)).collect();
            if settled(&views) {
                break Ok(views.into_iter().map(|view| view.status).collect());
            }
            let woken = tokio::time::timeout_at(deadline, changed.changed()).await;
            if woken.is_err() {
                let mut report = format!("not settled within {limit:?}:");
                for view in &views {
                    report.push_str("\n  ");
                    report.push_str(&view.describe());
                }
                break Err(report);
            }
        };
        for forwarder in forwarders {
            forwarder.abort();
        }
        outcome
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
