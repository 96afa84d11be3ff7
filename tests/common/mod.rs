//! Test harness: a real tansu broker or krafka's three-broker Kafka-rules cluster
//! (`cluster.rs`), real gateway processes, a plain HTTP client, and a Spring-style
//! responder built on krafka. Nothing here imitates kreply's own Kafka layer.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod answers;
pub mod cluster;
pub mod cpu;
pub mod echo;
pub mod floor;
pub mod hosts;
pub mod keep_alive;
pub mod machine;
pub mod nest;
pub mod openapi_doc;
pub mod raw;
pub mod report;
pub mod restart;
pub mod rss;
pub mod scram_proxy;
pub mod system;
pub mod tls;
pub mod zombie;

use krafka::admin::{CreateTopicsOptions, NewTopic};
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, Kafka, Record};
use kreply::kafka::offset_gaps::{self, OffsetGaps};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REQUEST_TOPIC: &str = "payment_request";
pub const DLQ_TOPIC: &str = "payment_request-dlt";
pub const REPLY_LOCAL2: &str = "payment_response_local2";
pub const REPLY_LOCAL3: &str = "payment_response_local3";

/// The binary under test: `KREPLY_BIN` (e.g. the static musl build), else this build's.
pub fn kreply_binary() -> PathBuf {
    std::env::var_os("KREPLY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_kreply")),
        PathBuf::from,
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new, empty state directory for a worker (`worker.state_dir`): tests run in parallel
/// against brokers of their own, so no two workers may share one unless a test means a
/// restarted worker to find its predecessor's (it then passes `KREPLY_STATE_DIR`).
pub fn fresh_state_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("state")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tansu broker on a free port, in memory unless started with other storage, or a
/// three-broker Kafka-rules cluster ([`Broker::start_kafka_rules`]); stopped on drop.
pub struct Broker {
    /// The bootstrap list kreply's processes are given (`KREPLY_BROKERS`).
    pub addr: String,
    /// The tansu process; `None` for a Kafka-rules cluster.
    child: Option<Child>,
    /// The Kafka-rules cluster, served on `runtime`; dropped before it.
    cluster: Option<krafka::testing::FakeBroker>,
    pub runtime: tokio::runtime::Runtime,
    /// The `--storage-engine` URL, to restart with the same storage.
    storage: String,
}

/// Starts tansu on `port` with `storage`, appending to its log, and waits until it listens.
fn spawn_tansu(port: u16, storage: &str) -> Child {
    spawn_tansu_advertising(port, port, storage)
}

/// [`spawn_tansu`], telling clients (in metadata) to reach it at `advertised` instead.
fn spawn_tansu_advertising(port: u16, advertised: u16, storage: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join(format!("tansu-{port}.log")))
        .unwrap();
    let child = Command::new(std::env::var("TANSU").unwrap_or_else(|_| "tansu".into()))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", storage])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tansu must be installed (see .ci/run)");
    let addr = format!("127.0.0.1:{port}");
    wait_until("tansu to listen", Duration::from_secs(10), || {
        TcpStream::connect(&addr).is_ok()
    });
    child
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_storage("memory://tansu/")
    }

    /// A broker on `storage`, e.g. `sqlite:///path/file.db`.
    pub fn start_with_storage(storage: &str) -> Broker {
        let port = free_port();
        Broker::spawned(port, spawn_tansu(port, storage), storage)
    }

    /// A broker (memory storage) that tells clients to reach it at `front_port`, where a
    /// TLS terminator or an authenticating proxy in front of it listens, so that every
    /// connection after the first goes through the front too. The harness's own plaintext
    /// clients ([`Broker::kafka`] and what uses it) do not work through such a front.
    pub fn start_behind(front_port: u16) -> Broker {
        let (port, storage) = (free_port(), "memory://tansu/");
        let child = spawn_tansu_advertising(port, front_port, storage);
        Broker::spawned(port, child, storage)
    }

    fn spawned(port: u16, child: Child, storage: &str) -> Broker {
        Broker {
            addr: format!("127.0.0.1:{port}"),
            child: Some(child),
            cluster: None,
            runtime: harness_runtime(),
            storage: storage.to_string(),
        }
    }

    /// The broker's process id, e.g. to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a tansu broker").id()
    }

    /// Kills the broker, as a crash would (every broker of a Kafka-rules cluster).
    pub fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cluster) = &self.cluster {
            (0..cluster::BROKERS).for_each(|node| cluster.crash(node));
        }
    }

    pub fn kafka(&self) -> Kafka {
        self.runtime
            .block_on(Kafka::builder(self.addr.as_str()).connect())
            .unwrap()
    }

    /// Creates the topics, each with `partitions` partitions.
    pub fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin = self.kafka().admin();
        self.runtime.block_on(async {
            let specs = names
                .iter()
                .map(|n| NewTopic::new(*n, partitions, 1).unwrap());
            for (name, result) in admin
                .create_topics(specs, CreateTopicsOptions::default())
                .await
                .unwrap()
            {
                result.unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        });
    }

    /// The standard request, reply (both hosts) and DLQ topics.
    pub fn create_standard_topics(&self) {
        self.create_topics(&[REQUEST_TOPIC, REPLY_LOCAL2, REPLY_LOCAL3, DLQ_TOPIC], 3);
    }

    /// A consumer on every partition of `topic`, from the start.
    /// Polls hand out everything fetched: krafka cuts a poll at 500 records, and after a
    /// cut inside a batch its next fetch starts there, from which tansu's memory storage
    /// skips the rest of the batch (see `kreply::kafka::whole_batches`).
    async fn from_start(kafka: &Kafka, topic: &str) -> Consumer {
        let consumer = kafka
            .consumer_without_group()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(10))
            .max_poll_records(-1)
            .build()
            .await
            .unwrap();
        let meta = consumer.fetch_metadata(Some(topic)).await.unwrap();
        let partitions: Vec<i32> = meta.topics[0]
            .partitions_iter()
            .map(|p| p.partition)
            .collect();
        consumer.assign(topic, partitions).await.unwrap();
        consumer
    }

    /// Every record of `topic`: waits for `expected`, then a quiet second for any extra.
    pub fn read_topic(&self, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
        let kafka = self.kafka();
        self.runtime.block_on(async {
            let consumer = Self::from_start(&kafka, topic).await;
            let mut records = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(15);
            while records.len() < expected && Instant::now() < deadline {
                records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
            }
            let quiet = Instant::now() + Duration::from_secs(1);
            while Instant::now() < quiet {
                records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
            }
            records
        })
    }

    /// The sum of the listed ends (ListOffsets latest) of every partition of `topic`. On
    /// tansu's memory storage a partition's listed end is the first offset of its newest
    /// batch + 1, not its record count, but it still grows with every write.
    pub fn end_offset(&self, topic: &str) -> i64 {
        let kafka = self.kafka();
        self.runtime.block_on(async {
            let consumer = Self::from_start(&kafka, topic).await;
            let mut total = 0;
            for partitions in consumer.assignment().await.values() {
                for p in partitions {
                    total += consumer.fetch_watermarks(topic, *p).await.unwrap().1;
                }
            }
            total
        })
    }

    /// Starts a Spring-style responder on the request topic (see [`Responder`]).
    pub fn responder(&self) -> Responder {
        self.slow_responder(Duration::ZERO)
    }

    /// A responder that answers each request `delay` after reading it.
    pub fn slow_responder(&self, delay: Duration) -> Responder {
        self.answering(delay, |reply| reply)
    }

    /// A responder that sends `finish(echo reply)` to each request, `delay` after reading it.
    pub fn answering(&self, delay: Duration, finish: fn(Record) -> Record) -> Responder {
        self.replying(delay, move |request| {
            finish(echo::reply_to(request).unwrap())
        })
    }

    /// A responder on the request topic that sends `reply(request)` to each request,
    /// `delay` after reading it.
    pub fn replying(
        &self,
        delay: Duration,
        reply: impl Fn(&ConsumerRecord) -> Record + Send + 'static,
    ) -> Responder {
        let kafka = self.kafka();
        let compat = self.compat();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (consumer, producer) = self.runtime.block_on(async {
            let consumer = echo::request_consumer(&kafka, REQUEST_TOPIC).await.unwrap();
            (consumer, Arc::new(kafka.producer().build().await.unwrap()))
        });
        let recorded = Arc::clone(&seen);
        let task = self.runtime.spawn(async move {
            let mut gaps = OffsetGaps::new(compat);
            loop {
                // Gateways write the requests: one stored late is read again, as a worker does.
                let wait = Duration::from_millis(100);
                let (requests, _) =
                    offset_gaps::poll_in_order(&consumer, REQUEST_TOPIC, &mut gaps, wait)
                        .await
                        .unwrap();
                for request in requests {
                    let reply = reply(&request);
                    recorded.lock().unwrap().push(request);
                    let producer = Arc::clone(&producer);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ack = producer.send(reply).await.unwrap();
                    });
                }
            }
        });
        Responder { seen, task }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Tokio runtime a [`Broker`]'s own clients (and a Kafka-rules cluster) run on.
fn harness_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Answers every request; remembers each request it saw. Stops on drop.
pub struct Responder {
    pub seen: Arc<Mutex<Vec<ConsumerRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `kreply` process with its log file; killed on drop.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `kreply args...` with `env`, logging to `<name>.log`.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = log_dir().join(format!("{name}.log"));
        let child = Command::new(kreply_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .env("KREPLY_BROKER_COMPAT", cluster::compat_for(env))
            .env("KREPLY_STATE_DIR", fresh_state_dir(name))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, e.g. to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the process to end; `Some(code)` if it exited, `None` if a signal ended it.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log has a line containing `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no \"{text}\" in {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kreply gateway` process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub daemon: Daemon,
}

impl Gateway {
    /// Starts a gateway as host `host_ip` against `broker` and waits until it is ready.
    pub fn start(broker: &str, host_ip: &str) -> Gateway {
        let gateway = Gateway::spawn(broker, host_ip, &config_with(|_| {}));
        gateway.wait_ready();
        gateway
    }

    /// Starts a gateway process with the config file `config`, without waiting.
    pub fn spawn(broker: &str, host_ip: &str, config: &Path) -> Gateway {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Gateway::spawn_at(broker, host_ip, addr, config)
    }

    /// Starts a gateway for host `host_ip` listening on `addr`, without waiting.
    pub fn spawn_at(broker: &str, host_ip: &str, addr: SocketAddr, config: &Path) -> Gateway {
        Gateway::spawn_logging(broker, host_ip, addr, config, "info")
    }

    /// [`Gateway::spawn_at`] with the log filter `rust_log`. ("info" logs krafka's tracing
    /// spans too, a few lines per send and poll; the shipped default does not.)
    pub fn spawn_logging(
        broker: &str,
        host_ip: &str,
        addr: SocketAddr,
        config: &Path,
        rust_log: &str,
    ) -> Gateway {
        let listen = addr.to_string();
        // By IP and port: hosts on one shared port would otherwise write one file.
        let daemon = Daemon::spawn(
            &format!("gateway-{}-{}", addr.ip(), addr.port()),
            &["gateway", "--config", config.to_str().unwrap()],
            &[
                ("KREPLY_BROKERS", broker),
                ("KREPLY_LISTEN", &listen),
                ("KREPLY_HOST_IP", host_ip),
                ("RUST_LOG", rust_log),
            ],
        );
        Gateway { addr, daemon }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if get(self.addr, "/readyz").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// Asserts that every reply this host read had a caller here waiting for it (none was
    /// another host's, a duplicate, or given up on).
    pub fn assert_every_reply_had_a_waiter(&self) {
        let log = self.log_text();
        assert!(!log.contains("reply with no waiter"), "{log}");
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        request(self.addr, "POST", path, headers, body).unwrap()
    }

    pub fn pay(&self, operation: &str, body: &serde_json::Value) -> HttpResponse {
        self.pay_with(operation, &[], body)
    }

    /// A payment with extra headers.
    pub fn pay_with(
        &self,
        operation: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> HttpResponse {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.post(
            &format!("/v1/payments/{operation}"),
            &all,
            body.to_string().as_bytes(),
        )
    }
}

/// A `kreply mock-pg` process on a free port.
pub struct MockPg {
    pub url: String,
    pub addr: SocketAddr,
    pub daemon: Daemon,
}

impl MockPg {
    pub fn start(options: &[&str]) -> MockPg {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = addr.to_string();
        let mut args = vec!["mock-pg", "--listen", &listen];
        args.extend_from_slice(options);
        let daemon = Daemon::spawn(&format!("mock-pg-{}", addr.port()), &args, &[]);
        wait_until("mock-pg to listen", Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok()
        });
        MockPg {
            url: format!("http://{addr}"),
            addr,
            daemon,
        }
    }

    /// `{"calls": N, "calls_by_key": {key: times called}, "charges": {key: times charged},
    /// "approvals": {key: approval id}, "traces": {key: traceparent}}` (`src/mock_pg.rs`).
    pub fn charges(&self) -> serde_json::Value {
        get(self.addr, "/charges").unwrap().json()
    }
}

/// A test worker's log filter: krafka's group protocol lines, for the log a failed test
/// shows.
const WORKER_LOG: &str =
    "info,krafka=warn,krafka::consumer::group=debug,krafka::consumer::rebalance=debug";

/// A `kreply worker` process.
pub struct Worker {
    pub daemon: Daemon,
    /// Where its `/metrics` is served.
    pub metrics_addr: SocketAddr,
}

impl Worker {
    pub fn spawn(name: &str, broker: &str, pg: &MockPg, config: &Path) -> Worker {
        Worker::spawn_logging(name, broker, pg, config, WORKER_LOG)
    }

    /// [`Worker::spawn`] with the log filter `rust_log` (the benchmark runs the shipped
    /// default, without the group protocol's debug lines).
    pub fn spawn_logging(
        name: &str,
        broker: &str,
        pg: &MockPg,
        config: &Path,
        rust_log: &str,
    ) -> Worker {
        Worker::spawn_with_env(name, broker, pg, config, rust_log, &[])
    }

    /// [`Worker::spawn`] keeping its partition files in `state_dir` rather than a fresh
    /// directory: a worker started again there finds its predecessor's files.
    pub fn spawn_in(
        name: &str,
        broker: &str,
        pg: &MockPg,
        config: &Path,
        state_dir: &Path,
    ) -> Worker {
        let dir = state_dir.to_str().unwrap();
        Worker::spawn_with_env(
            name,
            broker,
            pg,
            config,
            WORKER_LOG,
            &[("KREPLY_STATE_DIR", dir)],
        )
    }

    /// [`Worker::spawn_logging`] with more environment, e.g. `KREPLY_STATE_DIR` for a
    /// restarted worker that must find its predecessor's state.
    pub fn spawn_with_env(
        name: &str,
        broker: &str,
        pg: &MockPg,
        config: &Path,
        rust_log: &str,
        more_env: &[(&str, &str)],
    ) -> Worker {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = metrics_addr.to_string();
        let mut env = vec![
            ("KREPLY_BROKERS", broker),
            ("KREPLY_PG_URL", pg.url.as_str()),
            ("KREPLY_METRICS_LISTEN", listen.as_str()),
            ("RUST_LOG", rust_log),
        ];
        env.extend_from_slice(more_env);
        let daemon = Daemon::spawn(
            name,
            &["worker", "--config", config.to_str().unwrap()],
            &env,
        );
        Worker {
            daemon,
            metrics_addr,
        }
    }

    /// The value of an unlabelled metric on the worker's `/metrics`, if it answers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = String::from_utf8(get(self.metrics_addr, "/metrics").ok()?.body).ok()?;
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?;
        value.trim().parse().ok()
    }

    /// The partitions the worker last logged as its own.
    pub fn assigned(&self) -> Vec<i32> {
        const MARK: &str = "assigned partitions [";
        let log = self.daemon.log_text();
        let Some(line) = log.lines().rev().find(|l| l.contains(MARK)) else {
            return vec![];
        };
        let after = &line[line.find(MARK).unwrap() + MARK.len()..];
        let list = &after[..after.find(']').unwrap()];
        list.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }
}

/// A whole number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// Waits until `workers` each own some partitions and together own all `partitions`.
pub fn wait_assigned(workers: &[&Worker], partitions: usize) {
    wait_until("the workers' assignment", Duration::from_secs(60), || {
        let owned: Vec<Vec<i32>> = workers.iter().map(|w| w.assigned()).collect();
        owned.iter().all(|o| !o.is_empty())
            && owned.iter().map(Vec::len).sum::<usize>() == partitions
    });
}

pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/kreply.json")
}

/// A copy of the shipped config with `change` applied, in a file of its own.
pub fn config_with(change: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped_config()).unwrap()).unwrap();
    json["host_table"] = serde_json::json!(shipped_config().with_file_name("reply-hosts.txt"));
    change(&mut json);
    let path = log_dir().join(format!("kreply-{}.json", free_port()));
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// Runs `kreply` with `args` and `env` to completion; returns (success, stderr).
pub fn run_kreply(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(kreply_binary())
        .args(args)
        .env("KREPLY_BROKER_COMPAT", cluster::compat_for(env))
        .env("KREPLY_STATE_DIR", fresh_state_dir("run"))
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// `kreply command --config config` as host 127.0.0.2 against `brokers`, to completion:
/// (success, stderr then stdout).
pub fn run_against(command: &str, config: &Path, brokers: &str) -> (bool, String) {
    run_kreply(
        &[command, "--config", config.to_str().unwrap()],
        &[("KREPLY_HOST_IP", "127.0.0.2"), ("KREPLY_BROKERS", brokers)],
    )
}

/// [`run_against`] for a command that must stop at startup: its one sentence, checked to
/// be one line.
pub fn startup_refusal(command: &str, config: &Path, brokers: &str) -> String {
    let (ok, stderr) = run_against(command, config, brokers);
    assert!(!ok, "{command} did not stop: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
    stderr
}

/// Asserts that `text` holds every one of `parts`, showing `text` when one is missing.
pub fn assert_holds(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in:\n{text}");
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, showing the body when it differs.
    pub fn assert_status(&self, expected: u16) {
        assert_eq!(
            self.status,
            expected,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    request(addr, "GET", path, &[], b"")
}

/// One request on a fresh connection (`connection: close`), read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut all = vec![("connection", "close")];
    all.extend_from_slice(headers);
    stream.write_all(&encode_request(addr, method, path, &all, body))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    Ok(parse_response(&raw))
}

/// A request's bytes: the head (with `host` and `content-length`), then the body.
fn encode_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}
