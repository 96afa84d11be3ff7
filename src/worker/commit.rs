//! Committing where each partition's settled prefix ends (`settled_prefix.rs` decides
//! where; this applies it to the consumer).

use super::metrics::WorkerMetrics;
use krafka::consumer::{Consumer, OffsetAndMetadata, TopicPartition};

/// Commits each `(partition, next offset)`. A failed commit is counted and logged: the
/// next owner then reads those requests again, and the results store answers them.
pub(super) async fn commit(
    consumer: &Consumer,
    topic: &str,
    positions: &[(i32, i64)],
    metrics: &WorkerMetrics,
) {
    if positions.is_empty() {
        return;
    }
    let offsets = positions.iter().map(|&(partition, next)| {
        (
            TopicPartition::new(topic, partition),
            OffsetAndMetadata::new(next),
        )
    });
    if let Err(e) = consumer.commit_offsets(offsets).await {
        metrics.commit_errors.inc();
        log::warn!(
            "worker: committing {topic} at {positions:?} (partition, offset): {e} (the next owner may repeat; the record answers)"
        );
    }
}
