//! The scale benchmark of the worker's idempotency state (issue 22): what a worker pays, in
//! time, memory and disk, for the results partitions it owns, each kept in a file of its
//! state directory (`worker/results_index.rs`), and how fast it answers a repeat from it.
//! `scripts/scale-bench` runs it on a release build ([`scale`], ignored: minutes, and it
//! asserts nothing about the numbers). `cargo test` runs it small
//! ([`a_small_scale_run_restores_restarts_from_its_checkpoint_and_divides_the_keys`]:
//! 30,000 records, correctness only, nothing about time).
//!
//! For each N of `SCALE_RECORDS`, on a fresh tansu (memory storage):
//! - N results records are written straight to the results topic (`payment_results`, 3
//!   partitions, created compacted as a worker creates it), by one krafka producer of the
//!   benchmark's, no PG, no gateway: half of them `final` approvals (a reply of about
//!   150 bytes, as the PG simulator answers, and the request's fingerprint), the rest
//!   `pending` records each followed, [`PAIR_LAG`] records later, by its key's `final`.
//!   So N records hold 3N/4 payments (order `scale-<n>`, idempotency key the same), all
//!   written now: inside the 24 h window. Each goes where a worker writes it
//!   (`worker/slot.rs`): to the results partition numbered like its request's (Kafka's
//!   partitioner, murmur2, on the order id), under the key `["<order>","<key>"]`. Every
//!   partition gets the layout record a worker writes on a partition's first use
//!   (`partitions=3 placement=request-partition`) first. Records go out in batches of
//!   `producer_batch_bytes` (the shipped 16 KiB, what a worker's producer builds at most:
//!   the worker's read-back of a final record on tansu relies on it), with a linger,
//!   [`IN_FLIGHT`] sends queued before their acknowledgements are awaited.
//! - Restore: one worker starts (the shipped config, `start_from: earliest`) on an empty
//!   state directory, so it reads its partitions (all three) from the topic when the group
//!   gives them. "caught up": the time from its spawn until it logged that they were read
//!   to their end and its `/metrics` shows `kreply_worker_results_keys` at the payments of
//!   its partitions (it serves `/metrics` from its start, with 0 until then); "in group":
//!   until it logs that it is ready in its group. Records read and their rate are the
//!   worker's own ("read to their end: N records in T s"). RSS (VmRSS) and peak RSS
//!   (VmHWM) are read once it caught up, with the CPU time it and tansu spent until then;
//!   then the CPU both spend over 5 s with nothing asked of them. The disk its state
//!   directory takes (allocated blocks, as `du`) is read after it stops: until a durable
//!   commit (at most 1 s apart while it reads, and at a stop) redb keeps the last
//!   commits in its cache.
//! - Repeats: `SCALE_REPEATS` (200) payments that exist, spread over the key space, sent
//!   one at a time through a gateway (host 127.0.0.2) after 5 not timed, each timed from
//!   the HTTP request to its answer (p50, p99). Each must be answered 200 with the reply
//!   on record, from the record (the worker's log says so), and the PG simulator must have
//!   had no call at all.
//! - Restart: the worker gets SIGTERM and starts again on the same state directory: it
//!   reads only what came after each file's checkpoint. The same figures, and repeats.
//! - A second worker (an empty state directory) joins the first in their group: with 3
//!   partitions one holds 2 and the other 1, so about 2/3 and 1/3 of the payments, not
//!   half. The newcomer's restore, then each one's RSS, disk and keys, and repeats again
//!   (other keys). The first keeps the file of the partition it gave up (for when it comes
//!   back), so its state directory does not shrink: the table gives the directory and the
//!   files of the partitions each owns.
//!
//! First, the same on an empty topic (N = 0): the RSS of a worker holding nothing, against
//! which RSS is compared. Then the extrapolation to 86.4 million payments a day (1,000/s
//! for 24 h) by the largest N: restore rate, disk bytes per payment, RSS against N.
//!
//! tansu's memory storage has no disk, and its memory is not what a Kafka broker would
//! use for the same log (nor does it compact): the report gives its RSS only as a note.
//!
//! Settings: `SCALE_RECORDS` (`1000000,5000000`; `1m`, `500k` also read), `SCALE_REPEATS`
//! (200), `SCALE_REPORT` (a file to keep the report in, besides printing it). It asserts no
//! timing: only that every repeat was answered from its record with the PG not called,
//! that a restarted worker read fewer records than the topic holds, and that two workers
//! each hold fewer payments than all and together all of them.

mod common;

use common::cpu::process_cpu;
use common::machine::{Machine, load_average};
use common::report::{fixed, megabytes, thousands};
use common::rss::rss_kb;
use common::*;
use krafka::Record;
use krafka::admin::{CreateTopicsOptions, NewTopic};
use krafka::producer::murmur2;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RESULTS_TOPIC: &str = "payment_results";
const PARTITIONS: i32 = 3;
/// The layout record every results partition starts with (`worker/results_layout.rs`).
const LAYOUT_KEY: &[u8] = b"\xffkreply-layout";
const LAYOUT_VALUE: &[u8] = b"partitions=3 placement=request-partition";
/// The shipped default log filter (one INFO line per payment), as in production.
const LOG_FILTER: &str = "info,krafka=warn";
/// The gateway's host: its replies come back on `payment_response_local2`.
const GATEWAY_HOST: &str = "127.0.0.2";
/// What a worker logs once the group gave it an assignment (`worker/poll_loop.rs`).
const READY: &str = "ready: worker in its group";
/// What a worker logs once it read partitions it was given (`worker/results.rs`):
/// "... read to their end: N records in T s (R/s), K payments held".
const READ_TO_END: &str = "read to their end: ";
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
/// 1,000 payments/s for 24 h: the payments in a day's window.
const DAY_OF_KEYS: f64 = 86_400_000.0;
/// redb's page cache per owned partition (`CACHE_BYTES` in `worker/results_index.rs`).
const CACHE_MIB: u64 = 8;

struct Settings {
    records: Vec<usize>,
    repeats: usize,
    report: Option<PathBuf>,
    /// Whether the idle CPU of a caught-up worker is watched (5 s): not in the small run.
    idle: bool,
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
            idle: true,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The payments that N records hold: of every 4 records, 2 are single finals, 2 a pair.
fn keys_of(records: usize) -> usize {
    records / 4 * 3
}

/// Whether key `n` has a `pending` before its `final` (one key in three).
fn is_pair(n: usize) -> bool {
    n % 3 == 2
}

/// Payment `n`'s order id, and its idempotency key.
fn key(n: usize) -> String {
    format!("scale-{n}")
}

/// The request partition of `order`: Kafka's default partitioner on the record key (the
/// order id), as the gateway's producer places the request.
fn partition_of(order: &str) -> i32 {
    (murmur2(order.as_bytes()) & 0x7fff_ffff) as i32 % PARTITIONS
}

/// Payment `n`'s results record key, as `worker/slot.rs` writes it: `[order, key]`.
fn record_key(n: usize) -> String {
    json!([key(n), key(n)]).to_string()
}

/// The payments of each partition, for N records.
fn keys_per_partition(records: usize) -> Vec<usize> {
    let mut counts = vec![0; PARTITIONS as usize];
    for n in 0..keys_of(records) {
        counts[partition_of(&key(n)) as usize] += 1;
    }
    counts
}

/// The payments of `partitions`.
fn keys_in(per_partition: &[usize], partitions: &[i32]) -> usize {
    partitions.iter().map(|p| per_partition[*p as usize]).sum()
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

/// Writes the layout record of every partition and `records` results records, each to
/// its payment's partition; how long it took.
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
        // `worker/results_layout.rs`: a worker writes one to a partition that has none,
        // and refuses a partition without this placement.
        for partition in 0..PARTITIONS {
            let layout = Record::new(RESULTS_TOPIC, LAYOUT_VALUE)
                .key(LAYOUT_KEY)
                .partition(partition);
            let _acknowledged = producer.send(layout).await.unwrap();
        }
        // Queued in order (a key's `pending` before its `final`), acknowledged in chunks.
        let mut acks = Vec::with_capacity(IN_FLIGHT);
        for (n, stage) in Schedule::new(records) {
            let record = Record::new(RESULTS_TOPIC, record_value(n, stage))
                .key(record_key(n))
                .partition(partition_of(&key(n)));
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

/// The disk a file takes: its allocated blocks, as `du` counts them.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// The file of results partition `partition` in a worker's state directory
/// (`worker/results.rs`, `open_partition`).
fn partition_file(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("{RESULTS_TOPIC}-{partition}.redb"))
}

/// What a worker's state directory takes on disk.
#[derive(Debug, Clone, Default)]
struct Disk {
    /// Every file in it, as `du -s`.
    total: u64,
    /// The file of each partition, by partition (0 when there is none).
    files: Vec<u64>,
}

impl Disk {
    fn of(dir: &Path) -> Disk {
        let total = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| allocated(&e.path()))
                    .sum()
            })
            .unwrap_or(0);
        let files = (0..PARTITIONS)
            .map(|p| allocated(&partition_file(dir, p)))
            .collect();
        Disk { total, files }
    }

    /// The files of `partitions`.
    fn of_partitions(&self, partitions: &[i32]) -> u64 {
        partitions
            .iter()
            .filter_map(|p| self.files.get(*p as usize))
            .sum()
    }
}

/// How a worker came to hold what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Started on an empty state directory: its partitions read from the topic.
    Restore,
    /// Started again on the state directory it stopped with.
    Restart,
    /// Running already when the row's other worker joined.
    Running,
}

impl Start {
    fn name(self) -> &'static str {
        match self {
            Start::Restore => "restore",
            Start::Restart => "restart",
            Start::Running => "running",
        }
    }
}

/// One worker's startup and its state once serving.
struct Measured {
    start: Start,
    /// From spawn until it read its partitions and `/metrics` showed their payments;
    /// `None` when it never did (or it was running already).
    caught_up: Option<Duration>,
    /// From spawn until it logged [`READY`].
    in_group: Option<Duration>,
    /// Records it read of the partitions it was given, and the seconds it took, as it
    /// logged them (summed over its [`READ_TO_END`] lines).
    read: Option<(u64, f64)>,
    /// CPU time of the worker and of tansu from its spawn until it caught up (or gave up).
    worker_cpu: Duration,
    tansu_cpu: Duration,
    /// VmRSS and VmHWM once measured.
    rss_kb: Option<u64>,
    peak_kb: Option<u64>,
    keys: Option<f64>,
    /// The request partitions it owns, as it last logged them.
    partitions: Vec<i32>,
    disk: Disk,
}

impl Measured {
    /// Records read a second.
    fn read_rate(&self) -> Option<f64> {
        let (records, secs) = self.read?;
        (records > 0 && secs > 0.0).then(|| records as f64 / secs)
    }

    /// The disk of the files of the partitions it owns.
    fn owned_disk(&self) -> u64 {
        self.disk.of_partitions(&self.partitions)
    }

    /// Disk of its owned files per payment held.
    fn disk_per_key(&self) -> Option<f64> {
        let keys = self.keys.filter(|k| *k > 0.0)?;
        Some(self.owned_disk() as f64 / keys)
    }
}

/// The records and seconds of a worker's [`READ_TO_END`] lines, summed; `None` before the
/// first.
fn read_of(log: &str) -> Option<(u64, f64)> {
    let mut total: Option<(u64, f64)> = None;
    for line in log.lines() {
        let Some(at) = line.find(READ_TO_END) else {
            continue;
        };
        let mut words = line[at + READ_TO_END.len()..].split_whitespace();
        let records: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        // "records in T s"
        let secs: f64 = words.nth(2).and_then(|w| w.parse().ok()).unwrap_or(0.0);
        let (r, s) = total.unwrap_or_default();
        total = Some((r + records, s + secs));
    }
    total
}

/// A worker as the benchmark starts it: with its state directory.
struct Started {
    worker: Worker,
    state_dir: PathBuf,
}

/// Starts a worker on `state_dir` and waits until it read its partitions and holds their
/// payments (`per_partition`) and is in its group, or `limit` passes, or its keys stop
/// growing for a minute after it joined: then what it holds is reported.
fn start_worker(
    broker: &Broker,
    pg: &MockPg,
    config: &Path,
    state_dir: &Path,
    start: Start,
    per_partition: &[usize],
    limit: Duration,
) -> (Started, Measured) {
    let tansu_before = process_cpu(broker.pid()).unwrap_or_default();
    let started = Instant::now();
    let name = format!("scale-worker-{}", free_port());
    let dir = state_dir.to_str().unwrap();
    let worker = Worker::spawn_with_env(
        &name,
        &broker.addr,
        pg,
        config,
        LOG_FILTER,
        &[("KREPLY_STATE_DIR", dir)],
    );
    let pid = worker.daemon.pid();
    let (mut caught_up, mut in_group) = (None, None);
    let mut cpu = None;
    let (mut last_keys, mut keys_moved) = (None, Instant::now());
    while caught_up.is_none() || in_group.is_none() {
        let keys = worker.metric(KEYS_METRIC);
        if keys != last_keys {
            (last_keys, keys_moved) = (keys, Instant::now());
        }
        let log = worker.daemon.log_text();
        let partitions = worker.assigned();
        let expected = keys_in(per_partition, &partitions);
        if caught_up.is_none()
            && !partitions.is_empty()
            && log.contains(READ_TO_END)
            && keys == Some(expected as f64)
        {
            caught_up = Some(started.elapsed());
            cpu = Some((
                process_cpu(pid).unwrap_or_default(),
                process_cpu(broker.pid()).unwrap_or_default(),
            ));
        }
        if in_group.is_none() && log.contains(READY) {
            in_group = Some(started.elapsed());
        }
        let stalled = in_group.is_some() && keys_moved.elapsed() > Duration::from_secs(60);
        if started.elapsed() > limit || stalled {
            eprintln!(
                "worker {name}: {keys:?} of {expected} keys (partitions {partitions:?}) after {:.0} s",
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
    let mut measured = measure_again(&worker, state_dir, start);
    measured.caught_up = caught_up;
    measured.in_group = in_group;
    measured.worker_cpu = worker_cpu;
    measured.tansu_cpu = tansu_cpu.saturating_sub(tansu_before);
    let started = Started {
        worker,
        state_dir: state_dir.to_path_buf(),
    };
    (started, measured)
}

/// Reads a running worker's state (again: the first one, once the second joined).
fn measure_again(worker: &Worker, state_dir: &Path, start: Start) -> Measured {
    let pid = worker.daemon.pid();
    Measured {
        start,
        caught_up: None,
        in_group: None,
        read: read_of(&worker.daemon.log_text()),
        worker_cpu: Duration::ZERO,
        tansu_cpu: Duration::ZERO,
        rss_kb: rss_kb(pid),
        peak_kb: status_kb(pid, "VmHWM:"),
        keys: worker.metric(KEYS_METRIC),
        partitions: worker.assigned(),
        disk: Disk::of(state_dir),
    }
}

/// Stops a worker with SIGTERM, as systemd does, and waits for it to exit.
fn stop(mut started: Started) -> PathBuf {
    started.worker.daemon.signal("TERM");
    let code = started.worker.daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "the worker's exit on SIGTERM; log:\n{}",
        started.worker.daemon.log_text()
    );
    started.state_dir
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

/// Sends repeats of existing keys one at a time (after a few not timed) to `workers`;
/// their latencies. Asserts that the workers answered each from its record and that the
/// PG was never called.
fn repeats(
    gateway: &Gateway,
    pg: &MockPg,
    workers: &[&Worker],
    keys: usize,
    count: usize,
    offset: usize,
) -> Option<Latencies> {
    if keys == 0 {
        return None;
    }
    let answered = || -> usize {
        workers
            .iter()
            .map(|w| w.daemon.log_text().matches(FROM_RECORD).count())
            .sum()
    };
    let before = answered();
    for n in spread(keys, WARMUP_REPEATS, offset + keys / 2) {
        repeat(gateway, n);
    }
    let mut latencies = Latencies::default();
    for n in spread(keys, count, offset) {
        let started = Instant::now();
        repeat(gateway, n);
        latencies.0.push(started.elapsed().as_micros() as u64);
    }
    assert_eq!(pg.charges()["calls"], json!(0), "the PG was called");
    let sent = WARMUP_REPEATS + count;
    wait_until("the repeats' log lines", Duration::from_secs(10), || {
        answered() == before + sent
    });
    Some(latencies)
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
    /// The payments of each partition.
    per_partition: Vec<usize>,
    wrote: Duration,
    tansu_kb: Option<u64>,
    /// CPU time over [`IDLE`] with one worker caught up and nothing asked of it: the
    /// worker's and tansu's, as a share of one core.
    idle: Option<(f64, f64)>,
    load_at_start: String,
    load_at_end: String,
    rows: Vec<Row>,
}

/// Runs N = `records`: restore, restart, two workers.
fn run(records: usize, settings: &Settings, config: &Path, batch_bytes: usize) -> Run {
    let load_at_start = load_average();
    let keys = keys_of(records);
    let per_partition = keys_per_partition(records);
    let broker = Broker::start();
    create_results_topic(&broker);
    let wrote = write_records(&broker, records, batch_bytes);
    let tansu_kb = rss_kb(broker.pid());
    eprintln!(
        "N = {records}: written in {:.1} s; tansu RSS {} MB; payments per partition {per_partition:?}",
        wrote.as_secs_f64(),
        megabytes(tansu_kb)
    );
    let pg = MockPg::start(&[]);
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gateway = Gateway::spawn_logging(&broker.addr, GATEWAY_HOST, addr, config, LOG_FILTER);
    gateway.wait_ready();
    let limit = Duration::from_secs(120) + Duration::from_secs_f64(records as f64 / 2_000.0);
    let start = |dir: &Path, start: Start| {
        start_worker(&broker, &pg, config, dir, start, &per_partition, limit)
    };
    let mut rows = Vec::new();

    // Restore: an empty state directory.
    let (first, restored) = start(&fresh_state_dir("scale-first"), Start::Restore);
    eprintln!("N = {records}: restored in {:?}", restored.caught_up);
    wait_assigned(&[&first.worker], PARTITIONS as usize);
    let idle = settings.idle.then(|| idle_cpu(&broker, &first.worker));
    let timed = repeats(&gateway, &pg, &[&first.worker], keys, settings.repeats, 0);
    rows.push(Row {
        records,
        workers: vec![restored],
        repeats: timed,
    });

    // Restart: SIGTERM, then the same state directory. The disk is read after the stop:
    // redb keeps the commits since the last durable one (at most 1 s apart while the
    // worker reads the log, and at a stop) in its cache, so a worker that has just caught
    // up has less in its files than it holds.
    let dir = stop(first);
    rows[0].workers[0].disk = Disk::of(&dir);
    let (first, restarted) = start(&dir, Start::Restart);
    eprintln!("N = {records}: restarted in {:?}", restarted.caught_up);
    wait_assigned(&[&first.worker], PARTITIONS as usize);
    let timed = repeats(&gateway, &pg, &[&first.worker], keys, settings.repeats, 1);
    rows.push(Row {
        records,
        workers: vec![restarted],
        repeats: timed,
    });

    // A second worker joins, on an empty state directory.
    let (second, joined) = start(&fresh_state_dir("scale-second"), Start::Restore);
    eprintln!(
        "N = {records}: the second caught up in {:?}",
        joined.caught_up
    );
    wait_assigned(&[&first.worker, &second.worker], PARTITIONS as usize);
    // The first gives up what the second took: its keys shrink to its partitions'.
    wait_until(
        "the first worker's keys to be its partitions'",
        Duration::from_secs(60),
        || {
            let partitions = first.worker.assigned();
            first.worker.metric(KEYS_METRIC) == Some(keys_in(&per_partition, &partitions) as f64)
        },
    );
    let both = [&first.worker, &second.worker];
    let timed = repeats(&gateway, &pg, &both, keys, settings.repeats, 2);
    let mut running = measure_again(&first.worker, &first.state_dir, Start::Running);
    let mut joined = joined;
    // Their disk, as for the restore: after a stop. Then the files go: at 20 million
    // records they take gigabytes.
    for (measured, started) in [(&mut running, first), (&mut joined, second)] {
        let dir = stop(started);
        measured.disk = Disk::of(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    rows.push(Row {
        records,
        workers: vec![running, joined],
        repeats: timed,
    });
    Run {
        records,
        per_partition,
        wrote,
        tansu_kb,
        idle,
        load_at_start,
        load_at_end: load_average(),
        rows,
    }
}

/// What must hold whatever the numbers: a restarted worker read fewer records than the
/// topic holds (it resumed from its checkpoints) and held every payment; two workers each
/// hold fewer payments than all, together all of them. A failed one as a sentence.
fn check(run: &Run) -> Vec<String> {
    let mut wrong = Vec::new();
    let all = keys_of(run.records);
    let keys = |w: &Measured| w.keys.map_or(0, |k| k as usize);
    for row in &run.rows {
        for worker in &row.workers {
            let expected = keys_in(&run.per_partition, &worker.partitions);
            if keys(worker) != expected {
                wrong.push(format!(
                    "N = {}: a worker ({}) holds {} payments, its partitions {:?} {expected}",
                    run.records,
                    worker.start.name(),
                    keys(worker),
                    worker.partitions
                ));
            }
        }
    }
    if let Some(restarted) = run.rows.get(1).and_then(|r| r.workers.first()) {
        let read = restarted.read.map_or(u64::MAX, |(records, _)| records);
        if run.records > 0 && read >= run.records as u64 {
            wrong.push(format!(
                "N = {}: the restarted worker read {read} records, not fewer than the topic's",
                run.records
            ));
        }
    }
    if let Some(two) = run.rows.get(2) {
        let held: Vec<usize> = two.workers.iter().map(keys).collect();
        if held.iter().sum::<usize>() != all || (all > 0 && held.iter().any(|k| *k >= all)) {
            wrong.push(format!(
                "N = {}: two workers hold {held:?} of {all} payments",
                run.records
            ));
        }
    }
    wrong
}

fn seconds(value: Option<Duration>) -> String {
    fixed(value.map(|d| d.as_secs_f64()), 1)
}

/// Each worker's `of`, joined by ` / `.
fn each(row: &Row, of: impl Fn(&Measured) -> String) -> String {
    row.workers.iter().map(of).collect::<Vec<_>>().join(" / ")
}

/// Bytes as megabytes (MiB), one decimal place.
fn mb(bytes: u64) -> String {
    fixed(Some(bytes as f64 / 1024.0 / 1024.0), 1)
}

const HEADER: &str = "| N records | workers | start | caught up s | in group s | records read | read/s | RSS MB per worker | peak RSS MB | partitions | keys held per worker | disk MB (owned files) | state dir MB | disk bytes/key | repeat p50/p99 ms |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n";

fn table_line(row: &mut Row) -> String {
    let repeats = match &mut row.repeats {
        Some(latencies) => format!(
            "{} / {}",
            fixed(latencies.percentile_ms(0.50), 1),
            fixed(latencies.percentile_ms(0.99), 1)
        ),
        None => "-".into(),
    };
    let partitions = |w: &Measured| {
        let list: Vec<String> = w.partitions.iter().map(i32::to_string).collect();
        list.join(",")
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        thousands(row.records),
        row.workers.len(),
        each(row, |w| w.start.name().into()),
        each(row, |w| seconds(w.caught_up)),
        each(row, |w| seconds(w.in_group)),
        each(row, |w| match (w.start, w.read) {
            (Start::Running, _) | (_, None) => "-".into(),
            (_, Some((records, _))) => thousands(records as usize),
        }),
        each(row, |w| match w.start {
            Start::Running => "-".into(),
            _ => fixed(w.read_rate(), 0),
        }),
        each(row, |w| megabytes(w.rss_kb)),
        each(row, |w| megabytes(w.peak_kb)),
        each(row, partitions),
        each(row, |w| {
            w.keys
                .map_or("-".into(), |k| thousands(k.max(0.0) as usize))
        }),
        each(row, |w| mb(w.owned_disk())),
        each(row, |w| mb(w.disk.total)),
        each(row, |w| fixed(w.disk_per_key(), 0)),
        repeats,
    )
}

/// The restore row (one worker, all partitions read from the topic) of a run.
fn restore_of(run: &Run) -> Option<&Measured> {
    run.rows.first()?.workers.first()
}

fn report(machine: &Machine, settings: &Settings, batch_bytes: usize, runs: &mut [Run]) -> String {
    let mut text = format!(
        "## kreply worker idempotency state at scale: per partition, on disk, {}\n\n\
         machine: {} cores (nproc), {} GB RAM; load average (uptime) at start {}, at end {}\n\
         kreply {} ({}); {} (memory storage), broker and processes all on this machine; state directories on {}\n\
         records: half `final` approvals (reply ~150 bytes + fingerprint), half `pending` + `final` pairs \
         ({PAIR_LAG} pairs apart), so N records hold 3N/4 payments, all written now, each on its order's partition \
         (murmur2), after a layout record per partition; topic {RESULTS_TOPIC}, {PARTITIONS} partitions, \
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
        filesystem(),
        LINGER.as_millis(),
        thousands(IN_FLIGHT),
        settings.repeats,
    );
    text.push_str(HEADER);
    for run in runs.iter_mut() {
        for row in run.rows.iter_mut() {
            text.push_str(&table_line(row));
        }
    }
    text.push_str(
        "\nstart: restore = an empty state directory, its partitions read from the topic; restart = SIGTERM, then started \
         again on the same state directory (it reads from each file's checkpoint); two workers: the first (running, restarted \
         before) / the second, joining on an empty state directory. caught up: from the worker's spawn until it logged its \
         partitions read to their end and /metrics showed kreply_worker_results_keys at their payments; in group: until it \
         logged that it is ready in its group. records read, read/s: the worker's own \"read to their end\" lines (the \
         records of the partitions it was given, and its layout and marker records; the seconds from the group's assignment). \
         RSS: VmRSS 1 s after it caught up (the first of two: once the second caught up); peak: VmHWM. disk: allocated \
         blocks (du) of the files of the partitions it owns, read after the worker's SIGTERM (redb keeps its commits since \
         the last durable one, at most 1 s apart while it reads and at a stop, in its cache), the restarted worker's while it \
         runs (its files were written at the stop before); state dir: every file in it (a partition given up keeps its \
         file); disk bytes/key: owned files per payment held.\n\n",
    );
    let empty_rss = runs
        .iter()
        .find(|r| r.records == 0)
        .and_then(restore_of)
        .and_then(|w| w.rss_kb);
    for run in runs.iter() {
        let worker = restore_of(run);
        let files: Vec<String> = worker
            .map(|w| {
                w.disk
                    .files
                    .iter()
                    .enumerate()
                    .map(|(p, bytes)| {
                        format!(
                            "partition {p}: {} payments, {} MB",
                            thousands(run.per_partition[p]),
                            mb(*bytes)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (idle_worker, idle_tansu) = run.idle.unwrap_or_default();
        text.push_str(&format!(
            "N = {}: {} payments ({}); written in {:.1} s ({:.0} records/s); tansu RSS after writing {} MB \
             (memory storage: no disk, and not what a Kafka broker would hold; the broker's disk and memory are n/a here); \
             restore CPU until caught up: worker {} s, tansu {} s; \
             idle for {} s once caught up (one worker): worker {:.0} %, tansu {:.0} % of a core; load average at start {}, at end {}\n",
            thousands(run.records),
            thousands(keys_of(run.records)),
            files.join("; "),
            run.wrote.as_secs_f64(),
            run.records as f64 / run.wrote.as_secs_f64().max(f64::MIN_POSITIVE),
            megabytes(run.tansu_kb),
            fixed(worker.map(|w| w.worker_cpu.as_secs_f64()), 1),
            fixed(worker.map(|w| w.tansu_cpu.as_secs_f64()), 1),
            IDLE.as_secs(),
            idle_worker * 100.0,
            idle_tansu * 100.0,
            run.load_at_start,
            run.load_at_end,
        ));
        for wrong in check(run) {
            text.push_str(&format!("NOT AS EXPECTED: {wrong}\n"));
        }
    }
    text.push_str(&extrapolation(runs, empty_rss));
    text
}

/// The extrapolation to [`DAY_OF_KEYS`] payments by the largest N's restore.
fn extrapolation(runs: &[Run], empty_rss: Option<u64>) -> String {
    let Some(run) = runs
        .iter()
        .filter(|r| r.records > 0)
        .max_by_key(|r| r.records)
    else {
        return String::new();
    };
    let Some(worker) = restore_of(run) else {
        return String::new();
    };
    let rate = worker.read_rate();
    let per_key = worker.disk_per_key();
    let day_disk = per_key.map(|b| b * DAY_OF_KEYS / 1e9);
    let minutes = |records: f64| rate.map(|r| records / r / 60.0);
    let rss: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let w = restore_of(r)?;
            Some(format!(
                "{} at N = {} (peak {})",
                megabytes(w.rss_kb),
                thousands(r.records),
                megabytes(w.peak_kb)
            ))
        })
        .collect();
    let cpu_us = worker.worker_cpu.as_secs_f64() * 1e6 / run.records as f64;
    format!(
        "\nExtrapolation to 86.4 million payments (1,000 payments/s for 24 h), by N = {}: \
         disk {} bytes per payment -> {} GB of state files for a day's window, divided among the workers by the partitions each owns; \
         restore at {} records/s (one worker, {PARTITIONS} partitions) -> {} min for 86.4 million records (one per payment, compacted), \
         {} min for 172.8 million (a pending and a final per payment, uncompacted), after a lost state directory; \
         worker CPU {:.2} µs a record read; \
         RSS MB once caught up: {} (the empty worker: {}), redb's cache {CACHE_MIB} MiB per owned partition\n",
        thousands(run.records),
        fixed(per_key, 0),
        fixed(day_disk, 1),
        fixed(rate, 0),
        fixed(minutes(DAY_OF_KEYS), 1),
        fixed(minutes(DAY_OF_KEYS * 2.0), 1),
        cpu_us,
        rss.join(", "),
        megabytes(empty_rss),
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

/// The filesystem the state directories are on (`df --output=fstype`).
fn filesystem() -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(dir);
    let out = common::machine::command_output(
        "df",
        &["--output=fstype,source", dir.to_str().unwrap_or(".")],
    );
    out.lines()
        .nth(1)
        .unwrap_or("-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shipped config as the benchmark runs it, and its producer batch size.
fn scale_config() -> (PathBuf, usize) {
    let mut json = Value::Null;
    let config = config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
        c["worker"]["results_topic"] = json!(RESULTS_TOPIC);
        // The request topic is new: nothing on it is old, and no repeat is skipped.
        c["worker"]["start_from"] = json!("earliest");
        json = c.clone();
    });
    let batch_bytes = json["producer_batch_bytes"].as_u64().unwrap() as usize;
    (config, batch_bytes)
}

#[test]
#[ignore = "a benchmark of minutes: scripts/scale-bench runs it on a release build"]
fn scale() {
    let settings = Settings::from_env();
    let machine = Machine::now();
    let (config, batch_bytes) = scale_config();
    let mut runs = Vec::new();
    for records in std::iter::once(0).chain(settings.records.iter().copied()) {
        runs.push(run(records, &settings, &config, batch_bytes));
    }
    let text = report(&machine, &settings, batch_bytes, &mut runs);
    println!("{text}");
    if let Some(path) = &settings.report {
        std::fs::write(path, &text).unwrap();
    }
    let wrong: Vec<String> = runs.iter().flat_map(check).collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The benchmark small, in `cargo test`: correctness only, nothing about time.
#[test]
fn a_small_scale_run_restores_restarts_from_its_checkpoint_and_divides_the_keys() {
    let records = 30_000;
    let settings = Settings {
        records: vec![records],
        repeats: 20,
        report: None,
        idle: false,
    };
    let (config, batch_bytes) = scale_config();
    let started = Instant::now();
    let run = run(records, &settings, &config, batch_bytes);
    let wrong = check(&run);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let restored = restore_of(&run).unwrap();
    assert_eq!(restored.partitions, [0, 1, 2]);
    assert!(
        restored.disk.files.iter().all(|bytes| *bytes > 0),
        "a file per partition: {:?}",
        restored.disk
    );
    eprintln!(
        "the small run took {:.1} s",
        started.elapsed().as_secs_f64()
    );
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

/// Where a payment's records go is where the worker looks (`worker/slot.rs`), and the
/// partitions each get about a third.
#[test]
fn a_payment_is_placed_as_the_worker_places_it() {
    assert_eq!(record_key(7), r#"["scale-7","scale-7"]"#);
    let per_partition = keys_per_partition(30_000);
    assert_eq!(per_partition.iter().sum::<usize>(), keys_of(30_000));
    for keys in &per_partition {
        assert!((6_500..8_500).contains(keys), "{per_partition:?}");
    }
    assert_eq!(
        keys_in(&per_partition, &[0, 2]),
        per_partition[0] + per_partition[2]
    );
}

#[test]
fn the_read_lines_are_summed() {
    let log = "x worker: results partitions [0, 1, 2] read to their end: 1203 records in 2.5 s (481/s), 900 payments held\n\
               y worker: results partitions [1] read to their end: 7 records in 0.1 s (70/s), 300 payments held\n";
    let (records, secs) = read_of(log).unwrap();
    assert_eq!(records, 1210);
    assert!((secs - 2.6).abs() < 1e-9, "{secs}");
    assert_eq!(read_of("nothing"), None);
}
