//! The benchmark (issue 8, item 5): kreply against the bare-client floor, in one run, on
//! this machine. `scripts/bench` runs it on a release build; `cargo test` only compiles it
//! (it is ignored), since it measures for minutes and asserts nothing about the numbers.
//!
//! For each connection count it measures, each on a fresh tansu (memory storage) so that no
//! row pays for the log an earlier row left:
//! - the floor: the two Kafka hops of a payment done by a minimal krafka requester and
//!   echo responder ([`common::floor`]), callers on the requester's runtime;
//! - HTTP alone: the same HTTP callers against the PG simulator at 0 ms, a tide app behind
//!   kreply's own accept loop with no Kafka, paced to the req/s the 1-host row reached: the
//!   CPU the gateway's HTTP stack costs by itself at that rate, which bounds from below what
//!   a gateway can spend per payment;
//! - kreply with one gateway host and one worker, then with two gateway hosts (each its own
//!   reply topic) and one worker, the PG simulator at 0 ms, driven over HTTP/1.1 keep-alive
//!   by callers on threads of their own ([`KeepAlive`]).
//!
//! Each caller keeps one request in flight: it sends the next as soon as the last is
//! answered, with a unique order id. With two hosts a caller alternates between them, on a
//! connection to each, like a round-robin load balancer. Load runs for a warm-up, then for
//! the measured window: answers that arrive within the window give req/s and the
//! latencies, and `/proc` readings at its start and end give CPU per request and peak RSS.
//! Errors count over the whole row, warm-up included.
//!
//! Then, optionally, one gateway holds `BENCH_WAITING` requests that no worker answers, for
//! its memory per waiting request.
//!
//! Settings: `BENCH_SECONDS` (10, the measured window), `BENCH_WARMUP_SECONDS` (2),
//! `BENCH_CONNECTIONS` (`1,50,200`), `BENCH_WAITING` (10000; 0 leaves the row out),
//! `BENCH_REPORT` (a file to keep the report in, besides printing it).

mod common;

use common::answers::counter;
use common::cpu::{own_threads_cpu, process_cpu};
use common::floor::{Floor, FloorSettings, REQUESTER_THREADS, RESPONDER_THREADS, Requester};
use common::hosts::gateway_on_own_ip_logging;
use common::keep_alive::KeepAlive;
use common::raw::payment_head;
use common::rss::rss_kb;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The gateway hosts, from `etc/reply-hosts.txt`: replies to `payment_response_local2`
/// and `payment_response_local3`.
const HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
/// The shipped default log filter: one INFO line per payment, as in production. (The
/// harness's "info" also logs krafka's tracing spans, lines per send and per poll.)
const LOG_FILTER: &str = "info,krafka=warn";
/// A call without an answer by then counts as an error (the gateway's default wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a setup may take to answer its first request.
const FIRST_ANSWER_WITHIN: Duration = Duration::from_secs(60);
const FLOOR_REQUESTS: &str = "floor_request";
const FLOOR_REPLIES: &str = "floor_reply";
const PAYMENT_PATH: &str = "/v1/payments/approve";
const PG_PATH: &str = "/charge";
const HTTP_ALONE: &str = "HTTP alone, paced to the 1-host row's req/s: PG simulator (tide, kreply's accept loop), no Kafka";

struct Settings {
    window: Duration,
    warmup: Duration,
    connections: Vec<usize>,
    waiting: usize,
    report: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let connections = std::env::var("BENCH_CONNECTIONS").unwrap_or_else(|_| "1,50,200".into());
        Settings {
            window: Duration::from_secs(env_number("BENCH_SECONDS", 10) as u64),
            warmup: Duration::from_secs(env_number("BENCH_WARMUP_SECONDS", 2) as u64),
            connections: connections
                .split(',')
                .filter(|c| !c.trim().is_empty())
                .map(|c| {
                    c.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("BENCH_CONNECTIONS={connections:?}"))
                })
                .collect(),
            waiting: env_number("BENCH_WAITING", 10_000),
            report: std::env::var_os("BENCH_REPORT").map(PathBuf::from),
        }
    }

    /// The window of a row whose load starts now.
    fn window(&self) -> Window {
        let start = Instant::now() + self.warmup;
        Window {
            start,
            end: start + self.window,
        }
    }
}

/// The shipped config (`etc/kreply.json`) as the benchmark runs it, and its values.
struct BenchConfig {
    path: PathBuf,
    json: Value,
}

impl BenchConfig {
    /// With topics created on demand, production batching, and `change` applied.
    fn new(change: impl FnOnce(&mut Value)) -> BenchConfig {
        let mut json = Value::Null;
        let path = config_with(|c| {
            c["topics"]["auto_create"] = json!(true);
            change(c);
            json = c.clone();
        });
        BenchConfig { path, json }
    }

    fn number(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {pointer} in the bench config"))
    }

    fn partitions(&self) -> usize {
        self.number("/topics/partitions") as usize
    }
}

/// When a row's answers count.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn holds(&self, at: Instant) -> bool {
        self.start <= at && at <= self.end
    }

    /// Whether a caller should send another request.
    fn open(&self) -> bool {
        Instant::now() < self.end
    }
}

/// What callers saw: latencies of the answers within the window, errors by kind.
#[derive(Default)]
struct Samples {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, usize>,
}

impl Samples {
    fn add(&mut self, window: &Window, started: Instant, outcome: Result<(), String>) {
        let done = Instant::now();
        match outcome {
            Ok(()) if window.holds(done) => self
                .latencies_us
                .push(done.duration_since(started).as_micros() as u64),
            Ok(()) => {}
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    /// The latency at quantile `q` (nearest rank), in ms.
    fn percentile_ms(&mut self, q: f64) -> Option<f64> {
        self.latencies_us.sort_unstable();
        let rank = (q * self.latencies_us.len() as f64).ceil() as usize;
        let us = self.latencies_us.get(rank.max(1) - 1)?;
        Some(*us as f64 / 1000.0)
    }

    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }
}

/// Something whose CPU time (and memory, for a process) a row reads.
enum Meter {
    Process(u32),
    /// This process's threads whose names start with this.
    Threads(&'static str),
}

impl Meter {
    fn cpu(&self) -> Duration {
        match self {
            Meter::Process(pid) => process_cpu(*pid).unwrap_or_default(),
            Meter::Threads(prefix) => own_threads_cpu(prefix),
        }
    }

    fn rss_kb(&self) -> Option<u64> {
        match self {
            Meter::Process(pid) => rss_kb(*pid),
            Meter::Threads(_) => None,
        }
    }
}

/// One meter over a window.
struct Metered {
    cpu: Duration,
    peak_kb: Option<u64>,
}

/// Waits for the window; returns each meter's CPU time within it and its peak RSS.
fn watch(window: &Window, meters: &[Meter]) -> Vec<Metered> {
    std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
    let before: Vec<Duration> = meters.iter().map(Meter::cpu).collect();
    let mut peaks: Vec<Option<u64>> = vec![None; meters.len()];
    while window.open() {
        for (peak, meter) in peaks.iter_mut().zip(meters) {
            *peak = (*peak).max(meter.rss_kb());
        }
        let left = window.end.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(250)));
    }
    meters
        .iter()
        .zip(before)
        .zip(peaks)
        .map(|((meter, before), peak_kb)| Metered {
            cpu: meter.cpu().saturating_sub(before),
            peak_kb,
        })
        .collect()
}

/// One line of the table.
struct Row {
    setup: String,
    connections: usize,
    window: Duration,
    samples: Samples,
    /// The gateways, or the floor's requester.
    gateways: Vec<Metered>,
    /// The worker, or the floor's responder; none in the HTTP-alone rows.
    worker: Option<Metered>,
}

impl Row {
    fn answered(&self) -> usize {
        self.samples.latencies_us.len()
    }

    fn rate(&self) -> f64 {
        self.answered() as f64 / self.window.as_secs_f64()
    }

    /// CPU µs per answered request, over `metered`.
    fn cpu_us<'a>(&self, metered: impl IntoIterator<Item = &'a Metered>) -> Option<f64> {
        let cpu: Duration = metered.into_iter().map(|m| m.cpu).sum();
        (self.answered() > 0).then(|| cpu.as_secs_f64() * 1e6 / self.answered() as f64)
    }
}

/// Retries `attempt` until it succeeds: a setup serves once one request has gone all the
/// way through (a worker assigned its partitions may not have positioned them yet).
fn until_answered(what: &str, mut attempt: impl FnMut(usize) -> Result<(), String>) {
    let deadline = Instant::now() + FIRST_ANSWER_WITHIN;
    for n in 0.. {
        match attempt(n) {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{what} answered nothing within {FIRST_ANSWER_WITHIN:?}; last: {e}"
            ),
        }
        // A refusal (503 not-ready) comes at once; no need to ask a hundred times a second.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn floor_row(settings: &Settings, config: &BenchConfig, connections: usize) -> Row {
    let broker = Broker::start();
    broker.create_topics(&[FLOOR_REQUESTS, FLOOR_REPLIES], config.partitions() as i32);
    let floor = Floor::start(&FloorSettings {
        broker: broker.addr.clone(),
        request_topic: FLOOR_REQUESTS.into(),
        reply_topic: FLOOR_REPLIES.into(),
        fetch_max_wait: Duration::from_millis(config.number("/fetch_max_wait_ms")),
        batch_bytes: config.number("/producer_batch_bytes") as usize,
        linger: Duration::from_millis(config.number("/producer_linger_ms")),
    });
    let requester = &floor.requester;
    until_answered("the floor", |n| {
        let order_id = format!("PROBE-{n}");
        let call = requester.call(&order_id, Duration::from_secs(2));
        floor.requester_runtime.block_on(call)
    });
    let window = settings.window();
    let ids = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..connections)
        .map(|_| {
            let caller = floor_caller(Arc::clone(requester), window, Arc::clone(&ids));
            floor.requester_runtime.spawn(caller)
        })
        .collect();
    let meters = [
        Meter::Threads(REQUESTER_THREADS),
        Meter::Threads(RESPONDER_THREADS),
    ];
    let mut metered = watch(&window, &meters);
    let responder_use = metered.pop().unwrap();
    let mut samples = Samples::default();
    for caller in callers {
        samples.merge(floor.requester_runtime.block_on(caller).unwrap());
    }
    Row {
        setup: "bare krafka floor".into(),
        connections,
        window: settings.window,
        samples,
        gateways: metered,
        worker: Some(responder_use),
    }
}

async fn floor_caller(requester: Arc<Requester>, window: Window, ids: Arc<AtomicUsize>) -> Samples {
    let mut samples = Samples::default();
    while window.open() {
        let order_id = format!("FLOOR-{}", ids.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let outcome = requester.call(&order_id, CALL_TIMEOUT).await;
        samples.add(&window, started, outcome);
    }
    samples
}

/// A broker, the PG simulator at 0 ms, gateway hosts and one worker, answering.
struct Stack {
    _broker: Broker,
    _pg: MockPg,
    gateways: Vec<Gateway>,
    worker: Worker,
}

impl Stack {
    fn start(hosts: usize, config: &BenchConfig) -> Stack {
        let broker = Broker::start();
        let pg = MockPg::start(&["--latency-ms", "0"]);
        // The first gateway creates the request, reply and DLQ topics; the worker its
        // results topic.
        let gateways: Vec<Gateway> = HOSTS[..hosts]
            .iter()
            .map(|ip| gateway_on_own_ip_logging(&broker.addr, ip, &config.path, LOG_FILTER))
            .collect();
        let name = format!("bench-worker-{}", free_port());
        let worker = Worker::spawn_logging(&name, &broker.addr, &pg, &config.path, LOG_FILTER);
        wait_assigned(&[&worker], config.partitions());
        for gateway in &gateways {
            until_answered("a gateway", |n| {
                let body = json!({"order_id": format!("PROBE-{n}"), "amount": 1000});
                let answer = gateway.pay_with("approve", &[("request-timeout", "2000")], &body);
                (answer.status == 200).then_some(()).ok_or_else(|| {
                    format!(
                        "{} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )
                })
            });
        }
        Stack {
            _broker: broker,
            _pg: pg,
            gateways,
            worker,
        }
    }
}

fn kreply_row(settings: &Settings, config: &BenchConfig, hosts: usize, connections: usize) -> Row {
    let stack = Stack::start(hosts, config);
    let addrs: Vec<SocketAddr> = stack.gateways.iter().map(|g| g.addr).collect();
    let mut meters: Vec<Meter> = stack
        .gateways
        .iter()
        .map(|g| Meter::Process(g.daemon.pid()))
        .collect();
    meters.push(Meter::Process(stack.worker.daemon.pid()));
    let load = Load {
        path: PAYMENT_PATH,
        every: None,
    };
    let (samples, mut metered) = drive(settings, &addrs, &load, connections, &meters);
    let worker = metered.pop();
    let plural = if hosts == 1 { "" } else { "s" };
    Row {
        setup: format!("kreply, {hosts} gateway host{plural} + 1 worker"),
        connections,
        window: settings.window,
        samples,
        gateways: metered,
        worker,
    }
}

/// The HTTP side alone: the PG simulator at 0 ms, a tide app behind kreply's own accept
/// loop (the gateway's HTTP stack) that reads each JSON body, logs and answers JSON, with
/// no Kafka, driven by the same callers at `rate` requests per second in all (the rate a
/// kreply row reached: CPU per request grows as the rate falls, since fewer requests share
/// each wake-up). What it spends per request, a gateway spends before any payment work.
fn http_alone_row(settings: &Settings, connections: usize, rate: f64) -> Row {
    let pg = MockPg::start(&["--latency-ms", "0"]);
    let meters = [Meter::Process(pg.daemon.pid())];
    let load = Load {
        path: PG_PATH,
        every: Some(Duration::from_secs_f64(connections as f64 / rate.max(1.0))),
    };
    let (samples, metered) = drive(settings, &[pg.addr], &load, connections, &meters);
    Row {
        setup: HTTP_ALONE.into(),
        connections,
        window: settings.window,
        samples,
        gateways: metered,
        worker: None,
    }
}

/// What each caller sends, and how often.
struct Load {
    path: &'static str,
    /// Each caller sends at most one request per this long; `None`: the next at once.
    every: Option<Duration>,
}

/// `connections` callers posting to `addrs` over a window, with `meters` read.
fn drive(
    settings: &Settings,
    addrs: &[SocketAddr],
    load: &Load,
    connections: usize,
    meters: &[Meter],
) -> (Samples, Vec<Metered>) {
    let window = settings.window();
    let ids = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let ids = &ids;
        let callers: Vec<_> = (0..connections)
            .map(|n| {
                // Paced callers start spread over one period, not all at once.
                let first_at =
                    started + load.every.unwrap_or_default() * n as u32 / connections as u32;
                let caller = Caller { first: n, first_at };
                s.spawn(move || http_caller(addrs, load, caller, &window, ids))
            })
            .collect();
        let metered = watch(&window, meters);
        let mut samples = Samples::default();
        for caller in callers {
            samples.merge(caller.join().unwrap());
        }
        (samples, metered)
    })
}

/// Where a caller starts: its first host, and when it sends its first request.
struct Caller {
    first: usize,
    first_at: Instant,
}

/// One caller: a request at a time until the window closes (paced if `load` says so),
/// alternating over `hosts` (starting at host `first`), on a keep-alive connection to each.
fn http_caller(
    hosts: &[SocketAddr],
    load: &Load,
    caller: Caller,
    window: &Window,
    ids: &AtomicUsize,
) -> Samples {
    let mut clients: Vec<KeepAlive> = hosts.iter().map(|a| KeepAlive::new(*a)).collect();
    let mut samples = Samples::default();
    let mut next_at = caller.first_at;
    for turn in caller.first.. {
        if let Some(every) = load.every {
            std::thread::sleep(next_at.saturating_duration_since(Instant::now()));
            next_at += every;
        }
        if !window.open() {
            break;
        }
        let n = ids.fetch_add(1, Ordering::Relaxed);
        let body = format!(r#"{{"order_id":"BENCH-{n}","amount":1000,"currency":"KRW"}}"#);
        let client = &mut clients[turn % hosts.len()];
        let started = Instant::now();
        let answer = client.send(
            "POST",
            load.path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        let outcome = match answer {
            Ok(answer) if answer.status == 200 => Ok(()),
            Ok(answer) => {
                let problem: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
                Err(format!("{} {}", answer.status, problem["code"]))
            }
            Err(e) => Err(format!("no answer ({:?})", e.kind())),
        };
        let failed = outcome.is_err();
        samples.add(window, started, outcome);
        if failed {
            // A gateway that refuses or drops connections must not turn this into a spin.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    samples
}

/// One gateway holding requests that nobody answers.
struct Waiting {
    count: usize,
    /// Requests the gateway registered as waiting, at most.
    held: usize,
    /// From the first connection until all were held (or the wait gave up).
    took: Duration,
    idle_kb: Option<u64>,
    peak_kb: Option<u64>,
}

impl Waiting {
    fn kb_each(&self) -> Option<f64> {
        let grown = self.peak_kb?.checked_sub(self.idle_kb?)?;
        (self.held > 0).then(|| grown as f64 / self.held as f64)
    }
}

/// How long an unanswered payment waits: longer than opening all of them takes (about
/// 20 s for 10,000 here: the gateway accepts, reads and produces each on the way).
const UNANSWERED_WAIT_MS: u64 = 120_000;

/// `count` payments sent to one gateway with no worker running: each waits for a reply
/// that never comes. The gateway's limits are raised to hold them all.
fn waiting_row(count: usize) -> Waiting {
    let config = BenchConfig::new(|c| {
        c["max_timeout_ms"] = json!(UNANSWERED_WAIT_MS);
        c["max_in_flight"] = json!(count);
        c["http"]["max_connections"] = json!(count + 64);
    });
    let broker = Broker::start();
    let gateway = gateway_on_own_ip_logging(&broker.addr, HOSTS[0], &config.path, LOG_FILTER);
    let pid = gateway.daemon.pid();
    let idle_kb = rss_kb(pid);
    let started = Instant::now();
    let open: Vec<TcpStream> = (0..count)
        .filter_map(|n| send_unanswered(gateway.addr, n).ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held = 0;
    loop {
        held = held.max(counter(gateway.addr, "kreply_waiting_replies") as usize);
        if held >= open.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let mut peak_kb = rss_kb(pid);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        peak_kb = peak_kb.max(rss_kb(pid));
    }
    drop(open);
    Waiting {
        count,
        held,
        took,
        idle_kb,
        peak_kb,
    }
}

/// A payment on a connection of its own, left open without reading the answer.
fn send_unanswered(addr: SocketAddr, n: usize) -> std::io::Result<TcpStream> {
    let body = format!(r#"{{"order_id":"WAIT-{n}","amount":1000,"currency":"KRW"}}"#);
    let timeout = format!("request-timeout: {UNANSWERED_WAIT_MS}\r\n");
    let mut request = payment_head("approve", body.len(), timeout.as_bytes());
    request.extend_from_slice(body.as_bytes());
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(&request)?;
    Ok(stream)
}

/// The output of a command, trimmed; `-` when it cannot run.
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or("-".into(), |out| {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
}

/// The three load averages `uptime` shows.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'));
    model.map_or("-".into(), |(_, name)| name.trim().to_string())
}

/// What the report says about the run before its table.
struct Machine {
    date: String,
    cores: usize,
    cpu: String,
    load_at_start: String,
    commit: String,
    /// Which kreply binary the rows measure.
    binary: String,
    tansu: String,
}

impl Machine {
    fn now() -> Machine {
        let dirty = !command_output("git", &["status", "--porcelain", "--untracked-files=no"])
            .trim_matches('-')
            .is_empty();
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        Machine {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            load_at_start: load_average(),
            commit: if dirty {
                format!("{commit} with uncommitted changes")
            } else {
                commit
            },
            binary: std::env::var("KREPLY_BIN").map_or_else(
                |_| "this cargo build (glibc malloc)".into(),
                |path| format!("binary {path}"),
            ),
            tansu: command_output(&tansu, &["--version"]),
        }
    }
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

fn megabytes(kb: Option<u64>) -> String {
    fixed(kb.map(|kb| kb as f64 / 1024.0), 1)
}

fn ratio(value: Option<f64>, floor: Option<f64>) -> String {
    match (value, floor) {
        (Some(v), Some(f)) if f > 0.0 => format!("{:.2}x", v / f),
        _ => "-".into(),
    }
}

const HEADER: &str = "| setup | connections | req/s | p50 ms | p90 ms | p99 ms | errors | gateway CPU µs/req | worker CPU µs/req | gateway RSS MB | worker RSS MB | req/s vs floor | p50 vs floor |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn table_line(row: &mut Row, floor: Option<(f64, Option<f64>)>) -> String {
    let (rate, p50) = (row.rate(), row.samples.percentile_ms(0.50));
    let p90 = row.samples.percentile_ms(0.90);
    let p99 = row.samples.percentile_ms(0.99);
    let gateway_rss: Vec<String> = row.gateways.iter().map(|g| megabytes(g.peak_kb)).collect();
    let (floor_rate, floor_p50) = floor.unzip();
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        row.setup,
        row.connections,
        rate,
        fixed(p50, 1),
        fixed(p90, 1),
        fixed(p99, 1),
        row.samples.error_count(),
        fixed(row.cpu_us(&row.gateways), 0),
        fixed(row.worker.as_ref().and_then(|w| row.cpu_us([w])), 0),
        gateway_rss.join(" + "),
        megabytes(row.worker.as_ref().and_then(|w| w.peak_kb)),
        ratio(Some(rate), floor_rate),
        ratio(p50, floor_p50.flatten()),
    )
}

fn waiting_line(waiting: &Waiting) -> String {
    format!(
        "| {} waiting requests, no worker | {} | - | - | - | - | {} | - | - | {} | - | - | - |\n",
        thousands(waiting.count),
        waiting.count,
        waiting.count.saturating_sub(waiting.held),
        megabytes(waiting.peak_kb),
    )
}

fn report(
    settings: &Settings,
    config: &BenchConfig,
    machine: &Machine,
    rows: &mut [Row],
    waiting: Option<&Waiting>,
) -> String {
    let mut text = format!(
        "## kreply benchmark, {}\n\n\
         machine: {} cores (nproc), {}; load average (uptime) at start {}, at end {}\n\
         kreply {} ({}); {}; broker, processes and load generator all on this machine\n\
         each row: a fresh broker (memory storage), PG simulator at 0 ms, {} s warm-up then {} s measured; \
         etc/kreply.json with topics created, producer_batch_bytes {}, fetch_max_wait_ms {}\n\n",
        machine.date,
        machine.cores,
        machine.cpu,
        machine.load_at_start,
        load_average(),
        machine.commit,
        machine.binary,
        machine.tansu,
        settings.warmup.as_secs(),
        settings.window.as_secs(),
        config.number("/producer_batch_bytes"),
        config.number("/fetch_max_wait_ms"),
    );
    text.push_str(HEADER);
    let floors: BTreeMap<usize, (f64, Option<f64>)> = rows
        .iter_mut()
        .filter(|r| r.setup.starts_with("bare"))
        .map(|r| (r.connections, (r.rate(), r.samples.percentile_ms(0.5))))
        .collect();
    for row in rows.iter_mut() {
        // The HTTP-alone rows are paced: their rate and latency are not the setup's to compare.
        let paced = row.setup == HTTP_ALONE;
        let floor = floors.get(&row.connections).copied().filter(|_| !paced);
        text.push_str(&table_line(row, floor));
    }
    if let Some(waiting) = waiting {
        text.push_str(&waiting_line(waiting));
    }
    text.push_str(
        "\nFloor rows: the gateway and worker CPU columns hold the requester's and the echo responder's threads.\n\
         HTTP-alone rows: the gateway columns hold the PG simulator's process, which reads each JSON body, logs two lines and answers JSON.\n",
    );
    for row in rows.iter().filter(|r| !r.samples.errors.is_empty()) {
        text.push_str(&format!(
            "Errors, {} at {} connections: {:?}\n",
            row.setup, row.connections, row.samples.errors
        ));
    }
    if let Some(w) = waiting {
        text.push_str(&format!(
            "{} waiting requests: {} held {:.1} s after the first was sent; gateway RSS {} MB idle, {} MB holding them: {} KB per waiting request (issue 8 target: under 64 MB)\n",
            thousands(w.count),
            thousands(w.held),
            w.took.as_secs_f64(),
            megabytes(w.idle_kb),
            megabytes(w.peak_kb),
            fixed(w.kb_each(), 1),
        ));
    }
    text
}

#[test]
#[ignore = "a benchmark of minutes: scripts/bench runs it on a release build"]
fn bench() {
    let settings = Settings::from_env();
    let machine = Machine::now();
    let config = BenchConfig::new(|_| {});
    let mut rows = Vec::new();
    // Interleaved by connection count, so each row is compared with a floor measured
    // minutes apart at most, under the same load from whatever else runs here.
    for &connections in &settings.connections {
        let first = rows.len();
        rows.push(floor_row(&settings, &config, connections));
        for hosts in 1..=HOSTS.len() {
            rows.push(kreply_row(&settings, &config, hosts, connections));
        }
        let one_host_rate = rows[first + 1].rate();
        rows.push(http_alone_row(&settings, connections, one_host_rate));
        for row in &rows[first..] {
            eprintln!(
                "bench: {}, {} connections: {:.0} req/s",
                row.setup,
                row.connections,
                row.rate()
            );
        }
    }
    let waiting = (settings.waiting > 0).then(|| waiting_row(settings.waiting));
    // The floor first, then HTTP alone, then each kreply setup, each by connection count.
    rows.sort_by_key(|r| {
        let place = [r.setup.starts_with("bare"), r.setup == HTTP_ALONE];
        (place.map(|p| !p), r.setup.clone(), r.connections)
    });
    let text = report(&settings, &config, &machine, &mut rows, waiting.as_ref());
    println!("\n{text}");
    if let Some(path) = &settings.report {
        std::fs::write(path, &text).unwrap();
    }
    // Numbers are never asserted; a row that got no answer at all is a broken run.
    let silent: Vec<String> = rows
        .iter()
        .filter(|r| r.answered() == 0)
        .map(|r| format!("{} at {} connections", r.setup, r.connections))
        .collect();
    assert!(
        silent.is_empty(),
        "rows without a single answer: {silent:?}"
    );
}

#[test]
fn thousands_are_separated() {
    assert_eq!(thousands(10_000), "10,000");
    assert_eq!(thousands(100), "100");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn nearest_rank_percentiles() {
    let mut samples = Samples {
        latencies_us: (1..=100).rev().map(|ms| ms * 1000).collect(),
        errors: BTreeMap::new(),
    };
    assert_eq!(samples.percentile_ms(0.5), Some(50.0));
    assert_eq!(samples.percentile_ms(0.99), Some(99.0));
    assert_eq!(samples.percentile_ms(0.0), Some(1.0));
    assert_eq!(Samples::default().percentile_ms(0.5), None);
}

#[test]
fn cpu_time_is_read_past_a_thread_name_with_spaces_and_parentheses() {
    let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
    assert_eq!(common::cpu::parse_stat(line), Some(("a (b) c", 12)));
}
