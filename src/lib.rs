//! kreply: a synchronous HTTP payment call answered through Kafka request-reply, each
//! gateway host reading its own reply topic.
//!
//! # Layout
//!
//! `ls src` is the architecture: three rooms, [`gateway`], [`worker`] and [`wire`] (what
//! the two must agree on byte for byte), with [`kafka`] (what both do with the client
//! library), [`ops`] (running under an operator), [`config`] and the small commands.
//!
//! The request path, left to right, and the reply path back:
//!
//! ```text
//! gateway::http::payments ─register─> gateway::registry ─> wire::payment ─> gateway::kafka::producer ─> request topic
//!      ▲                                   │                                                              │ worker
//!      └──── ReplyWaiter <─────────────────┘<── deliver ── gateway::kafka::reply_consumer <── reply topic <─┘
//!                                                                             (this host's, all partitions)
//! ```
//!
//! | module | concept |
//! |---|---|
//! | `main.rs` | command line (`gateway`, `worker`, `mock-pg`, `check-config`, `--print-route`, `--help`) |
//! | [`gateway`] | startup order: config, route, Kafka side, then HTTP; the graceful stop |
//! | [`gateway::flows`] | which request topic and dialect each operation goes to; all flows share the host's reply route |
//! | [`gateway::host_table`], [`gateway::host_ips`], [`gateway::reply_route`] | which reply topic (and, in partition-per-host routing, which partition of it) this host owns |
//! | [`gateway::reply_routing`] | the two routing modes, topic-per-host and partition-per-host, and what each needs of the host table and the reply topic |
//! | [`gateway::registry`] | where a waiting request and its reply meet, with the in-flight cap (runtime-free) |
//! | [`gateway::late_replies`] | replies that came after their caller was given up on, bounded by count and age (runtime-free) |
//! | [`gateway::readiness`] | one ready state with hysteresis, for `/readyz` and the payment route (runtime-free) |
//! | [`gateway::reply_check`] | what a reply record must carry: an id of the dialect's shape, a JSON value, a known error code |
//! | [`gateway::http`] | tide on async-std: routes, probes, `GET /v1/requests/{id}` (`requests.rs`) |
//! | [`gateway::kafka`] | krafka on its own Tokio thread: producer task, reply consumer; `log_watch.rs` (a reply log that started over) |
//! | [`gateway::metrics`] | the gateway's `/metrics` set |
//! | [`worker`] | `kreply worker`: `startup.rs`, the poll loop (`poll_loop.rs`), the requests held between poll and commit (`pipeline.rs`: one chain per order, `chains.rs`; each partition's settled prefix, `settled_prefix.rs`, runtime-free), one request (`settle.rs`), committing (`commit.rs`), request parsing, results store (`results.rs`, co-partitioned with the requests, a payment's place `slot.rs`; what it keeps of each owned partition and for how long: `results_index.rs`, on disk in `partition_file.rs`; each partition's layout record, `results_layout.rs`), PG client; `race.rs` (the first `pending` in the results log wins: who may call the PG, runtime-free); `stale_group.rs` and `member_list.rs` (rejoin when tansu leaves a crashed worker's partitions unowned) |
//! | [`wire::record`], [`wire::correlation_id`], [`wire::payment`], [`wire::json_number`], [`wire::dead_letter`] | request, reply and dead-letter records, byte for byte; body validation (numbers passed on exactly) |
//! | [`wire::return_address`], [`wire::header_names`] | the headers that bring a reply back (correlation id, reply topic, reply partition), and their configurable names |
//! | [`wire::dialect`] | Spring's or NestJS's spelling of those headers and of a worker's error; how the worker tells which a request speaks |
//! | [`wire::traceparent`] | W3C `traceparent`: validated, started when absent, carried on every record, the answer, the log lines and the PG call |
//! | [`wire::problem`], [`wire::reply_error`] | `application/problem+json` answers; the `kreply_error` reply header: worker error code -> HTTP status |
//! | [`wire::topic_name`] | Kafka's rules for a topic name |
//! | [`kafka`] | shared by gateway and worker: whose rules the brokers keep (`broker_compat.rs`: Kafka's, or tansu 0.6's, and every remedy for tansu in one place), a client per role (`security.rs`: the config's TLS and SASL on every client, and what a failed first connection means), the payment producer (`producer_session.rs`: a new producer id when the brokers stop honouring the old one), the topic check, `metadata_keeper.rs` (a re-created topic read under its new id), `whole_batches.rs` (reading multi-record batches on tansu's memory storage, runtime-free), `offset_gaps.rs` (reading again a batch tansu stored after a later one) |
//! | [`ops`] | systemd notify and the worker's watchdog (`watchdog.rs`), signals (one [`ops::signals::Shutdown`] passed to whatever must stop; the second signal exits), the Prometheus exporter with the process's own metrics (`process.rs`), the log line's shape (`log_format.rs`: journald priorities, JSON), and [`ops::http_server`]: the `TCP_NODELAY` accept loop with the connection cap, per-connection deadlines, problem answers |
//! | [`config`], [`error`] | the JSON config and its environment overrides, with the brokers' TLS and SASL and their secrets (`config/security.rs`), and the keys a role ignores, named at startup (`config/ignored.rs`); the one-sentence startup error |
//! | [`check_config`] | `kreply check-config`: the startup checks as a report |
//! | [`mock_pg`] | `kreply mock-pg`: the PG simulator |
//! | `testing` | generators of hostile input for the property tests (test builds only) |
//!
//! The worker's path: `poll_loop.rs` (poll) -> `pipeline.rs` -> `chains.rs` (the order's
//! chain) -> `request.rs` (read it) -> `settle.rs` (results store -> PG -> results store)
//! -> `answer.rs` (reply record) -> reply topic; then `commit.rs` commits each partition's
//! settled prefix (`settled_prefix.rs`). Its shape and where it is going:
//! `docs/worker-design.md`.
//!
//! The core (config, host table, reply route, correlation registry, wire) knows no
//! async runtime; [`gateway::http`] runs on async-std, [`gateway::kafka`] on a Tokio
//! thread of its own. They meet only through a channel (records in, acknowledgements out)
//! and the correlation registry (replies).
//!
//! # Public surface
//!
//! Only what the binary (`main.rs`) calls is public ([`log_format`] among it), plus [`kafka::whole_batches`] and
//! [`kafka::offset_gaps`], whose repeat filter and hole check the integration tests'
//! readers share. Everything else is private, so
//! the compiler reports what nothing uses; and no `unsafe` is allowed anywhere.

#![forbid(unsafe_code)]
// The layout above is a map for maintainers: its links name private modules on purpose,
// and resolve in `cargo doc --document-private-items` (what .ci/run builds).
#![allow(rustdoc::private_intra_doc_links)]

pub mod check_config;
pub mod config;
pub mod error;
pub mod gateway;
pub mod kafka;
pub mod mock_pg;
mod ops;
pub use ops::log_format;
#[cfg(test)]
mod testing;
mod wire;
pub mod worker;
