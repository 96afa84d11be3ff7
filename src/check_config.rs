//! `kreply check-config`: everything startup checks, as a report, without serving.
//!
//! For a deploy pipeline or an operator before a restart: parse the config and the host
//! table (and the TLS files and the password the config names), resolve this host's reply
//! route, reach the brokers as the gateway would (TLS, SASL) and look up every topic the
//! gateway and the worker use. Nothing is created or changed. Each line says what was
//! checked (the broker line names the SASL mechanism and user, never the password); the
//! first failure ends the report with the same one sentence startup would give. A key the
//! gateway or the worker would ignore gets a `!!` line, the one each logs at startup
//! (see [`ignored`]); it fails nothing.
//!
//! `--print` prints the effective config instead: see [`print()`].

use crate::config::Config;
use crate::config::ignored::{self, Role};
use crate::error::StartupError;
use crate::gateway::host_table::HostTable;
use crate::gateway::reply_route::ReplyRoute;
use crate::gateway::route_in;
use crate::kafka::{self, topics};
use krafka::admin::AdminClient;
use std::path::Path;

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

/// Prints the report; `Err` on the first problem.
pub fn run(config_path: &Path) -> Result<(), StartupError> {
    let config = Config::load(config_path)?;
    println!("ok  config {}", config_path.display());
    for role in [Role::Gateway, Role::Worker] {
        for key in ignored::keys(&config, role) {
            println!("!!  config {}: {key}", config_path.display());
        }
    }
    let hosts = HostTable::load(&config.host_table)?;
    let route = route_in(&hosts, &config)?;
    println!("ok  host table {}: {route}", config.host_table.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the check's runtime: {e}")))?;
    let reply = Reply {
        hosts: &hosts,
        route: &route,
    };
    runtime.block_on(check_kafka(
        &config,
        &config_path.display().to_string(),
        reply,
    ))
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
    reply: Reply<'_>,
) -> Result<(), StartupError> {
    let kafka = kafka::connect_brokers(config, config_path, "kreply-check-config").await?;
    println!(
        "ok  brokers {} ({})",
        config.brokers.join(","),
        config.broker_security()
    );
    let admin = kafka.admin();
    let request_topics = config.request_topics();
    // Each flow's dead-letter topic, as the gateway checks them at startup.
    let dead_letters = config.dead_letter_topics();
    let mut needed: Vec<(&str, &str)> = request_topics
        .iter()
        .map(|topic| ("request", topic.as_str()))
        .collect();
    needed.push(("reply", reply.route.topic.as_str()));
    needed.extend(
        dead_letters
            .iter()
            .map(|(role, topic)| (role.as_str(), topic.as_str())),
    );
    needed.push(("results (worker)", config.worker.results_topic.as_str()));
    for (role, name) in needed {
        match topics::describe(&admin, name).await? {
            Some(partitions) => {
                println!("ok  {role} topic {name}: {} partition(s)", partitions.len())
            }
            None if config.topics.auto_create => println!(
                "--  {role} topic {name}: missing; startup will create it (topics.auto_create)"
            ),
            None => return Err(topics::missing(role, name, config, config_path)),
        }
    }
    check_reply_partitions(&admin, config, reply).await?;
    let _ = admin.close().await;
    println!("all checks passed");
    Ok(())
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
