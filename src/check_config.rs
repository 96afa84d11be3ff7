//! `kreply check-config [gateway|worker]`: what startup checks, as a report, without serving.
//!
//! For a deploy pipeline or an operator before a restart. Each role is checked for what it
//! needs, so a host that runs one role is not failed for the other's:
//! - the gateway: the host table and this host's reply route, then the brokers, its
//!   request, reply and dead-letter topics and, in partition-per-host routing, every host's
//!   reply partition;
//! - the worker: the PG URL (well-formed; the PG itself is not called), then the brokers
//!   and its request and results topics.
//!
//! Without a role both are checked, as before roles existed: one file commonly serves both
//! roles on one host (`scripts/install gateway worker`), and a pipeline running the bare
//! command relied on it to check every topic. The first line and the last name the roles
//! checked.
//!
//! The config comes first (and the TLS files and the password it names). Nothing is created
//! or changed. Each line says what was checked (the broker line names the SASL mechanism
//! and user, never the password); the first failure ends the report with the same one
//! sentence startup would give. A key the checked role would ignore gets a `!!` line, the
//! one that role logs at startup (see [`ignored`]); it fails nothing.
//!
//! `--print` prints the effective config instead: see [`print()`].

use crate::config::Config;
use crate::config::ignored::{self, Role};
use crate::error::StartupError;
use crate::gateway::host_table::HostTable;
use crate::gateway::reply_route::ReplyRoute;
use crate::gateway::route_in;
use crate::kafka::{self, topics};
use crate::worker;
use krafka::admin::AdminClient;
use std::path::Path;

/// Which roles a check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No role named: the gateway's needs and the worker's.
    Both,
    Gateway,
    Worker,
}

impl Scope {
    /// A role as the command line names it: `gateway` or `worker`.
    pub fn parse(word: &str) -> Option<Scope> {
        match word {
            "gateway" => Some(Scope::Gateway),
            "worker" => Some(Scope::Worker),
            _ => None,
        }
    }

    fn roles(self) -> &'static [Role] {
        match self {
            Scope::Both => &[Role::Gateway, Role::Worker],
            Scope::Gateway => &[Role::Gateway],
            Scope::Worker => &[Role::Worker],
        }
    }

    fn has(self, role: Role) -> bool {
        self.roles().contains(&role)
    }

    /// The roles checked, as the report's first and last lines name them.
    fn describe(self) -> &'static str {
        match self {
            Scope::Both => "the gateway and the worker",
            Scope::Gateway => "the gateway",
            Scope::Worker => "the worker",
        }
    }
}

/// Prints the effective config (the file, the environment's overrides and the defaults,
/// with relative paths resolved) as JSON, and checks nothing beyond what loading it checks.
/// The password is printed as `***`: its type serializes so (`config/security.rs`), so
/// no printing can leak it.
pub fn print(config_path: &Path) -> Result<(), StartupError> {
    let config = Config::load(config_path)?;
    let json = serde_json::to_string_pretty(&config).map_err(|e| {
        StartupError::new(format!(
            "cannot print {} as JSON (a path it names is not UTF-8; rename it): {e}",
            config_path.display()
        ))
    })?;
    println!("{json}");
    Ok(())
}

/// Prints the report for `scope`; `Err` on the first problem.
pub fn run(config_path: &Path, scope: Scope) -> Result<(), StartupError> {
    let config = Config::load(config_path)?;
    let path = config_path.display();
    println!("ok  config {path} (checked for {})", scope.describe());
    for &role in scope.roles() {
        for key in ignored::keys(&config, role) {
            println!("!!  config {path}: {key}");
        }
    }
    let gateway = match scope.has(Role::Gateway) {
        true => Some(gateway_route(&config, scope)?),
        false => None,
    };
    if scope.has(Role::Worker) {
        check_pg_url(&config)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the check's runtime: {e}")))?;
    let reply = gateway
        .as_ref()
        .map(|(hosts, route)| Reply { hosts, route });
    runtime.block_on(check_kafka(&config, &path.to_string(), reply, scope))
}

/// The host table and this host's route in it. Checking both roles, a failure here also
/// says how to check a worker-only host, the likeliest reason a host is not in the table.
fn gateway_route(config: &Config, scope: Scope) -> Result<(HostTable, ReplyRoute), StartupError> {
    let found = HostTable::load(&config.host_table).and_then(|hosts| {
        let route = route_in(&hosts, config)?;
        Ok((hosts, route))
    });
    let (hosts, route) = found.map_err(|e| match scope {
        Scope::Both => StartupError::new(format!(
            "{e}; on a host that runs only the worker, run \"kreply check-config worker\""
        )),
        Scope::Gateway | Scope::Worker => e,
    })?;
    println!("ok  host table {}: {route}", config.host_table.display());
    Ok((hosts, route))
}

/// The PG URL parses as the worker would call it; the PG itself is not called, as a
/// check must not charge, and may run where the PG is not reachable.
fn check_pg_url(config: &Config) -> Result<(), StartupError> {
    let (charge_url, _) = worker::charge_target(&config.worker.pg_url)?;
    println!(
        "ok  PG URL {}: the worker charges POST {charge_url} (not called by this check)",
        config.worker.pg_url
    );
    Ok(())
}

/// This host's route, and the table every host's partition comes from.
#[derive(Clone, Copy)]
struct Reply<'a> {
    hosts: &'a HostTable,
    route: &'a ReplyRoute,
}

async fn check_kafka(
    config: &Config,
    config_path: &str,
    reply: Option<Reply<'_>>,
    scope: Scope,
) -> Result<(), StartupError> {
    let kafka = kafka::connect_brokers(config, config_path, "kreply-check-config").await?;
    println!(
        "ok  brokers {} ({})",
        config.brokers.join(","),
        config.broker_security()
    );
    let admin = kafka.admin();
    for (role, name) in needed_topics(config, reply.map(|r| r.route), scope) {
        match topics::describe(&admin, &name).await? {
            Some(partitions) => {
                println!("ok  {role} topic {name}: {} partition(s)", partitions.len())
            }
            None if config.topics.auto_create => println!(
                "--  {role} topic {name}: missing; startup will create it (topics.auto_create)"
            ),
            None => return Err(topics::missing(&role, &name, config, config_path)),
        }
    }
    if let Some(reply) = reply {
        check_reply_partitions(&admin, config, reply).await?;
    }
    let _ = admin.close().await;
    println!("all checks passed for {}", scope.describe());
    Ok(())
}

/// The topics to look up, each once, with the role a line names it by: with the gateway's
/// `route`, its request, reply and dead-letter topics (as it checks them at startup); for
/// the worker, the request topic it consumes and its results topic.
fn needed_topics(
    config: &Config,
    route: Option<&ReplyRoute>,
    scope: Scope,
) -> Vec<(String, String)> {
    let mut needed: Vec<(String, String)> = Vec::new();
    if let Some(route) = route {
        let requests = config.request_topics().into_iter();
        needed.extend(requests.map(|topic| ("request".to_string(), topic)));
        needed.push(("reply".to_string(), route.topic.clone()));
        needed.extend(config.dead_letter_topics());
    }
    if scope.has(Role::Worker) {
        let consumed = &config.request_topic;
        if !needed.iter().any(|(_, topic)| topic == consumed) {
            needed.push(("request (worker)".to_string(), consumed.clone()));
        }
        let results = config.worker.results_topic.clone();
        needed.push(("results (worker)".to_string(), results));
    }
    needed
}

/// In partition-per-host routing: the partition of every host in the table exists in the
/// shared reply topic (a missing topic was reported above).
async fn check_reply_partitions(
    admin: &AdminClient,
    config: &Config,
    reply: Reply<'_>,
) -> Result<(), StartupError> {
    let (Some(own), topic) = (reply.route.partition, &reply.route.topic) else {
        return Ok(());
    };
    if let Some(partitions) = topics::describe(admin, topic).await? {
        let routing = config.reply_routing;
        routing.check_topic(reply.hosts, topic, &partitions)?;
        println!(
            "ok  reply partitions of {topic}: every host's in the host table exists; this host reads partition {own}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("k.json"), text).unwrap()
    }

    fn route(topic: &str) -> ReplyRoute {
        ReplyRoute {
            host_ip: "127.0.0.2".parse().unwrap(),
            suffix: "local2".into(),
            topic: topic.into(),
            partition: None,
        }
    }

    fn names(needed: &[(String, String)]) -> Vec<&str> {
        needed.iter().map(|(_, topic)| topic.as_str()).collect()
    }

    #[test]
    fn each_role_looks_up_only_its_own_topics() {
        let config = parse("{}");
        let reply = route("payment_response_local2");
        let gateway = needed_topics(&config, Some(&reply), Scope::Gateway);
        assert_eq!(
            names(&gateway),
            [
                "payment_request",
                "payment_response_local2",
                "payment_request-dlt"
            ]
        );
        let worker = needed_topics(&config, None, Scope::Worker);
        assert_eq!(names(&worker), ["payment_request", "payment_results"]);
        let both = needed_topics(&config, Some(&reply), Scope::Both);
        assert_eq!(
            names(&both),
            [
                "payment_request",
                "payment_response_local2",
                "payment_request-dlt",
                "payment_results"
            ]
        );
    }

    #[test]
    fn a_worker_request_topic_outside_the_flows_is_looked_up_too() {
        let config = parse(
            r#"{"request_topic": "refunds", "flows": [{"operations": ["approve"], "request_topic": "pay"}]}"#,
        );
        let both = needed_topics(&config, Some(&route("r")), Scope::Both);
        let worker_request = ("request (worker)".to_string(), "refunds".to_string());
        assert!(both.contains(&worker_request), "{both:?}");
        let gateway = needed_topics(&config, Some(&route("r")), Scope::Gateway);
        assert!(!names(&gateway).contains(&"refunds"), "{gateway:?}");
    }

    #[test]
    fn a_role_is_gateway_or_worker() {
        assert_eq!(Scope::parse("worker"), Some(Scope::Worker));
        assert_eq!(Scope::parse("gateway"), Some(Scope::Gateway));
        assert_eq!(Scope::parse("mock-pg"), None);
        assert!(Scope::Both.has(Role::Worker) && Scope::Both.has(Role::Gateway));
        assert!(!Scope::Worker.has(Role::Gateway));
    }
}
