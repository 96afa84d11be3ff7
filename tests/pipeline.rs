//! The pipelined worker: it keeps polling while earlier requests are at the PG, one
//! order's requests still settle in offset order, and a partition's committed offset never
//! passes a request that is not settled (`src/worker/pipeline.rs`, `chains.rs`,
//! `settled_prefix.rs`). The PG simulator holds `SLOW…` orders `--slow-ms` longer.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config, system_config_with};
use common::*;
use krafka::producer::murmur2;
use serde_json::json;
use std::time::{Duration, Instant};

/// How much longer the PG takes for a `SLOW…` order.
const SLOW: Duration = Duration::from_secs(2);

/// The request partition Kafka's partitioner gives `order_id` (3 partitions).
fn partition_of(order_id: &str) -> i32 {
    (murmur2(order_id.as_bytes()) & 0x7fff_ffff) as i32 % 3
}

/// A payment with a long enough wait; when its answer came.
fn pay_at(system: &System, operation: &str, order: &str) -> (u16, Instant) {
    let response = system.gateway.pay_with(
        operation,
        &[("request-timeout", "15000")],
        &json!({"order_id": order, "amount": 1}),
    );
    (response.status, Instant::now())
}

on_both_brokers!(one_order_waits_for_its_earlier_request_and_other_orders_pass_it);

/// Two requests of one order, the first slow at the PG: the second waits for it. Orders
/// sent while it is at the PG are answered before it: no batch holds them back.
fn one_order_waits_for_its_earlier_request_and_other_orders_pass_it(kind: BrokerKind) {
    let slow_ms = SLOW.as_millis().to_string();
    let system = System::start_kind(kind, 1, &["--slow-ms", &slow_ms], system_config(6000));
    let ((approve, approved), (cancel, cancelled), fast) = std::thread::scope(|s| {
        let first = s.spawn(|| pay_at(&system, "approve", "SLOW-1"));
        std::thread::sleep(Duration::from_millis(200));
        let second = s.spawn(|| pay_at(&system, "cancel", "SLOW-1"));
        std::thread::sleep(Duration::from_millis(200));
        let fast: Vec<(u16, Instant)> = (0..6)
            .map(|i| pay_at(&system, "approve", &format!("FAST-{i}")))
            .collect();
        (first.join().unwrap(), second.join().unwrap(), fast)
    });
    assert_eq!((approve, cancel), (200, 200));
    for (i, (status, answered)) in fast.iter().enumerate() {
        assert_eq!(*status, 200, "FAST-{i}");
        assert!(
            *answered < approved,
            "FAST-{i} waited for the slow order: answered after it"
        );
    }
    // The cancel's PG call began only once the approve was settled: it ends a whole
    // slow PG call later (run together, both would end at about the same time).
    let gap = cancelled.duration_since(approved);
    assert!(
        gap >= SLOW - Duration::from_millis(300),
        "the second request of SLOW-1 did not wait for the first: answered {gap:?} after it"
    );
    let charges = system.pg.charges();
    assert_eq!(charges["calls"], 8, "{charges}");
}

/// A slow request at offset N, faster ones after it on the same partition: the group's
/// committed offset stays at N until the slow one settles, then moves past all of them.
/// (On the Kafka-rules cluster, whose committed offsets a test can read.)
#[test]
fn the_committed_offset_never_passes_an_unsettled_request() {
    let slow_ms = SLOW.as_millis().to_string();
    let system = System::start_kind(
        BrokerKind::KafkaRules,
        1,
        &["--slow-ms", &slow_ms],
        system_config(6000),
    );
    let cluster = system.broker.cluster();
    let slow = "SLOW-C";
    let partition = partition_of(slow);
    let fast: Vec<String> = (0..)
        .map(|i| format!("FAST-C-{i}"))
        .filter(|order| partition_of(order) == partition)
        .take(4)
        .collect();
    let committed = || cluster.committed_offset("kreply-workers", REQUEST_TOPIC, partition);
    let slow_at = cluster.next_offset(REQUEST_TOPIC, partition).unwrap_or(0);

    std::thread::scope(|s| {
        let slow_payment = s.spawn(|| pay_at(&system, "approve", slow));
        wait_until("the slow request written", Duration::from_secs(10), || {
            cluster.next_offset(REQUEST_TOPIC, partition) > Some(slow_at)
        });
        for order in &fast {
            assert_eq!(pay_at(&system, "approve", order).0, 200, "{order}");
        }
        // Every fast request after it is settled; the slow one is still at the PG.
        assert!(!slow_payment.is_finished(), "the slow payment ended early");
        let at = committed();
        assert!(
            at.is_none_or(|at| at <= slow_at),
            "committed {at:?} past the unsettled request at {slow_at}"
        );
        assert_eq!(slow_payment.join().unwrap().0, 200);
    });
    let end = cluster.next_offset(REQUEST_TOPIC, partition).unwrap();
    assert_eq!(end, slow_at + 5);
    wait_until(
        "the commit past every settled request",
        Duration::from_secs(10),
        || committed() == Some(end),
    );
}

/// A worker SIGKILLed while it holds many requests at the PG (the pipeline holds far
/// more than one batch): each of their callers gets a definite answer and no key is
/// charged twice (an attempt cut off at the PG is answered `unknown` until in-doubt
/// attempts settle themselves), and the new worker answers new payments.
#[test]
fn a_worker_killed_with_many_requests_at_the_pg_charges_nothing_twice() {
    let mut system = System::start_kind(
        BrokerKind::Tansu,
        1,
        &["--latency-ms", "1500"],
        system_config(5000),
    );
    let pay = |order: &str| {
        let response = system.gateway.pay_with(
            "approve",
            &[("request-timeout", "25000")],
            &json!({"order_id": order, "amount": 1}),
        );
        (order.to_string(), response.status)
    };
    let mut successor = None;
    let (cut_off, after) = std::thread::scope(|s| {
        let callers: Vec<_> = (0..24)
            .map(|i| s.spawn(move || pay(&format!("K-{i}"))))
            .collect();
        let victim = &system.workers[0];
        wait_until("many PG calls at once", Duration::from_secs(20), || {
            victim
                .metric("kreply_worker_pg_calls_in_flight")
                .is_some_and(|calls| calls >= 12.0)
        });
        victim.daemon.signal("KILL");
        successor = Some(system.spawn_worker());
        let after: Vec<_> = (0..6).map(|i| pay(&format!("AFTER-{i}"))).collect();
        let cut_off: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        (cut_off, after)
    });
    system.workers.extend(successor);
    let charges = system.pg.charges();
    let charged = |order: &str| charges["charges"][format!("{order}:approve")].as_u64();
    for (order, status) in &cut_off {
        assert!(
            *status == 200 || *status == 504,
            "{order}: neither its reply nor an unknown outcome: {status}"
        );
        assert!(
            charged(order).unwrap_or(0) <= 1,
            "{order} charged twice: {charges}"
        );
    }
    for (order, status) in &after {
        assert_eq!(*status, 200, "{order}");
        assert_eq!(charged(order), Some(1), "{order}: {charges}");
    }
}

/// A rebalance while requests are at the PG: a third worker joins the group of two on the
/// Kafka-rules cluster while 18 payments are in flight, and partitions move with requests
/// held. A moved request is read again by its new owner, which finds the old owner's
/// attempt in the results store and answers from it: every caller gets its reply, and
/// the PG is called once per payment.
#[test]
fn a_rebalance_with_requests_at_the_pg_calls_the_pg_once_per_payment() {
    let mut system = System::start_kind(
        BrokerKind::KafkaRules,
        2,
        &["--latency-ms", "1500"],
        system_config(5000),
    );
    let mut joined = None;
    let statuses: Vec<(String, u16)> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..18)
            .map(|i| {
                let gateway = &system.gateway;
                s.spawn(move || {
                    let order = format!("R-{i}");
                    let response = gateway.pay_with(
                        "approve",
                        &[("request-timeout", "25000")],
                        &json!({"order_id": order, "amount": 1}),
                    );
                    (order, response.status)
                })
            })
            .collect();
        wait_until(
            "PG calls in flight on both workers",
            Duration::from_secs(20),
            || {
                system.workers.iter().all(|w| {
                    w.metric("kreply_worker_pg_calls_in_flight")
                        .is_some_and(|calls| calls >= 1.0)
                })
            },
        );
        let third = system.spawn_worker();
        let everyone: Vec<&Worker> = system.workers.iter().chain([&third]).collect();
        wait_assigned(&everyone, 3);
        joined = Some(third);
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    system.workers.extend(joined);
    for (order, status) in &statuses {
        assert_eq!(*status, 200, "{order}");
    }
    let charges = system.pg.charges();
    assert_eq!(
        charges["calls"], 18,
        "a payment was sent to the PG twice: {charges}"
    );
}

/// A burst far larger than the held bound, the PG slow: the worker holds at most
/// `max_held_requests` plus one poll (on Kafka's rules a poll brings at most
/// `max_held_requests`), so its held gauge never reaches twice the bound, yet it does fill
/// up to the bound; every caller is answered and each payment charged once.
#[test]
fn a_burst_never_holds_more_than_the_bound() {
    const MAX_HELD: usize = 8;
    const CALLERS: usize = 80;
    let config = system_config_with(5000, |c| {
        c["worker"]["concurrency"] = json!(4);
        c["worker"]["max_held_requests"] = json!(MAX_HELD);
    });
    let system = System::start_kind(BrokerKind::KafkaRules, 1, &["--latency-ms", "200"], config);
    let worker = &system.workers[0];
    let done = std::sync::atomic::AtomicBool::new(false);
    let (statuses, most_held) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut most = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if let Some(held) = worker.metric("kreply_worker_requests_held") {
                    most = most.max(held);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        let callers: Vec<_> = (0..CALLERS)
            .map(|i| {
                let gateway = &system.gateway;
                s.spawn(move || {
                    let response = gateway.pay_with(
                        "approve",
                        &[("request-timeout", "25000")],
                        &json!({"order_id": format!("B-{i}"), "amount": 1}),
                    );
                    response.status
                })
            })
            .collect();
        let statuses: Vec<u16> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Release);
        (statuses, sampler.join().unwrap())
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        most_held < (2 * MAX_HELD) as f64,
        "held {most_held} requests at once, bound {MAX_HELD} plus one poll of at most {MAX_HELD}"
    );
    assert!(
        most_held >= MAX_HELD as f64,
        "never filled up to the bound ({most_held} held at most): the burst did not test it"
    );
    let charges = system.pg.charges();
    assert_eq!(charges["calls"], CALLERS, "{charges}");
}
