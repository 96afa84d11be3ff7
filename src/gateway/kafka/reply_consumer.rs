//! The reply consumer: reads this host's reply topic and hands each reply to its waiter.
//!
//! No consumer group, on purpose. A group would let the broker give a partition of this
//! host's replies to another member, which is exactly how replies got lost before. Every
//! partition is assigned by hand, because a worker picks the reply partition by hashing the
//! key over all of them; in partition-per-host routing only this host's partition is, the
//! one its requests name in `kafka_replyPartition`. Reading starts at the latest offset:
//! replies written before this process started belong to requests that no longer wait, and
//! there is no group offset to resume from anyway. On tansu's memory storage "latest" can
//! lie inside the newest produce batch; the fetch from there skips the rest of that batch
//! (replies older than this consumer) and returns the batches after it more than once, and
//! those repeats are dropped before delivery ([`whole_batches`]), so each reply reaches the
//! registry once.
//!
//! On tansu (`"broker_compat": "tansu-0.6"`), when a partition's log starts over under it
//! (see [`super::log_watch`]), or it has heard nothing from the brokers for
//! `reply_stale_after_ms`, the consumer is opened again on a new client (fresh metadata, so a re-created topic's new id is used). On the same log
//! (same topic id, old position still inside it) it resumes exactly where it stood. On a
//! different log it starts at the first reply written since it last read healthily (less
//! a margin for clock skew), or at the latest offset when there is none: that skips no
//! reply written since, at the cost of reading a few seconds of replies twice. On Kafka
//! neither happens: a leader move is the client's to follow, a log that started over is
//! answered `OFFSET_OUT_OF_RANGE`, and replies are read `read_committed`.

use super::log_watch::{LogWatch, PartitionView};
use crate::config::Config;
use crate::error::StartupError;
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::readiness::{Change, Readiness};
use crate::gateway::registry::{Delivery, Registry, Reply};
use crate::gateway::reply_check;
use crate::kafka::metadata_keeper::{Keeper, keep_fresh};
use crate::kafka::offset_gaps::{self, OffsetGaps};
use crate::kafka::whole_batches;
use crate::kafka::{BrokerCompat, ConsumedAt};
use crate::wire::correlation_id::CorrelationId;
use crate::wire::dialect::Dialect;
use crate::wire::record::now_ms;
use crate::wire::traceparent::{self, LogField};
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, KrafkaError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one `poll` may wait before the loop checks back in.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause after a failed poll, so a broker outage does not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Replies this much older than the last healthy read are read again after the log
/// started over: room for clock skew between the workers and this host.
const CLOCK_MARGIN_MS: i64 = 5_000;

/// Where a (re)opened consumer starts on each partition.
#[derive(Debug, Clone)]
pub enum Start {
    /// The end of the log: at startup.
    Latest,
    /// Where the old consumer stood, when it is still the same log; else the first record
    /// stamped at or after `since_ms` (ms since the epoch); else the end.
    Resume { since_ms: i64, left: Left },
}

/// Where the old consumer left a topic: its id and a position per partition.
#[derive(Debug, Clone, Default)]
pub struct Left {
    topic_id: Option<[u8; 16]>,
    positions: HashMap<i32, i64>,
}

impl Left {
    /// What `consumer` knows of `topic` now, from its cache (no broker is asked).
    async fn of(consumer: &Consumer, topic: &str) -> Left {
        let mut positions = HashMap::new();
        for (tp, lag) in consumer.lag().await {
            if let Some(position) = lag.position.filter(|p| *p >= 0) {
                positions.insert(tp.partition, position);
            }
        }
        Left {
            topic_id: topic_id(consumer, None, topic).await,
            positions,
        }
    }
}

/// `topic`'s id, from the cache (`refresh` `None`) or fresh from the brokers.
async fn topic_id(consumer: &Consumer, refresh: Option<&str>, topic: &str) -> Option<[u8; 16]> {
    let known = consumer.fetch_metadata(refresh).await.ok()?;
    known
        .topics
        .iter()
        .find(|t| t.name == topic)
        .map(|t| t.topic_id)
        .filter(|id| *id != [0; 16])
}

/// Assigns every partition of `topic` and resolves each position from `start`.
///
/// Only when every position is known is the consumer "positioned": a reply written after
/// this returns will be read, whatever partition it lands on.
pub async fn position(
    consumer: &Consumer,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> Result<(), StartupError> {
    let failed = |e: KrafkaError| {
        StartupError::new(format!("could not assign the reply topic \"{topic}\": {e}"))
    };
    consumer
        .assign(topic, partitions.to_vec())
        .await
        .map_err(failed)?;
    let same_log = match &start {
        Start::Resume { left, .. } => {
            left.topic_id.is_some() && topic_id(consumer, Some(topic), topic).await == left.topic_id
        }
        Start::Latest => false,
    };
    for &partition in partitions {
        let found = match &start {
            Start::Resume { since_ms, left } => {
                resume(consumer, topic, partition, *since_ms, left, same_log).await
            }
            Start::Latest => Err(KrafkaError::no_offset(vec![])),
        };
        match found {
            Ok(()) => {}
            Err(KrafkaError::NoOffset { .. }) => {
                consumer
                    .seek_to_end(topic, partition)
                    .await
                    .map_err(failed)?;
            }
            Err(e) => return Err(failed(e)),
        }
        let offset = consumer.position(topic, partition).await.ok_or_else(|| {
            StartupError::new(format!(
                "could not find the latest offset of reply topic \"{topic}\" partition {partition}; check the partition's leader on the brokers"
            ))
        })?;
        log::info!("reply consumer at {topic}/{partition} offset {offset}");
    }
    Ok(())
}

/// Seeks where the old consumer left `partition` when the log is the same one and still
/// holds that position (nothing skipped, nothing read twice), else to the first record
/// stamped since `since_ms`.
async fn resume(
    consumer: &Consumer,
    topic: &str,
    partition: i32,
    since_ms: i64,
    left: &Left,
    same_log: bool,
) -> Result<(), KrafkaError> {
    if let Some(&position) = left.positions.get(&partition).filter(|_| same_log) {
        let (start, end) = consumer.fetch_watermarks(topic, partition).await?;
        if (start..=end).contains(&position) {
            return consumer.seek(topic, partition, position).await;
        }
    }
    consumer.seek_to_timestamp(topic, partition, since_ms).await
}

/// Where replies come from, and how to open a positioned consumer on them: at startup,
/// and again after the log started over.
pub struct ReplySource {
    pub config: Config,
    pub config_path: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    /// The dialects the flows speak: a reply's id has one of their shapes.
    pub dialects: Vec<Dialect>,
    /// Follows the reply partitions' leaders for the open consumer's client; replaced
    /// with it (`metadata_keeper`).
    pub fresh: std::sync::Mutex<Option<Keeper>>,
}

impl ReplySource {
    /// The client id of the reply consumer's own client.
    pub fn client_id(&self) -> String {
        format!("{}-replies", self.config.client_id)
    }

    /// A consumer on a client of its own (its own connection, so a produce never waits
    /// behind a fetch, and its own metadata), positioned per `start`.
    pub async fn open(&self, start: Start) -> Result<Consumer, StartupError> {
        let config = &self.config;
        let kafka = super::connect_brokers(config, &self.config_path, &self.client_id()).await?;
        let consumer = kafka
            .consumer_without_group()
            .auto_offset_reset(AutoOffsetReset::Latest)
            .fetch_max_wait(Duration::from_millis(config.fetch_max_wait_ms))
            // An aborted transaction's reply is never handed to a caller.
            .isolation_level(config.broker_compat.isolation())
            // A poll hands out everything fetched, so a fetch's repeats are all in one poll.
            .max_poll_records(-1)
            .lag_staleness_threshold(Duration::from_millis(config.reply_stale_after_ms))
            .build()
            .await
            .map_err(|e| StartupError::new(format!("cannot start the reply consumer: {e}")))?;
        position(&consumer, &self.topic, &self.partitions, start).await?;
        // On tansu the reopen above is what refreshes a silent consumer's metadata; a
        // keeper there made krafka read replies twice after a broker restart (seen in
        // `recovery::a_broker_restarted_with_its_log_*`: 153 replies without a waiter).
        if !config.broker_compat.reopens_silent_readers() {
            let keeper = keep_fresh(&kafka, vec![self.topic.clone()])
                .await
                .map_err(|e| StartupError::new(format!("cannot start the reply consumer: {e}")))?;
            *self.fresh.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper);
        }
        Ok(consumer)
    }
}

/// What a poll says about the reply consumer.
enum Verdict {
    /// Positioned, and every partition fetched recently.
    Healthy,
    /// Some partition not fetched within `reply_stale_after_ms`.
    Stale,
    /// These partitions' logs started over.
    StartedOver(Vec<i32>),
    Failed(KrafkaError),
}

const HEARD_NOTHING: &str = "the reply consumer has heard nothing from the brokers recently";

/// Polls forever, delivering replies, and opens the consumer again when its log started
/// over or it has heard nothing for `reply_stale_after_ms`: krafka keeps asking for a
/// re-created topic by its old id, and tansu's answers to that are discarded, so the old
/// consumer would wait forever.
pub async fn run(
    source: ReplySource,
    mut consumer: Consumer,
    registry: Registry,
    readiness: Readiness,
    metrics: Arc<GatewayMetrics>,
) {
    let stale_after = Duration::from_millis(source.config.reply_stale_after_ms);
    let compat = source.config.broker_compat;
    let mut watch = LogWatch::default();
    let mut gaps = OffsetGaps::new(source.config.broker_compat);
    let mut opened_at = Instant::now();
    let mut last_healthy_ms = now_ms();
    loop {
        let verdict = match consumer.poll(POLL_TIMEOUT).await {
            Ok(mut records) => {
                let repeats = whole_batches::drop_repeats(&mut records);
                if repeats > 0 {
                    log::debug!(
                        "{repeats} reply record(s) fetched twice in one poll; delivered once"
                    );
                }
                // Several workers write each partition: a reply stored late is read again.
                let holes =
                    offset_gaps::mend(&consumer, &source.topic, &mut gaps, &mut records).await;
                metrics.reply_offset_holes(&holes);
                let speech = Speech {
                    id_header: &source.config.header_names.correlation_id,
                    dialects: &source.dialects,
                };
                for record in records {
                    dispatch(&registry, &metrics, &speech, record);
                }
                look(&consumer, &mut watch, compat, &metrics).await
            }
            Err(e) => Verdict::Failed(e),
        };
        let why_reopen = match verdict {
            Verdict::Healthy => {
                report(&readiness, true, "");
                last_healthy_ms = now_ms();
                continue;
            }
            Verdict::Failed(e) => {
                report(
                    &readiness,
                    false,
                    &format!("the reply consumer failed: {e}"),
                );
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Verdict::Stale => {
                report(&readiness, false, HEARD_NOTHING);
                if !compat.reopens_silent_readers() || opened_at.elapsed() < stale_after {
                    continue;
                }
                log::warn!(
                    "the reply consumer has heard nothing from the brokers for {} ms; opening it again on a new connection",
                    stale_after.as_millis()
                );
                HEARD_NOTHING
            }
            Verdict::StartedOver(partitions) => {
                log::warn!(
                    "the reply topic's log started over on partition(s) {partitions:?} (topic re-created, broker restarted empty, or log truncated); opening the reply consumer again"
                );
                "the reply topic's log started over"
            }
        };
        metrics.reply_consumer_reopens.inc();
        report(&readiness, false, why_reopen);
        let start = Start::Resume {
            since_ms: last_healthy_ms - CLOCK_MARGIN_MS,
            left: Left::of(&consumer, &source.topic).await,
        };
        let old = std::mem::replace(
            &mut consumer,
            reopen(&source, start, &readiness, why_reopen).await,
        );
        close_in_background(old);
        watch = LogWatch::default();
        gaps = OffsetGaps::new(source.config.broker_compat);
        opened_at = Instant::now();
    }
}

/// After a poll: the verdict, and the lag per partition for `/metrics`.
///
/// On tansu every partition must have been fetched lately, and an end going down means a
/// log that started over. On Kafka a partition between leaders (a broker crashed, about
/// 9 s on KRaft) is only reported: its callers wait or get their `504 unknown`, while
/// every reply on the partitions that have leaders still reaches its caller, so the host
/// stays ready while any partition is fetched.
async fn look(
    consumer: &Consumer,
    watch: &mut LogWatch,
    compat: BrokerCompat,
    metrics: &GatewayMetrics,
) -> Verdict {
    let lag = consumer.lag().await;
    let fetched = |l: &krafka::consumer::PartitionLag| !l.stale && l.position.is_some();
    let fresh = if compat.reopens_silent_readers() {
        lag.values().all(fetched)
    } else {
        lag.values().any(fetched)
    };
    let views: Vec<PartitionView> = lag
        .iter()
        .map(|(tp, l)| PartitionView {
            partition: tp.partition,
            position: l.position,
            high_watermark: l.high_watermark,
        })
        .collect();
    metrics.set_reply_lag(
        lag.into_iter()
            .filter_map(|(tp, l)| Some((tp.partition, l.lag?))),
    );
    let started_over = if compat.end_going_down_is_restart() {
        watch.started_over(&views)
    } else {
        Vec::new()
    };
    match (started_over.is_empty(), fresh) {
        (false, _) => Verdict::StartedOver(started_over),
        (true, true) => Verdict::Healthy,
        (true, false) => Verdict::Stale,
    }
}

/// Opens the consumer again until it works (the brokers may still be on their way back),
/// positioned per `start`.
async fn reopen(
    source: &ReplySource,
    start: Start,
    readiness: &Readiness,
    why_not: &str,
) -> Consumer {
    let mut failures = 0u32;
    loop {
        match source.open(start.clone()).await {
            Ok(consumer) => {
                log::info!("the reply consumer is open again");
                return consumer;
            }
            Err(e) => {
                if failures == 0 {
                    log::warn!(
                        "cannot open the reply consumer again yet (retrying until it opens; payments are refused meanwhile): {e}"
                    );
                }
                failures += 1;
                report(readiness, false, why_not);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Closes a replaced consumer (its fetch sessions) without holding up the new one.
fn close_in_background(consumer: Consumer) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(RETRY_PAUSE, consumer.close()).await;
    });
}

/// Feeds one poll's verdict to readiness, logging each change of state once.
fn report(readiness: &Readiness, ok: bool, why_not: &str) {
    match readiness.observe(ok) {
        Some(Change::Lost) => {
            log::error!("not ready: {why_not}; payments are refused until it recovers")
        }
        Some(Change::Regained) => {
            log::info!("ready again: the reply consumer is reading replies")
        }
        None => {}
    }
}

/// How this gateway's replies are spelled: the correlation id header's name and the
/// dialects its flows speak.
struct Speech<'a> {
    id_header: &'a str,
    dialects: &'a [Dialect],
}

/// Delivers one reply record by its correlation id header. A record that cannot name a
/// waiter is counted and dropped; one that names a waiter but breaks the conventions is
/// counted and delivered, and its waiter answers `502`. A NestJS end marker (an answer's
/// closing record) is skipped: the answer came before it.
fn dispatch(
    registry: &Registry,
    metrics: &GatewayMetrics,
    speech: &Speech,
    record: ConsumerRecord,
) {
    let at = ConsumedAt::of(&record);
    let trace = LogField::of(record.header(traceparent::HEADER).flatten().map(|t| &t[..]));
    let id_header = speech.id_header;
    let id = record.header(id_header).flatten().cloned();
    let dialect = match reply_check::route(id.as_deref(), speech.dialects) {
        Ok(dialect) => dialect,
        Err(bad) => {
            metrics.bad_reply(bad);
            log::warn!(
                "reply at {at} dropped: {} ({id_header} header missing, null or not shaped like this gateway's ids) {trace}",
                bad.label(),
            );
            return;
        }
    };
    let Some(id) = id else { return };
    let header = |name: &str| record.header(name).flatten().map(|v| &v[..]);
    if dialect.is_end_marker(record.value.as_deref(), header) {
        return;
    }
    let error = dialect.error_of(header);
    if let Some(bad) = reply_check::content_defect(record.value.as_deref(), error.as_ref()) {
        metrics.bad_reply(bad);
        log::warn!(
            "reply at {at} correlation_id={} is malformed: {}; its caller gets a 502 {trace}",
            CorrelationId::from_wire(&id),
            bad.label()
        );
    }
    match registry.deliver(&id, to_reply(record)) {
        Delivery::Delivered => {}
        Delivery::Kept => log::info!(
            "late reply kept: correlation_id={} at {at}; its caller can GET /v1/requests/{0} {trace}",
            CorrelationId::from_wire(&id)
        ),
        Delivery::NoWaiter(_) => log::warn!(
            "reply with no waiter: correlation_id={} at {at} (a duplicate, not ours, or given up on too long ago); {} so far {trace}",
            CorrelationId::from_wire(&id),
            registry.unmatched()
        ),
    }
}

fn to_reply(record: ConsumerRecord) -> Reply {
    Reply {
        value: record.value.map(|v| v.to_vec()),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_ref().map(|v| v.to_vec())))
            .collect(),
        partition: record.partition,
        offset: record.offset,
    }
}
