//! The reply route: where workers must send this host's replies.
//!
//! A route names this host's reply topic, and in partition-per-host routing its one
//! partition of it (see [`ReplyRouting`]). It is what goes into every request's
//! `kafka_replyTopic` (and `kafka_replyPartition`) header and what the reply consumer
//! reads, so resolving it once at startup and sharing the value keeps the two from ever
//! disagreeing.

use crate::error::StartupError;
use crate::gateway::host_table::HostTable;
use crate::gateway::reply_routing::ReplyRouting;
use crate::wire::dialect::Dialect;
use crate::wire::header_names::HeaderNames;
use crate::wire::return_address::ReturnAddress;
use std::fmt;
use std::net::IpAddr;

/// This host's reply destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    /// The IP that matched the host table.
    pub host_ip: IpAddr,
    /// The host suffix from the table.
    pub suffix: String,
    /// `<reply_topic_base>_<suffix>`, or the shared `<reply_topic_base>`.
    pub topic: String,
    /// The one partition of `topic` this host reads (partition-per-host routing); `None`:
    /// every partition.
    pub partition: Option<i32>,
}

impl ReplyRoute {
    /// The partitions of `topic` to read, given all it has.
    pub fn partitions_to_read(&self, all: &[i32]) -> Vec<i32> {
        self.partition.map_or_else(|| all.to_vec(), |own| vec![own])
    }

    /// What every request of this host carries so that its reply comes back here.
    pub fn return_address(&self, names: &HeaderNames, dialect: Dialect) -> ReturnAddress {
        ReturnAddress::new(names.clone(), dialect, &self.topic, self.partition)
    }
}

impl fmt::Display for ReplyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} (suffix {}) -> reply topic {}",
            self.host_ip, self.suffix, self.topic
        )?;
        match self.partition {
            Some(partition) => write!(f, ", partition {partition}"),
            None => Ok(()),
        }
    }
}

/// Picks the one candidate IP that the table knows, once the table suits `routing`.
///
/// Exactly one must match: none means this host was never given a reply topic, and two
/// would make the choice depend on detection order, which is how replies get misrouted.
pub fn resolve(
    table: &HostTable,
    routing: ReplyRouting,
    reply_topic_base: &str,
    candidates: &[IpAddr],
) -> Result<ReplyRoute, StartupError> {
    routing.check_table(table)?;
    let matches: Vec<_> = candidates
        .iter()
        .filter_map(|ip| table.lookup(*ip))
        .collect();
    match matches[..] {
        [entry] => {
            let (topic, partition) = routing.place(reply_topic_base, entry);
            Ok(ReplyRoute {
                host_ip: entry.ip,
                suffix: entry.suffix.clone(),
                topic,
                partition,
            })
        }
        [] => Err(StartupError::new(format!(
            "none of this host's IPs ({}) is in the host table {}; add a line \"<ip> <suffix>\" for this host there, or set KREPLY_HOST_IP to the listed IP this host should use",
            list(candidates),
            table.path().display()
        ))),
        _ => Err(StartupError::new(format!(
            "more than one of this host's IPs ({}) is in the host table {}; set KREPLY_HOST_IP to the one this host should use",
            list(&matches.iter().map(|e| e.ip).collect::<Vec<_>>()),
            table.path().display()
        ))),
    }
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "none found".to_string();
    }
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table() -> HostTable {
        HostTable::parse(
            Path::new("etc/reply-hosts.txt"),
            "10.0.1.11 prod1 partition=1\n127.0.0.2 local2 partition=0\n",
        )
        .unwrap()
    }

    fn resolve(
        table: &HostTable,
        base: &str,
        candidates: &[IpAddr],
    ) -> Result<ReplyRoute, StartupError> {
        super::resolve(table, ReplyRouting::TopicPerHost, base, candidates)
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_one_listed_ip_gives_the_route() {
        let route = resolve(
            &table(),
            "payment_response",
            &ips(&["127.0.0.1", "10.0.1.11"]),
        )
        .unwrap();
        assert_eq!(route.topic, "payment_response_prod1");
        assert_eq!(route.host_ip.to_string(), "10.0.1.11");
        assert_eq!(route.partition, None);
        assert_eq!(route.partitions_to_read(&[0, 1, 2]), [0, 1, 2]);
    }

    #[test]
    fn partition_per_host_reads_one_partition_of_the_shared_topic() {
        let routing = ReplyRouting::PartitionPerHost;
        let route =
            super::resolve(&table(), routing, "payment_response", &ips(&["10.0.1.11"])).unwrap();
        assert_eq!(
            (route.topic.as_str(), route.partition),
            ("payment_response", Some(1))
        );
        assert_eq!(route.partitions_to_read(&[0, 1, 2]), [1]);
        assert_eq!(
            route.to_string(),
            "host 10.0.1.11 (suffix prod1) -> reply topic payment_response, partition 1"
        );
        let unpartitioned = HostTable::parse(Path::new("t"), "10.0.1.11 prod1\n").unwrap();
        let err = super::resolve(&unpartitioned, routing, "r", &ips(&["10.0.1.11"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t:1: host 10.0.1.11 has no partition"),
            "{err}"
        );
    }

    #[test]
    fn no_listed_ip_names_the_ips_and_the_table() {
        let err = resolve(&table(), "r", &ips(&["10.9.9.9", "127.0.0.1"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("none of this host's IPs (10.9.9.9, 127.0.0.1) is in the host table etc/reply-hosts.txt"), "{err}");
    }

    #[test]
    fn two_listed_ips_are_ambiguous() {
        let err = resolve(&table(), "r", &ips(&["10.0.1.11", "127.0.0.2"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one"), "{err}");
        assert!(err.contains("10.0.1.11, 127.0.0.2"), "{err}");
    }
}
