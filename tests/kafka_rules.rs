//! kreply on krafka's three-broker Kafka-rules cluster (`tests/common/cluster.rs`): the
//! group the way Kafka runs it, and the faults a Kafka cluster has and tansu does not.
//! Each test injects its fault and asserts what the caller sees and what was charged.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config, system_config_with};
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
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
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = std::sync::Arc::clone(&held);
    system
        .broker
        .cluster()
        .on(krafka::testing::ApiKey::Produce, move |request| {
            let worker = request.client_id.as_deref() == Some("kreply-worker-producer");
            if worker && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let late = krafka::testing::Control::Delay(Duration::from_secs(8));
                krafka::testing::Control::ApplyThen(Box::new(late))
            } else {
                krafka::testing::Control::Pass
            }
        });
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
    assert!(held.load(std::sync::atomic::Ordering::SeqCst));
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

/// Holds `control` for the next Produce that client `client_id` sends, once; every other
/// request passes.
fn once_for(broker: &Broker, client_id: &'static str, control: krafka::testing::Control) {
    let fired = std::sync::atomic::AtomicBool::new(false);
    broker
        .cluster()
        .on(krafka::testing::ApiKey::Produce, move |request| {
            let ours = request.client_id.as_deref() == Some(client_id);
            if ours && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                control.clone()
            } else {
                krafka::testing::Control::Pass
            }
        });
}

/// A request the leader appended and then answered with an error (or never answered) may
/// be read and charged: its caller hears the reply or `unknown`, never `503 not_sent`,
/// which would invite a retry that charges again.
#[test]
fn a_produce_answered_with_an_error_after_the_append_is_never_not_sent() {
    use krafka::error::ErrorCode as E;
    use krafka::testing::Control;
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
        once_for(
            &system.broker,
            "kreply-gateway",
            Control::ApplyThen(Box::new(fault)),
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
