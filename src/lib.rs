//! kreply: a synchronous HTTP payment call answered through Kafka request-reply, each
//! gateway host reading its own reply topic.
//!
//! # Layout
//!
//! The request path, left to right, and the reply path back:
//!
//! ```text
//! http::payments ──register──> registry ──> payment::to_record ──> kafka::producer ──> request topic
//!      ▲                          │                                                       │ worker
//!      └──── ReplyWaiter <────────┘<── deliver ── kafka::reply_consumer <── reply topic <─┘
//!                                                                        (this host's, all partitions)
//! ```
//!
//! | module | concept |
//! |---|---|
//! | `main.rs` | command line (`gateway`, `worker`, `mock-pg`, `check-config`, `--print-route`, `--help`) |
//! | [`check_config`] | `kreply check-config`: the startup checks as a report |
//! | [`gateway`] | startup order: config, route, Kafka side, then HTTP; the graceful stop |
//! | [`config`], [`error`] | the JSON config and its environment overrides; the one-sentence startup error |
//! | [`host_table`], [`host_ips`], [`reply_route`], [`topic_name`] | which reply topic this host owns, and Kafka's rules for its name |
//! | [`registry`], [`correlation_id`] | where a waiting request and its reply meet, with the in-flight cap (runtime-free) |
//! | [`late_replies`] | replies that came after their caller was given up on, bounded by count and age (runtime-free) |
//! | [`readiness`] | one ready state with hysteresis, for `/readyz` and the payment route (runtime-free) |
//! | [`payment`], [`json_number`], [`record`], [`dead_letter`] | body validation (numbers passed on exactly), request and dead-letter records, byte for byte |
//! | [`reply_check`] | what a reply record must carry: a 16-byte id, a JSON value, a known error code |
//! | [`problem`] | `application/problem+json` answers |
//! | [`reply_error`] | the `kreply_error` reply header: worker error code -> HTTP status |
//! | [`http`] | tide on async-std: routes, the `TCP_NODELAY` accept loop with the connection cap (`listener.rs`), per-connection deadlines (`connection.rs`), probes, `GET /v1/requests/{id}` (`requests.rs`) |
//! | [`kafka`] | krafka on its own Tokio thread: topic check, producer task, reply consumer; `producer_session.rs` (a new producer id when the brokers stop honouring the old one), `log_watch.rs` (a reply log that started over), `metadata_keeper.rs` (a re-created topic read under its new id), `whole_batches.rs` (reading multi-record batches on tansu's memory storage, runtime-free) |
//! | [`worker`] | `kreply worker`: request parsing, results store (`results.rs`; what it keeps in memory and for how long: `results_index.rs`), PG client, settling, group loop; `race.rs` (the first `pending` in the results log wins: who may call the PG, runtime-free); `stale_group.rs` and `member_list.rs` (rejoin when tansu leaves a crashed worker's partitions unowned) |
//! | [`ops`] | systemd notify, signals, the Prometheus exporter; [`gateway_metrics`] is the gateway's set |
//! | [`mock_pg`] | `kreply mock-pg`: the PG simulator |
//! | `testing` | generators of hostile input for the property tests (test builds only) |
//!
//! The worker's path: [`worker`] (poll a batch) -> `request.rs` (read it) ->
//! `settle.rs` (results store -> PG -> results store) -> `answer.rs` (reply
//! record) -> reply topic, then the batch's offsets are committed.
//!
//! The core (config, host table, reply route, correlation registry, records) knows no
//! async runtime; [`http`] runs on async-std, [`kafka`] on a Tokio thread of its own.
//! They meet only through a channel (records in, acknowledgements out) and the
//! correlation registry (replies).
//!
//! # Public surface
//!
//! Only what the binary (`main.rs`) calls is public, plus [`kafka::whole_batches`], whose
//! repeat filter the integration tests' echo worker shares. Everything else is private, so
//! the compiler reports what nothing uses; and no `unsafe` is allowed anywhere.

#![forbid(unsafe_code)]
// The layout above is a map for maintainers: its links name private modules on purpose,
// and resolve in `cargo doc --document-private-items` (what .ci/run builds).
#![allow(rustdoc::private_intra_doc_links)]

pub mod check_config;
pub mod config;
mod correlation_id;
mod dead_letter;
pub mod error;
pub mod gateway;
mod gateway_metrics;
mod host_ips;
mod host_table;
mod http;
mod json_number;
pub mod kafka;
mod late_replies;
pub mod mock_pg;
mod ops;
mod payment;
mod problem;
mod readiness;
mod record;
mod registry;
mod reply_check;
mod reply_error;
mod reply_route;
#[cfg(test)]
mod testing;
mod topic_name;
pub mod worker;
