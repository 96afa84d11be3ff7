//! Startup check of the topics the gateway needs.
//!
//! Missing topics are a deployment mistake worth stopping for: producing to a missing
//! request topic would fail every payment, and a missing reply topic would turn every
//! payment into a timeout. Creation is opt-in (`topics.auto_create`) for local stacks and
//! tests; production topics want their replication and `min.insync.replicas` chosen by hand.

use crate::config::Config;
use crate::error::StartupError;
use krafka::KrafkaError;
use krafka::admin::{AdminClient, CreateTopicsOptions, DescribeTopicsOptions, NewTopic};
use krafka::error::ErrorCode;
use std::time::Duration;

/// One topic the gateway uses, and what it is for (for error messages).
pub struct NeededTopic<'a> {
    pub name: &'a str,
    pub role: &'a str,
    /// Created with `cleanup.policy=compact`: only the latest record per key matters.
    pub compacted: bool,
}

impl<'a> NeededTopic<'a> {
    pub fn plain(name: &'a str, role: &'a str) -> Self {
        NeededTopic {
            name,
            role,
            compacted: false,
        }
    }

    pub fn compacted(name: &'a str, role: &'a str) -> Self {
        NeededTopic {
            name,
            role,
            compacted: true,
        }
    }
}

/// Makes sure every topic exists and returns the partition ids of each, in order.
pub async fn ensure(
    admin: &AdminClient,
    config: &Config,
    config_path: &str,
    needed: &[NeededTopic<'_>],
) -> Result<Vec<Vec<i32>>, StartupError> {
    let mut partitions = Vec::with_capacity(needed.len());
    for topic in needed {
        let found = match describe(admin, topic.name).await? {
            Some(found) => found,
            None if config.topics.auto_create => create(admin, config, topic).await?,
            None => return Err(missing(topic.role, topic.name, config, config_path)),
        };
        partitions.push(found);
    }
    Ok(partitions)
}

/// The sentence for a topic that does not exist and will not be created.
pub fn missing(role: &str, name: &str, config: &Config, config_path: &str) -> StartupError {
    StartupError::new(format!(
        "the {role} topic \"{name}\" does not exist on brokers {}; create it, or set \"topics\": {{\"auto_create\": true}} in {config_path}",
        config.brokers.join(",")
    ))
}

/// The topic's partition ids, or `None` when the broker does not know the topic.
pub async fn describe(admin: &AdminClient, name: &str) -> Result<Option<Vec<i32>>, StartupError> {
    let mut answers = admin
        .describe_topics([name], DescribeTopicsOptions::default())
        .await
        .map_err(|e| broker_failed("describe topic", name, e))?;
    match answers.remove(name) {
        Some(Ok(description)) if !description.partitions.is_empty() => Ok(Some(
            description.partitions.iter().map(|p| p.partition).collect(),
        )),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(KrafkaError::Broker {
            code: ErrorCode::UnknownTopicOrPartition,
            ..
        })) => Ok(None),
        Some(Err(e)) => Err(broker_failed("describe topic", name, e)),
    }
}

async fn create(
    admin: &AdminClient,
    config: &Config,
    topic: &NeededTopic<'_>,
) -> Result<Vec<i32>, StartupError> {
    let name = topic.name;
    let mut spec = NewTopic::new(
        name,
        config.topics.partitions,
        config.topics.replication_factor,
    )
    .map_err(|e| broker_failed("create topic", name, e))?;
    for (name, value) in safe_settings(topic, config.topics.replication_factor) {
        spec = spec.with_config(name, value);
    }
    let mut answers = admin
        .create_topics([spec], CreateTopicsOptions::default())
        .await
        .map_err(|e| broker_failed("create topic", name, e))?;
    match answers.remove(name) {
        Some(Ok(())) | None => {}
        // Another gateway host created it first: fine.
        Some(Err(KrafkaError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        })) => {}
        Some(Err(e)) => return Err(broker_failed("create topic", name, e)),
    }
    log::info!(
        "startup: created topic {name} with {} partition(s)",
        config.topics.partitions
    );
    // Metadata follows creation with a short delay; wait for the partitions to show.
    for _ in 0..50 {
        if let Some(partitions) = describe(admin, name).await? {
            return Ok(partitions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StartupError::new(format!(
        "topic \"{name}\" was created but its partitions did not appear in the cluster metadata within 5 s; check the brokers' health"
    )))
}

/// How long a results record is kept whole before compaction may drop it for a newer one
/// of its key: the race between two attempts of one payment is read from the records
/// before each `pending`, so a rival's `pending` must outlive any attempt (the PG timeout
/// + 5 s) and a reader catching up after a restart. An hour is far beyond both.
const MIN_COMPACTION_LAG_MS: &str = "3600000";

/// The topic settings a created topic gets, beyond its partitions and replication: with
/// two or more replicas an acknowledged record must be on two (`min.insync.replicas`),
/// or a leader election can lose a `pending` that an attempt already counted on; the
/// results topic is compacted, but not before [`MIN_COMPACTION_LAG_MS`].
fn safe_settings(topic: &NeededTopic<'_>, replication: i16) -> Vec<(&'static str, &'static str)> {
    let mut settings = Vec::new();
    if replication >= 2 {
        settings.push(("min.insync.replicas", "2"));
    }
    if topic.compacted {
        settings.push(("cleanup.policy", "compact"));
        settings.push(("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS));
    }
    settings
}

fn broker_failed(action: &str, topic: &str, error: KrafkaError) -> StartupError {
    StartupError::new(format!(
        "could not {action} \"{topic}\" (check that the brokers are up and this host may reach them): {error}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_topics_need_two_in_sync_and_results_stay_whole_an_hour() {
        let results = NeededTopic::compacted("payment_results", "results");
        assert_eq!(
            safe_settings(&results, 3),
            [
                ("min.insync.replicas", "2"),
                ("cleanup.policy", "compact"),
                ("min.compaction.lag.ms", "3600000")
            ]
        );
        let requests = NeededTopic::plain("payment_request", "request");
        assert_eq!(safe_settings(&requests, 3), [("min.insync.replicas", "2")]);
        // One replica (a local stack): nothing to require of the others.
        assert!(safe_settings(&requests, 1).is_empty());
    }
}
