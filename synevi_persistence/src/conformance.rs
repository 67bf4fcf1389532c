//! The conformance suite every [`Store`] in this crate passes.
//!
//! A store implementation provides a [`Harness`] (how to open a fresh store and how to reopen
//! one from its durable state) and invokes [`store_conformance_tests!`] in its test module.
//! Besides the named cases, a proptest runs random sequences of commits and reopens against
//! [`Model`], a deliberately naive reference, and compares everything after every step (the
//! sled-style model test).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use synevi_types::{
    Ballot, Bytes, Deps, Event, Keys, NodeMeta, Serial, Status, Store, StoredState, SyneviError,
    Timestamp, TxBody, TxRecord, Ulid, WriteBatch, T, T0,
};

/// The serial the suite opens stores for.
pub const SERIAL: Serial = 1;

/// How the suite opens and reopens a store.
pub trait Harness {
    /// The store under test.
    type S: Store;
    /// A fresh, empty store.
    fn fresh(&mut self) -> Self::S;
    /// Closes `store` and opens it again from what it persisted (what a restart sees).
    fn reopen(&mut self, store: Self::S) -> Self::S;
}

/// Generates the suite's `#[test]`s for a harness expression.
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        #[test]
        fn conformance_empty_store_loads_nothing() {
            $crate::conformance::empty_store_loads_nothing(&mut $harness);
        }
        #[test]
        fn conformance_upsert_replaces_and_survives_reopen() {
            $crate::conformance::upsert_replaces_and_survives_reopen(&mut $harness);
        }
        #[test]
        fn conformance_forget_and_floors() {
            $crate::conformance::forget_and_floors(&mut $harness);
        }
        #[test]
        fn conformance_event_log_reads_from_any_position() {
            $crate::conformance::event_log_reads_from_any_position(&mut $harness);
        }
        #[test]
        fn conformance_bad_batches_change_nothing() {
            $crate::conformance::bad_batches_change_nothing(&mut $harness);
        }
        #[test]
        fn conformance_a_restart_reads_executed_records_as_applied() {
            $crate::conformance::a_restart_reads_executed_records_as_applied(&mut $harness);
        }
        #[test]
        fn conformance_random_operations_match_the_model() {
            $crate::conformance::random_operations_match_the_model(&mut $harness);
        }
    };
}

/// A harness for stores that are their own durable state (reopen returns the same store).
pub struct InMemory<F>(pub F);

impl<S: Store, F: FnMut() -> Result<S, SyneviError>> Harness for InMemory<F> {
    type S = S;
    fn fresh(&mut self) -> S {
        (self.0)().expect("a fresh store opens")
    }
    fn reopen(&mut self, store: S) -> S {
        store
    }
}

pub(crate) fn t0(time: u64, serial: Serial) -> T0 {
    T0(Timestamp::new(time, 0, serial))
}

pub(crate) fn record(t0: T0, status: Status, salt: u8) -> TxRecord {
    TxRecord {
        t0,
        status,
        t: T(Timestamp::new(t0.0.time + u64::from(salt), 1, t0.0.serial)),
        deps: Deps::from_unsorted(vec![T0(Timestamp::new(t0.0.time.saturating_sub(1), 0, 9))]),
        promised: Ballot {
            round: u32::from(salt),
            serial: 2,
        },
        accepted: Ballot::ZERO,
        body: Some(TxBody {
            id: u128::from(salt) << 64 | u128::from(t0.0.time),
            keys: Keys::set([format!("k{salt}")]),
            payload: Bytes::from(vec![salt; usize::from(salt) % 7]),
        }),
    }
}

pub(crate) fn event(seq: u64, salt: u8) -> Event {
    Event {
        seq,
        t0: t0(seq * 10 + u64::from(salt), 1),
        t: T(Timestamp::new(seq * 10 + u64::from(salt), 3, 1)),
        id: u128::from(seq),
        payload: Bytes::from(format!("event {seq} {salt}")),
        result_hash: [salt; 32],
    }
}

pub(crate) fn meta(applied_count: u64) -> NodeMeta {
    NodeMeta {
        node_id: Ulid::from_parts(7, 7),
        serial: SERIAL,
        clock_floor: Timestamp::new(applied_count * 3, 1, SERIAL),
        applied_count,
        applied_digest: [applied_count as u8; 32],
        members: vec![(2, true), (3, false)],
        applied_recorded_through: 0,
    }
}

fn commit(store: &impl Store, batch: WriteBatch) {
    store.commit(&batch).expect("a valid batch commits");
}

fn all_events(store: &impl Store) -> Vec<Event> {
    store
        .events_after(0, usize::MAX)
        .expect("events are readable")
}

/// `Store::load_for_restart` reads a committed record as applied when an event above
/// `NodeMeta::applied_recorded_through` names it, and leaves everything else as written
/// (`load` reads it as written).
pub fn a_restart_reads_executed_records_as_applied<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let (one, two) = (event(1, 0), event(2, 0));
    let unexecuted = t0(5, 2);
    commit(
        &store,
        WriteBatch {
            transactions: vec![
                record(one.t0, Status::Committed, 1),
                record(two.t0, Status::Committed, 2),
                record(unexecuted, Status::Committed, 3),
            ],
            events: vec![one.clone(), two.clone()],
            meta: Some(NodeMeta {
                applied_recorded_through: 1,
                ..meta(2)
            }),
            ..WriteBatch::default()
        },
    );
    let store = harness.reopen(store);
    let status_of = |state: &StoredState, t0: T0| {
        state
            .transactions
            .iter()
            .find(|record| record.t0 == t0)
            .map(|record| record.status)
    };
    let restart = store.load_for_restart().expect("loads");
    // Event 2 is above the mark: its record reads as applied.
    assert_eq!(status_of(&restart, two.t0), Some(Status::Applied));
    // Event 1 is at the mark: the record is authoritative (the node rewrote it as applied
    // before moving the mark; this one says committed because the test wrote it so).
    assert_eq!(status_of(&restart, one.t0), Some(Status::Committed));
    assert_eq!(status_of(&restart, unexecuted), Some(Status::Committed));
    let written = store.load().expect("loads");
    assert_eq!(status_of(&written, two.t0), Some(Status::Committed));
    assert_eq!(restart.transactions.len(), written.transactions.len());
}

/// A store that was never written has no meta, no records and an empty log.
pub fn empty_store_loads_nothing<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    assert_eq!(store.serial(), SERIAL);
    assert_eq!(store.load().expect("loads"), StoredState::default());
    assert!(all_events(&store).is_empty());
}

/// Records are keyed by `t0`, replaced whole (within a batch too: the last one wins), returned
/// in `t0` order, and survive a reopen.
pub fn upsert_replaces_and_survives_reopen<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let (a, b) = (t0(20, 1), t0(10, 2));
    commit(
        &store,
        WriteBatch {
            transactions: vec![
                record(a, Status::PreAccepted, 1),
                record(b, Status::Accepted, 2),
            ],
            meta: Some(meta(0)),
            ..WriteBatch::default()
        },
    );
    commit(
        &store,
        WriteBatch {
            transactions: vec![record(a, Status::Committed, 3)],
            ..WriteBatch::default()
        },
    );
    let store = harness.reopen(store);
    let loaded = store.load().expect("loads");
    assert_eq!(
        loaded.transactions,
        vec![
            record(b, Status::Accepted, 2),
            record(a, Status::Committed, 3)
        ]
    );
    assert_eq!(loaded.meta, Some(meta(0)));
    // Within one batch, a later record of the same transaction replaces an earlier one.
    commit(
        &store,
        WriteBatch {
            transactions: vec![
                record(b, Status::Committed, 4),
                record(a, Status::Applied, 5),
                record(b, Status::Applied, 6),
                record(a, Status::Applied, 7),
            ],
            ..WriteBatch::default()
        },
    );
    let store = harness.reopen(store);
    assert_eq!(
        store.load().expect("loads").transactions,
        vec![record(b, Status::Applied, 6), record(a, Status::Applied, 7)]
    );
}

/// Forgetting deletes the record and remembers the id; a coordinator's floor drops the
/// remembered ids of that coordinator below it, and only those.
pub fn forget_and_floors<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let ids = [t0(1, 1), t0(5, 1), t0(3, 2), t0(9, 1)];
    commit(
        &store,
        WriteBatch {
            transactions: ids
                .iter()
                .map(|&id| record(id, Status::Applied, 1))
                .collect(),
            ..WriteBatch::default()
        },
    );
    commit(
        &store,
        WriteBatch {
            forget: vec![ids[0], ids[1], ids[2]],
            ..WriteBatch::default()
        },
    );
    let loaded = store.load().expect("loads");
    assert_eq!(
        loaded.transactions,
        vec![record(ids[3], Status::Applied, 1)]
    );
    assert_eq!(loaded.forgotten, vec![ids[0], ids[2], ids[1]]);
    commit(
        &store,
        WriteBatch {
            floors: vec![(1, t0(5, 1))],
            ..WriteBatch::default()
        },
    );
    let store = harness.reopen(store);
    let loaded = store.load().expect("loads");
    assert_eq!(
        loaded.forgotten,
        vec![ids[2], ids[1]],
        "only serial 1 below 5 is dropped"
    );
    assert_eq!(loaded.floors, vec![(1, t0(5, 1))]);
    // Floors never go down.
    commit(
        &store,
        WriteBatch {
            floors: vec![(1, t0(2, 1))],
            ..WriteBatch::default()
        },
    );
    assert_eq!(store.load().expect("loads").floors, vec![(1, t0(5, 1))]);
}

/// The event log keeps execution order and is readable from any position, in pages.
pub fn event_log_reads_from_any_position<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    for chunk in (1..=25u64).collect::<Vec<_>>().chunks(7) {
        commit(
            &store,
            WriteBatch {
                events: chunk.iter().map(|&seq| event(seq, seq as u8)).collect(),
                ..WriteBatch::default()
            },
        );
    }
    let store = harness.reopen(store);
    assert_eq!(store.load().expect("loads").last_event_seq, 25);
    let page = store.events_after(10, 5).expect("reads");
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );
    assert_eq!(page[0], event(11, 11));
    assert!(store.events_after(25, 10).expect("reads").is_empty());
    assert!(store.events_after(0, 0).expect("reads").is_empty());
    assert!(store.events_after(u64::MAX, 10).expect("reads").is_empty());
    assert_eq!(all_events(&store).len(), 25);
}

/// A batch with a gap in the event log or another node's meta is refused whole.
pub fn bad_batches_change_nothing<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    commit(
        &store,
        WriteBatch {
            events: vec![event(1, 1)],
            ..WriteBatch::default()
        },
    );
    let before = store.load().expect("loads");
    let gap = WriteBatch {
        transactions: vec![record(t0(4, 1), Status::Committed, 1)],
        events: vec![event(3, 3)],
        ..WriteBatch::default()
    };
    assert!(matches!(store.commit(&gap), Err(SyneviError::Store(_))));
    let mut foreign = meta(1);
    foreign.serial = SERIAL + 1;
    let wrong_node = WriteBatch {
        transactions: vec![record(t0(4, 1), Status::Committed, 1)],
        meta: Some(foreign),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit(&wrong_node),
        Err(SyneviError::WrongNode {
            expected: SERIAL,
            found: SERIAL + 1
        })
    );
    let store = harness.reopen(store);
    assert_eq!(store.load().expect("loads"), before);
    assert_eq!(all_events(&store), vec![event(1, 1)]);
}

/// The reference the random test compares against: the obvious semantics, written plainly.
#[derive(Default, Debug)]
pub struct Model {
    meta: Option<NodeMeta>,
    transactions: BTreeMap<T0, TxRecord>,
    forgotten: BTreeSet<T0>,
    floors: BTreeMap<Serial, T0>,
    events: Vec<Event>,
}

impl Model {
    fn apply(&mut self, batch: &WriteBatch) {
        for record in &batch.transactions {
            self.transactions.insert(record.t0, record.clone());
        }
        for t0 in &batch.forget {
            self.transactions.remove(t0);
            self.forgotten.insert(*t0);
        }
        for &(serial, floor) in &batch.floors {
            let current = self.floors.entry(serial).or_insert(floor);
            if floor > *current {
                *current = floor;
            }
        }
        let floors = self.floors.clone();
        self.forgotten
            .retain(|t0| floors.get(&t0.0.serial).is_none_or(|floor| t0 >= floor));
        self.events.extend(batch.events.iter().cloned());
        if let Some(meta) = &batch.meta {
            self.meta = Some(meta.clone());
        }
    }

    fn expected(&self) -> StoredState {
        StoredState {
            meta: self.meta.clone(),
            transactions: self.transactions.values().cloned().collect(),
            forgotten: self.forgotten.iter().copied().collect(),
            floors: self.floors.iter().map(|(s, f)| (*s, *f)).collect(),
            last_event_seq: self.events.last().map_or(0, |e| e.seq),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(u64, Serial, u8, u8)>),
    Forget(Vec<(u64, Serial)>),
    Floor(Serial, u64),
    Events(u8, u8),
    Meta(u64),
    Reopen,
    Mixed(Vec<(u64, Serial, u8, u8)>, Vec<(u64, Serial)>, u8),
}

pub(crate) fn status(n: u8) -> Status {
    [
        Status::Promised,
        Status::PreAccepted,
        Status::Accepted,
        Status::AcceptedInvalidate,
        Status::Committed,
        Status::Applied,
        Status::Invalidated,
    ][usize::from(n % 7)]
}

fn op() -> impl Strategy<Value = Op> {
    let id = (0u64..12, 1u16..4);
    let rec = (0u64..12, 1u16..4, any::<u8>(), any::<u8>());
    prop_oneof![
        4 => proptest::collection::vec(rec.clone(), 1..4).prop_map(Op::Upsert),
        2 => proptest::collection::vec(id.clone(), 1..3).prop_map(Op::Forget),
        1 => (1u16..4, 0u64..12).prop_map(|(s, f)| Op::Floor(s, f)),
        2 => (1u8..4, any::<u8>()).prop_map(|(n, salt)| Op::Events(n, salt)),
        1 => (0u64..100).prop_map(Op::Meta),
        1 => Just(Op::Reopen),
        2 => (proptest::collection::vec(rec, 0..3), proptest::collection::vec(id, 0..3), 0u8..3)
            .prop_map(|(u, f, e)| Op::Mixed(u, f, e)),
    ]
}

/// Random commits and reopens, compared with [`Model`] after every step.
pub fn random_operations_match_the_model<H: Harness>(harness: &mut H) {
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    // The runner takes a `Fn`; the harness needs `&mut`.
    let harness = std::cell::RefCell::new(harness);
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let mut harness = harness.borrow_mut();
            let mut store = harness.fresh();
            let mut model = Model::default();
            for op in ops {
                let next_seq = model.events.last().map_or(0, |e| e.seq) + 1;
                let batch = match op {
                    Op::Reopen => {
                        store = harness.reopen(store);
                        WriteBatch::default()
                    }
                    Op::Upsert(records) => WriteBatch {
                        transactions: records
                            .into_iter()
                            .map(|(time, serial, s, salt)| {
                                record(t0(time, serial), status(s), salt)
                            })
                            .collect(),
                        ..WriteBatch::default()
                    },
                    Op::Forget(ids) => WriteBatch {
                        forget: ids
                            .into_iter()
                            .map(|(time, serial)| t0(time, serial))
                            .collect(),
                        ..WriteBatch::default()
                    },
                    Op::Floor(serial, time) => WriteBatch {
                        floors: vec![(serial, t0(time, serial))],
                        ..WriteBatch::default()
                    },
                    Op::Events(n, salt) => WriteBatch {
                        events: (0..u64::from(n))
                            .map(|i| event(next_seq + i, salt))
                            .collect(),
                        ..WriteBatch::default()
                    },
                    Op::Meta(count) => WriteBatch {
                        meta: Some(meta(count)),
                        ..WriteBatch::default()
                    },
                    Op::Mixed(records, ids, events) => WriteBatch {
                        transactions: records
                            .into_iter()
                            .map(|(time, serial, s, salt)| {
                                record(t0(time, serial), status(s), salt)
                            })
                            .collect(),
                        forget: ids
                            .into_iter()
                            .map(|(time, serial)| t0(time, serial))
                            .collect(),
                        events: (0..u64::from(events))
                            .map(|i| event(next_seq + i, 9))
                            .collect(),
                        ..WriteBatch::default()
                    },
                };
                store
                    .commit(&batch)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.apply(&batch);
                prop_assert_eq!(
                    store
                        .load()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    model.expected()
                );
                prop_assert_eq!(
                    store
                        .events_after(0, usize::MAX)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    model.events.clone()
                );
            }
            Ok(())
        })
        .expect("the store behaves like the model");
}
