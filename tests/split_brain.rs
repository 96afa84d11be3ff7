//! Split brain: two workers settle the same request at once (a zombie worker past its
//! session, or tansu forming a new generation before the old owner let go). The first
//! `pending` in the results log wins; the other attempt must not call the PG, and answers
//! with the winner's record.
//!
//! Made deterministic with two workers in different consumer groups on the same request
//! and results topics: both settle every request. Real tansu, real processes.

mod common;

use common::system::{System, system_config_with};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Generous: a loser waits for the winner, which waits for the PG.
const CALLER_TIMEOUT: &str = "30000";

fn pay(gateway: &Gateway, key: &str, order: &str) -> HttpResponse {
    gateway.pay_with(
        "approve",
        &[
            ("idempotency-key", key),
            ("request-timeout", CALLER_TIMEOUT),
        ],
        &json!({"order_id": order, "amount": 100}),
    )
}

/// The worker's count of `series`, 0 while it has none.
fn count(worker: &Worker, series: &str) -> f64 {
    worker.metric(series).unwrap_or(0.0)
}

#[test]
fn two_workers_settling_the_same_requests_charge_each_payment_once() {
    let system = System::start(1, &["--latency-ms", "300"], 3000);
    settle_each_payment_twice(&system, Claim::Log);
}

/// `worker.claim: "pg"`: no `pending` is written, both workers call the PG for every
/// payment, and the PG's de-duplication by key keeps each to one charge and one answer.
#[test]
fn with_the_claim_left_to_the_pg_two_workers_still_charge_each_payment_once() {
    let config = system_config_with(3000, |c| c["worker"]["claim"] = json!("pg"));
    let system = System::start_with(1, &["--latency-ms", "300"], config);
    settle_each_payment_twice(&system, Claim::Pg);
}

#[derive(PartialEq)]
enum Claim {
    Log,
    Pg,
}

/// Two workers in two groups settle the same 20 payments (10 of them sent through both
/// hosts at once): one answer and one charge per key. With the log claim the PG is
/// called once per payment and the losers say so; with the PG's claim it is called by both.
fn settle_each_payment_twice(system: &System, claim: Claim) {
    let zombie = system.spawn_worker_in_group("kreply-zombies", "latest");
    wait_assigned(&[&zombie], 3);
    let other_host = system.second_gateway();

    // 20 payments; the last 10 are also sent through the other host at the same time.
    let answers: Vec<(String, HttpResponse)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..30)
            .map(|i| {
                let (host, n) = if i < 20 {
                    (&system.gateway, i)
                } else {
                    (&other_host, i - 10)
                };
                s.spawn(move || {
                    let key = format!("split-{n}");
                    let response = pay(host, &key, &format!("O-{n}"));
                    (key, response)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });

    let mut approvals: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, response) in &answers {
        response.assert_status(200);
        approvals
            .entry(key.clone())
            .or_default()
            .push(response.json()["approval_id"].clone());
    }
    for (key, ids) in &approvals {
        assert!(
            ids.iter().all(|id| id == &ids[0] && id.is_string()),
            "{key} answered with different approvals: {ids:?}"
        );
    }
    let charges = system.pg.charges();
    for key in approvals.keys() {
        assert_eq!(charges["charges"][key], 1, "{key}: {charges}");
    }
    if claim == Claim::Pg {
        assert!(charges["calls"].as_u64() > Some(20), "{charges}");
        return;
    }
    assert_eq!(charges["calls"], 20, "the PG was called twice: {charges}");

    // Each payment was raced by both workers; the losers said so.
    let workers = [&system.workers[0], &zombie];
    let lost: f64 = workers
        .iter()
        .map(|w| count(w, "kreply_worker_lost_races_total"))
        .sum();
    assert!(lost > 0.0, "no worker lost a race");
    let logs: String = workers.iter().map(|w| w.daemon.log_text()).collect();
    assert_eq!(
        logs.matches("lost the race for split-").count() as f64,
        lost,
        "{logs}"
    );
    eprintln!("races lost: {lost} of 20 payments settled by both workers");
}

#[test]
fn a_repeat_that_finds_an_unfinished_attempt_answers_with_its_result() {
    // One PG call of 10 s: the second worker starts, reads the first one's `pending`,
    // and settles the same request while that call is still running.
    let system = System::start(1, &["--slow-ms", "10000"], 20000);
    let first = &system.workers[0];

    let answer = std::thread::scope(|s| {
        let caller = s.spawn(|| pay(&system.gateway, "split-slow", "SLOW-1"));
        wait_until("the first PG call", Duration::from_secs(20), || {
            count(first, "kreply_worker_pg_calls_in_flight") > 0.0
        });
        let late = system.spawn_worker_in_group("kreply-zombies", "earliest");
        wait_assigned(&[&late], 3);
        late.daemon.wait_for_log(
            "repeat of split-slow: an earlier attempt has not finished",
            Duration::from_secs(20),
        );
        let answer = caller.join().unwrap();
        late.daemon.wait_for_log(
            "split-slow: answered from the earlier attempt's record",
            Duration::from_secs(20),
        );
        assert_eq!(
            count(&late, "kreply_worker_requests_total{result=\"pg-unknown\"}"),
            0.0
        );
        assert_eq!(count(&late, "kreply_worker_pg_calls_in_flight"), 0.0);
        answer
    });

    answer.assert_status(200);
    // Both workers replied, with the same approval; the PG charged once.
    let replies: Vec<Value> = system
        .broker
        .read_topic(REPLY_LOCAL2, 2)
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replies[0]["approval_id"], answer.json()["approval_id"]);
    assert_eq!(system.pg.charges()["charges"]["split-slow"], 1);
    assert_eq!(system.pg.charges()["calls"], 1);
}
