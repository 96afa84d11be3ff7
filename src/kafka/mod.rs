//! The Kafka side: krafka on a Tokio runtime of its own, on a thread of its own.
//!
//! krafka needs Tokio and the HTTP side runs on async-std; rather than mixing executors,
//! the Kafka side lives on one dedicated thread and the two meet only through channels
//! (records in, acknowledgements out) and the runtime-free correlation registry (replies).
//!
//! Startup is synchronous from the caller's view: [`start`] returns once the brokers
//! answered, the topics were checked and the reply consumer is positioned at the latest
//! offset of every partition, or with the one sentence that says why not.

mod log_watch;
pub(crate) mod metadata_keeper;
mod producer;
pub(crate) mod producer_session;
mod reply_consumer;
pub(crate) mod topics;
pub mod whole_batches;

pub(crate) use producer::{SendFailure, SendHandle, to_krafka};
#[cfg(test)]
pub(crate) use producer::{SendQueue, channel};
pub(crate) use producer_session::ProducerSession;

use crate::config::Config;
use crate::error::StartupError;
use crate::gateway_metrics::GatewayMetrics;
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::reply_route::ReplyRoute;
use krafka::{Kafka, KrafkaError};
use reply_consumer::{ReplySource, Start};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use topics::NeededTopic;

/// What the Kafka side needs to start.
pub(crate) struct KafkaSetup {
    pub(crate) config: Config,
    /// The config file's path, for error messages.
    pub(crate) config_path: String,
    pub(crate) route: ReplyRoute,
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

/// Where a consumed record sits, shown as `topic/partition@offset` in log lines. Built
/// for every record but formatted only when a line is logged, so it costs no allocation
/// on the reply path.
pub(crate) struct ConsumedAt {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl ConsumedAt {
    pub(crate) fn of(record: &krafka::ConsumerRecord) -> ConsumedAt {
        ConsumedAt {
            topic: Arc::clone(&record.topic),
            partition: record.partition,
            offset: record.offset,
        }
    }
}

impl std::fmt::Display for ConsumedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Connects to the brokers named in `config`, as `client_id`, at startup: a failure is
/// told as a startup error naming the setting to check.
pub(crate) async fn connect_brokers(
    config: &Config,
    config_path: &str,
    client_id: &str,
) -> Result<Kafka, StartupError> {
    let brokers = config.brokers.join(",");
    let kafka = client(config, client_id).await.map_err(|e| {
        StartupError::new(format!(
            "cannot reach the Kafka brokers {brokers} (check \"brokers\" in {config_path} or KREPLY_BROKERS): {e}"
        ))
    })?;
    log::info!("startup: connected to {brokers}");
    Ok(kafka)
}

/// A new client of the brokers named in `config`, as `client_id`: for a connection of its
/// own, or to connect again after the old one broke.
pub(crate) async fn client(config: &Config, client_id: &str) -> Result<Kafka, KrafkaError> {
    Kafka::builder(config.brokers.join(",").as_str())
        .client_id(client_id)
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .allow_auto_create_topics(false)
        .metadata_max_age(metadata_keeper::METADATA_MAX_AGE)
        .connect()
        .await
}

/// The idempotent acks=all producer every payment record goes through, on `kafka`;
/// see [`ProducerSession::open`] for `deliver_within`.
pub(crate) async fn payment_producer(
    kafka: Kafka,
    config: &Config,
    deliver_within: Duration,
    what: &'static str,
    renewed: impl Fn() + Send + Sync + 'static,
) -> Result<Arc<ProducerSession>, StartupError> {
    ProducerSession::open(kafka, config, deliver_within, what, renewed)
        .await
        .map_err(|e| {
            StartupError::new(format!(
                "cannot start the idempotent acks=all producer: {e}"
            ))
        })
}

async fn connect(setup: &KafkaSetup) -> Result<Connected, StartupError> {
    let config = &setup.config;
    let kafka = connect_brokers(config, &setup.config_path, &config.client_id).await?;
    let needed = [
        NeededTopic::plain(&config.request_topic, "request"),
        NeededTopic::plain(&setup.route.topic, "reply"),
        NeededTopic::plain(&config.dlq_topic, "dead-letter"),
    ];
    let admin = kafka.admin();
    let partitions = topics::ensure(&admin, config, &setup.config_path, &needed).await;
    let _ = admin.close().await;
    let reply_partitions = &partitions?[1];
    log::info!(
        "startup: topics present; reply topic {} has {} partition(s)",
        setup.route.topic,
        reply_partitions.len()
    );
    let metrics = Arc::clone(&setup.metrics);
    let renewed = move || metrics.producer_sessions_renewed.inc();
    let producer =
        payment_producer(kafka, config, config.max_timeout(), "gateway", renewed).await?;
    let replies = ReplySource {
        config: config.clone(),
        config_path: setup.config_path.clone(),
        topic: setup.route.topic.clone(),
        partitions: reply_partitions.clone(),
    };
    let consumer = replies.open(Start::Latest).await?;
    Ok(Connected {
        producer,
        replies,
        consumer,
    })
}
