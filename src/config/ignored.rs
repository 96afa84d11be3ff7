//! Keys a role ignores: named at startup and by `check-config`, one line each (which
//! key, why it is ignored, what to set instead), so a setting that does nothing is never
//! silent.
//!
//! Telling "set" from "defaulted" needs the file itself: the typed [`Config`] holds a
//! default wherever the file is silent, so [`SetKeys`] records which keys the JSON named
//! before defaults were filled in.
//!
//! Only keys a role ignores *because of another setting* are named. One file commonly
//! serves both roles (the shipped `etc/kreply.json` does), so a key that belongs to the
//! other role (`worker.*` for the gateway, `listen` or `flows` for the worker) is not
//! reported for being set; it is reported when a setting makes it dead for the role that
//! would read it:
//!
//! | role | set | when | why |
//! |---|---|---|---|
//! | gateway | `operations`, `dialect`, `dlq_topic`, `require_idempotency_key` | `flows` | each flow has its own |
//! | gateway | `request_topic` | `flows`, and no `worker` section | each flow names its own; the worker reads it, but nothing says a worker shares this file |
//! | worker | `flows` | `request_topic` not set | the worker consumes `request_topic` alone, here its default |

use crate::config::Config;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// The process that reads the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Gateway,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Worker => "worker",
        }
    }
}

/// The keys the config file named: each top-level key, and `section.key` for the keys of
/// a top-level object (`"topics.partitions"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SetKeys(BTreeSet<String>);

impl SetKeys {
    /// The keys of the file's JSON object (anything else names none).
    pub(crate) fn of(raw: &Value) -> SetKeys {
        let mut keys = BTreeSet::new();
        for (key, value) in raw.as_object().into_iter().flatten() {
            keys.insert(key.clone());
            for inner in value.as_object().into_iter().flat_map(|o| o.keys()) {
                keys.insert(format!("{key}.{inner}"));
            }
        }
        SetKeys(keys)
    }

    /// Whether the file named `key` (`"flows"`, `"topics.partitions"`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

/// One key a role ignores: which, why, and what to set instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ignored {
    pub(crate) role: Role,
    pub(crate) key: &'static str,
    pub(crate) why: String,
    pub(crate) instead: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\" is ignored by the {}: {}; {}",
            self.key,
            self.role.name(),
            self.why,
            self.instead
        )
    }
}

/// The keys `config`'s file set that `role` ignores, in a fixed order.
pub(crate) fn keys(config: &Config, role: Role) -> Vec<Ignored> {
    let set = &config.set_keys;
    let ignored = |key, why: &str, instead: String| Ignored {
        role,
        key,
        why: why.to_string(),
        instead,
    };
    let mut found = Vec::new();
    // An empty list is no flows: the top-level keys are the one flow then.
    let flows = !config.flows.is_empty();
    match role {
        Role::Gateway if flows => {
            // A file with worker settings is a worker's too, and its request topic is the
            // one that worker consumes: not a mistake, so not named.
            if set.has("request_topic") && !set.has("worker") {
                found.push(ignored(
                    "request_topic",
                    "\"flows\" is set, and each flow names its own request topic; the worker reads it (the topic a kreply worker on this file consumes)",
                    "set the gateway's topics in \"flows\", and keep this key only if a worker shares the file (then give it a \"worker\" section)".into(),
                ));
            }
            if set.has("operations") {
                found.push(ignored(
                    "operations",
                    "\"flows\" is set, and each flow lists the operations it takes",
                    "list them in \"flows\" (each flow's \"operations\") and remove the top-level key".into(),
                ));
            }
            if set.has("dialect") {
                found.push(ignored(
                    "dialect",
                    "\"flows\" is set, and each flow has its own dialect (default \"spring\")",
                    "set \"dialect\" in each flow of \"flows\" that needs it and remove the top-level key".into(),
                ));
            }
            if set.has("require_idempotency_key") {
                found.push(ignored(
                    "require_idempotency_key",
                    "\"flows\" is set, and each flow says whether its payments need an Idempotency-Key",
                    "set \"require_idempotency_key\" in each flow of \"flows\" that needs it and remove the top-level key".into(),
                ));
            }
            if set.has("dlq_topic") {
                found.push(ignored(
                    "dlq_topic",
                    "\"flows\" is set, and each flow dead-letters into its own topic (default <request_topic>-dlt)",
                    "set \"dlq_topic\" in each flow of \"flows\" that needs another and remove the top-level key".into(),
                ));
            }
        }
        Role::Worker if flows && !set.has("request_topic") => found.push(ignored(
            "flows",
            "a worker serves one flow, and consumes \"request_topic\" alone, which this file leaves at its default",
            format!(
                "set \"request_topic\" to the topic of the flow this worker fleet serves (now it consumes \"{}\")",
                config.request_topic
            ),
        )),
        Role::Gateway | Role::Worker => {}
    }
    found
}

/// Logs one warning line per key `role` ignores, naming the file.
pub(crate) fn log(config: &Config, role: Role, path: &Path) {
    for key in keys(config, role) {
        log::warn!("config {}: {key}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("k.json"), text).unwrap()
    }

    fn named(config: &Config, role: Role) -> Vec<&'static str> {
        keys(config, role).iter().map(|i| i.key).collect()
    }

    const FLOWS: &str = r#""flows": [{"operations": ["refund"], "request_topic": "refunds"}]"#;

    #[test]
    fn the_file_tells_set_keys_from_defaulted_ones() {
        let set = SetKeys::of(&serde_json::json!({"flows": [], "topics": {"partitions": 3}}));
        assert!(set.has("flows"));
        assert!(set.has("topics"));
        assert!(set.has("topics.partitions"));
        assert!(!set.has("topics.replication_factor"));
        assert!(!set.has("request_topic"));
        let config = parse(r#"{"operations": ["approve"]}"#);
        assert!(config.set_keys.has("operations"));
        assert!(!config.set_keys.has("dialect"));
    }

    #[test]
    fn with_flows_the_gateway_names_each_top_level_key_it_ignores_once() {
        let gateway_only = r#""request_topic": "pay", "operations": ["approve"], "dialect": "nestjs", "dlq_topic": "dead""#;
        let config = parse(&format!("{{{FLOWS}, {gateway_only}}}"));
        assert_eq!(
            named(&config, Role::Gateway),
            ["request_topic", "operations", "dialect", "dlq_topic"]
        );
        let lines: Vec<String> = keys(&config, Role::Gateway)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            lines[1].starts_with(
                "\"operations\" is ignored by the gateway: \"flows\" is set, and each flow lists"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("remove the top-level key"),
            "{}",
            lines[1]
        );
        assert!(lines[0].contains("the worker reads it"), "{}", lines[0]);
        assert!(lines.iter().all(|l| !l.contains('\n')));
        // The worker reads "request_topic", and the rest is the gateway's: nothing to say.
        assert_eq!(named(&config, Role::Worker), Vec::<&str>::new());
        // With worker settings the file is a worker's too: its request topic is not named.
        let shared = parse(&format!(
            r#"{{{FLOWS}, {gateway_only}, "worker": {{"group_id": "g"}}}}"#
        ));
        assert_eq!(
            named(&shared, Role::Gateway),
            ["operations", "dialect", "dlq_topic"]
        );
        assert_eq!(named(&shared, Role::Worker), Vec::<&str>::new());
    }

    #[test]
    fn defaulted_keys_and_a_config_without_flows_name_nothing() {
        let flows_only = parse(&format!("{{{FLOWS}}}"));
        assert_eq!(named(&flows_only, Role::Gateway), Vec::<&str>::new());
        let no_flows = parse(
            r#"{"request_topic": "pay", "operations": ["approve"], "dialect": "nestjs", "flows": []}"#,
        );
        assert_eq!(named(&no_flows, Role::Gateway), Vec::<&str>::new());
        assert_eq!(named(&no_flows, Role::Worker), Vec::<&str>::new());
        // Another role's keys are not named for being set.
        let worker_keys = parse(r#"{"worker": {"group_id": "g"}, "listen": "127.0.0.1:1"}"#);
        assert_eq!(named(&worker_keys, Role::Gateway), Vec::<&str>::new());
        assert_eq!(named(&worker_keys, Role::Worker), Vec::<&str>::new());
    }

    #[test]
    fn a_worker_on_a_flows_file_without_its_own_request_topic_names_the_default() {
        let config = parse(&format!("{{{FLOWS}}}"));
        let found = keys(&config, Role::Worker);
        assert_eq!(found.len(), 1);
        let line = found[0].to_string();
        assert!(
            line.starts_with("\"flows\" is ignored by the worker: "),
            "{line}"
        );
        assert!(
            line.ends_with("(now it consumes \"payment_request\")"),
            "{line}"
        );
    }
}
