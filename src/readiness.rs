//! Whether the gateway can answer payments right now, and whether it wants new ones.
//!
//! The reply consumer sets `reads_replies` (positioned, and its last fetch succeeded):
//! without it a request would be produced and then time out, so payments are refused
//! before anything is sent. A graceful stop sets `stopping` first, so `/readyz` turns 503
//! and load balancers move away while the payments already accepted still complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct Readiness(Arc<Flags>);

#[derive(Default)]
struct Flags {
    reads_replies: AtomicBool,
    stopping: AtomicBool,
}

impl Readiness {
    /// Called by the reply consumer after each poll.
    pub fn set(&self, reads_replies: bool) {
        self.0.reads_replies.store(reads_replies, Ordering::Release);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_makes_it_unready_but_payments_may_finish() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready());
        readiness.set(true);
        assert!(readiness.is_ready());
        readiness.stop();
        assert!(!readiness.is_ready());
        assert!(readiness.reads_replies());
    }
}
