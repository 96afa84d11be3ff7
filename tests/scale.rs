//! The scale benchmark of the worker's idempotency state (issue 22, item 4): what a worker
//! pays, in startup time and memory, for reading the whole results topic and keeping an
//! index entry per key within the idempotency window, and how fast it answers a repeat
//! from it. It is the baseline for the redesign (state per owned partition, on disk).
//! `scripts/scale-bench` runs it on a release build; `cargo test` only compiles it (it is
//! ignored), since it runs for minutes and asserts nothing about the numbers.
//!
//! For each N of `SCALE_RECORDS`, on a fresh tansu (memory storage):
//! - N results records are written straight to the results topic (`payment_results`, 3
//!   partitions, created compacted as a worker creates it), by one krafka producer of the
//!   benchmark's, no PG, no gateway: half of them `final` approvals (a reply of about
//!   150 bytes, as the PG simulator answers, and the request's fingerprint), the rest
//!   `pending` records each followed, [`PAIR_LAG`] records later, by its key's `final`.
//!   So N records hold 3N/4 keys (`scale-<n>`), all written now: inside the 24 h window.
//!   The layout record a worker writes on a topic's first use comes first. Records go out
//!   in batches of `producer_batch_bytes` (the shipped 16 KiB, what a worker's producer
//!   builds at most: the worker's read-back of a final record on tansu relies on it), with
//!   a linger, [`IN_FLIGHT`] sends queued before their acknowledgements are awaited.
//! - One worker starts (the shipped config, `start_from: earliest`). "caught up": the
//!   time from its spawn until its `/metrics` shows `kreply_worker_results_keys` at the
//!   key count (it serves `/metrics` only once its startup has read the whole topic);
//!   "in group": until it logs that it is ready in its group. Its RSS (VmRSS) and peak RSS
//!   (VmHWM) are read once it is in its group, and the CPU time it and tansu spent until
//!   it caught up; then the CPU both spend over 5 s with nothing asked of them.
//! - Repeats: `SCALE_REPEATS` (200) payments whose keys exist, spread over the key space,
//!   sent one at a time through a gateway (host 127.0.0.2) after 5 not timed, each timed
//!   from the HTTP request to its answer (p50, p99). Each must be answered 200 with the
//!   reply on record, and the PG simulator must have had no call at all.
//! - A second worker joins the first in their group: its catch-up, then the RSS and keys
//!   of each (today each holds every key), and repeats again (other keys).
//!
//! First, the same on an empty topic (N = 0, one and two workers): bytes/key is each
//! worker's RSS over that empty worker's, per key it holds, measured in the same run.
//! Then the catch-up rate (records/s) and the extrapolation to 86.4 million keys (1,000
//! payments/s for 24 h) by the largest N's bytes/key and rate.
//!
//! tansu's memory storage has no disk, and its memory is not what a Kafka broker would
//! use for the same log (nor does it compact): the report gives its RSS only as a note.
//!
//! Settings: `SCALE_RECORDS` (`1000000,5000000`; `1m`, `500k` also read), `SCALE_REPEATS`
//! (200), `SCALE_REPORT` (a file to keep the report in, besides printing it). It asserts no
//! timing: only that every repeat was answered from its record and the PG was not called.

mod common;

use common::cpu::process_cpu;
use common::machine::{Machine, load_average};
use common::report::{fixed, megabytes, thousands};
use common::rss::rss_kb;
use common::*;
use krafka::Record;
use krafka::admin::{CreateTopicsOptions, NewTopic};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RESULTS_TOPIC: &str = "payment_results";
const PARTITIONS: i32 = 3;
/// The shipped default log filter (one INFO line per payment), as in production.
const LOG_FILTER: &str = "info,krafka=warn";
/// The gateway's host: its replies come back on `payment_response_local2`.
const GATEWAY_HOST: &str = "127.0.0.2";
/// What a worker logs once the group gave it an assignment (`worker/poll_loop.rs`).
const READY: &str = "ready: worker in its group";
/// What a worker logs for a repeat it answered from its record (`worker/settle.rs`).
const FROM_RECORD: &str = ": answered from the record, PG not called";
const KEYS_METRIC: &str = "kreply_worker_results_keys";
/// A pair's `final` comes this many pairs after its `pending`, other payments in between.
const PAIR_LAG: usize = 64;
/// Sends queued before their acknowledgements are awaited.
const IN_FLIGHT: usize = 20_000;
/// The producer's linger.
const LINGER: Duration = Duration::from_millis(5);
/// Repeats sent before the timed ones: the first request waits for the worker's first
/// poll of the request topic and the gateway's first reply fetch.
const WARMUP_REPEATS: usize = 5;
/// The payment every record stands for, as a caller sends it: `{"order_id", "amount"}`.
const AMOUNT: u64 = 1000;
/// 1,000 payments/s for 24 h: the keys a worker holds at the end of a busy day.
const DAY_OF_KEYS: f64 = 86_400_000.0;

struct Settings {
    records: Vec<usize>,
    repeats: usize,
    report: Option<PathBuf>,
}

/// `1000000`, `1_000_000`, `1m` or `500k`.
fn count(text: &str) -> Option<usize> {
    let text = text.trim().to_ascii_lowercase().replace('_', "");
    let (digits, unit) = match text.strip_suffix('m') {
        Some(digits) => (digits, 1_000_000.0),
        None => match text.strip_suffix('k') {
            Some(digits) => (digits, 1_000.0),
            None => (text.as_str(), 1.0),
        },
    };
    let number: f64 = digits.parse().ok()?;
    (number >= 0.0).then(|| (number * unit).round() as usize)
}

impl Settings {
    fn from_env() -> Settings {
        let list = std::env::var("SCALE_RECORDS").unwrap_or_else(|_| "1000000,5000000".into());
        Settings {
            records: list
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(|n| count(n).unwrap_or_else(|| panic!("SCALE_RECORDS={list:?}")))
                .collect(),
            repeats: env_number("SCALE_REPEATS", 200),
            report: std::env::var_os("SCALE_REPORT").map(PathBuf::from),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The keys that N records hold: of every 4 records, 2 are single finals, 2 a pair.
fn keys_of(records: usize) -> usize {
    records / 4 * 3
}

/// Whether key `n` has a `pending` before its `final` (one key in three).
fn is_pair(n: usize) -> bool {
    n % 3 == 2
}

fn key(n: usize) -> String {
    format!("scale-{n}")
}

/// What a caller sends for key `n`, and the worker's fingerprint of it
/// (`worker/fingerprint.rs`: the operation, a newline, the fields sorted, as JSON).
fn body(n: usize) -> Value {
    json!({"order_id": key(n), "amount": AMOUNT})
}

fn fingerprint(n: usize) -> String {
    let text = format!("approve\n\"amount\":{AMOUNT},\"order_id\":\"{}\",", key(n));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
}

/// The PG's approval of key `n`, shaped as the PG simulator answers (about 150 bytes).
fn reply(n: usize) -> Value {
    let approval = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key(n).as_bytes());
    json!({
        "status": "APPROVED",
        "approval_id": format!("pg-{approval}"),
        "order_id": key(n),
        "operation": "approve",
        "amount": AMOUNT,
    })
}

/// A results record of key `n`, as a worker writes it (`worker/answer.rs`, `Recorded`).
fn record_value(n: usize, stage: Stage) -> Vec<u8> {
    let value = match stage {
        Stage::Final => json!({
            "state": "final",
            "error": null,
            "reply": reply(n),
            "fingerprint": fingerprint(n),
        }),
        Stage::Pending => json!({
            "state": "pending",
            "attempt": uuid::Uuid::new_v4().to_string(),
            "started_ms": now_ms(),
            "fingerprint": fingerprint(n),
        }),
    };
    value.to_string().into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Final,
}

/// The order the records are written in: key after key; a pair's `final` [`PAIR_LAG`]
/// pairs after its `pending`.
struct Schedule {
    keys: usize,
    next: usize,
    waiting: VecDeque<usize>,
}

impl Schedule {
    fn new(records: usize) -> Schedule {
        Schedule {
            keys: keys_of(records),
            next: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl Iterator for Schedule {
    type Item = (usize, Stage);

    fn next(&mut self) -> Option<(usize, Stage)> {
        if self.waiting.len() > PAIR_LAG || (self.next == self.keys && !self.waiting.is_empty()) {
            return self.waiting.pop_front().map(|n| (n, Stage::Final));
        }
        if self.next == self.keys {
            return None;
        }
        let n = self.next;
        self.next += 1;
        if is_pair(n) {
            self.waiting.push_back(n);
            Some((n, Stage::Pending))
        } else {
            Some((n, Stage::Final))
        }
    }
}

/// The results topic, as the worker creates it (`kafka/topics.rs`).
fn create_results_topic(broker: &Broker) {
    let admin = broker.kafka().admin();
    broker.runtime.block_on(async {
        let spec = NewTopic::new(RESULTS_TOPIC, PARTITIONS, 1)
            .unwrap()
            .with_config("cleanup.policy", "compact")
            .with_config("min.compaction.lag.ms", "3600000");
        for (name, result) in admin
            .create_topics([spec], CreateTopicsOptions::default())
            .await
            .unwrap()
        {
            result.unwrap_or_else(|e| panic!("create {name}: {e}"));
        }
    });
}

/// Writes the layout record and `records` results records; how long it took.
fn write_records(broker: &Broker, records: usize, batch_bytes: usize) -> Duration {
    let kafka = broker.kafka();
    broker.runtime.block_on(async {
        let started = Instant::now();
        let producer = kafka
            .producer()
            .idempotent(true)
            .linger(LINGER)
            .batch_size(batch_bytes)
            .build()
            .await
            .unwrap();
        // `worker/results_layout.rs`: a worker's first use of the topic writes it.
        let layout = Record::new(RESULTS_TOPIC, &b"partitions=3"[..])
            .key(&b"\xffkreply-layout"[..])
            .partition(0);
        let _acknowledged = producer.send(layout).await.unwrap();
        // Queued in order (a key's `pending` before its `final`), acknowledged in chunks.
        let mut acks = Vec::with_capacity(IN_FLIGHT);
        for (n, stage) in Schedule::new(records) {
            let record = Record::new(RESULTS_TOPIC, record_value(n, stage)).key(key(n));
            acks.push(producer.enqueue(record).await.unwrap());
            if acks.len() == IN_FLIGHT {
                for ack in acks.drain(..) {
                    let _acknowledged = ack.await.unwrap();
                }
            }
        }
        for ack in acks {
            let _acknowledged = ack.await.unwrap();
        }
        producer.close().await.unwrap();
        started.elapsed()
    })
}

/// How long the CPU of an idle worker and broker is watched.
const IDLE: Duration = Duration::from_secs(5);

/// The CPU the worker and tansu spend over [`IDLE`], as shares of one core.
fn idle_cpu(broker: &Broker, worker: &Worker) -> (f64, f64) {
    let cpu = || {
        (
            process_cpu(worker.daemon.pid()).unwrap_or_default(),
            process_cpu(broker.pid()).unwrap_or_default(),
        )
    };
    let before = cpu();
    std::thread::sleep(IDLE);
    let after = cpu();
    let share = |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() / IDLE.as_secs_f64();
    (share(after.0, before.0), share(after.1, before.1))
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM`: the peak RSS).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One worker's startup and its state once serving.
struct Measured {
    /// From spawn until `/metrics` showed every key; `None` when it never did.
    caught_up: Option<Duration>,
    /// From spawn until it logged [`READY`].
    in_group: Option<Duration>,
    /// CPU time of the worker and of tansu from its spawn until it caught up (or gave up).
    worker_cpu: Duration,
    tansu_cpu: Duration,
    /// VmRSS and VmHWM once measured.
    rss_kb: Option<u64>,
    peak_kb: Option<u64>,
    keys: Option<f64>,
}

/// Starts a worker and waits until it holds `expected` keys and is in its group (or
/// `limit` passes, or the keys stop growing for a minute after it joined: then what it
/// holds is reported).
fn start_worker(
    broker: &Broker,
    pg: &MockPg,
    config: &Path,
    expected: usize,
    limit: Duration,
) -> (Worker, Measured) {
    let tansu_before = process_cpu(broker.pid()).unwrap_or_default();
    let started = Instant::now();
    let name = format!("scale-worker-{}", free_port());
    let worker = Worker::spawn_logging(&name, &broker.addr, pg, config, LOG_FILTER);
    let pid = worker.daemon.pid();
    let (mut caught_up, mut in_group) = (None, None);
    let mut cpu = None;
    let (mut last_keys, mut keys_moved) = (None, Instant::now());
    while caught_up.is_none() || in_group.is_none() {
        let keys = worker.metric(KEYS_METRIC);
        if keys != last_keys {
            (last_keys, keys_moved) = (keys, Instant::now());
        }
        if caught_up.is_none() && keys == Some(expected as f64) {
            caught_up = Some(started.elapsed());
            cpu = Some((
                process_cpu(pid).unwrap_or_default(),
                process_cpu(broker.pid()).unwrap_or_default(),
            ));
        }
        if in_group.is_none() && worker.daemon.log_text().contains(READY) {
            in_group = Some(started.elapsed());
        }
        let stalled = in_group.is_some() && keys_moved.elapsed() > Duration::from_secs(60);
        if started.elapsed() > limit || stalled {
            eprintln!(
                "worker {name}: {:?} of {expected} keys after {:.0} s",
                keys,
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            rss_kb(pid).is_some(),
            "the worker ended; log:\n{}",
            worker.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (worker_cpu, tansu_cpu) = cpu.unwrap_or_else(|| {
        (
            process_cpu(pid).unwrap_or_default(),
            process_cpu(broker.pid()).unwrap_or_default(),
        )
    });
    // What the catch-up left settles (freed buffers, the first polls of requests).
    std::thread::sleep(Duration::from_secs(1));
    let measured = Measured {
        caught_up,
        in_group,
        worker_cpu,
        tansu_cpu: tansu_cpu.saturating_sub(tansu_before),
        rss_kb: rss_kb(pid),
        peak_kb: status_kb(pid, "VmHWM:"),
        keys: worker.metric(KEYS_METRIC),
    };
    (worker, measured)
}

/// Reads a running worker's state again (the first one, once the second joined).
fn measure_again(worker: &Worker) -> Measured {
    let pid = worker.daemon.pid();
    Measured {
        caught_up: None,
        in_group: None,
        worker_cpu: Duration::ZERO,
        tansu_cpu: Duration::ZERO,
        rss_kb: rss_kb(pid),
        peak_kb: status_kb(pid, "VmHWM:"),
        keys: worker.metric(KEYS_METRIC),
    }
}

/// Repeat latencies, in µs.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    /// At quantile `q` (nearest rank), in ms.
    fn percentile_ms(&mut self, q: f64) -> Option<f64> {
        self.0.sort_unstable();
        let rank = (q * self.0.len() as f64).ceil() as usize;
        Some(*self.0.get(rank.max(1) - 1)? as f64 / 1000.0)
    }
}

/// `count` keys spread over `keys`, starting at `offset`.
fn spread(keys: usize, count: usize, offset: usize) -> Vec<usize> {
    (0..count)
        .map(|i| (i * keys / count + offset) % keys)
        .collect()
}

/// Pays key `n` again; its answer must be the reply on record.
fn repeat(gateway: &Gateway, n: usize) {
    let answer = gateway.pay_with("approve", &[("idempotency-key", &key(n))], &body(n));
    answer.assert_status(200);
    assert_eq!(
        answer.json(),
        reply(n),
        "the answer to a repeat of {}",
        key(n)
    );
}

/// Sends repeats of existing keys one at a time (after a few not timed); their latencies.
fn repeats(gateway: &Gateway, keys: usize, count: usize, offset: usize) -> Latencies {
    for n in spread(keys, WARMUP_REPEATS, offset + keys / 2) {
        repeat(gateway, n);
    }
    let mut latencies = Latencies::default();
    for n in spread(keys, count, offset) {
        let started = Instant::now();
        repeat(gateway, n);
        latencies.0.push(started.elapsed().as_micros() as u64);
    }
    latencies
}

/// Asserts that the PG was never called and that the workers answered `expected`
/// repeats from their records.
fn assert_answered_from_records(pg: &MockPg, workers: &[&Worker], expected: usize) {
    assert_eq!(pg.charges()["calls"], json!(0), "the PG was called");
    let answered = || -> usize {
        workers
            .iter()
            .map(|w| w.daemon.log_text().matches(FROM_RECORD).count())
            .sum()
    };
    wait_until("the repeats' log lines", Duration::from_secs(10), || {
        answered() == expected
    });
}

/// One line of the table.
struct Row {
    records: usize,
    /// The workers' states: the one that just started last.
    workers: Vec<Measured>,
    repeats: Option<Latencies>,
}

/// What one N's run wrote and saw besides the rows.
struct Run {
    records: usize,
    wrote: Duration,
    tansu_kb: Option<u64>,
    /// CPU time over [`IDLE`] with one worker caught up and nothing asked of it: the
    /// worker's and tansu's, as a share of one core.
    idle: (f64, f64),
    load_at_start: String,
    load_at_end: String,
}

/// Runs N = `records`: the one-worker row, then the two-worker row.
fn run(records: usize, settings: &Settings, config: &Path, batch_bytes: usize) -> (Run, [Row; 2]) {
    let load_at_start = load_average();
    let keys = keys_of(records);
    let broker = Broker::start();
    create_results_topic(&broker);
    let wrote = write_records(&broker, records, batch_bytes);
    let tansu_kb = rss_kb(broker.pid());
    eprintln!(
        "N = {records}: written in {:.1} s; tansu RSS {} MB",
        wrote.as_secs_f64(),
        megabytes(tansu_kb)
    );
    let pg = MockPg::start(&[]);
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gateway = Gateway::spawn_logging(&broker.addr, GATEWAY_HOST, addr, config, LOG_FILTER);
    gateway.wait_ready();
    let limit = Duration::from_secs(120) + Duration::from_secs_f64(records as f64 / 2_000.0);

    let (first, alone) = start_worker(&broker, &pg, config, keys, limit);
    wait_assigned(&[&first], PARTITIONS as usize);
    let idle = idle_cpu(&broker, &first);
    let mut sent = 0;
    let timed = (keys > 0).then(|| repeats(&gateway, keys, settings.repeats, 0));
    sent += timed
        .as_ref()
        .map_or(0, |_| settings.repeats + WARMUP_REPEATS);
    assert_answered_from_records(&pg, &[&first], sent);
    let one = Row {
        records,
        workers: vec![alone],
        repeats: timed,
    };

    let (second, joined) = start_worker(&broker, &pg, config, keys, limit);
    wait_assigned(&[&first, &second], PARTITIONS as usize);
    let timed = (keys > 0).then(|| repeats(&gateway, keys, settings.repeats, 1));
    sent += timed
        .as_ref()
        .map_or(0, |_| settings.repeats + WARMUP_REPEATS);
    assert_answered_from_records(&pg, &[&first, &second], sent);
    let two = Row {
        records,
        workers: vec![measure_again(&first), joined],
        repeats: timed,
    };
    let run = Run {
        records,
        wrote,
        tansu_kb,
        idle,
        load_at_start,
        load_at_end: load_average(),
    };
    (run, [one, two])
}

fn seconds(value: Option<Duration>) -> String {
    fixed(value.map(|d| d.as_secs_f64()), 1)
}

/// Each worker's `of`, joined by ` / `.
fn each(row: &Row, of: impl Fn(&Measured) -> String) -> String {
    row.workers.iter().map(of).collect::<Vec<_>>().join(" / ")
}

/// RSS over the empty worker's, per key held, in bytes.
fn bytes_per_key(worker: &Measured, baseline_kb: Option<u64>) -> Option<f64> {
    let (rss, baseline) = (worker.rss_kb?, baseline_kb?);
    let keys = worker.keys.filter(|k| *k > 0.0)?;
    Some((rss as f64 - baseline as f64) * 1024.0 / keys)
}

const HEADER: &str = "| N records | workers | caught up s | in group s | RSS MB per worker | peak RSS MB | keys held per worker | bytes/key | repeat p50/p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn table_line(row: &mut Row, baseline_kb: Option<u64>) -> String {
    let repeats = match &mut row.repeats {
        Some(latencies) => format!(
            "{} / {}",
            fixed(latencies.percentile_ms(0.50), 1),
            fixed(latencies.percentile_ms(0.99), 1)
        ),
        None => "-".into(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        thousands(row.records),
        row.workers.len(),
        each(row, |w| seconds(w.caught_up)),
        each(row, |w| seconds(w.in_group)),
        each(row, |w| megabytes(w.rss_kb)),
        each(row, |w| megabytes(w.peak_kb)),
        each(row, |w| {
            w.keys
                .map_or("-".into(), |k| thousands(k.max(0.0) as usize))
        }),
        each(row, |w| fixed(bytes_per_key(w, baseline_kb), 0)),
        repeats,
    )
}

/// Records read per second of catch-up by the one-worker row of N.
fn catch_up_rate(row: &Row) -> Option<f64> {
    let took = row.workers.first()?.caught_up?.as_secs_f64();
    (row.records > 0 && took > 0.0).then(|| row.records as f64 / took)
}

fn report(
    machine: &Machine,
    settings: &Settings,
    batch_bytes: usize,
    runs: &[Run],
    rows: &mut [Row],
) -> String {
    let mut text = format!(
        "## kreply worker idempotency state at scale, {}\n\n\
         machine: {} cores (nproc), {} GB RAM; load average (uptime) at start {}, at end {}\n\
         kreply {} ({}); {} (memory storage), broker and processes all on this machine\n\
         records: half `final` approvals (reply ~150 bytes + fingerprint), half `pending` + `final` pairs \
         ({PAIR_LAG} pairs apart), so N records hold 3N/4 keys, all written now; topic {RESULTS_TOPIC}, {PARTITIONS} partitions, \
         written in batches of {batch_bytes} bytes (producer_batch_bytes) with linger {} ms, {} sends in flight; \
         {} repeats per row, one at a time through one gateway, after {WARMUP_REPEATS} not timed\n\n",
        machine.date,
        machine.cores,
        memory_gb(),
        machine.load_at_start,
        load_average(),
        machine.commit,
        machine.binary,
        machine.tansu,
        LINGER.as_millis(),
        thousands(IN_FLIGHT),
        settings.repeats,
    );
    let baseline_kb = rows
        .iter()
        .find(|r| r.records == 0)
        .and_then(|r| r.workers.first()?.rss_kb);
    text.push_str(HEADER);
    for row in rows.iter_mut() {
        text.push_str(&table_line(row, baseline_kb));
    }
    text.push_str(
        "\ncaught up: from the worker's spawn until its /metrics showed kreply_worker_results_keys at the key count \
         (it serves /metrics only after its startup read the whole topic); in group: until it logged that it is ready in its group. \
         Two workers: the first (already running, `-`) / the second, started once the first served, joining its group. \
         RSS: VmRSS once in its group; peak: VmHWM. bytes/key: RSS over the empty worker's (N = 0, 1 worker), per key held.\n\n",
    );
    for run in runs {
        let row = rows
            .iter()
            .find(|r| r.records == run.records && r.workers.len() == 1);
        let worker = row.and_then(|r| r.workers.first());
        text.push_str(&format!(
            "N = {}: {} keys; written in {:.1} s ({:.0} records/s); tansu RSS after writing {} MB \
             (memory storage: no disk, and not what a Kafka broker would hold; the broker's disk and memory are n/a here); \
             catch-up {} records/s, CPU until caught up: worker {} s, tansu {} s; \
             idle for {} s once caught up (one worker): worker {:.0} %, tansu {:.0} % of a core; load average at start {}, at end {}\n",
            thousands(run.records),
            thousands(keys_of(run.records)),
            run.wrote.as_secs_f64(),
            run.records as f64 / run.wrote.as_secs_f64().max(f64::MIN_POSITIVE),
            megabytes(run.tansu_kb),
            fixed(row.and_then(catch_up_rate), 0),
            fixed(worker.map(|w| w.worker_cpu.as_secs_f64()), 1),
            fixed(worker.map(|w| w.tansu_cpu.as_secs_f64()), 1),
            IDLE.as_secs(),
            run.idle.0 * 100.0,
            run.idle.1 * 100.0,
            run.load_at_start,
            run.load_at_end,
        ));
    }
    for row in rows.iter() {
        for worker in row.workers.iter().filter(|w| w.rss_kb.is_some()) {
            let expected = keys_of(row.records) as f64;
            if worker.keys != Some(expected) {
                text.push_str(&format!(
                    "N = {}, {} worker(s): a worker holds {} keys, not {}\n",
                    thousands(row.records),
                    row.workers.len(),
                    fixed(worker.keys, 0),
                    thousands(keys_of(row.records)),
                ));
            }
        }
    }
    text.push_str(&extrapolation(rows, baseline_kb));
    text
}

/// The extrapolation to [`DAY_OF_KEYS`] keys by the largest N's one-worker row.
fn extrapolation(rows: &[Row], baseline_kb: Option<u64>) -> String {
    let Some(row) = rows
        .iter()
        .filter(|r| r.records > 0 && r.workers.len() == 1)
        .max_by_key(|r| r.records)
    else {
        return String::new();
    };
    let per_key = row
        .workers
        .first()
        .and_then(|w| bytes_per_key(w, baseline_kb));
    let rate = catch_up_rate(row);
    let memory = per_key.map(|b| b * DAY_OF_KEYS / 1e9);
    let minutes = |records: f64| rate.map(|r| records / r / 60.0);
    let worker = row.workers.first();
    let cpu_us = |cpu: Option<Duration>| cpu.map(|c| c.as_secs_f64() * 1e6 / row.records as f64);
    let (worker_us, tansu_us) = (
        cpu_us(worker.map(|w| w.worker_cpu)),
        cpu_us(worker.map(|w| w.tansu_cpu)),
    );
    let cpu_minutes = |us: Option<f64>| us.map(|us| us * DAY_OF_KEYS / 1e6 / 60.0);
    format!(
        "\nExtrapolation to 86.4 million keys (1,000 payments/s for 24 h), by N = {}: \
         {} bytes/key -> {} GB of index per worker, every worker; \
         catch-up at {} records/s -> {} min for 86.4 million records (one per key, fully compacted), \
         {} min for 115.2 million (this mix, 4 records per 3 keys, uncompacted); \
         CPU per record read: worker {} µs, tansu {} µs -> {} min of worker CPU, {} of tansu's, for 86.4 million records\n",
        thousands(row.records),
        fixed(per_key, 0),
        fixed(memory, 1),
        fixed(rate, 0),
        fixed(minutes(DAY_OF_KEYS), 1),
        fixed(minutes(DAY_OF_KEYS * 4.0 / 3.0), 1),
        fixed(worker_us, 2),
        fixed(tansu_us, 2),
        fixed(cpu_minutes(worker_us), 1),
        fixed(cpu_minutes(tansu_us), 1),
    )
}

/// MemTotal, in GB.
fn memory_gb() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    fixed(kb.map(|kb| kb / 1024.0 / 1024.0), 1)
}

#[test]
#[ignore = "a benchmark of minutes: scripts/scale-bench runs it on a release build"]
fn scale() {
    let settings = Settings::from_env();
    let machine = Machine::now();
    let mut json = Value::Null;
    let config = config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
        c["worker"]["results_topic"] = json!(RESULTS_TOPIC);
        // The request topic is new: nothing on it is old, and no repeat is skipped.
        c["worker"]["start_from"] = json!("earliest");
        json = c.clone();
    });
    let batch_bytes = json["producer_batch_bytes"].as_u64().unwrap() as usize;
    let (mut runs, mut rows) = (Vec::new(), Vec::new());
    for records in std::iter::once(0).chain(settings.records.iter().copied()) {
        let (run, [one, two]) = run(records, &settings, &config, batch_bytes);
        runs.push(run);
        rows.extend([one, two]);
    }
    let text = report(&machine, &settings, batch_bytes, &runs, &mut rows);
    println!("{text}");
    if let Some(path) = &settings.report {
        std::fs::write(path, &text).unwrap();
    }
}

#[test]
fn counts_are_read_with_units() {
    assert_eq!(count("1000000"), Some(1_000_000));
    assert_eq!(count("1_000_000"), Some(1_000_000));
    assert_eq!(count("1m"), Some(1_000_000));
    assert_eq!(count("2.5M"), Some(2_500_000));
    assert_eq!(count(" 500k "), Some(500_000));
    assert_eq!(count("many"), None);
}

#[test]
fn the_schedule_writes_n_records_of_three_quarters_as_many_keys_each_pending_first() {
    let records = 4_000;
    let written: Vec<(usize, Stage)> = Schedule::new(records).collect();
    assert_eq!(written.len(), records);
    let finals = written.iter().filter(|(_, s)| *s == Stage::Final).count();
    assert_eq!(finals, keys_of(records));
    let singles = (0..keys_of(records)).filter(|n| !is_pair(*n)).count();
    assert_eq!(singles, records / 2);
    for (at, (n, stage)) in written.iter().enumerate() {
        if *stage == Stage::Pending {
            let final_at = written
                .iter()
                .position(|w| *w == (*n, Stage::Final))
                .unwrap();
            assert!(final_at > at + PAIR_LAG, "{n}");
        }
    }
}

#[test]
fn a_final_record_reads_as_the_worker_writes_it() {
    let value: Value = serde_json::from_slice(&record_value(7, Stage::Final)).unwrap();
    assert_eq!(value["state"], "final");
    assert_eq!(value["reply"], reply(7));
    let reply_bytes = reply(7).to_string().len();
    assert!((120..=180).contains(&reply_bytes), "{reply_bytes}");
    assert_eq!(fingerprint(7).len(), 36);
}
