//! What the gateway and the worker share on the Kafka side: connecting (a client per
//! role, with the config's TLS and SASL: `security.rs`), the idempotent acks=all payment
//! producer, the topic check, and reading on tansu: multi-record batches, and batches
//! stored after later ones. The gateway's
//! Kafka thread is [`crate::gateway::kafka`]; the worker's loop is [`crate::worker`].

mod broker_compat;
pub(crate) mod metadata_keeper;
pub mod offset_gaps;
pub(crate) mod producer_session;
mod security;
pub(crate) mod topic_settings;
pub(crate) mod topics;
pub mod whole_batches;

pub use broker_compat::BrokerCompat;
pub(crate) use producer_session::ProducerSession;

use crate::config::Config;
use crate::error::StartupError;
use crate::wire::record::OutgoingRecord;
use krafka::{Kafka, KrafkaError, Record};
use std::sync::Arc;
use std::time::Duration;

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

/// Connects to the brokers named in `config`, as `client_id`: a failure is told as a
/// startup error naming the setting to check. It logs nothing: a process opens several
/// clients (and the gateway opens its reply client again at runtime), so it says once,
/// with [`log_connected`], how it reached the brokers and as which clients.
pub(crate) async fn connect_brokers(
    config: &Config,
    config_path: &str,
    client_id: &str,
) -> Result<Kafka, StartupError> {
    client(config, client_id)
        .await
        .map_err(|e| security::connect_failed(e, config, config_path))
}

/// The process's one startup line about the brokers, once startup has opened `clients`:
/// a line per client made one start read like several.
pub(crate) fn log_connected(config: &Config, clients: &[&str]) {
    log::info!(
        "startup: connected to {} ({}), following {} rules: clients {}",
        config.brokers.join(","),
        config.broker_security(),
        config.broker_compat.name(),
        clients.join(", ")
    );
}

/// A new client of the brokers named in `config`, as `client_id`: for a connection of its
/// own, or to connect again after the old one broke. Every krafka client kreply makes is
/// built here, so each one speaks the config's TLS and SASL.
pub(crate) async fn client(config: &Config, client_id: &str) -> Result<Kafka, KrafkaError> {
    let mut builder = Kafka::builder(config.brokers.join(",").as_str())
        .client_id(client_id)
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .allow_auto_create_topics(false)
        .metadata_max_age(metadata_keeper::METADATA_MAX_AGE);
    if let Some(security) = security::auth_config(config) {
        builder = builder.security(security);
    }
    builder.connect().await
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

/// The client library's record for one of ours.
pub fn to_krafka(record: OutgoingRecord) -> Record {
    let mut out = Record::new(record.topic, record.value)
        .key(record.key)
        .timestamp(record.timestamp_ms);
    if let Some(partition) = record.partition {
        out = out.partition(partition);
    }
    for (name, value) in record.headers {
        out = out.header(name, value);
    }
    out
}
