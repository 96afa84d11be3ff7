//! krafka's three-broker Kafka-rules cluster as a program, to run the whole system on
//! Kafka's rules by hand or from a script (a dev tool: never part of the production build):
//!
//!     cargo run --example kafka_cluster            # prints the bootstrap list, runs until killed
//!     KREPLY_BROKERS=$(...) kreply gateway --config etc/kreply.json
//!
//! It prints one line, the bootstrap list (`127.0.0.1:P0,127.0.0.1:P1,127.0.0.1:P2`), then
//! a line each time a partition's leader or the group's members change, so a person can see
//! rebalances. Everything is in memory: a restart starts empty. The topics are created by
//! kreply (`"topics": {"auto_create": true}`), as on a new Kafka cluster.
//!
//! With `--brokers N` it starts N brokers instead of three.

use krafka::testing::FakeBroker;
use std::time::Duration;

fn main() {
    let brokers = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => 3,
        [flag, n] if flag == "--brokers" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let cluster = FakeBroker::start_cluster(brokers)
            .await
            .unwrap_or_else(|e| {
                eprintln!("kafka_cluster: cannot start: {e}");
                std::process::exit(1);
            });
        println!("{}", cluster.bootstrap_servers());
        let mut last = String::new();
        loop {
            let now = describe(&cluster);
            if now != last {
                eprintln!("{now}");
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Each topic's leaders and each group's members, in one line.
fn describe(cluster: &FakeBroker) -> String {
    cluster.with_state(|state| {
        let mut topics: Vec<String> = state
            .topics
            .iter()
            .filter(|(name, _)| !name.starts_with("__"))
            .map(|(name, topic)| {
                let leaders: Vec<i32> = topic.partitions.iter().map(|p| p.leader).collect();
                format!("{name} leaders {leaders:?}")
            })
            .collect();
        topics.sort();
        let mut groups: Vec<String> = state
            .groups
            .iter()
            .map(|(id, group)| {
                let mut members: Vec<String> = group
                    .consumer_members
                    .values()
                    .map(|m| format!("{:?}", m.assignment))
                    .collect();
                members.sort();
                format!(
                    "group {id} epoch {}: {}",
                    group.group_epoch,
                    members.join(" ")
                )
            })
            .collect();
        groups.sort();
        topics.extend(groups);
        topics.join("; ")
    })
}

fn usage() -> ! {
    eprintln!("usage: kafka_cluster [--brokers N]");
    std::process::exit(2);
}
