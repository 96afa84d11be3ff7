//! Late replies: the answers that came after their caller was told "outcome unknown".
//!
//! A caller that got a 504 (or a 503 whose send may have been written) cannot know whether
//! the payment happened. The gateway remembers every id it gave up on, and keeps the reply
//! if one comes later, so `GET /v1/requests/{id}` can tell the caller what the worker said.
//!
//! Only ids this host gave up on are remembered, so a reply nobody asked for (another
//! host's, a duplicate, a forged id) is never stored. Memory is bounded twice: by count
//! (the oldest id is evicted first) and by age, measured from the moment the caller was
//! given up on, so an id is remembered for at most `max_age` whether or not its reply came.
//! One queue in give-up order serves both bounds, so each costs O(1) per id.
//!
//! Runtime-free and clock-free: every call takes `now`, so tests control time.

use crate::gateway::registry::Reply;
use crate::wire::correlation_id::CorrelationId;
use crate::wire::record::headers;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How much the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateLimits {
    /// Ids remembered at once, answered or not; 0 keeps nothing.
    pub max_count: usize,
    /// How long after giving up an id (and its reply) is remembered.
    pub max_age: Duration,
}

impl Default for LateLimits {
    fn default() -> Self {
        LateLimits {
            max_count: 50_000,
            max_age: Duration::from_secs(600),
        }
    }
}

/// What the store knows about one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateLookup {
    /// The reply that came after the caller gave up.
    Answered(Reply),
    /// Given up on; no reply yet.
    Awaited,
    /// Never given up on here, or forgotten (expired or evicted).
    Unknown,
}

/// Counters and sizes, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LateStats {
    /// Replies stored now.
    pub stored: usize,
    /// Ids given up on whose reply has not come.
    pub awaited: usize,
    /// Replies kept since startup.
    pub kept: u64,
    /// Lookups answered with a kept reply since startup.
    pub served: u64,
    /// Kept replies dropped because they grew older than `max_age`.
    pub expired: u64,
    /// Kept replies dropped to stay within `max_count`.
    pub evicted: u64,
}

/// The store; the registry holds it behind its lock.
#[derive(Debug)]
pub struct LateReplies {
    limits: LateLimits,
    entries: HashMap<CorrelationId, Option<Reply>>,
    /// Ids in give-up order, with when; the front is the oldest.
    order: VecDeque<(Instant, CorrelationId)>,
    stats: LateStats,
}

impl LateReplies {
    pub fn new(limits: LateLimits) -> Self {
        LateReplies {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            stats: LateStats::default(),
        }
    }

    /// Remembers that the caller waiting for `id` was given up on at `now`.
    pub fn give_up(&mut self, id: CorrelationId, now: Instant) {
        self.expire(now);
        if self.limits.max_count == 0 {
            return;
        }
        while self.entries.len() >= self.limits.max_count {
            self.drop_oldest(Dropped::Evicted);
        }
        // An id is given up on once; a repeat (a bug) must not wipe a kept reply.
        if let Entry::Vacant(vacant) = self.entries.entry(id.clone()) {
            vacant.insert(None);
            self.order.push_back((now, id));
        }
    }

    /// Keeps `reply` if `id` was given up on and not yet answered; otherwise hands it back.
    pub fn keep(&mut self, id: &[u8], mut reply: Reply, now: Instant) -> Result<(), Reply> {
        self.expire(now);
        let Some(slot @ None) = self.entries.get_mut(id) else {
            return Err(reply);
        };
        // Only what the caller's answer is made of: the value and the error code.
        reply.headers.retain(|(name, _)| name == headers::ERROR);
        reply.headers.shrink_to_fit();
        if let Some(value) = &mut reply.value {
            value.shrink_to_fit();
        }
        *slot = Some(reply);
        self.stats.kept += 1;
        self.stats.stored += 1;
        Ok(())
    }

    /// What is known about `id` at `now`; a kept reply stays for later lookups too.
    pub fn lookup(&mut self, id: &[u8], now: Instant) -> LateLookup {
        self.expire(now);
        match self.entries.get(id) {
            Some(Some(reply)) => {
                self.stats.served += 1;
                LateLookup::Answered(reply.clone())
            }
            Some(None) => LateLookup::Awaited,
            None => LateLookup::Unknown,
        }
    }

    /// The counters, after forgetting what is too old at `now`.
    pub fn stats(&mut self, now: Instant) -> LateStats {
        self.expire(now);
        LateStats {
            awaited: self.entries.len() - self.stats.stored,
            ..self.stats
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((since, _)) = self.order.front() {
            if now.saturating_duration_since(*since) < self.limits.max_age {
                return;
            }
            self.drop_oldest(Dropped::Expired);
        }
    }

    fn drop_oldest(&mut self, why: Dropped) {
        let Some((_, id)) = self.order.pop_front() else {
            return;
        };
        if let Some(Some(_)) = self.entries.remove(&id) {
            self.stats.stored -= 1;
            match why {
                Dropped::Expired => self.stats.expired += 1,
                Dropped::Evicted => self.stats.evicted += 1,
            }
        }
    }
}

enum Dropped {
    Expired,
    Evicted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(value: &str) -> Reply {
        Reply {
            value: Some(value.as_bytes().to_vec()),
            headers: vec![
                ("kafka_correlationId".to_string(), Some(vec![1; 16])),
                (headers::ERROR.to_string(), Some(b"declined".to_vec())),
            ],
            partition: 1,
            offset: 9,
        }
    }

    fn store(max_count: usize, max_age_s: u64) -> LateReplies {
        LateReplies::new(LateLimits {
            max_count,
            max_age: Duration::from_secs(max_age_s),
        })
    }

    fn id(n: u8) -> CorrelationId {
        CorrelationId::from_wire(&[n; 16])
    }

    fn look(late: &mut LateReplies, n: u8, now: Instant) -> LateLookup {
        late.lookup(id(n).as_bytes(), now)
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_reply_to_an_id_given_up_on_is_kept_with_only_its_error_header() {
        let t0 = Instant::now();
        let mut late = store(10, 60);
        late.give_up(id(1), t0);
        assert_eq!(look(&mut late, 1, t0), LateLookup::Awaited);
        late.keep(id(1).as_bytes(), reply("r"), at(t0, 1)).unwrap();
        let LateLookup::Answered(kept) = look(&mut late, 1, at(t0, 2)) else {
            panic!("the reply was not kept");
        };
        assert_eq!(kept.value.as_deref(), Some(&b"r"[..]));
        assert_eq!(
            kept.headers,
            [(headers::ERROR.to_string(), Some(b"declined".to_vec()))]
        );
        // Served again on a second lookup: a caller may ask twice.
        assert!(matches!(
            look(&mut late, 1, at(t0, 3)),
            LateLookup::Answered(_)
        ));
        let stats = late.stats(at(t0, 3));
        assert_eq!((stats.kept, stats.served, stats.stored), (1, 2, 1));
    }

    #[test]
    fn a_reply_to_an_id_never_given_up_on_is_handed_back() {
        let t0 = Instant::now();
        let mut late = store(10, 60);
        assert_eq!(late.keep(id(2).as_bytes(), reply("x"), t0), Err(reply("x")));
        assert_eq!(look(&mut late, 2, t0), LateLookup::Unknown);
        assert_eq!(late.stats(t0), LateStats::default());
    }

    #[test]
    fn only_the_first_reply_is_kept() {
        let t0 = Instant::now();
        let mut late = store(10, 60);
        late.give_up(id(1), t0);
        late.keep(id(1).as_bytes(), reply("first"), t0).unwrap();
        assert!(late.keep(id(1).as_bytes(), reply("second"), t0).is_err());
        let LateLookup::Answered(kept) = look(&mut late, 1, t0) else {
            panic!("lost");
        };
        assert_eq!(kept.value.as_deref(), Some(&b"first"[..]));
    }

    #[test]
    fn ids_and_replies_expire_max_age_after_the_give_up() {
        let t0 = Instant::now();
        let mut late = store(10, 60);
        late.give_up(id(1), t0);
        late.give_up(id(2), at(t0, 30));
        late.keep(id(1).as_bytes(), reply("r"), at(t0, 59)).unwrap();
        assert!(matches!(
            look(&mut late, 1, at(t0, 59)),
            LateLookup::Answered(_)
        ));
        assert_eq!(look(&mut late, 1, at(t0, 60)), LateLookup::Unknown);
        assert_eq!(look(&mut late, 2, at(t0, 60)), LateLookup::Awaited);
        // A reply to an expired id is not kept.
        assert!(late.keep(id(1).as_bytes(), reply("r"), at(t0, 61)).is_err());
        assert_eq!(look(&mut late, 2, at(t0, 90)), LateLookup::Unknown);
        let stats = late.stats(at(t0, 90));
        assert_eq!((stats.expired, stats.evicted, stats.awaited), (1, 0, 0));
    }

    #[test]
    fn the_oldest_id_is_evicted_first_when_full() {
        let t0 = Instant::now();
        let mut late = store(2, 60);
        late.give_up(id(1), t0);
        late.keep(id(1).as_bytes(), reply("1"), t0).unwrap();
        late.give_up(id(2), at(t0, 1));
        late.give_up(id(3), at(t0, 2));
        assert_eq!(look(&mut late, 1, at(t0, 2)), LateLookup::Unknown);
        assert_eq!(look(&mut late, 2, at(t0, 2)), LateLookup::Awaited);
        assert_eq!(look(&mut late, 3, at(t0, 2)), LateLookup::Awaited);
        late.give_up(id(4), at(t0, 3));
        assert_eq!(look(&mut late, 2, at(t0, 3)), LateLookup::Unknown);
        let stats = late.stats(at(t0, 3));
        assert_eq!((stats.evicted, stats.awaited, stats.stored), (1, 2, 0));
    }

    #[test]
    fn a_zero_count_keeps_nothing() {
        let t0 = Instant::now();
        let mut late = store(0, 60);
        late.give_up(id(1), t0);
        assert!(late.keep(id(1).as_bytes(), reply("r"), t0).is_err());
        assert_eq!(look(&mut late, 1, t0), LateLookup::Unknown);
    }
}
