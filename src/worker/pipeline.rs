//! The requests a worker holds between polling them and committing them: handed to their
//! orders' chains (`chains.rs`), tracked per partition (`settled_prefix.rs`), and
//! committed as each partition's settled prefix grows.
//!
//! Polling goes on while earlier requests are at the PG, up to `worker.max_held_requests`
//! held at once (plus what one poll brings: on Kafka at most `max_held_requests` more, on
//! tansu one fetch of at most 128 KiB, `BrokerCompat::poll_records_cap`): past it the
//! poll loop waits for requests to settle before it polls again, so memory stays bounded
//! whatever the PG's latency.

use super::Worker;
use super::chains::{Chains, Settled};
use super::commit;
use super::metrics::WorkerMetrics;
use super::settled_prefix::PartitionTrack;
use crate::kafka::whole_batches::Span;
use krafka::ConsumerRecord;
use krafka::consumer::Consumer;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub(super) struct Pipeline {
    chains: Chains,
    reports: mpsc::UnboundedReceiver<Settled>,
    /// Per partition: its track, and which reading of it the track counts.
    tracks: HashMap<i32, (PartitionTrack, u64)>,
    /// Readings begun so far: a partition read again from below its committed offset (its
    /// log started over, or a rebalance rewound it) starts a new one, and a settlement
    /// from an earlier reading no longer counts.
    readings: u64,
    /// Commits land only where a poll began or ended (tansu's memory storage).
    whole_batches: bool,
    max_held: usize,
}

impl Pipeline {
    pub(super) fn new(max_held: usize, whole_batches: bool) -> Pipeline {
        let (chains, reports) = Chains::new();
        Pipeline {
            chains,
            reports,
            tracks: HashMap::new(),
            readings: 0,
            whole_batches,
            max_held,
        }
    }

    /// The partitions this worker owns now. A lost partition's requests are left to its
    /// next owner (the results store answers any it settles again); its chains give up.
    pub(super) fn own(&mut self, partitions: &HashSet<i32>) {
        self.tracks
            .retain(|partition, _| partitions.contains(partition));
        self.chains.own(partitions);
    }

    /// Whether some partition's log now ends below what was read from it (`ends`: each
    /// partition's high watermark, as the last fetch said): its log started over, and the
    /// brokers lost their logs with it (a broker restarted empty, a re-created topic).
    /// Then nothing counted of any partition holds, and every track is forgotten: another
    /// partition may have grown past what was read before it was looked at.
    pub(super) fn forget_restarted_logs(&mut self, ends: &HashMap<i32, i64>) -> bool {
        let restarted = self.tracks.iter().find_map(|(partition, (track, _))| {
            let end = *ends.get(partition)?;
            track.log_started_over(end).then_some((*partition, end))
        });
        let Some((partition, end)) = restarted else {
            return false;
        };
        log::warn!(
            "worker: partition {partition}'s log ends at {end}, below what was read from it: the logs started over; every partition is read again from its start"
        );
        self.tracks.clear();
        true
    }

    /// Takes a poll's `records` (which read `spans`) into flight, each behind its order's
    /// earlier requests; a request handed out before is not taken again.
    pub(super) fn take(
        &mut self,
        worker: &Arc<Worker>,
        records: Vec<ConsumerRecord>,
        spans: &BTreeMap<i32, Span>,
    ) {
        for (&partition, span) in spans {
            let rewound = self
                .tracks
                .get(&partition)
                .is_some_and(|(track, _)| span.start < track.base());
            if rewound {
                log::info!(
                    "worker: partition {partition} is read again from offset {}, below where it was settled; its requests are taken afresh (the results store answers any settled before)",
                    span.start
                );
            }
            if rewound || !self.tracks.contains_key(&partition) {
                self.readings += 1;
                let track = PartitionTrack::starting_at(span.start, self.whole_batches);
                self.tracks.insert(partition, (track, self.readings));
            }
            if let Some((track, _)) = self.tracks.get_mut(&partition) {
                track.polled(span.start, span.end);
            }
        }
        for record in records {
            let Some((track, reading)) = self.tracks.get_mut(&record.partition) else {
                continue;
            };
            if track.take(record.offset) {
                let reading = *reading;
                self.chains.push(worker, record, reading);
            }
        }
    }

    /// Where `partition`'s settled prefix ends (committed, or committed next); `None`
    /// before anything of it was read.
    pub(super) fn settled_to(&self, partition: i32) -> Option<i64> {
        self.tracks.get(&partition).map(|(track, _)| track.base())
    }

    /// Whether as many requests are held as may be.
    pub(super) fn full(&self) -> bool {
        self.chains.held() >= self.max_held
    }

    /// Requests queued or being settled.
    pub(super) fn held(&self) -> usize {
        self.chains.held()
    }

    /// Waits up to `limit` for a request to settle.
    pub(super) async fn wait_for_settled(&mut self, limit: Duration) {
        if let Ok(Some(settled)) = tokio::time::timeout(limit, self.reports.recv()).await {
            self.note(settled);
        }
    }

    /// Takes every settlement reported so far, and commits each partition's settled
    /// prefix where it grew.
    pub(super) async fn commit(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        metrics: &WorkerMetrics,
    ) {
        while let Ok(settled) = self.reports.try_recv() {
            self.note(settled);
        }
        let mut positions: Vec<(i32, i64)> = self
            .tracks
            .iter_mut()
            .filter_map(|(&partition, (track, _))| Some((partition, track.advance()?)))
            .collect();
        positions.sort_unstable();
        commit::commit(consumer, topic, &positions, metrics).await;
    }

    /// A stop: requests under way finish (a failed one is not tried again) for up to
    /// `limit`; what settled is committed.
    pub(super) async fn drain(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        metrics: &WorkerMetrics,
        limit: Duration,
    ) {
        self.chains.stop();
        let started = Instant::now();
        while self.chains.held() > 0 && started.elapsed() < limit {
            self.wait_for_settled(Duration::from_millis(100)).await;
        }
        let left = self.chains.held();
        if left > 0 {
            log::warn!(
                "worker: {left} request(s) still unsettled after {} s; the next owner reads them again",
                limit.as_secs()
            );
        }
        self.commit(consumer, topic, metrics).await;
    }

    fn note(&mut self, settled: Settled) {
        if let Some((track, reading)) = self.tracks.get_mut(&settled.partition)
            && *reading == settled.reading
        {
            track.settle(settled.offset);
        }
    }
}
