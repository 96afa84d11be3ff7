//! The whole system on one broker (tansu, or the Kafka-rules cluster): a gateway host,
//! workers and the PG simulator,
//! shared by the tests that exercise gateway and worker together (`system`, `worker_crash`).

use super::cluster::BrokerKind;
use super::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The local-stack config (topics created on demand) with the worker's timings for tests.
pub fn system_config(pg_timeout_ms: u64) -> PathBuf {
    system_config_with(pg_timeout_ms, |_| {})
}

/// [`system_config`] with `change` applied.
pub fn system_config_with(
    pg_timeout_ms: u64,
    change: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
        c["worker"]["session_timeout_ms"] = json!(6000);
        c["worker"]["pg_timeout_ms"] = json!(pg_timeout_ms);
        change(c);
    })
}

/// A broker, one gateway host (127.0.0.2) and `workers` workers, all assigned.
pub struct System {
    pub broker: Broker,
    /// Where kreply's processes reach the broker (`KREPLY_BROKERS`): its own address, or
    /// a front such as a TLS terminator.
    pub brokers: String,
    pub pg: MockPg,
    pub config: PathBuf,
    pub gateway: Gateway,
    pub workers: Vec<Worker>,
}

impl System {
    pub fn start(workers: usize, pg_options: &[&str], pg_timeout_ms: u64) -> System {
        System::start_with(workers, pg_options, system_config(pg_timeout_ms))
    }

    /// [`System::start`] with a config file of the caller's.
    pub fn start_with(workers: usize, pg_options: &[&str], config: PathBuf) -> System {
        System::start_kind(BrokerKind::Tansu, workers, pg_options, config)
    }

    /// [`System::start_with`] on a broker of `kind`.
    pub fn start_kind(
        kind: BrokerKind,
        workers: usize,
        pg_options: &[&str],
        config: PathBuf,
    ) -> System {
        let broker = kind.start();
        let brokers = broker.addr.clone();
        System::start_on(broker, &brokers, workers, pg_options, config)
    }

    /// [`System::start_with`] on `broker`, which kreply's processes reach at `brokers`.
    pub fn start_on(
        broker: Broker,
        brokers: &str,
        workers: usize,
        pg_options: &[&str],
        config: PathBuf,
    ) -> System {
        let mut system = System::without_workers(broker, brokers, pg_options, config);
        for _ in 0..workers {
            let worker = system.spawn_worker();
            system.workers.push(worker);
        }
        wait_assigned(&system.workers.iter().collect::<Vec<_>>(), 3);
        system
    }

    /// [`System::start_kind`] with one worker for each of `state_dirs`, keeping its
    /// partition files there ([`Worker::spawn_in`]), all assigned.
    pub fn start_in(
        kind: BrokerKind,
        state_dirs: &[PathBuf],
        pg_options: &[&str],
        config: PathBuf,
    ) -> System {
        let broker = kind.start();
        let brokers = broker.addr.clone();
        let mut system = System::without_workers(broker, &brokers, pg_options, config);
        for dir in state_dirs {
            let worker = system.spawn_worker_in(dir);
            system.workers.push(worker);
        }
        wait_assigned(&system.workers.iter().collect::<Vec<_>>(), 3);
        system
    }

    /// The broker, the PG simulator and a ready gateway, no worker yet.
    fn without_workers(
        broker: Broker,
        brokers: &str,
        pg_options: &[&str],
        config: PathBuf,
    ) -> System {
        let pg = MockPg::start(pg_options);
        // The gateway creates request, reply and DLQ topics; the workers the results topic.
        let gateway = Gateway::spawn(brokers, "127.0.0.2", &config);
        gateway.wait_ready();
        System {
            broker,
            brokers: brokers.to_string(),
            pg,
            config,
            gateway,
            workers: Vec::new(),
        }
    }

    /// Starts one more worker process on this system, without waiting for its assignment.
    pub fn spawn_worker(&self) -> Worker {
        Worker::spawn(
            &format!("worker-{}", free_port()),
            &self.brokers,
            &self.pg,
            &self.config,
        )
    }

    /// [`System::spawn_worker`] keeping its partition files in `state_dir`.
    pub fn spawn_worker_in(&self, state_dir: &Path) -> Worker {
        Worker::spawn_in(
            &format!("worker-{}", free_port()),
            &self.brokers,
            &self.pg,
            &self.config,
            state_dir,
        )
    }

    pub fn second_gateway(&self) -> Gateway {
        let gateway = Gateway::spawn(&self.brokers, "127.0.0.3", &self.config);
        gateway.wait_ready();
        gateway
    }
}
