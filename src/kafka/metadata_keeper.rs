//! Keeps a client's topic metadata fresh, so a re-created topic is read under its new id.
//!
//! krafka fetches by topic id and takes the id from its metadata cache, which it refreshes
//! on its own only when a broker reports an error it understands. After a topic is deleted
//! and created again (or its broker restarts empty and the topic is created again) tansu
//! answers the old id with a response krafka discards, so the client fetches nothing, with
//! no error, until something refreshes the cache: seen as a worker that rejoined its group
//! and then read no request for minutes. A refresh every few seconds costs one small
//! request and bounds that to a few seconds.

use krafka::Kafka;
use std::time::Duration;

/// How old cached metadata may get; also how often the keeper refreshes it.
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(3);

/// Refreshes `topics`' metadata on `kafka` every [`METADATA_MAX_AGE`], forever, on a task
/// of its own. Failures (a broker away) are left to the next round.
pub async fn keep_fresh(kafka: &Kafka, topics: Vec<String>) -> krafka::Result<()> {
    // A group-less consumer reads nothing; it is only the public way to refresh the
    // client's shared metadata cache.
    let refresher = kafka.consumer_without_group().build().await?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(METADATA_MAX_AGE).await;
            for topic in &topics {
                if let Err(e) = refresher.fetch_metadata(Some(topic)).await {
                    log::debug!("refreshing the metadata of {topic}: {e}");
                }
            }
        }
    });
    Ok(())
}
