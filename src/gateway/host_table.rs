//! The host table: which reply-topic suffix each gateway host owns.
//!
//! Every gateway host reads replies from its own topic, `<reply_topic_base>_<suffix>`, so a
//! reply can never land on a partition that another host consumes. The suffix is looked up
//! by the host's IP in a plain text file under `etc/`, one `IP SUFFIX` pair a line, so that
//! operators can review it in a diff and ship it with configuration management.
//!
//! In partition-per-host routing every host shares one reply topic instead, and a third
//! field gives each its partition: `10.0.1.11 prod1 partition=0`. The field is read in
//! either mode, so one table can be prepared for a move between them, but only
//! partition-per-host routing requires it ([`HostTable::check_partitions`]).
//!
//! A field `url=https://gw1.example.com` gives the host's public base URL: where a caller
//! outside the load balancer reaches it, with TLS if it has it. A host asked for another's
//! late reply (`GET /v1/requests/{id}?host=`) redirects there; without one, to the host's
//! IP on this gateway's port, over plain HTTP.

use crate::error::StartupError;
use crate::wire::topic_name;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: IpAddr,
    pub suffix: String,
    /// `partition=N`: this host's partition of the shared reply topic.
    pub partition: Option<i32>,
    /// `url=...`: the host's public base URL (`http://` or `https://`, no trailing `/`).
    pub public_url: Option<String>,
    /// Where the line is in the file (from 1), for error messages.
    pub line: usize,
}

/// The parsed table, remembering where it came from for error messages.
#[derive(Debug, Clone)]
pub struct HostTable {
    path: PathBuf,
    entries: Vec<HostEntry>,
}

impl HostTable {
    /// Reads and parses the table file.
    pub fn load(path: &Path) -> Result<HostTable, StartupError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StartupError::new(format!(
                "cannot read the host table {} (set \"host_table\" in the config to the file that maps host IPs to reply-topic suffixes): {e}",
                path.display()
            ))
        })?;
        HostTable::parse(path, &text)
    }

    /// Parses `IP SUFFIX` lines; `#` starts a comment, blank lines are ignored. Every bad
    /// line is reported, not only the first, so one edit can fix them all; still in one
    /// sentence, as every startup error is.
    pub fn parse(path: &Path, text: &str) -> Result<HostTable, StartupError> {
        let mut entries: Vec<HostEntry> = Vec::new();
        let mut bad: Vec<String> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), index + 1);
            match parse_line(line, index + 1) {
                Err(why) => bad.push(format!("{at}: {why}")),
                Ok(entry) => match entries.iter().find(|e| e.ip == entry.ip) {
                    Some(other) => bad.push(format!(
                        "{at}: IP {} is listed twice (first with suffix \"{}\"), but each host must map to exactly one reply topic",
                        entry.ip, other.suffix
                    )),
                    None => entries.push(entry),
                },
            }
        }
        if !bad.is_empty() {
            return Err(StartupError::new(bad_lines(bad)));
        }
        Ok(HostTable {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<&HostEntry> {
        self.entries.iter().find(|e| e.ip == ip)
    }

    /// The (first) host with reply-topic suffix `suffix`: where its requests are answered.
    pub fn lookup_suffix(&self, suffix: &str) -> Option<&HostEntry> {
        self.entries.iter().find(|e| e.suffix == suffix)
    }

    /// Every host, in the order of the file.
    pub fn entries(&self) -> &[HostEntry] {
        &self.entries
    }

    /// What partition-per-host routing needs of the table: every host names a partition,
    /// and no two name the same one (their replies would reach both, and each would drop
    /// the other's). The whole table is checked on every host, so any host refuses a
    /// table that would misroute another's replies. Every bad line is told, in one sentence.
    pub fn check_partitions(&self) -> Result<(), StartupError> {
        let mut bad = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let at = format!("{}:{}", self.path.display(), entry.line);
            let Some(partition) = entry.partition else {
                bad.push(format!(
                    "{at}: host {} has no partition, but \"reply_routing\" is \"partition-per-host\"; add \"partition=N\" to the line",
                    entry.ip
                ));
                continue;
            };
            let earlier = &self.entries[..i];
            if let Some(other) = earlier.iter().find(|e| e.partition == Some(partition)) {
                bad.push(format!(
                    "{at}: partition {partition} of host {} is already host {}'s (line {}); each host needs a partition of its own",
                    entry.ip, other.ip, other.line
                ));
            }
        }
        if !bad.is_empty() {
            return Err(StartupError::new(bad_lines(bad)));
        }
        Ok(())
    }
}

/// At most this many bad lines are told one by one; a file that is not a host table at
/// all would otherwise make a sentence of thousands.
const MAX_BAD_LINES_TOLD: usize = 10;

/// The bad lines as one sentence, `; ` between them.
fn bad_lines(mut bad: Vec<String>) -> String {
    let untold = bad.len().saturating_sub(MAX_BAD_LINES_TOLD);
    bad.truncate(MAX_BAD_LINES_TOLD);
    let mut sentence = bad.join("; ");
    if untold > 0 {
        sentence.push_str(&format!("; and {untold} more bad line(s)"));
    }
    sentence
}

fn parse_line(line: &str, number: usize) -> Result<HostEntry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [ip, suffix, ref extra @ ..] = fields[..] else {
        return Err(format!(
            "expected \"IP SUFFIX\", optionally followed by \"partition=N\" and \"url=BASE\", found {} field(s) in \"{line}\"",
            fields.len()
        ));
    };
    let (mut partition, mut public_url) = (None, None);
    for field in extra {
        if field.starts_with("url=") {
            public_url = Some(parse_url(field)?);
        } else {
            partition = Some(parse_partition(field)?);
        }
    }
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("\"{ip}\" is not an IP address"))?;
    topic_name::check_suffix(suffix)?;
    Ok(HostEntry {
        ip,
        suffix: suffix.to_string(),
        partition,
        public_url,
        line: number,
    })
}

/// `url=BASE`, BASE an `http://` or `https://` URL with a host and no query; a trailing
/// `/` is dropped.
fn parse_url(field: &str) -> Result<String, String> {
    let base = field.strip_prefix("url=").unwrap_or_default();
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !base.contains(['?', '#']) => {
            Ok(base.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "\"{field}\" is not \"url=BASE\" with BASE an http:// or https:// address such as https://gw1.example.com"
        )),
    }
}

/// `partition=N`, N a Kafka partition number (0 or more).
fn parse_partition(field: &str) -> Result<i32, String> {
    field
        .strip_prefix("partition=")
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            format!("\"{field}\" is not \"partition=N\" with N a partition number (0 or more)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostTable, StartupError> {
        HostTable::parse(Path::new("etc/hosts"), text)
    }

    #[test]
    fn parses_pairs_comments_and_blank_lines() {
        let table = parse("# prod\n10.0.1.11 prod1\n\n  10.0.1.12\tprod2  # second\n").unwrap();
        let ip: IpAddr = "10.0.1.12".parse().unwrap();
        assert_eq!(table.lookup(ip).unwrap().suffix, "prod2");
        assert!(table.lookup("10.0.1.13".parse().unwrap()).is_none());
        assert_eq!(table.lookup_suffix("prod2").unwrap().ip, ip);
        assert!(table.lookup_suffix("prod3").is_none());
    }

    #[test]
    fn rejects_a_line_with_one_field_naming_file_and_line() {
        let err = parse("10.0.1.11 prod1\n10.0.1.12\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("etc/hosts:2: expected \"IP SUFFIX\""),
            "{err}"
        );
    }

    #[test]
    fn a_url_field_gives_the_public_base_url_in_any_order_with_the_partition() {
        let table = parse(
            "10.0.1.11 prod1 url=https://gw1.example.com/\n10.0.1.12 prod2 partition=1 url=http://gw2:8443\n",
        )
        .unwrap();
        let first = table.lookup_suffix("prod1").unwrap();
        assert_eq!(
            (first.public_url.as_deref(), first.partition),
            (Some("https://gw1.example.com"), None)
        );
        let second = table.lookup_suffix("prod2").unwrap();
        assert_eq!(second.public_url.as_deref(), Some("http://gw2:8443"));
        assert_eq!(second.partition, Some(1));
        for bad in [
            "url=",
            "url=gw1",
            "url=ftp://x",
            "url=https://",
            "url=https://x?y=1",
        ] {
            let err = parse(&format!("10.0.1.11 prod1 {bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not \"url=BASE\""), "{bad}: {err}");
        }
    }

    #[test]
    fn a_third_field_gives_the_partition_and_anything_else_there_is_refused() {
        let table = parse("10.0.1.11 prod1 partition=0\n10.0.1.12 prod2 partition=7\n").unwrap();
        let second = table.lookup("10.0.1.12".parse().unwrap()).unwrap();
        assert_eq!((second.partition, second.line), (Some(7), 2));
        table.check_partitions().unwrap();
        for bad in ["partition=-1", "partition=x", "partition=", "part=1", "0"] {
            let err = parse(&format!("10.0.1.11 prod1 {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("etc/hosts:1: \"{bad}\" is not \"partition=N\"")),
                "{err}"
            );
        }
    }

    #[test]
    fn partition_per_host_needs_a_partition_on_every_line_and_each_once() {
        let table = parse(
            "10.0.1.11 prod1 partition=0\n10.0.1.12 prod2\n10.0.1.13 prod3 partition=0\n10.0.1.14 prod4 partition=1\n",
        )
        .unwrap();
        let err = table.check_partitions().unwrap_err().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("etc/hosts:2: host 10.0.1.12 has no partition, but \"reply_routing\" is \"partition-per-host\""),
            "{err}"
        );
        assert!(
            err.contains(
                "; etc/hosts:3: partition 0 of host 10.0.1.13 is already host 10.0.1.11's (line 1)"
            ),
            "{err}"
        );
        assert!(!err.contains("etc/hosts:4"), "{err}");
    }

    #[test]
    fn rejects_bad_ip_and_bad_suffix() {
        assert!(
            parse("10.0.1 prod1")
                .unwrap_err()
                .to_string()
                .contains("not an IP")
        );
        let err = parse("10.0.1.11 prod/1").unwrap_err().to_string();
        assert!(err.contains("prod/1"), "{err}");
    }

    #[test]
    fn reports_every_bad_line_in_one_line() {
        let err = parse("10.0.1.11 a\n10.0.1.12\n10.0.1.11 b\nnot-an-ip c\n10.0.1.13 d\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("etc/hosts:2: expected \"IP SUFFIX\""),
            "{err}"
        );
        assert!(
            err.contains("; etc/hosts:3: IP 10.0.1.11 is listed twice"),
            "{err}"
        );
        assert!(
            err.contains("; etc/hosts:4: \"not-an-ip\" is not an IP"),
            "{err}"
        );
        assert!(!err.contains("etc/hosts:5"), "{err}");
    }

    #[test]
    fn a_file_that_is_no_host_table_at_all_gets_a_bounded_sentence() {
        let err = parse(&"junk\n".repeat(25)).unwrap_err().to_string();
        assert!(err.contains("etc/hosts:10: "), "{err}");
        assert!(!err.contains("etc/hosts:11: "), "{err}");
        assert!(err.ends_with("; and 15 more bad line(s)"), "{err}");
    }

    #[test]
    fn rejects_the_same_ip_twice() {
        let err = parse("10.0.1.11 a\n10.0.1.11 b\n").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }
}
