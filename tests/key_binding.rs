//! An `Idempotency-Key` is bound to the request it was first used for (IETF draft "The
//! Idempotency-Key HTTP Header Field"): the same key on the same order with another amount
//! or another operation is refused with `422 idempotency-key-reused` and nothing is
//! charged; the same payment again, its fields in another order, gets the first answer.
//!
//! A payment is (order id, idempotency key) (`worker/slot.rs`): the same key on another
//! order is another payment, whose state another worker may own. What keeps it from the
//! first order's answer is the PG's own binding of the key (the simulator refuses it with
//! `422`, as Stripe does): its caller gets `502 pg-error`, and nothing is charged.

mod common;

use common::answers::assert_problem;
use common::cluster::BrokerKind;
use common::system::{System, system_config};
use common::*;
use serde_json::{Value, json};

fn pay(system: &System, operation: &str, key: &str, body: &Value) -> HttpResponse {
    system.gateway.pay_with(
        operation,
        &[("idempotency-key", key), ("request-timeout", "15000")],
        body,
    )
}

on_both_brokers!(a_key_reused_for_another_request_is_refused_and_charges_nothing);

fn a_key_reused_for_another_request_is_refused_and_charges_nothing(kind: BrokerKind) {
    let system = System::start_kind(kind, 1, &[], system_config(3000));
    let first = pay(
        &system,
        "approve",
        "bind-1",
        &json!({"order_id": "O-1", "amount": 10}),
    );
    first.assert_status(200);

    let again: Value = serde_json::from_str(r#"{"amount": 10, "order_id": "O-1"}"#).unwrap();
    let same = pay(&system, "approve", "bind-1", &again);
    same.assert_status(200);
    assert_eq!(same.json(), first.json());

    for (operation, body) in [
        ("approve", json!({"order_id": "O-1", "amount": 11})),
        ("refund", json!({"order_id": "O-1", "amount": 10})),
    ] {
        let reused = pay(&system, operation, "bind-1", &body);
        let problem = assert_problem(&reused, 422, "idempotency-key-reused");
        assert_eq!(problem["outcome"], "failed", "{problem}");
    }
    let charges = system.pg.charges();
    assert_eq!(charges["calls_by_key"]["bind-1"], 1, "{charges}");

    // Another order: another payment, asked of the PG, which refuses the key.
    let other_order = pay(
        &system,
        "approve",
        "bind-1",
        &json!({"order_id": "O-2", "amount": 10}),
    );
    let problem = assert_problem(&other_order, 502, "pg-error");
    assert_eq!(problem["outcome"], "failed", "{problem}");
    let charges = system.pg.charges();
    assert_eq!(charges["calls_by_key"]["bind-1"], 2, "{charges}");
    assert_eq!(charges["charges"]["bind-1"], 1, "{charges}");

    // The first request's own repeat still gets its answer after the refusals.
    let after = pay(&system, "approve", "bind-1", &again);
    assert_eq!(after.json(), first.json());
}
