//! The accept loop, with `TCP_NODELAY` on every connection.
//!
//! tide's stock listener leaves Nagle's algorithm on, and async-h1 writes a response's head
//! and body in separate writes, so every response waited ~40 ms for the peer's delayed ACK.
//! Accepting connections here and handing them to tide removes that stall; everything else
//! is what tide's own listener does.

use async_std::net::TcpListener;
use async_std::task;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the loop looks at `accepting` while no connection arrives.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` while `accepting` is true; then drops the listener, so new
/// connections are refused while those already open finish their requests.
pub async fn serve<State>(
    app: tide::Server<State>,
    listener: TcpListener,
    accepting: Arc<AtomicBool>,
) where
    State: Clone + Send + Sync + 'static,
{
    while accepting.load(Ordering::Acquire) {
        let (stream, peer) = match async_std::io::timeout(STOP_CHECK, listener.accept()).await {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                log::warn!("accept failed: {e}");
                task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::warn!("cannot set TCP_NODELAY for {peer}: {e}");
        }
        let app = app.clone();
        task::spawn(async move {
            let local = stream.local_addr().ok();
            let served = async_h1::accept(stream, |mut req| async {
                req.set_peer_addr(Some(peer));
                req.set_local_addr(local);
                app.respond(req).await
            });
            if let Err(e) = served.await {
                log::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}
