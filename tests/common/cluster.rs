//! krafka's three-broker Kafka-rules cluster (`krafka::testing::FakeBroker`, behind krafka's
//! `test-broker` feature, a dev-dependency only) as a [`Broker`]: the real wire protocol on
//! loopback ports, with Kafka's rules (leaders per partition, KIP-848 groups, transactions
//! and `read_committed`, a held fetch that wakes when data arrives) and fault controls
//! ([`Broker::cluster`]: crash, leader moves, per-API delays and errors).
//!
//! Every kreply process a test starts is told whose rules its brokers keep
//! (`KREPLY_BROKER_COMPAT`): `kafka` for a cluster started here, `tansu-0.6` otherwise.

use super::{Broker, harness_runtime};
use krafka::testing::FakeBroker;
use kreply::kafka::BrokerCompat;
use std::sync::Mutex;

/// Brokers in a Kafka-rules cluster: node ids 0, 1 and 2.
pub const BROKERS: i32 = 3;

/// The bootstrap lists of the Kafka-rules clusters this test process started.
static KAFKA_RULES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Which broker a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// tansu 0.6.0, a process of its own (memory storage).
    Tansu,
    /// krafka's three-broker Kafka-rules cluster, in this test process.
    KafkaRules,
}

impl BrokerKind {
    pub fn start(self) -> Broker {
        match self {
            BrokerKind::Tansu => Broker::start(),
            BrokerKind::KafkaRules => Broker::start_kafka_rules(),
        }
    }
}

/// The `KREPLY_BROKER_COMPAT` for a kreply process started with `env`: `kafka` when its
/// `KREPLY_BROKERS` is a Kafka-rules cluster of this process, else `tansu-0.6`.
pub fn compat_for(env: &[(&str, &str)]) -> &'static str {
    let brokers = env.iter().find(|(name, _)| *name == "KREPLY_BROKERS");
    let clusters = KAFKA_RULES.lock().unwrap_or_else(|p| p.into_inner());
    match brokers {
        Some((_, list)) if clusters.iter().any(|c| c == list) => on_cluster(),
        _ => BrokerCompat::Tansu06.name(),
    }
}

/// The rules kreply follows on a Kafka-rules cluster: Kafka's, unless
/// `KAFKA_RULES_COMPAT=tansu-0.6` asks for tansu's, to see a Kafka-rules test fail
/// without the change it proves (`KAFKA_RULES_COMPAT=tansu-0.6 cargo test --test kafka_rules`).
fn on_cluster() -> &'static str {
    match std::env::var("KAFKA_RULES_COMPAT").as_deref() {
        Ok("tansu-0.6") => BrokerCompat::Tansu06.name(),
        Ok("kafka") | Err(_) => BrokerCompat::Kafka.name(),
        Ok(other) => panic!("KAFKA_RULES_COMPAT={other:?}: use kafka or tansu-0.6"),
    }
}

impl Broker {
    /// A three-broker Kafka-rules cluster on loopback ports.
    pub fn start_kafka_rules() -> Broker {
        let runtime = harness_runtime();
        let cluster = runtime
            .block_on(FakeBroker::start_cluster(BROKERS as usize))
            .expect("the Kafka-rules cluster starts");
        let addr = cluster.bootstrap_servers();
        KAFKA_RULES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr.clone());
        Broker {
            addr,
            child: None,
            cluster: Some(cluster),
            runtime,
            storage: String::new(),
        }
    }

    /// The Kafka-rules cluster's fault controls.
    pub fn cluster(&self) -> &FakeBroker {
        self.cluster.as_ref().expect("a Kafka-rules cluster")
    }

    /// Whose rules this broker keeps.
    pub fn compat(&self) -> BrokerCompat {
        match self.cluster {
            Some(_) => BrokerCompat::Kafka,
            None => BrokerCompat::Tansu06,
        }
    }

    /// Ends the sessions of every KIP-848 member of `group` at once, as the coordinator
    /// does 45 s after a member's last heartbeat (`CONSUMER_SESSION_TIMEOUT` in krafka's
    /// testing broker), so that a test whose workers were all SIGKILLed can restart one
    /// without waiting that long; how many members it removed. Nothing on tansu, where the
    /// workers' own session (6 s in `system_config`) ends the dead member's.
    pub fn end_group_sessions(&self, group: &str) -> usize {
        let Some(cluster) = &self.cluster else {
            return 0;
        };
        cluster.with_state(|state| {
            let Some(group) = state.groups.get_mut(group) else {
                return 0;
            };
            let removed = group.consumer_members.len();
            group.consumer_members.clear();
            if removed > 0 {
                group.group_epoch += 1;
            }
            removed
        })
    }

    /// The broker that leads `partition` of `topic` (Kafka-rules cluster only).
    pub fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        self.cluster()
            .with_state(|state| state.topics[topic].partitions[partition as usize].leader)
    }
}

/// Runs each named `fn test(kind: BrokerKind)` as two tests, `test::tansu` and
/// `test::kafka_rules`: the core system tests run on both brokers.
#[macro_export]
macro_rules! on_both_brokers {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[test]
            fn tansu() {
                super::$test($crate::common::cluster::BrokerKind::Tansu)
            }

            #[test]
            fn kafka_rules() {
                super::$test($crate::common::cluster::BrokerKind::KafkaRules)
            }
        }
    )*};
}
