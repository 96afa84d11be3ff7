//! The group's member list (DescribeGroups), asked for by a task of its own.
//!
//! Why a task: the stale-group check runs between batches, and a coordinator that is slow
//! or gone must never hold up the poll loop. After a broker restart krafka's admin
//! requests kept failing on a dead connection ("connection closed") until their timeout,
//! so every batch waited two seconds and callers timed out. The task asks on its own
//! schedule, and after a few failures in a row it asks through a new client.

use crate::config::Config;
use crate::kafka;
use krafka::admin::{AdminClient, DescribeConsumerGroupsOptions};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures in a row after which the task connects again.
const RECONNECT_AFTER: u32 = 3;

/// The member ids the coordinator listed, and when it answered.
type Answer = (Instant, BTreeSet<String>);

/// The latest member list the coordinator gave.
#[derive(Clone, Default)]
pub struct MemberList {
    latest: Arc<Mutex<Option<Answer>>>,
}

impl MemberList {
    /// Starts asking for `group`'s members every `every`, on the current Tokio runtime.
    pub fn watch(admin: AdminClient, config: Config, group: String, every: Duration) -> Self {
        let list = MemberList::default();
        tokio::spawn(list.clone().ask_forever(admin, config, group, every));
        list
    }

    /// The member ids, if the coordinator answered within `within`; `None` otherwise.
    pub fn fresh(&self, within: Duration) -> Option<BTreeSet<String>> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let (at, members) = latest.as_ref()?;
        (at.elapsed() <= within).then(|| members.clone())
    }

    async fn ask_forever(
        self,
        mut admin: AdminClient,
        config: Config,
        group: String,
        every: Duration,
    ) {
        let mut failures = 0;
        loop {
            tokio::time::sleep(every).await;
            match describe(&admin, &group, every * 4).await {
                Ok(members) => {
                    failures = 0;
                    *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), members));
                }
                Err(e) => {
                    failures += 1;
                    log::debug!("worker: describing group {group}: {e}");
                    if failures >= RECONNECT_AFTER {
                        failures = 0;
                        if let Ok(fresh) = kafka::client(&config, "kreply-worker-admin").await {
                            admin = fresh.admin();
                        }
                    }
                }
            }
        }
    }
}

async fn describe(
    admin: &AdminClient,
    group: &str,
    timeout: Duration,
) -> Result<BTreeSet<String>, String> {
    let options = DescribeConsumerGroupsOptions::default().timeout(timeout);
    let mut all = admin
        .describe_consumer_groups([group], options)
        .await
        .map_err(|e| e.to_string())?;
    match all.remove(group) {
        Some(Ok(described)) => Ok(described.members.into_iter().map(|m| m.member_id).collect()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the coordinator did not list the group".to_string()),
    }
}
