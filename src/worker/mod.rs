//! `kreply worker`: the reference worker. It consumes payment requests in a consumer
//! group, charges the PG at most once per idempotency key, and replies to the topic each
//! request names.
//!
//! Delivery is at-least-once: a request's offset is committed only after its reply is
//! acknowledged, so a worker that dies leaves its uncommitted requests to the next owner.
//! That owner reads the results store first (`results.rs`), which turns every redelivery
//! into an answer from the record instead of a second charge; and since two workers can
//! still settle one request at once, the first `pending` in the results log decides which
//! of them may call the PG (`race.rs`).
//!
//! Records of one order (same key, same partition) are settled in order; different orders
//! run concurrently, up to `worker.concurrency` PG calls at once. The Kafka side runs on one
//! Tokio thread (the work is waiting on the PG and the brokers, not computing); the PG
//! client and the `/metrics` server do their I/O on async-std.

mod answer;
mod member_list;
mod metrics;
mod pg_client;
mod race;
mod request;
mod results;
mod results_index;
mod settle;
mod stale_group;

use crate::config::{Config, StartFrom};
use crate::error::StartupError;
use crate::kafka::whole_batches::{self, Reread, Span};
use crate::kafka::{self, topics, topics::NeededTopic};
use crate::ops::notify::notify;
use crate::wire::record::OutgoingRecord;
use krafka::ConsumerRecord;
use krafka::consumer::{AutoOffsetReset, Consumer, OffsetAndMetadata, TopicPartition};
use member_list::MemberList;
use metrics::WorkerMetrics;
use pg_client::PgClient;
use results::ResultsStore;
use stale_group::{Rounds, StaleGroup};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const POLL_TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Beyond the PG timeout, how long an attempt may take to put its result on record.
const RECORDING_MARGIN: Duration = Duration::from_secs(5);
/// Bytes one fetch of requests may bring: a few hundred requests, about krafka's default
/// of 500 records a poll, now that a poll hands out everything fetched.
const FETCH_MAX_BYTES: i32 = 128 * 1024;

/// What every request task shares.
pub(crate) struct Worker {
    metrics: Arc<WorkerMetrics>,
    producer: Arc<kafka::ProducerSession>,
    results: ResultsStore,
    pg: PgClient,
    pg_calls: Semaphore,
    /// How long an attempt can run: past it, an unfinished one is not waited for.
    attempt_limit: Duration,
}

impl Worker {
    async fn send(&self, record: OutgoingRecord) -> krafka::Result<()> {
        self.producer.send(kafka::to_krafka(record)).await.map(drop)
    }
}

/// Runs the worker until SIGTERM or SIGINT; returns early only on a startup failure.
pub fn run(config_path: &Path) -> Result<(), StartupError> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the worker runtime: {e}")))?;
    runtime.block_on(async {
        let mut stop = Stop::listen()?;
        let (worker, consumer, mut group) =
            start(&config, &config_path.display().to_string()).await?;
        let listen = config.worker.metrics_listen;
        metrics::serve(Arc::clone(&worker.metrics), listen).await.map_err(|e| {
            StartupError::new(format!(
                "the worker cannot serve /metrics on {listen} (set \"worker.metrics_listen\" or KREPLY_METRICS_LISTEN to a free address): {e}"
            ))
        })?;
        log::info!("ready: worker metrics on http://{listen}/metrics");
        notify("READY=1");
        let mut requests = Requests {
            consumer: &consumer,
            topic: &config.request_topic,
            group: &mut group,
        };
        serve(Arc::new(worker), &mut requests, &mut stop).await;
        notify("STOPPING=1");
        stop.exit_on_next();
        log::info!("worker: stopping: leaving the group");
        if let Err(e) = consumer.close().await {
            log::warn!("worker: leaving the group: {e}");
        }
        Ok(())
    })
}

async fn start(
    config: &Config,
    config_path: &str,
) -> Result<(Worker, Consumer, StaleGroup), StartupError> {
    let settings = &config.worker;
    let kafka = kafka::connect_brokers(config, config_path, "kreply-worker").await?;
    let admin = kafka.admin();
    let needed = [
        NeededTopic::plain(&config.request_topic, "request"),
        NeededTopic::compacted(&settings.results_topic, "results"),
    ];
    let mut partitions = topics::ensure(&admin, config, config_path, &needed).await?;
    let results_partitions = partitions.swap_remove(1);
    let request_partitions = partitions.swap_remove(0).len();
    let pg = PgClient::new(
        &settings.pg_url,
        Duration::from_millis(settings.pg_timeout_ms),
    )?;
    // Replies and results records have no caller deadline; 30 s bounds a stuck send. The
    // producer has a client of its own, so its sends never wait behind a fetch.
    let metrics = Arc::new(WorkerMetrics::default());
    let producing = kafka::connect_brokers(config, config_path, "kreply-worker-producer").await?;
    let renewals = Arc::clone(&metrics);
    let producer = kafka::payment_producer(
        producing,
        config,
        Duration::from_secs(30),
        "worker",
        move || renewals.producer_sessions_renewed.inc(),
    )
    .await?;
    let results = ResultsStore::open(&kafka, config, results_partitions, producer.clone())
        .await
        .map_err(|e| {
            StartupError::new(format!(
                "cannot read the results topic \"{}\": {e}",
                settings.results_topic
            ))
        })?;
    let watched = vec![config.request_topic.clone(), settings.results_topic.clone()];
    kafka::metadata_keeper::keep_fresh(&kafka, watched)
        .await
        .map_err(|e| StartupError::new(format!("cannot start the metadata refresher: {e}")))?;
    let session = Duration::from_millis(settings.session_timeout_ms);
    let rounds = Arc::new(Rounds::default());
    let consumer = kafka
        .consumer(settings.group_id.as_str())
        .enable_auto_commit(false)
        .session_timeout(session)
        .heartbeat_interval(session / 3)
        .rebalance_listener(Arc::clone(&rounds))
        .fetch_max_wait(Duration::from_millis(config.fetch_max_wait_ms))
        // Every poll hands out all that was fetched, so the position only stops where a
        // batch ends: a commit or a seek inside a multi-record batch would make tansu skip
        // the rest of it (see `whole_batches`).
        .max_poll_records(-1)
        .fetch_max_bytes(FETCH_MAX_BYTES)
        .auto_offset_reset(match settings.start_from {
            StartFrom::Latest => AutoOffsetReset::Latest,
            StartFrom::Earliest => AutoOffsetReset::Earliest,
        })
        .build()
        .await
        .map_err(|e| StartupError::new(format!("cannot start the request consumer: {e}")))?;
    consumer
        .subscribe([config.request_topic.as_str()])
        .await
        .map_err(|e| {
            StartupError::new(format!(
                "cannot subscribe to \"{}\": {e}",
                config.request_topic
            ))
        })?;
    log::info!(
        "startup: worker in group {} on {}, PG {}",
        settings.group_id,
        config.request_topic,
        settings.pg_url
    );
    let pg_calls = Semaphore::new(settings.concurrency);
    let members = MemberList::watch(
        admin,
        config.clone(),
        settings.group_id.clone(),
        stale_group::check_interval(session),
    );
    let group = StaleGroup::new(members, request_partitions, session, rounds);
    Ok((
        Worker {
            metrics,
            producer,
            results,
            pg,
            pg_calls,
            attempt_limit: Duration::from_millis(settings.pg_timeout_ms) + RECORDING_MARGIN,
        },
        consumer,
        group,
    ))
}

/// The request consumer, its topic, and the watch on its group.
struct Requests<'a> {
    consumer: &'a Consumer,
    topic: &'a str,
    group: &'a mut StaleGroup,
}

/// Polls, settles and commits, batch by batch, until a stop is requested. A stop is only
/// taken between batches, so requests in progress are finished and committed first.
async fn serve(worker: Arc<Worker>, requests: &mut Requests<'_>, stop: &mut Stop) {
    let (consumer, topic) = (requests.consumer, requests.topic);
    let mut owned = Owned::default();
    loop {
        let polled = tokio::select! {
            _ = stop.requested() => return,
            polled = consumer.poll(POLL_TIMEOUT) => polled,
        };
        let mut records = match polled {
            Ok(records) => records,
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
        let spans = whole_batches::spans(&records);
        if !owned.update(&worker, consumer, topic, &spans).await {
            rewind(consumer, topic, &spans).await;
            continue;
        }
        owned.reread.drop_handled(&mut records);
        if !records.is_empty() {
            let settled = settle_batch(&worker, records).await;
            let read = Read {
                spans: &spans,
                reread: &mut owned.reread,
            };
            commit(consumer, topic, settled, read, &worker.metrics).await;
            worker
                .metrics
                .results_keys
                .set(worker.results.keys() as i64);
        }
        if let Some(reason) = requests.group.check(consumer, owned.partitions.len()).await {
            if !rejoin(requests, &reason, &worker.metrics, stop).await {
                return;
            }
            owned.regaining = Some(Instant::now());
        }
    }
}

/// The request partitions this worker serves, as last applied.
#[derive(Default)]
struct Owned {
    partitions: HashSet<i32>,
    /// Since when the worker has been rejoining after a stale assignment.
    regaining: Option<Instant>,
    /// Requests already settled in batches being read again.
    reread: Reread,
}

impl Owned {
    /// Takes the consumer's assignment; `false` when the results store could not be read
    /// first, so the batch (which read `spans`) must be read again later.
    async fn update(
        &mut self,
        worker: &Worker,
        consumer: &Consumer,
        topic: &str,
        spans: &BTreeMap<i32, Span>,
    ) -> bool {
        let assigned: HashSet<i32> = consumer
            .assignment()
            .await
            .remove(topic)
            .unwrap_or_default()
            .into_iter()
            .collect();
        if assigned == self.partitions {
            return true;
        }
        self.reread.clear();
        // New partitions may carry repeats of what their previous owner recorded;
        // losing partitions brings nothing new to read.
        let new: Vec<i32> = assigned.difference(&self.partitions).copied().collect();
        let gained = !new.is_empty();
        if gained && let Err(e) = worker.results.catch_up().await {
            log::error!("worker: cannot read the results store, will retry: {e}");
            return false;
        }
        anchor(consumer, topic, &new, spans, &worker.metrics).await;
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
        true
    }
}

/// Commits where each new partition starts. A group that never committed on a
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
/// assignment afresh (see [`stale_group`]); `false` when a stop came first.
async fn rejoin(
    requests: &mut Requests<'_>,
    reason: &str,
    metrics: &WorkerMetrics,
    stop: &mut Stop,
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
        match requests.consumer.subscribe([requests.topic]).await {
            Ok(()) => return true,
            Err(e) => log::warn!("worker: subscribing to {} again: {e}", requests.topic),
        }
        tokio::select! {
            _ = stop.requested() => return false,
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
}

/// Per partition: every offset of the batch, and whether it was settled.
type Settled = BTreeMap<i32, BTreeMap<i64, bool>>;

/// Settles a batch: one task per (partition, key), each in offset order, stopping at its
/// first failure so a later request of the same order never overtakes an earlier one.
async fn settle_batch(worker: &Arc<Worker>, records: Vec<ConsumerRecord>) -> Settled {
    let mut settled: Settled = BTreeMap::new();
    let mut chains: HashMap<(i32, Vec<u8>), Vec<ConsumerRecord>> = HashMap::new();
    for record in records {
        settled
            .entry(record.partition)
            .or_default()
            .insert(record.offset, false);
        let key = (
            record.partition,
            record.key.as_deref().unwrap_or_default().to_vec(),
        );
        chains.entry(key).or_default().push(record);
    }
    let mut tasks = JoinSet::new();
    for chain in chains.into_values() {
        let worker = Arc::clone(worker);
        tasks.spawn(async move {
            let mut done = Vec::new();
            for record in chain {
                let ok = settle_record(&worker, &record).await;
                done.push((record.partition, record.offset, ok));
                if !ok {
                    break;
                }
            }
            done
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (partition, offset, ok) in done.unwrap_or_default() {
            settled.entry(partition).or_default().insert(offset, ok);
        }
    }
    settled
}

/// `true` when the record needs no further work (answered, or unanswerable and skipped).
async fn settle_record(worker: &Worker, record: &ConsumerRecord) -> bool {
    let at = kafka::ConsumedAt::of(record);
    let header = |name: &str| record.header(name).flatten().map(|bytes| bytes.as_ref());
    let item = match request::read(
        header,
        record.key.as_deref().unwrap_or_default(),
        record.value.as_deref(),
    ) {
        Ok(item) => item,
        Err(why) => {
            log::warn!("worker: request at {at} cannot be answered ({why}); skipped");
            worker.metrics.request("skipped");
            return true;
        }
    };
    match settle::settle_and_reply(worker, item, record.timestamp).await {
        Ok(()) => true,
        Err(why) => {
            log::error!("worker: request at {at}: {why}; it will be read again");
            false
        }
    }
}

/// What a batch read, and what of it was settled in earlier readings.
struct Read<'a> {
    /// Per partition, from the first offset of a produce batch to the end of one.
    spans: &'a BTreeMap<i32, Span>,
    reread: &'a mut Reread,
}

/// Commits each partition whose requests were all settled, at the end of what the batch
/// read there. A partition with an unsettled request is read again from where the batch
/// began there, skipping what was settled; nothing is committed for it. Seeking to the
/// unsettled request itself would make tansu skip it and the rest of its produce batch
/// (see `whole_batches`), and committing it would make the next owner do the same.
async fn commit(
    consumer: &Consumer,
    topic: &str,
    settled: Settled,
    read: Read<'_>,
    metrics: &WorkerMetrics,
) {
    for (partition, offsets) in settled {
        let Some(span) = read.spans.get(&partition) else {
            continue;
        };
        if offsets.values().any(|ok| !ok) {
            let handled = offsets.iter().filter(|(_, ok)| **ok).map(|(at, _)| *at);
            read.reread.remember(partition, handled);
            let _ = consumer.seek(topic, partition, span.start).await;
            continue;
        }
        read.reread.done(partition);
        let next = span.end;
        let position = (
            TopicPartition::new(topic, partition),
            OffsetAndMetadata::new(next),
        );
        if let Err(e) = consumer.commit_offsets([position]).await {
            metrics.commit_errors.inc();
            log::warn!(
                "worker: committing {topic}/{partition} at {next}: {e} (the next owner may repeat; the record answers)"
            );
        }
    }
}

/// Reads a batch (which read `spans`) again later, e.g. when the results store could not
/// be read first.
async fn rewind(consumer: &Consumer, topic: &str, spans: &BTreeMap<i32, Span>) {
    for (&partition, span) in spans {
        let _ = consumer.seek(topic, partition, span.start).await;
    }
    tokio::time::sleep(RETRY_PAUSE).await;
}

/// SIGTERM (systemd) or SIGINT (Ctrl-C).
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn listen() -> Result<Stop, StartupError> {
        let listen = |kind| {
            signal(kind).map_err(|e| StartupError::new(format!("cannot listen for signals: {e}")))
        };
        Ok(Stop {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// After the first signal: a second one ends the process at once.
    fn exit_on_next(mut self) {
        tokio::spawn(async move {
            self.requested().await;
            log::warn!("worker: signalled again: exiting now, without finishing");
            std::process::exit(1);
        });
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => log::info!("worker: SIGTERM: finishing the requests in progress"),
            _ = self.int.recv() => log::info!("worker: SIGINT: finishing the requests in progress"),
        }
    }
}
