//! SIGTERM and SIGINT for the async-std side of the gateway.
//!
//! Tokio already knows how to listen for signals safely, and tokio is here for krafka, so
//! a small thread runs a Tokio signal listener and forwards each signal over a channel that
//! any executor can await. The first signal starts a graceful stop; the second one ends the
//! process at once, for an operator who does not want to wait.

use crate::error::StartupError;
use async_std::channel::{Receiver, unbounded};
use tokio::signal::unix::{SignalKind, signal};

/// The name of a received stop signal, `"SIGTERM"` or `"SIGINT"`, for log lines.
pub type SignalName = &'static str;

/// Starts listening; the receiver yields each SIGTERM or SIGINT.
pub fn listen() -> Result<Receiver<SignalName>, StartupError> {
    let failed = |e: std::io::Error| StartupError::new(format!("cannot listen for signals: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let (sender, receiver) = unbounded();
    let (mut term, mut int) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(failed)?;
    std::thread::Builder::new()
        .name("kreply-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    if sender.send(name).await.is_err() {
                        return;
                    }
                }
            })
        })
        .map_err(failed)?;
    Ok(receiver)
}
