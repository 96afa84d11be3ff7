//! Keeps a client's topic metadata fresh, so a re-created topic is read under its new id,
//! and a partition whose leader moved is fetched from its new leader.
//!
//! krafka fetches by topic id and takes the id and each partition's leader from its
//! metadata cache, which it refreshes on its own only when a broker reports an error it
//! understands. After a topic is deleted and created again (or its broker restarts empty
//! and the topic is created again) tansu answers the old id with a response krafka
//! discards, so the client fetches nothing, with no error, until something refreshes the
//! cache: seen as a worker that rejoined its group and then read no request for minutes.
//! On Kafka, when a partition's leader dies, krafka's fetcher backs the partition off
//! after each connection error without asking for metadata again, so the partition is
//! never read from its new leader: seen on the Kafka-rules cluster as a reply partition
//! and a results partition that stayed silent after their leader moved to a live broker.
//! A refresh every few seconds costs one small request and bounds both to a few seconds.
//! Every long-lived reader's client has a keeper.

use krafka::Kafka;
use std::time::Duration;
use tokio::task::AbortHandle;

/// How old cached metadata may get; also how often the keeper refreshes it.
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(3);

/// A keeper's task: stops when dropped, so a client replaced by a new one (a reopened
/// reader) leaves no keeper behind.
#[must_use = "the keeper stops when dropped; keep it as long as the client is read"]
pub struct Keeper(AbortHandle);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Keeper {
    /// Keeps the keeper running for the rest of the process: for a client that lives as
    /// long.
    pub fn for_good(self) {
        std::mem::forget(self);
    }
}

/// Refreshes `topics`' metadata on `kafka` every [`METADATA_MAX_AGE`] on a task of its
/// own, until the [`Keeper`] is dropped. Failures (a broker away) are left to the next
/// round.
pub async fn keep_fresh(kafka: &Kafka, topics: Vec<String>) -> krafka::Result<Keeper> {
    // A group-less consumer reads nothing; it is only the public way to refresh the
    // client's shared metadata cache.
    let refresher = kafka.consumer_without_group().build().await?;
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(METADATA_MAX_AGE).await;
            for topic in &topics {
                if let Err(e) = refresher.fetch_metadata(Some(topic)).await {
                    log::debug!("refreshing the metadata of {topic}: {e}");
                }
            }
        }
    });
    Ok(Keeper(task.abort_handle()))
}
