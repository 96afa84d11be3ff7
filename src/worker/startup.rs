//! The worker's startup: connect (a client per role), check the topics, read the results
//! store, join the group. Every failure is a one-sentence startup error.

use super::Worker;
use super::member_list::MemberList;
use super::metrics::WorkerMetrics;
use super::pg_client::PgClient;
use super::results::ResultsStore;
use super::stale_group::{self, Rounds, StaleGroup};
use crate::config::{Claim, Config, StartFrom};
use crate::error::StartupError;
use crate::kafka::{self, topic_settings, topics, topics::NeededTopic};
use krafka::consumer::{AutoOffsetReset, Consumer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Beyond the PG timeout, how long an attempt may take to put its result on record.
const RECORDING_MARGIN: Duration = Duration::from_secs(5);
/// Bytes one fetch of requests may bring: a few hundred requests, about krafka's default
/// of 500 records a poll, now that a poll hands out everything fetched.
const FETCH_MAX_BYTES: i32 = 128 * 1024;
/// The clients startup opens, in order: the group consumer's (and the topic check's), the
/// producer's, and the results reader's.
const WORKER_CLIENTS: [&str; 3] = [
    "kreply-worker",
    "kreply-worker-producer",
    "kreply-worker-results",
];

pub(super) async fn start(
    config: &Config,
    config_path: &str,
) -> Result<(Worker, Consumer, StaleGroup), StartupError> {
    let settings = &config.worker;
    let kafka = kafka::connect_brokers(config, config_path, WORKER_CLIENTS[0]).await?;
    let admin = kafka.admin();
    let needed = [
        NeededTopic::plain(&config.request_topic, "request"),
        NeededTopic::compacted(&settings.results_topic, "results"),
    ];
    let mut partitions = topics::ensure(&admin, config, config_path, &needed).await?;
    let attempt_limit = Duration::from_millis(settings.pg_timeout_ms) + RECORDING_MARGIN;
    let results_topic = &settings.results_topic;
    topic_settings::check_results(&admin, config.broker_compat, results_topic, attempt_limit)
        .await?;
    let results_partitions = partitions.swap_remove(1);
    let request_partitions = partitions.swap_remove(0).len();
    co_partitioned(config, request_partitions, results_partitions.len())?;
    state_dir_usable(&settings.state_dir)?;
    let pg = PgClient::new(
        &settings.pg_url,
        Duration::from_millis(settings.pg_timeout_ms),
        settings.concurrency,
    )?;
    // Replies and results records have no caller deadline; 30 s bounds a stuck send. The
    // producer has a client of its own, so its sends never wait behind a fetch.
    let metrics = Arc::new(WorkerMetrics::default());
    metrics.pg_concurrency.set(settings.concurrency as i64);
    let producing = kafka::connect_brokers(config, config_path, WORKER_CLIENTS[1]).await?;
    let renewals = Arc::clone(&metrics);
    let producer = kafka::payment_producer(
        producing,
        config,
        Duration::from_secs(30),
        "worker",
        move || renewals.producer_sessions_renewed.inc(),
    )
    .await?;
    // The results reader too, like every consumer: a broker serves one request per
    // connection at a time, so a read-back would otherwise wait behind the group
    // consumer's fetches, heartbeats and commits.
    let reading = kafka::connect_brokers(config, config_path, WORKER_CLIENTS[2]).await?;
    kafka::log_connected(config, &WORKER_CLIENTS);
    let results = ResultsStore::open(
        &reading,
        config,
        results_partitions.len(),
        producer.clone(),
        Arc::clone(&metrics),
    )
    .await
    .map_err(|e| {
        StartupError::new(format!(
            "cannot read the results topic \"{}\": {e}",
            settings.results_topic
        ))
    })?;
    // The group consumer's client reads only the request topic; the results reader keeps
    // its own client's metadata fresh (`results.rs`).
    kafka::metadata_keeper::keep_fresh(&kafka, vec![config.request_topic.clone()])
        .await
        .map_err(|e| StartupError::new(format!("cannot start the metadata refresher: {e}")))?
        .for_good();
    let session = Duration::from_millis(settings.session_timeout_ms);
    let rounds = Arc::new(Rounds::default());
    let compat = config.broker_compat;
    let consumer = kafka
        .consumer(settings.group_id.as_str())
        .group_protocol(compat.group_protocol())
        .isolation_level(compat.isolation())
        .enable_auto_commit(false)
        .session_timeout(session)
        .heartbeat_interval(session / 3)
        .rebalance_listener(Arc::clone(&rounds))
        .fetch_max_wait(Duration::from_millis(config.fetch_max_wait_ms))
        // Held requests stay bounded: on Kafka a poll brings at most `max_held_requests`.
        .max_poll_records(compat.poll_records_cap(config.worker.max_held_requests))
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
        "startup: worker in group {} ({:?} protocol) on {}, PG {} ({}; claim by {})",
        settings.group_id,
        compat.group_protocol(),
        config.request_topic,
        settings.pg_url,
        if settings.pg_idempotent {
            "de-duplicates by key: payments left in doubt are asked again"
        } else {
            "does not de-duplicate: payments left in doubt stay unknown"
        },
        match settings.claim {
            Claim::Log => "the results log",
            Claim::Pg => "the PG",
        }
    );
    log::info!(
        "startup: {}",
        capacity(settings.concurrency, settings.pg_timeout_ms)
    );
    let pg_calls = Semaphore::new(settings.concurrency);
    let members = compat.watches_stale_group().then(|| {
        MemberList::watch(
            admin,
            config.clone(),
            settings.group_id.clone(),
            stale_group::check_interval(session),
        )
    });
    let group = StaleGroup::new(members, request_partitions, session, rounds);
    Ok((
        Worker {
            metrics,
            producer,
            results,
            pg,
            pg_calls,
            attempt_limit,
            pg_idempotent: settings.pg_idempotent,
            claim: settings.claim,
            names: config.header_names.clone(),
        },
        consumer,
        group,
    ))
}

/// The state directory exists (created if not) and takes files: the partition files are
/// opened only when the group gives partitions, long after a unit counts as started.
fn state_dir_usable(dir: &Path) -> Result<(), StartupError> {
    let probe = dir.join(".kreply-write-check");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            StartupError::new(format!(
                "the worker's state directory {} cannot be written ({e}): point \"worker.state_dir\" (or KREPLY_STATE_DIR) at a directory this user owns; under systemd the unit's StateDirectory= makes /var/lib/kreply",
                dir.display()
            ))
        })
}

/// A payment's records go to the results partition numbered like its request's
/// (`slot.rs`): the two topics need the same partition count.
fn co_partitioned(config: &Config, requests: usize, results: usize) -> Result<(), StartupError> {
    if requests == results {
        return Ok(());
    }
    Err(StartupError::new(format!(
        "the request topic \"{}\" has {requests} partitions and the results topic \"{}\" has {results}: a payment's results go to the partition numbered like its request's, so both need the same count; create \"worker.results_topic\" with {requests} partitions (a new topic: the old one's answers are then forgotten)",
        config.request_topic, config.worker.results_topic
    )))
}

/// What `concurrency` PG calls at once allow, by Little's law (calls in flight = rate x
/// latency): the rate when every call takes the whole PG timeout, and at 200 ms a call.
fn capacity(concurrency: usize, pg_timeout_ms: u64) -> String {
    let per_second = |latency_ms: u64| concurrency as u64 * 1000 / latency_ms.max(1);
    format!(
        "up to {concurrency} PG calls at once: at least {} payments/s while calls take the whole PG timeout ({pg_timeout_ms} ms), {} at 200 ms a call; raise \"worker.concurrency\" to rate x latency for more",
        per_second(pg_timeout_ms),
        per_second(200)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacity_follows_littles_law() {
        let line = super::capacity(256, 3000);
        assert!(line.contains("at least 85 payments/s"), "{line}");
        assert!(line.contains("1280 at 200 ms"), "{line}");
    }
}
