//! The results topic's settings, read back from the brokers where they report them.
//!
//! The race that keeps a payment from being charged twice (`worker/race.rs`) holds only
//! while the results log keeps what it acknowledged and the order it was written in:
//! - with two or more replicas, `min.insync.replicas` must be 2 or more, or an acknowledged
//!   `pending` can vanish in a leader election and a second attempt win as well;
//! - the topic must be compacted, not deleted by age, or the idempotency window is cut
//!   short by retention;
//! - `min.compaction.lag.ms` must outlast an attempt (`pg_timeout_ms` + 5 s), or a rival
//!   `pending` can be compacted away before a slow reader sees it.
//!
//! kreply creates its topics with these (`topics.rs`), but an operator may have created
//! them by hand. A broker that does not answer `DescribeConfigs` (krafka's Kafka-rules
//! cluster has no version of it) leaves the check to the operator: the worker says so,
//! with the command to run, and goes on. tansu 0.6 drops the connection on it, and the
//! client would retry for a minute, so under tansu's rules it is not asked
//! (`BrokerCompat::reports_topic_settings`).

use crate::error::StartupError;
use crate::kafka::BrokerCompat;
use krafka::admin::{
    AdminClient, ConfigResource, ConfigValue, DescribeConfigsOptions, DescribeTopicsOptions,
};
use std::collections::HashMap;
use std::time::Duration;

/// A broker that reports topic settings answers at once; a longer wait delays startup.
const ASK_LIMIT: Duration = Duration::from_secs(10);
const MIN_INSYNC: &str = "min.insync.replicas";
const CLEANUP: &str = "cleanup.policy";
const COMPACTION_LAG: &str = "min.compaction.lag.ms";

/// Stops with one sentence when the results topic's reported settings break the race;
/// logs how to check by hand when the brokers report none.
pub async fn check_results(
    admin: &AdminClient,
    compat: BrokerCompat,
    topic: &str,
    attempt_limit: Duration,
) -> Result<(), StartupError> {
    if !compat.reports_topic_settings() {
        return Ok(());
    }
    let Some(settings) = reported(admin, topic).await else {
        return Ok(());
    };
    let found = problems(replicas(admin, topic).await, &settings, attempt_limit);
    if found.is_empty() {
        return Ok(());
    }
    Err(StartupError::new(format!(
        "the results topic \"{topic}\" cannot keep a payment from being charged twice: {}; fix it with kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config ...",
        found.join("; ")
    )))
}

/// How many replicas `topic` has (its first partition's); 1 when it cannot be told.
async fn replicas(admin: &AdminClient, topic: &str) -> usize {
    let described = admin
        .describe_topics([topic], DescribeTopicsOptions::default())
        .await;
    described
        .ok()
        .and_then(|mut all| all.remove(topic)?.ok())
        .and_then(|topic| Some(topic.partitions.first()?.replicas.len()))
        .unwrap_or(1)
}

/// The settings the brokers report for `topic`, those with a value; `None` (logged) when
/// they report none.
async fn reported(admin: &AdminClient, topic: &str) -> Option<HashMap<String, String>> {
    let resource = ConfigResource::topic(topic);
    let names = [MIN_INSYNC, CLEANUP, COMPACTION_LAG]
        .map(String::from)
        .to_vec();
    let options = DescribeConfigsOptions::default()
        .config_names(names)
        .timeout(ASK_LIMIT);
    let answer = admin
        .describe_configs([resource.clone()], options)
        .await
        .map_err(|e| e.to_string())
        .and_then(|mut all| {
            all.remove(&resource)
                .ok_or_else(|| "no answer for the topic".to_string())?
                .map_err(|e| e.to_string())
        });
    match answer {
        Ok(entries) => Some(
            entries
                .into_iter()
                .filter_map(|entry| match entry.config_value() {
                    ConfigValue::Value(value) => Some((entry.name, value)),
                    _ => None,
                })
                .collect(),
        ),
        Err(why) => {
            log::info!(
                "startup: the brokers do not report the settings of \"{topic}\" ({why}); check them by hand: kafka-configs.sh --describe --entity-type topics --entity-name {topic} should show {MIN_INSYNC}=2 (with 2 or more replicas), {CLEANUP}=compact and {COMPACTION_LAG} of at least an hour"
            );
            None
        }
    }
}

/// What is wrong with `settings` of a results topic of `replicas` replicas, each as a
/// clause naming the setting, its value and what to set.
fn problems(
    replicas: usize,
    settings: &HashMap<String, String>,
    attempt_limit: Duration,
) -> Vec<String> {
    let mut found = Vec::new();
    let number = |name: &str| settings.get(name).and_then(|v| v.parse::<u64>().ok());
    if replicas >= 2 && number(MIN_INSYNC).is_some_and(|n| n < 2) {
        found.push(format!(
            "{MIN_INSYNC} is {} with {replicas} replicas (an acknowledged pending record can vanish in a leader election; set 2)",
            settings[MIN_INSYNC]
        ));
    }
    if let Some(policy) = settings.get(CLEANUP)
        && !policy.split(',').any(|p| p.trim() == "compact")
    {
        found.push(format!(
            "{CLEANUP} is \"{policy}\" (records must be kept by key, not deleted by age; set compact)"
        ));
    }
    let limit_ms = attempt_limit.as_millis() as u64;
    if let Some(lag) = number(COMPACTION_LAG).filter(|lag| *lag < limit_ms) {
        found.push(format!(
            "{COMPACTION_LAG} is {lag} (below an attempt's {limit_ms} ms, a rival pending record can be compacted away before it is read; set 3600000)"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(list: &[(&str, &str)]) -> HashMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const LIMIT: Duration = Duration::from_secs(8);

    #[test]
    fn safe_settings_pass() {
        let safe = settings(&[
            (MIN_INSYNC, "2"),
            (CLEANUP, "compact"),
            (COMPACTION_LAG, "3600000"),
        ]);
        assert!(problems(3, &safe, LIMIT).is_empty());
        let both = settings(&[(CLEANUP, "compact,delete"), (MIN_INSYNC, "1")]);
        assert!(
            problems(1, &both, LIMIT).is_empty(),
            "one replica: nothing to lose to"
        );
        assert!(
            problems(3, &HashMap::new(), LIMIT).is_empty(),
            "nothing reported"
        );
    }

    #[test]
    fn each_unsafe_setting_is_named_with_its_value_and_fix() {
        let unsafe_ = settings(&[
            (MIN_INSYNC, "1"),
            (CLEANUP, "delete"),
            (COMPACTION_LAG, "0"),
        ]);
        let found = problems(3, &unsafe_, LIMIT);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("min.insync.replicas is 1 with 3 replicas"));
        assert!(found[1].starts_with("cleanup.policy is \"delete\""));
        assert!(found[2].starts_with("min.compaction.lag.ms is 0"));
        assert!(found.iter().all(|f| f.contains("set ")));
    }
}
