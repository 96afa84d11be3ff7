//! Payments an attempt left in doubt settle themselves (`worker.pg_idempotent`, the
//! default): a repeat that finds an unfinished `pending` past its deadline asks the PG
//! again with the same idempotency key, and the PG simulator, which de-duplicates by key
//! as real PGs do, answers what it did the first time without charging again. With a PG
//! that charges every call (`--idempotent no`, `"pg_idempotent": false`) the repeat is
//! answered `504 pg-unknown` and the PG is not called.
//!
//! `SLOW…` orders are charged at once and answered `--slow-ms` later: the PG did it, the
//! worker has not heard.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config_with};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn pay(gateway: &Gateway, key: &str) -> HttpResponse {
    gateway.pay_with(
        "approve",
        &[("idempotency-key", key), ("request-timeout", "30000")],
        &json!({"order_id": key, "amount": 40}),
    )
}

/// The PG's count for `key` in `what` ("calls_by_key" or "charges").
fn pg_count(charges: &Value, what: &str, key: &str) -> u64 {
    charges[what][key].as_u64().unwrap_or(0)
}

on_both_brokers!(
    a_pg_timeout_then_a_repeat_gets_the_real_answer_and_one_charge,
    a_worker_killed_after_the_pg_charged_is_settled_by_its_successor
);

/// The PG charges and answers after the worker's PG timeout: the caller hears `504
/// pg-unknown`. The repeat waits out the first attempt's deadline, asks the PG again with
/// the same key, and gets the first approval: `200`, two calls, one charge.
fn a_pg_timeout_then_a_repeat_gets_the_real_answer_and_one_charge(kind: BrokerKind) {
    let config = system_config_with(1000, |_| {});
    let system = System::start_kind(kind, 1, &["--slow-ms", "2000"], config);
    let first = pay(&system.gateway, "SLOW-T1");
    first.assert_status(504);
    assert_eq!(first.json()["code"], "pg-unknown", "{}", first.json());

    let repeat = pay(&system.gateway, "SLOW-T1");
    repeat.assert_status(200);
    assert_eq!(repeat.json()["status"], "APPROVED", "{}", repeat.json());
    let charges = system.pg.charges();
    assert_eq!(pg_count(&charges, "charges", "SLOW-T1"), 1, "{charges}");
    assert_eq!(
        pg_count(&charges, "calls_by_key", "SLOW-T1"),
        2,
        "{charges}"
    );
    let worker = &system.workers[0];
    assert_eq!(
        worker.metric("kreply_worker_asked_pg_again_total"),
        Some(1.0)
    );

    // Settled now: a third call is answered from the final record, the PG not called.
    let third = pay(&system.gateway, "SLOW-T1");
    assert_eq!(third.json(), repeat.json());
    let charges = system.pg.charges();
    assert_eq!(
        pg_count(&charges, "calls_by_key", "SLOW-T1"),
        2,
        "{charges}"
    );
}

/// A worker SIGKILLed after the PG charged and before its final record: a successor
/// (here a worker of another group reading the requests from the start, so no session
/// timeout is waited for) finds the dead attempt's `pending`, waits out its deadline,
/// asks the PG again and answers the waiting caller with the first approval; one charge.
fn a_worker_killed_after_the_pg_charged_is_settled_by_its_successor(kind: BrokerKind) {
    killed_after_the_pg_charged(kind, "log");
}

/// The same with `worker.claim: "pg"`: there is no `pending` to wait out, the successor
/// calls the PG at once and gets the first approval.
#[test]
fn with_the_claim_left_to_the_pg_a_killed_workers_payment_is_settled_by_its_successor() {
    killed_after_the_pg_charged(BrokerKind::Tansu, "pg");
}

fn killed_after_the_pg_charged(kind: BrokerKind, claim: &str) {
    let config = system_config_with(4000, |c| c["worker"]["claim"] = json!(claim));
    let system = System::start_kind(kind, 1, &["--slow-ms", "3000"], config);
    let victim = &system.workers[0];
    let answer = std::thread::scope(|s| {
        let caller = s.spawn(|| pay(&system.gateway, "SLOW-K1"));
        wait_until("the PG charged SLOW-K1", Duration::from_secs(20), || {
            pg_count(&system.pg.charges(), "charges", "SLOW-K1") == 1
        });
        victim.daemon.signal("KILL");
        let successor = system.spawn_worker_in_group("kreply-successors", "earliest");
        let answer = caller.join().unwrap();
        if claim == "log" {
            successor.daemon.wait_for_log(
                "SLOW-K1: an earlier attempt never finished; asking the PG again",
                Duration::from_secs(5),
            );
        }
        answer
    });
    answer.assert_status(200);
    assert_eq!(answer.json()["status"], "APPROVED", "{}", answer.json());
    let charges = system.pg.charges();
    assert_eq!(pg_count(&charges, "charges", "SLOW-K1"), 1, "{charges}");
    assert_eq!(
        pg_count(&charges, "calls_by_key", "SLOW-K1"),
        2,
        "{charges}"
    );
}

/// With a PG that charges every call, the worker must not ask again: the repeat of a
/// timed-out payment is answered `504 pg-unknown` and the PG is called once.
#[test]
fn without_an_idempotent_pg_the_repeat_stays_unknown_and_the_pg_is_not_called() {
    let config = system_config_with(1000, |c| c["worker"]["pg_idempotent"] = json!(false));
    let system = System::start_kind(
        BrokerKind::Tansu,
        1,
        &["--slow-ms", "2000", "--idempotent", "no"],
        config,
    );
    pay(&system.gateway, "SLOW-N1").assert_status(504);
    let repeat = pay(&system.gateway, "SLOW-N1");
    repeat.assert_status(504);
    assert_eq!(repeat.json()["code"], "pg-unknown", "{}", repeat.json());
    let charges = system.pg.charges();
    assert_eq!(
        pg_count(&charges, "calls_by_key", "SLOW-N1"),
        1,
        "{charges}"
    );
    assert_eq!(
        system.workers[0].metric("kreply_worker_asked_pg_again_total"),
        Some(0.0)
    );
}
