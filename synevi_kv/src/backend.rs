//! [`KvBackend`]: what the HTTP layer needs from a node, behind one object-safe trait, so
//! the API does not depend on which store (or network) the node was built with.

use std::sync::Arc;

use synevi::network::{GrpcNetwork, GrpcStats};
use synevi::persistence::{LmdbStore, MemStore};
use synevi::types::Store;
use synevi::{Node, NodeStatus, SyneviError, Ulid};

use crate::executor::KvExecutor;
use crate::transaction::{KvErr, KvOk, KvTx};

/// The outcome of one KV transaction: the outer error is the system's, the inner one the
/// executor's verdict.
pub type KvResult = Result<Result<KvOk, KvErr>, SyneviError>;

/// How big a node's store is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Bytes the store takes on disk (`None` for an in-memory store).
    pub bytes_on_disk: Option<u64>,
    /// Transaction records the store holds (protocol state not yet released).
    pub transactions: Option<u64>,
}

/// One running node, as the HTTP API sees it.
#[synevi::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Orders `transaction` through consensus and returns its result on this node.
    async fn transaction(&self, request_id: u128, transaction: KvTx) -> KvResult;
    /// The node's counters.
    fn status(&self) -> NodeStatus;
    /// The node's counters as they change: await progress with
    /// `watch_status().wait_for(|status| status.applied_count >= n)`, and drop the guard
    /// `wait_for` returns at once (it holds the status locked, and the node waits for the
    /// lock to publish its next counters). A client's answer comes from the executor before
    /// the node counts the execution as applied.
    fn watch_status(&self) -> tokio::sync::watch::Receiver<NodeStatus>;
    /// The size of the node's store.
    fn store_size(&self) -> StoreSize;
    /// The network's counters.
    fn network_stats(&self) -> GrpcStats;
    /// The executor (its local state, for the metrics).
    fn executor(&self) -> &KvExecutor;
    /// This node's id.
    fn node_id(&self) -> Ulid;
    /// Stops the node.
    async fn shutdown(&self);
}

/// How a store reports its size (implemented for both of synevi's stores).
pub trait MeasuredStore: Store {
    /// The store's size now.
    fn size(&self) -> StoreSize;
}

impl MeasuredStore for LmdbStore {
    fn size(&self) -> StoreSize {
        StoreSize {
            bytes_on_disk: self.size_on_disk().ok(),
            transactions: self.transaction_count().ok(),
        }
    }
}

impl MeasuredStore for MemStore {
    fn size(&self) -> StoreSize {
        StoreSize {
            bytes_on_disk: None,
            transactions: u64::try_from(self.transaction_count()).ok(),
        }
    }
}

/// A synevi [`Node`] running the [`KvExecutor`] over gRPC, with any store.
pub struct SyneviBackend<S: MeasuredStore> {
    node: Node<GrpcNetwork, Arc<KvExecutor>, S>,
    network: GrpcNetwork,
    executor: Arc<KvExecutor>,
}

impl<S: MeasuredStore> SyneviBackend<S> {
    /// Wraps a started node; `network` and `executor` are the ones the node was built with.
    pub fn new(
        node: Node<GrpcNetwork, Arc<KvExecutor>, S>,
        network: GrpcNetwork,
        executor: Arc<KvExecutor>,
    ) -> Self {
        SyneviBackend {
            node,
            network,
            executor,
        }
    }
}

#[synevi::async_trait]
impl<S: MeasuredStore> KvBackend for SyneviBackend<S> {
    async fn transaction(&self, request_id: u128, transaction: KvTx) -> KvResult {
        self.node.transaction(request_id, transaction).await
    }

    fn status(&self) -> NodeStatus {
        self.node.status()
    }

    fn watch_status(&self) -> tokio::sync::watch::Receiver<NodeStatus> {
        self.node.watch_status()
    }

    fn store_size(&self) -> StoreSize {
        self.node.store().size()
    }

    fn network_stats(&self) -> GrpcStats {
        self.network.stats()
    }

    fn executor(&self) -> &KvExecutor {
        &self.executor
    }

    fn node_id(&self) -> Ulid {
        self.node.id()
    }

    async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}
