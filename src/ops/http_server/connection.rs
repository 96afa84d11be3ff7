//! One HTTP/1.1 connection, with a deadline on every phase a client controls.
//!
//! `async_h1::accept` has only a head timeout, on which it closes without a word; it waits
//! forever for a body (and, after answering, for the rest of an unread one), and it drops
//! a connection whose head it cannot parse without an answer. So a slow or stuck client
//! held memory and a file descriptor for as long as it liked. This loop reuses async-h1's
//! decoder and encoder and adds:
//! - idle: a new connection must begin its first request within `http.head_timeout_ms`,
//!   and a keep-alive one its next request within `http.idle_timeout_ms`; else it is
//!   closed silently (no request began, so there is nothing to answer);
//! - head: from a request's first byte, its head must arrive within `http.head_timeout_ms`,
//!   else `408 head-timeout`;
//! - body: the body must arrive within `http.body_timeout_ms` of the head; the payment
//!   handler reads it against [`BodyDeadline`] and answers `408 body-timeout`;
//! - a head async-h1 cannot read (stray CR or LF, control bytes or non-UTF-8 in a header,
//!   over 8 KiB, not HTTP/1.1), or one it would take wrongly (see [`head_rules`]: a
//!   header byte outside ASCII, two different `Content-Length`s) gets `400
//!   malformed-request`;
//! - a connection whose request body was not read to its end is closed after the answer.
//!
//! Waiting for a request costs only the task: the head buffer exists once bytes arrive.

use super::Limits;
use super::head_rules::{self, AsciiHeaders};
use super::problem_response;
use super::{ConnectionCut, ConnectionMetrics};
use crate::config::HttpConfig;
use crate::ops::signals::Shutdown;
use crate::wire::problem::{Outcome, Problem};
use async_std::future::timeout;
use async_std::io::{self, Read, ReadExt, WriteExt};
use async_std::net::TcpStream;
use std::future::Future;
use std::net;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tide::http::{Body, Method, Request, Response};

/// When the request's body must have arrived; the payment handler reads it against this.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// How long a closing connection keeps discarding input, so that a client still sending
/// reads its answer instead of a reset (what Apache calls a lingering close).
const LINGER: Duration = Duration::from_secs(1);
/// The request body's own read buffer: payment bodies are a few hundred bytes, and the
/// decoder's buffer underneath already batches reads from the socket.
const SMALL_READS: usize = 512;
/// Unread body bytes that may be skipped to keep a connection alive; beyond, it closes.
const SKIPPABLE_BODY: u64 = 64 * 1024;
/// Answers with a body up to this long are encoded in memory and sent in one write; longer
/// or streamed ones are copied through.
const SENT_WHOLE: usize = 64 * 1024;
/// Room for the head of an answer encoded whole: status line, date, type, length and
/// kreply's own headers fit.
const HEAD_ROOM: usize = 512;

/// Serves requests on `stream` until the client leaves, a deadline passes, or the gateway
/// stops (then the answer in progress is the last).
pub async fn serve<S>(stream: TcpStream, app: tide::Server<S>, shutdown: Shutdown, limits: &Limits)
where
    S: Clone + Send + Sync + 'static,
{
    let (metrics, limits) = (&limits.metrics, &limits.http);
    let peer = stream.peer_addr().ok();
    let local = stream.local_addr().ok();
    // A connection that has never sent anything is no keep-alive connection: it gets the
    // head's deadline, so silent connections cannot hold slots for the long idle timeout.
    let mut wait_for_request = limits.head_timeout();
    loop {
        // The request is moved into `begin` without a name, and a cut is answered outside
        // this match: anything held across an await keeps a place in this task for as
        // long as every answer takes.
        let next = match Box::pin(next_request(&stream, limits, wait_for_request)).await {
            Ok(Some((req, decoder_body))) => {
                // The decoder's handle on the body holds its read buffer (8 KiB) until
                // dropped; the request's body reads through the same buffer and lets go
                // of it at its end.
                drop(decoder_body);
                Ok(begin(&app, req, (peer, local), limits))
            }
            Ok(None) => return,
            Err(cut) => Err(cut),
        };
        let begun = match next {
            Ok(begun) => begun,
            Err(cut) => return Box::pin(cut_off(&stream, cut, metrics)).await,
        };
        let Begun {
            answering,
            mut body,
            method,
            close_asked,
        } = begun;
        let mut response = answering.await;
        let keep_alive = body_read_to_end(&mut body) && !close_asked && !shutdown.is_requested();
        if !keep_alive {
            response.insert_header("connection", "close");
        }
        let written = Box::pin(write(&stream, response, method, limits.idle_timeout())).await;
        if written.is_err() || !keep_alive {
            if written.is_ok() {
                Box::pin(close_gently(&stream)).await;
            }
            return;
        }
        wait_for_request = limits.idle_timeout();
    }
}

/// A request handed to the application: its answer to come, and what the connection needs
/// to know of the request afterwards.
struct Begun<A> {
    /// Boxed, like the decoder: the task then holds only what the phase it is in needs, so
    /// a connection waiting for its next request stays small.
    answering: Pin<Box<A>>,
    body: ReleasedAtEnd,
    method: Method,
    close_asked: bool,
}

fn begin<S>(
    app: &tide::Server<S>,
    mut req: Request,
    (peer, local): (Option<net::SocketAddr>, Option<net::SocketAddr>),
    limits: &HttpConfig,
) -> Begun<impl Future<Output = Response> + use<S>>
where
    S: Clone + Send + Sync + 'static,
{
    req.set_peer_addr(peer);
    req.set_local_addr(local);
    req.ext_mut()
        .insert(BodyDeadline(Instant::now() + limits.body_timeout()));
    let body = ReleasedAtEnd::wrap(&mut req);
    let method = req.method();
    let close_asked = asks_to_close(&req);
    Begun {
        answering: Box::pin(answer(app.clone(), req)),
        body,
        method,
        close_asked,
    }
}

/// Ends a connection whose request could not be read, answering it when there is a
/// problem to tell.
async fn cut_off(stream: &TcpStream, (cut, problem): Cut, metrics: &ConnectionMetrics) {
    metrics.cut(cut);
    if let Some(problem) = problem {
        let _ = answer_and_close(stream, problem_response::respond(&problem)).await;
    }
}

/// A connection beyond the cap: `503` with `Retry-After`, then closed. The request is not
/// read, so nothing about it can reach Kafka.
pub async fn refuse(stream: TcpStream, retry_after: Duration) {
    let problem = Problem::new(
        503,
        "too-many-connections",
        "the gateway has as many connections open as it takes; nothing was sent, try again shortly",
    )
    .with_outcome(Outcome::NotSent);
    let mut response = problem_response::respond(&problem);
    response.insert_header("retry-after", retry_after.as_secs().max(1).to_string());
    let _ = answer_and_close(&stream, response).await;
}

type Cut = (ConnectionCut, Option<Problem>);

/// The next request's head: its first byte within `wait`, the rest within the head
/// deadline. `None` when the client closed the connection between requests.
async fn next_request(
    stream: &TcpStream,
    limits: &HttpConfig,
    wait: Duration,
) -> Result<Option<(Request, impl Read + Unpin + use<>)>, Cut> {
    let mut first = [0u8; 1];
    match timeout(wait, stream.peek(&mut first)).await {
        Err(_) => return Err((ConnectionCut::IdleTimeout, None)),
        Ok(Ok(0) | Err(_)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    let decoded = timeout(
        limits.head_timeout(),
        Box::pin(async_h1::server::decode(AsciiHeaders::new(stream.clone()))),
    )
    .await;
    match decoded {
        Err(_) => Err((
            ConnectionCut::HeadTimeout,
            Some(Problem::new(
                408,
                "head-timeout",
                format!(
                    "the request head did not arrive within {} ms; nothing was sent",
                    limits.head_timeout_ms
                ),
            )),
        )),
        Ok(Ok(Some((req, _)))) if let Some(why) = head_rules::conflicting_lengths(&req) => {
            Err(malformed(why))
        }
        Ok(Ok(request)) => Ok(request),
        Ok(Err(e)) => match head_rules::not_ascii(&e) {
            Some(refused) => Err(malformed(refused.to_string())),
            None if e.downcast_ref::<std::io::Error>().is_some() => Ok(None),
            None => Err(malformed(e.to_string())),
        },
    }
}

/// `400 malformed-request`, the head refused for `why`; the connection is then closed.
fn malformed(why: String) -> Cut {
    (
        ConnectionCut::MalformedHead,
        Some(Problem::new(
            400,
            "malformed-request",
            format!(
                "the request head is not HTTP/1.1 this gateway can read ({why}); nothing was sent"
            ),
        )),
    )
}

fn asks_to_close(req: &Request) -> bool {
    req.header("connection")
        .is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"))
}

/// A request body that lets go of its reader, and with it the read buffers, as soon as it
/// has been read to its end: a payment waiting for its reply then holds no buffer. The
/// connection keeps a second handle to skip what the handler left unread.
#[derive(Clone)]
struct ReleasedAtEnd(Arc<Mutex<Unread>>);

struct Unread {
    reader: Option<Body>,
    /// Bytes still to come, when the length is known: a reader of known length ends
    /// there without another read reporting its end.
    left: Option<usize>,
}

impl ReleasedAtEnd {
    /// Puts `req`'s body behind a shared handle; returns the connection's handle.
    fn wrap(req: &mut Request) -> ReleasedAtEnd {
        let left = req.len();
        let reader = Some(req.take_body()).filter(|_| left != Some(0));
        let shared = ReleasedAtEnd(Arc::new(Mutex::new(Unread { reader, left })));
        req.set_body(Body::from_reader(
            async_std::io::BufReader::with_capacity(SMALL_READS, shared.clone()),
            left,
        ));
        shared
    }
}

impl Read for ReleasedAtEnd {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut unread = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(reader) = unread.reader.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let read = std::pin::Pin::new(reader).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            unread.left = unread.left.map(|left| left.saturating_sub(n));
            if (n == 0 && !buf.is_empty()) || unread.left == Some(0) {
                unread.reader = None;
            }
        }
        read
    }
}

/// Whether the request body is consumed: skips what has already arrived (up to a limit)
/// without waiting for more. A body still arriving means the connection must close.
fn body_read_to_end(body: &mut (impl Read + Unpin)) -> bool {
    let mut skip = pin!(io::copy(body.take(SKIPPABLE_BODY + 1), io::sink()));
    let waker = std::task::Waker::noop();
    match skip
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        Poll::Ready(Ok(skipped)) => skipped <= SKIPPABLE_BODY,
        _ => false,
    }
}

/// `app`'s answer to `req`, any error in it a problem+json body.
///
/// The request is boxed on the way in: tide moves it through several futures (this one,
/// `Server::respond`, the route's), each keeping a place of its size for as long as the
/// answer takes. A box makes two of those places a pointer each, which is 800 bytes less
/// for every payment waiting for its reply.
pub(crate) fn answer<S>(app: tide::Server<S>, req: Request) -> impl Future<Output = Response>
where
    S: Clone + Send + Sync + 'static,
{
    answer_boxed(app, BoxedRequest(Box::new(req)))
}

async fn answer_boxed<S>(app: tide::Server<S>, req: BoxedRequest) -> Response
where
    S: Clone + Send + Sync + 'static,
{
    match app.respond::<_, Response>(req).await {
        Ok(response) => problem_response::as_problem(response),
        Err(e) => {
            log::error!("request failed: {e}");
            let problem = Problem::new(500, "internal-error", "the gateway failed; see its log");
            problem_response::respond(&problem).into()
        }
    }
}

/// A request that tide unboxes only when it builds its own request from it.
struct BoxedRequest(Box<Request>);

impl From<BoxedRequest> for Request {
    fn from(boxed: BoxedRequest) -> Request {
        *boxed.0
    }
}

/// Writes `response` within `limit`: a client that does not read its answer is cut off.
///
/// async-h1's encoder yields the head and the body in separate reads, so copying it costs
/// two sends per answer (on loopback each send also runs the receiver's TCP path) and an
/// 8 KiB copy buffer. A body of known, modest length is encoded whole and sent at once.
async fn write(
    stream: &TcpStream,
    response: Response,
    method: Method,
    limit: Duration,
) -> io::Result<()> {
    let whole = response.len().filter(|&len| len <= SENT_WHOLE);
    let mut encoder = async_h1::server::Encoder::new(response, method);
    let mut out = stream.clone();
    let sent = async {
        match whole {
            Some(len) => {
                let mut encoded = Vec::with_capacity(len + HEAD_ROOM);
                encoder.read_to_end(&mut encoded).await?;
                out.write_all(&encoded).await
            }
            None => io::copy(&mut encoder, &mut out).await.map(drop),
        }
    };
    timeout(limit, sent)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Answers once and closes: for requests the gateway cannot or will not read.
async fn answer_and_close(stream: &TcpStream, response: impl Into<Response>) -> io::Result<()> {
    let mut response: Response = response.into();
    response.insert_header("connection", "close");
    write(stream, response, Method::Get, LINGER).await?;
    close_gently(stream).await;
    Ok(())
}

/// Ends the connection after an answer: no more output, then input discarded until the
/// client closes or [`LINGER`] passes. Closing with unread input would send a reset, and a
/// client still sending its body would lose the answer.
async fn close_gently(stream: &TcpStream) {
    let _ = stream.shutdown(net::Shutdown::Write);
    let mut input = stream.clone();
    let _ = timeout(LINGER, io::copy(&mut input, &mut io::sink())).await;
}
#[cfg(test)]
mod tests {
    use super::*;

    /// What every open connection holds while it waits is this future: the phases' big
    /// parts (decoder, handler, encoder) are boxed only while running. Unboxed it was 10 KB;
    /// now under 0.75 KB: neither the request nor a cut keeps a place in it while the
    /// answer is awaited.
    #[test]
    fn a_waiting_connection_holds_a_small_future() {
        let stream = async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap();
            TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap()
        });
        let limits = Limits::default();
        let connection = serve(stream, tide::new(), Shutdown::never(), &limits);
        let size = std::mem::size_of_val(&connection);
        assert!(size <= 768, "the connection future is {size} bytes");
    }
}
