//! What a worker keeps of one results partition it owns, and for how long.
//!
//! Per payment: where its newest record is in the log and which state it says, but not
//! the reply of a final record. Repeats are rare; one that finds a final record reads its
//! reply back from the log at that place. A payment is kept as a 128-bit digest of its
//! results record key (SHA-1, as a UUID v5), so an entry has one size whatever key a
//! caller chose.
//!
//! It is kept on disk ([`PartitionFile`]), so the worker's memory does not grow with the
//! payments in the window: redb's page cache per owned partition, and what was read since
//! the last flush. The file holds every record of the partition below its checkpoint
//! (`read_to`), so a restarted worker reads only what came after it.
//!
//! The idempotency window bounds it in time. A key whose newest record was written more
//! than `worker.idempotency_window_ms` ago is dropped, and records older than that are
//! not taken in when the log is read again. Both go by the record's timestamp, never by
//! memory pressure: within the window no key is forgotten, so a repeat within it is never
//! taken for a new payment. A request older than the window is not charged at all (see
//! [`settle`](super::settle)), so a redelivered request cannot outlive its key.

use crate::worker::answer::Recorded;
use crate::worker::partition_file::{FileError, PartitionFile};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

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
    older_than(millis(window), written_ms, now_ms)
}

/// The rule of [`past_window`], with the window in ms.
fn older_than(window_ms: i64, written_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(written_ms) > window_ms
}

fn millis(window: Duration) -> i64 {
    window.as_millis().min(i64::MAX as u128) as i64
}

/// How much of a partition's file redb keeps in memory: a worker's memory for its state is
/// this times the partitions it owns, whatever the window holds.
const CACHE_BYTES: usize = 8 << 20;
/// A durable commit at most this long after the last one: what a crash can make the
/// worker read again from the topic.
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// Keys past the window one sweep deletes at most, so a sweep never holds the file long;
/// the next flush goes on where it stopped.
const SWEEP_LIMIT: usize = 10_000;

/// One results partition's index: its file, and what was taken in since the last flush.
pub struct ResultsIndex {
    file: PartitionFile,
    /// Taken in since the last flush (`None`: a tombstone); read before the file.
    unflushed: HashMap<KeyId, Option<Known>>,
    /// The next offset to read: every record below it is taken in.
    read_to: i64,
    /// `read_to` as the file has it.
    flushed_to: i64,
    window_ms: i64,
    /// When keys past the window are next dropped.
    next_sweep_ms: i64,
    last_durable: Instant,
    /// Whether a non-durable commit came after the last durable one.
    undurable: bool,
    /// Keys in the file at the last flush.
    len: usize,
}

impl ResultsIndex {
    /// The index kept in the file at `path`, created empty when there is none.
    pub fn open(path: &Path, window: Duration) -> Result<ResultsIndex, FileError> {
        // Verified: redb trusts a cleanly closed file and may panic on a page damaged
        // behind its back; checking every page costs about 0.2 s a million payments.
        let file = PartitionFile::open_verified(path, CACHE_BYTES)?;
        let read_to = file.read_to()?.unwrap_or(0);
        let len = file.len()? as usize;
        Ok(ResultsIndex {
            file,
            unflushed: HashMap::new(),
            read_to,
            flushed_to: read_to,
            window_ms: millis(window),
            next_sweep_ms: 0,
            last_durable: Instant::now(),
            undurable: false,
            len,
        })
    }

    /// The next offset of the partition to read: the file holds every record before it.
    pub fn read_to(&self) -> i64 {
        self.read_to
    }

    /// The newest record known of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Known>, FileError> {
        let id = key_id(key);
        let on_disk = self.file.get(&id)?;
        Ok(match self.unflushed.get(&id) {
            None => on_disk,
            Some(None) => None,
            Some(Some(taken)) => match on_disk {
                Some(disk) if disk.place.offset > taken.place.offset => Some(disk),
                _ => Some(taken.clone()),
            },
        })
    }

    /// Takes in `known` for `key`, unless a newer record of `key` was taken in since the
    /// last flush (the file keeps the newest of its own and the flushed) or it is past the
    /// window at `now_ms`.
    pub fn remember(&mut self, key: &str, known: Known, now_ms: i64) {
        if older_than(self.window_ms, known.written_ms, now_ms) {
            return;
        }
        let id = key_id(key);
        if let Some(Some(seen)) = self.unflushed.get(&id)
            && seen.place.offset > known.place.offset
        {
            return;
        }
        self.unflushed.insert(id, Some(known));
    }

    /// A tombstone: the key is gone from the log.
    pub fn forget(&mut self, key: &str) {
        self.unflushed.insert(key_id(key), None);
    }

    /// The record at `offset` was read: the file will hold everything before the next.
    pub fn read(&mut self, offset: i64) {
        self.read_to = self.read_to.max(offset + 1);
    }

    /// Writes what was taken in to the file, with how far the partition was read, in one
    /// commit (durable at most [`DURABLE_EVERY`] apart), and drops keys past the window
    /// when due.
    pub fn flush(&mut self, now_ms: i64) -> Result<(), FileError> {
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        self.commit(durable)?;
        self.sweep_when_due(now_ms)
    }

    fn commit(&mut self, durable: bool) -> Result<(), FileError> {
        let changed = !self.unflushed.is_empty() || self.read_to != self.flushed_to;
        // An idle partition makes its last non-durable commits durable once, then waits.
        if !(changed || durable && self.undurable) {
            return Ok(());
        }
        let batch: Vec<(KeyId, Option<Known>)> = self
            .unflushed
            .iter()
            .map(|(id, known)| (*id, known.clone()))
            .collect();
        self.file.apply(&batch, Some(self.read_to), durable)?;
        self.unflushed.clear();
        self.flushed_to = self.read_to;
        self.undurable = !durable;
        if durable {
            self.last_durable = Instant::now();
        }
        self.len = self.file.len()? as usize;
        Ok(())
    }

    /// The log started over (tansu): everything known came before anything it will hold,
    /// and it is read again from its start.
    pub fn log_started_over(&mut self) -> Result<(), FileError> {
        self.commit(false)?;
        self.file.demote_all()?;
        self.read_to = 0;
        self.commit(true)
    }

    /// Forgets everything: the file belongs to a log that is gone.
    pub fn clear(&mut self) -> Result<(), FileError> {
        self.unflushed.clear();
        self.file.clear()?;
        (self.read_to, self.flushed_to, self.len) = (0, 0, 0);
        Ok(())
    }

    /// Keys held, as of the last flush.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A small named value kept with the index (the partition's layout record).
    pub fn meta(&self, name: &str) -> Result<Option<String>, FileError> {
        self.file.meta(name)
    }

    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), FileError> {
        self.file.set_meta(name, value)
    }

    /// Drops keys past the window, at most every 1/16 of it (and at least once a
    /// minute) unless the last sweep stopped at its limit: the file holds the window plus
    /// a little, and a sweep reads only the keys it drops.
    fn sweep_when_due(&mut self, now_ms: i64) -> Result<(), FileError> {
        if now_ms < self.next_sweep_ms {
            return Ok(());
        }
        let swept = self
            .file
            .sweep(now_ms.saturating_sub(self.window_ms), SWEEP_LIMIT)?;
        self.next_sweep_ms = if swept == SWEEP_LIMIT {
            now_ms
        } else {
            now_ms + (self.window_ms / 16).clamp(1, 60_000)
        };
        if swept > 0 {
            self.len = self.file.len()? as usize;
        }
        Ok(())
    }
}

impl Drop for ResultsIndex {
    /// A partition given up or a worker stopping: what was read is kept for next time.
    fn drop(&mut self) {
        if let Err(e) = self.commit(true) {
            log::warn!("worker: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOUR_MS: i64 = 3_600_000;

    const WINDOW: Duration = Duration::from_millis(24 * HOUR_MS as u64);

    /// A directory removed on drop.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A new index in a directory of its own (kept while the `TempDir` lives).
    fn index() -> (ResultsIndex, TempDir) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kreply-index-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = ResultsIndex::open(&dir.join("p.redb"), WINDOW).unwrap();
        (index, TempDir(dir))
    }

    fn kept(index: &ResultsIndex, key: &str) -> Option<Kept> {
        index.get(key).unwrap().map(|known| known.kept)
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
        let (mut index, _dir) = index();
        index.remember("k", at(9, 0, Kept::Final), 0);
        index.remember("k", at(4, 0, Kept::Retryable), 0);
        assert_eq!(kept(&index, "k"), Some(Kept::Final));
        index.flush(0).unwrap();
        // Against the file too, after a flush.
        index.remember("k", at(5, 0, Kept::Retryable), 0);
        assert_eq!(kept(&index, "k"), Some(Kept::Final));
        index.flush(0).unwrap();
        assert_eq!(kept(&index, "k"), Some(Kept::Final));
        index.remember("k", at(12, 0, Kept::Retryable), 0);
        assert_eq!(kept(&index, "k"), Some(Kept::Retryable));
    }

    #[test]
    fn keys_are_told_apart_by_their_digest() {
        let (mut index, _dir) = index();
        index.remember("order-1", at(1, 0, Kept::Final), 0);
        index.flush(0).unwrap();
        assert!(kept(&index, "order-1").is_some());
        assert!(kept(&index, "order-2").is_none());
        assert!(kept(&index, "order-1 ").is_none());
        assert_ne!(key_id(""), key_id("\0"));
    }

    #[test]
    fn a_key_is_kept_for_the_whole_window_and_dropped_after_it() {
        let (mut index, _dir) = index();
        index.remember("old", at(1, 0, Kept::Final), 0);
        index.remember("new", at(2, 20 * HOUR_MS, Kept::Final), 20 * HOUR_MS);
        index.flush(20 * HOUR_MS).unwrap();
        index.remember("x", at(3, 24 * HOUR_MS, Kept::Final), 24 * HOUR_MS);
        index.flush(24 * HOUR_MS).unwrap();
        assert!(kept(&index, "old").is_some(), "exactly one window old");
        index.remember("x", at(4, 25 * HOUR_MS, Kept::Final), 25 * HOUR_MS);
        index.flush(25 * HOUR_MS).unwrap();
        assert!(kept(&index, "old").is_none());
        assert!(kept(&index, "new").is_some());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_record_read_again_past_the_window_is_not_taken_in() {
        let (mut index, _dir) = index();
        index.remember("k", at(1, HOUR_MS, Kept::Final), 30 * HOUR_MS);
        assert!(kept(&index, "k").is_none());
        // A clock ahead of ours is not past the window.
        index.remember("k", at(2, 31 * HOUR_MS, Kept::Final), 30 * HOUR_MS);
        assert!(kept(&index, "k").is_some());
    }

    #[test]
    fn after_the_log_started_over_any_new_record_is_newer() {
        let (mut index, _dir) = index();
        index.remember("k", at(500, 0, Kept::Final), 0);
        index.read(500);
        index.log_started_over().unwrap();
        assert_eq!(index.get("k").unwrap().map(|k| k.place.offset), Some(-1));
        assert_eq!(index.read_to(), 0);
        index.remember("k", at(0, 0, Kept::Retryable), 0);
        assert_eq!(kept(&index, "k"), Some(Kept::Retryable));
    }

    #[test]
    fn a_tombstone_forgets_the_key() {
        let (mut index, _dir) = index();
        index.remember("k", at(1, 0, Kept::Final), 0);
        index.flush(0).unwrap();
        index.forget("k");
        assert!(kept(&index, "k").is_none());
        index.flush(0).unwrap();
        assert!(kept(&index, "k").is_none());
    }

    /// What a restarted worker finds: every key taken in, and where to read on, whether
    /// flushed or only dropped (a partition given up, a stop).
    #[test]
    fn a_reopened_index_has_its_keys_and_its_checkpoint() {
        let (mut index, dir) = index();
        index.remember("flushed", at(3, 0, Kept::Final), 0);
        index.read(3);
        index.flush(0).unwrap();
        index.remember("dropped", at(7, 0, Kept::Retryable), 0);
        index.read(7);
        drop(index);
        let index = ResultsIndex::open(&dir.0.join("p.redb"), WINDOW).unwrap();
        assert_eq!(index.read_to(), 8);
        assert_eq!(kept(&index, "flushed"), Some(Kept::Final));
        assert_eq!(kept(&index, "dropped"), Some(Kept::Retryable));
        assert_eq!(index.len(), 2);
    }
}
