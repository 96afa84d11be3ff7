//! One broker of krafka's three-broker Kafka-rules cluster crashes, and its partitions stay
//! without a leader until they are moved (about 9 s on KRaft). On Kafka's rules that must
//! cost only the payments whose request, reply or results partition it led: every other
//! payment is answered, the host stays ready, no reader is opened again, no index is
//! wiped, and once the partitions have a leader again every payment is answered. (On
//! tansu's rules one crashed broker stopped the whole host: 0 of 443 payments answered 200
//! in those 9 s, and the worker took the silent results log for one that started over.)
//!
//! Keys and partitions: a request is keyed by its order id, and so is its reply; its
//! results records go to the results partition numbered like the request's
//! (`worker/slot.rs`). Every topic has 3 partitions and Kafka's partitioner (murmur2), so
//! which partitions a payment touches is known before it is sent.

mod common;

use common::answers::metric;
use common::cluster::BrokerKind;
use common::system::{System, system_config};
use common::*;
use krafka::producer::murmur2;
use krafka::testing::ApiKey;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RESULTS_TOPIC: &str = "payment_results";
const WORKER_GROUP: &str = "kreply-workers";
/// Every kreply topic: request, both hosts' replies, results, dead letters.
const TOPICS: [&str; 5] = [
    REQUEST_TOPIC,
    REPLY_LOCAL2,
    REPLY_LOCAL3,
    RESULTS_TOPIC,
    DLQ_TOPIC,
];
const PARTITIONS: i32 = 3;
/// The broker that crashes, and the partition (of every topic) it leads.
const CRASHED: i32 = 1;
const ITS_PARTITION: i32 = 2;
/// The leader of each partition before the crash.
const LEADERS: [i32; 3] = [0, 2, CRASHED];
/// Who takes `ITS_PARTITION` over.
const TAKES_OVER: i32 = 0;
/// How long its partitions stay without a leader (KRaft's usual failover).
const LEADERLESS: Duration = Duration::from_secs(9);
/// How soon after the move every payment must be answered again.
const RECOVERY: Duration = Duration::from_secs(15);
const CALLERS: usize = 6;
/// Workers: 3 (one per request partition) unless `LEADER_MOVE_WORKERS` says otherwise.
/// 1 runs the test under tansu's rules (`KAFKA_RULES_COMPAT=tansu-0.6
/// LEADER_MOVE_WORKERS=1`): the classic group protocol never settles 3 members on this
/// cluster (see `kafka_rules.rs`).
const WORKERS: &str = "LEADER_MOVE_WORKERS";
/// Each caller's `request-timeout`: short, so every caller gets a definite answer soon.
const CALLER_WAIT_MS: u64 = 3000;
/// What a definite answer may take beyond the caller's wait on a busy 2-core machine.
const ANSWER_SLACK: Duration = Duration::from_millis(2500);

/// A topic's partition for `key` (Kafka's default partitioner).
fn partition_of(key: &str) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) as i32 % PARTITIONS
}

/// The partitions one payment touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    /// Request, reply and dead-letter partition (key: the order id).
    request: i32,
    /// Results partition: the request's.
    results: i32,
}

impl Route {
    fn of(order: &str) -> Route {
        Route {
            request: partition_of(order),
            results: partition_of(order),
        }
    }

    fn avoids(self, partition: i32) -> bool {
        self.request != partition && self.results != partition
    }
}

/// One caller's payment and what it got.
#[derive(Debug)]
struct Paid {
    order: String,
    route: Route,
    /// When it was sent, from the crash on.
    sent: Duration,
    /// The HTTP status, or 0 when no response came (the connection failed or closed).
    status: u16,
    /// The problem's `code`, or the I/O error when no response came.
    code: String,
    took: Duration,
}

fn pay(gateway: &Gateway, order: &str, since: Instant) -> Paid {
    let wait = CALLER_WAIT_MS.to_string();
    let body = json!({"order_id": order, "amount": 10}).to_string();
    let sent = since.elapsed();
    let started = Instant::now();
    let response = request(
        gateway.addr,
        "POST",
        "/v1/payments/approve",
        &[
            ("content-type", "application/json"),
            ("request-timeout", &wait),
        ],
        body.as_bytes(),
    );
    let took = started.elapsed();
    let (status, code) = match response {
        Ok(r) => {
            let code = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string))
                .unwrap_or_default();
            (r.status, code)
        }
        Err(e) => (0, e.to_string()),
    };
    Paid {
        order: order.to_string(),
        route: Route::of(order),
        sent,
        status,
        code,
        took,
    }
}

/// One order id (`<prefix>-<n>`) for each of the nine routes, so every request and every
/// results partition is touched, in every combination.
fn orders_on_every_route(prefix: &str) -> Vec<String> {
    let mut found: BTreeMap<Route, String> = BTreeMap::new();
    for n in 0.. {
        let order = format!("{prefix}-{n}");
        found.entry(Route::of(&order)).or_insert(order);
        if found.len() == PARTITIONS as usize {
            break;
        }
    }
    found.into_values().collect()
}

/// Pays `orders` all at once.
fn pay_all(gateway: &Gateway, orders: &[String], since: Instant) -> Vec<Paid> {
    std::thread::scope(|s| {
        let calls: Vec<_> = orders
            .iter()
            .map(|order| s.spawn(move || pay(gateway, order, since)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

fn leaders(system: &System, topic: &str) -> Vec<i32> {
    (0..PARTITIONS)
        .map(|p| system.broker.leader_of(topic, p))
        .collect()
}

/// How many answers of each status (and problem code).
fn tally<'a>(paid: impl IntoIterator<Item = &'a Paid>) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for p in paid {
        *counts.entry((p.status, p.code.clone())).or_default() += 1;
    }
    counts
}

/// The kreply clients (by client id) that sent no `Metadata` request among `requests`,
/// though they sent others: they cannot have learnt of a leader move since.
fn clients_without_metadata(requests: &[krafka::testing::RecordedRequest]) -> BTreeSet<String> {
    let client = |r: &krafka::testing::RecordedRequest| r.client_id.clone().unwrap_or_default();
    let asked: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.api_key == ApiKey::Metadata)
        .map(client)
        .collect();
    requests
        .iter()
        .map(client)
        .filter(|c| c.starts_with("kreply") && !asked.contains(c))
        .collect()
}

#[test]
fn one_crashed_broker_stops_only_the_payments_it_leads() {
    let workers = env_number(WORKERS, 3);
    let system = System::start_kind(BrokerKind::KafkaRules, workers, &[], system_config(3000));
    let cluster = system.broker.cluster();
    let gateway = &system.gateway;

    // Leaders, deterministically: partition 2 of every topic on broker 1, 0 and 1 on the
    // others. `set_leader` bumps the leader epoch and adds the new leader to the replicas
    // and the ISR; the clients follow the move on their next request. The other host's
    // reply topic exists once that host starts: it is created here (if not yet), so that
    // every kreply topic is arranged.
    cluster.create_topic(REPLY_LOCAL3, PARTITIONS);
    for topic in TOPICS {
        for (partition, &leader) in (0..).zip(LEADERS.iter()) {
            if system.broker.leader_of(topic, partition) != leader {
                assert!(cluster.set_leader(topic, partition, leader), "{topic}");
            }
        }
        assert_eq!(leaders(&system, topic), LEADERS, "{topic}");
    }
    // The worker group's coordinator is the lowest-numbered online broker unless moved,
    // and a crash does not take a broker out of the metadata: it stays on broker 0.
    let coordinator = cluster.with_state(|s| s.group_coordinator(WORKER_GROUP));
    assert_ne!(coordinator, CRASHED, "the group's coordinator must survive");

    // Warm up: with the new leaders, a payment on every route is answered.
    let warm = pay_all(gateway, &orders_on_every_route("W"), Instant::now());
    for p in &warm {
        assert_eq!(p.status, 200, "warm-up {p:?}");
    }
    assert_eq!(metric(gateway, "kreply_reply_consumer_reopens_total"), 0.0);

    // Every claim below that kreply breaks is a finding; all are reported together.
    let mut findings: Vec<String> = Vec::new();

    // Broker 1 crashes; its partitions have no leader for `LEADERLESS`. Callers pay
    // unique orders one after another; /readyz is probed every 200 ms.
    let crashed_at = Instant::now();
    cluster.crash(CRASHED);
    let stop = AtomicBool::new(false);
    let (paid, readyz) = std::thread::scope(|s| {
        let stop = &stop;
        let probe = s.spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let status = get(gateway.addr, "/readyz").map_or(0, |r| r.status);
                seen.push((crashed_at.elapsed(), status));
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        });
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                s.spawn(move || {
                    let mut paid = Vec::new();
                    for n in 0.. {
                        if crashed_at.elapsed() >= LEADERLESS {
                            break;
                        }
                        let p = pay(gateway, &format!("C{caller}-{n}"), crashed_at);
                        if p.status == 503 {
                            // A refusal comes at once: no busy loop on 2 cores.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        paid.push(p);
                    }
                    paid
                })
            })
            .collect();
        let paid: Vec<Paid> = callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        stop.store(true, Ordering::SeqCst);
        (paid, probe.join().unwrap())
    });

    // What the callers saw while broker 1 was down.
    let (live, cut_off): (Vec<&Paid>, Vec<&Paid>) =
        paid.iter().partition(|p| p.route.avoids(ITS_PARTITION));
    let summary = format!(
        "{} payments while broker {CRASHED} was down: on live partitions only {:?}; \
         touching partition {ITS_PARTITION} {:?}",
        paid.len(),
        tally(live.iter().copied()),
        tally(cut_off.iter().copied()),
    );
    eprintln!("{summary}");
    for p in &paid {
        assert!(
            [200, 503, 504].contains(&p.status),
            "an answer other than 200, 503 or 504: {p:?}\n{summary}"
        );
        assert!(
            p.took <= Duration::from_millis(CALLER_WAIT_MS) + ANSWER_SLACK,
            "a caller waited past its request-timeout: {p:?}"
        );
    }
    assert!(
        !live.is_empty() && !cut_off.is_empty(),
        "both kinds of keys were paid: {summary}"
    );
    assert!(
        cut_off.iter().all(|p| p.status != 200),
        "a payment through broker {CRASHED}'s partition answered 200: was it down? {summary}"
    );
    let answered = live.iter().filter(|p| p.status == 200).count();
    if answered == 0 {
        findings.push(format!(
            "no payment answered 200 while broker {CRASHED} was down, though {} touched live \
             leaders only",
            live.len()
        ));
    }
    let unanswered: Vec<String> = live
        .iter()
        .filter(|p| p.status != 200)
        .map(|p| {
            format!(
                "{} sent at {:.1?}: {} {}",
                p.order, p.sent, p.status, p.code
            )
        })
        .collect();
    if !unanswered.is_empty() {
        let last_answered = live
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.sent)
            .max()
            .map_or("none".to_string(), |sent| format!("{sent:.1?}"));
        findings.push(format!(
            "{} of {} payments on live partitions only were not answered 200 while broker \
             {CRASHED} was down (the first ones: {:?}); the last one answered was sent at \
             {last_answered} after the crash",
            unanswered.len(),
            live.len(),
            &unanswered[..unanswered.len().min(8)],
        ));
    }
    let unready: Vec<_> = readyz.iter().filter(|(_, status)| *status != 200).collect();
    if !unready.is_empty() {
        findings.push(format!(
            "/readyz was not 200 while a partition had no leader ({} of {} probes, from \
             {:.1?} after the crash to {:.1?})",
            unready.len(),
            readyz.len(),
            unready[0].0,
            unready[unready.len() - 1].0,
        ));
    }

    // Once the last caller has its answer, broker 1's partitions move to a survivor
    // (`set_leader` bumps the leader epoch); every new payment, on every route, must be
    // answered again within `RECOVERY`.
    let moved_at = Instant::now();
    let before_move = cluster.requests().len();
    for topic in TOPICS {
        assert!(
            cluster.set_leader(topic, ITS_PARTITION, TAKES_OVER),
            "{topic}"
        );
    }
    let mut rounds = Vec::new();
    let recovered = loop {
        let round = pay_all(
            gateway,
            &orders_on_every_route(&format!("M{}", rounds.len() + 1)),
            moved_at,
        );
        let all_answered = round.iter().all(|p| p.status == 200);
        rounds.push(round);
        if all_answered {
            break true;
        }
        if moved_at.elapsed() >= RECOVERY {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if recovered {
        eprintln!(
            "every route answered again {:.1?} after the move ({} round(s))",
            moved_at.elapsed(),
            rounds.len()
        );
    } else {
        let last = rounds.last().expect("a round");
        let failing: Vec<String> = last
            .iter()
            .filter(|p| p.status != 200)
            .map(|p| format!("{} {:?}: {} {}", p.order, p.route, p.status, p.code))
            .collect();
        let silent = clients_without_metadata(&cluster.requests()[before_move..]);
        findings.push(format!(
            "payments still unanswered {:.1?} after broker {CRASHED}'s partitions moved to \
             broker {TAKES_OVER} ({} rounds): last round {failing:?}; kreply clients that sent \
             no Metadata request since the move (so still take broker {CRASHED} for the \
             leader): {silent:?}",
            moved_at.elapsed(),
            rounds.len()
        ));
    }

    // Broker 1 comes back, leading nothing: nothing changes for the callers.
    cluster.restart(CRASHED);
    let after_restart = pay_all(gateway, &orders_on_every_route("R"), Instant::now());
    if after_restart.iter().any(|p| p.status != 200) {
        findings.push(format!(
            "after broker {CRASHED} restarted: {:?}",
            tally(&after_restart)
        ));
    }

    // The operator's view: nothing reopened, nothing taken for a log that started over.
    let log = gateway.log_text();
    for reopened in ["opening the reply consumer again", "opening it again"] {
        if log.contains(reopened) {
            findings.push(format!("{reopened:?} in the gateway log"));
        }
    }
    let reopens = metric(gateway, "kreply_reply_consumer_reopens_total");
    if reopens != 0.0 {
        findings.push(format!("kreply_reply_consumer_reopens_total is {reopens}"));
    }
    for worker in &system.workers {
        if worker
            .daemon
            .log_text()
            .contains("its log may have started over")
        {
            findings.push(format!(
                "the worker with metrics on {} reopened its results reader (\"its log may \
                 have started over\")",
                worker.metrics_addr
            ));
        }
    }

    // Charged once each: every key the PG saw, and every order answered 200 among them.
    let charges = system.pg.charges();
    let charged = charges["charges"].as_object().expect("charges by key");
    let twice: Vec<_> = charged.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "charged more than once: {twice:?}");
    let approved = warm
        .iter()
        .chain(&paid)
        .chain(rounds.iter().flatten())
        .chain(&after_restart)
        .filter(|p| p.status == 200);
    for p in approved {
        let key = format!("{}:approve", p.order);
        assert_eq!(charged.get(&key), Some(&json!(1)), "{key} answered 200");
    }

    if !findings.is_empty() {
        // kreply's own warnings and errors, for the diagnosis.
        let own = |log: String| -> String {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("kreply::") && (l.contains("WARN") || l.contains("ERROR")))
                .collect();
            match lines.is_empty() {
                true => "(none)".to_string(),
                false => lines.join("\n"),
            }
        };
        eprintln!(
            "kreply's warnings and errors, gateway:\n{}",
            own(gateway.log_text())
        );
        for worker in &system.workers {
            eprintln!(
                "worker (metrics on {}):\n{}",
                worker.metrics_addr,
                own(worker.daemon.log_text())
            );
        }
    }
    assert!(
        findings.is_empty(),
        "one crashed broker stopped more than the payments it leads:\n- {}\n{summary}\n\
         gateway log: target/tmp/logs/gateway-{}-{}.log",
        findings.join("\n- "),
        gateway.addr.ip(),
        gateway.addr.port(),
    );
}
