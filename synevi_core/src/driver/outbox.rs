//! [`Outbox`]: where a node's envelopes go on their way to the network, holding back those
//! to members restored from the store until the application has added them again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use synevi_types::{Envelope, Network, Serial};

/// How long envelopes to a restored member wait for [`Outbox::admit`] at most. An
/// application that adds its members right after [`super::Node::new`] does so within
/// milliseconds; one that never adds a member again (it added it to the network itself, say)
/// has its envelopes sent after this, which the network delivers if it knows the member.
pub(crate) const RESTORED_MEMBER_WAIT: Duration = Duration::from_secs(5);

/// Most envelopes held for one member; beyond it the oldest are dropped (the protocol sends
/// what matters again), so a member that is never added costs bounded memory.
pub(crate) const HELD_PER_MEMBER_MAX: usize = 4096;

/// Sends a node's envelopes to the network. A node restarted from its store knows its
/// members' serials (the core persists them) and may send to them in its first rounds,
/// before the application has added them, and with them their addresses, to the network
/// through [`super::Node::add_member`]: a network that needs an address would drop those
/// envelopes. So envelopes to a restored member wait here until the member is admitted
/// (added through the node), or until [`RESTORED_MEMBER_WAIT`] has passed since the start.
///
/// Invariant: once the gate is open (`gated` false) nothing is held and nothing will be, so
/// a send needs no lock; while it is closed, a member's envelopes are either held or sent,
/// decided under the lock that admitting it takes, so none is held after its admission and
/// the held ones go before any later one.
pub(crate) struct Outbox<N> {
    network: Arc<N>,
    gated: AtomicBool,
    held: Mutex<Held>,
}

struct Held {
    /// Restored members not admitted yet, with their envelopes in the order they were sent.
    queues: FxHashMap<Serial, VecDeque<Envelope>>,
    /// When the remaining envelopes go whether or not their members were admitted.
    until: Instant,
    /// Envelopes dropped because a member's queue was full.
    dropped: u64,
}

impl<N: Network> Outbox<N> {
    /// An outbox for `network` that holds envelopes to `restored` members (none for a node
    /// that starts fresh).
    pub(crate) fn new(network: Arc<N>, restored: impl IntoIterator<Item = Serial>) -> Self {
        let queues: FxHashMap<Serial, VecDeque<Envelope>> = restored
            .into_iter()
            .map(|serial| (serial, VecDeque::new()))
            .collect();
        Outbox {
            network,
            gated: AtomicBool::new(!queues.is_empty()),
            held: Mutex::new(Held {
                queues,
                until: Instant::now() + RESTORED_MEMBER_WAIT,
                dropped: 0,
            }),
        }
    }

    /// Sends `envelope`, or holds it if it is for a restored member not yet admitted.
    pub(crate) fn send(&self, envelope: Envelope) {
        if self.gated.load(Ordering::Acquire) {
            let mut guard = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let held = &mut *guard;
            if Instant::now() >= held.until {
                self.open(held);
            } else if let Some(queue) = held.queues.get_mut(&envelope.to) {
                if queue.len() >= HELD_PER_MEMBER_MAX {
                    queue.pop_front();
                    held.dropped += 1;
                }
                queue.push_back(envelope);
                return;
            }
        }
        self.network.send(envelope);
    }

    /// The application added `serial` to the network: what was held for it goes now, and
    /// nothing more is held for it.
    pub(crate) fn admit(&self, serial: Serial) {
        if !self.gated.load(Ordering::Acquire) {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = held.queues.remove(&serial) {
            for envelope in queue {
                self.network.send(envelope);
            }
        }
        if held.queues.is_empty() {
            self.open(&mut held);
        }
    }

    /// Sends everything still held and stops holding.
    fn open(&self, held: &mut Held) {
        let unadmitted: Vec<Serial> = held.queues.keys().copied().collect();
        for (_, queue) in held.queues.drain() {
            for envelope in queue {
                self.network.send(envelope);
            }
        }
        if !unadmitted.is_empty() {
            tracing::info!(
                ?unadmitted,
                "restored members not added again within {RESTORED_MEMBER_WAIT:?}; what was \
                 held for them goes to the network as it is"
            );
        }
        if held.dropped > 0 {
            tracing::info!(
                dropped = held.dropped,
                "envelopes held for restored members dropped, more than \
                 {HELD_PER_MEMBER_MAX} for one member"
            );
        }
        self.gated.store(false, Ordering::Release);
    }

    /// How many envelopes wait for their members' admission now.
    pub(crate) fn held(&self) -> usize {
        if !self.gated.load(Ordering::Acquire) {
            return 0;
        }
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.queues.values().map(VecDeque::len).sum()
    }

    /// The network behind the outbox.
    pub(crate) fn network(&self) -> &Arc<N> {
        &self.network
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use synevi_types::{Applied, Inbox, Member, Message, SyneviError, Timestamp};

    use super::*;

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(Serial, u64)>>,
    }

    #[async_trait]
    impl Network for Recorder {
        async fn start(&self, _inbox: Arc<dyn Inbox>) -> Result<(), SyneviError> {
            Ok(())
        }
        async fn add_member(&self, _member: Member) -> Result<(), SyneviError> {
            Ok(())
        }
        fn send(&self, envelope: Envelope) {
            let tag = envelope.clock.time;
            self.sent
                .lock()
                .expect("not poisoned")
                .push((envelope.to, tag));
        }
        async fn shutdown(&self) {}
    }

    fn envelope(to: Serial, tag: u64) -> Envelope {
        Envelope {
            from: 1,
            to,
            message: Message::Applied(Applied::default()),
            clock: Timestamp::new(tag, 0, 1),
        }
    }

    fn sent(outbox: &Outbox<Recorder>) -> Vec<(Serial, u64)> {
        outbox.network().sent.lock().expect("not poisoned").clone()
    }

    #[test]
    fn a_fresh_node_sends_at_once() {
        let outbox = Outbox::new(Arc::new(Recorder::default()), []);
        outbox.send(envelope(2, 1));
        assert_eq!(sent(&outbox), [(2, 1)]);
    }

    #[test]
    fn envelopes_to_a_restored_member_wait_for_its_admission_in_order() {
        let outbox = Outbox::new(Arc::new(Recorder::default()), [2, 3]);
        outbox.send(envelope(2, 1));
        outbox.send(envelope(3, 2));
        outbox.send(envelope(2, 3));
        outbox.send(envelope(4, 4));
        assert_eq!(sent(&outbox), [(4, 4)], "only the unknown serial went");
        assert_eq!(outbox.held(), 3);
        outbox.admit(2);
        outbox.send(envelope(2, 5));
        assert_eq!(sent(&outbox), [(4, 4), (2, 1), (2, 3), (2, 5)]);
        assert!(outbox.gated.load(Ordering::Acquire), "member 3 still waits");
        outbox.admit(3);
        assert!(
            !outbox.gated.load(Ordering::Acquire),
            "open once all are admitted"
        );
        assert_eq!(sent(&outbox).last(), Some(&(3, 2)));
    }

    #[test]
    fn a_member_never_admitted_gets_its_envelopes_after_the_wait() {
        let outbox = Outbox::new(Arc::new(Recorder::default()), [2]);
        outbox.send(envelope(2, 1));
        assert!(sent(&outbox).is_empty());
        // As if the wait had passed.
        outbox.held.lock().expect("not poisoned").until = Instant::now();
        outbox.send(envelope(2, 2));
        assert_eq!(sent(&outbox), [(2, 1), (2, 2)]);
        assert!(!outbox.gated.load(Ordering::Acquire));
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let outbox = Outbox::new(Arc::new(Recorder::default()), [2]);
        for tag in 0..(HELD_PER_MEMBER_MAX as u64 + 2) {
            outbox.send(envelope(2, tag));
        }
        outbox.admit(2);
        let sent = sent(&outbox);
        assert_eq!(sent.len(), HELD_PER_MEMBER_MAX);
        assert_eq!(sent.first(), Some(&(2, 2)), "the two oldest were dropped");
    }
}
