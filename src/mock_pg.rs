//! `kreply mock-pg`: a payment provider simulator for the local stack and the tests.
//!
//! `POST /charge` approves, declines or fails a payment after a configurable latency, and
//! counts every call and every approval by idempotency key, so a test can tell "called
//! twice" from "charged twice" by asking `GET /charges`. It also keeps the `traceparent` of
//! each key's latest call, so a test can see the trace reach the PG.
//!
//! Like real PGs (Stripe, Toss Payments) it de-duplicates by idempotency key: a repeated
//! key gets the first call's approval or decline again, at once and without charging; a
//! repeat while the first call is still running waits for it; a call that failed (500)
//! charged nothing and leaves the key free. A key is bound to the order of its first call:
//! the same key on another order is refused with `422`, nothing charged, as a real PG
//! refuses a key reused with other parameters. `--idempotent no` makes a PG that charges
//! every call, for the worker's `"pg_idempotent": false`. Deterministic rules by order id make each path easy to reach:
//! `DECLINE…` is declined (402), `FAIL…` fails (500), `SLOW…` is decided at the usual time but answered `--slow-ms` later.
//! Random failures (`--failure-rate`) and latency jitter are for load runs.

use crate::error::StartupError;
use crate::ops::signals::Shutdown;
use async_std::task;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// The simulator's behaviour, from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct MockPgOptions {
    pub(crate) listen: SocketAddr,
    /// Fixed latency of every call.
    pub(crate) latency_ms: u64,
    /// Extra latency, uniform in 0..=jitter_ms.
    pub(crate) jitter_ms: u64,
    /// Share of calls that fail with 500, from 0.0 to 1.0.
    pub(crate) failure_rate: f64,
    /// Amounts above this are declined.
    pub(crate) decline_over: Option<i64>,
    /// How much later than decided (and charged) a `SLOW…` order is answered.
    pub(crate) slow_ms: u64,
    /// Whether a repeated idempotency key gets the first answer instead of a new charge.
    pub(crate) idempotent: bool,
}

impl Default for MockPgOptions {
    fn default() -> Self {
        MockPgOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            decline_over: None,
            slow_ms: 10_000,
            idempotent: true,
        }
    }
}

impl MockPgOptions {
    /// Applies `--name value` pairs.
    pub fn parse(args: &[String]) -> Result<MockPgOptions, String> {
        let mut options = MockPgOptions::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag} {value:?} is not valid");
            match flag.as_str() {
                "--listen" => options.listen = value.parse().map_err(|_| bad())?,
                "--latency-ms" => options.latency_ms = value.parse().map_err(|_| bad())?,
                "--jitter-ms" => options.jitter_ms = value.parse().map_err(|_| bad())?,
                "--slow-ms" => options.slow_ms = value.parse().map_err(|_| bad())?,
                "--idempotent" => {
                    options.idempotent = match value.as_str() {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(format!("{flag} takes yes or no, not {value:?}")),
                    }
                }
                "--decline-over" => options.decline_over = Some(value.parse().map_err(|_| bad())?),
                "--failure-rate" => {
                    options.failure_rate = value
                        .parse()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(bad)?;
                }
                other => return Err(format!("unknown option \"{other}\"")),
            }
        }
        Ok(options)
    }
}

/// The simulator's state: its options, a small random source, and what it charged.
struct Pg {
    options: MockPgOptions,
    random: Mutex<u64>,
    calls: AtomicU64,
    /// Calls per idempotency key.
    calls_by_key: Mutex<BTreeMap<String, u64>>,
    charges: Mutex<BTreeMap<String, u64>>,
    /// The approval id of each key's latest charge.
    approvals: Mutex<BTreeMap<String, String>>,
    /// Per idempotency key: its first call's answer, or `None` while that call runs.
    outcomes: Mutex<BTreeMap<String, Option<(StatusCode, Value)>>>,
    /// Per idempotency key: the order its first call was for. A key is bound to its
    /// order, as real PGs bind a key to its request's parameters (Stripe: "Keys for
    /// idempotent requests can only be used with the same parameters").
    orders: Mutex<BTreeMap<String, String>>,
    /// The `traceparent` header of each key's latest call ("-" without one).
    traces: Mutex<BTreeMap<String, String>>,
}

type State = Arc<Pg>;

impl Pg {
    /// xorshift64: enough randomness for jitter and failure draws, no extra crate.
    fn next_random(&self) -> u64 {
        let mut x = self.random.lock().unwrap_or_else(|p| p.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn chance(&self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Serves the simulator until the process ends.
pub fn run(options: MockPgOptions) -> Result<(), StartupError> {
    let listen = options.listen;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    let pg = Arc::new(Pg {
        options,
        random: Mutex::new(seed),
        calls: AtomicU64::new(0),
        calls_by_key: Mutex::new(BTreeMap::new()),
        charges: Mutex::new(BTreeMap::new()),
        approvals: Mutex::new(BTreeMap::new()),
        outcomes: Mutex::new(BTreeMap::new()),
        orders: Mutex::new(BTreeMap::new()),
        traces: Mutex::new(BTreeMap::new()),
    });
    let mut app = tide::with_state(pg);
    app.at("/charge").post(charge);
    app.at("/charges").get(charges);
    task::block_on(async move {
        let listener = async_std::net::TcpListener::bind(listen)
            .await
            .map_err(|e| {
                StartupError::new(format!(
                    "mock-pg cannot listen on {listen} (pass --listen with a free address): {e}"
                ))
            })?;
        log::info!("ready: mock PG on http://{listen}");
        crate::ops::http_server::serve(app, listener, Shutdown::never()).await;
        Ok(())
    })
}

async fn charge(mut req: Request<State>) -> tide::Result {
    let pg = Arc::clone(req.state());
    pg.calls.fetch_add(1, Ordering::Relaxed);
    let trace = req
        .header(crate::wire::traceparent::HEADER)
        .map_or("-".to_string(), |t| t.as_str().to_string());
    let payment: Value = req.body_json().await.unwrap_or(Value::Null);
    let order_id = payment["order_id"].as_str().unwrap_or_default().to_string();
    let key = payment["idempotency_key"]
        .as_str()
        .unwrap_or(&order_id)
        .to_string();
    log::info!("mock-pg: {key} called traceparent={trace}");
    lock(&pg.traces).insert(key.clone(), trace);
    *lock(&pg.calls_by_key).entry(key.clone()).or_insert(0) += 1;
    if pg.options.idempotent && bound_elsewhere(&pg, &key, &order_id) {
        log::info!("mock-pg: {key} was first used for another order: refused (422)");
        return Ok(answer(
            StatusCode::UnprocessableEntity,
            json!({"status": "ERROR", "detail": "this idempotency key was first used for another order"}),
        ));
    }
    if pg.options.idempotent
        && let Some(first) = first_answer(&pg, &key).await
    {
        log::info!("mock-pg: {key} seen before: its first answer again, not charged");
        return Ok(first);
    }
    let mut running = Running {
        pg: &pg,
        key: &key,
        done: !pg.options.idempotent,
    };
    let (status, body) = decision(&pg, &payment, &key).await;
    if pg.options.idempotent {
        running.finish(status, &body);
    }
    // A `SLOW…` order is decided (and charged) first and answered late: the PG did it,
    // the caller has not heard yet (the in-doubt case).
    if order_id.starts_with("SLOW") {
        task::sleep(Duration::from_millis(pg.options.slow_ms)).await;
    }
    Ok(answer(status, body))
}

/// Holds `key`'s place while its first call runs; a call that failed, or was dropped
/// before it decided, frees the key.
struct Running<'a> {
    pg: &'a Pg,
    key: &'a str,
    done: bool,
}

impl Running<'_> {
    fn finish(&mut self, status: StatusCode, body: &Value) {
        if status != StatusCode::InternalServerError {
            let first = Some((status, body.clone()));
            lock(&self.pg.outcomes).insert(self.key.to_string(), first);
            self.done = true;
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.pg.outcomes).remove(self.key);
        }
    }
}

/// Whether `key` was first used for another order than `order_id` (binding it if new).
fn bound_elsewhere(pg: &Pg, key: &str, order_id: &str) -> bool {
    let mut orders = lock(&pg.orders);
    let first = orders
        .entry(key.to_string())
        .or_insert_with(|| order_id.to_string());
    first != order_id
}

/// The first answer for `key` when it was seen before, waiting for a call still running;
/// `None` when this call is the key's first (its place is then taken).
async fn first_answer(pg: &Pg, key: &str) -> Option<Response> {
    loop {
        let seen = {
            let mut outcomes = lock(&pg.outcomes);
            match outcomes.get(key) {
                None => {
                    outcomes.insert(key.to_string(), None);
                    return None;
                }
                Some(first) => first.clone(),
            }
        };
        if let Some((status, body)) = seen {
            if pg.options.latency_ms > 0 {
                task::sleep(Duration::from_millis(pg.options.latency_ms)).await;
            }
            return Some(answer(status, body));
        }
        task::sleep(Duration::from_millis(5)).await;
    }
}

/// Approves, declines or fails `payment` after the configured latency, counting a
/// charge: the answer's status and body.
async fn decision(pg: &Pg, payment: &Value, key: &str) -> (StatusCode, Value) {
    let order_id = payment["order_id"].as_str().unwrap_or_default();
    let amount = payment["amount"].as_i64().unwrap_or(0);
    let options = &pg.options;
    let jitter = if options.jitter_ms > 0 {
        pg.next_random() % (options.jitter_ms + 1)
    } else {
        0
    };
    let latency_ms = options.latency_ms + jitter;
    // At 0 ms no timer: the benchmark's HTTP-alone rows measure the HTTP stack, not a timer.
    if latency_ms > 0 {
        task::sleep(Duration::from_millis(latency_ms)).await;
    }

    if order_id.starts_with("FAIL") || pg.chance() < options.failure_rate {
        log::info!("mock-pg: {key} failed (500)");
        return (
            StatusCode::InternalServerError,
            json!({"status": "ERROR", "detail": "simulated PG failure"}),
        );
    }
    if order_id.starts_with("DECLINE") || options.decline_over.is_some_and(|limit| amount > limit) {
        log::info!("mock-pg: {key} declined (402)");
        let body = json!({"status": "DECLINED", "order_id": order_id, "detail": "declined by the PG simulator"});
        return (StatusCode::PaymentRequired, body);
    }
    let times = {
        let mut charges = lock(&pg.charges);
        let count = charges.entry(key.to_string()).or_insert(0);
        *count += 1;
        *count
    };
    log::info!("mock-pg: {key} approved (charge #{times} for this key)");
    let approval_id = format!("pg-{}", uuid::Uuid::new_v4());
    lock(&pg.approvals).insert(key.to_string(), approval_id.clone());
    (
        StatusCode::Ok,
        json!({
            "status": "APPROVED",
            "approval_id": approval_id,
            "order_id": order_id,
            "operation": payment["operation"],
            "amount": amount,
        }),
    )
}

/// `{"calls": N, "calls_by_key": {"<idempotency key>": times called}, "charges":
/// {"<idempotency key>": times charged}, "approvals": {"<idempotency key>": "<approval id
/// of its latest charge>"}, "traces": {"<idempotency key>": "<traceparent of its latest
/// call>"}}`.
async fn charges(req: Request<State>) -> tide::Result {
    let pg = req.state();
    let calls_by_key = lock(&pg.calls_by_key).clone();
    let charges = lock(&pg.charges).clone();
    let approvals = lock(&pg.approvals).clone();
    let traces = lock(&pg.traces).clone();
    Ok(answer(
        StatusCode::Ok,
        json!({
            "calls": pg.calls.load(Ordering::Relaxed),
            "calls_by_key": calls_by_key,
            "charges": charges,
            "approvals": approvals,
            "traces": traces,
        }),
    ))
}

/// A map of the simulator's, even after a panic elsewhere: it holds plain counts.
fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = Response::new(status);
    response.set_body(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_every_option() {
        let options = MockPgOptions::parse(&args(&[
            "--listen",
            "127.0.0.1:9999",
            "--latency-ms",
            "20",
            "--jitter-ms",
            "5",
            "--failure-rate",
            "0.25",
            "--decline-over",
            "1000",
            "--slow-ms",
            "300",
            "--idempotent",
            "no",
        ]))
        .unwrap();
        assert_eq!(options.listen.port(), 9999);
        assert_eq!(
            (options.latency_ms, options.jitter_ms, options.slow_ms),
            (20, 5, 300)
        );
        assert_eq!(
            (options.failure_rate, options.decline_over),
            (0.25, Some(1000))
        );
        assert!(!options.idempotent);
        assert!(MockPgOptions::default().idempotent);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(MockPgOptions::parse(&args(&["--failure-rate", "2"])).is_err());
        assert!(MockPgOptions::parse(&args(&["--latency-ms"])).is_err());
        assert!(MockPgOptions::parse(&args(&["--colour", "red"])).is_err());
        assert!(MockPgOptions::parse(&args(&["--idempotent", "maybe"])).is_err());
    }
}
