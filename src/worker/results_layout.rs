//! Each results partition says how its payment records were placed.
//!
//! The race that keeps a payment from being charged twice is decided inside one results
//! partition: every record of a payment lands on the results partition numbered like its
//! request's partition ([`Slot`](super::slot::Slot)), and the first `pending` there wins
//! (`race.rs`). Adding partitions moves orders: an attempt after the change writes its
//! `pending` to another partition than an attempt before it, each finds nothing before
//! its own, and both call the PG. Kafka lets an operator add partitions at any time, so
//! each results partition carries a layout record naming the partition count and the
//! placement its records were written under (compacted: the newest is kept), and a worker
//! given a partition whose record disagrees stops rather than serve it.
//!
//! Topics of kreply before 0.2 placed records by the idempotency key's hash and wrote
//! one layout record, `partitions=N`, to partition 0 alone: such a partition is refused
//! too (its records are in other places than a payment now looks).

use crate::error::StartupError;

/// The layout record's key. No payment's record key can equal it: those are JSON arrays
/// (`slot.rs`), and 0xFF never occurs in UTF-8.
pub(super) const KEY: &[u8] = b"\xffkreply-layout";

/// The placement this version writes: by the request's partition.
const PLACEMENT: &str = "request-partition";

/// What a layout record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub partitions: usize,
    /// `None` for a record of a version that placed records by key hash.
    pub placement: Option<String>,
}

/// What a worker given a results partition does about its layout.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The partition was written as this worker writes it.
    Serve,
    /// No layout record yet: write one, then serve.
    Write,
    /// Written under another count or placement: stop with this sentence.
    Refuse(StartupError),
}

/// The layout record for a topic of `partitions` partitions: key and value.
pub(super) fn record(partitions: usize) -> (Vec<u8>, Vec<u8>) {
    (
        KEY.to_vec(),
        format!("partitions={partitions} placement={PLACEMENT}").into_bytes(),
    )
}

/// What a layout record's value says; `None` when it is not one.
pub(super) fn parse(value: Option<&[u8]>) -> Option<Layout> {
    let text = std::str::from_utf8(value?).ok()?;
    let mut words = text.split(' ');
    let partitions = words.next()?.strip_prefix("partitions=")?.parse().ok()?;
    let placement = words
        .find_map(|word| word.strip_prefix("placement="))
        .map(str::to_string);
    Some(Layout {
        partitions,
        placement,
    })
}

/// What to do about partition `partition` of `topic`, now of `now` partitions, whose
/// newest layout record is `recorded`.
pub(super) fn verdict(
    recorded: Option<&Layout>,
    topic: &str,
    partition: i32,
    now: usize,
) -> Verdict {
    let Some(then) = recorded else {
        return Verdict::Write;
    };
    if then.placement.as_deref() != Some(PLACEMENT) {
        return Verdict::Refuse(old_placement(topic, partition));
    }
    if then.partitions != now {
        return Verdict::Refuse(changed(topic, partition, then.partitions, now));
    }
    Verdict::Serve
}

fn changed(topic: &str, partition: i32, then: usize, now: usize) -> StartupError {
    StartupError::new(format!(
        "the results topic \"{topic}\" has {now} partitions, but the payment records of its partition {partition} were written when it had {then}: orders moved between partitions, so two attempts of one payment could each be the first on its own partition and both charge; give \"worker.results_topic\" a new topic with as many partitions as the request topic (the old one's answers are then forgotten) or put the old count back"
    ))
}

fn old_placement(topic: &str, partition: i32) -> StartupError {
    StartupError::new(format!(
        "partition {partition} of the results topic \"{topic}\" was written by a kreply before 0.2, which placed payment records by their key's hash; this version places them with their request's partition and would not find them: give \"worker.results_topic\" a new topic (docs/operations.md, \"Upgrading to 0.2\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_record_names_its_partition_count_and_placement() {
        let (key, value) = record(12);
        assert_eq!(key, KEY);
        let layout = parse(Some(&value)).unwrap();
        assert_eq!(layout.partitions, 12);
        assert!(matches!(verdict(Some(&layout), "t", 0, 12), Verdict::Serve));
        assert_eq!(parse(Some(b"partitions=x")), None);
        assert_eq!(parse(None), None);
    }

    #[test]
    fn a_partition_without_a_record_gets_one() {
        assert!(matches!(verdict(None, "t", 0, 3), Verdict::Write));
    }

    #[test]
    fn another_count_or_the_old_placement_is_refused_naming_the_fix() {
        let (_, value) = record(3);
        let three = parse(Some(&value)).unwrap();
        let Verdict::Refuse(why) = verdict(Some(&three), "payment_results", 1, 6) else {
            panic!("a changed count must be refused");
        };
        let why = why.to_string();
        for part in [
            "\"payment_results\" has 6",
            "partition 1",
            "when it had 3",
            "worker.results_topic",
        ] {
            assert!(why.contains(part), "{why}");
        }
        let old = parse(Some(b"partitions=3")).unwrap();
        let Verdict::Refuse(why) = verdict(Some(&old), "payment_results", 0, 3) else {
            panic!("the old placement must be refused");
        };
        assert!(why.to_string().contains("before 0.2"), "{why}");
    }
}
