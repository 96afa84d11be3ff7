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
use crate::wire::dialect::NEST_ERR;
use crate::wire::record::headers;
use crate::wire::traceparent::{self, TraceParent};
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
        keep_answer_headers(&mut reply.headers);
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

/// Leaves only what the caller's answer is made of, as the payment call would have given
/// it: the worker's error in either dialect (`kreply_error`, `kafka_nest-err`) and the
/// trace context. A `traceparent` is kept as its 55 canonical bytes, or dropped when it
/// is no valid one, so what a kept reply holds beside its value stays small.
fn keep_answer_headers(kept: &mut Vec<(String, Option<Vec<u8>>)>) {
    kept.retain_mut(|(name, value)| match name.as_str() {
        headers::ERROR | NEST_ERR => true,
        traceparent::HEADER => match value.as_deref().and_then(TraceParent::parse) {
            Some(trace) => {
                *value = Some(trace.to_bytes().to_vec());
                true
            }
            None => false,
        },
        _ => false,
    });
    kept.shrink_to_fit();
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

    /// The trace context stays with a kept reply, so its lookup answers
    /// with it; canonical when valid (a later version is written as `00`), dropped when
    /// not. A NestJS error header stays too: it is what makes the reply an error.
    #[test]
    fn a_kept_reply_keeps_its_trace_and_either_dialects_error() {
        const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future";
        let nest_err = br#"{"status":"error","code":"declined"}"#.to_vec();
        let t0 = Instant::now();
        let mut late = store(10, 60);
        for (n, sent, kept) in [
            (1, Some(TRACE.as_bytes()), Some(TRACE)),
            (2, Some(later.as_bytes()), Some(TRACE)),
            (3, Some(&b"00-not-a-trace"[..]), None),
            (4, None, None),
        ] {
            let mut with_trace = reply("r");
            with_trace.headers.extend([
                (traceparent::HEADER.to_string(), sent.map(<[u8]>::to_vec)),
                (NEST_ERR.to_string(), Some(nest_err.clone())),
                ("kafka_nest-is-disposed".to_string(), Some(vec![0])),
            ]);
            late.give_up(id(n), t0);
            late.keep(id(n).as_bytes(), with_trace, t0).unwrap();
            let LateLookup::Answered(answered) = look(&mut late, n, t0) else {
                panic!("the reply was not kept");
            };
            let mut expected = vec![
                (headers::ERROR.to_string(), Some(b"declined".to_vec())),
                (
                    traceparent::HEADER.to_string(),
                    kept.map(|t| t.as_bytes().to_vec()),
                ),
                (NEST_ERR.to_string(), Some(nest_err.clone())),
            ];
            expected.retain(|(_, value)| value.is_some());
            assert_eq!(answered.headers, expected, "{sent:?}");
        }
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
