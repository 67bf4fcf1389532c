//! [`MemStore`]: a [`Store`] in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use synevi_types::{
    Event, NodeMeta, Serial, Store, StoredState, SyneviError, TxRecord, WriteBatch, T0,
};

/// A [`Store`] that keeps everything in memory.
///
/// Commits are atomic (a batch is checked before any of it is applied) and "durable" for as
/// long as the `MemStore` lives: a node restarted on the same `MemStore` resumes where it was.
#[derive(Debug)]
pub struct MemStore {
    serial: Serial,
    state: Mutex<MemState>,
}

#[derive(Debug, Default, Clone)]
struct MemState {
    meta: Option<NodeMeta>,
    transactions: BTreeMap<T0, TxRecord>,
    forgotten: BTreeSet<T0>,
    floors: BTreeMap<Serial, T0>,
    events: BTreeMap<u64, Event>,
}

impl MemStore {
    /// An empty store for the node with this serial.
    pub fn new(serial: Serial) -> Result<Self, SyneviError> {
        Ok(MemStore {
            serial,
            state: Mutex::new(MemState::default()),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, MemState>, SyneviError> {
        self.state
            .lock()
            .map_err(|_| SyneviError::Store("memory store lock poisoned by a panic".into()))
    }

    /// How many transaction records the store holds (protocol state not yet forgotten).
    pub fn transaction_count(&self) -> usize {
        self.lock()
            .map(|state| state.transactions.len())
            .unwrap_or(0)
    }
}

/// Checks a batch against the current state without changing anything, so that a batch is
/// applied whole or not at all.
pub(crate) fn validate_batch(
    serial: Serial,
    last_event_seq: u64,
    batch: &WriteBatch,
) -> Result<(), SyneviError> {
    if let Some(meta) = &batch.meta {
        if meta.serial != serial {
            return Err(SyneviError::WrongNode {
                expected: serial,
                found: meta.serial,
            });
        }
    }
    let mut previous = last_event_seq;
    for event in &batch.events {
        if event.seq != previous + 1 {
            return Err(SyneviError::Store(format!(
                "event log must grow by one: expected seq {}, got {}",
                previous + 1,
                event.seq
            )));
        }
        previous = event.seq;
    }
    Ok(())
}

impl Store for MemStore {
    fn serial(&self) -> Serial {
        self.serial
    }

    /// A commit is a map update under a lock: no reason to leave the core's thread.
    fn commits_inline(&self) -> bool {
        true
    }

    fn load(&self) -> Result<StoredState, SyneviError> {
        let state = self.lock()?;
        Ok(StoredState {
            meta: state.meta.clone(),
            transactions: state.transactions.values().cloned().collect(),
            forgotten: state.forgotten.iter().copied().collect(),
            floors: state.floors.iter().map(|(s, f)| (*s, *f)).collect(),
            last_event_seq: state.events.keys().next_back().copied().unwrap_or(0),
        })
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        let mut state = self.lock()?;
        let last_event_seq = state.events.keys().next_back().copied().unwrap_or(0);
        validate_batch(self.serial, last_event_seq, batch)?;
        for record in &batch.transactions {
            state.transactions.insert(record.t0, record.clone());
        }
        for t0 in &batch.forget {
            state.transactions.remove(t0);
            // Below its coordinator's floor an id is covered by the floor already.
            if state
                .floors
                .get(&t0.0.serial)
                .is_none_or(|floor| t0 >= floor)
            {
                state.forgotten.insert(*t0);
            }
        }
        for &(serial, floor) in &batch.floors {
            let current = state.floors.entry(serial).or_insert(floor);
            *current = (*current).max(floor);
            let floor = *current;
            state
                .forgotten
                .retain(|t0| t0.0.serial != serial || *t0 >= floor);
        }
        for event in &batch.events {
            state.events.insert(event.seq, event.clone());
        }
        if let Some(meta) = &batch.meta {
            state.meta = Some(meta.clone());
        }
        Ok(())
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        // Nothing comes after the last possible seq (saturating would return it again).
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let state = self.lock()?;
        Ok(state
            .events
            .range(first..)
            .take(limit)
            .map(|(_, event)| event.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_conformance_tests!(crate::conformance::InMemory(|| MemStore::new(
        crate::conformance::SERIAL
    )));
}
