//! The reply consumer: reads this host's reply topic and hands each reply to its waiter.
//!
//! No consumer group, on purpose. A group would let the broker give a partition of this
//! host's replies to another member, which is exactly how replies got lost before. Every
//! partition is assigned by hand, because a worker picks the reply partition by hashing the
//! key over all of them. Reading starts at the latest offset: replies written before this
//! process started belong to requests that no longer wait, and there is no group offset to
//! resume from anyway.

use crate::correlation_id::CorrelationId;
use crate::error::StartupError;
use crate::gateway_metrics::GatewayMetrics;
use crate::kafka::Place;
use crate::readiness::Readiness;
use crate::record::headers;
use crate::registry::{Delivery, Registry, Reply};
use crate::reply_check;
use krafka::ConsumerRecord;
use krafka::consumer::Consumer;
use std::sync::Arc;
use std::time::Duration;

/// How long one `poll` may wait before the loop checks back in.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause after a failed poll, so a broker outage does not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Assigns every partition of `topic` and resolves each position to the current end.
///
/// Only when every position is known is the consumer "positioned": a reply written after
/// this returns will be read, whatever partition it lands on.
pub async fn position_at_latest(
    consumer: &Consumer,
    topic: &str,
    partitions: &[i32],
) -> Result<(), StartupError> {
    let failed = |e: krafka::KrafkaError| {
        StartupError::new(format!("could not assign the reply topic \"{topic}\": {e}"))
    };
    consumer
        .assign(topic, partitions.to_vec())
        .await
        .map_err(failed)?;
    for &partition in partitions {
        consumer
            .seek_to_end(topic, partition)
            .await
            .map_err(failed)?;
        let offset = consumer.position(topic, partition).await.ok_or_else(|| {
            StartupError::new(format!(
                "could not find the latest offset of reply topic \"{topic}\" partition {partition}; check the partition's leader on the brokers"
            ))
        })?;
        log::info!("startup: reply consumer at {topic}/{partition} offset {offset}");
    }
    Ok(())
}

/// Polls forever, delivering replies. Readiness follows whether replies can arrive: the
/// client retries a lost broker quietly, so a poll that "succeeds" is not enough; every
/// partition must also have been fetched recently (its watermark is not stale).
pub async fn run(
    consumer: Consumer,
    registry: Registry,
    readiness: Readiness,
    metrics: Arc<GatewayMetrics>,
) {
    loop {
        match consumer.poll(POLL_TIMEOUT).await {
            Ok(records) => {
                for record in records {
                    dispatch(&registry, &metrics, record);
                }
                let lag = consumer.lag().await;
                let fresh = lag.values().all(|l| !l.stale);
                metrics.set_reply_lag(
                    lag.into_iter()
                        .filter_map(|(tp, l)| Some((tp.partition, l.lag?))),
                );
                report(
                    &readiness,
                    fresh,
                    "the reply consumer has heard nothing from the brokers recently",
                );
            }
            Err(e) => {
                report(
                    &readiness,
                    false,
                    &format!("the reply consumer failed: {e}"),
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Sets readiness, logging each change once rather than every poll.
fn report(readiness: &Readiness, ok: bool, why_not: &str) {
    match (readiness.reads_replies(), ok) {
        (true, false) => {
            log::error!("not ready: {why_not}; payments are refused until it recovers")
        }
        (false, true) => log::info!("ready again: the reply consumer is reading replies"),
        _ => {}
    }
    readiness.set(ok);
}

/// Delivers one reply record by its `kafka_correlationId` header. A record that cannot
/// name a waiter is counted and dropped; one that names a waiter but breaks the
/// conventions is counted and delivered, and its waiter answers `502`.
fn dispatch(registry: &Registry, metrics: &GatewayMetrics, record: ConsumerRecord) {
    let at = Place::of(&record);
    let id = record.header(headers::CORRELATION_ID).flatten().cloned();
    if let Some(bad) = reply_check::unroutable(id.as_deref()) {
        metrics.bad_reply(bad);
        log::warn!(
            "reply at {at} dropped: {} ({} header missing, null or not 16 bytes)",
            bad.label(),
            headers::CORRELATION_ID
        );
        return;
    }
    let Some(id) = id else { return };
    let error_code = record.header(headers::ERROR).flatten();
    if let Some(bad) =
        reply_check::content_defect(record.value.as_deref(), error_code.map(|c| &c[..]))
    {
        metrics.bad_reply(bad);
        log::warn!(
            "reply at {at} correlation_id={} is malformed: {}; its caller gets a 502",
            CorrelationId::from_wire(&id),
            bad.label()
        );
    }
    match registry.deliver(&id, to_reply(record)) {
        Delivery::Delivered => {}
        Delivery::Kept => log::info!(
            "late reply kept: correlation_id={} at {at}; its caller can GET /v1/requests/{0}",
            CorrelationId::from_wire(&id)
        ),
        Delivery::NoWaiter(_) => log::warn!(
            "reply with no waiter: correlation_id={} at {at} (a duplicate, not ours, or given up on too long ago); {} so far",
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
