//! kreply on krafka's three-broker Kafka-rules cluster (`tests/common/cluster.rs`): the
//! group the way Kafka runs it, and the faults a Kafka cluster has and tansu does not.
//! Each test injects its fault and asserts what the caller sees and what was charged.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config, system_config_with};
use common::*;
use krafka::testing::{ApiKey, Control};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The partitions each worker last logged as its own, once they own every partition
/// between them with none owned twice.
fn wait_one_owner_each(workers: &[&Worker], limit: Duration) -> Vec<Vec<i32>> {
    let mut owned = Vec::new();
    wait_until("one owner for each partition", limit, || {
        owned = workers.iter().map(|w| w.assigned()).collect();
        let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
        let total: usize = owned.iter().map(Vec::len).sum();
        all.len() == 3 && total == 3 && owned.iter().all(|o| !o.is_empty())
    });
    owned
}

/// A payment of 7 whose order id is its idempotency key `key`, with 20 s to answer.
fn pay_keyed(system: &System, key: &str) -> HttpResponse {
    system.gateway.pay_with(
        "approve",
        &[("idempotency-key", key), ("request-timeout", "20000")],
        &json!({"order_id": key, "amount": 7}),
    )
}

/// Answers the next `api` request that client `client_id` sends as `control` says, once;
/// every other request passes. Whether it fired yet.
fn once_for(
    broker: &Broker,
    api: ApiKey,
    client_id: &'static str,
    control: Control,
) -> Arc<AtomicBool> {
    let fired = Arc::new(AtomicBool::new(false));
    let once = Arc::clone(&fired);
    broker.cluster().on(api, move |request| {
        let ours = request.client_id.as_deref() == Some(client_id);
        if ours && !once.swap(true, Ordering::SeqCst) {
            control.clone()
        } else {
            Control::Pass
        }
    });
    fired
}

/// Answers every `api` request of client `client_id` as `control` says for `window` from
/// the first one; how many it answered so.
fn for_a_while(
    broker: &Broker,
    api: ApiKey,
    client_id: &'static str,
    control: Control,
    window: Duration,
) -> Arc<AtomicU64> {
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    let first = std::sync::Mutex::new(None::<Instant>);
    broker.cluster().on(api, move |request| {
        if request.client_id.as_deref() != Some(client_id) {
            return Control::Pass;
        }
        let started = *first.lock().unwrap().get_or_insert_with(Instant::now);
        if started.elapsed() < window {
            count.fetch_add(1, Ordering::SeqCst);
            control.clone()
        } else {
            Control::Pass
        }
    });
    answered
}

/// Two and three workers reach one owner per partition and stay there: no request is
/// settled by two workers, no commit is refused. (The classic protocol on this cluster
/// keeps one member per join, so classic members leapfrog: KIP-848 is what settles.)
#[test]
fn workers_settle_to_one_owner_per_partition_and_stay() {
    let system = System::start_kind(BrokerKind::KafkaRules, 2, &[], system_config(3000));
    let two: Vec<&Worker> = system.workers.iter().collect();
    let settled = wait_one_owner_each(&two, Duration::from_secs(30));

    // A steady state: payments flow, and nobody's assignment moves.
    for i in 0..12 {
        let body = json!({"order_id": format!("G-{i}"), "amount": 1});
        system.gateway.pay("approve", &body).assert_status(200);
    }
    std::thread::sleep(Duration::from_secs(4));
    let later: Vec<Vec<i32>> = two.iter().map(|w| w.assigned()).collect();
    assert_eq!(later, settled, "the assignment moved in a steady state");

    let third = system.spawn_worker();
    let three: Vec<&Worker> = system.workers.iter().chain([&third]).collect();
    wait_one_owner_each(&three, Duration::from_secs(30));

    for worker in &three {
        let log = worker.daemon.log_text();
        for fault in [
            "IllegalGeneration",
            "FencedMemberEpoch",
            "stale group assignment",
        ] {
            assert!(!log.contains(fault), "{fault} in a worker's log:\n{log}");
        }
        assert!(
            log.contains("(Consumer protocol)"),
            "not on KIP-848:\n{log}"
        );
    }
    let charges = system.pg.charges();
    assert_eq!(charges["calls"], 12, "{charges}");
}

/// An acknowledgement held back 8 s (acks=all waiting on a slow follower) is waited for:
/// the payment is answered, charged once, and a repeat gets the same answer. On tansu's
/// rules a 4 s renewal failed the worker's `pending` although it was written, and every
/// repeat of the key answered `504 pg-unknown`.
#[test]
fn a_slow_acknowledgement_of_the_pending_record_is_waited_for() {
    let system = System::start_kind(
        BrokerKind::KafkaRules,
        1,
        &[],
        system_config_with(3000, |c| c["max_timeout_ms"] = json!(30_000)),
    );
    // Appended, then acknowledged 8 s late: acks=all waiting on a slow follower.
    let late = Control::ApplyThen(Box::new(Control::Delay(Duration::from_secs(8))));
    let held = once_for(
        &system.broker,
        ApiKey::Produce,
        "kreply-worker-producer",
        late,
    );
    let pay = || {
        system.gateway.pay_with(
            "approve",
            &[
                ("idempotency-key", "slow-ack-1"),
                ("request-timeout", "25000"),
            ],
            &json!({"order_id": "SA-1", "amount": 10}),
        )
    };
    let started = Instant::now();
    let first = pay();
    first.assert_status(200);
    assert!(held.load(Ordering::SeqCst));
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "the acknowledgement was not held"
    );
    let repeat = pay();
    repeat.assert_status(200);
    assert_eq!(repeat.json(), first.json());
    let charges = system.pg.charges();
    assert_eq!(charges["charges"], json!({"slow-ack-1": 1}), "{charges}");
    let log = system.workers[0].daemon.log_text();
    assert!(!log.contains("starting a new producer session"), "{log}");
}

/// A request the leader appended and then answered with an error (or never answered) may
/// be read and charged: its caller hears the reply or `unknown`, never `503 not_sent`,
/// which would invite a retry that charges again.
#[test]
fn a_produce_answered_with_an_error_after_the_append_is_never_not_sent() {
    use krafka::error::ErrorCode as E;
    let system = System::start_kind(BrokerKind::KafkaRules, 1, &[], system_config(3000));
    // krafka retries the retriable codes (the broker then de-duplicates the batch, so the
    // caller gets its reply); an unexpected server error is handed to kreply.
    let faults = [
        Control::Error(E::UnknownServerError),
        Control::Error(E::NotLeaderForPartition),
        Control::Error(E::RequestTimedOut),
        Control::Error(E::NotEnoughReplicasAfterAppend),
        Control::Error(E::KafkaStorageException),
        Control::Disconnect,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let what = format!("{fault:?}");
        let after_append = Control::ApplyThen(Box::new(fault));
        once_for(
            &system.broker,
            ApiKey::Produce,
            "kreply-gateway",
            after_append,
        );
        let order = format!("AT-{i}");
        let response = system.gateway.pay_with(
            "approve",
            &[("request-timeout", "10000")],
            &json!({"order_id": order, "amount": 1}),
        );
        system.broker.cluster().clear_hooks();
        match response.status {
            200 => assert_eq!(response.json()["order_id"], order.as_str()),
            // 504 reply-timeout, or 503 send-failed: either way `outcome: unknown`.
            503 | 504 => assert_eq!(response.json()["outcome"], "unknown", "{what}"),
            other => panic!(
                "{what}: {other} {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
        // Written once, so charged once, whatever the caller heard.
        let key = format!("{order}:approve");
        wait_until(&format!("{key} charged"), Duration::from_secs(10), || {
            system.pg.charges()["charges"][&key] == 1
        });
    }
    let charges = system.pg.charges();
    assert_eq!(charges["calls"], 6, "{charges}");
}

/// The results reader's partitions without a leader for 5 s (every fetch answered
/// `NOT_LEADER_OR_FOLLOWER`, as while a leader moves) while a payment reads its `pending`
/// back: on Kafka's rules the reader keeps asking, keeps its index, and the payment and a
/// repeat of an earlier one are both answered from the log. On tansu's rules 3 s without
/// a record were taken for a log that started over: the reader was reopened and the whole
/// topic read again from offset 0.
#[test]
fn a_stalled_results_reader_is_waited_for_and_keeps_its_index() {
    let system = System::start_kind(BrokerKind::KafkaRules, 1, &[], system_config(3000));
    let pay = |key: &str| pay_keyed(&system, key);
    let first = pay("stall-1");
    first.assert_status(200);

    let leaderless = Control::Error(krafka::error::ErrorCode::NotLeaderForPartition);
    let window = Duration::from_secs(5);
    let refused = for_a_while(
        &system.broker,
        ApiKey::Fetch,
        "kreply-worker-results",
        leaderless,
        window,
    );
    pay("stall-2").assert_status(200);
    assert!(refused.load(Ordering::SeqCst) > 0, "no fetch was refused");

    let repeat = pay("stall-1");
    repeat.assert_status(200);
    assert_eq!(repeat.json(), first.json());
    let charges = system.pg.charges();
    assert_eq!(
        charges["charges"],
        json!({"stall-1": 1, "stall-2": 1}),
        "{charges}"
    );
    let log = system.workers[0].daemon.log_text();
    assert!(!log.contains("may have started over"), "{log}");
    // The cluster has no DescribeConfigs: the worker says so, with the command, and starts.
    assert!(
        log.contains("do not report the settings of \"payment_results\"")
            && log.contains("kafka-configs.sh"),
        "{log}"
    );
}

/// Compaction removed a payment's final record (its place holds a later record now) while
/// the worker still knows the key: a repeat is answered "settled before, answer no longer
/// on record" (`504`, outcome unknown), and the PG is not called again. On Kafka's rules
/// the worker reads the one offset back; tansu's rules scan the partition instead.
#[test]
fn a_final_record_removed_by_compaction_is_answered_in_doubt_never_charged_again() {
    let system = System::start_kind(BrokerKind::KafkaRules, 1, &[], system_config(3000));
    let pay = |key: &str| pay_keyed(&system, key);
    pay("compacted-1").assert_status(200);
    let results = |key: &str| -> Vec<(i32, i64)> {
        let records = system
            .broker
            .cluster()
            .all_records("payment_results")
            .unwrap();
        records
            .iter()
            // A payment's results record key is [order id, idempotency key]; both are `key`.
            .filter(|r| r.key.as_deref() == Some(json!([key, key]).to_string().as_bytes()))
            .filter(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).contains("final")
            })
            .map(|r| (r.partition, r.offset))
            .collect()
    };
    let [(partition, offset)] = results("compacted-1")[..] else {
        panic!("one final record expected: {:?}", results("compacted-1"));
    };
    // Later records on the same partition, so a read from the removed offset meets one.
    let mut later = 0;
    for i in 0..40 {
        let key = format!("later-{i}");
        pay(&key).assert_status(200);
        later += results(&key)
            .iter()
            .filter(|(p, _)| *p == partition)
            .count();
        if later >= 2 {
            break;
        }
    }
    assert!(later >= 2, "no later final record on partition {partition}");
    let removed = system.broker.cluster().with_state(|state| {
        let log = &mut state.topics.get_mut("payment_results").unwrap().partitions
            [partition as usize]
            .log;
        let before = log.len();
        // A stored batch starts with its base offset; the final record's batch goes.
        log.retain(|batch| {
            let base = i64::from_be_bytes(batch[..8].try_into().unwrap());
            let count = i32::from_be_bytes(batch[57..61].try_into().unwrap()) as i64;
            !(base..base + count).contains(&offset)
        });
        before - log.len()
    });
    assert_eq!(removed, 1, "the final record's batch was not found");

    let repeat = pay("compacted-1");
    repeat.assert_status(504);
    let body = repeat.json();
    assert!(body.to_string().contains("no longer on record"), "{body}");
    let charges = system.pg.charges();
    assert_eq!(charges["charges"]["compacted-1"], 1, "{charges}");
}

/// Partitions added to both topics move orders between partitions, and with them the
/// race that keeps a payment from being charged twice. A worker started after that stops,
/// once given a partition written under the old count, with one sentence naming both
/// counts; it started before on the same topics. Partitions added to the results topic
/// alone stop it at startup: the two topics must have one count.
#[test]
fn a_results_topic_that_gained_partitions_stops_the_worker() {
    let mut system = System::start_kind(BrokerKind::KafkaRules, 1, &[], system_config(3000));
    system
        .gateway
        .pay("approve", &json!({"order_id": "L-1", "amount": 1}))
        .assert_status(200);
    let worker = &mut system.workers[0];
    worker.daemon.signal("TERM");
    assert_eq!(worker.daemon.wait_exit(Duration::from_secs(30)), Some(0));

    let cluster = system.broker.cluster();
    assert_eq!(cluster.add_partitions("payment_results", 5), 2);
    let (ok, stderr) = start_worker(&system);
    assert!(!ok, "the worker started: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_holds(
        &stderr,
        &[
            "\"payment_request\" has 3 partitions",
            "\"payment_results\" has 5",
            "same count",
        ],
    );

    assert_eq!(cluster.add_partitions(REQUEST_TOPIC, 5), 2);
    let (ok, stderr) = start_worker(&system);
    assert!(!ok, "the worker served: {stderr}");
    assert_holds(
        &stderr,
        &[
            "\"payment_results\" has 5 partitions",
            "when it had 3",
            "worker.results_topic",
        ],
    );
}

/// Runs a worker on `system`'s config to its exit: whether it succeeded, and its stderr.
fn start_worker(system: &System) -> (bool, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    run_kreply(
        &["worker", "--config", system.config.to_str().unwrap()],
        &[
            ("KREPLY_BROKERS", &system.brokers),
            ("KREPLY_PG_URL", &system.pg.url),
            ("KREPLY_METRICS_LISTEN", &metrics),
        ],
    )
}
