//! The worker's idempotency state on disk: one redb file per owned results partition,
//! `<state_dir>/payment_results-<p>.redb`, with a checkpoint (`read_to`) below which the
//! file holds every record of its partition.
//!
//! What is proven, on both brokers, with real `kreply` processes:
//! - a worker restarted on its files reads each partition from its checkpoint, not from
//!   offset 0, and still answers every repeat with the first answer, calling no PG;
//! - the same after a SIGKILL (the file opens at its last durable commit, still a prefix);
//! - a state directory lost is a restore from offset 0, counted, and repeats still answered;
//! - a partition moved to another worker, and a restore racing 300 repeats sent before the
//!   worker is ready: no payment is charged twice;
//! - each worker holds exactly the payments of the partitions it owns;
//! - a file left from a log that is gone (a new broker) is emptied, not trusted.
//!
//! Every repeat is compared with its first answer as JSON, and the PG simulator's call
//! counts (total and per key) are what says "not charged twice": its own de-duplication by
//! key would hide a second charge, not a second call.

mod common;

use common::cluster::BrokerKind;
use common::system::{System, system_config};
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const RESULTS_TOPIC: &str = "payment_results";
/// The workers' group (`worker.group_id` in the shipped config).
const WORKER_GROUP: &str = "kreply-workers";
/// A worker's restore, its group join and a repeat all fit in it.
const PAY_TIMEOUT: &str = "30000";

on_both_brokers!(
    a_restart_resumes_from_its_checkpoint,
    repeats_after_a_sigkill_are_answered_from_the_record,
    a_lost_state_directory_is_restored_from_offset_zero,
    a_moved_partition_brings_its_payments_to_the_new_owner,
    each_worker_holds_only_the_payments_it_owns,
    a_payment_repeated_during_a_restore_is_never_charged_twice,
    a_state_file_from_a_log_that_is_gone_is_emptied,
);

/// A system whose one worker keeps its partition files in `dir`.
fn system_in(kind: BrokerKind, dir: &Path) -> System {
    System::start_in(kind, &[dir.to_path_buf()], &[], system_config(3000))
}

/// A payment made, and its first answer.
struct Paid {
    key: String,
    order: String,
    answer: Value,
}

fn pay(gateway: &Gateway, key: &str, order: &str) -> HttpResponse {
    gateway.pay_with(
        "approve",
        &[("idempotency-key", key), ("request-timeout", PAY_TIMEOUT)],
        &json!({"order_id": order, "amount": 100}),
    )
}

/// `f(0..n)` on `threads` threads, in order of `i`.
fn in_parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut all: Vec<(usize, T)> = std::thread::scope(|s| {
        let f = &f;
        let callers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, f(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// `n` payments on as many orders, `threads` at a time, each approved.
fn pay_all(gateway: &Gateway, prefix: &str, n: usize, threads: usize) -> Vec<Paid> {
    in_parallel(n, threads, |i| {
        let (key, order) = (format!("{prefix}-key-{i}"), format!("{prefix}-{i}"));
        let response = pay(gateway, &key, &order);
        response.assert_status(200);
        Paid {
            key,
            order,
            answer: response.json(),
        }
    })
}

/// Repeats every payment, `threads` at a time: each gets its first answer again.
fn repeat_all(gateway: &Gateway, paid: &[Paid], threads: usize) {
    let answers = in_parallel(paid.len(), threads, |i| {
        let response = pay(gateway, &paid[i].key, &paid[i].order);
        (response.status, response.body)
    });
    for (first, (status, body)) in paid.iter().zip(answers) {
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "repeat of {}: {body}", first.key);
        let again: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(again, first.answer, "repeat of {}", first.key);
    }
}

/// The PG was called for each payment once, and charged it once; nothing else.
fn assert_each_called_and_charged_once(pg: &MockPg, paid: &[Paid]) {
    let charges = pg.charges();
    let short = |v: &Value| v.to_string().chars().take(2000).collect::<String>();
    for p in paid {
        let (called, charged) = (
            &charges["calls_by_key"][&p.key],
            &charges["charges"][&p.key],
        );
        assert_eq!(
            called,
            1,
            "{} called {called} times: {}",
            p.key,
            short(&charges)
        );
        assert_eq!(
            charged,
            1,
            "{} charged {charged} times: {}",
            p.key,
            short(&charges)
        );
    }
    assert_eq!(
        charges["calls"],
        paid.len(),
        "PG calls: {}",
        short(&charges)
    );
}

/// SIGTERM, and a clean exit.
fn stop(worker: &mut Worker) {
    worker.daemon.signal("TERM");
    assert_eq!(worker.daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

/// SIGKILLs the system's one worker. On the Kafka-rules cluster its group session is then
/// ended at once rather than after the coordinator's 45 s: the group's timing is not what
/// is under test, and a restarted worker would otherwise own nothing for 45 s.
fn kill_the_worker(system: &mut System) {
    let worker = &mut system.workers[0];
    worker.daemon.signal("KILL");
    assert_eq!(worker.daemon.wait_exit(Duration::from_secs(10)), None);
    system.broker.end_group_sessions(WORKER_GROUP);
}

/// The numbers in `log` after each `before`, up to the next space, `)`, `:`, `,` or line
/// end.
fn numbers_after<'a>(log: &'a str, before: &'a str) -> impl Iterator<Item = i64> + 'a {
    log.match_indices(before).map(move |(at, _)| {
        let rest = &log[at + before.len()..];
        let end = rest.find([' ', ')', ':', ',', '\n']).unwrap_or(rest.len());
        rest[..end]
            .parse()
            .unwrap_or_else(|e| panic!("{before}{}: {e}", &rest[..end]))
    })
}

/// Per results partition: the offset the worker first read it from, and how many payments
/// its file held then ("reading payment_results/<p> from offset <n> ... holds <k> payments").
fn resumed_at(log: &str) -> BTreeMap<i32, (i64, i64)> {
    let mut resumed = BTreeMap::new();
    for line in log.lines() {
        let Some(at) = line.find("worker: reading payment_results/") else {
            continue;
        };
        let rest = &line[at + "worker: reading payment_results/".len()..];
        let partition: i32 = rest[..rest.find(' ').unwrap()].parse().unwrap();
        let from = numbers_after(rest, " from offset ").next().unwrap();
        let held = numbers_after(rest, "its state file holds ").next().unwrap();
        resumed.entry(partition).or_insert((from, held));
    }
    resumed
}

/// Records read to bring gained partitions to their end, over every such line of `log`.
fn records_restored(log: &str) -> i64 {
    numbers_after(log, "read to their end: ").sum()
}

/// Waits for `worker` to own every partition, and for its restore to be logged.
fn wait_serving(worker: &Worker) {
    wait_assigned(&[worker], 3);
    let log = worker.daemon.log_text();
    assert!(log.contains("read to their end: "), "{log}");
}

/// A worker restarted on its files reads each partition from its checkpoint: every
/// payment is already in them, and far fewer records are read than lie below the
/// checkpoints. Its answers are still the first ones, and the PG is not called again.
///
/// On tansu a partition's listed end is its newest batch's first offset + 1, below a
/// checkpoint that took in a newest batch of several records (four payers at once make
/// one about every other run): a worker taking that for a log that started over empties
/// the file and reads the partition from 0, and fails here.
fn a_restart_resumes_from_its_checkpoint(kind: BrokerKind) {
    let dir = fresh_state_dir("resume");
    let mut system = system_in(kind, &dir);
    let paid = pay_all(&system.gateway, "resume", 30, 4);
    stop(&mut system.workers[0]);

    system.workers[0] = system.spawn_worker_in(&dir);
    let worker = &system.workers[0];
    wait_serving(worker);
    let log = worker.daemon.log_text();
    let resumed = resumed_at(&log);
    assert_eq!(
        resumed.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "{log}"
    );
    assert!(
        resumed.values().all(|&(from, _)| from > 0),
        "a partition was read from offset 0: {resumed:?}"
    );
    let held: i64 = resumed.values().map(|&(_, held)| held).sum();
    assert_eq!(
        held, 30,
        "payments in the files at the restart: {resumed:?}"
    );
    // Below the checkpoints: each payment's pending and final (but for the last final of
    // a partition, written after its last read), layout records and markers.
    let below: i64 = resumed.values().map(|&(from, _)| from).sum();
    assert!(below >= 2 * 30 - 3, "checkpoints {resumed:?}");
    let read = records_restored(&log);
    assert!(
        read * 5 < below,
        "{read} records read after the restart, {below} below the checkpoints"
    );
    let counted = worker
        .metric("kreply_worker_results_restored_records_total")
        .unwrap();
    assert_eq!(counted, read as f64, "restored records counted");

    repeat_all(&system.gateway, &paid, 4);
    assert_each_called_and_charged_once(&system.pg, &paid);
    let from_record = worker
        .daemon
        .log_text()
        .matches(": answered from the record, PG not called")
        .count();
    assert_eq!(from_record, 30);
}

/// A SIGKILL leaves the files at their last durable commit: a prefix of the log, from
/// which the restarted worker reads on. Every repeat is answered from the record. (Commits
/// are durable at most once a second: the 30 payments here take less, so the files
/// usually open at their startup checkpoint, holding none of them, and the restart reads
/// all 30 again from the topic.)
fn repeats_after_a_sigkill_are_answered_from_the_record(kind: BrokerKind) {
    let dir = fresh_state_dir("sigkill");
    let mut system = system_in(kind, &dir);
    let paid = pay_all(&system.gateway, "killed", 30, 4);
    // Idle now: the poll loop makes what was read durable within a second (a flush each
    // turn), so the kill below finds every payment in the files, not only in the topic.
    std::thread::sleep(Duration::from_millis(2500));
    kill_the_worker(&mut system);

    system.workers[0] = system.spawn_worker_in(&dir);
    let worker = &system.workers[0];
    wait_serving(worker);
    let log = worker.daemon.log_text();
    let resumed = resumed_at(&log);
    eprintln!("after the SIGKILL: {resumed:?}");
    assert_eq!(resumed.len(), 3, "{log}");
    let held: i64 = resumed.values().map(|(_, held)| held).sum();
    assert_eq!(
        held, 30,
        "payments in the files at the kill: {resumed:?}\n{log}"
    );

    repeat_all(&system.gateway, &paid, 4);
    assert_each_called_and_charged_once(&system.pg, &paid);
}

/// The state directory deleted between a kill and a restart: every partition is read
/// from offset 0 and every record is counted as restored; the repeats are answered from
/// the record all the same.
fn a_lost_state_directory_is_restored_from_offset_zero(kind: BrokerKind) {
    let dir = fresh_state_dir("lost");
    let mut system = system_in(kind, &dir);
    let paid = pay_all(&system.gateway, "lost", 30, 4);
    kill_the_worker(&mut system);
    assert!(dir.join("payment_results-0.redb").exists(), "{dir:?}");
    std::fs::remove_dir_all(&dir).unwrap();

    system.workers[0] = system.spawn_worker_in(&dir);
    let worker = &system.workers[0];
    wait_serving(worker);
    let log = worker.daemon.log_text();
    let resumed = resumed_at(&log);
    let expected: BTreeMap<i32, (i64, i64)> = (0..3).map(|p| (p, (0, 0))).collect();
    assert_eq!(resumed, expected, "{log}");
    let restored = worker
        .metric("kreply_worker_results_restored_records_total")
        .unwrap();
    assert!(
        restored >= 2.0 * 30.0,
        "{restored} records restored for 30 payments (a pending and a final each)"
    );

    repeat_all(&system.gateway, &paid, 4);
    assert_each_called_and_charged_once(&system.pg, &paid);
}

/// Two workers, one stopped: its partitions' payments are read by the other from the
/// topic, so every repeat there is answered from the record, by the survivor.
fn a_moved_partition_brings_its_payments_to_the_new_owner(kind: BrokerKind) {
    let dirs = [fresh_state_dir("moved-a"), fresh_state_dir("moved-b")];
    let mut system = System::start_in(kind, &dirs, &[], system_config(3000));
    let paid = pay_all(&system.gateway, "moved", 40, 4);
    let (leaving, staying) = (system.workers[0].assigned(), system.workers[1].assigned());
    eprintln!("the leaving worker owned {leaving:?}, the staying one {staying:?}");
    let before_stop = system.workers[1].daemon.log_text().len();
    stop(&mut system.workers[0]);

    let survivor = &system.workers[1];
    let since = Instant::now();
    wait_until(
        "the survivor to own every partition",
        Duration::from_secs(30),
        || {
            survivor.assigned() == [0, 1, 2]
                && survivor.metric("kreply_worker_partitions_assigned") == Some(3.0)
        },
    );
    eprintln!(
        "the survivor owned every partition after {:?}",
        since.elapsed()
    );
    // Read when gained now, not just at some earlier moment of the startup.
    let log = survivor.daemon.log_text();
    let resumed = resumed_at(&log[before_stop..]);
    assert!(
        leaving.iter().all(|p| resumed.contains_key(p)),
        "the survivor did not read {leaving:?} when it took them: {resumed:?}\n{log}"
    );

    repeat_all(&system.gateway, &paid, 4);
    assert_each_called_and_charged_once(&system.pg, &paid);
    let from_record = survivor
        .daemon
        .log_text()
        .matches(": answered from the record, PG not called")
        .count();
    assert_eq!(
        from_record, 40,
        "repeats answered from the survivor's record"
    );
}

/// Each worker's `kreply_worker_results_keys` counts exactly the payments on the results
/// partitions of the request partitions it owns (one key per payment), as the results
/// topic itself places them; together, every payment once.
fn each_worker_holds_only_the_payments_it_owns(kind: BrokerKind) {
    let dirs = [fresh_state_dir("split-a"), fresh_state_dir("split-b")];
    let system = System::start_in(kind, &dirs, &[], system_config(3000));
    let paid = pay_all(&system.gateway, "split", 60, 4);

    // Where each payment's records are: its record key, a JSON array, on its partition.
    let mut partition_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for record in system.broker.read_topic(RESULTS_TOPIC, 2 * 60) {
        let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
        if key.starts_with('[') {
            let entry = partition_of.entry(key.into_owned()).or_default();
            entry.insert(record.partition);
        }
    }
    assert_eq!(partition_of.len(), paid.len(), "{partition_of:?}");
    assert!(
        partition_of.values().all(|p| p.len() == 1),
        "a payment's records on two partitions: {partition_of:?}"
    );
    let on = |partitions: &[i32]| {
        partition_of
            .values()
            .filter(|p| p.iter().all(|p| partitions.contains(p)))
            .count() as f64
    };

    let workers = [&system.workers[0], &system.workers[1]];
    let settled = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = workers
            .iter()
            .map(|w| {
                let owned = w.assigned();
                (
                    owned.clone(),
                    on(&owned),
                    w.metric("kreply_worker_results_keys"),
                )
            })
            .collect::<Vec<_>>();
        if seen
            .iter()
            .all(|(_, expected, held)| *held == Some(*expected))
        {
            break seen;
        }
        assert!(
            Instant::now() < settled,
            "(owned, payments on them, held) per worker: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = paid.len() as f64;
    let held: Vec<f64> = seen.iter().map(|(_, _, held)| held.unwrap()).collect();
    assert!(
        held.iter().all(|&h| h > 0.0 && h < total),
        "each worker holds a share: {seen:?}"
    );
    assert_eq!(held.iter().sum::<f64>(), total, "{seen:?}");
}

/// The state directory lost in a kill, and every payment repeated at once while the new
/// worker is still joining and restoring: repeats wait for the restore, then are all
/// answered from the record; no key is called or charged twice.
fn a_payment_repeated_during_a_restore_is_never_charged_twice(kind: BrokerKind) {
    let dir = fresh_state_dir("racing");
    let mut system = system_in(kind, &dir);
    let paid = pay_all(&system.gateway, "racing", 300, 8);
    kill_the_worker(&mut system);
    std::fs::remove_dir_all(&dir).unwrap();

    system.workers[0] = system.spawn_worker_in(&dir);
    let started = Instant::now();
    let before_ready = !system.workers[0]
        .daemon
        .log_text()
        .contains("read to their end: ");
    repeat_all(&system.gateway, &paid, 8);
    eprintln!(
        "300 repeats answered {:?} after the restart",
        started.elapsed()
    );
    assert!(
        before_ready,
        "the worker had restored before the repeats were sent"
    );
    let log = system.workers[0].daemon.log_text();
    let resumed = resumed_at(&log);
    assert!(
        resumed.values().all(|&(from, _)| from == 0),
        "not restored from 0: {resumed:?}"
    );
    assert_each_called_and_charged_once(&system.pg, &paid);
}

/// A worker's files from a log that is gone (a new broker: the same topics, all empty):
/// each partition's checkpoint lies past the new log's end, so the file is emptied and
/// the partition read from its start. Nothing of the old log answers for the new one: a
/// payment with an old key and order is a payment this system never saw, charged once by
/// its PG; a new one too; and the worker holds those two only.
///
/// Runs on both brokers: the second is a new broker of the same kind, not the first one
/// restarted, which a Kafka-rules cluster cannot do.
fn a_state_file_from_a_log_that_is_gone_is_emptied(kind: BrokerKind) {
    let dir = fresh_state_dir("gone");
    let mut old = system_in(kind, &dir);
    let paid = pay_all(&old.gateway, "gone", 9, 3);
    stop(&mut old.workers[0]);
    drop(old);

    let system = system_in(kind, &dir);
    let worker = &system.workers[0];
    let log = worker.daemon.log_text();
    let emptied: Vec<(i64, i64)> = log
        .lines()
        .filter(|l| l.contains("the log started over; the file is emptied"))
        .map(|l| {
            let end = numbers_after(l, " ends at offset ").next().unwrap();
            let checkpoint = numbers_after(l, "state file's checkpoint ").next().unwrap();
            (end, checkpoint)
        })
        .collect();
    assert_eq!(emptied.len(), 3, "every partition's file emptied:\n{log}");
    assert!(emptied.iter().all(|(end, checkpoint)| end < checkpoint));

    let again = pay(&system.gateway, &paid[0].key, &paid[0].order);
    again.assert_status(200);
    assert_ne!(
        again.json()["approval_id"],
        paid[0].answer["approval_id"],
        "an answer of the old log"
    );
    let new = pay(&system.gateway, "gone-new-key", "gone-new");
    new.assert_status(200);
    let charges = system.pg.charges();
    assert_eq!(charges["calls"], 2, "{charges}");
    assert_eq!(charges["charges"][&paid[0].key], 1, "{charges}");
    assert_eq!(charges["charges"]["gone-new-key"], 1, "{charges}");
    wait_until("the two payments held", Duration::from_secs(10), || {
        worker.metric("kreply_worker_results_keys") == Some(2.0)
    });
}
