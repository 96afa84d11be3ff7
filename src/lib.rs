//! kreply: a synchronous HTTP payment call answered through Kafka request-reply, each
//! gateway host reading its own reply topic. See README.md for the module map.
//!
//! The core (config, host table, reply route, correlation registry, records) knows no
//! async runtime; `http` runs on async-std, `kafka` on a Tokio thread of its own.

pub mod check_config;
pub mod config;
pub mod correlation_id;
pub mod dead_letter;
pub mod error;
pub mod gateway;
pub mod gateway_metrics;
pub mod host_ips;
pub mod host_table;
pub mod http;
pub mod json_number;
pub mod kafka;
pub mod late_replies;
pub mod mock_pg;
pub mod ops;
pub mod payment;
pub mod problem;
pub mod readiness;
pub mod record;
pub mod registry;
pub mod reply_check;
pub mod reply_error;
pub mod reply_route;
#[cfg(test)]
pub mod testing;
pub mod topic_name;
pub mod worker;
