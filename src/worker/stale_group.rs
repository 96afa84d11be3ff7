//! Noticing that the group left this worker a stale assignment, so it rejoins as a new
//! member and the partitions of a crashed worker are read again.
//!
//! Why: tansu 0.6.0 does not rebalance after a member's session expires, and no group
//! protocol error says so:
//! - a live member's heartbeat evicts the dead member, but the group stays formed at the
//!   same generation; the survivor is told to rejoin once, and its rejoin (same member,
//!   same subscription) hands back its old assignment, so the dead member's partitions
//!   are read by nobody;
//! - a worker restarted while its dead predecessor still leads the group syncs as a
//!   follower; when the leader is evicted just before that sync, tansu takes the
//!   follower's empty assignment list as the leader's, and the group forms with nothing
//!   assigned.
//!
//! What does show is the member list (DescribeGroups): this worker is the group's only
//! member but does not own every partition, or a member has gone while the generation
//! stayed the same across a completed rebalance round. A worker that sees either leaves
//! the group and joins again as a new member: the leave makes tansu form a new
//! generation in which the assignment is computed again. Only the lowest member id
//! rejoins, so that survivors do not all leave at once.

use crate::worker::member_list::MemberList;
use krafka::consumer::{Consumer, ConsumerRebalanceListener, TopicPartition};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The consumer's rebalance rounds, as its rebalance listener sees them: a round in
/// progress must finish before the assignment it produced can be judged.
#[derive(Default)]
pub struct Rounds {
    /// Partitions were revoked and not yet assigned again.
    open: AtomicBool,
    /// Rounds that ended with an assignment applied.
    completed: AtomicU64,
}

impl ConsumerRebalanceListener for Rounds {
    async fn on_partitions_assigned(&self, _partitions: &[TopicPartition]) {
        self.open.store(false, Ordering::Release);
        self.completed.fetch_add(1, Ordering::AcqRel);
    }

    async fn on_partitions_revoked(&self, _partitions: &[TopicPartition]) {
        self.open.store(true, Ordering::Release);
    }

    async fn on_partitions_lost(&self, _partitions: &[TopicPartition]) {
        self.open.store(false, Ordering::Release);
    }
}

/// How often the member list is asked for and judged: a quarter of a heartbeat interval,
/// so a stale group is acted on soon after the dead member's session ends.
pub fn check_interval(session: Duration) -> Duration {
    (session / 12).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// Judges this worker's assignment against the group's member list every few heartbeats'
/// worth of time.
pub struct StaleGroup {
    /// `None` on brokers that keep Kafka's group rules: nothing is judged.
    members: Option<MemberList>,
    every: Duration,
    next_check: Instant,
    rounds: Arc<Rounds>,
    judge: Judge,
}

impl StaleGroup {
    /// `partitions`: how many the subscribed topic has; `session`: the group session;
    /// `members`: the member list to judge by, only where the broker needs watching
    /// ([`BrokerCompat::watches_stale_group`](crate::kafka::BrokerCompat::watches_stale_group)).
    pub fn new(
        members: Option<MemberList>,
        partitions: usize,
        session: Duration,
        rounds: Arc<Rounds>,
    ) -> StaleGroup {
        let every = check_interval(session);
        StaleGroup {
            members,
            every,
            next_check: Instant::now() + every,
            rounds,
            judge: Judge::new(partitions, session),
        }
    }

    /// Why this worker should leave and rejoin the group now, if it should. `owned`:
    /// how many partitions it holds. Cheap between checks.
    pub async fn check(&mut self, consumer: &Consumer, owned: usize) -> Option<String> {
        if self.members.is_none() || Instant::now() < self.next_check {
            return None;
        }
        self.next_check = Instant::now() + self.every;
        let rounds = self.rounds.completed.load(Ordering::Acquire);
        let me = consumer.group_metadata().await;
        // Not joined yet, or a round is under way: nothing to judge.
        let Some(me) =
            me.filter(|me| me.generation_id() >= 0 && !self.rounds.open.load(Ordering::Acquire))
        else {
            return self.judge.verdict(None, Instant::now());
        };
        // Only an answer newer than two checks counts: an old list would hide a change.
        let members = self.members.as_ref()?.fresh(self.every * 2)?;
        let seen = Seen {
            member: me.member_id(),
            generation: me.generation_id(),
            members: &members,
            owned,
            rounds,
        };
        self.judge.verdict(Some(seen), Instant::now())
    }

    /// Whether the group handed this worker an assignment (maybe empty) at least once.
    pub fn has_joined(&self) -> bool {
        self.rounds.completed.load(Ordering::Acquire) > 0
    }

    /// Forgets what was seen: after a rejoin, the group is judged afresh.
    pub fn rejoined(&mut self) {
        self.judge = Judge::new(self.judge.partitions, self.judge.session);
    }
}

/// One check: this member, its generation, and what the coordinator lists.
struct Seen<'a> {
    member: &'a str,
    generation: i32,
    members: &'a BTreeSet<String>,
    /// Partitions this worker owns.
    owned: usize,
    /// Rebalance rounds completed so far.
    rounds: u64,
}

/// Decides, check by check, whether the assignment is stale. No I/O, so it is tested
/// on its own.
struct Judge {
    partitions: usize,
    session: Duration,
    /// The members listed when this worker first looked at its current generation.
    snapshot: Option<Snapshot>,
    /// A finding seen on the previous check, not yet acted on.
    suspicion: Option<Suspicion>,
}

struct Snapshot {
    member: String,
    generation: i32,
    members: BTreeSet<String>,
    rounds: u64,
}

struct Suspicion {
    since: Instant,
    rounds: u64,
}

/// Why the assignment looks stale.
struct Finding {
    reason: String,
    /// This worker is the one to rejoin (the others wait for it).
    elected: bool,
    /// Stale for sure, not possibly the middle of a rebalance.
    ripe: bool,
}

impl Judge {
    fn new(partitions: usize, session: Duration) -> Judge {
        Judge {
            partitions,
            session,
            snapshot: None,
            suspicion: None,
        }
    }

    /// The reason to rejoin now, if any; `seen` is `None` when there is nothing to judge.
    fn verdict(&mut self, seen: Option<Seen<'_>>, now: Instant) -> Option<String> {
        let Some(seen) = seen else {
            self.suspicion = None;
            return None;
        };
        let Some(finding) = self.finding(&seen) else {
            self.suspicion = None;
            return None;
        };
        // The same finding twice in a row, with no round finished in between.
        let Some(suspicion) = self.suspicion.as_ref().filter(|s| s.rounds == seen.rounds) else {
            self.suspicion = Some(Suspicion {
                since: now,
                rounds: seen.rounds,
            });
            return None;
        };
        let lasted = now.duration_since(suspicion.since);
        // A coordinator that works asks every member to rejoin within a heartbeat
        // interval (a third of the session) of a member going.
        let ripe = finding.ripe || lasted >= self.session / 2;
        // A worker that is not the lowest member id gives that one time to act first.
        let turn = finding.elected || lasted >= 2 * self.session;
        (ripe && turn).then_some(finding.reason)
    }

    /// What looks stale, if anything.
    fn finding(&mut self, seen: &Seen<'_>) -> Option<Finding> {
        let alone = seen.members.len() == 1 && seen.members.contains(seen.member);
        if alone && seen.owned < self.partitions {
            return Some(Finding {
                reason: format!(
                    "this worker is the group's only member but owns {} of its {} partitions",
                    seen.owned, self.partitions
                ),
                elected: true,
                // Not at once: when another member leaves, a working coordinator tells
                // this one to rejoin within a heartbeat interval, and a rejoin of our own
                // before that leaves tansu with our old id as a leader that never syncs.
                ripe: false,
            });
        }
        let snapshot = match &self.snapshot {
            Some(s) if s.member == seen.member && s.generation == seen.generation => s,
            _ => {
                self.snapshot = Some(Snapshot {
                    member: seen.member.to_string(),
                    generation: seen.generation,
                    members: seen.members.clone(),
                    rounds: seen.rounds,
                });
                return None;
            }
        };
        let gone: Vec<&str> = snapshot
            .members
            .difference(seen.members)
            .map(String::as_str)
            .collect();
        if gone.is_empty() {
            return None;
        }
        Some(Finding {
            reason: format!(
                "member {} left the group at generation {} but no new generation formed",
                gone.join(", "),
                snapshot.generation
            ),
            elected: seen.members.first().is_some_and(|m| m == seen.member),
            // A coordinator that evicts a member starts a new generation: a round that
            // ended at the old one shows that it did not.
            ripe: seen.rounds > snapshot.rounds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(6);

    fn members(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    /// Judges `checks` one second apart: (member, generation, members, owned, rounds).
    fn verdicts(checks: &[(&str, i32, &[&str], usize, u64)]) -> Vec<Option<String>> {
        let mut judge = Judge::new(3, SESSION);
        let start = Instant::now();
        checks
            .iter()
            .enumerate()
            .map(|(i, (member, generation, listed, owned, rounds))| {
                let listed = members(listed);
                let seen = Seen {
                    member,
                    generation: *generation,
                    members: &listed,
                    owned: *owned,
                    rounds: *rounds,
                };
                judge.verdict(Some(seen), start + Duration::from_secs(i as u64))
            })
            .collect()
    }

    #[test]
    fn the_only_member_without_every_partition_rejoins_after_half_a_session() {
        let alone = ("c", 4, &["c"][..], 0, 1);
        let v = verdicts(&[alone, alone, alone, alone]);
        // Looks at 0, 1 and 2 s: the coordinator may still announce a round (a heartbeat
        // interval is 2 s); at 3 s, half the 6 s session, the worker rejoins.
        assert_eq!(v[..3], [None, None, None]);
        assert!(
            v[3].as_deref().unwrap().contains("owns 0 of its 3"),
            "{v:?}"
        );
    }

    #[test]
    fn the_only_member_with_every_partition_is_fine() {
        let v = verdicts(&[("c", 4, &["c"], 3, 1), ("c", 4, &["c"], 3, 1)]);
        assert_eq!(v, [None, None]);
    }

    #[test]
    fn a_round_that_completes_between_two_looks_starts_the_judging_over() {
        let v = verdicts(&[
            ("c", 4, &["c"], 0, 1),
            ("c", 4, &["c"], 0, 2),
            ("c", 4, &["c"], 3, 3),
        ]);
        assert_eq!(v, [None, None, None]);
    }

    #[test]
    fn a_member_gone_with_the_generation_kept_across_a_round_makes_the_lowest_rejoin() {
        let before: &[&str] = &["a", "b", "c"];
        let after: &[&str] = &["b", "c"];
        let lowest = verdicts(&[
            ("b", 2, before, 1, 1),
            ("b", 2, after, 1, 2),
            ("b", 2, after, 1, 2),
        ]);
        assert!(
            lowest[2].as_deref().unwrap().contains("member a left"),
            "{lowest:?}"
        );
        let other = verdicts(&[
            ("c", 2, before, 1, 1),
            ("c", 2, after, 1, 2),
            ("c", 2, after, 1, 2),
        ]);
        assert_eq!(other, [None, None, None]);
    }

    #[test]
    fn a_member_gone_without_a_round_waits_half_a_session_for_the_coordinator() {
        let before: &[&str] = &["a", "b", "c"];
        let after: &[&str] = &["b", "c"];
        let mut checks = vec![("b", 2, before, 1, 1)];
        checks.extend(std::iter::repeat_n(("b", 2, after, 1, 1), 5));
        let v = verdicts(&checks);
        // Suspected at second 1; half the session (3 s) later, at second 4.
        assert_eq!(v[..4], [None, None, None, None]);
        assert!(v[4].is_some(), "{v:?}");
    }

    #[test]
    fn a_new_generation_after_a_member_left_is_a_working_rebalance() {
        let v = verdicts(&[
            ("b", 2, &["a", "b"], 1, 1),
            ("b", 3, &["b"], 3, 2),
            ("b", 3, &["b"], 3, 2),
        ]);
        assert_eq!(v, [None, None, None]);
    }
}
