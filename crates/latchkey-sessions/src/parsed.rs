//! The cookie store's session states, parsed once per instance.
//!
//! With the cookie store, the session key *is* the state as JSON (actix-session has just
//! decrypted it from the cookie), and every request of a session brings the same JSON until
//! the state changes. Parsing it was a fifth of what recognising a logged-in visitor cost
//! (7,000 instructions a request, callgrind); cloning a map parsed before costs a fraction of
//! that. An entry is keyed by the JSON itself, so it can never be stale and needs no
//! invalidation. Written by hand: a bound is all it needs, where an LRU crate would keep an
//! order on every hit.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::cache::Map;
use crate::typed::State;

/// At most this many states are kept, whatever the capacity asked for: the hot sessions of
/// the last seconds are what saves work.
const MAX_ENTRIES: usize = 10_000;
/// A state longer than this is parsed every time, never kept. A login's state is about 200
/// bytes; with `MAX_ENTRIES`, the kept states stay under about 30 MiB even if every session
/// filled its cart.
const MAX_KEPT_LEN: usize = 1024;

/// At most `capacity` (and `MAX_ENTRIES`) parsed states, none when 0; when full, an arbitrary
/// one makes room.
#[derive(Clone)]
pub(crate) struct ParsedStates {
    entries: Arc<Mutex<Map<State>>>,
    capacity: usize,
}

impl ParsedStates {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: Arc::default(), capacity: capacity.min(MAX_ENTRIES) }
    }

    /// The state `json` holds: a copy of an earlier parse, or parsed now (and kept).
    pub(crate) fn parse(&self, json: &str) -> Result<State, serde_json::Error> {
        if self.capacity == 0 || json.len() > MAX_KEPT_LEN {
            return serde_json::from_str(json);
        }
        if let Some(state) = self.lock().get(json) {
            return Ok(state.clone());
        }
        let state: State = serde_json::from_str(json)?;
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            if let Some(evicted) = entries.keys().next().cloned() {
                entries.remove(&evicted);
            }
        }
        entries.insert(json.to_owned(), state.clone());
        Ok(state)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The map, even if a thread panicked holding it: each entry is written whole.
    fn lock(&self) -> MutexGuard<'_, Map<State>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail by panicking")]
    use super::*;

    const JSON: &str = r#"{"actix_identity.user_id":"\"token\"","latchkey.generation":"0"}"#;

    #[test]
    fn a_state_parses_the_same_the_first_time_and_after() {
        let parsed = ParsedStates::new(2);
        let direct: State = serde_json::from_str(JSON).unwrap();
        assert_eq!(parsed.parse(JSON).unwrap(), direct);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.parse(JSON).unwrap(), direct);
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn it_keeps_at_most_its_capacity_and_none_when_off() {
        let parsed = ParsedStates::new(2);
        for n in 0..5 {
            let state = parsed.parse(&format!(r#"{{"n":"{n}"}}"#)).unwrap();
            assert_eq!(state.get("n").map(String::as_str), Some(n.to_string().as_str()));
        }
        assert_eq!(parsed.len(), 2);
        let off = ParsedStates::new(0);
        assert!(off.parse(JSON).is_ok());
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn long_states_are_parsed_but_not_kept() {
        let parsed = ParsedStates::new(2);
        let long = format!(r#"{{"cart":"{}"}}"#, "x".repeat(MAX_KEPT_LEN));
        assert_eq!(parsed.parse(&long).unwrap().get("cart").map(String::len), Some(MAX_KEPT_LEN));
        assert_eq!(parsed.len(), 0);
        assert_eq!(ParsedStates::new(usize::MAX).capacity, MAX_ENTRIES);
    }

    #[test]
    fn malformed_state_is_an_error_and_is_not_kept() {
        let parsed = ParsedStates::new(2);
        assert!(parsed.parse("{not json").is_err());
        assert!(parsed.parse(r#"{"a":1}"#).is_err(), "values are strings");
        assert_eq!(parsed.len(), 0);
    }
}
