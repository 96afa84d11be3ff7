//! The soak with faults: no payment is left in doubt. N payments go through three gateway
//! hosts and two workers on tansu, each with its own `Idempotency-Key` and order id, while:
//! - a worker is SIGKILLed with PG calls in flight, and a new worker is started;
//! - the PG "times out" on about 1 in 15 payments: `SLOW…` orders are charged at once and
//!   answered after the workers' `pg_timeout_ms`, so the caller hears `504 pg-unknown`
//!   although the PG charged;
//! - a gateway host is SIGKILLed midway and started again on its address.
//!
//! Every caller must get a definite answer: 200, 402, or a 5xx with `outcome` `unknown` or
//! `not_sent`. A caller of the killed host may lose its connection instead; that counts as
//! unknown, since the payment may have been produced.
//!
//! Then a reconciliation job runs, as a payment team's would: each payment not answered
//! 200 or 402 is repeated once, with the same key and body. The worker settles an
//! in-doubt payment by asking the PG again with the same key (`worker.pg_idempotent`).
//! After it, every key's outcome is asked at
//! `GET /v1/payments/approve/{key}?order_id={order}`, from any host. None may be left
//! unknown: each is 200, or 402 for a `DECLINE…` order. And the PG's own books
//! (`GET /charges`) must agree: no key charged twice, every approved key charged once with
//! the approval id its outcome names, no charge without an approval.
//!
//! `cargo test` runs it small (300 payments, 12 callers). A test takes no arguments, so a
//! bigger run comes from the environment: `SOAK_DOUBT_REQUESTS` (300), `SOAK_DOUBT_CALLERS`
//! (12), `SOAK_DOUBT_TIMEOUT_MS` (10000, each caller's `request-timeout` during the load),
//! e.g. `SOAK_DOUBT_REQUESTS=5000 SOAK_DOUBT_CALLERS=32 cargo test --release --test
//! soak_in_doubt -- --nocapture`. The summary goes to stderr.

mod common;

use common::hosts::{gateway_on_own_ip, host_table};
use common::keep_alive::KeepAlive;
use common::system::system_config_with;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The gateway hosts, as in `tests/soak.rs`: the two of `etc/reply-hosts.txt` and a third.
const HOSTS: [(&str, &str); 3] = [
    ("127.0.0.2", "local2"),
    ("127.0.0.3", "local3"),
    ("127.0.0.4", "local4"),
];
/// The host that is killed and started again midway.
const RESTARTED_HOST: usize = 2;
/// The workers' `pg_timeout_ms`: a PG call without an answer by then is in doubt.
const PG_TIMEOUT_MS: u64 = 1000;
/// How much later than charged the PG answers a `SLOW…` order: past the PG timeout.
const PG_SLOW_MS: &str = "2500";
/// One payment in this many is a `SLOW…` order, and one in [`DECLINE_EVERY`] a decline.
const SLOW_EVERY: usize = 15;
const DECLINE_EVERY: usize = 25;
/// The load's progress at which each fault is set off.
const KILL_WORKER_AT: f64 = 0.1;
const RESTART_GATEWAY_AT: f64 = 0.4;
/// A repeat's `request-timeout`: long enough to wait out an earlier attempt's deadline
/// (`pg_timeout_ms` + 5 s) and a takeover.
const REPEAT_TIMEOUT_MS: &str = "30000";
/// How long an outcome still `409 payment-in-progress` (or not answered) is asked again.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(20);
/// The longest a fault may take to play out (a kill's takeover, a host's restart).
const FAULT_LIMIT: Duration = Duration::from_secs(90);

struct Settings {
    requests: usize,
    callers: usize,
    timeout_ms: u64,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            requests: env_number("SOAK_DOUBT_REQUESTS", 300),
            callers: env_number("SOAK_DOUBT_CALLERS", 12),
            timeout_ms: env_number("SOAK_DOUBT_TIMEOUT_MS", 10_000) as u64,
        }
    }

    /// The answer count at which `share` of the load is done.
    fn at(&self, share: f64) -> usize {
        ((self.requests as f64 * share) as usize).max(1)
    }
}

/// Payment number `index`: its own order id and `Idempotency-Key`.
#[derive(Clone, Copy)]
struct Payment {
    index: usize,
}

impl Payment {
    fn slow(self) -> bool {
        self.index % SLOW_EVERY == SLOW_EVERY / 2
    }

    fn declined(self) -> bool {
        !self.slow() && self.index % DECLINE_EVERY == DECLINE_EVERY / 2
    }

    fn order_id(self) -> String {
        let prefix = if self.slow() {
            "SLOW"
        } else if self.declined() {
            "DECLINE"
        } else {
            "DOUBT"
        };
        format!("{prefix}-{}", self.index)
    }

    /// URL-safe, so the outcome URL needs no encoding.
    fn key(self) -> String {
        format!("doubt-{}", self.index)
    }

    /// Round-robin over the hosts, as a load balancer would.
    fn host(self) -> usize {
        self.index % HOSTS.len()
    }

    /// The same bytes every time: a repeat must be the same request.
    fn body(self) -> Vec<u8> {
        let body = json!({"order_id": self.order_id(), "amount": 1 + self.index % 1000, "currency": "KRW"});
        body.to_string().into_bytes()
    }

    fn headers(self, timeout_ms: &str) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/json".into()),
            ("idempotency-key", self.key()),
            ("request-timeout", timeout_ms.into()),
        ]
    }

    /// The lookup names the order: its partition holds the payment's state.
    fn outcome_path(self) -> String {
        format!(
            "/v1/payments/approve/{}?order_id={}",
            self.key(),
            self.order_id()
        )
    }
}

fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// What a caller (or a lookup) was answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 200 naming its own order, with the PG's approval id.
    Approved(String),
    /// `402 declined` for a `DECLINE…` order.
    Declined,
    /// A 5xx with `outcome` `unknown` or `not_sent`, or a broken connection to the host
    /// that was killed: charged or not, nobody knows yet. By status and code.
    Unknown(String),
    /// Anything else: no definite answer, or someone else's. Fails the test.
    Wrong(String),
}

impl Answer {
    /// Reads a payment's answer. A broken connection is unknown only on a host that was
    /// killed (`may_break`); on any other it is wrong.
    fn of(payment: Payment, sent: std::io::Result<HttpResponse>, may_break: bool) -> Answer {
        let response = match sent {
            Ok(response) => response,
            Err(e) if may_break => return Answer::Unknown(format!("connection {:?}", e.kind())),
            Err(e) => return Answer::Wrong(format!("{}: no answer ({e})", payment.key())),
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let code = body["code"].as_str().unwrap_or("-");
        let wrong = || {
            Answer::Wrong(format!(
                "{} ({}): {} {body}",
                payment.key(),
                payment.order_id(),
                response.status
            ))
        };
        match response.status {
            200 if body["order_id"] == payment.order_id().as_str() && !payment.declined() => {
                match body["approval_id"].as_str() {
                    Some(id) => Answer::Approved(id.to_string()),
                    None => wrong(),
                }
            }
            402 if code == "declined" && payment.declined() => Answer::Declined,
            status @ 500.. if body["outcome"] == "unknown" || body["outcome"] == "not_sent" => {
                Answer::Unknown(format!("{status} {code}"))
            }
            _ => wrong(),
        }
    }

    fn settled(&self) -> bool {
        matches!(self, Answer::Approved(_) | Answer::Declined)
    }

    /// What the outcome of `payment` must be once settled.
    fn expected(payment: Payment) -> &'static str {
        if payment.declined() { "402" } else { "200" }
    }

    fn label(&self) -> String {
        match self {
            Answer::Approved(_) => "200".into(),
            Answer::Declined => "402".into(),
            Answer::Unknown(label) => label.clone(),
            Answer::Wrong(what) => format!("wrong: {what}"),
        }
    }
}

/// Counts by label, for the summary.
fn by_label<'a>(answers: impl Iterator<Item = &'a Answer>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        let label = match answer {
            Answer::Wrong(_) => "wrong".into(),
            other => other.label(),
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
}

/// Broker, PG simulator, three gateway hosts, two workers; and the processes the faults
/// ended, kept for their logs.
struct Stack {
    broker: Broker,
    pg: MockPg,
    config: PathBuf,
    gateways: Vec<Gateway>,
    workers: Vec<Worker>,
    killed_workers: Vec<Worker>,
}

impl Stack {
    fn start() -> Stack {
        let broker = Broker::start();
        broker.create_standard_topics();
        broker.create_topics(&["payment_response_local4"], 3);
        let pg = MockPg::start(&["--latency-ms", "20", "--slow-ms", PG_SLOW_MS]);
        let table = host_table(&HOSTS);
        // Auto-created topics (the results topic), a 6 s session, the 1 s PG timeout.
        let config = system_config_with(PG_TIMEOUT_MS, |c| c["host_table"] = json!(table));
        let gateways = HOSTS
            .iter()
            .map(|(ip, _)| gateway_on_own_ip(&broker.addr, ip, &config))
            .collect();
        let workers: Vec<Worker> = (0..2)
            .map(|_| spawn_worker(&broker, &pg, &config))
            .collect();
        wait_assigned(&workers.iter().collect::<Vec<_>>(), 3);
        Stack {
            broker,
            pg,
            config,
            gateways,
            workers,
            killed_workers: Vec::new(),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().map(|g| g.addr).collect()
    }
}

fn spawn_worker(broker: &Broker, pg: &MockPg, config: &std::path::Path) -> Worker {
    let name = format!("doubt-worker-{}", free_port());
    Worker::spawn(&name, &broker.addr, pg, config)
}

/// Shared between the callers and the faults.
struct Progress {
    next: AtomicUsize,
    answered: AtomicUsize,
}

impl Progress {
    fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }

    fn wait_for(&self, answers: usize) {
        while self.answered() < answers {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One caller: takes the next payment until none are left, each to the next host in turn,
/// over a keep-alive connection per host. Returns each payment's answer by its index.
fn caller(addrs: &[SocketAddr], progress: &Progress, settings: &Settings) -> Vec<(usize, Answer)> {
    let mut clients: Vec<KeepAlive> = addrs.iter().map(|a| KeepAlive::new(*a)).collect();
    let timeout = settings.timeout_ms.to_string();
    let mut answers = Vec::new();
    loop {
        let index = progress.next.fetch_add(1, Ordering::AcqRel);
        if index >= settings.requests {
            return answers;
        }
        let payment = Payment { index };
        let headers = payment.headers(&timeout);
        let sent = clients[payment.host()].send(
            "POST",
            "/v1/payments/approve",
            &borrowed(&headers),
            &payment.body(),
        );
        let may_break = payment.host() == RESTARTED_HOST;
        answers.push((index, Answer::of(payment, sent, may_break)));
        let answered = progress.answered.fetch_add(1, Ordering::AcqRel) + 1;
        if answered.is_multiple_of((settings.requests / 5).max(1)) {
            eprintln!("soak in doubt: {answered}/{} answered", settings.requests);
        }
    }
}

/// How the faults went.
struct Faults {
    /// Answers when the worker was killed, and its PG calls in flight then.
    worker_killed_at: usize,
    calls_in_flight: f64,
    /// From the kill until the live workers owned every request partition again.
    takeover_after: Duration,
    /// Answers when the gateway host was killed, and how long until it was ready again.
    gateway_killed_at: usize,
    gateway_back_after: Duration,
}

/// SIGKILLs the first worker once a tenth of the load is answered and it has a PG call in
/// flight, and starts a new one; SIGKILLs the third gateway host at 40 % and starts it
/// again on its address. Returns once both have played out.
fn inject_faults(stack: &mut Stack, progress: &Progress, settings: &Settings) -> Faults {
    progress.wait_for(settings.at(KILL_WORKER_AT));
    let victim = &stack.workers[0];
    let since = Instant::now();
    let calls_in_flight = loop {
        if let Some(calls) = victim
            .metric("kreply_worker_pg_calls_in_flight")
            .filter(|calls| *calls >= 1.0)
        {
            break calls;
        }
        assert!(
            progress.answered() < settings.requests && since.elapsed() < FAULT_LIMIT,
            "worker 1 never had a PG call in flight during the load; raise SOAK_DOUBT_REQUESTS"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    victim.daemon.signal("KILL");
    let killed = Instant::now();
    let worker_killed_at = progress.answered();
    stack.workers[0].daemon.wait_exit(Duration::from_secs(10));
    let new = spawn_worker(&stack.broker, &stack.pg, &stack.config);
    let old = std::mem::replace(&mut stack.workers[0], new);
    stack.killed_workers.push(old);

    let (mut takeover_after, mut gateway) = (None, None);
    while takeover_after.is_none() || gateway.is_none() {
        if gateway.is_none() && progress.answered() >= settings.at(RESTART_GATEWAY_AT) {
            gateway = Some((progress.answered(), restart_gateway(stack)));
        }
        if takeover_after.is_none() && own_every_partition(&stack.workers) {
            takeover_after = Some(killed.elapsed());
        }
        assert!(
            killed.elapsed() < FAULT_LIMIT,
            "the live workers did not own every request partition {FAULT_LIMIT:?} after the \
             kill: {:?}",
            stack
                .workers
                .iter()
                .map(Worker::assigned)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (gateway_killed_at, gateway_back_after) = gateway.unwrap();
    Faults {
        worker_killed_at,
        calls_in_flight,
        takeover_after: takeover_after.unwrap(),
        gateway_killed_at,
        gateway_back_after,
    }
}

/// Whether `workers` between them own each of the 3 request partitions, once.
fn own_every_partition(workers: &[Worker]) -> bool {
    let counted: f64 = workers
        .iter()
        .filter_map(|w| w.metric("kreply_worker_partitions_assigned"))
        .sum();
    let logged: BTreeSet<i32> = workers.iter().flat_map(Worker::assigned).collect();
    counted == 3.0 && logged == BTreeSet::from([0, 1, 2])
}

/// SIGKILLs the gateway of [`RESTARTED_HOST`] and starts a new one for the same host IP on
/// the same address; returns once it is ready. Its log gets a name of its own, so the
/// killed process's log is kept (`Gateway::spawn_at` would write over it).
fn restart_gateway(stack: &mut Stack) -> Duration {
    let old = &mut stack.gateways[RESTARTED_HOST];
    old.daemon.signal("KILL");
    let killed = Instant::now();
    old.daemon.wait_exit(Duration::from_secs(10));
    let (ip, addr) = (HOSTS[RESTARTED_HOST].0, old.addr);
    let listen = addr.to_string();
    let daemon = Daemon::spawn(
        &format!("gateway-{ip}-{}-restarted", addr.port()),
        &["gateway", "--config", stack.config.to_str().unwrap()],
        &[
            ("KREPLY_BROKERS", &stack.broker.addr),
            ("KREPLY_LISTEN", &listen),
            ("KREPLY_HOST_IP", ip),
            ("RUST_LOG", "info"),
        ],
    );
    let restarted = Gateway { addr, daemon };
    restarted.wait_ready();
    stack.gateways[RESTARTED_HOST] = restarted;
    killed.elapsed()
}

/// Every payment through the callers, with the faults injected on this thread. Returns
/// each payment's first answer, by index.
fn run_load(stack: &mut Stack, settings: &Settings) -> (Vec<Answer>, Faults) {
    let progress = Progress {
        next: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
    };
    let addrs = stack.addrs();
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..settings.callers)
            .map(|_| s.spawn(|| caller(&addrs, &progress, settings)))
            .collect();
        let faults = inject_faults(stack, &progress, settings);
        let mut first = vec![Answer::Wrong("never sent".into()); settings.requests];
        for one in callers {
            for (index, answer) in one.join().unwrap() {
                first[index] = answer;
            }
        }
        (first, faults)
    })
}

/// Runs `job` on every index in `indices` from `threads` threads at once; its results in
/// the order of `indices`.
fn in_parallel<T: Send>(
    indices: &[usize],
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::AcqRel);
                        let Some(index) = indices.get(at) else {
                            return done;
                        };
                        done.push((at, job(*index)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    results.sort_by_key(|(at, _)| *at);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The reconciliation job: each payment whose first answer was not definite is repeated
/// once, with the same key and body, through another host than the first. Returns
/// (index, the repeat's answer) pairs.
fn reconcile(addrs: &[SocketAddr], first: &[Answer], threads: usize) -> Vec<(usize, Answer)> {
    let in_doubt: Vec<usize> = (0..first.len())
        .filter(|i| matches!(first[*i], Answer::Unknown(_)))
        .collect();
    let answers = in_parallel(&in_doubt, threads, |index| {
        let payment = Payment { index };
        let headers = payment.headers(REPEAT_TIMEOUT_MS);
        let host = (payment.host() + 1) % addrs.len();
        let sent = request(
            addrs[host],
            "POST",
            "/v1/payments/approve",
            &borrowed(&headers),
            &payment.body(),
        );
        Answer::of(payment, sent, false)
    });
    in_doubt.into_iter().zip(answers).collect()
}

/// A random host, as a load balancer might pick for a lookup.
fn any_host(addrs: &[SocketAddr]) -> SocketAddr {
    addrs[(uuid::Uuid::new_v4().as_u128() % addrs.len() as u128) as usize]
}

/// One lookup of `payment`'s outcome at a random host: `Ok` when settled (or wrong), `Err`
/// with what it said when it is worth asking again (in progress, no worker in time, a
/// refusal before anything was sent).
fn look_up(addrs: &[SocketAddr], payment: Payment) -> Result<Answer, String> {
    let response = match get(any_host(addrs), &payment.outcome_path()) {
        Ok(response) => response,
        Err(e) => return Err(format!("connection {:?}", e.kind())),
    };
    let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let code = body["code"].as_str().unwrap_or("-");
    match (response.status, code) {
        (200 | 402, _) => Ok(Answer::of(payment, Ok(response), false)),
        (409, "payment-in-progress")
        | (504, "lookup-timeout")
        | (503, "not-ready" | "overloaded" | "lookup-not-sent") => {
            Err(format!("{} {code}", response.status))
        }
        (status, _) => Ok(Answer::Wrong(format!(
            "{}: outcome {status} {body}",
            payment.key()
        ))),
    }
}

/// Every key's outcome, and how many keys had to be asked again (by the first answer that
/// made them).
struct Outcomes {
    settled: Vec<Answer>,
    asked_again: BTreeMap<String, usize>,
}

/// Asks every key's outcome once, from `threads` threads; asks those in progress again
/// every half second for up to [`IN_PROGRESS_WAIT`]. A key still unsettled then is wrong.
fn outcomes(addrs: &[SocketAddr], requests: usize, threads: usize) -> Outcomes {
    let every: Vec<usize> = (0..requests).collect();
    let mut answers = in_parallel(&every, threads, |index| look_up(addrs, Payment { index }));
    let mut asked_again = BTreeMap::new();
    for why in answers.iter().filter_map(|a| a.as_ref().err()) {
        *asked_again.entry(why.clone()).or_default() += 1;
    }
    let deadline = Instant::now() + IN_PROGRESS_WAIT;
    while answers.iter().any(Result::is_err) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        for (index, answer) in answers.iter_mut().enumerate() {
            if answer.is_err() {
                *answer = look_up(addrs, Payment { index });
            }
        }
    }
    let settled = answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| {
            answer.unwrap_or_else(|why| {
                Answer::Wrong(format!(
                    "{}: still {why} after {IN_PROGRESS_WAIT:?}",
                    Payment { index }.key()
                ))
            })
        })
        .collect();
    Outcomes {
        settled,
        asked_again,
    }
}

/// The PG's books (`GET /charges`) against the outcomes and every answer a caller heard:
/// what disagrees, in words.
struct Books {
    calls: u64,
    charges: u64,
    charged_keys: usize,
    disagreements: Vec<String>,
}

fn audit(pg: &Value, outcomes: &[Answer], heard: &[(usize, &Answer)]) -> Books {
    let charges = pg["charges"].as_object().cloned().unwrap_or_default();
    let approvals = pg["approvals"].as_object().cloned().unwrap_or_default();
    let times = |key: &str| charges.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut disagreements = Vec::new();
    let ours: BTreeMap<String, usize> = (0..outcomes.len())
        .map(|index| (Payment { index }.key(), index))
        .collect();
    for (key, _) in pg["calls_by_key"].as_object().cloned().unwrap_or_default() {
        if !ours.contains_key(&key) {
            disagreements.push(format!("the PG was called for a key never paid: {key}"));
        }
    }
    for (key, count) in &charges {
        let count = count.as_u64().unwrap_or(0);
        if count > 1 {
            disagreements.push(format!("{key} charged {count} times"));
        }
        let approved = ours
            .get(key)
            .is_some_and(|i| matches!(outcomes[*i], Answer::Approved(_)));
        if count >= 1 && !approved {
            let outcome = ours.get(key).map(|i| outcomes[*i].label());
            disagreements.push(format!("{key} charged, but its outcome is {outcome:?}"));
        }
    }
    for (index, outcome) in outcomes.iter().enumerate() {
        let key = Payment { index }.key();
        match outcome {
            Answer::Approved(id) => {
                if times(&key) != 1 {
                    disagreements.push(format!("{key} approved, charged {} times", times(&key)));
                }
                if approvals.get(&key).and_then(Value::as_str) != Some(id.as_str()) {
                    disagreements.push(format!(
                        "{key}: outcome approval {id}, PG approval {:?}",
                        approvals.get(&key)
                    ));
                }
            }
            Answer::Declined if times(&key) != 0 => {
                disagreements.push(format!("{key} declined, charged {} times", times(&key)));
            }
            _ => {}
        }
    }
    // Every approval a caller was told of, at once or on its repeat, is the PG's one.
    for (index, answer) in heard {
        let key = Payment { index: *index }.key();
        if let Answer::Approved(id) = answer
            && approvals.get(&key).and_then(Value::as_str) != Some(id.as_str())
        {
            disagreements.push(format!(
                "{key}: a caller was told approval {id}, PG approval {:?}",
                approvals.get(&key)
            ));
        }
    }
    Books {
        calls: pg["calls"].as_u64().unwrap_or(0),
        charges: charges.values().filter_map(Value::as_u64).sum(),
        charged_keys: charges.len(),
        disagreements,
    }
}

/// Everything the summary shows and the checks read.
struct Run {
    first: Vec<Answer>,
    repeats: Vec<(usize, Answer)>,
    outcomes: Outcomes,
    books: Books,
    faults: Faults,
    /// `kreply_worker_asked_pg_again_total` over the workers still alive.
    asked_pg_again: f64,
    phases: [(&'static str, Duration); 4],
}

fn print_summary(settings: &Settings, run: &Run) {
    let payments = (0..settings.requests).map(|index| Payment { index });
    let slow = payments.clone().filter(|p| p.slow()).count();
    let declines = payments.filter(|p| p.declined()).count();
    let first = by_label(run.first.iter());
    let unknown: BTreeMap<&String, &usize> = first
        .iter()
        .filter(|(label, _)| !["200", "402", "wrong"].contains(&label.as_str()))
        .collect();
    let repeats = by_label(run.repeats.iter().map(|(_, a)| a));
    let reconciled = run.repeats.iter().filter(|(_, a)| a.settled()).count();
    let outcomes = by_label(run.outcomes.settled.iter());
    let faults = &run.faults;
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let total: Duration = run.phases.iter().map(|(_, d)| *d).sum();
    eprintln!(
        "\n== soak in doubt: {} payments, {} callers, {} gateway hosts, 2 workers; PG timeout \
         {PG_TIMEOUT_MS} ms, SLOW orders answered after {PG_SLOW_MS} ms ==",
        settings.requests,
        settings.callers,
        HOSTS.len()
    );
    let rows = [
        (
            "payments",
            format!("{} ({slow} SLOW, {declines} DECLINE)", settings.requests),
        ),
        (
            "answered 200 at once",
            first.get("200").copied().unwrap_or(0).to_string(),
        ),
        (
            "answered 402 at once",
            first.get("402").copied().unwrap_or(0).to_string(),
        ),
        (
            "unknown at first",
            format!("{} {unknown:?}", unknown.values().copied().sum::<usize>()),
        ),
        (
            "reconciled by repeat",
            format!("{reconciled} of {} {repeats:?}", run.repeats.len()),
        ),
        (
            "outcomes looked up",
            format!("{outcomes:?}; asked again: {:?}", run.outcomes.asked_again),
        ),
        ("PG calls", run.books.calls.to_string()),
        (
            "PG charges",
            format!(
                "{} ({} keys; {} disagreements with the outcomes)",
                run.books.charges,
                run.books.charged_keys,
                run.books.disagreements.len()
            ),
        ),
        (
            "keys asked again by workers",
            format!(
                "{} (live workers' kreply_worker_asked_pg_again_total)",
                run.asked_pg_again
            ),
        ),
        (
            "worker killed",
            format!(
                "at answer {} with {} PG calls in flight; live workers owned every partition {} later",
                faults.worker_killed_at,
                faults.calls_in_flight,
                secs(faults.takeover_after)
            ),
        ),
        (
            "gateway restarted",
            format!(
                "{} at answer {}; ready again {} later",
                HOSTS[RESTARTED_HOST].0,
                faults.gateway_killed_at,
                secs(faults.gateway_back_after)
            ),
        ),
        (
            "wall time",
            format!(
                "{} ({})",
                secs(total),
                run.phases
                    .iter()
                    .map(|(name, d)| format!("{name} {}", secs(*d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ];
    for (name, value) in rows {
        eprintln!("{name:<28}{value}");
    }
}

/// Fails with up to ten examples when `problems` is not empty.
fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} {what}, e.g. {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

fn wrong<'a>(answers: impl Iterator<Item = &'a Answer>) -> Vec<String> {
    answers
        .filter_map(|a| match a {
            Answer::Wrong(what) => Some(what.clone()),
            _ => None,
        })
        .collect()
}

fn check(run: &Run) {
    assert_none(
        "callers without a definite answer",
        &wrong(run.first.iter()),
    );
    assert!(
        run.first.iter().any(|a| matches!(a, Answer::Unknown(_))),
        "no payment was left in doubt by the faults: the run proves nothing"
    );
    assert_none(
        "repeats without a definite answer",
        &wrong(run.repeats.iter().map(|(_, a)| a)),
    );
    let unsettled: Vec<String> = run
        .outcomes
        .settled
        .iter()
        .enumerate()
        .filter_map(|(index, outcome)| {
            let payment = Payment { index };
            (outcome.label() != Answer::expected(payment)).then(|| {
                format!(
                    "{} ({}): outcome {}, expected {}",
                    payment.key(),
                    payment.order_id(),
                    outcome.label(),
                    Answer::expected(payment)
                )
            })
        })
        .collect();
    assert_none("payments left unsettled", &unsettled);
    assert_none(
        "disagreements between the PG's books and the outcomes",
        &run.books.disagreements,
    );
    if run.first.iter().any(|a| a.label() == "504 pg-unknown") {
        assert!(
            run.asked_pg_again >= 1.0,
            "payments were answered pg-unknown, but no live worker asked the PG again"
        );
    }
}

#[test]
fn no_payment_left_in_doubt_after_a_worker_kill_pg_timeouts_and_a_gateway_restart() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let mut stack = Stack::start();
    let setup = started.elapsed();

    let loading = Instant::now();
    let (first, faults) = run_load(&mut stack, &settings);
    let load = loading.elapsed();

    let addrs = stack.addrs();
    let reconciling = Instant::now();
    let repeats = reconcile(&addrs, &first, settings.callers);
    let reconcile_time = reconciling.elapsed();

    let looking = Instant::now();
    let outcomes = outcomes(&addrs, settings.requests, settings.callers);
    let lookups = looking.elapsed();

    let heard: Vec<(usize, &Answer)> = first
        .iter()
        .enumerate()
        .chain(repeats.iter().map(|(i, a)| (*i, a)))
        .collect();
    let books = audit(&stack.pg.charges(), &outcomes.settled, &heard);
    let asked_pg_again = stack
        .workers
        .iter()
        .filter_map(|w| w.metric("kreply_worker_asked_pg_again_total"))
        .sum();
    let run = Run {
        first,
        repeats,
        outcomes,
        books,
        faults,
        asked_pg_again,
        phases: [
            ("setup", setup),
            ("load", load),
            ("reconcile", reconcile_time),
            ("lookups", lookups),
        ],
    };
    print_summary(&settings, &run);
    check(&run);
}
