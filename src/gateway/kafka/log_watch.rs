//! Noticing that a reply partition's log started over under the consumer.
//!
//! A partition's end offset only grows, unless the log itself was replaced: the topic was
//! deleted and created again, its broker restarted with empty storage, or the log was
//! truncated (unclean leader election). Kafka answers a fetch beyond the end with
//! OFFSET_OUT_OF_RANGE, which the client handles, but tansu answers it with an empty,
//! successful fetch, and after a restart it answers an old topic id with a bogus "diverged
//! at offset -1" that moves the client's position to -1. Either way the consumer waits at
//! an offset the new log will reach only after as many replies as the old one had, and
//! every reply before that is skipped: the gateway looked healthy and timed out every
//! payment. So the consumer watches for the signs itself, whatever the broker says: an end
//! offset below one seen before, or a position below zero.
//!
//! The ends it compares must all come from fetch responses (krafka's `lag()`), never from
//! ListOffsets: tansu's memory storage lists the end of a multi-record batch as its first
//! offset + 1, below the end its fetches report, and an end taken from each would look like
//! a log going backwards (see [`crate::kafka::whole_batches`]). Fetch responses report it right
//! and never lower than before on a healthy log: the tests read bursts of multi-record
//! batches without a reopen.
//!
//! Runtime-free: it only compares numbers, so its rules are unit-tested.

use std::collections::HashMap;

/// One partition as the consumer sees it after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub position: Option<i64>,
    /// The end the latest fetch response reported, not a ListOffsets answer.
    pub high_watermark: Option<i64>,
}

/// The highest end offset seen per partition since the consumer was positioned.
#[derive(Debug, Default)]
pub struct LogWatch {
    highest_end: HashMap<i32, i64>,
}

impl LogWatch {
    /// The partitions whose log started over, in order; remembers the ends seen.
    pub fn started_over(&mut self, views: &[PartitionView]) -> Vec<i32> {
        let mut over = Vec::new();
        for view in views {
            let shrank = match (view.high_watermark, self.highest_end.get(&view.partition)) {
                (Some(end), Some(&highest)) => end < highest,
                _ => false,
            };
            if shrank || view.position.is_some_and(|p| p < 0) {
                over.push(view.partition);
            }
            if let Some(end) = view.high_watermark {
                let highest = self.highest_end.entry(view.partition).or_insert(end);
                *highest = (*highest).max(end);
            }
        }
        over.sort_unstable();
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(partition: i32, position: i64, end: i64) -> PartitionView {
        PartitionView {
            partition,
            position: Some(position),
            high_watermark: Some(end),
        }
    }

    #[test]
    fn a_growing_log_is_fine() {
        let mut watch = LogWatch::default();
        assert!(
            watch
                .started_over(&[view(0, 5, 5), view(1, 0, 0)])
                .is_empty()
        );
        assert!(
            watch
                .started_over(&[view(0, 9, 9), view(1, 1, 1)])
                .is_empty()
        );
    }

    #[test]
    fn an_end_below_one_seen_before_means_the_log_started_over() {
        let mut watch = LogWatch::default();
        watch.started_over(&[view(0, 500, 500), view(1, 7, 7)]);
        assert_eq!(watch.started_over(&[view(0, 500, 0), view(1, 7, 7)]), [0]);
    }

    #[test]
    fn a_negative_position_means_the_client_lost_its_place() {
        let mut watch = LogWatch::default();
        assert_eq!(watch.started_over(&[view(2, -1, 0)]), [2]);
    }

    #[test]
    fn a_position_past_the_end_alone_is_not_enough() {
        // The end is only as fresh as the latest fetch response, so a position past it is
        // no sign by itself; only an end that went down tells a log that started over.
        let mut watch = LogWatch::default();
        assert!(watch.started_over(&[view(0, 20, 11)]).is_empty());
        assert!(watch.started_over(&[view(0, 20, 11)]).is_empty());
    }

    #[test]
    fn unknown_ends_are_ignored() {
        let mut watch = LogWatch::default();
        let unknown = PartitionView {
            partition: 0,
            position: None,
            high_watermark: None,
        };
        assert!(watch.started_over(&[unknown]).is_empty());
    }
}
