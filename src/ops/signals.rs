//! SIGTERM and SIGINT, for the gateway and the worker alike: the first signal asks for a
//! graceful stop, the second ends the process at once, for an operator who does not want
//! to wait.
//!
//! Tokio already knows how to listen for signals safely, and tokio is here for krafka, so
//! a small thread runs a Tokio signal listener. The stop it asks for is a [`Shutdown`]: a
//! value passed to whatever must stop (the accept loop, the gateway's drain, the worker's
//! poll loop), awaited on any executor, instead of a flag each of them polls.

use crate::error::StartupError;
use async_std::channel::{Receiver, Sender, bounded};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The name of a received stop signal, `"SIGTERM"` or `"SIGINT"`, for log lines.
pub type SignalName = &'static str;

/// A stop that has been asked for, or may be: cheap to clone, and every clone sees it.
#[derive(Clone)]
pub struct Shutdown {
    /// Closed (its sender dropped) when the stop is asked for: every waiting `recv` ends.
    asked: Receiver<()>,
    signal: Arc<OnceLock<SignalName>>,
}

/// The side that asks for the stop.
struct Trigger {
    asked: Sender<()>,
    signal: Arc<OnceLock<SignalName>>,
}

impl Trigger {
    fn pull(self, signal: SignalName) {
        let _ = self.signal.set(signal);
        drop(self.asked);
    }
}

impl Shutdown {
    fn new() -> (Trigger, Shutdown) {
        let (asked, waiting) = bounded(1);
        let signal = Arc::new(OnceLock::new());
        let trigger = Trigger {
            asked,
            signal: Arc::clone(&signal),
        };
        (
            trigger,
            Shutdown {
                asked: waiting,
                signal,
            },
        )
    }

    /// A stop that is never asked for: servers that live as long as the process (the PG
    /// simulator, the worker's metrics endpoint).
    pub fn never() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        std::mem::forget(trigger.asked);
        shutdown
    }

    /// Resolves once the stop is asked for, with the signal that asked.
    pub async fn requested(&self) -> SignalName {
        let _ = self.asked.recv().await;
        self.signal
            .get()
            .copied()
            .unwrap_or("the signal listener ending")
    }

    /// Whether the stop has been asked for, without waiting.
    pub fn is_requested(&self) -> bool {
        self.signal.get().is_some()
    }

    /// Runs `work` until the stop is asked for: `None` when the stop came first.
    pub async fn unless_requested<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        let mut stop = pin!(self.requested());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            stop.as_mut().poll(cx).map(|_| None)
        })
        .await
    }
}

/// Starts listening. `who` ("gateway", "worker") names the process in the log line of a
/// second signal, which ends the process with status 1 without finishing anything.
pub fn listen(who: &'static str) -> Result<Shutdown, StartupError> {
    let failed = |e: std::io::Error| StartupError::new(format!("cannot listen for signals: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let (mut term, mut int) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(failed)?;
    let (trigger, shutdown) = Shutdown::new();
    std::thread::Builder::new()
        .name("kreply-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                trigger.pull(next(&mut term, &mut int).await);
                let again = next(&mut term, &mut int).await;
                log::warn!(
                    "{who}: {again} again: exiting now, without finishing what is in progress"
                );
                std::process::exit(1);
            })
        })
        .map_err(failed)?;
    Ok(shutdown)
}

async fn next(term: &mut Signal, int: &mut Signal) -> SignalName {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_clone_sees_the_stop_and_its_signal() {
        let (trigger, shutdown) = Shutdown::new();
        let other = shutdown.clone();
        assert!(!other.is_requested());
        let waiting = std::thread::spawn(move || async_std::task::block_on(other.requested()));
        trigger.pull("SIGTERM");
        assert_eq!(waiting.join().unwrap(), "SIGTERM");
        assert!(shutdown.is_requested());
        // Asked once, it stays asked: a later wait ends at once.
        assert_eq!(async_std::task::block_on(shutdown.requested()), "SIGTERM");
    }

    #[test]
    fn work_is_cut_short_only_by_a_stop() {
        let (trigger, shutdown) = Shutdown::new();
        let done = async_std::task::block_on(shutdown.unless_requested(async { 7 }));
        assert_eq!(done, Some(7));
        trigger.pull("SIGINT");
        let forever = async_std::task::sleep(Duration::from_secs(3600));
        assert_eq!(
            async_std::task::block_on(shutdown.unless_requested(forever)),
            None
        );
    }

    #[test]
    fn never_is_never_asked() {
        let shutdown = Shutdown::never();
        let wait = shutdown.unless_requested(async_std::task::sleep(Duration::from_millis(20)));
        assert_eq!(async_std::task::block_on(wait), Some(()));
        assert!(!shutdown.is_requested());
    }
}
