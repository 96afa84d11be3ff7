//! `GET /v1/payments/{operation}/{idempotency_key}?order_id=...`: what became of the
//! payment of that order with that key, answered by any gateway host from the workers'
//! results store, within the idempotency window.
//!
//! The lookup travels the payment's own path: a read-only request on the operation's flow
//! (`wire::outcome_lookup`), keyed by the order id like the payment, so it reaches the
//! worker that owns the order's partition, which holds the payment's state
//! (docs/worker-design.md, "State per partition"). That worker answers from the results
//! topic without calling the PG, with a reply to this host. So it needs no host affinity
//! and survives a gateway restart, unlike `GET /v1/requests/{id}` (the late reply one host
//! kept in memory). The answer:
//!
//! - settled: the payment's first answer as its call returned it (`200` with the reply, or
//!   its problem: `402 declined`, `502 pg-error`, `504 pg-unknown`, ...);
//! - `409 payment-in-progress` (`outcome: in_progress`): an attempt is on record and has
//!   not finished;
//! - `404 no-such-payment` (`outcome: never_seen`): no payment of this order with this key
//!   in the window;
//! - `504 lookup-timeout`: no worker answered in time; nothing changed, ask again;
//! - `400 missing-order-id`: no `order_id` (or an empty one), so no partition to ask;
//!   nothing is sent.
//!
//! Without an `Idempotency-Key` a payment's key is `{order_id}:{operation}`.

use super::State;
use super::payment_input::valid_idempotency_key;
use super::payments::{before, never_stored, not_ready, overloaded, respond, worker_answer};
use crate::gateway::http::GatewayState;
use crate::gateway::registry::Refused;
use crate::wire::correlation_id::CorrelationId;
use crate::wire::outcome_lookup;
use crate::wire::payment::Destination;
use crate::wire::problem::Problem;
use crate::wire::traceparent::{self, TraceParent};
use async_std::task;
use std::pin::pin;
use std::time::Instant;
use tide::Request;

pub async fn handle(req: Request<State>) -> tide::Result {
    let started = Instant::now();
    let gateway = req.state().clone();
    let operation = req.param("operation").unwrap_or_default().to_string();
    let segment = req.param("idempotency_key").unwrap_or_default().to_string();
    // Form-decoded (`%XX`, and `+` as a space); the first one counts, as for `?host=`.
    let order_id = req
        .url()
        .query_pairs()
        .find(|(name, _)| name == outcome_lookup::ORDER_QUERY)
        .map(|(_, value)| value.into_owned());
    let trace = TraceParent::or_start(
        req.header(traceparent::HEADER)
            .map(|values| values.last().as_str().as_bytes()),
    );
    drop(req);
    let mut id = None;
    let answer = look_up(
        &gateway,
        &operation,
        &segment,
        order_id.as_deref(),
        &trace,
        &mut id,
    )
    .await;
    let mut response = respond(answer, id.as_ref());
    response.insert_header(traceparent::HEADER, trace.to_string());
    never_stored(&mut response);
    // Logged encoded, as the key is: an order id from a URL is not checked like a payment's,
    // and a line break in it must not start a log line of its own.
    let order_logged = order_id
        .as_deref()
        .map_or_else(|| "-".to_string(), outcome_lookup::percent_encoded);
    log::info!(
        "lookup operation={operation} idempotency_key={segment} order_id={order_logged} status={} latency_ms={:.1} traceparent={trace}",
        response.status() as u16,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(response)
}

/// Asks the worker that owns `order_id`'s partition about the payment of that order whose
/// key is `segment` (percent-encoded).
async fn look_up(
    gateway: &GatewayState,
    operation: &str,
    segment: &str,
    order_id: Option<&str>,
    trace: &TraceParent,
    id_out: &mut Option<CorrelationId>,
) -> Result<Vec<u8>, Problem> {
    let flow = gateway
        .flows
        .of(operation)
        .filter(|_| gateway.config.accepts_operation(operation))
        .ok_or_else(|| {
            Problem::new(
                404,
                "unknown-operation",
                format!("\"{operation}\" is not a payment operation here"),
            )
        })?;
    let key = outcome_lookup::decode_key(segment).ok_or_else(|| {
        Problem::new(
            400,
            "invalid-idempotency-key",
            "the key in the URL is not valid percent-encoding",
        )
    })?;
    let key = valid_idempotency_key(&key)?;
    // Without the order there is no partition to ask: asking every partition would cost
    // one request per partition per lookup, and a guess finds nothing.
    let order_id = order_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        Problem::new(
            400,
            "missing-order-id",
            format!(
                "the query parameter order_id is missing or empty: a lookup must name the payment's order, whose partition holds its state; ask /v1/payments/{operation}/{segment}?order_id=<the payment's order_id, percent-encoded>"
            ),
        )
    })?;
    if !gateway.readiness.reads_replies() {
        return Err(not_ready());
    }
    let id = flow.dialect.new_correlation_id();
    let mut waiter = gateway
        .registry
        .register(id.clone())
        .map_err(|refused| match refused {
            Refused::Overloaded => overloaded(gateway),
            Refused::AlreadyWaiting => Problem::new(
                500,
                "internal-error",
                "correlation id already in use; ask again",
            ),
        })?;
    *id_out = Some(id.clone());
    let to = Destination {
        topic: &flow.request_topic,
        id: &id,
        reply: &flow.return_address,
        trace,
    };
    let record = outcome_lookup::record(&to, operation, &key, order_id);
    let wait = gateway.config.default_timeout();
    let mut deadline = pin!(task::sleep(wait));
    let timed_out = || {
        Problem::new(
            504,
            "lookup-timeout",
            format!(
                "no worker answered the lookup within {} ms; nothing was changed, ask again",
                wait.as_millis()
            ),
        )
        .with_correlation_id(&id)
    };
    match before(deadline.as_mut(), pin!(gateway.sender.send(record))).await {
        Some(Ok(_written)) => {}
        Some(Err(failure)) => {
            return Err(Problem::new(
                503,
                "lookup-not-sent",
                format!(
                    "the lookup could not be sent to Kafka ({}); nothing was changed, ask again",
                    failure.message
                ),
            )
            .with_correlation_id(&id));
        }
        None => return Err(timed_out()),
    }
    let reply = before(deadline, pin!(&mut waiter))
        .await
        .ok_or_else(timed_out)?;
    worker_answer(reply, Some(&id), flow.dialect)
}
