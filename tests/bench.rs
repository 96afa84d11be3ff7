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
//!   by callers on threads of their own ([`KeepAlive`]); and one host and one worker with
//!   `worker.claim: "pg"` (no `pending` claim: the PG's de-duplication keeps overlapping
//!   attempts to one charge);
//! - kreply on krafka's three-broker Kafka-rules cluster ([`Broker::start_kafka_rules`],
//!   served in this process) with one gateway host and two workers: KIP-848 group,
//!   `read_committed`, a fetch that returns when data arrives. Its column "assignment
//!   changes" counts the workers' rebalances within the window.
//!
//! Each caller keeps one request in flight: it sends the next as soon as the last is
//! answered, with a unique order id. With two hosts a caller alternates between them, on a
//! connection to each, like a round-robin load balancer. Load runs for a warm-up, then for
//! the measured window: answers that arrive within the window give req/s and the
//! latencies, and `/proc` readings at its start and end give CPU per request and peak RSS.
//! Errors count over the whole row, warm-up included.
//!
//! Then the rows with the PG at `BENCH_PG_LATENCY_MS` (200, what a real PG takes): kreply
//! with one gateway host and one worker, then two workers, on tansu, and one gateway host
//! and two workers on the Kafka-rules cluster, at `BENCH_PG_CONNECTIONS`, in a table of
//! their own. Its column "p50 - PG latency" is what a payment spent outside the PG, and
//! each worker's `/metrics` is read every 250 ms within the window: how long its PG calls
//! took, and how many calls were in flight (against `worker.concurrency`) and requests held
//! (against `worker.max_held_requests`).
//!
//! Then, optionally, one gateway holds `BENCH_WAITING` requests that no worker answers, for
//! its memory per waiting request.
//!
//! Settings: `BENCH_SECONDS` (10, the measured window), `BENCH_WARMUP_SECONDS` (2),
//! `BENCH_CONNECTIONS` (`1,50,200`), `BENCH_BROKERS` (`tansu,kafka-rules`: whose kreply
//! rows run; the floor always runs, on tansu), `BENCH_WAITING` (10000; 0 leaves the row
//! out), `BENCH_PG_LATENCY_MS` (200: the PG simulator's latency in the PG rows; every other
//! row has it at 0 ms), `BENCH_PG_CONNECTIONS` (`50,300,1000`; empty leaves the PG rows
//! out), `BENCH_PG_WORKERS` (`1,2`: the worker counts of the PG rows; those on the
//! Kafka-rules cluster have 2), `BENCH_PG_ROWS` (`also`: after the other rows; `only`: the
//! PG rows alone, without the floor, HTTP-alone, 0 ms and waiting rows), `BENCH_REPORT`
//! (a file to keep the report in, besides printing it).

mod common;

use common::answers::counter;
use common::cluster::BrokerKind;
use common::cpu::{own_threads_cpu, process_cpu};
use common::floor::{Floor, FloorSettings, REQUESTER_THREADS, RESPONDER_THREADS, Requester};
use common::hosts::gateway_on_own_ip_logging;
use common::keep_alive::KeepAlive;
use common::machine::{Machine, load_average};
use common::raw::payment_head;
use common::report::{fixed, megabytes, thousands};
use common::rss::rss_kb;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
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
/// In the setup column of the rows on the Kafka-rules cluster.
const ON_KAFKA_RULES: &str = "on the Kafka-rules cluster";
/// What a worker logs each time its partitions change (`worker/poll_loop.rs`), and only then.
const ASSIGNED: &str = "assigned partitions [";

/// A kreply setup: gateway hosts and workers on a broker.
#[derive(Clone, Copy)]
struct Setup {
    broker: BrokerKind,
    hosts: usize,
    workers: usize,
    /// `worker.claim: "pg"`: no `pending` claim, the PG's de-duplication instead.
    claim_by_pg: bool,
}

/// The kreply rows of each connection count, in the order they run.
const SETUPS: [Setup; 4] = [
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 1,
        workers: 1,
        claim_by_pg: false,
    },
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 1,
        workers: 1,
        claim_by_pg: true,
    },
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 2,
        workers: 1,
        claim_by_pg: false,
    },
    Setup {
        broker: BrokerKind::KafkaRules,
        hosts: 1,
        workers: 2,
        claim_by_pg: false,
    },
];

/// The kreply rows with the PG at `BENCH_PG_LATENCY_MS`, of each connection count, in the
/// order they run.
const PG_SETUPS: [Setup; 4] = [
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 1,
        workers: 1,
        claim_by_pg: false,
    },
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 1,
        workers: 1,
        claim_by_pg: true,
    },
    Setup {
        broker: BrokerKind::Tansu,
        hosts: 1,
        workers: 2,
        claim_by_pg: false,
    },
    Setup {
        broker: BrokerKind::KafkaRules,
        hosts: 1,
        workers: 2,
        claim_by_pg: false,
    },
];

impl Setup {
    fn name(&self) -> String {
        let on = match self.broker {
            BrokerKind::Tansu => String::new(),
            BrokerKind::KafkaRules => format!(" {ON_KAFKA_RULES}"),
        };
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let claim = if self.claim_by_pg {
            ", claim by the PG"
        } else {
            ""
        };
        format!(
            "kreply{on}, {} gateway host{} + {} worker{}{claim}",
            self.hosts,
            plural(self.hosts),
            self.workers,
            plural(self.workers)
        )
    }
}

struct Settings {
    window: Duration,
    warmup: Duration,
    connections: Vec<usize>,
    /// Whose kreply rows run.
    brokers: Vec<BrokerKind>,
    waiting: usize,
    /// The PG simulator's latency in the PG rows.
    pg_latency_ms: u64,
    /// The PG rows' connection counts.
    pg_connections: Vec<usize>,
    /// The PG rows' worker counts.
    pg_workers: Vec<usize>,
    /// Whether the rows with the PG at 0 ms (and the floor, HTTP-alone and waiting rows) run.
    zero_ms_rows: bool,
    report: Option<PathBuf>,
}

/// A comma-separated list of whole numbers from `name`, else `default`.
fn env_list(name: &str, default: &str) -> Vec<usize> {
    let list = std::env::var(name).unwrap_or_else(|_| default.into());
    list.split(',')
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={list:?}"))
        })
        .collect()
}

impl Settings {
    fn from_env() -> Settings {
        let brokers = std::env::var("BENCH_BROKERS").unwrap_or_else(|_| "tansu,kafka-rules".into());
        let pg_rows = std::env::var("BENCH_PG_ROWS").unwrap_or_else(|_| "also".into());
        Settings {
            window: Duration::from_secs(env_number("BENCH_SECONDS", 10) as u64),
            warmup: Duration::from_secs(env_number("BENCH_WARMUP_SECONDS", 2) as u64),
            connections: env_list("BENCH_CONNECTIONS", "1,50,200"),
            brokers: brokers
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(|b| match b {
                    "tansu" => BrokerKind::Tansu,
                    "kafka-rules" => BrokerKind::KafkaRules,
                    _ => panic!("BENCH_BROKERS={brokers:?}: tansu, kafka-rules or both"),
                })
                .collect(),
            waiting: env_number("BENCH_WAITING", 10_000),
            pg_latency_ms: env_number("BENCH_PG_LATENCY_MS", 200) as u64,
            pg_connections: env_list("BENCH_PG_CONNECTIONS", "50,300,1000"),
            pg_workers: env_list("BENCH_PG_WORKERS", "1,2"),
            zero_ms_rows: match pg_rows.trim() {
                "also" => true,
                "only" => false,
                _ => panic!("BENCH_PG_ROWS={pg_rows:?}: also or only"),
            },
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
enum Meter<'a> {
    Process(u32),
    /// A worker's process, and the assignment changes its log shows; with `scraped`, its
    /// `/metrics` too (the PG rows only: the other rows stay as they were measured before).
    Worker {
        worker: &'a Worker,
        scraped: bool,
    },
    /// This process's threads whose names start with this.
    Threads(&'static str),
}

impl Meter<'_> {
    fn cpu(&self) -> Duration {
        match self {
            Meter::Process(pid) => process_cpu(*pid).unwrap_or_default(),
            Meter::Worker { worker, .. } => process_cpu(worker.daemon.pid()).unwrap_or_default(),
            Meter::Threads(prefix) => own_threads_cpu(prefix),
        }
    }

    fn rss_kb(&self) -> Option<u64> {
        match self {
            Meter::Process(pid) => rss_kb(*pid),
            Meter::Worker { worker, .. } => rss_kb(worker.daemon.pid()),
            Meter::Threads(_) => None,
        }
    }

    /// A worker's assignment changes so far: the [`ASSIGNED`] lines of its log.
    fn assignment_changes(&self) -> Option<usize> {
        match self {
            Meter::Worker { worker, .. } => {
                Some(worker.daemon.log_text().matches(ASSIGNED).count())
            }
            _ => None,
        }
    }

    /// A scraped worker's `/metrics` now.
    fn scrape(&self) -> Option<Scrape> {
        match self {
            Meter::Worker {
                worker,
                scraped: true,
            } => Scrape::of(worker),
            _ => None,
        }
    }
}

/// What a worker's `/metrics` says at one moment.
#[derive(Clone, Copy, Default)]
struct Scrape {
    /// `kreply_worker_pg_calls_in_flight`.
    pg_in_flight: f64,
    /// `kreply_worker_requests_held`.
    held: f64,
    /// `kreply_worker_pg_call_duration_seconds`: the sum and count over all results.
    pg_seconds: f64,
    pg_calls: f64,
}

impl Scrape {
    fn of(worker: &Worker) -> Option<Scrape> {
        let answer = get(worker.metrics_addr, "/metrics").ok()?;
        Some(Scrape::parse(&String::from_utf8_lossy(&answer.body)))
    }

    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            match series.split('{').next().unwrap_or_default() {
                "kreply_worker_pg_calls_in_flight" => scrape.pg_in_flight = value,
                "kreply_worker_requests_held" => scrape.held = value,
                "kreply_worker_pg_call_duration_seconds_sum" => scrape.pg_seconds += value,
                "kreply_worker_pg_call_duration_seconds_count" => scrape.pg_calls += value,
                _ => {}
            }
        }
        scrape
    }
}

/// A worker's `/metrics` over a window: gauges sampled every 250 ms, and the PG calls
/// that ended within it.
#[derive(Default)]
struct Scraped {
    in_flight: Gauge,
    held: Gauge,
    /// PG calls that ended within the window, and their total time.
    pg_calls: f64,
    pg_seconds: f64,
}

impl Scraped {
    /// The mean time of the PG calls that ended within the window, in ms.
    fn pg_call_ms(&self) -> Option<f64> {
        (self.pg_calls > 0.0).then(|| self.pg_seconds * 1000.0 / self.pg_calls)
    }
}

/// A gauge's samples: their mean and peak.
#[derive(Default)]
struct Gauge {
    sum: f64,
    samples: usize,
    peak: f64,
}

impl Gauge {
    fn add(&mut self, value: f64) {
        self.sum += value;
        self.samples += 1;
        self.peak = self.peak.max(value);
    }

    /// `mean/peak`, `-` without samples.
    fn text(&self) -> String {
        if self.samples == 0 {
            return "-".into();
        }
        format!("{:.0}/{:.0}", self.sum / self.samples as f64, self.peak)
    }
}

/// One meter over a window.
struct Metered {
    cpu: Duration,
    peak_kb: Option<u64>,
    /// A worker's assignment changes (rebalances it took part in).
    assignments: Option<Assignments>,
    /// A scraped worker's `/metrics` over the window.
    scraped: Option<Scraped>,
}

/// A worker's assignment changes during a row's load.
#[derive(Clone, Copy)]
struct Assignments {
    warmup: usize,
    window: usize,
}

/// Waits for the window, from the start of the load; returns each meter's CPU time within
/// it, its peak RSS, and a worker's assignment changes in the warm-up and the window.
fn watch(window: &Window, meters: &[Meter]) -> Vec<Metered> {
    let at_load: Vec<Option<usize>> = meters.iter().map(Meter::assignment_changes).collect();
    std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
    let before: Vec<Duration> = meters.iter().map(Meter::cpu).collect();
    let at_start: Vec<Option<usize>> = meters.iter().map(Meter::assignment_changes).collect();
    let scraped_at_start: Vec<Option<Scrape>> = meters.iter().map(Meter::scrape).collect();
    let mut scraped: Vec<Option<Scraped>> = scraped_at_start
        .iter()
        .map(|s| s.map(|_| Scraped::default()))
        .collect();
    let mut peaks: Vec<Option<u64>> = vec![None; meters.len()];
    while window.open() {
        for (peak, meter) in peaks.iter_mut().zip(meters) {
            *peak = (*peak).max(meter.rss_kb());
        }
        for (scraped, meter) in scraped.iter_mut().zip(meters) {
            if let (Some(scraped), Some(now)) = (scraped.as_mut(), meter.scrape()) {
                scraped.in_flight.add(now.pg_in_flight);
                scraped.held.add(now.held);
            }
        }
        let left = window.end.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(250)));
    }
    let cpu: Vec<Duration> = meters.iter().map(Meter::cpu).collect();
    let scraped_at_end: Vec<Option<Scrape>> = meters.iter().map(Meter::scrape).collect();
    for (n, scraped) in scraped.iter_mut().enumerate() {
        if let (Some(scraped), Some(start), Some(end)) =
            (scraped.as_mut(), scraped_at_start[n], scraped_at_end[n])
        {
            scraped.pg_calls = end.pg_calls - start.pg_calls;
            scraped.pg_seconds = end.pg_seconds - start.pg_seconds;
        }
    }
    let mut scraped = scraped.into_iter();
    meters
        .iter()
        .enumerate()
        .map(|(n, meter)| {
            let at_end = meter.assignment_changes();
            Metered {
                scraped: scraped.next().flatten(),
                cpu: cpu[n].saturating_sub(before[n]),
                peak_kb: peaks[n],
                assignments: at_load[n].zip(at_start[n]).zip(at_end).map(
                    |((at_load, at_start), at_end)| Assignments {
                        warmup: at_start - at_load,
                        window: at_end - at_start,
                    },
                ),
            }
        })
        .collect()
}

/// One line of the table.
struct Row {
    setup: String,
    connections: usize,
    /// The PG simulator's latency (0 in the floor rows, which have no PG).
    pg_ms: u64,
    window: Duration,
    samples: Samples,
    /// The gateways, or the floor's requester.
    gateways: Vec<Metered>,
    /// The workers, or the floor's responder; none in the HTTP-alone rows.
    workers: Vec<Metered>,
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

    /// The workers' assignment changes, all added up; none in rows without kreply workers.
    fn assignment_changes(&self, of: impl Fn(&Assignments) -> usize) -> Option<usize> {
        let changes = self.workers.iter().map(|w| w.assignments.as_ref().map(&of));
        (!self.workers.is_empty()).then(|| changes.sum()).flatten()
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
        pg_ms: 0,
        window: settings.window,
        samples,
        gateways: metered,
        workers: vec![responder_use],
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

/// A broker, the PG simulator, gateway hosts and workers, answering.
struct Stack {
    _broker: Broker,
    _pg: MockPg,
    gateways: Vec<Gateway>,
    workers: Vec<Worker>,
}

impl Stack {
    /// With the PG simulator answering after `pg_ms`.
    fn start(setup: Setup, config: &BenchConfig, pg_ms: u64) -> Stack {
        let broker = setup.broker.start();
        let pg = MockPg::start(&["--latency-ms", &pg_ms.to_string()]);
        // The first gateway creates the request, reply and DLQ topics; the workers their
        // results topic.
        let gateways: Vec<Gateway> = HOSTS[..setup.hosts]
            .iter()
            .map(|ip| gateway_on_own_ip_logging(&broker.addr, ip, &config.path, LOG_FILTER))
            .collect();
        let workers: Vec<Worker> = (0..setup.workers)
            .map(|_| {
                let name = format!("bench-worker-{}", free_port());
                Worker::spawn_logging(&name, &broker.addr, &pg, &config.path, LOG_FILTER)
            })
            .collect();
        wait_assigned(&workers.iter().collect::<Vec<_>>(), config.partitions());
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
            workers,
        }
    }
}

/// A kreply setup under load, with the PG simulator at `pg_ms`; the workers' `/metrics` are
/// read within the window when the PG is not at 0 ms.
fn kreply_row(
    settings: &Settings,
    config: &BenchConfig,
    setup: Setup,
    connections: usize,
    pg_ms: u64,
) -> Row {
    let claim_config;
    let config = if setup.claim_by_pg {
        claim_config = BenchConfig::new(|c| c["worker"]["claim"] = json!("pg"));
        &claim_config
    } else {
        config
    };
    let stack = Stack::start(setup, config, pg_ms);
    let addrs: Vec<SocketAddr> = stack.gateways.iter().map(|g| g.addr).collect();
    let mut meters: Vec<Meter> = stack
        .gateways
        .iter()
        .map(|g| Meter::Process(g.daemon.pid()))
        .collect();
    meters.extend(stack.workers.iter().map(|worker| Meter::Worker {
        worker,
        scraped: pg_ms > 0,
    }));
    let load = Load {
        path: PAYMENT_PATH,
        every: None,
    };
    let (samples, mut metered) = drive(settings, &addrs, &load, connections, &meters);
    let workers = metered.split_off(stack.gateways.len());
    Row {
        setup: setup.name(),
        connections,
        pg_ms,
        window: settings.window,
        samples,
        gateways: metered,
        workers,
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
        pg_ms: 0,
        window: settings.window,
        samples,
        gateways: metered,
        workers: Vec::new(),
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

fn ratio(value: Option<f64>, floor: Option<f64>) -> String {
    match (value, floor) {
        (Some(v), Some(f)) if f > 0.0 => format!("{:.2}x", v / f),
        _ => "-".into(),
    }
}

const HEADER: &str = "| setup | connections | req/s | p50 ms | p90 ms | p99 ms | errors | assignment changes | gateway CPU µs/req | worker CPU µs/req | gateway RSS MB | worker RSS MB | req/s vs floor | p50 vs floor |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn table_line(row: &mut Row, floor: Option<(f64, Option<f64>)>) -> String {
    let (rate, p50) = (row.rate(), row.samples.percentile_ms(0.50));
    let p90 = row.samples.percentile_ms(0.90);
    let p99 = row.samples.percentile_ms(0.99);
    let worker_cpu = (!row.workers.is_empty())
        .then(|| row.cpu_us(&row.workers))
        .flatten();
    let changes = row.assignment_changes(|a| a.window);
    let (floor_rate, floor_p50) = floor.unzip();
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        row.setup,
        row.connections,
        rate,
        fixed(p50, 1),
        fixed(p90, 1),
        fixed(p99, 1),
        row.samples.error_count(),
        changes.map_or("-".into(), |n| n.to_string()),
        fixed(row.cpu_us(&row.gateways), 0),
        fixed(worker_cpu, 0),
        megabytes_each(&row.gateways),
        megabytes_each(&row.workers),
        ratio(Some(rate), floor_rate),
        ratio(p50, floor_p50.flatten()),
    )
}

fn waiting_line(waiting: &Waiting) -> String {
    format!(
        "| {} waiting requests, no worker | {} | - | - | - | - | {} | - | - | - | {} | - | - | - |\n",
        thousands(waiting.count),
        waiting.count,
        waiting.count.saturating_sub(waiting.held),
        megabytes(waiting.peak_kb),
    )
}

const PG_HEADER: &str = "| setup | connections | PG ms | req/s | p50 ms | p90 ms | p99 ms | p50 - PG latency ms | errors | assignment changes | gateway CPU µs/req | worker CPU µs/req | gateway RSS MB | worker RSS MB | worker's PG call, mean ms | PG calls in flight, mean/peak | requests held, mean/peak |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// A line of the PG rows' table.
fn pg_table_line(row: &mut Row) -> String {
    let (rate, p50) = (row.rate(), row.samples.percentile_ms(0.50));
    let p90 = row.samples.percentile_ms(0.90);
    let p99 = row.samples.percentile_ms(0.99);
    let per_worker = |of: &dyn Fn(&Metered) -> String| -> String {
        let each: Vec<String> = row.workers.iter().map(of).collect();
        if each.is_empty() {
            "-".into()
        } else {
            each.join(" + ")
        }
    };
    let scraped = |of: &dyn Fn(&Scraped) -> String| {
        per_worker(&|m: &Metered| m.scraped.as_ref().map_or("-".into(), of))
    };
    format!(
        "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        row.setup,
        row.connections,
        row.pg_ms,
        rate,
        fixed(p50, 1),
        fixed(p90, 1),
        fixed(p99, 1),
        fixed(p50.map(|p| p - row.pg_ms as f64), 1),
        row.samples.error_count(),
        row.assignment_changes(|a| a.window)
            .map_or("-".into(), |n| n.to_string()),
        fixed(row.cpu_us(&row.gateways), 0),
        fixed(row.cpu_us(&row.workers), 0),
        megabytes_each(&row.gateways),
        megabytes_each(&row.workers),
        scraped(&|s| fixed(s.pg_call_ms(), 1)),
        scraped(&|s| s.in_flight.text()),
        scraped(&|s| s.held.text()),
    )
}

/// Each one's peak RSS in MB, joined by ` + `.
fn megabytes_each(metered: &[Metered]) -> String {
    let each: Vec<String> = metered.iter().map(|m| megabytes(m.peak_kb)).collect();
    if each.is_empty() {
        "-".into()
    } else {
        each.join(" + ")
    }
}

/// The rows that ran, for the report.
struct Rows {
    /// With the PG at 0 ms, and the floor's and HTTP alone's.
    zero_ms: Vec<Row>,
    waiting: Option<Waiting>,
    /// With the PG at `BENCH_PG_LATENCY_MS`, and how long they took, setups included.
    pg: Vec<Row>,
    pg_took: Duration,
}

impl Rows {
    fn all(&self) -> impl Iterator<Item = &Row> {
        self.zero_ms.iter().chain(&self.pg)
    }
}

fn report(settings: &Settings, config: &BenchConfig, machine: &Machine, rows: &mut Rows) -> String {
    let mut text = format!(
        "## kreply benchmark, {}\n\n\
         machine: {} cores (nproc), {}; load average (uptime) at start {}, at end {}\n\
         kreply {} ({}); {}; broker, processes and load generator all on this machine\n\
         each row: a fresh broker (memory storage), {} s warm-up then {} s measured; \
         etc/kreply.json with topics created, producer_batch_bytes {}, fetch_max_wait_ms {}\n{}\n",
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
        if rows.all().any(|r| r.setup.contains(ON_KAFKA_RULES)) {
            format!(
                "rows {ON_KAFKA_RULES}: {}'s three-broker cluster (krafka::testing::FakeBroker) served in this benchmark process, \
                 sharing its cores with the load generator; kreply runs with KREPLY_BROKER_COMPAT=kafka \
                 (KIP-848 group protocol, read_committed), request topic with {} partitions\n",
                machine.krafka,
                config.partitions(),
            )
        } else {
            String::new()
        },
    );
    if !rows.zero_ms.is_empty() || rows.waiting.is_some() {
        text.push_str(&zero_ms_table(&mut rows.zero_ms, rows.waiting.as_ref()));
    }
    if !rows.pg.is_empty() {
        text.push_str(&pg_table(settings, config, &mut rows.pg, rows.pg_took));
    }
    text.push_str(
        "\nAssignment changes (rebalances): the \"assigned partitions [\" lines the workers logged within the window, all workers added up; \
         a worker logs one each time its partitions change, so a partition moving from one worker to another counts up to twice.\n",
    );
    for row in rows.all() {
        if let Some(n) = row.assignment_changes(|a| a.warmup).filter(|n| *n > 0) {
            text.push_str(&format!(
                "Assignment changes in the warm-up, {} at {} connections, PG at {} ms: {n}\n",
                row.setup, row.connections, row.pg_ms
            ));
        }
    }
    for row in rows.all().filter(|r| !r.samples.errors.is_empty()) {
        text.push_str(&format!(
            "Errors, {} at {} connections, PG at {} ms: {:?}\n",
            row.setup, row.connections, row.pg_ms, row.samples.errors
        ));
    }
    if let Some(w) = &rows.waiting {
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

/// The table of the rows with the PG at 0 ms, the floor's, HTTP alone's and the waiting row.
fn zero_ms_table(rows: &mut [Row], waiting: Option<&Waiting>) -> String {
    let mut text = String::from("### PG simulator at 0 ms\n\n");
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
         HTTP-alone rows: the gateway columns hold the PG simulator's process, which reads each JSON body, logs two lines and answers JSON.\n\n",
    );
    text
}

/// The table of the rows with the PG at `BENCH_PG_LATENCY_MS`.
fn pg_table(settings: &Settings, config: &BenchConfig, rows: &mut [Row], took: Duration) -> String {
    let mut text = format!(
        "### PG simulator at {} ms\n\n\
         the shipped worker config: worker.concurrency {}, worker.max_held_requests {}; rows: {}, {:.0} s in all, setups included\n",
        settings.pg_latency_ms,
        config.number("/worker/concurrency"),
        config.number("/worker/max_held_requests"),
        rows.len(),
        took.as_secs_f64(),
    );
    text.push_str(PG_HEADER);
    for row in rows.iter_mut() {
        text.push_str(&pg_table_line(row));
    }
    text.push_str(
        "\np50 - PG latency: what the median payment spent outside the PG simulator's wait.\n\
         The last three columns are read from each worker's /metrics (one figure per worker, joined by +): \
         worker's PG call, the mean time of the PG calls that ended within the window, as the worker timed them \
         (kreply_worker_pg_call_duration_seconds); PG calls in flight (kreply_worker_pg_calls_in_flight, against worker.concurrency) \
         and requests held (kreply_worker_requests_held, against worker.max_held_requests), the mean and peak of samples every 250 ms within the window.\n",
    );
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
    let zero_ms_connections = if settings.zero_ms_rows {
        &settings.connections[..]
    } else {
        &[]
    };
    for &connections in zero_ms_connections {
        let first = rows.len();
        rows.push(floor_row(&settings, &config, connections));
        for setup in SETUPS {
            if settings.brokers.contains(&setup.broker) {
                rows.push(kreply_row(&settings, &config, setup, connections, 0));
            }
        }
        // Paced to the 1-host tansu row, when it ran.
        let one_host = SETUPS[0].name();
        let one_host_rate = rows[first..].iter().find(|r| r.setup == one_host);
        if let Some(rate) = one_host_rate.map(Row::rate) {
            rows.push(http_alone_row(&settings, connections, rate));
        }
        for row in &rows[first..] {
            eprintln!(
                "bench: {}, {} connections: {:.0} req/s",
                row.setup,
                row.connections,
                row.rate()
            );
        }
    }
    // The PG rows, by connection count, each setup in turn.
    let pg_started = Instant::now();
    let mut pg_rows = Vec::new();
    for &connections in &settings.pg_connections {
        for setup in PG_SETUPS {
            if settings.brokers.contains(&setup.broker)
                && settings.pg_workers.contains(&setup.workers)
            {
                let started = Instant::now();
                let pg_ms = settings.pg_latency_ms;
                let mut row = kreply_row(&settings, &config, setup, connections, pg_ms);
                eprintln!(
                    "bench: {}, {} connections, PG at {pg_ms} ms: {:.0} req/s, p50 {} ms ({:.0} s)",
                    row.setup,
                    row.connections,
                    row.rate(),
                    fixed(row.samples.percentile_ms(0.5), 1),
                    started.elapsed().as_secs_f64(),
                );
                pg_rows.push(row);
            }
        }
    }
    let pg_took = pg_started.elapsed();
    let waiting =
        (settings.zero_ms_rows && settings.waiting > 0).then(|| waiting_row(settings.waiting));
    // The floor first, then HTTP alone, then each kreply setup on tansu, then those on the
    // Kafka-rules cluster, each by connection count; the PG rows likewise.
    let order = |r: &Row| {
        let place = if r.setup.starts_with("bare") {
            0
        } else if r.setup == HTTP_ALONE {
            1
        } else if r.setup.contains(ON_KAFKA_RULES) {
            3
        } else {
            2
        };
        (place, r.setup.clone(), r.connections)
    };
    rows.sort_by_key(order);
    pg_rows.sort_by_key(order);
    let mut rows = Rows {
        zero_ms: rows,
        waiting,
        pg: pg_rows,
        pg_took,
    };
    let text = report(&settings, &config, &machine, &mut rows);
    println!("\n{text}");
    if let Some(path) = &settings.report {
        std::fs::write(path, &text).unwrap();
    }
    // Numbers are never asserted; a row that got no answer at all is a broken run.
    let silent: Vec<String> = rows
        .all()
        .filter(|r| r.answered() == 0)
        .map(|r| {
            format!(
                "{} at {} connections, PG at {} ms",
                r.setup, r.connections, r.pg_ms
            )
        })
        .collect();
    assert!(
        silent.is_empty(),
        "rows without a single answer: {silent:?}"
    );
}

#[test]
fn metrics_are_read_across_labels() {
    let text = "# HELP kreply_worker_pg_calls_in_flight PG calls under way.\n\
                kreply_worker_pg_calls_in_flight 198\n\
                kreply_worker_requests_held 240\n\
                kreply_worker_pg_call_duration_seconds_bucket{result=\"approved\",le=\"0.25\"} 9\n\
                kreply_worker_pg_call_duration_seconds_sum{result=\"approved\"} 2.5\n\
                kreply_worker_pg_call_duration_seconds_count{result=\"approved\"} 10\n\
                kreply_worker_pg_call_duration_seconds_sum{result=\"declined\"} 0.5\n\
                kreply_worker_pg_call_duration_seconds_count{result=\"declined\"} 2\n";
    let scrape = Scrape::parse(text);
    assert_eq!(scrape.pg_in_flight, 198.0);
    assert_eq!(scrape.held, 240.0);
    assert_eq!(scrape.pg_seconds, 3.0);
    assert_eq!(scrape.pg_calls, 12.0);
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
