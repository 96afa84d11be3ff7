//! The worker's poll loop: poll, take the assignment the records came under, hand them to
//! the pipeline (`pipeline.rs`), commit what settled; and rejoin the group when its
//! assignment went stale (tansu).

use super::Worker;
use super::metrics::WorkerMetrics;
use super::pipeline::Pipeline;
use super::stale_group::StaleGroup;
use crate::error::StartupError;
use crate::kafka::BrokerCompat;
use crate::kafka::offset_gaps::{self, OffsetGaps};
use crate::kafka::whole_batches::{self, Span};
use crate::ops::notify::notify;
use crate::ops::signals::{Shutdown, SignalName};
use crate::ops::watchdog::Watchdog;
use crate::worker::results::NotServed;
use krafka::consumer::{Consumer, OffsetAndMetadata, TopicPartition};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLL_TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The request consumer, its topic, and the watch on its group.
pub(super) struct Requests<'a> {
    pub(super) consumer: &'a Consumer,
    pub(super) topic: &'a str,
    pub(super) group: &'a mut StaleGroup,
    /// Whose rules the brokers keep: whether a hole in the requests is read again, and
    /// whether commits must land on batch boundaries.
    pub(super) compat: BrokerCompat,
    /// Requests held at once (`worker.max_held_requests`).
    pub(super) max_held: usize,
    /// How long a stop waits for the requests under way.
    pub(super) drain_limit: Duration,
}

/// Polls, hands each request to its order's chain and commits what settled, until a stop
/// is asked for; returns the signal that asked. Polling goes on while requests are at the
/// PG, up to `max_held` held. On a stop, the requests under way are finished (up to
/// `drain_limit`) and committed first. Fails only when the brokers cannot run the group.
pub(super) async fn serve(
    worker: Arc<Worker>,
    requests: &mut Requests<'_>,
    shutdown: &Shutdown,
) -> Result<SignalName, StartupError> {
    let (consumer, topic) = (requests.consumer, requests.topic);
    let mut owned = Owned::new(requests.compat);
    let mut pipeline = Pipeline::new(
        requests.max_held,
        requests.compat.commits_on_batch_boundaries(),
    );
    let mut ready = false;
    // Fed here, on every turn: a loop that stops turning is a worker systemd restarts.
    let mut watchdog = Watchdog::from_env();
    loop {
        watchdog.tick();
        pipeline.commit(consumer, topic, &worker.metrics).await;
        report_lag(
            consumer,
            topic,
            &owned.partitions,
            &pipeline,
            &worker.metrics,
        )
        .await;
        worker.metrics.held.set(pipeline.held() as i64);
        worker.results.flush();
        worker
            .metrics
            .results_keys
            .set(worker.results.keys() as i64);
        if let Some(reason) = requests.group.check(consumer, owned.partitions.len()).await {
            if !rejoin(requests, &reason, &worker.metrics, shutdown, &mut watchdog).await {
                return Ok(stop(&mut pipeline, requests, &worker, shutdown).await);
            }
            owned.regaining = Some(Instant::now());
        }
        if pipeline.full() {
            let waited = shutdown.unless_requested(pipeline.wait_for_settled(POLL_TIMEOUT));
            if waited.await.is_none() {
                return Ok(stop(&mut pipeline, requests, &worker, shutdown).await);
            }
            continue;
        }
        let Some(polled) = shutdown.unless_requested(consumer.poll(POLL_TIMEOUT)).await else {
            return Ok(stop(&mut pipeline, requests, &worker, shutdown).await);
        };
        let mut records = match polled {
            Ok(records) => records,
            Err(e) if lacks_kip848(&e) => return Err(no_kip848(requests.compat)),
            Err(e) => {
                log::warn!("worker: polling {topic}: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let repeats = whole_batches::drop_repeats(&mut records);
        if repeats > 0 {
            log::debug!("worker: {repeats} request(s) fetched twice in one poll; read once");
        }
        let Some(gained) = owned.update(&worker, consumer, topic).await? else {
            rewind(consumer, topic, &whole_batches::spans(&records)).await;
            continue;
        };
        pipeline.own(&owned.partitions);
        // Several gateways write each partition: a request stored late is read again.
        // After the assignment is taken, so a partition that came back has no old hole.
        let holes = offset_gaps::mend(consumer, topic, &mut owned.gaps, &mut records).await;
        worker.metrics.offset_holes("requests", &holes);
        let spans = whole_batches::spans(&records);
        if !gained.is_empty() {
            anchor(consumer, topic, &gained, &spans, &worker.metrics).await;
        }
        if !ready && requests.group.has_joined() {
            ready = true;
            ready_in_group(&owned);
        }
        if pipeline.forget_restarted_logs(&log_ends(consumer, topic).await) {
            // The consumer's positions, and any offset committed from the old logs, lie
            // past requests the new logs hold below them: every owned partition is read
            // again from its new start, this poll's records with it.
            read_from_start(consumer, topic, &owned.partitions, &worker.metrics).await;
            // The results log most likely started over too: reading it to its end now
            // finds that out before a payment needs it.
            if let Err(e) = worker.results.catch_up_owned().await {
                log::warn!("worker: reading the results store after a log started over: {e}");
            }
            continue;
        }
        pipeline.take(&worker, records, &spans);
    }
}

/// The stop: finishes and commits the requests under way; the signal that asked.
async fn stop(
    pipeline: &mut Pipeline,
    requests: &Requests<'_>,
    worker: &Worker,
    shutdown: &Shutdown,
) -> SignalName {
    let (consumer, topic) = (requests.consumer, requests.topic);
    pipeline
        .drain(consumer, topic, &worker.metrics, requests.drain_limit)
        .await;
    shutdown.requested().await
}

/// Whether a poll failed because the brokers have no `ConsumerGroupHeartbeat` (KIP-848):
/// tansu 0.6, or Kafka before 4.0 without `group.coordinator.new.enable`.
fn lacks_kip848(error: &krafka::KrafkaError) -> bool {
    error.to_string().contains("ConsumerGroupHeartbeat")
}

/// The one sentence for a worker whose brokers cannot run its group protocol.
fn no_kip848(compat: BrokerCompat) -> StartupError {
    StartupError::new(format!(
        "the brokers do not speak the KIP-848 consumer group protocol that \"broker_compat\": \"{}\" uses (no ConsumerGroupHeartbeat): on tansu set \"broker_compat\": \"tansu-0.6\" (or KREPLY_BROKER_COMPAT); on Kafka 3.7-3.9 enable group.coordinator.new.enable=true on the brokers, or upgrade to 4.0",
        compat.name()
    ))
}

/// Tells systemd the worker is ready once the group gave it an assignment: until then a
/// request could wait unread (or, in a new group starting at the latest offset, be
/// skipped), so a unit ordered after the worker must not start yet. An empty assignment
/// counts: a worker beyond the partition count is a standby, not a failed start.
fn ready_in_group(owned: &Owned) {
    let mut partitions: Vec<_> = owned.partitions.iter().copied().collect();
    partitions.sort_unstable();
    log::info!("ready: worker in its group, holding partitions {partitions:?}");
    notify("READY=1");
}

/// The request partitions this worker serves, as last applied.
struct Owned {
    partitions: HashSet<i32>,
    /// Since when the worker has been rejoining after a stale assignment.
    regaining: Option<Instant>,
    /// Where each partition's next request is, to read again one stored late.
    gaps: OffsetGaps,
}

impl Owned {
    fn new(compat: BrokerCompat) -> Owned {
        Owned {
            partitions: HashSet::new(),
            regaining: None,
            gaps: OffsetGaps::new(compat),
        }
    }

    /// Takes the consumer's assignment; the partitions gained, or `None` when their
    /// results partitions could not be read first, so the batch must be read again later;
    /// `Err` when one was written under another layout and the worker must stop.
    async fn update(
        &mut self,
        worker: &Worker,
        consumer: &Consumer,
        topic: &str,
    ) -> Result<Option<Vec<i32>>, StartupError> {
        let assigned: HashSet<i32> = consumer
            .assignment()
            .await
            .remove(topic)
            .unwrap_or_default()
            .into_iter()
            .collect();
        if assigned == self.partitions {
            return Ok(Some(Vec::new()));
        }
        self.gaps.retain(|partition| assigned.contains(&partition));
        // New partitions may carry repeats of what their previous owner recorded: their
        // results partitions are read to the end first. Those lost are left to the next
        // owner.
        match worker.results.own(&assigned).await {
            Ok(_) => {}
            Err(NotServed::Refused(why)) => return Err(why),
            Err(NotServed::Unread(e)) => {
                log::error!("worker: cannot read the results store, will retry: {e}");
                return Ok(None);
            }
        }
        let new: Vec<i32> = assigned.difference(&self.partitions).copied().collect();
        let gained = !new.is_empty();
        self.expect_committed(consumer, topic, &new).await;
        let mut sorted: Vec<_> = assigned.iter().copied().collect();
        sorted.sort_unstable();
        log::info!("worker: assigned partitions {sorted:?} of {topic}");
        if gained && let Some(since) = self.regaining.take() {
            log::info!(
                "worker: partitions regained: {sorted:?} of {topic}, {:.1} s after rejoining the group",
                since.elapsed().as_secs_f64()
            );
        }
        worker.metrics.partitions.set(assigned.len() as i64);
        self.partitions = assigned;
        Ok(Some(new))
    }

    /// A gained partition is read from the group's committed offset: its first records
    /// must start there, or a request being stored was skipped (see `offset_gaps`).
    async fn expect_committed(&mut self, consumer: &Consumer, topic: &str, new: &[i32]) {
        let asked: Vec<(&str, i32)> = new.iter().map(|&p| (topic, p)).collect();
        match consumer.committed(&asked).await {
            Ok(committed) => {
                for ((_, partition), at) in committed {
                    if at.offset >= 0 {
                        self.gaps.expect(partition, at.offset);
                    }
                }
            }
            Err(e) => log::debug!("worker: reading the committed offsets of {topic}: {e}"),
        }
    }
}

/// Commits where each gained partition starts. A group that never committed on a
/// partition starts a new owner at the latest offset (`start_from`), so without this a
/// worker that dies before its first commit there would leave the requests it was
/// working on unread by the next owner.
async fn anchor(
    consumer: &Consumer,
    topic: &str,
    new: &[i32],
    spans: &BTreeMap<i32, Span>,
    metrics: &WorkerMetrics,
) {
    let mut anchors = Vec::new();
    for &partition in new {
        // The batch in hand starts there; without records, the next one will.
        let start = match spans.get(&partition) {
            Some(span) => Some(span.start),
            None => consumer.position(topic, partition).await,
        };
        if let Some(start) = start {
            // Where a new owner starts is what to compare with a request's offset when one
            // is never settled after partitions moved (docs/testing.md, the soak).
            log::info!("worker: {topic}/{partition} starts at offset {start}");
            anchors.push((
                TopicPartition::new(topic, partition),
                OffsetAndMetadata::new(start),
            ));
        }
    }
    if let Err(e) = consumer.commit_offsets(anchors).await {
        metrics.commit_errors.inc();
        log::warn!("worker: committing the start of new partitions of {topic}: {e}");
    }
}

/// Leaves the group and joins it again as a new member, so the coordinator computes the
/// assignment afresh (see [`stale_group`](super::stale_group)); `false` when a stop came first.
async fn rejoin(
    requests: &mut Requests<'_>,
    reason: &str,
    metrics: &WorkerMetrics,
    shutdown: &Shutdown,
    watchdog: &mut Watchdog,
) -> bool {
    log::warn!(
        "worker: stale group assignment: {reason}; leaving the group and joining again as a new member"
    );
    metrics.group_rejoins.inc();
    if let Err(e) = requests.consumer.unsubscribe().await {
        log::warn!("worker: leaving the group: {e}");
    }
    requests.group.rejoined();
    loop {
        // Retrying is progress: brokers that refuse for a while are no reason to restart.
        watchdog.tick();
        match requests.consumer.subscribe([requests.topic]).await {
            Ok(()) => return true,
            Err(e) => log::warn!("worker: subscribing to {} again: {e}", requests.topic),
        }
        if shutdown
            .unless_requested(tokio::time::sleep(RETRY_PAUSE))
            .await
            .is_none()
        {
            return false;
        }
    }
}

/// Sends the consumer to offset 0 of each of `partitions` of `topic`, where a log that
/// started over begins, and commits 0 there, so that a rejoin (the group's coordinator
/// lost its state with the logs) resumes there too, not at an offset of the old logs.
async fn read_from_start(
    consumer: &Consumer,
    topic: &str,
    partitions: &HashSet<i32>,
    metrics: &WorkerMetrics,
) {
    let mut starts = Vec::new();
    for &partition in partitions {
        if let Err(e) = consumer.seek(topic, partition, 0).await {
            log::warn!("worker: {topic}/{partition}: cannot read again from the start: {e}");
        }
        starts.push((
            TopicPartition::new(topic, partition),
            OffsetAndMetadata::new(0),
        ));
    }
    if let Err(e) = consumer.commit_offsets(starts).await {
        metrics.commit_errors.inc();
        log::warn!("worker: committing the start of {topic}'s new logs: {e}");
    }
}

/// `kreply_worker_lag`: for each owned partition, its high watermark as the last fetch
/// said minus where its settled prefix ends (the committed offset), or, before this
/// worker read anything there, minus the consumer's position. Held requests count: a
/// request polled and stuck at the PG is not done.
async fn report_lag(
    consumer: &Consumer,
    topic: &str,
    owned: &HashSet<i32>,
    pipeline: &Pipeline,
    metrics: &WorkerMetrics,
) {
    let lag = consumer
        .lag()
        .await
        .into_iter()
        .filter(|(tp, _)| &*tp.topic == topic && owned.contains(&tp.partition))
        .filter_map(|(tp, lag)| {
            let from = pipeline.settled_to(tp.partition).or(lag.position)?;
            Some((tp.partition, (lag.high_watermark? - from).max(0)))
        })
        .collect();
    metrics.set_lag(lag);
}

/// Each partition's high watermark, as the consumer's last fetches said (no request).
async fn log_ends(consumer: &Consumer, topic: &str) -> HashMap<i32, i64> {
    consumer
        .lag()
        .await
        .into_iter()
        .filter(|(tp, _)| &*tp.topic == topic)
        .filter_map(|(tp, lag)| Some((tp.partition, lag.high_watermark?)))
        .collect()
}

/// Reads a batch (which read `spans`) again later, e.g. when the results store could not
/// be read first.
async fn rewind(consumer: &Consumer, topic: &str, spans: &BTreeMap<i32, Span>) {
    for (&partition, span) in spans {
        let _ = consumer.seek(topic, partition, span.start).await;
    }
    tokio::time::sleep(RETRY_PAUSE).await;
}
