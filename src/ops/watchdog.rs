//! systemd's watchdog, fed from a loop that must keep turning: `WATCHDOG=1` at most every
//! half of `WatchdogSec=`, each time the loop comes round. A loop that stops (a poll that
//! never returns, a deadlock on the worker's one Tokio thread) stops the pings, and
//! systemd restarts the unit. A task of its own would go on pinging past a stuck loop.

use super::notify;
use std::time::{Duration, Instant};

pub struct Watchdog {
    /// Half of `WatchdogSec=`; `None` outside systemd, or without a watchdog.
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked for (`$WATCHDOG_USEC`), if any.
    pub fn from_env() -> Watchdog {
        Watchdog::every(notify::watchdog_interval())
    }

    fn every(every: Option<Duration>) -> Watchdog {
        Watchdog { every, last: None }
    }

    /// Pings systemd if a ping is due; call it on every turn of the loop.
    pub fn tick(&mut self) {
        if self.due(Instant::now()) {
            notify::notify("WATCHDOG=1");
        }
    }

    /// Whether a ping is due at `now`; if so, it counts as sent.
    fn due(&mut self, now: Instant) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_the_first_turn_then_once_per_interval() {
        let mut watchdog = Watchdog::every(Some(Duration::from_secs(15)));
        let start = Instant::now();
        assert!(watchdog.due(start));
        assert!(!watchdog.due(start + Duration::from_millis(200)));
        assert!(!watchdog.due(start + Duration::from_millis(14_999)));
        assert!(watchdog.due(start + Duration::from_secs(15)));
        assert!(!watchdog.due(start + Duration::from_secs(16)));
    }

    #[test]
    fn without_a_watchdog_it_never_pings() {
        let mut watchdog = Watchdog::every(None);
        assert!(!watchdog.due(Instant::now()));
    }
}
