//! Reply routing: how the reply to a host's request finds that host, and nobody else.
//!
//! - **topic-per-host** (the default): each host reads a topic of its own,
//!   `<reply_topic_base>_<suffix>`, on every partition. A worker only has to honour
//!   `kafka_replyTopic`; the partition it picks does not matter.
//! - **partition-per-host**: every host shares the one topic `<reply_topic_base>` and
//!   reads only the partition the host table gives it, which its requests name in
//!   `kafka_replyPartition`. One topic for the fleet, but a worker that ignores the
//!   partition header sends replies to other hosts, whose callers then time out.
//!
//! Both start reading at the latest offset and use no consumer group, so the broker never
//! hands a host's replies to another reader.

use crate::error::StartupError;
use crate::gateway::host_table::{HostEntry, HostTable};
use serde::{Deserialize, Serialize};

/// `"reply_routing"` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyRouting {
    #[default]
    TopicPerHost,
    PartitionPerHost,
}

impl ReplyRouting {
    /// Where `entry`'s host reads its replies: the topic, and the one partition of it
    /// (`None`: every partition).
    pub fn place(self, reply_topic_base: &str, entry: &HostEntry) -> (String, Option<i32>) {
        match self {
            ReplyRouting::TopicPerHost => (format!("{reply_topic_base}_{}", entry.suffix), None),
            ReplyRouting::PartitionPerHost => (reply_topic_base.to_string(), entry.partition),
        }
    }

    /// What this routing needs of the host table, before any host's route is resolved.
    pub fn check_table(self, table: &HostTable) -> Result<(), StartupError> {
        match self {
            ReplyRouting::TopicPerHost => Ok(()),
            ReplyRouting::PartitionPerHost => table.check_partitions(),
        }
    }

    /// What this routing needs of the reply topic, once its `partitions` are known: in
    /// partition-per-host routing, the partition of every host in the table exists (a
    /// missing one would be found only when that host's replies never come).
    pub fn check_topic(
        self,
        table: &HostTable,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), StartupError> {
        if self == ReplyRouting::TopicPerHost {
            return Ok(());
        }
        let missing = table
            .entries()
            .iter()
            .filter(|e| e.partition.is_some_and(|p| !partitions.contains(&p)))
            .max_by_key(|e| e.partition);
        let Some(host) = missing else {
            return Ok(());
        };
        let highest = host.partition.unwrap_or_default();
        Err(StartupError::new(format!(
            "the reply topic \"{topic}\" has {} partition(s), but the host table {} gives host {} partition {highest} (line {}); add partitions to the topic (at least {}), or give the host a partition the topic has",
            partitions.len(),
            table.path().display(),
            host.ip,
            host.line,
            highest + 1
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(text: &str) -> HostTable {
        HostTable::parse(Path::new("etc/reply-hosts.txt"), text).unwrap()
    }

    #[test]
    fn the_config_names_the_modes_in_kebab_case_and_topic_per_host_is_the_default() {
        let parse = |json: &str| serde_json::from_str::<ReplyRouting>(json);
        assert_eq!(
            parse("\"topic-per-host\"").unwrap(),
            ReplyRouting::TopicPerHost
        );
        assert_eq!(
            parse("\"partition-per-host\"").unwrap(),
            ReplyRouting::PartitionPerHost
        );
        assert!(parse("\"partition_per_host\"").is_err());
        assert_eq!(ReplyRouting::default(), ReplyRouting::TopicPerHost);
    }

    #[test]
    fn each_mode_places_a_host_on_its_topic_or_its_partition() {
        let hosts = table("10.0.1.11 prod1 partition=2\n");
        let entry = &hosts.entries()[0];
        assert_eq!(
            ReplyRouting::TopicPerHost.place("payment_response", entry),
            ("payment_response_prod1".to_string(), None)
        );
        assert_eq!(
            ReplyRouting::PartitionPerHost.place("payment_response", entry),
            ("payment_response".to_string(), Some(2))
        );
    }

    #[test]
    fn only_partition_per_host_asks_for_partitions_in_the_table() {
        let hosts = table("10.0.1.11 prod1\n");
        ReplyRouting::TopicPerHost.check_table(&hosts).unwrap();
        let err = ReplyRouting::PartitionPerHost
            .check_table(&hosts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no partition"), "{err}");
    }

    #[test]
    fn a_shared_topic_without_a_hosts_partition_names_the_highest_missing_one() {
        let hosts = table(
            "10.0.1.11 prod1 partition=0\n10.0.1.12 prod2 partition=3\n10.0.1.13 prod3 partition=2\n",
        );
        let routing = ReplyRouting::PartitionPerHost;
        routing.check_topic(&hosts, "r", &[0, 1, 2, 3]).unwrap();
        let err = routing
            .check_topic(&hosts, "r", &[0, 1])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the reply topic \"r\" has 2 partition(s), but the host table etc/reply-hosts.txt gives host 10.0.1.12 partition 3 (line 2); add partitions to the topic (at least 4), or give the host a partition the topic has"
        );
        ReplyRouting::TopicPerHost
            .check_topic(&hosts, "r", &[0])
            .unwrap();
    }
}
