//! The reply route: where workers must send this host's replies.
//!
//! A route names this host's own reply topic. It is what goes into every request's
//! `kafka_replyTopic` header and what the reply consumer reads, so resolving it once at
//! startup and sharing the value keeps the two from ever disagreeing. Partition-per-host
//! routing (`kafka_replyPartition`) will add a partition to the route, not a new concept.

use crate::error::StartupError;
use crate::gateway::host_table::HostTable;
use std::fmt;
use std::net::IpAddr;

/// This host's reply destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    /// The IP that matched the host table.
    pub host_ip: IpAddr,
    /// The host suffix from the table.
    pub suffix: String,
    /// `<reply_topic_base>_<suffix>`.
    pub topic: String,
}

impl fmt::Display for ReplyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} (suffix {}) -> reply topic {}",
            self.host_ip, self.suffix, self.topic
        )
    }
}

/// Picks the one candidate IP that the table knows.
///
/// Exactly one must match: none means this host was never given a reply topic, and two
/// would make the choice depend on detection order, which is how replies get misrouted.
pub fn resolve(
    table: &HostTable,
    reply_topic_base: &str,
    candidates: &[IpAddr],
) -> Result<ReplyRoute, StartupError> {
    let matches: Vec<_> = candidates
        .iter()
        .filter_map(|ip| table.lookup(*ip))
        .collect();
    match matches[..] {
        [entry] => Ok(ReplyRoute {
            host_ip: entry.ip,
            suffix: entry.suffix.clone(),
            topic: format!("{reply_topic_base}_{}", entry.suffix),
        }),
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
            "10.0.1.11 prod1\n127.0.0.2 local2\n",
        )
        .unwrap()
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
