//! Whose rules the brokers keep: Apache Kafka's (the default), or tansu 0.6's.
//!
//! kreply is written for Apache Kafka. Its first test broker, tansu 0.6.0, breaks a few of
//! Kafka's rules, and some remedies for those breaks are faults on Kafka. This is the one
//! room where every such difference is decided: each method below names the tansu defect
//! it answers and what kreply does on Kafka instead, and every caller asks here rather than
//! deciding for itself. Set with `"broker_compat"` in the config (`KREPLY_BROKER_COMPAT`).
//!
//! | behaviour | `"kafka"` | `"tansu-0.6"` |
//! |---|---|---|
//! | worker group protocol | KIP-848 (`ConsumerGroupHeartbeat`) | classic, plus the stale-group rejoin |
//! | isolation of every reader | `read_committed` | read uncommitted |
//! | a slow produce acknowledgement | waited for, up to the send's own limit | a new producer session after 4 s |
//! | a hole in a log's offsets | read past (transaction markers, compaction) | read again, up to 3 times |
//! | a stalled results read-back | keep reading, up to the catch-up limit | reopen the reader and read the log from 0 |
//! | a reply partition not fetched lately | that partition is reported; the host stays ready while any is fetched | the reply consumer is opened again |
//! | a reply partition's end going down | a leader move; nothing to do | the log started over: reopen |
//! | a partition's listed end (ListOffsets latest) below a state file's checkpoint | the log started over: the file is emptied | read the newest batch to find the end first |
//! | the results reader's fetch wait | `fetch_max_wait_ms` (the broker answers when data arrives) | 1 ms (tansu holds every fetch for its whole wait) |
//! | where the worker commits | the end of a partition's settled prefix | rounded down to where a poll began or ended |
//! | the reply consumer's metadata | refreshed every 3 s (a leader moved off a dead broker) | refreshed by reopening it (a keeper there made krafka read replies twice after a broker restart) |
//!
//! What stays on both: reading whole batches (`whole_batches`: harmless on Kafka, where a
//! poll hands out whole batches anyway) and the marker catch-up of the results log (Kafka's
//! high watermark would do, the markers cost a few records per gained partition).

use krafka::consumer::{GroupProtocol, IsolationLevel};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Whose rules the brokers keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum BrokerCompat {
    /// Apache Kafka 4.x, or any broker that keeps its rules (Kafka 3.7-3.9 with
    /// `group.coordinator.new.enable=true` for the KIP-848 group protocol).
    #[default]
    #[serde(rename = "kafka")]
    Kafka,
    /// tansu 0.6.0: the tests' and the local stack's broker.
    #[serde(rename = "tansu-0.6")]
    Tansu06,
}

/// tansu 0.6.0 holds every fetch for its whole wait, even with data to return
/// (`tansu-storage` `service/fetch.rs`), so a read-back of a record just written waits
/// no longer than this.
const TANSU_READ_BACK_WAIT: Duration = Duration::from_millis(1);

/// On tansu, an acknowledgement outstanding this long means the producer session is stuck
/// (krafka re-sends under a producer id tansu forgot, silently, until its 30 s limit).
const TANSU_STUCK_AFTER: Duration = Duration::from_secs(4);

impl BrokerCompat {
    /// The config's spelling, for log lines and `check-config`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerCompat::Kafka => "kafka",
            BrokerCompat::Tansu06 => "tansu-0.6",
        }
    }

    /// Parses the config's spelling (`KREPLY_BROKER_COMPAT`).
    pub fn parse(name: &str) -> Option<BrokerCompat> {
        match name {
            "kafka" => Some(BrokerCompat::Kafka),
            "tansu-0.6" => Some(BrokerCompat::Tansu06),
            _ => None,
        }
    }

    pub fn is_tansu(self) -> bool {
        self == BrokerCompat::Tansu06
    }

    /// The workers' group protocol. Kafka: KIP-848, where the coordinator assigns and a
    /// member's leave or death moves only its own partitions (the classic protocol is
    /// deprecated from Kafka 4.3, KIP-1274). tansu 0.6 has no `ConsumerGroupHeartbeat`.
    pub fn group_protocol(self) -> GroupProtocol {
        match self {
            BrokerCompat::Kafka => GroupProtocol::Consumer,
            BrokerCompat::Tansu06 => GroupProtocol::Classic,
        }
    }

    /// Whether the worker watches its group for an assignment tansu left stale: tansu
    /// 0.6.0 does not rebalance when a member's session expires, and does not bump the
    /// generation on eviction ([`crate::worker`]'s `stale_group.rs`). A Kafka coordinator
    /// does both, and a rejoin there only moves partitions for nothing.
    pub fn watches_stale_group(self) -> bool {
        self.is_tansu()
    }

    /// How every reader reads. Kafka: `read_committed`, so a reply or a request from a
    /// transaction that was aborted (a transactional Spring `@SendTo` worker, say) is
    /// never handed to a caller or charged. tansu 0.6 writes no transaction markers that
    /// kreply relies on, and is read as it was tested.
    pub fn isolation(self) -> IsolationLevel {
        match self {
            BrokerCompat::Kafka => IsolationLevel::ReadCommitted,
            BrokerCompat::Tansu06 => IsolationLevel::ReadUncommitted,
        }
    }

    /// After how long without an acknowledgement a producer session is replaced. Kafka:
    /// never for slowness. With acks=all an append waits while a dead follower is still
    /// in the ISR (up to `replica.lag.time.max.ms`, 30 s), and a replaced session fails a
    /// record that is then written after all: an attempt's `pending` that lands after the
    /// attempt gave up leaves its key in doubt. A session is still replaced when a send
    /// fails for a reason that lies with it (an unknown producer id, a fence).
    pub fn producer_stuck_after(self) -> Option<Duration> {
        match self {
            BrokerCompat::Kafka => None,
            BrokerCompat::Tansu06 => Some(TANSU_STUCK_AFTER),
        }
    }

    /// Whether a hole in a partition's offsets is read again. tansu 0.6.0 can store a
    /// batch after a later one and hand the later one out first (`offset_gaps`); a
    /// Kafka log's holes are its own (transaction markers, compaction) and are read past.
    pub fn rereads_offset_holes(self) -> bool {
        self.is_tansu()
    }

    /// Whether a reader that brings nothing for a few seconds is taken for one whose log
    /// started over, and opened again from the beginning (the results reader) or from
    /// where it was (the reply consumer). tansu answers a fetch for a re-created topic,
    /// or past a log that restarted empty, with no error. Kafka answers both
    /// (`UNKNOWN_TOPIC_ID`, `OFFSET_OUT_OF_RANGE`), and there a silent reader is a
    /// partition without a leader for a while: wait for it, keep what is known.
    pub fn reopens_silent_readers(self) -> bool {
        self.is_tansu()
    }

    /// Whether a partition's end going down means its log started over. On tansu it does;
    /// on Kafka a new leader can report a lower high watermark for a moment after a leader
    /// move, and a log that really started over is answered `OFFSET_OUT_OF_RANGE`.
    pub fn end_going_down_is_restart(self) -> bool {
        self.is_tansu()
    }

    /// Whether the worker's commits must land where a poll began or ended. tansu 0.6's
    /// memory storage keeps a produce batch whole under its first offset: a group member
    /// that resumes from a committed offset inside a batch never gets the rest of it
    /// (`whole_batches`). Kafka resumes from any offset.
    pub fn commits_on_batch_boundaries(self) -> bool {
        self.is_tansu()
    }

    /// The most requests one poll hands the worker, when it may hold `max_held` at once.
    /// On Kafka a poll stops at `max_held` records and the rest wait in the client, so a
    /// worker never holds more than twice `max_held`. tansu 0.6's memory storage skips
    /// the rest of a batch whose middle a fetch starts from (`whole_batches`), so there
    /// every poll hands out all it fetched (-1: no cap), and the bound is `max_held` plus
    /// one fetch.
    pub fn poll_records_cap(self, max_held: usize) -> i32 {
        match self {
            BrokerCompat::Kafka => max_held.clamp(1, i32::MAX as usize) as i32,
            BrokerCompat::Tansu06 => -1,
        }
    }

    /// Whether a fetch from an offset inside a produce batch returns that offset's record.
    /// Kafka's does, so a final record is read back from its own offset and a later
    /// record there means compaction removed it. tansu 0.6's memory storage starts such a
    /// fetch at the next batch, so the worker reads from up to a batch earlier, and from
    /// the partition's start when that fails (`results::read_at`).
    pub fn fetches_inside_batches(self) -> bool {
        !self.is_tansu()
    }

    /// Whether a partition's listed end (ListOffsets "latest") is where its log ends.
    /// Kafka's is, so an end below a state file's checkpoint means the log started over.
    /// tansu 0.6's memory storage lists the newest batch's first offset + 1
    /// (`whole_batches`), so the worker reads that batch to learn the end before taking
    /// the file for one of a log that is gone (`results`).
    pub fn lists_log_ends(self) -> bool {
        !self.is_tansu()
    }

    /// Whether the brokers are asked for a topic's settings (`DescribeConfigs`). tansu 0.6
    /// drops the connection on it, which the client retries for a minute; Kafka answers.
    pub fn reports_topic_settings(self) -> bool {
        !self.is_tansu()
    }

    /// The results reader's fetch wait: its reads are for records already written.
    /// Kafka answers a fetch as soon as there is data, so the configured wait costs
    /// nothing; tansu sleeps out the whole wait.
    pub fn read_back_wait(self, fetch_max_wait: Duration) -> Duration {
        match self {
            BrokerCompat::Kafka => fetch_max_wait,
            BrokerCompat::Tansu06 => TANSU_READ_BACK_WAIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for compat in [BrokerCompat::Kafka, BrokerCompat::Tansu06] {
            assert_eq!(BrokerCompat::parse(compat.name()), Some(compat));
        }
        assert_eq!(BrokerCompat::parse("tansu"), None);
    }

    #[test]
    fn kafka_is_the_default_and_keeps_no_tansu_remedy() {
        let kafka = BrokerCompat::default();
        assert_eq!(kafka, BrokerCompat::Kafka);
        assert!(!kafka.watches_stale_group());
        assert!(!kafka.rereads_offset_holes());
        assert!(!kafka.reopens_silent_readers());
        assert!(!kafka.end_going_down_is_restart());
        assert_eq!(kafka.producer_stuck_after(), None);
        assert!(!kafka.commits_on_batch_boundaries());
        assert_eq!(kafka.poll_records_cap(4096), 4096);
        assert!(kafka.fetches_inside_batches());
        assert!(kafka.lists_log_ends());
        assert!(kafka.reports_topic_settings());
        assert_eq!(BrokerCompat::Tansu06.poll_records_cap(4096), -1);
        assert_eq!(kafka.isolation(), IsolationLevel::ReadCommitted);
        assert_eq!(kafka.group_protocol(), GroupProtocol::Consumer);
    }

    #[test]
    fn the_config_spells_it_as_documented() {
        let parsed: BrokerCompat = serde_json::from_str("\"tansu-0.6\"").unwrap();
        assert_eq!(parsed, BrokerCompat::Tansu06);
        assert!(serde_json::from_str::<BrokerCompat>("\"tansu\"").is_err());
    }
}
