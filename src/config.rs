//! Gateway configuration: a JSON file under `etc/`, then environment overrides.
//!
//! The file holds what is the same on every host of a deployment; the environment holds
//! what differs per host or per run (`KREPLY_BROKERS`, `KREPLY_LISTEN`, `KREPLY_HOST_IP`),
//! because operators' scripts and systemd `EnvironmentFile=`s set exactly those. Unknown
//! keys are rejected so a misspelt setting fails loudly instead of silently defaulting.
//! The optional `"tls"` and `"sasl"` sections, and the secrets they name, are in
//! [`security`]. Keys a role ignores (a top-level `"operations"` beside `"flows"`) are
//! named at startup and by `check-config`: [`ignored`]. Every key is described in
//! `docs/configuration.md`, which a test keeps complete (`reference.rs`); the whole config
//! serializes (`check-config --print`), the password as `***`.

pub(crate) mod ignored;
#[cfg(test)]
mod reference;
mod security;

pub(crate) use security::{SaslMechanism, SaslSettings, TlsSettings};

use crate::error::StartupError;
use crate::gateway::flows::{self, FlowConfig};
use crate::gateway::late_replies::LateLimits;
use crate::gateway::readiness::Hysteresis;
use crate::gateway::registry::DEFAULT_MAX_IN_FLIGHT;
use crate::gateway::reply_routing::ReplyRouting;
use crate::kafka::BrokerCompat;
use crate::wire::dialect::Dialect;
use crate::wire::header_names::HeaderNames;
use crate::wire::topic_name;
use ignored::SetKeys;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config file is looked for when neither `--config` nor `KREPLY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "etc/kreply.json";

/// Everything the gateway reads at startup.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Bootstrap brokers, `host:port` each.
    pub(crate) brokers: Vec<String>,
    /// Whose rules the brokers keep: `"kafka"` (the default) or `"tansu-0.6"`; see
    /// [`BrokerCompat`] for everything it changes.
    pub(crate) broker_compat: BrokerCompat,
    /// The HTTP listen address.
    pub(crate) listen: SocketAddr,
    /// Where the gateway serves `/metrics` instead of on `listen`: a port the payment
    /// clients and their load balancer never reach. None: on `listen`, beside the payments.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The IP-to-suffix table; a relative path is resolved against the config file's folder.
    pub(crate) host_table: PathBuf,
    /// Use this IP for the host-table lookup instead of detecting the host's IPs.
    pub(crate) host_ip: Option<IpAddr>,
    /// The Kafka client id the gateway announces.
    pub(crate) client_id: String,
    /// Where payment requests are produced.
    pub(crate) request_topic: String,
    /// This host's reply topic is `<reply_topic_base>_<suffix>` (topic-per-host routing),
    /// or every host shares `<reply_topic_base>` (partition-per-host routing).
    pub(crate) reply_topic_base: String,
    /// How a reply finds its host: a topic per host, or a partition per host.
    pub(crate) reply_routing: ReplyRouting,
    /// The names of the correlation id, reply topic and reply partition headers.
    pub(crate) header_names: HeaderNames,
    /// How the gateway spells its requests and reads the replies: `"spring"` (16-byte ids,
    /// the default) or `"nestjs"` (string ids). The worker answers in the request's own.
    pub(crate) dialect: Dialect,
    /// Operations split over request topics, each flow with its own dialect and
    /// dead-letter topic; empty: one flow, from `request_topic`, `operations`, `dialect`
    /// and `dlq_topic`.
    pub(crate) flows: Vec<FlowConfig>,
    /// Where dead-letter records go on a timeout or a failed send, without `flows` (each
    /// flow names its own).
    pub(crate) dlq_topic: String,
    /// The `{operation}` values `POST /v1/payments/{operation}` accepts.
    pub(crate) operations: Vec<String>,
    /// Whether every payment must carry an `Idempotency-Key`, without `flows` (each flow
    /// says so for itself).
    pub(crate) require_idempotency_key: bool,
    /// How long a caller waits for a reply unless the request asks for less or more.
    pub(crate) default_timeout_ms: u64,
    /// The most a caller may ask for with `request-timeout` or `?timeout_ms=`.
    pub(crate) max_timeout_ms: u64,
    /// Largest request body accepted, in bytes.
    pub(crate) max_body_bytes: usize,
    /// How long the broker may hold a reply fetch; keep it small (brokers like tansu do not
    /// answer a fetch early when data arrives, so this bounds reply latency).
    pub(crate) fetch_max_wait_ms: u64,
    /// Not ready once the reply consumer has heard nothing from the brokers for this long
    /// (a fetch refreshes every partition's watermark every `fetch_max_wait_ms`).
    pub(crate) reply_stale_after_ms: u64,
    /// Bad reply-consumer polls in a row (a failed poll, or a partition not fetched within
    /// `reply_stale_after_ms`) before payments are refused and `/readyz` turns 503.
    pub(crate) unready_after_bad_polls: u32,
    /// Good polls in a row before a not-ready gateway takes payments again. Together with
    /// `unready_after_bad_polls` this keeps readiness from flapping while a broker recovers.
    pub(crate) ready_after_good_polls: u32,
    /// How long a broker connection attempt may take before startup gives up.
    pub(crate) connect_timeout_ms: u64,
    /// How long the producer waits to fill a batch; 0 favours latency.
    pub(crate) producer_linger_ms: u64,
    /// Largest produce batch per partition, in bytes (Java's `batch.size`). Multi-record
    /// batches are safe on tansu 0.6 too, and the local stack and the tests use the default:
    /// kreply never sends a consumer back inside a stored batch, and it reads offset holes
    /// again (docs/known-limits.md). `1` sends one record per batch, which costs throughput.
    pub(crate) producer_batch_bytes: usize,
    /// Payments that may wait for a reply at once; more are refused with 503 `overloaded`.
    pub(crate) max_in_flight: usize,
    /// Replies that come after their caller was told "outcome unknown".
    pub(crate) late_replies: LateRepliesConfig,
    /// Checking and creating the topics at startup.
    pub(crate) topics: TopicsConfig,
    /// Limits on HTTP connections: slow, idle and too many clients.
    pub(crate) http: HttpConfig,
    /// `kreply worker` only.
    pub(crate) worker: WorkerConfig,
    /// TLS to the brokers; none means plaintext.
    pub(crate) tls: Option<TlsSettings>,
    /// SASL authentication to the brokers; none means anonymous.
    pub(crate) sasl: Option<SaslSettings>,
    /// The keys the file named, as opposed to those left to their defaults.
    #[serde(skip)]
    pub(crate) set_keys: SetKeys,
}

/// The reference worker's settings (`kreply worker`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WorkerConfig {
    /// The consumer group the workers share the request topic in.
    pub(crate) group_id: String,
    /// The payment provider's base URL (`http://host:port`); payments are POSTed to `/charge`.
    pub(crate) pg_url: String,
    /// How long one PG call may take before its outcome counts as unknown.
    pub(crate) pg_timeout_ms: u64,
    /// Whether the PG de-duplicates by idempotency key: a second call with a key it has
    /// seen returns the first call's result and charges nothing (Stripe, Toss Payments).
    /// Then an attempt left in doubt (its worker died mid-call, the PG did not answer in
    /// time, its final record failed) is settled by asking the PG again with the same
    /// key. `false`: such a payment stays `pg-unknown` until someone checks with the PG.
    pub(crate) pg_idempotent: bool,
    /// What keeps two attempts of one payment from both charging: `"log"` (the default)
    /// writes a `pending` record and reads it back before the PG is called, so only the
    /// first attempt calls it, with any PG; `"pg"` skips that claim and relies on the PG's
    /// own de-duplication by key (needs `pg_idempotent`), a few milliseconds faster.
    pub(crate) claim: Claim,
    /// How many PG calls one worker makes at once. By Little's law the calls in flight
    /// are the rate times the PG's latency: 1,000 payments/s at 200 ms need 200.
    pub(crate) concurrency: usize,
    /// Requests one worker holds at once, polled and not settled yet; past it the worker
    /// stops polling until some settle. Bounds memory whatever the PG's latency.
    pub(crate) max_held_requests: usize,
    /// The compacted topic of payment results, partitioned like the requests and keyed
    /// by (order id, idempotency key).
    pub(crate) results_topic: String,
    /// Where the worker keeps its idempotency state on disk: one file per results
    /// partition it owns, a cache of the results topic that lets a restart resume where
    /// it stopped. One directory per worker process; losing it costs a restore.
    pub(crate) state_dir: PathBuf,
    /// How long a payment's result is kept by idempotency key: a repeat within it is
    /// answered from the record; a request older than it is not charged. The results
    /// topic must keep records at least this long (it is compacted, so it keeps them).
    pub(crate) idempotency_window_ms: u64,
    /// How long the group waits for a silent worker before giving its partitions away.
    pub(crate) session_timeout_ms: u64,
    /// Where a group with no committed offsets starts: "latest" or "earliest".
    pub(crate) start_from: StartFrom,
    /// Where the worker serves `/metrics` and `/healthz`.
    pub(crate) metrics_listen: SocketAddr,
}

/// Who makes sure overlapping attempts of one payment charge once (`worker.claim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Claim {
    /// The first `pending` in the results log wins; the others never call the PG.
    #[default]
    Log,
    /// Every attempt calls the PG, which answers repeats of a key with its first result.
    Pg,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StartFrom {
    /// Only requests produced from now on (the safe choice against an old topic).
    Latest,
    /// Everything still in the topic.
    Earliest,
}

/// How many late replies are kept, and for how long (`GET /v1/requests/{id}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LateRepliesConfig {
    /// Ids given up on (answered or not) remembered at once; the oldest go first. 0 keeps none.
    pub(crate) max_count: usize,
    /// How long after the caller's 504 its id and reply are remembered.
    pub(crate) max_age_ms: u64,
}

impl Default for LateRepliesConfig {
    fn default() -> Self {
        let limits = LateLimits::default();
        LateRepliesConfig {
            max_count: limits.max_count,
            max_age_ms: limits.max_age.as_millis() as u64,
        }
    }
}

/// How long a client may take, and how many may be connected at once. Without these a
/// slow client (or a stuck load balancer) holds memory and a file descriptor forever.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpConfig {
    /// A request's head must arrive within this, from its first byte (else `408`), and a new
    /// connection must begin its first request within this (else it is closed).
    pub(crate) head_timeout_ms: u64,
    /// A request's body must arrive within this, from the end of its head; else `408`.
    pub(crate) body_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed. Keep it above the
    /// load balancer's idle timeout, so the balancer closes first.
    pub(crate) idle_timeout_ms: u64,
    /// Open connections at most; one beyond it is answered `503` and closed.
    pub(crate) max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            head_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            max_connections: 8_192,
        }
    }
}

impl LateRepliesConfig {
    pub(crate) fn limits(&self) -> LateLimits {
        LateLimits {
            max_count: self.max_count,
            max_age: Duration::from_millis(self.max_age_ms),
        }
    }
}

impl HttpConfig {
    pub(crate) fn head_timeout(&self) -> Duration {
        Duration::from_millis(self.head_timeout_ms)
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// Whether startup may create missing topics, and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TopicsConfig {
    /// Create missing request, reply and DLQ topics instead of refusing to start.
    pub(crate) auto_create: bool,
    /// Partitions of a created topic.
    pub(crate) partitions: i32,
    /// Replication factor of a created topic (3 in production, with min.insync.replicas=2).
    pub(crate) replication_factor: i16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: vec!["127.0.0.1:9092".to_string()],
            broker_compat: BrokerCompat::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            host_table: PathBuf::from("reply-hosts.txt"),
            host_ip: None,
            client_id: "kreply-gateway".to_string(),
            request_topic: "payment_request".to_string(),
            reply_topic_base: "payment_response".to_string(),
            reply_routing: ReplyRouting::default(),
            header_names: HeaderNames::default(),
            dialect: Dialect::Spring,
            flows: Vec::new(),
            require_idempotency_key: false,
            dlq_topic: "payment_request-dlt".to_string(),
            operations: ["approve", "cancel", "refund"].map(String::from).to_vec(),
            default_timeout_ms: 5_000,
            max_timeout_ms: 30_000,
            max_body_bytes: 64 * 1024,
            fetch_max_wait_ms: 10,
            reply_stale_after_ms: 3_000,
            unready_after_bad_polls: 3,
            ready_after_good_polls: 5,
            connect_timeout_ms: 3_000,
            producer_linger_ms: 0,
            producer_batch_bytes: 16 * 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            late_replies: LateRepliesConfig::default(),
            topics: TopicsConfig::default(),
            http: HttpConfig::default(),
            worker: WorkerConfig::default(),
            tls: None,
            sasl: None,
            set_keys: SetKeys::default(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            group_id: "kreply-workers".to_string(),
            pg_url: "http://127.0.0.1:9300".to_string(),
            pg_timeout_ms: 3_000,
            pg_idempotent: true,
            claim: Claim::Log,
            concurrency: 256,
            max_held_requests: 4096,
            results_topic: "payment_results".to_string(),
            idempotency_window_ms: 24 * 60 * 60 * 1000,
            state_dir: PathBuf::from("/var/lib/kreply/worker"),
            session_timeout_ms: 10_000,
            start_from: StartFrom::Latest,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9310)),
        }
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            auto_create: false,
            partitions: 3,
            replication_factor: 1,
        }
    }
}

impl Config {
    /// Reads the file, applies the process environment, validates the result, and reads
    /// the files and the password that `"tls"` and `"sasl"` name.
    pub fn load(path: &Path) -> Result<Config, StartupError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StartupError::new(format!(
                "cannot read the config file {} (pass --config PATH or set KREPLY_CONFIG): {e}",
                path.display()
            ))
        })?;
        let mut config = Config::parse(path, &text)?;
        let env = |name: &str| std::env::var(name).ok();
        config.apply_env(env)?;
        config.validate(path)?;
        config.load_security(path, &env)?;
        Ok(config)
    }

    /// Parses the JSON text; the host table path (and the TLS CA and certificate) become
    /// relative to the file's folder.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, StartupError> {
        let mut config: Config = serde_json::from_str(text).map_err(|e| {
            StartupError::new(format!(
                "{} is not a valid kreply config: {e}",
                path.display()
            ))
        })?;
        // Read again untyped: what the file named, before defaults filled in the rest.
        config.set_keys = SetKeys::of(&serde_json::from_str(text).unwrap_or_default());
        let folder = path.parent().unwrap_or(Path::new(""));
        if config.host_table.is_relative() {
            config.host_table = folder.join(&config.host_table);
        }
        if let Some(tls) = &mut config.tls {
            tls.anchor(folder);
        }
        Ok(config)
    }

    /// Applies `KREPLY_BROKERS`, `KREPLY_BROKER_COMPAT`, `KREPLY_LISTEN`, `KREPLY_HOST_IP`,
    /// `KREPLY_PG_URL`, `KREPLY_METRICS_LISTEN` and `KREPLY_STATE_DIR`.
    pub(crate) fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), StartupError> {
        if let Some(brokers) = env("KREPLY_BROKERS") {
            self.brokers = brokers
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(name) = env("KREPLY_BROKER_COMPAT") {
            self.broker_compat = BrokerCompat::parse(&name).ok_or_else(|| {
                StartupError::new(format!(
                    "KREPLY_BROKER_COMPAT={name:?} names no broker; set \"kafka\" (Apache Kafka's rules) or \"tansu-0.6\""
                ))
            })?;
        }
        if let Some(listen) = env("KREPLY_LISTEN") {
            self.listen = parse_env(
                "KREPLY_LISTEN",
                &listen,
                "an ip:port such as 127.0.0.1:8080",
            )?;
        }
        if let Some(listen) = env("KREPLY_METRICS_LISTEN") {
            self.worker.metrics_listen = parse_env(
                "KREPLY_METRICS_LISTEN",
                &listen,
                "an ip:port such as 127.0.0.1:9310",
            )?;
        }
        if let Some(url) = env("KREPLY_PG_URL") {
            self.worker.pg_url = url;
        }
        if let Some(dir) = env("KREPLY_STATE_DIR") {
            self.worker.state_dir = PathBuf::from(dir);
        }
        if let Some(ip) = env("KREPLY_HOST_IP") {
            self.host_ip = Some(parse_env("KREPLY_HOST_IP", &ip, "an IP address")?);
        }
        Ok(())
    }

    /// Rejects settings that cannot work, naming the file and the key.
    pub(crate) fn validate(&self, path: &Path) -> Result<(), StartupError> {
        let fail = |why: String| Err(StartupError::new(format!("{}: {why}", path.display())));
        if self.brokers.is_empty() {
            return fail(
                "\"brokers\" is empty; list at least one host:port (or set KREPLY_BROKERS)".into(),
            );
        }
        for (key, name) in [
            ("request_topic", &self.request_topic),
            ("dlq_topic", &self.dlq_topic),
            ("reply_topic_base", &self.reply_topic_base),
        ] {
            if let Err(why) = topic_name::check(name) {
                return fail(format!("\"{key}\": {why}"));
            }
        }
        self.header_names.check().or_else(fail)?;
        flows::check(&self.flows).or_else(fail)?;
        if self.flows.is_empty() && self.dlq_topic == self.request_topic {
            return fail(format!(
                "\"dlq_topic\" is the request topic \"{}\", whose workers would take dead letters for payments; name a topic of its own",
                self.dlq_topic
            ));
        }
        if self.operations.is_empty() {
            return fail("\"operations\" is empty; list the payment operations to accept, e.g. [\"approve\"]".into());
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return fail(format!(
                "\"default_timeout_ms\" ({}) must be above 0 and at most \"max_timeout_ms\" ({})",
                self.default_timeout_ms, self.max_timeout_ms
            ));
        }
        if self.unready_after_bad_polls == 0 || self.ready_after_good_polls == 0 {
            return fail(
                "\"unready_after_bad_polls\" and \"ready_after_good_polls\" must be at least 1"
                    .into(),
            );
        }
        if self.max_body_bytes == 0 {
            return fail("\"max_body_bytes\" must be above 0".into());
        }
        if self.max_in_flight == 0 {
            return fail("\"max_in_flight\" must be above 0, or every payment is refused".into());
        }
        if self.late_replies.max_age_ms == 0 {
            return fail("\"late_replies.max_age_ms\" must be above 0; set \"late_replies.max_count\" to 0 to keep no late replies".into());
        }
        if let Err(why) = topic_name::check(&self.worker.results_topic) {
            return fail(format!("\"worker.results_topic\": {why}"));
        }
        if self.worker.concurrency == 0 || self.worker.pg_timeout_ms == 0 {
            return fail(
                "\"worker.concurrency\" and \"worker.pg_timeout_ms\" must be above 0".into(),
            );
        }
        if self.worker.max_held_requests < self.worker.concurrency {
            return fail(format!(
                "\"worker.max_held_requests\" ({}) must be at least \"worker.concurrency\" ({}), or PG calls that may run at once could never be polled",
                self.worker.max_held_requests, self.worker.concurrency
            ));
        }
        if self.worker.claim == Claim::Pg && !self.worker.pg_idempotent {
            return fail(
                "\"worker.claim\" is \"pg\" but \"worker.pg_idempotent\" is false: without the PG's de-duplication two attempts of one payment could both charge; set \"claim\" to \"log\"".to_string(),
            );
        }
        if self.worker.idempotency_window_ms <= self.worker.pg_timeout_ms {
            return fail(format!(
                "\"worker.idempotency_window_ms\" ({}) must be above \"worker.pg_timeout_ms\" ({}): a payment must be remembered longer than one attempt takes",
                self.worker.idempotency_window_ms, self.worker.pg_timeout_ms
            ));
        }
        let http = &self.http;
        if [
            http.head_timeout_ms,
            http.body_timeout_ms,
            http.idle_timeout_ms,
        ]
        .contains(&0)
            || http.max_connections == 0
        {
            return fail(
                "\"http.head_timeout_ms\", \"http.body_timeout_ms\", \"http.idle_timeout_ms\" and \"http.max_connections\" must be above 0".into(),
            );
        }
        if self.topics.partitions < 1 || self.topics.replication_factor < 1 {
            return fail(
                "\"topics.partitions\" and \"topics.replication_factor\" must be at least 1".into(),
            );
        }
        if let Some(Err(why)) = self.tls.as_ref().map(TlsSettings::check) {
            return fail(why);
        }
        if let Some(Err(why)) = self.sasl.as_ref().map(SaslSettings::check) {
            return fail(why);
        }
        Ok(())
    }

    /// Reads what `"tls"` and `"sasl"` name: see [`security`].
    fn load_security(
        &mut self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), StartupError> {
        security::load(self.tls.as_mut(), self.sasl.as_mut(), path, env)
    }

    /// How kreply meets the brokers (TLS, SASL mechanism and user), with no secret in it.
    pub(crate) fn broker_security(&self) -> String {
        security::describe(self.tls.as_ref(), self.sasl.as_ref())
    }

    pub(crate) fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }

    pub(crate) fn max_timeout(&self) -> Duration {
        Duration::from_millis(self.max_timeout_ms)
    }

    /// How many polls in a row change the gateway's readiness.
    pub(crate) fn readiness_hysteresis(&self) -> Hysteresis {
        Hysteresis {
            unready_after: self.unready_after_bad_polls,
            ready_after: self.ready_after_good_polls,
        }
    }

    /// Asked on every payment, so it reads the flows in place rather than building them.
    pub(crate) fn accepts_operation(&self, operation: &str) -> bool {
        let listed = |operations: &[String]| operations.iter().any(|o| o == operation);
        if self.flows.is_empty() {
            return listed(&self.operations);
        }
        self.flows.iter().any(|flow| listed(&flow.operations))
    }

    /// Whether a payment of `operation` must carry an `Idempotency-Key`.
    pub(crate) fn requires_idempotency_key(&self, operation: &str) -> bool {
        if self.flows.is_empty() {
            return self.require_idempotency_key;
        }
        self.flows
            .iter()
            .find(|flow| flow.operations.iter().any(|o| o == operation))
            .is_some_and(|flow| flow.require_idempotency_key)
    }

    /// The gateway's flows: those listed in `"flows"`, else the one the top-level keys
    /// describe.
    pub(crate) fn flows(&self) -> Vec<FlowConfig> {
        if !self.flows.is_empty() {
            return self.flows.clone();
        }
        vec![FlowConfig {
            operations: self.operations.clone(),
            request_topic: self.request_topic.clone(),
            dialect: self.dialect,
            dlq_topic: Some(self.dlq_topic.clone()),
            require_idempotency_key: self.require_idempotency_key,
        }]
    }

    /// Every dead-letter topic the gateway writes to, each once, with the role a startup
    /// sentence names it by: `dead-letter`, or with `"flows"` the flows that use it
    /// (`"flows"[1] (refund) dead-letter`).
    pub(crate) fn dead_letter_topics(&self) -> Vec<(String, String)> {
        if self.flows.is_empty() {
            return vec![("dead-letter".to_string(), self.dlq_topic.clone())];
        }
        let mut topics: Vec<(String, Vec<String>)> = Vec::new();
        for (i, flow) in self.flows.iter().enumerate() {
            let topic = flow.dead_letter_topic();
            match topics.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, users)) => users.push(flow.describe(i)),
                None => topics.push((topic, vec![flow.describe(i)])),
            }
        }
        topics
            .into_iter()
            .map(|(topic, users)| (format!("{} dead-letter", users.join(" and ")), topic))
            .collect()
    }

    /// Every request topic the gateway produces to, each once.
    pub(crate) fn request_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.flows().into_iter().map(|f| f.request_topic).collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, StartupError> {
    value.trim().parse().map_err(|_| {
        StartupError::new(format!(
            "environment variable {name}=\"{value}\" is not {what}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, StartupError> {
        Config::parse(Path::new("/etc/kreply/kreply.json"), text)
    }

    #[test]
    fn an_empty_object_gives_the_defaults_with_the_table_beside_the_file() {
        let config = parse("{}").unwrap();
        assert_eq!(config.request_topic, "payment_request");
        assert_eq!(config.host_table, Path::new("/etc/kreply/reply-hosts.txt"));
        config.validate(Path::new("x")).unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let err = parse(r#"{"request_topik":"x"}"#).unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/kreply/kreply.json is not a valid kreply config"),
            "{err}"
        );
        assert!(err.contains("request_topik"), "{err}");
    }

    #[test]
    fn environment_overrides_brokers_listen_and_host_ip() {
        let mut config = parse("{}").unwrap();
        config
            .apply_env(|name| match name {
                "KREPLY_BROKERS" => Some("a:1, b:2".into()),
                "KREPLY_LISTEN" => Some("127.0.0.2:9000".into()),
                "KREPLY_HOST_IP" => Some("127.0.0.3".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.brokers, ["a:1", "b:2"]);
        assert_eq!(config.listen.to_string(), "127.0.0.2:9000");
        assert_eq!(config.host_ip, Some("127.0.0.3".parse().unwrap()));
    }

    #[test]
    fn a_malformed_environment_value_names_the_variable() {
        let mut config = parse("{}").unwrap();
        let err = config
            .apply_env(|name| (name == "KREPLY_LISTEN").then(|| "nowhere".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KREPLY_LISTEN=\"nowhere\""), "{err}");
    }

    #[test]
    fn the_in_flight_bound_and_late_reply_limits_are_read_and_checked() {
        let config = parse("{}").unwrap();
        assert_eq!(config.max_in_flight, 4096);
        assert_eq!(config.late_replies.limits(), LateLimits::default());
        let config =
            parse(r#"{"max_in_flight": 8, "late_replies": {"max_count": 3, "max_age_ms": 1500}}"#)
                .unwrap();
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(
            config.late_replies.limits(),
            LateLimits {
                max_count: 3,
                max_age: Duration::from_millis(1500)
            }
        );
        for bad in [
            r#"{"max_in_flight": 0}"#,
            r#"{"late_replies": {"max_age_ms": 0}}"#,
        ] {
            let err = parse(bad)
                .unwrap()
                .validate(Path::new("k.json"))
                .unwrap_err();
            assert!(err.to_string().contains("must be above 0"), "{err}");
        }
    }

    #[test]
    fn readiness_needs_at_least_one_poll_each_way() {
        let config = parse(r#"{"ready_after_good_polls": 0}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ready_after_good_polls"), "{err}");
        let config =
            parse(r#"{"unready_after_bad_polls": 2, "ready_after_good_polls": 4}"#).unwrap();
        assert_eq!(
            config.readiness_hysteresis(),
            Hysteresis {
                unready_after: 2,
                ready_after: 4
            }
        );
    }

    #[test]
    fn the_idempotency_window_must_outlast_an_attempt() {
        let config = parse("{}").unwrap();
        assert_eq!(config.worker.idempotency_window_ms, 86_400_000);
        let config =
            parse(r#"{"worker": {"pg_timeout_ms": 5000, "idempotency_window_ms": 5000}}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"worker.idempotency_window_ms\" (5000)"),
            "{err}"
        );
    }

    #[test]
    fn a_claim_by_the_pg_needs_a_pg_that_de_duplicates() {
        let config = parse("{}").unwrap();
        assert_eq!(
            (config.worker.claim, config.worker.pg_idempotent),
            (Claim::Log, true)
        );
        let config = parse(r#"{"worker": {"claim": "pg"}}"#).unwrap();
        assert!(config.validate(Path::new("k.json")).is_ok());
        let config = parse(r#"{"worker": {"claim": "pg", "pg_idempotent": false}}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"worker.claim\" is \"pg\""), "{err}");
    }

    #[test]
    fn validation_names_the_offending_key() {
        let config = parse(r#"{"default_timeout_ms": 40000}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("default_timeout_ms"), "{err}");
        let config = parse(r#"{"http": {"max_connections": 0}}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.max_connections"), "{err}");
        let config = parse(r#"{"request_topic": "bad topic"}"#).unwrap();
        let err = config
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("request_topic"), "{err}");
    }

    #[test]
    fn without_flows_dlq_topic_keeps_its_meaning_and_flows_may_share_one() {
        let config = parse(r#"{"request_topic": "pay", "dlq_topic": "pay-dead"}"#).unwrap();
        assert_eq!(config.flows()[0].dead_letter_topic(), "pay-dead");
        assert_eq!(
            config.dead_letter_topics(),
            [("dead-letter".to_string(), "pay-dead".to_string())]
        );
        let shared = parse(
            r#"{"flows": [{"operations": ["approve", "cancel"], "request_topic": "a", "dlq_topic": "dead"},
                          {"operations": ["refund"], "request_topic": "b", "dlq_topic": "dead"}]}"#,
        )
        .unwrap();
        shared.validate(Path::new("k.json")).unwrap();
        assert_eq!(
            shared.dead_letter_topics(),
            [(
                "\"flows\"[0] (approve, cancel) and \"flows\"[1] (refund) dead-letter".to_string(),
                "dead".to_string()
            )]
        );
        let onto_requests = parse(r#"{"dlq_topic": "payment_request"}"#).unwrap();
        let err = onto_requests
            .validate(Path::new("k.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("k.json: \"dlq_topic\" is the request topic \"payment_request\""),
            "{err}"
        );
    }

    #[test]
    fn routing_and_header_names_are_read_and_the_names_checked() {
        let config = parse("{}").unwrap();
        assert_eq!(config.reply_routing, ReplyRouting::TopicPerHost);
        assert_eq!(config.header_names, HeaderNames::default());
        let config = parse(
            r#"{"reply_routing": "partition-per-host", "header_names": {"reply_topic": "to"}}"#,
        )
        .unwrap();
        assert_eq!(config.reply_routing, ReplyRouting::PartitionPerHost);
        assert_eq!(config.header_names.reply_topic, "to");
        assert_eq!(config.dialect, Dialect::Spring);
        assert_eq!(
            parse(r#"{"dialect": "nestjs"}"#).unwrap().dialect,
            Dialect::Nestjs
        );
        assert!(parse(r#"{"dialect": "kafkajs"}"#).is_err());
    }

    #[test]
    fn without_flows_the_top_level_keys_are_the_one_flow_and_with_them_each_is_checked() {
        let config = parse(r#"{"request_topic": "pay", "dialect": "nestjs"}"#).unwrap();
        let flows = config.flows();
        assert_eq!(flows.len(), 1);
        assert_eq!(
            (flows[0].request_topic.as_str(), flows[0].dialect),
            ("pay", Dialect::Nestjs)
        );
        assert_eq!(flows[0].operations, ["approve", "cancel", "refund"]);
        let split = parse(
            r#"{"flows": [{"operations": ["approve"], "request_topic": "a"},
                          {"operations": ["refund"], "request_topic": "b"}]}"#,
        )
        .unwrap();
        split.validate(Path::new("k.json")).unwrap();
        assert_eq!(split.request_topics(), ["a", "b"]);
        assert!(split.accepts_operation("refund"));
        assert!(!split.accepts_operation("cancel"));
        assert_eq!(
            split.dead_letter_topics(),
            [
                (
                    "\"flows\"[0] (approve) dead-letter".to_string(),
                    "a-dlt".to_string()
                ),
                (
                    "\"flows\"[1] (refund) dead-letter".to_string(),
                    "b-dlt".to_string()
                )
            ]
        );
        let twice = parse(
            r#"{"flows": [{"operations": ["approve"], "request_topic": "a"},
                          {"operations": ["approve"], "request_topic": "b"}]}"#,
        )
        .unwrap();
        let err = twice.validate(Path::new("k.json")).unwrap_err().to_string();
        assert!(
            err.starts_with("k.json: operation \"approve\" is in"),
            "{err}"
        );
        let empty = parse(r#"{"header_names": {"correlation_id": ""}}"#).unwrap();
        let err = empty.validate(Path::new("k.json")).unwrap_err();
        let err = err.to_string();
        assert!(
            err.starts_with("k.json: \"header_names.correlation_id\" is empty"),
            "{err}"
        );
    }
}
