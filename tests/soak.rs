//! The soak (issue 7, item 10): N payments through three gateway hosts and two workers, one
//! worker restarted midway, checked end to end:
//! - every caller got a definite answer: the reply (200), or `504` with `outcome: unknown`
//!   (counted apart, then asked again at `GET /v1/requests/{id}`, see [`late_answers`]);
//! - no reply reached the wrong caller: every order id is unique and its answer must name it;
//! - no order was charged twice: the PG simulator counts charges per `Idempotency-Key`;
//! - the memory of every gateway and worker stayed flat (see `common::rss`).
//!
//! `cargo test` runs it small; `scripts/soak N` runs it big in release mode and prints the
//! summary. A test takes no arguments, so the settings come from the environment:
//! `SOAK_REQUESTS` (600), `SOAK_CALLERS` (16), `SOAK_TIMEOUT_MS` (30000, each caller's
//! `request-timeout`), `SOAK_RESTART`: `term` (the default: SIGTERM, exit 0, start a new
//! worker; every payment must end 200) or `kill` (SIGKILL, then a new worker; `504
//! unknown` answers are allowed and reported).

mod common;

use common::hosts::{gateway_on_own_ip, host_table};
use common::keep_alive::KeepAlive;
use common::rss::{RssSampler, Series, leak_bound_kb, rss_kb};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The gateway hosts: the two of `etc/reply-hosts.txt` and a third of the soak's own.
const HOSTS: [(&str, &str); 3] = [
    ("127.0.0.2", "local2"),
    ("127.0.0.3", "local3"),
    ("127.0.0.4", "local4"),
];
const OPERATIONS: [&str; 3] = ["approve", "cancel", "refund"];
const RSS_INTERVAL: Duration = Duration::from_millis(250);
/// How long 504s are asked again for a late answer before they count as still unknown.
const LATE_ANSWER_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    /// SIGTERM: the worker finishes its batch, commits, leaves the group, exits 0.
    Term,
    /// SIGKILL: a crash; its uncommitted requests wait for a takeover.
    Kill,
}

struct Settings {
    requests: usize,
    callers: usize,
    timeout_ms: u64,
    restart: Restart,
}

impl Settings {
    fn from_env() -> Settings {
        let restart = match std::env::var("SOAK_RESTART").as_deref() {
            Err(_) | Ok("term") => Restart::Term,
            Ok("kill") => Restart::Kill,
            Ok(other) => panic!("SOAK_RESTART={other:?}: use term or kill"),
        };
        Settings {
            requests: env_number("SOAK_REQUESTS", 600),
            callers: env_number("SOAK_CALLERS", 16),
            timeout_ms: env_number("SOAK_TIMEOUT_MS", 30_000) as u64,
            restart,
        }
    }

    /// Requests answered before a process's memory counts as warm: a tenth of the run.
    fn warmup(&self) -> usize {
        (self.requests / 10).max(1)
    }
}

/// Broker, PG simulator, three gateway hosts and two workers with the partitions shared.
struct Stack {
    broker: Broker,
    pg: MockPg,
    config: PathBuf,
    gateways: Vec<Gateway>,
    workers: Vec<Worker>,
}

impl Stack {
    /// The stack on tansu, as `SOAK_STORAGE` says.
    fn start() -> Stack {
        // tansu's memory storage grows slower per fetch as its logs grow (at 40,000
        // payments it was CPU-bound at 170% and served a quarter of the first rate);
        // `SOAK_STORAGE=sqlite` runs the big soak on its sqlite storage instead.
        let broker = match std::env::var("SOAK_STORAGE").as_deref() {
            Err(_) | Ok("memory") => Broker::start(),
            Ok("sqlite") => Broker::start_persistent(),
            Ok(other) => panic!("SOAK_STORAGE={other:?}: use memory or sqlite"),
        };
        Stack::start_on(broker)
    }

    fn start_on(broker: Broker) -> Stack {
        broker.create_standard_topics();
        broker.create_topics(&["payment_response_local4"], 3);
        let pg = MockPg::start(&["--latency-ms", "5", "--jitter-ms", "10"]);
        let table = host_table(&HOSTS);
        let config = config_with(|c| {
            c["host_table"] = json!(table);
            c["topics"]["auto_create"] = json!(true); // the workers' results topic
            c["worker"]["session_timeout_ms"] = json!(6000);
        });
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
        }
    }

    fn track_memory(&self, sampler: &RssSampler) {
        for (gateway, (_, suffix)) in self.gateways.iter().zip(HOSTS) {
            sampler.track(&format!("gateway {suffix}"), gateway.daemon.pid());
        }
        for (n, worker) in self.workers.iter().enumerate() {
            sampler.track(&format!("worker {}", n + 1), worker.daemon.pid());
        }
    }
}

fn spawn_worker(broker: &Broker, pg: &MockPg, config: &std::path::Path) -> Worker {
    let name = format!("soak-worker-{}", free_port());
    Worker::spawn(&name, &broker.addr, pg, config)
}

/// Payment number `index`: its own order id and `Idempotency-Key`, so its answer names it.
struct Payment {
    index: usize,
}

impl Payment {
    fn order_id(&self) -> String {
        format!("SOAK-{}", self.index)
    }

    fn key(&self) -> String {
        format!("soak-{}", self.index)
    }

    /// Round-robin over the hosts, as a load balancer would.
    fn host(&self) -> usize {
        self.index % HOSTS.len()
    }

    fn send(&self, client: &mut KeepAlive, timeout_ms: u64) -> std::io::Result<HttpResponse> {
        let operation = OPERATIONS[(self.index / HOSTS.len()) % OPERATIONS.len()];
        let body = json!({"order_id": self.order_id(), "amount": 1 + self.index % 1000, "currency": "KRW"});
        client.send(
            "POST",
            &format!("/v1/payments/{operation}"),
            &[
                ("content-type", "application/json"),
                ("idempotency-key", &self.key()),
                ("request-timeout", &timeout_ms.to_string()),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// Whether an answer (a reply value) is this payment's.
    fn owns(&self, reply: &Value) -> bool {
        reply["order_id"] == self.order_id().as_str()
    }
}

/// A `504` with `outcome: unknown`: where to ask for its late answer.
struct Unanswered {
    index: usize,
    host: usize,
    correlation_id: String,
    code: String,
    /// Why, in the gateway's words: no acknowledgement, or no reply, within the wait.
    detail: String,
}

/// What every call ended in.
#[derive(Default)]
struct Tally {
    /// Payments answered 200 with their own order id.
    replied: Vec<usize>,
    /// Answers that named another payment's order.
    misrouted: Vec<String>,
    unknown: Vec<Unanswered>,
    /// Anything else, by status and problem code: no definite answer.
    indefinite: BTreeMap<String, usize>,
    /// Keep-alive connections the gateways had closed while idle, replaced.
    reopened: usize,
}

impl Tally {
    fn add(&mut self, payment: &Payment, response: std::io::Result<HttpResponse>) {
        let response = match response {
            Ok(response) => response,
            Err(e) => return self.indefinite_one(format!("no answer ({:?})", e.kind())),
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        match response.status {
            200 if payment.owns(&body) => self.replied.push(payment.index),
            200 => self
                .misrouted
                .push(format!("{} was answered {body}", payment.order_id())),
            504 if body["outcome"] == "unknown" => self.unknown.push(Unanswered {
                index: payment.index,
                host: payment.host(),
                correlation_id: response.header("x-correlation-id").unwrap_or("").into(),
                code: body["code"].as_str().unwrap_or("-").into(),
                detail: body["detail"].as_str().unwrap_or("-").into(),
            }),
            status => self.indefinite_one(format!("{status} {}", body["code"])),
        }
    }

    fn indefinite_one(&mut self, label: String) {
        *self.indefinite.entry(label).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.replied.extend(other.replied);
        self.misrouted.extend(other.misrouted);
        self.unknown.extend(other.unknown);
        self.reopened += other.reopened;
        for (label, count) in other.indefinite {
            *self.indefinite.entry(label).or_default() += count;
        }
    }

    fn unknown_by_code(&self) -> BTreeMap<&str, usize> {
        let mut codes = BTreeMap::new();
        for one in &self.unknown {
            *codes.entry(one.code.as_str()).or_default() += 1;
        }
        codes
    }
}

/// Shared between the callers, the restart and the memory sampler.
struct Progress {
    next: AtomicUsize,
    answered: Arc<AtomicUsize>,
    started: Instant,
}

impl Progress {
    /// Counts one answer; prints a line at every tenth of the run.
    fn answered_one(&self, total: usize) {
        let answered = self.answered.fetch_add(1, Ordering::AcqRel) + 1;
        if answered.is_multiple_of((total / 10).max(1)) {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!("soak: {answered}/{total} answered after {secs:.1} s");
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }
}

/// One caller: takes the next payment until none are left, each to the next host in turn,
/// over a keep-alive connection per host.
fn caller(gateways: &[Gateway], progress: &Progress, settings: &Settings) -> Tally {
    let mut clients: Vec<KeepAlive> = gateways.iter().map(|g| KeepAlive::new(g.addr)).collect();
    let mut tally = Tally::default();
    loop {
        let index = progress.next.fetch_add(1, Ordering::AcqRel);
        if index >= settings.requests {
            break;
        }
        let payment = Payment { index };
        let response = payment.send(&mut clients[payment.host()], settings.timeout_ms);
        tally.add(&payment, response);
        progress.answered_one(settings.requests);
    }
    tally.reopened = clients.iter().map(|c| c.reopened).sum();
    tally
}

/// How the worker restart went.
struct Restarted {
    at_answer: usize,
    /// The old worker's exit code (`None`: ended by a signal).
    exit: Option<i32>,
    stopped_in: Duration,
    /// When the new worker logged partitions of its own, counted from the signal.
    assigned_after: Option<Duration>,
    /// Requests the stopped worker answered from the results store, as redeliveries.
    old_repeats: usize,
}

/// How many redelivered requests `worker` answered from its results store (logged once
/// each) rather than by calling the PG: the no-double-charge record at work.
fn repeats(worker: &Worker) -> usize {
    worker.daemon.log_text().matches("repeat of ").count()
}

/// Once half the payments are answered, stops the first worker (SIGTERM or SIGKILL) and
/// starts a new one in its place; watches the new one get partitions while the load lasts.
fn restart_midway(
    stack: (&Broker, &MockPg, &std::path::Path),
    workers: &mut [Worker],
    progress: &Progress,
    settings: &Settings,
    sampler: &RssSampler,
) -> Restarted {
    while progress.answered() < settings.requests / 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_answer = progress.answered();
    let signalled = Instant::now();
    let old = &mut workers[0];
    old.daemon.signal(match settings.restart {
        Restart::Term => "TERM",
        Restart::Kill => "KILL",
    });
    let exit = old.daemon.wait_exit(Duration::from_secs(60));
    let old_repeats = repeats(old);
    let stopped_in = signalled.elapsed();
    let (broker, pg, config) = stack;
    workers[0] = spawn_worker(broker, pg, config);
    wait_serving(&workers[0]);
    sampler.track("worker 1 (new)", workers[0].daemon.pid());
    let mut assigned_after = None;
    while assigned_after.is_none() && progress.answered() < settings.requests {
        std::thread::sleep(Duration::from_millis(50));
        assigned_after = (!workers[0].assigned().is_empty()).then(|| signalled.elapsed());
    }
    Restarted {
        at_answer,
        exit,
        old_repeats,
        stopped_in,
        assigned_after,
    }
}

/// Waits until a new worker serves `/healthz`, so its first memory sample is of a running
/// worker rather than of a process still loading. It reads the whole results topic first:
/// at 50,000 payments on a busy tansu that took more than 30 s.
fn wait_serving(worker: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while get(worker.metrics_addr, "/healthz").is_err() {
        assert!(
            Instant::now() < deadline,
            "the new worker never served /healthz"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs every payment through the callers with the restart midway.
fn run_load(
    stack: &mut Stack,
    settings: &Settings,
    progress: &Progress,
    sampler: &RssSampler,
) -> (Tally, Restarted) {
    let Stack {
        broker,
        pg,
        config,
        gateways,
        workers,
    } = stack;
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..settings.callers)
            .map(|_| s.spawn(|| caller(gateways, progress, settings)))
            .collect();
        let restarted = restart_midway((broker, pg, config), workers, progress, settings, sampler);
        let mut tally = Tally::default();
        for one in callers {
            tally.merge(one.join().unwrap());
        }
        (tally, restarted)
    })
}

/// What the late-answer lookups found, by status and code.
#[derive(Default)]
struct LateAnswers {
    found: BTreeMap<String, usize>,
    misrouted: Vec<String>,
}

/// The hook for late answers (issue 7, item 5): each `504 unknown` is asked again at
/// `GET /v1/requests/{correlation_id}` on the host that answered it, until it is found or
/// [`LATE_ANSWER_WAIT`] has passed. A build without that route answers `404 unknown-route`,
/// which the summary shows as such.
fn late_answers(gateways: &[Gateway], unknown: &[Unanswered]) -> LateAnswers {
    let deadline = Instant::now() + LATE_ANSWER_WAIT;
    let mut pending: Vec<&Unanswered> = unknown.iter().collect();
    let mut late = LateAnswers::default();
    while !pending.is_empty() {
        let last_round = Instant::now() >= deadline;
        pending.retain(|one| {
            let path = format!("/v1/requests/{}", one.correlation_id);
            let answer = get(gateways[one.host].addr, &path);
            let (status, body) = answer.map_or((0, Value::Null), |r| {
                (
                    r.status,
                    serde_json::from_slice(&r.body).unwrap_or_default(),
                )
            });
            let still_unknown = status == 404 && body["code"] != "unknown-route";
            if still_unknown && !last_round {
                return true;
            }
            let payment = Payment { index: one.index };
            if status == 200 && !payment.owns(&body) {
                late.misrouted
                    .push(format!("{} was answered late {body}", payment.order_id()));
            }
            *late
                .found
                .entry(format!("{status} {}", body["code"]))
                .or_default() += 1;
            false
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    late
}

/// What the PG simulator charged.
struct Charges {
    keys: usize,
    calls: u64,
    /// Keys charged more than once.
    doubled: Vec<String>,
    /// Payments answered 200 that the PG never charged.
    replied_uncharged: usize,
}

fn charges(pg: &MockPg, tally: &Tally) -> Charges {
    let answer = pg.charges();
    let charged = answer["charges"].as_object().cloned().unwrap_or_default();
    Charges {
        keys: charged.len(),
        calls: answer["calls"].as_u64().unwrap_or(0),
        doubled: charged
            .iter()
            .filter(|(_, times)| times.as_u64() != Some(1))
            .map(|(key, times)| format!("{key} x{times}"))
            .collect(),
        replied_uncharged: tally
            .replied
            .iter()
            .filter(|i| !charged.contains_key(&Payment { index: **i }.key()))
            .count(),
    }
}

/// Everything the summary shows.
struct Run {
    tally: Tally,
    late: LateAnswers,
    charges: Charges,
    restarted: Restarted,
    memory: Vec<Series>,
    /// Redelivered requests answered from the results store, by every worker.
    repeats: usize,
    /// The broker's memory at the end: shown, not checked (memory storage keeps every record).
    broker_kb: Option<u64>,
    load_time: Duration,
}

fn megabytes(kb: Option<u64>) -> String {
    kb.map_or("-".into(), |kb| format!("{:.1}", kb as f64 / 1024.0))
}

fn print_summary(settings: &Settings, run: &Run) {
    let secs = run.load_time.as_secs_f64();
    let restart = &run.restarted;
    println!(
        "\n== soak: {} payments, {} callers, {} gateway hosts, 2 workers, restart={:?} ==",
        settings.requests,
        settings.callers,
        HOSTS.len(),
        settings.restart
    );
    println!(
        "duration            {secs:.1} s ({:.1} req/s)",
        settings.requests as f64 / secs
    );
    println!("answered 200        {}", run.tally.replied.len());
    println!(
        "answered 504 unknown {} {:?}; late lookups: {:?}",
        run.tally.unknown.len(),
        run.tally.unknown_by_code(),
        run.late.found
    );
    // Each one named, so a 504 in a long run can be followed into the logs.
    for one in run.tally.unknown.iter().take(10) {
        println!(
            "  504: payment {} on host {} correlation id {}: {}",
            one.index, one.host, one.correlation_id, one.detail
        );
    }
    println!("no definite answer  {:?}", run.tally.indefinite);
    println!(
        "connections         {} keep-alive connections closed by a gateway while idle, reopened",
        run.tally.reopened
    );
    println!(
        "misrouted           {}",
        run.tally.misrouted.len() + run.late.misrouted.len()
    );
    println!(
        "double-charged      {} (PG: {} keys charged, {} calls; {} answered 200 without a charge)",
        run.charges.doubled.len(),
        run.charges.keys,
        run.charges.calls,
        run.charges.replied_uncharged
    );
    println!(
        "redelivered         {} (answered from the results store, PG not called)",
        run.repeats
    );
    println!(
        "worker restart      at answer {}: exit {:?} after {:.1} s; new worker assigned after {}",
        restart.at_answer,
        restart.exit,
        restart.stopped_in.as_secs_f64(),
        restart
            .assigned_after
            .map_or("- (not during the load)".into(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            ))
    );
    print_memory(&run.memory, settings.warmup());
    println!(
        "{:<20}{:>40}  (not checked: memory storage keeps every record)",
        "tansu",
        megabytes(run.broker_kb)
    );
}

fn print_memory(memory: &[Series], warmup: usize) {
    println!(
        "{:<20}{:>8}{:>8}{:>8}{:>8}{:>8}  flat  kB per 1k answers after warm-up",
        "RSS (MB)", "start", "warm", "middle", "end", "bound"
    );
    for series in memory {
        let warm = series.after_warmup(warmup).map(|s| s.kb);
        println!(
            "{:<20}{:>8}{:>8}{:>8}{:>8}{:>8}  {:<4}  {}",
            series.name,
            megabytes(series.first().map(|s| s.kb)),
            megabytes(warm),
            megabytes(series.middle().map(|s| s.kb)),
            megabytes(series.last().map(|s| s.kb)),
            megabytes(warm.map(leak_bound_kb)),
            series
                .flat(warmup)
                .map_or("-", |f| if f { "yes" } else { "NO" }),
            series
                .growth_per_thousand(warmup)
                .map_or("-".into(), |g| format!("{g:+.0}"))
        );
    }
}

fn check(settings: &Settings, run: &Run) {
    let tally = &run.tally;
    assert!(
        tally.indefinite.is_empty(),
        "callers without a definite answer: {:?}",
        tally.indefinite
    );
    let misrouted: Vec<&String> = tally.misrouted.iter().chain(&run.late.misrouted).collect();
    assert!(
        misrouted.is_empty(),
        "{} replies to the wrong caller, e.g. {:?}",
        misrouted.len(),
        &misrouted[..misrouted.len().min(5)]
    );
    let doubled = &run.charges.doubled;
    assert!(
        doubled.is_empty(),
        "{} keys charged more than once, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    assert_eq!(run.charges.replied_uncharged, 0, "a 200 without a charge");
    if settings.restart == Restart::Term {
        assert_eq!(
            run.restarted.exit,
            Some(0),
            "the stopped worker's exit code"
        );
        assert_eq!(
            tally.replied.len(),
            settings.requests,
            "with a graceful restart every payment must end 200; 504s: {:?} (pg-unknown here \
             means two workers settled one request at once: a partition moved to the new \
             worker while its old owner was still settling it)",
            tally.unknown_by_code()
        );
    }
    for series in &run.memory {
        let warm = series.after_warmup(settings.warmup()).map(|s| s.kb);
        assert_ne!(
            series.flat(settings.warmup()),
            Some(false),
            "{}'s memory grew past max(1.5x, +32 MB) of its warm sample: warm {} MB, end {} MB",
            series.name,
            megabytes(warm),
            megabytes(series.last().map(|s| s.kb)),
        );
    }
}

#[test]
fn soak_three_hosts_two_workers_one_restart() {
    soak(Stack::start());
}

/// The same soak on the Kafka-rules cluster: KIP-848 groups, `read_committed`, a held fetch
/// that wakes when data arrives.
#[test]
fn soak_on_the_kafka_rules_cluster() {
    soak(Stack::start_on(Broker::start_kafka_rules()));
}

fn soak(mut stack: Stack) {
    let settings = Settings::from_env();
    let progress = Progress {
        next: AtomicUsize::new(0),
        answered: Arc::default(),
        started: Instant::now(),
    };
    let sampler = RssSampler::start(RSS_INTERVAL, Arc::clone(&progress.answered));
    stack.track_memory(&sampler);

    let (tally, restarted) = run_load(&mut stack, &settings, &progress, &sampler);
    let load_time = progress.started.elapsed();
    sampler.sample_now();
    let memory = sampler.finish();

    let late = late_answers(&stack.gateways, &tally.unknown);
    let run = Run {
        charges: charges(&stack.pg, &tally),
        repeats: restarted.old_repeats + stack.workers.iter().map(repeats).sum::<usize>(),
        // The Kafka-rules cluster runs in this process: no broker of its own to measure.
        broker_kb: match stack.broker.compat() {
            kreply::kafka::BrokerCompat::Tansu06 => rss_kb(stack.broker.pid()),
            _ => None,
        },
        tally,
        late,
        restarted,
        memory,
        load_time,
    };
    print_summary(&settings, &run);
    check(&settings, &run);
    if settings.restart == Restart::Term {
        // The restart left two working members: they share the partitions again.
        wait_assigned(&stack.workers.iter().collect::<Vec<_>>(), 3);
    }
}

/// The soak's client survives what a gateway may do to an idle keep-alive connection:
/// close it (async-h1 does after 60 s idle). Seen in a soak run as `BrokenPipe` answers
/// before the client checked for it.
#[test]
fn keep_alive_client_replaces_a_connection_the_server_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers one request per connection, then closes it: an idle timeout of zero.
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut buffer).unwrap();
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            std::io::Write::write_all(&mut stream, reply).unwrap();
        }
    });
    let mut client = KeepAlive::new(addr);
    for _ in 0..2 {
        let response = client.send("GET", "/", &[], b"").unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"ok"[..])
        );
        std::thread::sleep(Duration::from_millis(100)); // the close arrives
    }
    assert_eq!(client.reopened, 1);
    server.join().unwrap();
}
