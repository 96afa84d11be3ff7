//! A Spring-style echo worker: answers each request the way `@KafkaListener` + `@SendTo`
//! would, with the correlation id bytes echoed, to the topic named in `kafka_replyTopic`
//! (and the partition in `kafka_replyPartition`, when there is one), keyed by the request
//! key. The gateway tests use it to answer without a real worker.

use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, Kafka, Record};
use std::time::Duration;

/// A group-less consumer on every partition of `topic`, positioned at its end. (A group
/// join takes ~10 s on tansu; a test responder needs none.) On tansu's memory storage the
/// end can lie inside a batch, and the first fetch from there may return a request twice:
/// a poll hands out everything fetched, so [`drop_repeats`](kreply::kafka::whole_batches)
/// on each poll leaves every request once.
pub async fn request_consumer(kafka: &Kafka, topic: &str) -> krafka::Result<Consumer> {
    consumer_at_end(kafka, topic, Duration::from_millis(10)).await
}

/// [`request_consumer`] with a fetch wait of the caller's (the benchmark's floor uses
/// kreply's `fetch_max_wait_ms`), for requests or replies alike.
pub async fn consumer_at_end(
    kafka: &Kafka,
    topic: &str,
    fetch_max_wait: Duration,
) -> krafka::Result<Consumer> {
    let consumer = kafka
        .consumer_without_group()
        .auto_offset_reset(AutoOffsetReset::Latest)
        .fetch_max_wait(fetch_max_wait)
        .max_poll_records(-1)
        .build()
        .await?;
    let meta = consumer.fetch_metadata(Some(topic)).await?;
    let partitions: Vec<i32> = meta
        .topics
        .iter()
        .flat_map(|t| t.partitions_iter().map(|p| p.partition))
        .collect();
    consumer.assign(topic, partitions.clone()).await?;
    for partition in partitions {
        consumer.seek_to_end(topic, partition).await?;
        consumer.position(topic, partition).await;
    }
    Ok(consumer)
}

/// The reply to one request, or why the request cannot be answered.
pub fn reply_to(request: &ConsumerRecord) -> Result<Record, String> {
    let reply_topic = request
        .header_str("kafka_replyTopic")
        .ok_or("no kafka_replyTopic header")?;
    let id = request
        .header("kafka_correlationId")
        .flatten()
        .ok_or("no kafka_correlationId header")?;
    let envelope: serde_json::Value =
        serde_json::from_slice(request.value.as_deref().unwrap_or_default())
            .map_err(|e| format!("value is not JSON: {e}"))?;
    let body = serde_json::json!({
        "status": "APPROVED",
        "operation": envelope["operation"],
        "order_id": envelope["body"]["order_id"],
        "amount": envelope["body"]["amount"],
    });
    let reply = Record::new(reply_topic, body.to_string())
        .key(request.key.clone().unwrap_or_default())
        .header("kafka_correlationId", id.clone());
    Ok(match request.header("kafka_replyPartition").flatten() {
        Some(bytes) => {
            let partition = bytes[..].try_into().map_err(|_| "partition not 4 bytes")?;
            reply.partition(i32::from_be_bytes(partition))
        }
        None => reply,
    })
}
