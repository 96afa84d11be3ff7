//! Multi-record produce batches on tansu's memory storage (production batching, issue 8).
//!
//! tansu 0.6.0 lists a partition's end (ListOffsets latest) as the first offset of its
//! newest batch + 1, and a fetch that starts inside a batch skips the rest of that batch
//! and returns the batches after it more than once. A consumer that starts at "latest"
//! starts inside a batch whenever the newest batch holds more than one record, and one
//! sent back to a record inside a batch skips it. These tests put such batches where the
//! gateway's reply consumer and the worker's group consumer start or are sent back, and
//! check that every caller gets its own reply, every request is settled once and nothing
//! old is read.

mod common;

use common::answers::{counter, metric};
use common::*;
use krafka::{ConsumerRecord, Record};
use serde_json::json;
use std::time::Duration;

/// Records in each partition's stale batch, written before anything of kreply starts. A
/// fetch from inside a batch repeats what follows until tansu's count of the records it
/// returned passes the next batch's first offset: with many records left in the stale
/// batch, a burst of a few dozen is returned more than once.
const STALE: usize = 40;
const PARTITIONS: i32 = 3;
/// Callers in one burst, all released at once.
const BURST: usize = 40;

/// Writes `records`, those of each partition in one produce batch.
fn write_in_batches(broker: &Broker, records: Vec<Record>) {
    let kafka = broker.kafka();
    broker.runtime.block_on(async {
        // A long linger: all of a partition's records leave together.
        let producer = kafka
            .producer()
            .linger(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let mut acks = Vec::new();
        for record in records {
            acks.push(producer.enqueue(record).await.unwrap());
        }
        for ack in acks {
            let _ack = ack.await.unwrap();
        }
        producer.close().await.unwrap();
    });
}

/// Writes `STALE` records to every partition of `topic`, each partition's in one batch,
/// and checks that tansu lists each partition's end inside that batch (the condition under
/// test: a consumer starting at "latest" starts there).
fn write_stale_batches(broker: &Broker, topic: &str, record: fn(String) -> Record) {
    let records = (0..PARTITIONS).flat_map(|partition| {
        (0..STALE).map(move |i| record(format!("STALE-{partition}-{i}")).partition(partition))
    });
    write_in_batches(broker, records.collect());
    assert_eq!(
        broker.end_offset(topic),
        i64::from(PARTITIONS),
        "tansu no longer lists the end of a {STALE}-record batch as its first offset + 1; \
         this test then no longer starts the consumers inside a batch"
    );
}

/// A request as the gateway writes it, answered on `reply_topic`, keyed and
/// idempotency-keyed by its order id.
fn request(order: String, reply_topic: &str) -> Record {
    let body = json!({"operation": "approve", "body": {"order_id": order, "amount": 1}});
    Record::new(REQUEST_TOPIC, body.to_string())
        .key(order.clone())
        .header("kafka_correlationId", random_id())
        .header("kafka_replyTopic", reply_topic.as_bytes().to_vec())
        .header("kreply_idempotencyKey", order)
}

fn random_id() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// A request for an order nobody waits for.
fn stale_request(order: String) -> Record {
    request(order, REPLY_LOCAL2)
}

/// A reply to a caller that is long gone.
fn stale_reply(order: String) -> Record {
    Record::new(REPLY_LOCAL2, json!({"order_id": order}).to_string())
        .key(order)
        .header("kafka_correlationId", random_id())
}

/// `BURST` payments at once, each with a key of its own; asserts each got its own
/// approval. The gateway and the worker linger, so the burst is produced in multi-record
/// batches both ways.
fn burst(gateway: &Gateway, phase: &str) {
    let barrier = std::sync::Barrier::new(BURST);
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..BURST)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let order = format!("B-{phase}-{i}");
                    barrier.wait();
                    let response = gateway.pay_with(
                        "approve",
                        &[("idempotency-key", &order), ("request-timeout", "20000")],
                        &json!({"order_id": order, "amount": 10}),
                    );
                    response.assert_status(200);
                    assert_eq!(response.json()["order_id"], order.as_str());
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    });
}

/// One more payment after a burst: its reply comes in a later poll than any record of
/// the burst, on the worker and on the gateway, so once it is answered every repeat the
/// burst could have caused has been counted.
fn sentinel(gateway: &Gateway, phase: &str) {
    let order = format!("S-{phase}");
    let response = gateway.pay_with(
        "approve",
        &[("idempotency-key", &order)],
        &json!({"order_id": order, "amount": 10}),
    );
    response.assert_status(200);
}

/// What must hold after `phases` bursts: each payment charged once, nothing stale read,
/// no request settled twice, no reply delivered twice or to nobody, no reopen.
fn assert_each_read_once(gateway: &Gateway, pg: &MockPg, worker: &Worker, phases: &[&str]) {
    let charges = pg.charges();
    let charged = charges["charges"].as_object().unwrap();
    for (key, times) in charged {
        assert!(
            !key.starts_with("STALE"),
            "a stale request was read: {charges}"
        );
        assert_eq!(times, 1, "{key} charged {times} times: {charges}");
    }
    assert_eq!(
        charged.len(),
        phases.len() * (BURST + 1),
        "not every payment was charged: {charges}"
    );
    let series = "kreply_worker_requests_total{result=\"repeat\"}";
    assert_eq!(
        counter(worker.metrics_addr, series),
        0.0,
        "the worker read a request twice; log:\n{}",
        worker.daemon.log_text()
    );
    assert_eq!(
        metric(gateway, "kreply_replies_without_waiter_total"),
        0.0,
        "a reply was read twice, or a stale one was read; log:\n{}",
        gateway.log_text()
    );
    assert_eq!(metric(gateway, "kreply_late_replies_kept_total"), 0.0);
    assert_eq!(
        metric(gateway, "kreply_reply_consumer_reopens_total"),
        0.0,
        "the reply consumer took a multi-record batch for a log that started over; log:\n{}",
        gateway.log_text()
    );
}

/// Both consumers start inside a multi-record batch (the gateway's reply consumer at
/// "latest", the worker's new group at `start_from: latest`), and a worker restarted with
/// SIGTERM resumes from the offsets its predecessor committed after multi-record batches.
#[test]
fn bursts_in_multi_record_batches_are_each_answered_once() {
    let broker = Broker::start();
    broker.create_standard_topics();
    write_stale_batches(&broker, REQUEST_TOPIC, stale_request);
    write_stale_batches(&broker, REPLY_LOCAL2, stale_reply);
    let config = config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
        c["worker"]["session_timeout_ms"] = json!(6000);
        // Records produced within 20 ms of each other share a batch.
        c["producer_linger_ms"] = json!(20);
    });
    let pg = MockPg::start(&["--latency-ms", "20"]);
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    let mut worker = Worker::spawn("batching-worker-1", &broker.addr, &pg, &config);
    wait_assigned(&[&worker], PARTITIONS as usize);

    burst(&gateway, "1");
    sentinel(&gateway, "1");
    assert_each_read_once(&gateway, &pg, &worker, &["1"]);

    worker.daemon.signal("TERM");
    assert_eq!(worker.daemon.wait_exit(Duration::from_secs(30)), Some(0));
    worker = Worker::spawn("batching-worker-2", &broker.addr, &pg, &config);
    wait_assigned(&[&worker], PARTITIONS as usize);

    burst(&gateway, "2");
    sentinel(&gateway, "2");
    assert_each_read_once(&gateway, &pg, &worker, &["1", "2"]);
}

/// The record keys of `records`, sorted.
fn keys(records: &[ConsumerRecord]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into())
        .collect();
    keys.sort();
    keys
}

/// A request whose reply cannot be sent sits in the middle of a multi-record batch: the
/// worker reads it again (from the batch's start, since tansu would skip a fetch from the
/// request itself and the rest of its batch) until its reply goes out, and answers the
/// requests around it once.
#[test]
fn a_request_read_again_inside_a_batch_is_answered_and_its_neighbours_once() {
    const LATER: &str = "payment_response_later";
    let broker = Broker::start();
    broker.create_standard_topics();
    let config = config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
        c["worker"]["session_timeout_ms"] = json!(6000);
    });
    let pg = MockPg::start(&[]);
    let worker = Worker::spawn("batching-reread-worker", &broker.addr, &pg, &config);
    wait_assigned(&[&worker], PARTITIONS as usize);

    // One batch on partition 0: A, then X, whose reply topic does not exist yet, then B.
    let batch = [("A", REPLY_LOCAL2), ("X", LATER), ("B", REPLY_LOCAL2)];
    let records = batch.map(|(order, to)| request(order.to_string(), to).partition(0));
    write_in_batches(&broker, records.to_vec());
    // The reply to X fails once the producer gave up waiting for the topic (30 s).
    worker.daemon.wait_for_log(
        "request at payment_request/0@1: reply to payment_response_later not acknowledged",
        Duration::from_secs(60),
    );
    broker.create_topics(&[LATER], 1);

    let mut later = Vec::new();
    wait_until("the reply to X", Duration::from_secs(60), || {
        later = broker.read_topic(LATER, 1);
        !later.is_empty()
    });
    assert_eq!(keys(&later), ["X"], "X answered other than once");
    assert_eq!(
        keys(&broker.read_topic(REPLY_LOCAL2, 2)),
        ["A", "B"],
        "the requests around X were answered other than once each; worker log:\n{}",
        worker.daemon.log_text()
    );
    let charges = pg.charges();
    assert_eq!(
        charges["charges"],
        json!({"A": 1, "X": 1, "B": 1}),
        "{charges}"
    );
}
