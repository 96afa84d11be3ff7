//! Transactions on krafka's three-broker Kafka-rules cluster (`tests/common/cluster.rs`):
//! what kreply reads when the other side of the exchange writes transactionally.
//!
//! The fault injected is an aborted transaction. A transactional Spring responder (a
//! `@SendTo` listener in a Kafka transaction) can write a reply and then abort, and a
//! transactional requester can write requests and then abort; either way the records stay
//! in the log, fenced off only by an abort marker. On Kafka's rules
//! (`src/kafka/broker_compat.rs`) every kreply reader reads `read_committed`, so:
//!
//! - an aborted reply never reaches an HTTP caller: each caller gets the committed reply;
//! - an aborted request is never charged: only committed requests reach the PG, once each.
//!
//! Both tests first check that the aborted records really are in the log (the cluster's
//! `all_records` against `committed_records`), so a pass is not a fault never injected.
//! Read uncommitted, both fail: the callers get the aborted `ABORTED` bodies, and the
//! worker charges every aborted request.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config};
use common::*;
use krafka::producer::TransactionalProducer;
use krafka::{ConsumerRecord, Record};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// Writes `records` in one transaction of `producer`, each acknowledged before the
/// transaction ends (so an aborted one is in the log, not dropped from a buffer), and
/// commits it or aborts it.
async fn write_in_transaction(
    producer: &TransactionalProducer,
    records: Vec<Record>,
    commit: bool,
) -> krafka::Result<()> {
    producer.begin()?;
    for record in records {
        let _acknowledged = producer.send(record).await?;
    }
    if commit {
        producer.commit().await
    } else {
        producer.abort().await
    }
}

/// A transactional producer on `broker`, initialised with the coordinator.
fn transactional_producer(broker: &Broker, transactional_id: &str) -> TransactionalProducer {
    let kafka = broker.kafka();
    broker
        .runtime
        .block_on(kafka.producer().build_transactional(transactional_id))
        .expect("a transactional producer on the Kafka-rules cluster")
}

/// The JSON value of a record, or `null`.
fn value_json(record: &ConsumerRecord) -> Value {
    serde_json::from_slice(record.value.as_deref().unwrap_or_default()).unwrap_or(Value::Null)
}

// --- aborted replies -------------------------------------------------------------------

/// The body of the reply the responder writes and then aborts.
fn aborted_body(order_id: &Value) -> Value {
    json!({"status": "ABORTED", "order_id": order_id})
}

/// Starts a responder on the request topic that answers each request twice, in two
/// transactions one after the other: first a reply it aborts (`"status": "ABORTED"`), then
/// the echo reply it commits. Both carry the request's correlation id and go to the same
/// reply partition, the aborted one first, so a reader that read uncommitted would take it
/// for the answer. Runs until its handle is aborted or the broker's runtime stops.
fn start_transactional_responder(broker: &Broker) -> tokio::task::JoinHandle<()> {
    let kafka = broker.kafka();
    let consumer = broker
        .runtime
        .block_on(echo::request_consumer(&kafka, REQUEST_TOPIC))
        .unwrap();
    let producer = transactional_producer(broker, "kreply-test-transactional-responder");
    broker.runtime.spawn(async move {
        loop {
            let requests = consumer.poll(Duration::from_millis(100)).await.unwrap();
            // One transaction at a time: a transactional producer has one open at most.
            for request in requests {
                let committed = echo::reply_to(&request).unwrap();
                let order_id = value_json(&request)["body"]["order_id"].clone();
                let aborted = committed.clone().value(aborted_body(&order_id).to_string());
                write_in_transaction(&producer, vec![aborted], false)
                    .await
                    .expect("the aborted reply is written, then aborted");
                write_in_transaction(&producer, vec![committed], true)
                    .await
                    .expect("the committed reply is written and committed");
            }
        }
    })
}

/// `callers` threads each pay `each` orders through `gateway`; every (order id, answer).
fn pay_from_threads(gateway: &Gateway, callers: usize, each: usize) -> Vec<(String, HttpResponse)> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..callers)
            .map(|caller| {
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let order = format!("TXR-{caller}-{i}");
                            let body = json!({"order_id": order, "amount": 100 + i});
                            (order, gateway.pay("approve", &body))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

/// The gateway in front of the transactional responder: every caller gets the committed
/// reply, none the aborted one, and no reply is read without a waiter (an aborted reply
/// read and handed out would leave its committed twin waiter-less).
fn assert_aborted_replies_never_reach_a_caller(broker: &Broker, gateway: &Gateway) {
    let responder = start_transactional_responder(broker);
    let answers = pay_from_threads(gateway, 4, 5);
    responder.abort();

    assert_eq!(answers.len(), 20);
    for (order, response) in &answers {
        response.assert_status(200);
        let body = response.json();
        assert_ne!(
            body["status"], "ABORTED",
            "{order}: an aborted reply: {body}"
        );
        assert_eq!(body["status"], "APPROVED", "{order}: {body}");
        assert_eq!(body["order_id"], order.as_str(), "{body}");
        assert_eq!(body["operation"], "approve", "{body}");
    }

    // The fault was injected: 20 aborted replies sit in the log, and a read_committed
    // reader sees only the 20 committed ones.
    let cluster = broker.cluster();
    let aborted_in = |records: Vec<ConsumerRecord>| {
        records
            .iter()
            .filter(|r| value_json(r)["status"] == "ABORTED")
            .count()
    };
    assert_eq!(aborted_in(cluster.all_records(REPLY_LOCAL2).unwrap()), 20);
    let committed = cluster.committed_records(REPLY_LOCAL2).unwrap();
    assert_eq!(aborted_in(committed.clone()), 0);
    assert_eq!(committed.len(), 20);

    gateway.assert_every_reply_had_a_waiter();
}

/// A transactional responder writes each reply first in a transaction it aborts, then in
/// one it commits: callers get only the committed replies.
#[test]
fn aborted_replies_never_reach_a_caller() {
    let broker = Broker::start_kafka_rules();
    broker.create_standard_topics();
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config_with(|_| {}));
    gateway.wait_ready();
    assert_aborted_replies_never_reach_a_caller(&broker, &gateway);
}

// --- aborted requests ------------------------------------------------------------------

/// Where the worker answers the transactional requester: a topic no gateway reads, so
/// the replies show which requests the worker took.
const REQUESTER_REPLIES: &str = "payment_response_txn_requester";

/// A payment request as the gateway writes it (`src/wire/payment.rs`), on a fixed
/// partition: key = order id, the `{"operation", "body"}` envelope, and the reply route,
/// correlation id and idempotency key headers. The idempotency key is the order id.
fn payment_request(order: &str, partition: i32) -> Record {
    let envelope = json!({"operation": "approve", "body": {"order_id": order, "amount": 700}});
    Record::new(REQUEST_TOPIC, envelope.to_string())
        .partition(partition)
        .key(order.to_string())
        .header(
            "kafka_correlationId",
            uuid::Uuid::new_v4().as_bytes().to_vec(),
        )
        .header("kafka_replyTopic", REQUESTER_REPLIES)
        .header("kreply_idempotencyKey", order.to_string())
}

/// The order ids of `round`'s requests with `prefix`, one on each request partition.
fn orders(prefix: &str, round: usize) -> Vec<(String, i32)> {
    (0..3)
        .map(|partition| (format!("{prefix}-{round}-{partition}"), partition))
        .collect()
}

/// The order ids the requests in `records` carry, under `prefix`.
fn request_orders(records: Vec<ConsumerRecord>, prefix: &str) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| value_json(r)["body"]["order_id"].as_str().map(String::from))
        .filter(|order| order.starts_with(prefix))
        .collect()
}

/// A requester writes requests straight to the request topic, twice a transaction it
/// aborts followed by one it commits, a request of each on every partition (so on each
/// partition an aborted request comes before a committed one): only the committed ones
/// are charged, once each, and only they are answered.
fn assert_aborted_requests_are_never_charged(system: &System) {
    // The worker reads from "latest": one answered payment shows it is reading.
    let warm_up = json!({"order_id": "WARM-UP", "amount": 1});
    system.gateway.pay("approve", &warm_up).assert_status(200);

    let broker = &system.broker;
    broker.create_topics(&[REQUESTER_REPLIES], 3);
    let producer = transactional_producer(broker, "kreply-test-transactional-requester");
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    for round in 0..2 {
        for (prefix, commit, names) in [
            ("TXQ-ABORTED", false, &mut aborted),
            ("TXQ-COMMITTED", true, &mut committed),
        ] {
            let requests = orders(prefix, round);
            let records = requests
                .iter()
                .map(|(o, p)| payment_request(o, *p))
                .collect();
            broker
                .runtime
                .block_on(write_in_transaction(&producer, records, commit))
                .unwrap();
            names.extend(requests.into_iter().map(|(order, _)| order));
        }
    }

    // The fault was injected: the aborted requests are in the log, fenced off.
    let cluster = broker.cluster();
    let all = cluster.all_records(REQUEST_TOPIC).unwrap();
    assert_eq!(request_orders(all, "TXQ-ABORTED"), aborted);
    let visible = cluster.committed_records(REQUEST_TOPIC).unwrap();
    assert_eq!(request_orders(visible, "TXQ-"), committed);

    wait_until(
        "the committed requests charged",
        Duration::from_secs(20),
        || {
            let charges = system.pg.charges();
            committed.iter().all(|order| charges["charges"][order] == 1)
        },
    );
    // Every committed request answered once, no aborted one; `read_topic` also waits a
    // quiet second, time for a charge of an aborted request that trailed its partition's
    // committed one to land.
    let replies = broker.read_topic(REQUESTER_REPLIES, committed.len());
    let answered: Vec<String> = replies
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        answered.iter().cloned().collect::<BTreeSet<_>>(),
        committed,
        "answered: {answered:?}"
    );
    assert_eq!(answered.len(), committed.len(), "answered: {answered:?}");

    let charges = system.pg.charges();
    let mut expected: serde_json::Map<String, Value> = committed
        .iter()
        .map(|order| (order.clone(), json!(1)))
        .collect();
    expected.insert("WARM-UP:approve".into(), json!(1));
    assert_eq!(charges["charges"], Value::Object(expected), "{charges}");
    assert_eq!(charges["calls"], committed.len() + 1, "{charges}");
}

/// Payment requests written in aborted transactions are never charged; those in committed
/// ones are, once each.
#[test]
fn aborted_requests_are_never_charged() {
    let system = System::start_kind(BrokerKind::KafkaRules, 1, &[], system_config(3000));
    assert_aborted_requests_are_never_charged(&system);
}
