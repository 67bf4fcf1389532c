//! A linearizability checker for histories of KV operations: the Wing–Gong algorithm with
//! Lowe's memoization (Wing & Gong 1993; Lowe, "Testing for linearizability", 2017).
//!
//! A history is a set of [`Operation`]s, each with the time it was invoked and, if the client
//! got an answer, the time it returned and the answer. The history is linearizable if there
//! is a total order of the operations that (1) respects real time (an operation that
//! returned before another was invoked comes first) and (2) explains every answer by the
//! sequential semantics of a map. Operations whose outcome is unknown (the client timed out,
//! the connection broke, the node answered 503) may have taken effect at any time after
//! their invocation, or never: they are treated as returning at infinity, with any answer.
//!
//! A map is linearizable exactly when each key is (operations on different keys commute), so
//! [`check`] checks each key on its own, which keeps the search small.
//!
//! The search: walk the events in time order; at an invocation, try to linearize that
//! operation now (apply it to the current value; its answer must match); at a return of an
//! operation that is not linearized yet, undo the last choice and try the next candidate.
//! Lowe's memoization records every (set of linearized operations, value) reached, and never
//! explores one twice: the rest of the search only depends on that pair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read the key.
    Get,
    /// Set the key to this value.
    Put(String),
    /// Set the key to `value` if it holds `expected` (`None`: if it does not exist).
    Cas {
        /// The value the key must hold.
        expected: Option<String>,
        /// The new value.
        value: String,
    },
    /// Remove the key.
    Delete,
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// For [`Command::Get`], the value read; for [`Command::Put`] and [`Command::Delete`],
    /// the previous value. `None`: the key did not exist.
    Value(Option<String>),
    /// For [`Command::Cas`]: `Ok` if it swapped, `Err(current)` if the key held `current`.
    Cas(Result<(), Option<String>>),
    /// No answer, or one that does not say whether the operation took effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client ran it (for messages).
    pub client: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub command: Command,
    /// What was answered.
    pub response: Response,
    /// When it was invoked (any monotonic clock, the same for the whole history).
    pub invoked: u64,
    /// When the answer arrived; `None` if there was none (then `response` is `Unknown`).
    pub returned: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {:?} ", self.client, self.key)?;
        match &self.command {
            Command::Get => write!(f, "get")?,
            Command::Put(value) => write!(f, "put {value:?}")?,
            Command::Cas { expected, value } => write!(f, "cas {expected:?} -> {value:?}")?,
            Command::Delete => write!(f, "delete")?,
        }
        match &self.response {
            Response::Value(value) => write!(f, " => {value:?}")?,
            Response::Cas(Ok(())) => write!(f, " => swapped")?,
            Response::Cas(Err(current)) => write!(f, " => mismatch, current {current:?}")?,
            Response::Unknown => write!(f, " => unknown")?,
        }
        match self.returned {
            Some(returned) => write!(f, " [{}, {}]", self.invoked, returned),
            None => write!(f, " [{}, ∞)", self.invoked),
        }
    }
}

/// What a successful check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations checked, in all.
    pub operations: usize,
    /// Of those, operations with an unknown outcome.
    pub unknown: usize,
    /// Operations per key.
    pub per_key: BTreeMap<String, usize>,
    /// Search states explored, in all (a measure of the work).
    pub states_explored: u64,
}

/// Why a history is not linearizable, or could not be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// An operation's response does not fit its command, or it returned before it was
    /// invoked.
    #[error("malformed history: {0}")]
    Malformed(String),
    /// No order explains the answers.
    #[error(
        "not linearizable: key {key:?}: at most {linearized} of its {operations} operations \
         can be ordered; then {stuck} returned, and no order of the operations pending at \
         that point explains its answer (the key held {value:?})"
    )]
    NotLinearizable {
        /// The key.
        key: String,
        /// Its operations.
        operations: usize,
        /// The longest prefix of a valid order found.
        linearized: usize,
        /// The operation whose answer could not be explained.
        stuck: String,
        /// The key's value after that longest prefix.
        value: Option<String>,
    },
    /// The search explored more states than its budget allows.
    #[error("key {key:?}: gave up after exploring {explored} states")]
    BudgetExhausted {
        /// The key.
        key: String,
        /// States explored.
        explored: u64,
    },
}

/// The most states one key's search explores before giving up.
pub const STATES_PER_KEY_MAX: u64 = 50_000_000;

/// Checks that `history` is linearizable, key by key.
pub fn check(history: &[Operation]) -> Result<Report, CheckError> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        validate(operation)?;
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut report = Report {
        operations: history.len(),
        unknown: history
            .iter()
            .filter(|operation| operation.response == Response::Unknown)
            .count(),
        ..Report::default()
    };
    for (key, operations) in by_key {
        report.states_explored += check_key(key, &operations)?;
        report.per_key.insert(key.to_string(), operations.len());
    }
    Ok(report)
}

fn validate(operation: &Operation) -> Result<(), CheckError> {
    let fits = matches!(
        (&operation.command, &operation.response),
        (_, Response::Unknown)
            | (
                Command::Get | Command::Put(_) | Command::Delete,
                Response::Value(_)
            )
            | (Command::Cas { .. }, Response::Cas(_))
    );
    if !fits {
        return Err(CheckError::Malformed(format!(
            "the response does not fit the command: {operation}"
        )));
    }
    if operation
        .returned
        .is_some_and(|returned| returned < operation.invoked)
    {
        return Err(CheckError::Malformed(format!(
            "returned before it was invoked: {operation}"
        )));
    }
    Ok(())
}

/// Values as small numbers, so search states hash cheaply.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.ids.insert(value.to_string(), id);
        self.values.push(value.to_string());
        id
    }

    fn value(&self, id: Option<u32>) -> Option<String> {
        id.and_then(|id| self.values.get(id as usize).cloned())
    }
}

/// A command and its response with values interned.
#[derive(Clone, Copy)]
enum Step {
    Get(Option<Option<u32>>),
    Put(u32, Option<Option<u32>>),
    Cas {
        expected: Option<u32>,
        value: u32,
        /// `None`: unknown; `Some(Ok)`: swapped; `Some(Err(current))`: mismatch.
        outcome: Option<Result<(), Option<u32>>>,
    },
    Delete(Option<Option<u32>>),
}

impl Step {
    fn new(operation: &Operation, interner: &mut Interner) -> Step {
        let mut value_of = |value: &Option<String>| value.as_deref().map(|v| interner.id(v));
        let answer = match &operation.response {
            Response::Value(value) => Some(value_of(value)),
            _ => None,
        };
        match &operation.command {
            Command::Get => Step::Get(answer),
            Command::Delete => Step::Delete(answer),
            Command::Put(value) => {
                let value = interner.id(value);
                Step::Put(value, answer)
            }
            Command::Cas { expected, value } => {
                let outcome = match &operation.response {
                    Response::Cas(Ok(())) => Some(Ok(())),
                    Response::Cas(Err(current)) => {
                        Some(Err(current.as_deref().map(|v| interner.id(v))))
                    }
                    _ => None,
                };
                let expected = expected.as_deref().map(|v| interner.id(v));
                Step::Cas {
                    expected,
                    value: interner.id(value),
                    outcome,
                }
            }
        }
    }

    /// The value after this operation, if its answer fits the value before.
    fn apply(self, state: Option<u32>) -> Option<Option<u32>> {
        let fits = |answer: Option<Option<u32>>| answer.is_none_or(|answer| answer == state);
        match self {
            Step::Get(answer) => fits(answer).then_some(state),
            Step::Put(value, previous) => fits(previous).then_some(Some(value)),
            Step::Delete(previous) => fits(previous).then_some(None),
            Step::Cas {
                expected,
                value,
                outcome,
            } => {
                let swaps = state == expected;
                match outcome {
                    None => Some(if swaps { Some(value) } else { state }),
                    Some(Ok(())) => swaps.then_some(Some(value)),
                    Some(Err(current)) => (!swaps && current == state).then_some(state),
                }
            }
        }
    }
}

/// The events of one key's history as a doubly linked list, in time order.
struct Events {
    /// For each event: the operation and whether it is its invocation.
    operation: Vec<usize>,
    is_call: Vec<bool>,
    /// For an invocation event, the index of its return event.
    matching: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tail: usize,
}

impl Events {
    fn new(operations: &[&Operation]) -> Events {
        // (time, calls before returns at equal times: concurrent rather than ordered, which
        // can only make the check more lenient, never report a false violation; operation).
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(operations.len() * 2);
        for (index, operation) in operations.iter().enumerate() {
            order.push((operation.invoked, 0, index));
            let returned = match (&operation.response, operation.returned) {
                (Response::Unknown, _) | (_, None) => u64::MAX,
                (_, Some(returned)) => returned,
            };
            order.push((returned, 1, index));
        }
        order.sort_unstable();
        let count = order.len();
        let (head, tail) = (count, count + 1);
        let mut events = Events {
            operation: order.iter().map(|event| event.2).collect(),
            is_call: order.iter().map(|event| event.1 == 0).collect(),
            matching: vec![usize::MAX; count],
            next: (1..=count + 2).collect(),
            prev: Vec::with_capacity(count + 2),
            head,
            tail,
        };
        events.prev = (0..count + 2)
            .map(|index| if index == 0 { head } else { index - 1 })
            .collect();
        events.next[count - 1] = tail;
        events.next[head] = if count == 0 { tail } else { 0 };
        events.prev[tail] = if count == 0 { head } else { count - 1 };
        events.prev[head] = usize::MAX;
        events.next[tail] = usize::MAX;
        let mut call_of = vec![usize::MAX; operations.len()];
        for (event, &(_, kind, operation)) in order.iter().enumerate() {
            if kind == 0 {
                call_of[operation] = event;
            } else {
                events.matching[call_of[operation]] = event;
            }
        }
        events
    }

    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        self.prev[next] = event;
    }

    /// Removes an invocation and its return (the operation is linearized).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    /// Undoes [`Events::lift`] (in reverse order, as the links require).
    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }
}

/// Searches one key's operations; returns the number of states explored.
fn check_key(key: &str, operations: &[&Operation]) -> Result<u64, CheckError> {
    if operations.is_empty() {
        return Ok(0);
    }
    let mut interner = Interner::default();
    let steps: Vec<Step> = operations
        .iter()
        .map(|operation| Step::new(operation, &mut interner))
        .collect();
    let mut events = Events::new(operations);
    let words = operations.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    // The choices made so far: (invocation event, value before it).
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut state: Option<u32> = None;
    let mut explored: u64 = 0;
    // The deepest point reached, for the report: (linearized count, stuck operation, value).
    let mut deepest: (usize, usize, Option<u32>) = (0, 0, None);
    let mut event = events.next[events.head];
    while events.next[events.head] != events.tail {
        if events.is_call[event] {
            let operation = events.operation[event];
            if let Some(after) = steps[operation].apply(state) {
                linearized[operation / 64] |= 1 << (operation % 64);
                if seen.insert((linearized.clone(), after)) {
                    explored += 1;
                    if explored > STATES_PER_KEY_MAX {
                        return Err(CheckError::BudgetExhausted {
                            key: key.to_string(),
                            explored,
                        });
                    }
                    stack.push((event, state));
                    state = after;
                    events.lift(event);
                    event = events.next[events.head];
                    continue;
                }
                linearized[operation / 64] &= !(1 << (operation % 64));
            }
            event = events.next[event];
        } else {
            // An operation returned without being linearized: the last choice was wrong.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), events.operation[event], state);
            }
            let Some((call, before)) = stack.pop() else {
                let (count, stuck, value) = deepest;
                return Err(CheckError::NotLinearizable {
                    key: key.to_string(),
                    operations: operations.len(),
                    linearized: count,
                    stuck: operations[stuck].to_string(),
                    value: interner.value(value),
                });
            };
            let operation = events.operation[call];
            linearized[operation / 64] &= !(1 << (operation % 64));
            state = before;
            events.unlift(call);
            event = events.next[call];
        }
    }
    Ok(explored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(invoked: u64, returned: Option<u64>, command: Command, response: Response) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            command,
            response,
            invoked,
            returned,
        }
    }

    fn put(invoked: u64, returned: u64, value: &str, previous: Option<&str>) -> Operation {
        op(
            invoked,
            Some(returned),
            Command::Put(value.into()),
            Response::Value(previous.map(Into::into)),
        )
    }

    fn get(invoked: u64, returned: u64, value: Option<&str>) -> Operation {
        op(
            invoked,
            Some(returned),
            Command::Get,
            Response::Value(value.map(Into::into)),
        )
    }

    fn cas(
        invoked: u64,
        returned: Option<u64>,
        expected: Option<&str>,
        value: &str,
        response: Response,
    ) -> Operation {
        op(
            invoked,
            returned,
            Command::Cas {
                expected: expected.map(Into::into),
                value: value.into(),
            },
            response,
        )
    }

    fn not_linearizable(history: &[Operation]) -> bool {
        matches!(check(history), Err(CheckError::NotLinearizable { .. }))
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [
            get(0, 1, None),
            put(2, 3, "a", None),
            get(4, 5, Some("a")),
            put(6, 7, "b", Some("a")),
            cas(8, Some(9), Some("b"), "c", Response::Cas(Ok(()))),
            cas(
                10,
                Some(11),
                Some("b"),
                "d",
                Response::Cas(Err(Some("c".into()))),
            ),
            op(
                12,
                Some(13),
                Command::Delete,
                Response::Value(Some("c".into())),
            ),
            get(14, 15, None),
        ];
        let report = check(&history).expect("linearizable");
        assert_eq!(report.operations, 8);
        assert_eq!(report.per_key.get("k"), Some(&8));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two overlapping puts; reads after both see the one ordered last.
        let history = [
            put(0, 10, "a", None),
            put(1, 11, "b", Some("a")),
            get(12, 13, Some("b")),
        ];
        assert!(check(&history).is_ok());
        let other_order = [
            put(0, 10, "a", Some("b")),
            put(1, 11, "b", None),
            get(12, 13, Some("a")),
        ];
        assert!(check(&other_order).is_ok());
        // A read overlapping a put may see it or not.
        assert!(check(&[put(0, 10, "a", None), get(5, 6, None)]).is_ok());
        assert!(check(&[put(0, 10, "a", None), get(5, 6, Some("a"))]).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        // The put returned before the read started: the read must see it.
        let history = [put(0, 1, "a", None), get(2, 3, None)];
        assert!(not_linearizable(&history));
        // Read "b" then, strictly later, the older "a": values cannot go back.
        let history = [
            put(0, 1, "a", None),
            put(2, 20, "b", Some("a")),
            get(3, 4, Some("b")),
            get(5, 6, Some("a")),
        ];
        assert!(not_linearizable(&history));
    }

    #[test]
    fn a_lost_write_is_caught() {
        let history = [
            put(0, 1, "a", None),
            put(2, 3, "b", Some("a")),
            get(4, 5, Some("a")),
        ];
        let error = check(&history).expect_err("the put of b was lost");
        assert!(error.to_string().contains("not linearizable"), "{error}");
    }

    #[test]
    fn a_wrong_previous_value_is_caught() {
        assert!(not_linearizable(&[
            put(0, 1, "a", None),
            put(2, 3, "b", None)
        ]));
    }

    #[test]
    fn cas_answers_must_fit_the_value() {
        assert!(not_linearizable(&[
            put(0, 1, "a", None),
            cas(
                2,
                Some(3),
                Some("a"),
                "b",
                Response::Cas(Err(Some("a".into())))
            ),
        ]));
        assert!(not_linearizable(&[cas(
            0,
            Some(1),
            Some("x"),
            "b",
            Response::Cas(Ok(()))
        )]));
        assert!(check(&[
            cas(0, Some(1), None, "b", Response::Cas(Ok(()))),
            get(2, 3, Some("b"))
        ])
        .is_ok());
    }

    #[test]
    fn an_unknown_outcome_may_take_effect_late_or_never() {
        let unknown_put = op(0, None, Command::Put("a".into()), Response::Unknown);
        // Never took effect.
        assert!(check(&[unknown_put.clone(), get(5, 6, None)]).is_ok());
        // Took effect, long after it was invoked.
        assert!(check(&[
            unknown_put.clone(),
            get(5, 6, None),
            get(100, 101, Some("a"))
        ])
        .is_ok());
        // But it cannot take effect before it was invoked.
        assert!(not_linearizable(&[
            get(0, 1, Some("a")),
            op(2, None, Command::Put("a".into()), Response::Unknown),
        ]));
        // An unknown CAS swaps only if the value fits.
        assert!(not_linearizable(&[
            put(0, 1, "x", None),
            cas(2, None, Some("y"), "z", Response::Unknown),
            get(3, 4, Some("z")),
        ]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(0, 1, "a", None);
        other.key = "other".into();
        let history = [put(0, 1, "a", None), other, get(2, 3, Some("a"))];
        let report = check(&history).expect("linearizable");
        assert_eq!(report.per_key.len(), 2);
    }

    #[test]
    fn malformed_histories_are_refused() {
        assert!(matches!(
            check(&[op(0, Some(1), Command::Get, Response::Cas(Ok(())))]),
            Err(CheckError::Malformed(_))
        ));
        assert!(matches!(
            check(&[get(5, 1, None)]),
            Err(CheckError::Malformed(_))
        ));
    }

    #[test]
    fn many_concurrent_clients_stay_tractable() {
        // 8 clients, each putting its own values while reading: a linearizable history
        // generated from a sequential execution with overlapping intervals.
        let mut history = Vec::new();
        let mut current: Option<String> = None;
        let mut time = 0;
        for round in 0..200u64 {
            for client in 0..8usize {
                let value = format!("{client}-{round}");
                let invoked = time;
                time += 1;
                let previous = current.replace(value.clone());
                history.push(Operation {
                    client,
                    key: "k".into(),
                    command: Command::Put(value),
                    response: Response::Value(previous),
                    invoked,
                    returned: Some(invoked + 10),
                });
            }
            time += 10;
        }
        let report = check(&history).expect("linearizable");
        assert_eq!(report.operations, 1600);
    }
}
