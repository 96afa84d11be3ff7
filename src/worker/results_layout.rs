//! The results topic keeps the partition count it was first used with.
//!
//! The race that keeps a payment from being charged twice is decided inside one results
//! partition: every record of an idempotency key lands on the partition its key hashes to,
//! and the first `pending` there wins (`race.rs`). Adding partitions to the topic moves
//! keys: an attempt after the change writes its `pending` to another partition than an
//! attempt before it, each finds nothing before its own, and both call the PG. Kafka lets
//! an operator add partitions at any time, so the worker records the count the records
//! were written under, in a layout record of the topic itself (compacted: the newest is
//! kept), and refuses to start on a topic whose count changed since.

use super::results::ResultsStore;
use crate::error::StartupError;

/// The layout record's key. No idempotency key can equal it: keys are read as UTF-8, and
/// 0xFF never occurs in UTF-8.
pub(super) const KEY: &[u8] = b"\xffkreply-layout";

/// The layout record for a topic of `partitions` partitions: key and value.
pub(super) fn record(partitions: usize) -> (Vec<u8>, Vec<u8>) {
    (
        KEY.to_vec(),
        format!("partitions={partitions}").into_bytes(),
    )
}

/// The partition count a layout record's value names.
pub(super) fn parse(value: Option<&[u8]>) -> Option<usize> {
    std::str::from_utf8(value?)
        .ok()?
        .strip_prefix("partitions=")?
        .parse()
        .ok()
}

/// Checks the topic's partition count against its layout record, writing the record on
/// first use; the one sentence when the count changed.
pub(super) async fn check(results: &ResultsStore, topic: &str) -> Result<(), StartupError> {
    let now = results.partition_count();
    match results.recorded_layout() {
        Some(then) if then == now => Ok(()),
        Some(then) => Err(changed(topic, then, now)),
        None => results.record_layout().await.map_err(|e| {
            StartupError::new(format!(
                "cannot write the layout record of the results topic \"{topic}\": {e}"
            ))
        }),
    }
}

fn changed(topic: &str, then: usize, now: usize) -> StartupError {
    StartupError::new(format!(
        "the results topic \"{topic}\" has {now} partitions, but its payment records were written when it had {then}: keys moved between partitions, so two attempts of one payment could each be the first on its own partition and both charge; give \"worker.results_topic\" a new topic with {then} partitions (the old one's answers are then forgotten) or put the old count back"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_record_names_its_partition_count() {
        let (key, value) = record(12);
        assert_eq!(key, KEY);
        assert_eq!(parse(Some(&value)), Some(12));
        assert_eq!(parse(Some(b"partitions=x")), None);
        assert_eq!(parse(None), None);
    }

    #[test]
    fn the_sentence_names_both_counts_and_the_setting() {
        let why = changed("payment_results", 3, 6).to_string();
        for part in [
            "\"payment_results\" has 6",
            "when it had 3",
            "worker.results_topic",
        ] {
            assert!(why.contains(part), "{why}");
        }
    }
}
