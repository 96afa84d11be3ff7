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
//! run concurrently and never wait for each other, up to `worker.concurrency` PG calls at
//! once, and the worker keeps polling while requests are at the PG, up to
//! `worker.max_held_requests` held (`pipeline.rs`). A partition's committed offset is the
//! end of its settled prefix: never past a request not settled. The Kafka side runs on one
//! Tokio thread (the work is waiting on the PG and the brokers, not computing); the PG
//! client keeps its connections on that thread too; the `/metrics` server does its I/O on
//! async-std.

mod answer;
mod chains;
mod commit;
mod fingerprint;
mod member_list;
mod metrics;
mod outcome;
mod partition_file;
mod pg_client;
mod pg_connections;
mod pipeline;
mod poll_loop;
mod race;
mod request;
mod results;
mod results_index;
mod results_layout;
mod settle;
mod settled_prefix;
mod slot;
mod stale_group;
mod startup;

pub(crate) use pg_client::charge_target;

use crate::config::ignored::{self, Role};
use crate::config::{Claim, Config};
use crate::error::StartupError;
use crate::kafka;
use crate::ops::notify::notify;
use crate::ops::signals;
use crate::wire::header_names::HeaderNames;
use crate::wire::record::OutgoingRecord;
use metrics::WorkerMetrics;
use pg_client::PgClient;
use results::ResultsStore;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What every request task shares.
pub(crate) struct Worker {
    metrics: Arc<WorkerMetrics>,
    producer: Arc<kafka::ProducerSession>,
    results: ResultsStore,
    pg: PgClient,
    pg_calls: Semaphore,
    /// How long an attempt can run: past it, an unfinished one is not waited for.
    attempt_limit: Duration,
    /// Whether the PG de-duplicates by idempotency key, so an attempt left in doubt may
    /// be settled by asking it again (`worker.pg_idempotent`).
    pg_idempotent: bool,
    /// Whether attempts claim a payment in the results log before the PG is called
    /// (`worker.claim`).
    claim: Claim,
    /// The routing headers' names, on requests and replies.
    names: HeaderNames,
}

impl Worker {
    /// Sends a reply and waits for its acknowledgement.
    async fn send(&self, record: OutgoingRecord) -> krafka::Result<()> {
        let handed_over = Instant::now();
        let _acknowledged = self.producer.send(kafka::to_krafka(record)).await?;
        let elapsed = handed_over.elapsed();
        self.metrics
            .produce_acked(metrics::Produced::Reply, elapsed);
        Ok(())
    }
}

/// Runs the worker until SIGTERM or SIGINT; returns early only on a startup failure.
pub fn run(config_path: &Path) -> Result<(), StartupError> {
    crate::ops::process::mark_start();
    let config = Config::load(config_path)?;
    ignored::log(&config, Role::Worker, config_path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the worker runtime: {e}")))?;
    // Before the runtime runs: the signal listener has a runtime of its own.
    let shutdown = signals::listen("worker")?;
    runtime.block_on(async {
        let (worker, consumer, mut group) =
            startup::start(&config, &config_path.display().to_string()).await?;
        let listen = config.worker.metrics_listen;
        metrics::serve(Arc::clone(&worker.metrics), listen).await.map_err(|e| {
            StartupError::new(format!(
                "the worker cannot serve /metrics on {listen} (set \"worker.metrics_listen\" or KREPLY_METRICS_LISTEN to a free address): {e}"
            ))
        })?;
        log::info!("startup: worker metrics on http://{listen}/metrics");
        let mut requests = poll_loop::Requests {
            consumer: &consumer,
            topic: &config.request_topic,
            group: &mut group,
            compat: config.broker_compat,
            max_held: config.worker.max_held_requests,
            drain_limit: worker.attempt_limit,
        };
        let signal = poll_loop::serve(Arc::new(worker), &mut requests, &shutdown).await?;
        notify("STOPPING=1");
        log::info!("worker: {signal}: the requests in progress are finished");
        log::info!("worker: stopping: leaving the group");
        if let Err(e) = consumer.close().await {
            log::warn!("worker: leaving the group: {e}");
        }
        Ok(())
    })
}
