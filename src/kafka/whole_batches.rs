//! Reading multi-record produce batches on a broker that only hands out whole ones.
//!
//! tansu 0.6.0's memory storage (the tests' and the local stack's broker) assigns a batch of
//! N records N consecutive offsets, acknowledges each record at its own offset, reports the
//! right high watermark in fetch responses and stores a committed offset as given. But it
//! keeps each batch as one object named by its first offset, and so:
//! - it lists a partition's end (ListOffsets "latest": `seek_to_end`, a consumer reset to
//!   "latest") as the first offset of the newest batch + 1, which is inside that batch when
//!   it holds more than one record;
//! - it answers a fetch from an offset inside a batch with the batches that *start* at or
//!   after that offset: the rest of the batch the offset points into is never returned;
//! - and, since it moves its own cursor by the number of records it returned rather than
//!   by their offsets, it returns those later batches again, in the same response, until
//!   the cursor passes their first offset.
//!
//! Its sqlite storage does none of this (records are stored one by one), nor does Kafka.
//!
//! krafka adds a way to land inside a batch: a poll hands out at most `max_poll_records`
//! (default 500) and decodes at most about twice that of a fetch response; the rest is
//! fetched again from where decoding stopped, which can be inside a batch. A reader with
//! the default settings, started at the beginning of a 6,000-record partition written in
//! batches, lost 694 records from offset 1,000 on. Hence `max_poll_records(-1)` on every
//! consumer that reads multi-record batches.
//!
//! What kreply does about it, here: a poll's repeats are dropped ([`drop_repeats`]), and a
//! consumer only ever commits or seeks to where one of its polls began or ended on a
//! partition ([`spans`]), which is the first offset of a batch, never to a record inside
//! one (the worker's commits: `worker/settled_prefix.rs`).
//! Starting at "latest" is left as it is: the records a too-low "latest" leaves unread
//! were all written before the consumer started, which is what "latest" means.
//!
//! Runtime-free: it only compares numbers, so its rules are unit-tested.

use krafka::ConsumerRecord;
use std::collections::BTreeMap;

/// Where a consumed record sits.
pub trait Placed {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
}

impl Placed for ConsumerRecord {
    fn partition(&self) -> i32 {
        self.partition
    }

    fn offset(&self) -> i64 {
        self.offset
    }
}

/// Drops every record whose partition already had a record at that offset or later
/// earlier in `records` (one poll, in the order fetched); how many were dropped.
///
/// A consumer reads each partition in offset order, so a record at or below one already
/// handed out is a repeat: tansu's answer to a fetch that started inside a batch.
pub fn drop_repeats<T: Placed>(records: &mut Vec<T>) -> usize {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let before = records.len();
    records.retain(|record| {
        let next = next.entry(record.partition()).or_insert(i64::MIN);
        let fresh = record.offset() >= *next;
        if fresh {
            *next = record.offset() + 1;
        }
        fresh
    });
    before - records.len()
}

/// The offsets one poll read on a partition: `start` is its first record's, `end` is one
/// past its last record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

/// What each partition's records in one poll span.
///
/// When every poll hands out all that was fetched (`max_poll_records(-1)`), a consumer's
/// position only ever stops at the end of a batch, or at a "latest" from which tansu
/// returns whole batches only, so both ends of a span are batch boundaries: the places a
/// fetch can be sent to without skipping records.
pub(crate) fn spans<T: Placed>(records: &[T]) -> BTreeMap<i32, Span> {
    let mut spans: BTreeMap<i32, Span> = BTreeMap::new();
    for record in records {
        let (offset, next) = (record.offset(), record.offset() + 1);
        spans
            .entry(record.partition())
            .and_modify(|span| {
                span.start = span.start.min(offset);
                span.end = span.end.max(next);
            })
            .or_insert(Span {
                start: offset,
                end: next,
            });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Placed for (i32, i64) {
        fn partition(&self) -> i32 {
            self.0
        }

        fn offset(&self) -> i64 {
            self.1
        }
    }

    #[test]
    fn repeats_within_a_poll_are_dropped_per_partition() {
        // Seen: a fetch from offset 2 of a log with batches at 0 (5 records), 5 (3) and
        // 8 (1) answered 5, 6, 7, 8, 8, 8, 8; another partition interleaved.
        let mut records = vec![
            (0, 5),
            (1, 13),
            (0, 6),
            (0, 7),
            (0, 8),
            (1, 14),
            (1, 15),
            (0, 8),
            (1, 13),
            (0, 8),
            (1, 14),
            (1, 15),
            (0, 8),
        ];
        assert_eq!(drop_repeats(&mut records), 6);
        assert_eq!(
            records,
            [(0, 5), (1, 13), (0, 6), (0, 7), (0, 8), (1, 14), (1, 15)]
        );
    }

    #[test]
    fn a_poll_without_repeats_is_kept_whole() {
        let mut records = vec![(0, 3), (0, 4), (2, 0), (0, 5)];
        assert_eq!(drop_repeats(&mut records), 0);
        assert_eq!(records.len(), 4);
    }

    #[test]
    fn a_span_runs_from_the_lowest_offset_to_past_the_highest() {
        let records = [(1, 9), (0, 5), (1, 7), (0, 6)];
        let span = |start, end| Span { start, end };
        assert_eq!(
            spans(&records),
            BTreeMap::from([(0, span(5, 7)), (1, span(7, 10))])
        );
        assert!(spans::<(i32, i64)>(&[]).is_empty());
    }
}
