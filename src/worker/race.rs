//! Who may call the PG when two attempts of one payment overlap: the first `pending` in
//! the log wins.
//!
//! One worker per request partition is what a consumer group promises, but not what it
//! delivers: a broker that forms a new generation before the old members rejoin (tansu),
//! or a worker paused past its session (GC, network partition), leaves two workers
//! settling the same request, both finding nothing on record. The results partition of a
//! key orders their `pending` records totally, so each attempt, once it has read its own
//! `pending` back, knows what came before it and whether it is first. The loser never
//! calls the PG; it waits, bounded, for the winner's final record and answers with it.

use crate::worker::answer::Recorded;
use std::time::Duration;

/// What an attempt learns from the record that precedes its own `pending` in the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Race {
    /// Nothing unfinished before it: this attempt calls the PG.
    Won,
    /// An earlier attempt finished: its record is the answer.
    Settled(Recorded),
    /// An earlier attempt, started at `started_ms`, has not finished (yet): wait for it.
    Running { started_ms: i64 },
}

/// The race as decided by `before`, the latest record of the key before the `pending` of
/// `attempt`.
pub fn decide(before: Option<&Recorded>, attempt: &str) -> Race {
    match before {
        None | Some(Recorded::Retryable) => Race::Won,
        // Our own `pending` seen twice (a producer retry wrote it again): still first.
        Some(Recorded::Pending {
            attempt: earlier, ..
        }) if earlier == attempt => Race::Won,
        Some(Recorded::Pending { started_ms, .. }) => Race::Running {
            started_ms: *started_ms,
        },
        Some(settled @ Recorded::Final { .. }) => Race::Settled(settled.clone()),
    }
}

/// How long to wait now for an attempt started at `started_ms` to finish, when an attempt
/// may take up to `limit`: an attempt older than `limit` is over (finished unrecorded, or
/// its worker died), so nothing more is worth waiting for. A start in the future (another
/// host's clock) counts as now.
pub fn wait_left(started_ms: i64, now_ms: i64, limit: Duration) -> Duration {
    let limit_ms = limit.as_millis() as i64;
    let age = now_ms.saturating_sub(started_ms).clamp(0, limit_ms);
    Duration::from_millis((limit_ms - age) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pending(attempt: &str) -> Recorded {
        Recorded::Pending {
            attempt: attempt.into(),
            started_ms: 7,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn the_first_attempt_on_record_wins() {
        assert_eq!(decide(None, "a"), Race::Won);
    }

    #[test]
    fn an_attempt_after_one_that_failed_without_charging_wins() {
        assert_eq!(decide(Some(&Recorded::Retryable), "b"), Race::Won);
    }

    #[test]
    fn an_attempt_behind_its_own_repeated_pending_wins() {
        assert_eq!(decide(Some(&pending("a")), "a"), Race::Won);
    }

    #[test]
    fn an_attempt_behind_another_unfinished_one_waits_for_it() {
        assert_eq!(
            decide(Some(&pending("a")), "b"),
            Race::Running { started_ms: 7 }
        );
    }

    #[test]
    fn an_attempt_behind_a_pending_of_an_old_version_waits_for_it() {
        let old: Recorded = serde_json::from_str(r#"{"state":"pending"}"#).unwrap();
        assert_eq!(decide(Some(&old), "b"), Race::Running { started_ms: 0 });
    }

    #[test]
    fn an_attempt_behind_a_finished_one_takes_its_answer() {
        let settled = Recorded::Final {
            error: None,
            reply: json!({"status": "APPROVED"}),
            fingerprint: String::new(),
        };
        assert_eq!(decide(Some(&settled), "b"), Race::Settled(settled.clone()));
    }

    #[test]
    fn the_wait_ends_when_the_attempt_could_no_longer_be_running() {
        let limit = Duration::from_secs(8);
        assert_eq!(wait_left(1_000, 1_000, limit), limit);
        assert_eq!(wait_left(1_000, 4_000, limit), Duration::from_secs(5));
        assert_eq!(wait_left(1_000, 60_000, limit), Duration::ZERO);
        assert_eq!(wait_left(0, 60_000, limit), Duration::ZERO);
        assert_eq!(wait_left(9_000, 1_000, limit), limit);
    }
}
