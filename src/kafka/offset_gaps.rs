//! Reading past a record the broker acknowledged but cannot hand out yet.
//!
//! tansu 0.6.0 (dynostore, the tests' and the local stack's broker) takes a produce
//! batch's offsets, raising the partition's high watermark, before it stores the batch.
//! Its fetch lists the batches stored below the high watermark and returns those at or
//! after the fetch offset, with no check that they follow on. So when two producers write
//! one partition at once and the later batch is stored first, a fetch in between returns
//! the later batch, the consumer moves past it, and the earlier batch is never read
//! (`tansu-storage` `dynostore.rs`, `produce` and `fetch`). Seen: a payment request three
//! gateways had written to one partition that no worker ever read (SOAK-57824, SOAK-329),
//! and 2 to 8 of 7,200 records skipped by a live reader of one partition written by six
//! producers at once, every one of them there when read again from the beginning.
//!
//! Every consumer that reads a partition written by more than one producer (a worker's
//! requests, a gateway's replies, the results log) therefore checks each poll for a hole
//! in a partition's offsets: where one is, the partition's records from the hole on are
//! dropped and read again from the hole. A worker given a partition says where the group
//! left it ([`OffsetGaps::expect`]), so its first poll there is checked too. A hole that
//! is still there after [`MAX_REREADS`] reads, or that records older than [`RECENT_MS`]
//! follow, is read past: Kafka leaves holes for good (transaction markers, compaction),
//! and on tansu the batch being stored is moments old.
//!
//! On Kafka's rules ([`BrokerCompat::Kafka`]) no hole is read again: the check only
//! counts them. The rules only compare numbers, so they are unit tests; [`mend`] applies
//! them to a consumer's poll.

use super::BrokerCompat;
use super::whole_batches::{self, Placed};
use crate::wire::record::now_ms;
use krafka::consumer::Consumer;
use krafka::{ConsumerRecord, KrafkaError};
use std::collections::HashMap;
use std::time::Duration;

/// How many times a hole is read again before the consumer reads past it: each read on
/// tansu takes a fetch wait, and the batch it waits for is stored microseconds after its
/// offsets were taken.
pub const MAX_REREADS: u32 = 3;
/// Only a hole followed by records written this recently (ms, by their timestamps) can be
/// a batch being stored; older holes are left by the log itself and read past at once.
pub const RECENT_MS: i64 = 60_000;

/// A consumed record with its timestamp (ms since the epoch).
pub trait Stamped: Placed {
    fn timestamp_ms(&self) -> i64;
}

impl Stamped for ConsumerRecord {
    fn timestamp_ms(&self) -> i64 {
        self.timestamp
    }
}

/// Where a partition's records are to be read again from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAgain {
    pub partition: i32,
    pub from: i64,
}

/// What a consumer has read so far, per partition.
#[derive(Debug)]
pub struct OffsetGaps {
    partitions: HashMap<i32, Next>,
    /// Whether a recent hole is read again at all: only on tansu. A Kafka log's holes are
    /// its own (transaction markers, compaction): each is read past at once, as `old`.
    rereads: bool,
}

/// The offset a partition's next record should have, and how often the hole there has
/// been read again.
#[derive(Debug, Clone, Copy)]
struct Next {
    offset: i64,
    rereads: u32,
}

/// A hole read past: the offsets `from..to` of `partition` were never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// Whether it was read again before (so a batch may really be lost), or left at once.
    pub reread: bool,
}

/// What one poll's check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Partitions whose records from a hole on were dropped, to be sought back to it.
    pub read_again: Vec<ReadAgain>,
    /// Holes read past.
    pub skipped: Vec<Skipped>,
}

impl Checked {
    /// One label per hole found, for a metric: `read-again` (read again from the hole),
    /// `read-past` (still there after the rereads: an acknowledged record there may stay
    /// unread) or `old` (before old records, read past at once: the log's own hole).
    pub fn outcomes(&self) -> impl Iterator<Item = &'static str> + '_ {
        let again = self.read_again.iter().map(|_| "read-again");
        let past = self
            .skipped
            .iter()
            .map(|hole| if hole.reread { "read-past" } else { "old" });
        again.chain(past)
    }
}

impl OffsetGaps {
    /// What a reader of a log on `compat`'s brokers keeps: see
    /// [`BrokerCompat::rereads_offset_holes`].
    pub fn new(compat: BrokerCompat) -> OffsetGaps {
        OffsetGaps {
            partitions: HashMap::new(),
            rereads: compat.rereads_offset_holes(),
        }
    }

    /// Checks one poll's `records` (in fetched order, repeats dropped) at `now_ms`. A
    /// partition with a hole that may still be filled loses its records from the hole on
    /// and is named in `read_again`: the caller seeks it there. A record below what was
    /// read (the consumer was sought back) is no hole: the partition is read from there.
    pub fn check<T: Stamped>(&mut self, records: &mut Vec<T>, now_ms: i64) -> Checked {
        let mut checked = Checked::default();
        for record in records.iter() {
            let partition = record.partition();
            if checked.read_again.iter().any(|r| r.partition == partition) {
                continue;
            }
            let Some(next) = self.partitions.get_mut(&partition) else {
                self.partitions
                    .insert(partition, Next::after(record.offset()));
                continue;
            };
            if record.offset() > next.offset {
                let recent = now_ms.saturating_sub(record.timestamp_ms()) < RECENT_MS;
                if self.rereads && recent && next.rereads < MAX_REREADS {
                    next.rereads += 1;
                    checked.read_again.push(ReadAgain {
                        partition,
                        from: next.offset,
                    });
                    continue;
                }
                checked.skipped.push(Skipped {
                    partition,
                    from: next.offset,
                    to: record.offset(),
                    reread: next.rereads > 0,
                });
            }
            *next = Next::after(record.offset());
        }
        let holes = &checked.read_again;
        records.retain(|record| {
            holes
                .iter()
                .all(|hole| hole.partition != record.partition() || record.offset() < hole.from)
        });
        checked
    }

    /// The next record of `partition` should be at `offset`: where its consumer was sent.
    pub fn expect(&mut self, partition: i32, offset: i64) {
        self.partitions
            .insert(partition, Next { offset, rereads: 0 });
    }

    /// Keeps what is known of the partitions `keep` says to: a partition given up may be
    /// read again later from anywhere, which is no hole.
    pub fn retain(&mut self, keep: impl Fn(i32) -> bool) {
        self.partitions.retain(|partition, _| keep(*partition));
    }
}

/// One poll of `topic` as a reader of a log that several producers write takes it: the
/// records in order, none twice, none read past while it was being stored; and what the
/// check found. Repeats go first: [`OffsetGaps::check`] would take one for a step back.
pub async fn poll_in_order(
    consumer: &Consumer,
    topic: &str,
    gaps: &mut OffsetGaps,
    wait: Duration,
) -> Result<(Vec<ConsumerRecord>, Checked), KrafkaError> {
    let mut records = consumer.poll(wait).await?;
    whole_batches::drop_repeats(&mut records);
    let checked = mend(consumer, topic, gaps, &mut records).await;
    Ok((records, checked))
}

/// Checks a poll's `records` of `topic` (repeats dropped) as [`OffsetGaps::check`] does,
/// now, and seeks `consumer` back to each hole to read again; what was found.
pub async fn mend(
    consumer: &Consumer,
    topic: &str,
    gaps: &mut OffsetGaps,
    records: &mut Vec<ConsumerRecord>,
) -> Checked {
    let checked = gaps.check(records, now_ms());
    follow(consumer, topic, &checked).await;
    checked
}

/// Seeks back what `checked` says to read again, and logs what it read past.
async fn follow(consumer: &Consumer, topic: &str, checked: &Checked) {
    for again in &checked.read_again {
        let (partition, from) = (again.partition, again.from);
        log::info!(
            "{topic}/{partition}: offset {from} was acknowledged but not handed out yet (tansu stores a batch after taking its offsets); reading again from there"
        );
        if let Err(e) = consumer.seek(topic, partition, from).await {
            log::warn!("{topic}/{partition}: cannot seek back to {from}: {e}");
        }
    }
    for hole in &checked.skipped {
        let (partition, from, to) = (hole.partition, hole.from, hole.to);
        if hole.reread {
            log::warn!(
                "{topic}/{partition}: offsets {from}..{to} never came after {MAX_REREADS} reads; reading on past them (an acknowledged record there would stay unread)"
            );
        } else {
            log::debug!("{topic}/{partition}: no records at offsets {from}..{to}");
        }
    }
}

impl Next {
    fn after(offset: i64) -> Next {
        Next {
            offset: offset + 1,
            rereads: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    /// (partition, offset, timestamp)
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct At(i32, i64, i64);

    impl Placed for At {
        fn partition(&self) -> i32 {
            self.0
        }

        fn offset(&self) -> i64 {
            self.1
        }
    }

    impl Stamped for At {
        fn timestamp_ms(&self) -> i64 {
            self.2
        }
    }

    fn fresh(partition: i32, offsets: impl IntoIterator<Item = i64>) -> Vec<At> {
        offsets.into_iter().map(|o| At(partition, o, NOW)).collect()
    }

    fn read_again(partition: i32, from: i64) -> Vec<ReadAgain> {
        vec![ReadAgain { partition, from }]
    }

    #[test]
    fn records_that_follow_on_are_kept_whole() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        let mut first = fresh(0, 0..3);
        assert_eq!(gaps.check(&mut first, NOW), Checked::default());
        let mut second = fresh(0, 3..5);
        assert_eq!(gaps.check(&mut second, NOW), Checked::default());
        assert_eq!(second.len(), 2);
    }

    /// The case seen on tansu: batch 3..=4 was acknowledged but not stored yet when the
    /// fetch from 3 returned batch 5.
    #[test]
    fn on_kafka_a_recent_hole_is_read_past_at_once() {
        // A transaction's commit marker takes an offset no record has.
        let mut gaps = OffsetGaps::new(BrokerCompat::Kafka);
        gaps.check(&mut fresh(0, 0..3), NOW);
        let mut records = fresh(0, [4, 5]);
        let checked = gaps.check(&mut records, NOW);
        assert!(checked.read_again.is_empty());
        assert_eq!(checked.outcomes().collect::<Vec<_>>(), ["old"]);
        assert_eq!(records, fresh(0, [4, 5]));
    }

    #[test]
    fn a_hole_before_a_poll_drops_the_partition_and_reads_it_again_from_the_hole() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.check(&mut fresh(0, 0..3), NOW);
        let mut records = fresh(0, [5]);
        records.extend(fresh(1, [7]));
        let checked = gaps.check(&mut records, NOW);
        assert_eq!(checked.read_again, read_again(0, 3));
        assert_eq!(checked.outcomes().collect::<Vec<_>>(), ["read-again"]);
        assert_eq!(records, fresh(1, [7]));
        // Read again from 3: the batch is there now.
        let mut healed = fresh(0, 3..6);
        assert_eq!(gaps.check(&mut healed, NOW), Checked::default());
        assert_eq!(healed.len(), 3);
    }

    #[test]
    fn a_hole_inside_a_poll_keeps_what_comes_before_it() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        let mut records = fresh(2, [10, 11, 14, 15]);
        let checked = gaps.check(&mut records, NOW);
        assert_eq!(checked.read_again, read_again(2, 12));
        assert_eq!(records, fresh(2, [10, 11]));
    }

    #[test]
    fn a_hole_still_there_after_the_rereads_is_read_past_and_reported() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.check(&mut fresh(0, [0]), NOW);
        for _ in 0..MAX_REREADS {
            let mut records = fresh(0, [2]);
            assert_eq!(gaps.check(&mut records, NOW).read_again, read_again(0, 1));
            assert!(records.is_empty());
        }
        let mut records = fresh(0, [2, 3]);
        let checked = gaps.check(&mut records, NOW);
        assert_eq!(
            checked,
            Checked {
                read_again: vec![],
                skipped: vec![Skipped {
                    partition: 0,
                    from: 1,
                    to: 2,
                    reread: true
                }],
            }
        );
        assert_eq!(records.len(), 2);
        assert_eq!(checked.outcomes().collect::<Vec<_>>(), ["read-past"]);
        // The next hole gets its rereads afresh.
        assert_eq!(
            gaps.check(&mut fresh(0, [6]), NOW).read_again,
            read_again(0, 4)
        );
    }

    /// Kafka's compaction leaves holes in old data: reading past them costs no fetch.
    #[test]
    fn a_hole_before_old_records_is_read_past_at_once() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.check(&mut vec![At(0, 0, 0)], NOW);
        let mut records = vec![At(0, 9, NOW - RECENT_MS)];
        let checked = gaps.check(&mut records, NOW);
        assert!(checked.read_again.is_empty());
        assert_eq!(checked.outcomes().collect::<Vec<_>>(), ["old"]);
        assert_eq!(records.len(), 1);
    }

    /// A consumer sought back (a batch read again) reads from there, holes checked anew.
    #[test]
    fn records_below_what_was_read_are_no_hole() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.check(&mut fresh(0, 0..10), NOW);
        let mut again = fresh(0, 4..10);
        assert_eq!(gaps.check(&mut again, NOW), Checked::default());
        assert_eq!(again.len(), 6);
        assert_eq!(
            gaps.check(&mut fresh(0, [12]), NOW).read_again,
            read_again(0, 10)
        );
    }

    /// A partition given to a consumer is read from where it was sent: a first poll that
    /// starts past there skipped a batch being stored.
    #[test]
    fn a_first_poll_past_where_the_consumer_was_sent_is_a_hole() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.expect(0, 20);
        let mut records = fresh(0, [24, 25]);
        assert_eq!(gaps.check(&mut records, NOW).read_again, read_again(0, 20));
        assert!(records.is_empty());
        assert_eq!(gaps.check(&mut fresh(0, 20..26), NOW), Checked::default());
    }

    /// A partition that moved away and came back starts where its first poll starts.
    #[test]
    fn a_partition_given_up_is_forgotten() {
        let mut gaps = OffsetGaps::new(BrokerCompat::Tansu06);
        gaps.check(&mut fresh(0, 0..3), NOW);
        gaps.check(&mut fresh(1, 0..3), NOW);
        gaps.retain(|partition| partition == 1);
        let mut records = fresh(0, [50]);
        records.extend(fresh(1, [5]));
        let checked = gaps.check(&mut records, NOW);
        assert_eq!(checked.read_again, read_again(1, 3));
        assert_eq!(records, fresh(0, [50]));
    }
}
