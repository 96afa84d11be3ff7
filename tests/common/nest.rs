//! NestJS on the wire, for the dialect tests: a requester that asks the way
//! `ClientKafka.send` does (a UUID string as `kafka_correlationId`, the reply partition as
//! decimal digits), and a responder that answers the way `ServerKafka` does (the string id
//! echoed, `kafka_nest-is-disposed`, an error in `kafka_nest-err`, and the reply sent to
//! the partition `kafka_replyPartition` names, as its `assignReplyPartition` does).

use super::*;
use krafka::Record;

/// Sends one NestJS-style request for `envelope` to `topic`, and returns the first reply
/// that comes back on `reply_topic` (read on every partition, so a reply on the wrong one
/// is seen too).
pub fn ask(
    broker: &Broker,
    topic: &str,
    reply_topic: &str,
    reply_partition: i32,
    id: &str,
    envelope: &serde_json::Value,
) -> ConsumerRecord {
    let kafka = broker.kafka();
    broker.runtime.block_on(async {
        let replies = echo::consumer_at_end(&kafka, reply_topic, Duration::from_millis(10))
            .await
            .unwrap();
        let producer = kafka.producer().build().await.unwrap();
        let request = Record::new(topic, envelope.to_string())
            .header("kafka_correlationId", id.as_bytes().to_vec())
            .header("kafka_replyTopic", reply_topic.as_bytes().to_vec())
            .header(
                "kafka_replyPartition",
                reply_partition.to_string().into_bytes(),
            );
        let _ack = producer.send(request).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut records = replies.poll(Duration::from_millis(200)).await.unwrap();
            if !records.is_empty() {
                return records.remove(0);
            }
        }
        panic!("no reply to NestJS request {id} on {reply_topic}");
    })
}

/// What a NestJS handler does with a payment: `DECLINE…` throws
/// `new RpcException({code: "declined", message})`, `BOOM…` throws a plain `Error` (the
/// exception filter sends `{"status":"error","message":"Internal server error"}`), and
/// anything else is answered with its order id.
fn nest_reply(request: &ConsumerRecord) -> Record {
    let topic = request.header_str("kafka_replyTopic").unwrap();
    let id = request.header("kafka_correlationId").flatten().unwrap();
    let envelope: serde_json::Value =
        serde_json::from_slice(request.value.as_deref().unwrap()).unwrap();
    let order_id = envelope["body"]["order_id"].as_str().unwrap_or_default();
    let err = if order_id.starts_with("DECLINE") {
        Some(r#"{"code":"declined","message":"card limit reached"}"#)
    } else if order_id.starts_with("BOOM") {
        Some(r#"{"status":"error","message":"Internal server error"}"#)
    } else {
        None
    };
    let value = match err {
        Some(_) => String::new(),
        None => serde_json::json!({"status": "APPROVED", "order_id": order_id}).to_string(),
    };
    let reply = Record::new(topic, value)
        .header("kafka_correlationId", id.to_vec())
        .header("kafka_nest-is-disposed", vec![0]);
    // `ServerKafka.assignReplyPartition`: `partition = parseFloat(replyPartition)` when the
    // header is there; without it, the producer's partitioner picks.
    let reply = match request.header_str("kafka_replyPartition") {
        Some(digits) => reply.partition(digits.parse().expect("a decimal reply partition")),
        None => reply,
    };
    match err {
        Some(err) => reply.header("kafka_nest-err", err.as_bytes().to_vec()),
        None => reply,
    }
}

impl Broker {
    /// A NestJS-style server on the request topic; remembers each request it saw.
    pub fn nest_server(&self) -> Responder {
        self.replying(Duration::ZERO, nest_reply)
    }
}
