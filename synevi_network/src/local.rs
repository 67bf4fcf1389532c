//! [`LocalNetwork`]: nodes in one process, connected through a [`LocalHub`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use synevi_types::{Envelope, Inbox, Member, Network, Serial, SyneviError};

/// Connects the [`LocalNetwork`]s of nodes in one process. Delivery is immediate and in
/// order; links can be cut to simulate a partitioned or stopped node.
#[derive(Clone, Default)]
pub struct LocalHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    state: Mutex<HubState>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Of those, the ones for a serial the sender had not added ([`LocalHub::require_members`]).
    dropped_unknown: AtomicU64,
}

#[derive(Default)]
struct HubState {
    inboxes: HashMap<Serial, Arc<dyn Inbox>>,
    /// Links `(from, to)` that drop everything.
    cut: BTreeSet<(Serial, Serial)>,
    /// Set by [`LocalHub::require_members`].
    require_members: bool,
    /// Per node, the serials it added with `add_member` since it last shut down.
    members: HashMap<Serial, BTreeSet<Serial>>,
}

impl LocalHub {
    /// A hub with no nodes.
    pub fn new() -> Self {
        LocalHub::default()
    }

    /// The network endpoint of node `serial`.
    pub fn network(&self, serial: Serial) -> LocalNetwork {
        LocalNetwork {
            serial,
            hub: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock can only come from a bug in this file; the state
        // (a map and a set) stays consistent, so recover it instead of spreading the panic.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every envelope from `from` to `to` until [`LocalHub::heal`].
    pub fn cut(&self, from: Serial, to: Serial) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link to and from `serial` (among `members`).
    pub fn isolate(&self, serial: Serial, members: &[Serial]) {
        let mut state = self.lock();
        for &other in members.iter().filter(|&&other| other != serial) {
            state.cut.insert((serial, other));
            state.cut.insert((other, serial));
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// From now on every running endpoint drops (and counts, [`LocalHub::dropped_unknown`])
    /// the envelopes for a serial it was not given through `add_member` since it last shut
    /// down, as a network that needs members' addresses does (`GrpcNetwork`). Without it,
    /// an endpoint reaches every node running on the hub.
    pub fn require_members(&self) {
        self.lock().require_members = true;
    }

    /// Envelopes dropped so far because the sender had not added their destination (only
    /// with [`LocalHub::require_members`]); also counted in [`LocalHub::dropped`].
    pub fn dropped_unknown(&self) -> u64 {
        self.inner.dropped_unknown.load(Ordering::Relaxed)
    }

    /// Envelopes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    /// Envelopes dropped so far (cut link, or no such node running).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

/// One node's endpoint on a [`LocalHub`].
#[derive(Clone)]
pub struct LocalNetwork {
    serial: Serial,
    hub: LocalHub,
}

impl LocalNetwork {
    /// The serial of the node this endpoint belongs to.
    pub fn serial(&self) -> Serial {
        self.serial
    }
}

#[async_trait::async_trait]
impl Network for LocalNetwork {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), SyneviError> {
        let mut state = self.hub.lock();
        if state.inboxes.contains_key(&self.serial) {
            return Err(SyneviError::Network(format!(
                "serial {} is already running on this hub",
                self.serial
            )));
        }
        state.inboxes.insert(self.serial, inbox);
        Ok(())
    }

    async fn add_member(&self, member: Member) -> Result<(), SyneviError> {
        if member.serial == self.serial {
            return Err(SyneviError::InvalidConfig(format!(
                "a node cannot add itself (serial {}) as a member",
                member.serial
            )));
        }
        self.hub
            .lock()
            .members
            .entry(self.serial)
            .or_default()
            .insert(member.serial);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        debug_assert_eq!(envelope.from, self.serial, "a node sends only as itself");
        let inbox = {
            let state = self.hub.lock();
            // A node's envelopes after its shutdown (a drain's last rounds) are not checked.
            let running = state.inboxes.contains_key(&self.serial);
            let unknown = state.require_members
                && running
                && !state
                    .members
                    .get(&self.serial)
                    .is_some_and(|members| members.contains(&envelope.to));
            if unknown {
                self.hub
                    .inner
                    .dropped_unknown
                    .fetch_add(1, Ordering::Relaxed);
                None
            } else if state.cut.contains(&(envelope.from, envelope.to)) {
                None
            } else {
                state.inboxes.get(&envelope.to).cloned()
            }
        };
        match inbox {
            Some(inbox) => {
                self.hub.inner.delivered.fetch_add(1, Ordering::Relaxed);
                inbox.deliver(envelope);
            }
            None => {
                self.hub.inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(to = envelope.to, kind = envelope.message.kind(), "dropped");
            }
        }
    }

    async fn shutdown(&self) {
        let mut state = self.hub.lock();
        state.inboxes.remove(&self.serial);
        state.members.remove(&self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synevi_types::{Inquire, Message, Timestamp};

    struct Collect(Mutex<Vec<Envelope>>);

    impl Inbox for Collect {
        fn deliver(&self, envelope: Envelope) {
            self.0.lock().expect("test lock").push(envelope);
        }
    }

    fn envelope(from: Serial, to: Serial) -> Envelope {
        Envelope {
            from,
            to,
            message: Message::Inquire(Inquire { t0s: vec![] }),
            clock: Timestamp::ZERO,
        }
    }

    #[tokio::test]
    async fn with_members_required_only_added_members_are_reached() {
        let hub = LocalHub::new();
        let (a, b) = (hub.network(1), hub.network(2));
        let inbox = Arc::new(Collect(Mutex::new(Vec::new())));
        b.start(inbox.clone()).await.expect("starts");
        a.start(Arc::new(Collect(Mutex::new(Vec::new()))))
            .await
            .expect("starts");
        a.send(envelope(1, 2));
        hub.require_members();
        a.send(envelope(1, 2));
        assert_eq!((hub.delivered(), hub.dropped_unknown()), (1, 1));
        let member = Member {
            node_id: synevi_types::Ulid::new(),
            serial: 2,
            host: "local:2".into(),
        };
        a.add_member(member.clone()).await.expect("adds");
        a.send(envelope(1, 2));
        assert_eq!((hub.delivered(), hub.dropped_unknown()), (2, 1));
        // A shutdown forgets the members: a restarted endpoint must add them again. While
        // stopped, membership is not checked (what a draining node sends still arrives).
        a.shutdown().await;
        a.send(envelope(1, 2));
        assert_eq!((hub.delivered(), hub.dropped_unknown()), (3, 1));
        a.start(Arc::new(Collect(Mutex::new(Vec::new()))))
            .await
            .expect("starts again");
        a.send(envelope(1, 2));
        assert_eq!((hub.delivered(), hub.dropped_unknown()), (3, 2));
        a.add_member(member).await.expect("adds again");
        a.send(envelope(1, 2));
        assert_eq!((hub.delivered(), hub.dropped_unknown()), (4, 2));
        assert_eq!(hub.dropped(), 2);
    }

    #[tokio::test]
    async fn delivers_in_order_and_drops_on_cut_links() {
        let hub = LocalHub::new();
        let (a, b) = (hub.network(1), hub.network(2));
        let inbox = Arc::new(Collect(Mutex::new(Vec::new())));
        b.start(inbox.clone()).await.expect("starts");
        a.send(envelope(1, 2));
        hub.cut(1, 2);
        a.send(envelope(1, 2));
        hub.heal();
        a.send(envelope(1, 2));
        a.send(envelope(1, 3)); // nobody there
        assert_eq!(inbox.0.lock().expect("test lock").len(), 2);
        assert_eq!((hub.delivered(), hub.dropped()), (2, 2));
        assert!(b.start(inbox).await.is_err(), "one node per serial");
    }
}
