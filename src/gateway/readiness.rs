//! Whether the gateway can answer payments right now, and whether it wants new ones.
//!
//! One state answers both `/readyz` and the payment route, so a load balancer is never
//! told "ready" by a gateway that refuses payments, or the other way round.
//!
//! The reply consumer reports every poll as good (positioned, and every partition fetched
//! recently) or bad. A single poll says little: right after a broker restart good and bad
//! polls alternate, and a state that followed each poll would flap, which keeps a load
//! balancer sending traffic to a gateway that refuses half of it. So the state has
//! hysteresis: it turns not-ready only after `unready_after` bad polls in a row, and ready
//! again only after `ready_after` good polls in a row. A signal that keeps alternating
//! leaves the state where it is.
//!
//! A graceful stop sets `stopping` first, so `/readyz` turns 503 and load balancers move
//! away while the payments already accepted still complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How many polls in a row it takes to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Bad polls in a row that make a ready gateway not ready.
    pub unready_after: u32,
    /// Good polls in a row that make a not-ready gateway ready again.
    pub ready_after: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            unready_after: 3,
            ready_after: 5,
        }
    }
}

/// A change of state, for the one log line each change deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Lost,
    Regained,
}

#[derive(Clone, Default)]
pub struct Readiness(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// The state both `/readyz` and the payment route read; written only under `streak`.
    reads_replies: AtomicBool,
    stopping: AtomicBool,
    streak: Mutex<Streak>,
}

#[derive(Default)]
struct Streak {
    hysteresis: Hysteresis,
    /// Polls in a row that disagree with the current state.
    against: u32,
}

impl Readiness {
    pub fn new(hysteresis: Hysteresis) -> Readiness {
        let readiness = Readiness::default();
        readiness.streak().hysteresis = hysteresis;
        readiness
    }

    /// The reply consumer is positioned at startup: ready at once, no streak needed.
    pub fn positioned(&self) {
        self.streak().against = 0;
        self.0.reads_replies.store(true, Ordering::Release);
    }

    /// Called by the reply consumer after each poll; returns the change it caused, if any.
    pub fn observe(&self, good: bool) -> Option<Change> {
        let mut streak = self.streak();
        let ready = self.reads_replies();
        if good == ready {
            streak.against = 0;
            return None;
        }
        streak.against += 1;
        let needed = if ready {
            streak.hysteresis.unready_after
        } else {
            streak.hysteresis.ready_after
        };
        if streak.against < needed {
            return None;
        }
        streak.against = 0;
        self.0.reads_replies.store(good, Ordering::Release);
        Some(if good { Change::Regained } else { Change::Lost })
    }

    /// Called once, when a graceful stop begins.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Release);
    }

    /// Replies can be received: a payment may be sent.
    pub fn reads_replies(&self) -> bool {
        self.0.reads_replies.load(Ordering::Acquire)
    }

    /// What `/readyz` reports: reading replies and not stopping.
    pub fn is_ready(&self) -> bool {
        self.reads_replies() && !self.0.stopping.load(Ordering::Acquire)
    }

    fn streak(&self) -> std::sync::MutexGuard<'_, Streak> {
        self.0
            .streak
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(unready_after: u32, ready_after: u32) -> Readiness {
        let readiness = Readiness::new(Hysteresis {
            unready_after,
            ready_after,
        });
        readiness.positioned();
        readiness
    }

    #[test]
    fn stopping_makes_it_unready_but_payments_may_finish() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready());
        readiness.positioned();
        assert!(readiness.is_ready());
        readiness.stop();
        assert!(!readiness.is_ready());
        assert!(readiness.reads_replies());
    }

    #[test]
    fn it_turns_unready_only_after_n_bad_polls_in_a_row() {
        let readiness = ready(3, 2);
        assert_eq!(readiness.observe(false), None);
        assert_eq!(readiness.observe(false), None);
        assert!(readiness.is_ready());
        assert_eq!(readiness.observe(false), Some(Change::Lost));
        assert!(!readiness.is_ready() && !readiness.reads_replies());
        assert_eq!(readiness.observe(false), None, "a change is reported once");
    }

    #[test]
    fn it_turns_ready_again_only_after_m_good_polls_in_a_row() {
        let readiness = ready(1, 3);
        assert_eq!(readiness.observe(false), Some(Change::Lost));
        assert_eq!(readiness.observe(true), None);
        assert_eq!(readiness.observe(true), None);
        assert!(!readiness.reads_replies());
        assert_eq!(readiness.observe(true), Some(Change::Regained));
        assert!(readiness.reads_replies());
    }

    #[test]
    fn an_alternating_signal_does_not_flap_either_way() {
        let readiness = ready(2, 2);
        for _ in 0..10 {
            assert_eq!(readiness.observe(false), None);
            assert_eq!(readiness.observe(true), None);
        }
        assert!(readiness.reads_replies(), "stays ready");
        readiness.observe(false);
        assert_eq!(readiness.observe(false), Some(Change::Lost));
        for _ in 0..10 {
            assert_eq!(readiness.observe(true), None);
            assert_eq!(readiness.observe(false), None);
        }
        assert!(!readiness.reads_replies(), "stays not ready");
    }
}
