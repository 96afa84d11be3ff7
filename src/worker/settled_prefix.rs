//! Where a partition's committed offset may go while its requests settle out of order.
//!
//! The worker keeps polling while earlier requests are at the PG, and requests of
//! different orders settle in any order. A partition's committed offset is where the next
//! owner starts, so it may never pass a request that is not settled: it is the end of the
//! partition's **settled prefix**, the first offset handed out and not settled yet (or
//! where reading has got to, when nothing is in flight). Offsets that never came (a
//! transaction marker, a compacted record) hold nothing to settle.
//!
//! On tansu 0.6's memory storage a commit inside a multi-record produce batch makes the
//! next owner skip the rest of that batch (`kafka/whole_batches.rs`), so there the commit
//! goes no further than the last place a poll began or ended at or below the prefix's end:
//! every poll hands out whole batches, so those places are batch boundaries.
//!
//! A partition's track also tells a record handed out again (a repeat of a tansu fetch, or
//! a partition read again after a rebalance) from a new one, so each request is settled
//! once by this worker. Pure arithmetic: unit tests below.

use std::collections::BTreeSet;

/// One partition's requests between its committed offset and what has been read.
#[derive(Debug)]
pub(super) struct PartitionTrack {
    /// Everything below is settled, or was before this worker owned the partition.
    base: i64,
    /// Handed out, not settled yet.
    in_flight: BTreeSet<i64>,
    /// Settled at or above `base`, while something below them is still in flight.
    settled: BTreeSet<i64>,
    /// One past the highest offset handed out (at least `base`).
    read_to: i64,
    /// Where polls began or ended (batch boundaries), at or above `base`; kept only where
    /// a commit must land on one (tansu).
    boundaries: Option<BTreeSet<i64>>,
}

impl PartitionTrack {
    /// A partition whose reading starts at `start`. `whole_batches`: commits must land on
    /// a boundary where a poll began or ended (tansu's memory storage).
    pub(super) fn starting_at(start: i64, whole_batches: bool) -> PartitionTrack {
        PartitionTrack {
            base: start,
            in_flight: BTreeSet::new(),
            settled: BTreeSet::new(),
            read_to: start,
            boundaries: whole_batches.then(|| BTreeSet::from([start])),
        }
    }

    /// Where the committed offset is (or will be once committed): reading below it means
    /// the partition is read again from an earlier place.
    pub(super) fn base(&self) -> i64 {
        self.base
    }

    /// Whether the partition's log now ends (`high_watermark`) below what was read from
    /// it: the log started over (a re-created topic, a broker restarted empty), and its
    /// offsets name other records than the ones this track counted.
    pub(super) fn log_started_over(&self, high_watermark: i64) -> bool {
        high_watermark < self.read_to
    }

    /// A poll handed out records of this partition from `start` up to (not including)
    /// `end`: both are batch boundaries.
    pub(super) fn polled(&mut self, start: i64, end: i64) {
        if let Some(boundaries) = &mut self.boundaries {
            boundaries.extend([start, end].into_iter().filter(|at| *at >= self.base));
        }
    }

    /// Takes the request at `offset` into flight; `false` when it was handed out before
    /// (in flight, settled, or in the settled prefix, where every offset not in flight
    /// was settled or never came): a repeat, not to settle again.
    pub(super) fn take(&mut self, offset: i64) -> bool {
        let handled = offset < self.prefix_end() || self.settled.contains(&offset);
        if offset < self.base || self.in_flight.contains(&offset) || handled {
            return false;
        }
        self.in_flight.insert(offset);
        self.read_to = self.read_to.max(offset + 1);
        true
    }

    /// The request at `offset` is settled (its reply acknowledged, or it was skipped).
    pub(super) fn settle(&mut self, offset: i64) {
        if self.in_flight.remove(&offset) {
            self.settled.insert(offset);
        }
        let end = self.prefix_end();
        self.settled.retain(|at| *at >= end);
    }

    /// Requests handed out and not settled.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The first offset not known to be settled: the first in flight, else where reading
    /// has got to.
    fn prefix_end(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.read_to)
    }

    /// Where the committed offset may go now, if further than `base`; the track then
    /// counts everything below it as settled.
    pub(super) fn advance(&mut self) -> Option<i64> {
        let end = self.prefix_end();
        let to = match &self.boundaries {
            None => end,
            Some(boundaries) => boundaries.range(..=end).next_back().copied()?,
        };
        if to <= self.base {
            return None;
        }
        self.base = to;
        self.settled.retain(|at| *at >= to);
        if let Some(boundaries) = &mut self.boundaries {
            boundaries.retain(|at| *at >= to);
        }
        Some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(start: i64) -> PartitionTrack {
        PartitionTrack::starting_at(start, false)
    }

    /// A slow request at 10, faster ones after it: the commit stays at 10 until it
    /// settles, then jumps past all of them.
    #[test]
    fn the_commit_never_passes_an_unsettled_request() {
        let mut track = kafka(10);
        for offset in 10..14 {
            assert!(track.take(offset));
        }
        for offset in 11..14 {
            track.settle(offset);
        }
        assert_eq!(track.advance(), None);
        assert_eq!(track.in_flight(), 1);
        track.settle(10);
        assert_eq!(track.advance(), Some(14));
        assert_eq!(track.advance(), None);
    }

    #[test]
    fn the_commit_follows_the_settled_prefix_step_by_step() {
        let mut track = kafka(0);
        for offset in 0..4 {
            track.take(offset);
        }
        track.settle(0);
        track.settle(2);
        assert_eq!(track.advance(), Some(1));
        track.settle(1);
        assert_eq!(track.advance(), Some(3));
    }

    /// Offsets that never came (a transaction marker at 5) hold nothing to settle.
    #[test]
    fn a_hole_is_passed_over() {
        let mut track = kafka(3);
        track.take(3);
        track.take(4);
        track.take(6);
        for offset in [3, 4, 6] {
            track.settle(offset);
        }
        assert_eq!(track.advance(), Some(7));
    }

    #[test]
    fn a_request_handed_out_again_is_a_repeat() {
        let mut track = kafka(0);
        assert!(track.take(0));
        assert!(!track.take(0), "in flight");
        track.take(1);
        track.settle(1);
        assert!(!track.take(1), "settled, above an unsettled one");
        track.settle(0);
        track.advance();
        assert!(!track.take(0), "below the committed offset");
        assert!(track.take(2));
    }

    /// tansu: the commit lands only where a poll began or ended, never inside a batch.
    #[test]
    fn on_whole_batches_the_commit_lands_on_a_poll_boundary() {
        let mut track = PartitionTrack::starting_at(0, true);
        track.polled(0, 3); // one batch, 0..=2
        track.polled(3, 6); // another, 3..=5
        for offset in 0..6 {
            track.take(offset);
        }
        for offset in [0, 1, 2, 3] {
            track.settle(offset);
        }
        // 4 is in flight: the prefix ends at 4, inside the batch 3..=5.
        assert_eq!(track.advance(), Some(3));
        track.settle(4);
        track.settle(5);
        assert_eq!(track.advance(), Some(6));
    }

    #[test]
    fn a_log_that_ends_below_what_was_read_started_over() {
        let mut track = kafka(5);
        track.take(5);
        track.take(6);
        assert!(!track.log_started_over(7));
        assert!(!track.log_started_over(9));
        assert!(track.log_started_over(2));
    }

    #[test]
    fn nothing_read_nothing_to_commit() {
        let mut track = kafka(42);
        assert_eq!(track.advance(), None);
        assert_eq!(track.in_flight(), 0);
    }
}
