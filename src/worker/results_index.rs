//! What a worker keeps in memory of the results log, and for how long.
//!
//! Per idempotency key: where its newest record is in the log and which state it says, but
//! not the reply of a final record. Repeats are rare; one that finds a final record reads
//! its reply back from the log at that place. A key is kept as a 128-bit digest (SHA-1, as
//! a UUID v5), so an entry has one size whatever key a caller chose: about 60 bytes with
//! the table's own overhead, where the whole record took about 750.
//!
//! The idempotency window bounds it in time. A key whose newest record was written more
//! than `worker.idempotency_window_ms` ago is dropped, and records older than that are
//! not taken in when the log is read again. Both go by the record's timestamp, never by
//! memory pressure: within the window no key is forgotten, so a repeat within it is never
//! taken for a new payment. A request older than the window is not charged at all (see
//! [`settle`](super::settle)), so a redelivered request cannot outlive its key.

use crate::worker::answer::Recorded;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// An idempotency key's digest: a payment's identity in memory.
pub type KeyId = [u8; 16];

/// The digest of `key`.
pub fn key_id(key: &str) -> KeyId {
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).as_bytes()
}

/// Where a record is in the results log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPlace {
    pub partition: i32,
    /// -1 for a record of a log that has since started over: older than any record of
    /// the new log, and no longer readable.
    pub offset: i64,
}

/// What a record says, without the reply of a final one.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    Pending {
        attempt: Box<str>,
        started_ms: i64,
        /// The request's fingerprint: a repeat with another is refused at once.
        fingerprint: Box<str>,
    },
    Final,
    Retryable,
}

impl Kept {
    pub fn of(recorded: &Recorded) -> Kept {
        match recorded {
            Recorded::Pending {
                attempt,
                started_ms,
                fingerprint,
            } => Kept::Pending {
                attempt: attempt.as_str().into(),
                started_ms: *started_ms,
                fingerprint: fingerprint.as_str().into(),
            },
            Recorded::Final { .. } => Kept::Final,
            Recorded::Retryable => Kept::Retryable,
        }
    }

    /// What a results record's JSON says, read without building a final one's reply:
    /// every record a worker reads from the log passes here, and a `Recorded` would parse
    /// the reply (and buffer the whole record to find its tag) only to drop it.
    pub fn parse(json: &[u8]) -> serde_json::Result<Kept> {
        let head: Head = serde_json::from_slice(json)?;
        Ok(match head.state {
            State::Pending => Kept::Pending {
                attempt: head.attempt.into(),
                started_ms: head.started_ms,
                fingerprint: head.fingerprint.into(),
            },
            State::Final => Kept::Final,
            State::Retryable => Kept::Retryable,
        })
    }

    /// The whole record, when nothing of it was left out (all but a final one).
    pub fn whole(&self) -> Option<Recorded> {
        match self {
            Kept::Pending {
                attempt,
                started_ms,
                fingerprint,
            } => Some(Recorded::Pending {
                attempt: attempt.to_string(),
                started_ms: *started_ms,
                fingerprint: fingerprint.to_string(),
            }),
            Kept::Final => None,
            Kept::Retryable => Some(Recorded::Retryable),
        }
    }
}

/// The fields of a results record that [`Kept`] keeps; the others (a final one's reply)
/// are skipped unread.
#[derive(Deserialize)]
struct Head {
    state: State,
    #[serde(default)]
    attempt: String,
    #[serde(default)]
    started_ms: i64,
    #[serde(default)]
    fingerprint: String,
}

/// A results record's `state`, as [`Recorded`] spells it.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Pending,
    Final,
    Retryable,
}

/// The newest record of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub place: LogPlace,
    /// The record's timestamp: the window is counted from it.
    pub written_ms: i64,
    pub kept: Kept,
}

impl Known {
    /// What is kept of `recorded`, written at `written_ms` to `place`.
    pub fn of(place: LogPlace, written_ms: i64, recorded: &Recorded) -> Known {
        Known::at(place, written_ms, Kept::of(recorded))
    }

    pub fn at(place: LogPlace, written_ms: i64, kept: Kept) -> Known {
        Known {
            place,
            written_ms,
            kept,
        }
    }
}

/// Past `window`: a record written at `written_ms` is older than the window at `now_ms`.
/// A timestamp in the future (another host's clock) is not.
pub fn past_window(window: Duration, written_ms: i64, now_ms: i64) -> bool {
    let window_ms = window.as_millis().min(i64::MAX as u128) as i64;
    now_ms.saturating_sub(written_ms) > window_ms
}

pub struct ResultsIndex {
    keys: HashMap<KeyId, Known>,
    window_ms: i64,
    /// When keys past the window are next dropped.
    next_sweep_ms: i64,
}

impl ResultsIndex {
    pub fn new(window: Duration) -> ResultsIndex {
        ResultsIndex {
            keys: HashMap::new(),
            window_ms: window.as_millis().min(i64::MAX as u128) as i64,
            next_sweep_ms: 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Known> {
        self.keys.get(&key_id(key))
    }

    /// Takes in `recorded`, written at `written_ms` to `place`, unless a newer record of
    /// `key` is known or it is past the window at `now_ms`.
    pub fn remember(&mut self, key: &str, known: Known, now_ms: i64) {
        self.sweep_when_due(now_ms);
        if self.past_window(known.written_ms, now_ms) {
            return;
        }
        let id = key_id(key);
        let newer = self
            .keys
            .get(&id)
            .is_none_or(|seen| known.place.offset >= seen.place.offset);
        if newer {
            self.keys.insert(id, known);
        }
    }

    /// A tombstone: the key is gone from the log.
    pub fn forget(&mut self, key: &str) {
        self.keys.remove(&key_id(key));
    }

    /// The log started over: everything known came before anything it will hold.
    pub fn log_started_over(&mut self) {
        for known in self.keys.values_mut() {
            known.place.offset = -1;
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Past the window: the record is older than the window at `now_ms`. A timestamp in
    /// the future (another host's clock) is not.
    pub fn past_window(&self, written_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(written_ms) > self.window_ms
    }

    /// Drops keys past the window, at most every 1/16 of it (and at least once a
    /// minute), so memory holds the window plus a little, and a sweep (one pass over
    /// the table) stays rare.
    fn sweep_when_due(&mut self, now_ms: i64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        let window_ms = self.window_ms;
        self.keys
            .retain(|_, known| now_ms.saturating_sub(known.written_ms) <= window_ms);
        self.next_sweep_ms = now_ms + (window_ms / 16).clamp(1, 60_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOUR_MS: i64 = 3_600_000;

    fn index() -> ResultsIndex {
        ResultsIndex::new(Duration::from_millis(24 * HOUR_MS as u64))
    }

    fn at(offset: i64, written_ms: i64, kept: Kept) -> Known {
        Known {
            place: LogPlace {
                partition: 0,
                offset,
            },
            written_ms,
            kept,
        }
    }

    #[test]
    fn a_final_record_is_kept_without_its_reply() {
        let recorded = Recorded::Final {
            error: None,
            reply: json!({"status": "APPROVED"}),
            fingerprint: String::new(),
        };
        assert_eq!(Kept::of(&recorded), Kept::Final);
        assert_eq!(Kept::Final.whole(), None);
        let pending = Recorded::Pending {
            attempt: "a".into(),
            started_ms: 3,
            fingerprint: "f-1".into(),
        };
        assert_eq!(Kept::of(&pending).whole(), Some(pending));
    }

    /// The log is read with `Kept::parse`, records are written from `Recorded`: they
    /// must agree on every state, and on records of older versions.
    #[test]
    fn a_record_read_from_the_log_keeps_what_the_whole_record_says() {
        let written = [
            Recorded::Final {
                error: Some("declined".into()),
                reply: json!({"status": "DECLINED", "nested": [1, {"a": null}]}),
                fingerprint: "f-2".into(),
            },
            Recorded::Pending {
                attempt: "9f1c".into(),
                started_ms: 17,
                fingerprint: "f-3".into(),
            },
            Recorded::Retryable,
        ];
        for recorded in written {
            let json = serde_json::to_vec(&recorded).unwrap();
            assert_eq!(
                Kept::parse(&json).unwrap(),
                Kept::of(&recorded),
                "{recorded:?}"
            );
        }
        let old_pending = Kept::parse(br#"{"state":"pending"}"#).unwrap();
        assert_eq!(
            old_pending,
            Kept::Pending {
                attempt: "".into(),
                started_ms: 0,
                fingerprint: "".into(),
            }
        );
        assert!(Kept::parse(br#"{"state":"charged"}"#).is_err());
        assert!(Kept::parse(b"not json").is_err());
    }

    #[test]
    fn an_older_record_arriving_late_does_not_replace_a_newer_one() {
        let mut index = index();
        index.remember("k", at(9, 0, Kept::Final), 0);
        index.remember("k", at(4, 0, Kept::Retryable), 0);
        assert_eq!(index.get("k").map(|k| &k.kept), Some(&Kept::Final));
        index.remember("k", at(12, 0, Kept::Retryable), 0);
        assert_eq!(index.get("k").map(|k| &k.kept), Some(&Kept::Retryable));
    }

    #[test]
    fn keys_are_told_apart_by_their_digest() {
        let mut index = index();
        index.remember("order-1", at(1, 0, Kept::Final), 0);
        assert!(index.get("order-1").is_some());
        assert!(index.get("order-2").is_none());
        assert!(index.get("order-1 ").is_none());
        assert_ne!(key_id(""), key_id("\0"));
    }

    #[test]
    fn a_key_is_kept_for_the_whole_window_and_dropped_after_it() {
        let mut index = index();
        index.remember("old", at(1, 0, Kept::Final), 0);
        index.remember("new", at(2, 20 * HOUR_MS, Kept::Final), 20 * HOUR_MS);
        index.remember("x", at(3, 24 * HOUR_MS, Kept::Final), 24 * HOUR_MS);
        assert!(index.get("old").is_some(), "exactly one window old");
        index.remember("x", at(4, 25 * HOUR_MS, Kept::Final), 25 * HOUR_MS);
        assert!(index.get("old").is_none());
        assert!(index.get("new").is_some());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_record_read_again_past_the_window_is_not_taken_in() {
        let mut index = index();
        index.remember("k", at(1, HOUR_MS, Kept::Final), 30 * HOUR_MS);
        assert!(index.get("k").is_none());
        // A clock ahead of ours is not past the window.
        index.remember("k", at(2, 31 * HOUR_MS, Kept::Final), 30 * HOUR_MS);
        assert!(index.get("k").is_some());
    }

    #[test]
    fn after_the_log_started_over_any_new_record_is_newer() {
        let mut index = index();
        index.remember("k", at(500, 0, Kept::Final), 0);
        index.log_started_over();
        assert_eq!(index.get("k").map(|k| k.place.offset), Some(-1));
        index.remember("k", at(0, 0, Kept::Retryable), 0);
        assert_eq!(index.get("k").map(|k| &k.kept), Some(&Kept::Retryable));
    }

    #[test]
    fn a_tombstone_forgets_the_key() {
        let mut index = index();
        index.remember("k", at(1, 0, Kept::Final), 0);
        index.forget("k");
        assert!(index.get("k").is_none());
    }
}
