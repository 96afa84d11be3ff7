//! Committing a settled batch: where each partition's committed offset goes, or where it
//! is read again from.
//!
//! The arithmetic is a pure function ([`plan`]), so its edge cases are unit tests; applying
//! it to the consumer is [`commit`].

use super::batch::Settled;
use super::metrics::WorkerMetrics;
use crate::kafka::whole_batches::{Reread, Span};
use krafka::consumer::{Consumer, OffsetAndMetadata, TopicPartition};
use std::collections::BTreeMap;

/// What a batch read, and what of it was settled in earlier readings.
pub(super) struct Read<'a> {
    /// Per partition, from the first offset of a produce batch to the end of one.
    pub(super) spans: &'a BTreeMap<i32, Span>,
    pub(super) reread: &'a mut Reread,
}

/// What to do with one partition after a batch.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Everything read there was settled: commit where the batch's reading ended.
    Commit { partition: i32, next: i64 },
    /// Something was not: read again from where the batch began there, skipping `handled`.
    ReadAgain {
        partition: i32,
        from: i64,
        handled: Vec<i64>,
    },
}

/// Commits each partition whose requests were all settled, at the end of what the batch
/// read there. A partition with an unsettled request is read again from where the batch
/// began there, skipping what was settled; nothing is committed for it. Seeking to the
/// unsettled request itself would make tansu skip it and the rest of its produce batch
/// (see `whole_batches`), and committing it would make the next owner do the same.
pub(super) async fn commit(
    consumer: &Consumer,
    topic: &str,
    settled: Settled,
    read: Read<'_>,
    metrics: &WorkerMetrics,
) {
    for step in plan(settled, read.spans) {
        match step {
            Step::ReadAgain {
                partition,
                from,
                handled,
            } => {
                read.reread.remember(partition, handled);
                let _ = consumer.seek(topic, partition, from).await;
            }
            Step::Commit { partition, next } => {
                read.reread.done(partition);
                let position = (
                    TopicPartition::new(topic, partition),
                    OffsetAndMetadata::new(next),
                );
                if let Err(e) = consumer.commit_offsets([position]).await {
                    metrics.commit_errors.inc();
                    log::warn!(
                        "worker: committing {topic}/{partition} at {next}: {e} (the next owner may repeat; the record answers)"
                    );
                }
            }
        }
    }
}

/// The steps for a batch that read `spans` and settled `settled`. A partition with no
/// span read nothing in this batch and is left alone.
fn plan(settled: Settled, spans: &BTreeMap<i32, Span>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (partition, offsets) in settled {
        let Some(span) = spans.get(&partition) else {
            continue;
        };
        if offsets.values().all(|ok| *ok) {
            steps.push(Step::Commit {
                partition,
                next: span.end,
            });
        } else {
            let handled = offsets.iter().filter(|(_, ok)| **ok).map(|(at, _)| *at);
            steps.push(Step::ReadAgain {
                partition,
                from: span.start,
                handled: handled.collect(),
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(partition: i32, offsets: &[(i64, bool)]) -> Settled {
        BTreeMap::from([(partition, offsets.iter().copied().collect())])
    }

    fn spans(partition: i32, start: i64, end: i64) -> BTreeMap<i32, Span> {
        BTreeMap::from([(partition, Span { start, end })])
    }

    /// The commit goes where the batch's reading ended, not past the last request
    /// settled: records dropped as repeats (or never handed out) are inside the span too.
    #[test]
    fn a_fully_settled_partition_commits_the_end_of_what_was_read() {
        let steps = plan(settled(2, &[(10, true), (11, true)]), &spans(2, 10, 15));
        assert_eq!(
            steps,
            [Step::Commit {
                partition: 2,
                next: 15
            }]
        );
    }

    /// Committing past an unsettled request would lose it for the next owner; seeking to
    /// it would make tansu skip the rest of its batch. So: from the batch's start, with
    /// what was settled remembered.
    #[test]
    fn an_unsettled_request_reads_the_batch_again_from_its_start() {
        let steps = plan(
            settled(0, &[(7, true), (8, false), (9, true)]),
            &spans(0, 5, 10),
        );
        assert_eq!(
            steps,
            [Step::ReadAgain {
                partition: 0,
                from: 5,
                handled: vec![7, 9]
            }]
        );
    }

    #[test]
    fn partitions_are_decided_one_by_one() {
        let mut batch = settled(0, &[(1, false)]);
        batch.extend(settled(1, &[(4, true)]));
        batch.extend(settled(3, &[(9, true)]));
        let mut read = spans(0, 0, 2);
        read.extend(spans(1, 3, 5));
        // Partition 3 has no span: it was not read in this batch, so nothing moves there.
        let steps = plan(batch, &read);
        assert_eq!(
            steps,
            [
                Step::ReadAgain {
                    partition: 0,
                    from: 0,
                    handled: vec![]
                },
                Step::Commit {
                    partition: 1,
                    next: 5
                },
            ]
        );
    }
}
