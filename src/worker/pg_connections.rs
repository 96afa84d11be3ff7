//! Kept-alive connections to the PG, so a charge does not open and close a TCP connection.
//!
//! A new connection per charge took about half of the worker's CPU under load (connect,
//! accept on the PG side, close, and the async-io reactor thread waking the worker's
//! runtime for each step). Connections are Tokio's, on the worker's own runtime, and
//! read and written through the futures-io traits async-h1 speaks ([`PgStream`]).
//!
//! Reusing a connection must not turn into a blind retry: a request written to a
//! connection the PG had already closed is lost, and the charge is reported unknown. So a
//! connection is only reused soon after its last answer ([`REUSE_WITHIN`], far below any
//! PG's keep-alive timeout), and only if nothing (an end, a reset, stray bytes) has
//! arrived on it meanwhile.

use async_std::io::{Read, Write};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long after its last answer a connection may carry the next charge. The mock PG
/// and common servers keep an idle connection for many seconds; a connection idle this
/// long is closed rather than risk the PG closing it as the request arrives.
const REUSE_WITHIN: Duration = Duration::from_secs(2);

/// Idle connections, the most recently used last.
pub struct PgConnections {
    address: String,
    idle: Mutex<Vec<(PgStream, Instant)>>,
    /// Idle connections kept at most: one per PG call that may run at once.
    keep: usize,
}

impl PgConnections {
    pub fn new(address: String, keep: usize) -> PgConnections {
        PgConnections {
            address,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// Where connections go.
    #[cfg(test)]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// An idle connection fit for reuse, else a new one.
    pub async fn take(&self) -> io::Result<PgStream> {
        while let Some((stream, idle_since)) = self.pop() {
            if idle_since.elapsed() < REUSE_WITHIN && stream.is_quiet() {
                return Ok(stream);
            }
        }
        let stream = TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        Ok(PgStream(Arc::new(stream)))
    }

    /// Keeps `stream`, whose last answer was read to its end, for the next charge.
    pub fn give_back(&self, stream: PgStream) {
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push((stream, Instant::now()));
        }
    }

    fn pop(&self) -> Option<(PgStream, Instant)> {
        self.lock().pop()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PgStream, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection to the PG; clones share it (async-h1 takes the stream by value, and the
/// pool keeps it afterwards).
#[derive(Clone)]
pub struct PgStream(Arc<TcpStream>);

impl PgStream {
    /// Whether nothing has arrived since the last answer: an idle connection that can be
    /// read from has been closed or reset by the PG, or holds bytes nobody asked for.
    fn is_quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.0.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Read for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read),
            }
        }
    }
}

impl Write for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    /// Writes go straight to the socket: nothing is buffered here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The connection closes when its last handle is dropped.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A connection the PG closed while it sat idle is never handed out again: a request
    /// written to it would be lost, and its charge reported unknown.
    #[test]
    fn a_connection_closed_by_the_peer_is_not_reused() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let pool = PgConnections::new(listener.local_addr().unwrap().to_string(), 4);
            let first = pool.take().await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            pool.give_back(first.clone());
            drop(accepted);
            // Long enough for the end of the connection to reach this side.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let fresh = pool.take().await.unwrap();
            assert!(!Arc::ptr_eq(&first.0, &fresh.0), "closed: a new connection");
        });
    }

    #[test]
    fn a_quiet_connection_is_reused_and_one_with_stray_bytes_is_not() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let pool = PgConnections::new(listener.local_addr().unwrap().to_string(), 4);
            let first = pool.take().await.unwrap();
            let (mut accepted, _) = listener.accept().await.unwrap();
            pool.give_back(first.clone());
            let again = pool.take().await.unwrap();
            assert!(
                Arc::ptr_eq(&first.0, &again.0),
                "the idle connection is reused"
            );
            accepted.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.give_back(again);
            let fresh = pool.take().await.unwrap();
            assert!(
                !Arc::ptr_eq(&first.0, &fresh.0),
                "stray bytes: a new connection"
            );
        });
    }

    #[test]
    fn at_most_keep_connections_are_kept() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let pool = PgConnections::new(listener.local_addr().unwrap().to_string(), 1);
            let a = pool.take().await.unwrap();
            let b = pool.take().await.unwrap();
            pool.give_back(a);
            pool.give_back(b);
            assert_eq!(pool.lock().len(), 1);
        });
    }
}
