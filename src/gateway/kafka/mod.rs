//! The gateway's Kafka side: krafka on a Tokio runtime of its own, on a thread of its own.
//!
//! krafka needs Tokio and the HTTP side runs on async-std; rather than mixing executors,
//! the Kafka side lives on one dedicated thread and the two meet only through channels
//! (records in, acknowledgements out) and the runtime-free correlation registry (replies).
//!
//! Startup is synchronous from the caller's view: [`start`] returns once the brokers
//! answered, the topics were checked and the reply consumer is positioned at the latest
//! offset of every partition it reads (all of this host's topic, or its one partition of
//! the shared topic), or with the one sentence that says why not. What the worker
//! shares with it (connecting, the payment producer) is in [`crate::kafka`].

mod log_watch;
mod producer;
mod reply_consumer;

pub(crate) use producer::{SendFailure, SendHandle};
#[cfg(test)]
pub(crate) use producer::{SendQueue, channel};

use crate::config::Config;
use crate::error::StartupError;
use crate::gateway::host_table::HostTable;
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::readiness::Readiness;
use crate::gateway::registry::Registry;
use crate::gateway::reply_route::ReplyRoute;
use crate::kafka::topics::{self, NeededTopic};
use crate::kafka::{ProducerSession, connect_brokers, log_connected, payment_producer};
use crate::wire::dialect::Dialect;
use reply_consumer::{ReplySource, Start};
use std::sync::Arc;
use std::sync::mpsc;

/// What the Kafka side needs to start.
pub(crate) struct KafkaSetup {
    pub(crate) config: Config,
    /// The config file's path, for error messages.
    pub(crate) config_path: String,
    pub(crate) route: ReplyRoute,
    /// The dialects the flows speak, which the reply consumer reads.
    pub(crate) dialects: Vec<Dialect>,
    /// Every host's partition must exist in a shared reply topic.
    pub(crate) hosts: HostTable,
    pub(crate) registry: Registry,
    pub(crate) readiness: Readiness,
    pub(crate) metrics: Arc<GatewayMetrics>,
}

/// Starts the Kafka thread and waits until it is ready or has failed.
pub(crate) fn start(setup: KafkaSetup) -> Result<SendHandle, StartupError> {
    let (started_tx, started_rx) = mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the Kafka runtime: {e}")))?;
    std::thread::Builder::new()
        .name("kreply-kafka".into())
        .spawn(move || runtime.block_on(serve(setup, started_tx)))
        .map_err(|e| StartupError::new(format!("cannot start the Kafka thread: {e}")))?;
    started_rx
        .recv()
        .unwrap_or_else(|_| Err(StartupError::new("the Kafka thread stopped during startup")))
}

/// Connects, checks, positions, reports back, then serves sends and replies forever.
async fn serve(setup: KafkaSetup, started: mpsc::Sender<Result<SendHandle, StartupError>>) {
    let parts = match connect(&setup).await {
        Ok(parts) => parts,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let (handle, queue) = producer::channel();
    setup.readiness.positioned();
    let _ = started.send(Ok(handle));
    tokio::spawn(producer::run(
        parts.producer,
        queue,
        Arc::clone(&setup.metrics),
    ));
    reply_consumer::run(
        parts.replies,
        parts.consumer,
        setup.registry,
        setup.readiness,
        setup.metrics,
    )
    .await;
}

/// The producer and the reply consumer each have a client (and so a connection) of their
/// own: a broker answers one request per connection at a time, so a produce sharing the
/// consumer's connection waited behind its fetch (ack p50 13 ms shared, 0.3 ms apart).
struct Connected {
    producer: Arc<ProducerSession>,
    replies: ReplySource,
    consumer: krafka::consumer::Consumer,
}

async fn connect(setup: &KafkaSetup) -> Result<Connected, StartupError> {
    let config = &setup.config;
    let kafka = connect_brokers(config, &setup.config_path, &config.client_id).await?;
    // Every flow's request topic, then the reply topic (the partitions to read), then
    // every flow's DLQ (named with its flows, when there are several).
    let request_topics = config.request_topics();
    let dead_letter_topics = config.dead_letter_topics();
    let mut needed: Vec<NeededTopic> = request_topics
        .iter()
        .map(|topic| NeededTopic::plain(topic, "request"))
        .collect();
    needed.push(NeededTopic::plain(&setup.route.topic, "reply"));
    needed.extend(
        dead_letter_topics
            .iter()
            .map(|(role, topic)| NeededTopic::plain(topic, role)),
    );
    let admin = kafka.admin();
    let partitions = topics::ensure(&admin, config, &setup.config_path, &needed).await;
    let _ = admin.close().await;
    let reply_partitions = &partitions?[request_topics.len()];
    let route = &setup.route;
    log::info!(
        "startup: topics present; reply topic {} has {} partition(s)",
        route.topic,
        reply_partitions.len()
    );
    let routing = config.reply_routing;
    routing.check_topic(&setup.hosts, &route.topic, reply_partitions)?;
    let metrics = Arc::clone(&setup.metrics);
    let renewed = move || metrics.producer_sessions_renewed.inc();
    let producer =
        payment_producer(kafka, config, config.max_timeout(), "gateway", renewed).await?;
    let replies = ReplySource {
        config: config.clone(),
        config_path: setup.config_path.clone(),
        topic: route.topic.clone(),
        partitions: route.partitions_to_read(reply_partitions),
        dialects: setup.dialects.clone(),
        fresh: std::sync::Mutex::default(),
    };
    let consumer = replies.open(Start::Latest).await?;
    log_connected(config, &[&config.client_id, &replies.client_id()]);
    Ok(Connected {
        producer,
        replies,
        consumer,
    })
}
