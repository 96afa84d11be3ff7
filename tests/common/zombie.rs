//! A second worker that settles the same requests as the first: a worker in a consumer
//! group of its own, on the same request and results topics. It is what a zombie worker
//! (paused past its session) or a broker that forms a generation too early (tansu)
//! amounts to, made deterministic: two workers settle every request.

use super::system::System;
use super::{Worker, free_port, log_dir};

impl System {
    /// A worker in consumer group `group`, with this system's config otherwise; it reads
    /// the request topic from `start_from` ("latest" or "earliest").
    pub fn spawn_worker_in_group(&self, group: &str, start_from: &str) -> Worker {
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        config["worker"]["group_id"] = group.into();
        config["worker"]["start_from"] = start_from.into();
        let path = log_dir().join(format!("kreply-{}.json", free_port()));
        std::fs::write(&path, config.to_string()).unwrap();
        Worker::spawn(
            &format!("worker-{group}-{}", free_port()),
            &self.broker.addr,
            &self.pg,
            &path,
        )
    }
}
