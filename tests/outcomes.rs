//! `GET /v1/payments/{operation}/{idempotency_key}?order_id=...`: a payment's outcome from
//! any gateway host, read by the worker that owns the order's partition from the results
//! store (never from the PG), so it needs no host affinity and survives a restart of the
//! host that sent the payment.

mod common;

use common::answers::assert_problem;
use common::cluster::BrokerKind;
use common::system::{System, system_config};
use common::*;
use serde_json::json;
use std::time::Duration;

/// The lookup of the payment of order `order` (both it and `key` already percent-encoded).
fn look_up(gateway: &Gateway, operation: &str, key: &str, order: &str) -> HttpResponse {
    let path = format!("/v1/payments/{operation}/{key}?order_id={order}");
    get(gateway.addr, &path).unwrap()
}

on_both_brokers!(the_outcome_is_answered_by_any_host_and_after_a_restart);

/// An approval and a decline sent through one host are answered with the same status and
/// body by the other host, and by the sending host after it restarted; an attempt still at
/// the PG is `409 payment-in-progress`; a key never used is `404 no-such-payment`; the PG
/// is never called by a lookup.
fn the_outcome_is_answered_by_any_host_and_after_a_restart(kind: BrokerKind) {
    let mut system = System::start_kind(kind, 1, &["--slow-ms", "4000"], system_config(8000));
    let other = system.second_gateway();
    let pay = |key: &str, order: &str| {
        system.gateway.pay_with(
            "approve",
            &[("idempotency-key", key), ("request-timeout", "15000")],
            &json!({"order_id": order, "amount": 25}),
        )
    };
    let approved = pay("out-1", "O-1");
    approved.assert_status(200);
    let declined = pay("out-2", "DECLINE-2");
    declined.assert_status(402);

    let from_other = look_up(&other, "approve", "out-1", "O-1");
    from_other.assert_status(200);
    assert_eq!(from_other.json(), approved.json());
    let decline_again = look_up(&other, "approve", "out-2", "DECLINE-2");
    decline_again.assert_status(402);
    assert_eq!(decline_again.json()["reply"], declined.json()["reply"]);
    assert_eq!(decline_again.json()["code"], "declined");

    let never = look_up(&other, "approve", "never-used", "O-1");
    let problem = assert_problem(&never, 404, "no-such-payment");
    assert_eq!(problem["outcome"], "never_seen", "{problem}");

    // A payment at the PG: in progress until it settles.
    let calls_before = system.pg.charges()["calls"].as_u64().unwrap();
    std::thread::scope(|s| {
        let slow = s.spawn(|| pay("out-3", "SLOW-3"));
        wait_until("SLOW-3 at the PG", Duration::from_secs(20), || {
            system.pg.charges()["calls"].as_u64().unwrap() > calls_before
        });
        let running = look_up(&other, "approve", "out-3", "SLOW-3");
        let problem = assert_problem(&running, 409, "payment-in-progress");
        assert_eq!(problem["outcome"], "in_progress", "{problem}");
        slow.join().unwrap().assert_status(200);
    });

    // The sending host restarted: its memory is gone, the outcome is not.
    let (addr, config) = (system.gateway.addr, system.config.clone());
    system.gateway.daemon.signal("KILL");
    system.gateway = Gateway::spawn_at(&system.brokers, "127.0.0.2", addr, &config);
    system.gateway.wait_ready();
    let after_restart = look_up(&system.gateway, "approve", "out-1", "O-1");
    after_restart.assert_status(200);
    assert_eq!(after_restart.json(), approved.json());

    let charges = system.pg.charges();
    assert_eq!(charges["calls"], 3, "a lookup called the PG: {charges}");
}

/// A caller that timed out is pointed at the outcome URL, and any host answers it with the
/// payment's reply once the worker settled it.
#[test]
fn a_timed_out_payment_names_its_outcome_url_and_any_host_answers_it() {
    let system = System::start(1, &["--slow-ms", "2000"], 8000);
    let timed_out = system.gateway.pay_with(
        "approve",
        &[("request-timeout", "500")],
        &json!({"order_id": "SLOW-9", "amount": 3}),
    );
    let problem = assert_problem(&timed_out, 504, "reply-timeout");
    let url = problem["outcome_url"]
        .as_str()
        .expect("outcome_url")
        .to_string();
    assert_eq!(url, "/v1/payments/approve/SLOW-9%3Aapprove?order_id=SLOW-9");
    let other = system.second_gateway();
    let mut answer = None;
    wait_until("the outcome settled", Duration::from_secs(20), || {
        let response = get(other.addr, &url).unwrap();
        let settled = response.status == 200;
        answer = Some(response);
        settled
    });
    assert_eq!(answer.unwrap().json()["status"], "APPROVED");
}

/// Keys and order ids in the URL are percent-decoded, and a bad key or an unknown operation
/// is refused before anything is sent.
#[test]
fn a_bad_key_or_operation_in_the_outcome_url_is_refused() {
    let system = System::start(1, &[], 3000);
    let bad = look_up(&system.gateway, "approve", "%zz", "E-1");
    assert_problem(&bad, 400, "invalid-idempotency-key");
    let unknown = look_up(&system.gateway, "teleport", "k-1", "E-1");
    assert_problem(&unknown, 404, "unknown-operation");
    // Reserved characters in both: `/` and `:` in the path, ` `, `/` and `+` in the query.
    let encoded = system.gateway.pay_with(
        "approve",
        &[("idempotency-key", "a/b:c")],
        &json!({"order_id": "E 1/2+3", "amount": 1}),
    );
    encoded.assert_status(200);
    let found = look_up(&system.gateway, "approve", "a%2Fb%3Ac", "E%201%2F2%2B3");
    assert_eq!(found.json(), encoded.json());
}

/// A lookup that names no order has no partition to ask: `400 missing-order-id`, naming the
/// parameter and the URL to ask, and nothing is produced to the request topic.
#[test]
fn a_lookup_without_an_order_id_is_400_and_sends_nothing() {
    let system = System::start(1, &[], 3000);
    let paid = system.gateway.pay_with(
        "approve",
        &[("idempotency-key", "no-order-1")],
        &json!({"order_id": "N-1", "amount": 1}),
    );
    paid.assert_status(200);
    let produced = system.broker.end_offset(REQUEST_TOPIC);
    for path in [
        "/v1/payments/approve/no-order-1",
        "/v1/payments/approve/no-order-1?order_id=",
    ] {
        let response = get(system.gateway.addr, path).unwrap();
        // problem+json with the code, as `assert_problem` checks.
        let problem = assert_problem(&response, 400, "missing-order-id");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("/v1/payments/approve/no-order-1?order_id="),
            "{detail}"
        );
    }
    assert_eq!(
        system.broker.end_offset(REQUEST_TOPIC),
        produced,
        "a refused lookup was produced"
    );
    let found = look_up(&system.gateway, "approve", "no-order-1", "N-1");
    assert_eq!(found.json(), paid.json());
}
