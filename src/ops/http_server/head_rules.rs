//! What a request head must be beyond what async-h1 checks, refused with `400
//! malformed-request` before the application sees the request (RFC 9112 section 6.3: a
//! server that cannot tell where a request ends must answer 400 and close).
//!
//! - Header lines are ASCII. async-h1 hands each header value to http-types, which panics
//!   on one that is UTF-8 but not ASCII (`Idempotency-Key: ab ü`): the connection's task
//!   died and the client got no answer at all. [`AsciiHeaders`] watches the head on its way
//!   from the socket to async-h1 and fails the read at the first such byte, so async-h1
//!   never sees it. (RFC 9110 section 5.5 calls such bytes obs-text, which a recipient may
//!   refuse.) The request line is left alone: httparse and `Url` take or refuse non-ASCII
//!   there without panicking.
//! - At most one `Content-Length`. async-h1 reads the body by the last of several, so two
//!   that differ would have the gateway read a body of one length while a proxy in front
//!   read another: the rest would be taken for a second request (request smuggling).

use async_std::io::{self, Read, Write};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tide::http::Request;

/// The end of a request head.
const HEAD_END: u32 = u32::from_be_bytes(*b"\r\n\r\n");

/// A connection's byte stream whose head is checked for non-ASCII header bytes as it is read;
/// after the head, bytes only pass through.
#[derive(Clone)]
pub struct AsciiHeaders<S> {
    stream: S,
    /// Where in the head the bytes read so far end. Only the clone async-h1 reads from
    /// moves on; the other clone only writes (`100 Continue`).
    place: Place,
}

#[derive(Clone, Copy)]
struct Place {
    /// The last four bytes, to see the head's end.
    last: u32,
    in_request_line: bool,
    head_ended: bool,
}

/// The read error for a header byte outside ASCII; [`not_ascii`] finds it again.
#[derive(Debug)]
pub struct NotAscii {
    byte: u8,
}

impl fmt::Display for NotAscii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a header line has the byte 0x{:02x}, outside ASCII: send header values as ASCII, percent-encoded if need be",
            self.byte
        )
    }
}

impl std::error::Error for NotAscii {}

impl<S> AsciiHeaders<S> {
    pub fn new(stream: S) -> AsciiHeaders<S> {
        AsciiHeaders {
            stream,
            place: Place {
                last: 0,
                in_request_line: true,
                head_ended: false,
            },
        }
    }
}

impl Place {
    /// Follows `bytes`, the next ones read; the first header byte outside ASCII, if any.
    fn follow(&mut self, bytes: &[u8]) -> Option<u8> {
        for &byte in bytes {
            if self.head_ended {
                return None;
            }
            self.last = (self.last << 8) | u32::from(byte);
            if byte == b'\n' {
                self.in_request_line = false;
            } else if !byte.is_ascii() && !self.in_request_line {
                return Some(byte);
            }
            self.head_ended = self.last == HEAD_END;
        }
        None
    }
}

impl<S: Read + Unpin> Read for AsciiHeaders<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read
            && let Some(byte) = this.place.follow(&buf[..n])
        {
            let refused = io::Error::new(io::ErrorKind::InvalidData, NotAscii { byte });
            return Poll::Ready(Err(refused));
        }
        read
    }
}

impl<S: Write + Unpin> Write for AsciiHeaders<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// The [`NotAscii`] refusal inside a decoding error, if that is what it is.
pub fn not_ascii(error: &tide::http::Error) -> Option<&NotAscii> {
    error
        .downcast_ref::<io::Error>()?
        .get_ref()?
        .downcast_ref::<NotAscii>()
}

/// Why `req`'s length cannot be trusted: `Content-Length` given twice, differently.
pub fn conflicting_lengths(req: &Request) -> Option<String> {
    let values = req.header("content-length")?;
    let first = values.iter().next()?.as_str().trim();
    let other = values
        .iter()
        .map(|v| v.as_str().trim())
        .find(|v| *v != first)?;
    Some(format!(
        "Content-Length is given twice, as {first} and {other}; send one"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_refused(chunks: &[&[u8]]) -> Option<u8> {
        let mut place = AsciiHeaders::new(()).place;
        chunks.iter().find_map(|chunk| place.follow(chunk))
    }

    #[test]
    fn a_non_ascii_header_byte_is_found_across_reads_and_nothing_after_the_head() {
        let head: &[u8] = b"POST /p HTTP/1.1\r\nidempotency-key: ab ";
        assert_eq!(first_refused(&[head, "ü\r\n\r\n".as_bytes()]), Some(0xc3));
        // The request line is httparse's to judge, the body the application's.
        let line = "GET /ü HTTP/1.1\r\nhost: gw\r\n\r\n".as_bytes();
        assert_eq!(first_refused(&[line]), None);
        let body = "POST /p HTTP/1.1\r\nhost: gw\r\n\r\n{\"ü\":1}".as_bytes();
        assert_eq!(first_refused(&[&body[..20], &body[20..]]), None);
    }
}
