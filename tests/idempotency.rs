//! The worker's memory of past payments: what it keeps (a digest and a place in the results
//! log, not the reply), for how long (the idempotency window), and what a repeat or a
//! redelivered request gets at each end of that window.

mod common;

use common::system::{System, system_config_with};
use common::*;
use krafka::Record;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn pay(system: &System, key: &str, order_id: &str) -> HttpResponse {
    system.gateway.pay_with(
        "approve",
        &[("idempotency-key", key)],
        &json!({"order_id": order_id, "amount": 700}),
    )
}

fn pg_calls(system: &System) -> u64 {
    system.pg.charges()["calls"].as_u64().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The worker keeps no reply in memory; a new worker process has read none at all. The
/// repeats' answers can only come from the records in the log. Twenty payments at once
/// put several results records in one produce batch, so most are read from inside one;
/// repeated at once, before the restart, many are inside the last batch of a partition.
#[test]
fn repeats_after_the_worker_restarted_get_the_first_answers_read_from_the_log() {
    let mut system = System::start(1, &[], 3000);
    let pay_all = |system: &System| -> Vec<serde_json::Value> {
        std::thread::scope(|s| {
            let calls: Vec<_> = (0..20)
                .map(|i| {
                    s.spawn(move || {
                        let answer = pay(system, &format!("restart-{i}"), &format!("R-{i}"));
                        answer.assert_status(200);
                        answer.json()
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        })
    };
    let first = pay_all(&system);
    // At once, from the same worker: the finals sit in the partitions' last batches, which
    // tansu's memory storage does not return when a fetch starts inside them.
    assert_eq!(pay_all(&system), first);

    let mut old = system.workers.pop().unwrap();
    old.daemon.signal("TERM");
    assert_eq!(old.daemon.wait_exit(Duration::from_secs(20)), Some(0));
    let fresh = system.spawn_worker();
    wait_assigned(&[&fresh], 3);

    let repeats = pay_all(&system);
    assert_eq!(repeats, first);
    assert_eq!(pg_calls(&system), 20, "the PG was called for a repeat");
    let log = fresh.daemon.log_text();
    assert_eq!(
        log.matches(": answered from the record, PG not called")
            .count(),
        20
    );
    wait_until("the keys counted", Duration::from_secs(5), || {
        fresh.metric("kreply_worker_results_keys") == Some(20.0)
    });
}

/// A request that waited in Kafka longer than the window (a worker down for days) may have
/// outlived its key, so charging it could charge twice: it is refused, not charged.
#[test]
fn a_request_older_than_the_idempotency_window_is_answered_but_not_charged() {
    let config = config_with_window(60_000);
    let system = System::start_with(1, &[], config);
    let kafka = system.broker.kafka();
    let envelope = json!({"operation": "approve", "body": {"order_id": "OLD-1", "amount": 5}});
    system.broker.runtime.block_on(async {
        let producer = kafka.producer().build().await.unwrap();
        let old = Record::new(REQUEST_TOPIC, envelope.to_string())
            .key("OLD-1")
            .timestamp(now_ms() - 120_000)
            .header("kafka_replyTopic", REPLY_LOCAL2)
            .header("kafka_correlationId", vec![3u8; 16])
            .header("kreply_idempotencyKey", "old-1");
        let _ack = producer.send(old).await.unwrap();
    });

    let replies = system.broker.read_topic(REPLY_LOCAL2, 1);
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.header_str("kreply_error"), Some("invalid-request"));
    let body: serde_json::Value = serde_json::from_slice(reply.value.as_deref().unwrap()).unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("idempotency window"),
        "{body}"
    );
    assert_eq!(pg_calls(&system), 0, "an expired request reached the PG");
    // A fresh one still goes through.
    pay(&system, "new-1", "N-1").assert_status(200);
    assert_eq!(pg_calls(&system), 1);
}

/// The window is what bounds the worker's memory: a key is dropped once it is older, and
/// only then may the same key be charged again (as docs/guarantees.md says).
#[test]
fn a_key_is_forgotten_only_after_the_window() {
    let window = Duration::from_secs(3);
    let system = System::start_with(1, &[], config_with_window(window.as_millis() as u64));
    let worker = &system.workers[0];
    let first = pay(&system, "window-1", "W-1");
    first.assert_status(200);
    pay(&system, "window-1", "W-1").assert_status(200);
    assert_eq!(
        pg_calls(&system),
        1,
        "a repeat within the window was charged"
    );

    // The window itself is what is under test: let it pass.
    std::thread::sleep(window + Duration::from_millis(500));
    pay(&system, "window-2", "W-2").assert_status(200);
    wait_until("the old key dropped", Duration::from_secs(5), || {
        worker.metric("kreply_worker_results_keys") == Some(1.0)
    });
    pay(&system, "window-1", "W-1").assert_status(200);
    assert_eq!(pg_calls(&system), 3, "a key past the window was still held");
}

/// The system config with an idempotency window of `window_ms`, and PG calls timing out
/// well within it.
fn config_with_window(window_ms: u64) -> std::path::PathBuf {
    system_config_with(1000, |c| {
        c["worker"]["idempotency_window_ms"] = json!(window_ms);
    })
}
