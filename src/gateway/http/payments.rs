//! `POST /v1/payments/{operation}`: one payment call, answered by its Kafka reply.
//!
//! The order of steps is the point:
//! 1. everything about the input is checked first, so a bad request produces nothing;
//! 2. the correlation id is registered *before* the record is produced, so even a reply
//!    faster than the produce acknowledgement finds its waiter;
//! 3. one deadline (one timer) covers the acknowledgement and the reply together;
//! 4. when the outcome is unknown (timeout, failed send) the caller is told so, and the
//!    request goes to its flow's dead-letter topic. Nothing is ever re-sent. The caller is
//!    also told where a reply that comes later can be fetched (`GET /v1/requests/{id}`).
//!    A send the brokers definitely refused is dead-lettered too, marked `no` in
//!    `kreply_dlt-written`, so that a replay tool never re-sends what its caller was told
//!    is safe to try again.
//!
//! At most `max_in_flight` payments wait at once: beyond that a caller gets 503
//! `overloaded` with `Retry-After`, before its body is read and with nothing produced.
//! A gateway whose reply consumer is not reading refuses the same way, with 503
//! `not-ready`, also before the body is read.
//!
//! The caller's W3C `traceparent` (or a new one, when it sent none that is valid) goes
//! onto the request record, into the outcome log line and back in the answer's
//! `traceparent` header, so one trace id finds the payment in every log and record.

use super::State;
use super::payment_input::{check_content_type, idempotency_key, read_body, requested_timeout};
use super::requests::reply_url;
use crate::gateway::flows::Flow;
use crate::gateway::http::GatewayState;
use crate::gateway::kafka::SendFailure;
use crate::gateway::metrics::{RequestOutcome, UNKNOWN_OPERATION};
use crate::gateway::registry::{Refused, Reply, ReplyWaiter};
use crate::gateway::reply_check;
use crate::ops::http_server::problem_response;
use crate::wire::correlation_id::CorrelationId;
use crate::wire::dead_letter::{self, Cause, Written};
use crate::wire::dialect::{Dialect, WorkerError};
use crate::wire::outcome_lookup;
use crate::wire::payment::PaymentRequest;
use crate::wire::problem::{Outcome, Problem};
use crate::wire::record::{OutgoingRecord, WrittenAt};
use crate::wire::reply_error::ReplyError;
use crate::wire::traceparent::{self, TraceParent};
use async_std::task;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};
use tide::{Request, Response, StatusCode};

/// Every payment answer carries its correlation id here, for support tickets.
const CORRELATION_HEADER: &str = "x-correlation-id";
/// A lookup's answer changes (`404 reply-pending` becomes the reply, `409` the outcome),
/// and a payment's answer is one caller's outcome: a cache (a proxy's, a browser's, a
/// client library's) that kept one would show a stale or another caller's outcome. HTTP
/// lets caches keep a 404 or 405 unless told not to (RFC 9111 section 4.2.2).
const NO_STORE: (&str, &str) = ("cache-control", "no-store");
/// Seconds an overloaded caller is asked to wait: any of `max_in_flight` payments ending
/// frees a slot, and most end well within a second.
const OVERLOADED_RETRY_AFTER_S: u16 = 1;

/// A payment that got no answer from the worker: the problem for the caller, and the
/// outcome for `kreply_requests_total`, both decided where the failure happens.
struct Failed {
    problem: Problem,
    outcome: RequestOutcome,
}

impl Failed {
    /// Refused before anything was produced: the caller's input (`refused`), or the
    /// gateway's own state, not ready or overloaded (`unavailable`: the only 503s a
    /// refusal has, and the ones a caller may simply retry).
    fn rejected(problem: Problem) -> Failed {
        let outcome = match problem.status {
            503 => RequestOutcome::Unavailable,
            _ => RequestOutcome::Refused,
        };
        Failed { problem, outcome }
    }

    /// No reply (or acknowledgement) in time.
    fn timeout(problem: Problem) -> Failed {
        Failed {
            problem,
            outcome: RequestOutcome::Timeout,
        }
    }

    /// The send failed, or the gateway broke.
    fn error(problem: Problem) -> Failed {
        Failed {
            problem,
            outcome: RequestOutcome::Error,
        }
    }

    /// The worker answered with an error: a decline, a refusal of the input, or a
    /// failure of its own ([`RequestOutcome::of_worker_error`]).
    fn worker(problem: Problem) -> Failed {
        let outcome = RequestOutcome::of_worker_error(problem.status);
        Failed { problem, outcome }
    }
}

/// What the outcome log line reports besides status and latency.
struct Trail {
    correlation_id: Option<CorrelationId>,
    order_id: Option<String>,
    /// Decided before anything else, so that even a refusal carries it.
    trace: TraceParent,
}

impl Trail {
    /// The caller's trace when it sent exactly one valid `traceparent`, else a new one.
    fn of(req: &Request<State>) -> Trail {
        // Two `traceparent` headers are no valid one: the spec says to start afresh.
        let sent = req.header(traceparent::HEADER).map(|values| &values[..]);
        let trace = match sent {
            Some([one]) => TraceParent::or_start(Some(one.as_str().as_bytes())),
            _ => TraceParent::start(),
        };
        Trail {
            correlation_id: None,
            order_id: None,
            trace,
        }
    }
}

/// The endpoint. The request goes into a box of its own, so that the payment's future
/// holds a pointer to it (freed once the record is built) instead of its 400 bytes for as
/// long as the reply takes.
pub fn handle(req: Request<State>) -> impl Future<Output = tide::Result> {
    pay(Box::new(req))
}

async fn pay(mut req: Box<Request<State>>) -> tide::Result {
    let started = Instant::now();
    let gateway = req.state().clone();
    let operation = req.param("operation").unwrap_or_default().to_string();
    let _in_flight = gateway.metrics.in_flight.track();
    let mut trail = Trail::of(&req);
    // Boxed, and the request dropped after it: the checks, the body, the parsed payment
    // and the request itself (headers, route parameters, channels) are gone once the
    // record is built, so thousands of payments waiting for replies hold only what
    // waiting needs.
    let prepared = Box::pin(prepare(&gateway, &mut req, &operation, &mut trail)).await;
    drop(req);
    let answer = match prepared {
        Ok(prepared) => exchange(&gateway, prepared).await.and_then(|reply| {
            let dialect = gateway.flows.of(&operation).map(|flow| flow.dialect);
            worker_answer(
                reply,
                trail.correlation_id.as_ref(),
                dialect.unwrap_or_default(),
            )
            .map_err(Failed::worker)
        }),
        Err(failed) => Err(failed),
    };
    let outcome = answer
        .as_ref()
        .map_or_else(|failed| failed.outcome, |_| RequestOutcome::Approved);
    let label = if gateway.config.accepts_operation(&operation) {
        operation.as_str()
    } else {
        UNKNOWN_OPERATION
    };
    gateway.metrics.record(label, outcome, started.elapsed());
    let mut response = respond(
        answer.map_err(|failed| failed.problem),
        trail.correlation_id.as_ref(),
    );
    let trace = trail.trace.to_string();
    response.insert_header(traceparent::HEADER, trace.as_str());
    never_stored(&mut response);
    log::info!(
        "payment correlation_id={} operation={} order_id={} status={} latency_ms={:.1} traceparent={trace}",
        trail
            .correlation_id
            .as_ref()
            .map_or("-".to_string(), ToString::to_string),
        operation,
        trail.order_id.as_deref().unwrap_or("-"),
        response.status() as u16,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(response)
}

/// A registered payment, ready to produce. A struct, used field by field: destructuring
/// it would hold each part twice in the waiting future.
struct Prepared<'a> {
    waiter: ReplyWaiter,
    /// What is produced, and kept for the dead letter.
    record: OutgoingRecord,
    /// How long the caller waits for the acknowledgement and the reply together.
    wait: Duration,
    /// Its flow, whose dead-letter topic takes it when its outcome is unknown.
    flow: &'a Flow,
}

/// Produces the record and waits for the reply. One timer covers the acknowledgement and
/// the reply together.
async fn exchange(gateway: &GatewayState, mut prepared: Prepared<'_>) -> Result<Reply, Failed> {
    let wait = prepared.wait;
    let mut deadline = pin!(task::sleep(wait));
    let sending = pin!(gateway.sender.send(prepared.record.clone()));
    let written = match before(deadline.as_mut(), sending).await {
        Some(Ok(written)) => written,
        Some(Err(failure)) if failure.possibly_written => {
            // The reply may even have come already; if not, keep it when it does.
            let id = prepared.waiter.id().clone();
            return prepared.waiter.give_up().ok_or_else(|| {
                Failed::error(send_failed(
                    gateway,
                    prepared.flow,
                    &prepared.record,
                    &id,
                    failure,
                ))
            });
        }
        Some(Err(failure)) => {
            let id = prepared.waiter.id();
            return Err(Failed::error(send_failed(
                gateway,
                prepared.flow,
                &prepared.record,
                id,
                failure,
            )));
        }
        None => {
            let why = format!(
                "no acknowledgement from the brokers within {} ms",
                wait.as_millis()
            );
            return give_up(gateway, prepared, None, why);
        }
    };
    match before(deadline, pin!(&mut prepared.waiter)).await {
        Some(reply) => Ok(reply),
        None => {
            let why = format!("no reply within {} ms", wait.as_millis());
            give_up(gateway, prepared, Some(written), why)
        }
    }
}

/// `work`'s output, or `None` once `deadline` has passed (which is then not polled again).
/// Both are pinned by the caller: this future holds only the two references.
pub(super) fn before<'a, T: 'a>(
    mut deadline: Pin<&'a mut impl Future<Output = ()>>,
    mut work: Pin<&'a mut impl Future<Output = T>>,
) -> impl Future<Output = Option<T>> + 'a {
    poll_fn(move |cx| match work.as_mut().poll(cx) {
        Poll::Ready(done) => Poll::Ready(Some(done)),
        Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
    })
}

/// Checks everything about the input, then registers a correlation id: the waiter, the
/// record to produce, and how long the caller waits.
async fn prepare<'a>(
    gateway: &'a GatewayState,
    req: &mut Request<State>,
    operation: &str,
    trail: &mut Trail,
) -> Result<Prepared<'a>, Failed> {
    let (payment, wait) = check(gateway, req, operation, trail)
        .await
        .map_err(Failed::rejected)?;
    let flow = gateway.flows.of(operation).ok_or_else(|| {
        Failed::rejected(Problem::new(
            404,
            "unknown-operation",
            "no flow takes this operation",
        ))
    })?;
    let id = flow.dialect.new_correlation_id();
    let waiter = gateway
        .registry
        .register(id.clone())
        .map_err(|refused| match refused {
            Refused::Overloaded => Failed::rejected(overloaded(gateway)),
            Refused::AlreadyWaiting => Failed::error(
                Problem::new(
                    500,
                    "internal-error",
                    "correlation id already in use; nothing was sent",
                )
                .with_correlation_id(&id),
            ),
        })?;
    trail.correlation_id = Some(id.clone());
    let topic = &flow.request_topic;
    let record = payment.to_record(topic, &id, &flow.return_address, &trail.trace);
    Ok(Prepared {
        waiter,
        record,
        wait,
        flow,
    })
}

/// Everything about the input, and whether the gateway takes payments now: whatever fails
/// here is a refusal, with nothing registered or produced.
async fn check(
    gateway: &GatewayState,
    req: &mut Request<State>,
    operation: &str,
    trail: &mut Trail,
) -> Result<(PaymentRequest, Duration), Problem> {
    let config = &gateway.config;
    if !config.accepts_operation(operation) {
        return Err(Problem::new(
            404,
            "unknown-operation",
            format!(
                "\"{operation}\" is not a payment operation here; use one of: {}",
                config.operations.join(", ")
            ),
        ));
    }
    // Both refusals come before the body is read: the caller learns at once, and the
    // connection layer closes a connection whose body is left unread (or skips a small
    // one that has already arrived), so no body bytes are taken for the next request.
    if !gateway.readiness.reads_replies() {
        return Err(not_ready());
    }
    if gateway.registry.is_full() {
        return Err(overloaded(gateway));
    }
    check_content_type(req)?;
    let wait = requested_timeout(req, config.default_timeout(), config.max_timeout())?;
    let idempotency_key = idempotency_key(req)?;
    if idempotency_key.is_none() && config.requires_idempotency_key(operation) {
        return Err(Problem::new(
            400,
            "missing-idempotency-key",
            format!(
                "\"{operation}\" payments need an Idempotency-Key header (a key of your own per payment, the same on every retry); nothing was sent"
            ),
        )
        .with_outcome(Outcome::NotSent));
    }
    let body = read_body(req, config.max_body_bytes).await?;
    let mut payment = PaymentRequest::parse(operation, &body)
        .map_err(|invalid| Problem::new(400, invalid.code, invalid.detail))?;
    payment.idempotency_key = idempotency_key;
    trail.order_id = Some(payment.order_id.clone());
    Ok((payment, wait))
}

/// 503 `not-ready`: the reply consumer is not reading, so a reply could not be matched;
/// nothing was read, registered or produced.
pub(super) fn not_ready() -> Problem {
    Problem::new(
        503,
        "not-ready",
        "the gateway is not reading replies right now; nothing was sent, try again shortly",
    )
    .with_outcome(Outcome::NotSent)
}

/// The deadline passed: the reply if it came in that very instant, else a 504, and the
/// id is remembered so a reply that comes later is kept.
fn give_up(
    gateway: &GatewayState,
    prepared: Prepared<'_>,
    written: Option<WrittenAt>,
    why: String,
) -> Result<Reply, Failed> {
    let Prepared {
        waiter,
        record,
        flow,
        ..
    } = prepared;
    let id = waiter.id().clone();
    let written = written.map_or(Written::Possibly, Written::At);
    waiter
        .give_up()
        .ok_or_else(|| Failed::timeout(timed_out(gateway, flow, &record, written, &id, why)))
}

/// 503 `overloaded`: nothing was registered or produced (nor, on the early check, read).
pub(super) fn overloaded(gateway: &GatewayState) -> Problem {
    gateway.metrics.overload_refusals.inc();
    Problem::new(
        503,
        "overloaded",
        format!(
            "the gateway is already waiting for {} payments, its limit; nothing was sent, try again shortly",
            gateway.registry.max_in_flight()
        ),
    )
    .with_outcome(Outcome::NotSent)
    .with_retry_after(OVERLOADED_RETRY_AFTER_S)
}

/// Marks `response` as one that no cache may keep (see [`NO_STORE`]).
pub(super) fn never_stored(response: &mut Response) {
    response.insert_header(NO_STORE.0, NO_STORE.1);
}

/// The HTTP answer to a payment (or to a later lookup of it), with its correlation id.
pub(super) fn respond(answer: Result<Vec<u8>, Problem>, id: Option<&CorrelationId>) -> Response {
    let mut response = match answer {
        Ok(body) => ok_response(body),
        Err(problem) => problem_response::respond(&problem),
    };
    if let Some(id) = id {
        response.insert_header(CORRELATION_HEADER, id.to_string());
    }
    response
}

/// The worker's answer: its reply value, or the problem its error header names
/// (`kreply_error` in Spring, `kafka_nest-err` in NestJS). A value that is not JSON is
/// never passed off as a success: the caller gets `502 invalid-reply` with outcome
/// unknown, since a worker that wrote garbage may have charged.
pub(super) fn worker_answer(
    reply: Reply,
    id: Option<&CorrelationId>,
    dialect: Dialect,
) -> Result<Vec<u8>, Problem> {
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or_default())
    };
    let error = dialect.error_of(header);
    let value = reply.value.clone().unwrap_or_default();
    let problem = match error {
        None if reply_check::is_json(&value) => return Ok(value),
        None => invalid_reply(&value),
        Some(WorkerError {
            code,
            said: Some(said),
        }) => error_problem(code, said),
        Some(WorkerError { code, said: None }) => error_reply(code, &value),
    };
    Err(match id {
        Some(id) => problem.with_correlation_id(id),
        None => problem,
    })
}

/// A reply with no error header whose value is not JSON.
fn invalid_reply(value: &[u8]) -> Problem {
    Problem::new(
        502,
        "invalid-reply",
        "the worker's reply is not JSON; the outcome is unknown: check the order's status before trying again",
    )
    .with_outcome(Outcome::Unknown)
    .with_reply(serde_json::Value::String(
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// A reply with a `kreply_error` code: the mapped status, with the worker's value inside.
fn error_reply(error: ReplyError, value: &[u8]) -> Problem {
    let reply_json: serde_json::Value = serde_json::from_slice(value)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(value).into_owned()));
    error_problem(error, reply_json)
}

/// The mapped status for a worker's error, with what the worker said inside: its
/// `detail` (kreply's Spring replies) or `message` (NestJS errors) becomes the detail.
fn error_problem(error: ReplyError, said: serde_json::Value) -> Problem {
    let detail = ["detail", "message"]
        .iter()
        .find_map(|key| said.get(key).and_then(|d| d.as_str()))
        .map_or_else(
            || format!("the worker answered with error \"{}\"", error.code()),
            str::to_string,
        );
    Problem::new(error.status(), error.code(), detail)
        .with_outcome(error.outcome())
        .with_reply(said)
}

fn ok_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(StatusCode::Ok);
    response.set_body(body);
    response.set_content_type(tide::http::mime::JSON);
    response
}

/// The send did not succeed: dead-letter it, marked with whether it may have been written,
/// and say whether a retry is safe.
fn send_failed(
    gateway: &GatewayState,
    flow: &Flow,
    record: &OutgoingRecord,
    id: &CorrelationId,
    failure: SendFailure,
) -> Problem {
    let written = if failure.possibly_written {
        Written::Possibly
    } else {
        Written::No
    };
    dead_letter(
        gateway,
        flow,
        record,
        written,
        Cause::SendFailed,
        &failure.message,
    );
    let problem = |advice: &str| {
        Problem::new(
            503,
            "send-failed",
            format!(
                "the request could not be sent to Kafka ({}); {advice}",
                failure.message
            ),
        )
        .with_correlation_id(id)
    };
    if failure.possibly_written {
        problem(
            "it may still be processed: check the order's status (reply_url) before trying again",
        )
        .with_outcome(Outcome::Unknown)
        .with_reply_url(reply_url(id, &gateway.route.suffix), &gateway.route.suffix)
        .with_outcome_url(outcome_lookup::url_of_payment(record))
    } else {
        problem("nothing was written, so it is safe to try again").with_outcome(Outcome::NotSent)
    }
}

/// No reply (or no acknowledgement) in time: the payment's fate is unknown.
fn timed_out(
    gateway: &GatewayState,
    flow: &Flow,
    record: &OutgoingRecord,
    written: Written,
    id: &CorrelationId,
    why: String,
) -> Problem {
    dead_letter(gateway, flow, record, written, Cause::ReplyTimeout, &why);
    Problem::new(
        504,
        "reply-timeout",
        format!("{why}; the outcome is unknown and the payment may still complete: fetch outcome_url (any host) or reply_url (this host) for the worker's answer before trying again"),
    )
    .with_correlation_id(id)
    .with_outcome(Outcome::Unknown)
    .with_reply_url(reply_url(id, &gateway.route.suffix), &gateway.route.suffix)
    .with_outcome_url(outcome_lookup::url_of_payment(record))
}

/// Queues the dead letter of `record` on its flow's dead-letter topic.
fn dead_letter(
    gateway: &GatewayState,
    flow: &Flow,
    record: &OutgoingRecord,
    written: Written,
    cause: Cause,
    why: &str,
) {
    let letter = dead_letter::record(&flow.dlq_topic, record, written, cause, why);
    gateway.metrics.dlq_write(cause);
    gateway.sender.send_and_forget(letter);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dialect::{NEST_ERR, NEST_IS_DISPOSED};
    use crate::wire::record::headers;

    fn reply(value: Option<&[u8]>, error: Option<&[u8]>) -> Reply {
        Reply {
            value: value.map(<[u8]>::to_vec),
            headers: error
                .map(|code| (headers::ERROR.to_string(), Some(code.to_vec())))
                .into_iter()
                .collect(),
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn a_json_value_is_the_answer() {
        let answer = worker_answer(
            reply(Some(br#"{"status":"APPROVED"}"#), None),
            None,
            Dialect::Spring,
        );
        assert_eq!(answer.unwrap(), br#"{"status":"APPROVED"}"#);
    }

    #[test]
    fn a_value_that_is_not_json_is_a_502_with_unknown_outcome() {
        let id = CorrelationId::new_spring();
        for value in [Some(&b"APPROVED"[..]), Some(b"\xff\xfe{"), Some(b""), None] {
            let problem =
                worker_answer(reply(value, None), Some(&id), Dialect::Spring).unwrap_err();
            assert_eq!((problem.status, problem.code), (502, "invalid-reply"));
            assert_eq!(problem.outcome, Some(Outcome::Unknown));
            assert_eq!(
                problem.correlation_id.as_deref(),
                Some(id.to_string().as_str())
            );
        }
    }

    #[test]
    fn an_unknown_error_code_is_a_502_with_unknown_outcome() {
        let problem = worker_answer(
            reply(Some(b"{}"), Some(b"out-of-cheese")),
            None,
            Dialect::Spring,
        )
        .unwrap_err();
        assert_eq!((problem.status, problem.code), (502, "worker-error"));
        assert_eq!(problem.outcome, Some(Outcome::Unknown));
    }

    fn nest_reply(value: Option<&[u8]>, err: Option<&[u8]>) -> Reply {
        let mut reply = reply(value, None);
        reply
            .headers
            .push((NEST_IS_DISPOSED.to_string(), Some(vec![0])));
        if let Some(err) = err {
            reply
                .headers
                .push((NEST_ERR.to_string(), Some(err.to_vec())));
        }
        reply
    }

    #[test]
    fn a_nestjs_error_is_mapped_by_its_code_and_a_foreign_one_is_unknown() {
        let err = br#"{"status":"error","code":"declined","message":"card limit"}"#;
        let problem =
            worker_answer(nest_reply(None, Some(err)), None, Dialect::Nestjs).unwrap_err();
        assert_eq!((problem.status, problem.code), (402, "declined"));
        assert_eq!(&*problem.detail, "card limit");
        let foreign = br#"{"status":"error","message":"Internal server error"}"#;
        let problem =
            worker_answer(nest_reply(None, Some(foreign)), None, Dialect::Nestjs).unwrap_err();
        assert_eq!((problem.status, problem.code), (502, "worker-error"));
        assert_eq!(problem.outcome, Some(Outcome::Unknown));
        let ok = worker_answer(nest_reply(Some(b"{}"), None), None, Dialect::Nestjs);
        assert_eq!(ok.unwrap(), b"{}");
    }

    /// The size of what `f` returns, without calling it.
    fn future_size<A, F: Fn(A) -> R, R>(_: F) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every waiting payment holds this future for as long as its reply takes (issue 8: a
    /// small waiting request). Boxing the request and passing the prepared payment by
    /// field halved it from 1,960 bytes.
    #[test]
    fn a_waiting_payment_holds_a_small_future() {
        let size = future_size(handle);
        assert!(size <= 1024, "the payment future is {size} bytes");
    }
}
