//! Raw bytes on a socket: for clients no HTTP library would be, slow, silent, malformed
//! or too many, and for reading what the gateway answers them (if anything) and when it
//! closes the connection.

use super::{HttpResponse, parse_response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What a raw client saw: the answer (if any bytes came) and when the gateway closed.
#[derive(Debug)]
pub struct Seen {
    pub response: Option<HttpResponse>,
    /// The bytes as they came, for what parsing drops (the status line's reason phrase).
    pub raw: Vec<u8>,
    /// From the last byte sent to the end of the connection.
    pub closed_after: Duration,
}

/// A connection that has sent `bytes` and will send nothing more.
pub struct RawClient {
    stream: TcpStream,
    sent_at: Instant,
}

impl RawClient {
    pub fn send(addr: SocketAddr, bytes: &[u8]) -> RawClient {
        RawClient::send_on(TcpStream::connect(addr).unwrap(), bytes)
    }

    /// [`RawClient::send`] on a connection already open.
    pub fn send_on(mut stream: TcpStream, bytes: &[u8]) -> RawClient {
        stream.write_all(bytes).unwrap();
        RawClient {
            stream,
            sent_at: Instant::now(),
        }
    }

    /// Reads until the gateway closes the connection; fails if it stays open past `limit`.
    pub fn wait_closed(mut self, limit: Duration) -> Seen {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                // A reset after the answer still ends the connection.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "still open {:?} after sending (limit {limit:?}): {e}; got {:?}",
                    self.sent_at.elapsed(),
                    String::from_utf8_lossy(&raw)
                ),
            }
        }
        Seen {
            response: (!raw.is_empty()).then(|| parse_response(&raw)),
            raw,
            closed_after: self.sent_at.elapsed(),
        }
    }
}

/// One raw exchange: `bytes` sent (a send the gateway cut short is fine), the answer read.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The gateway may answer (413) and close before all of a large body is sent.
    let _ = stream.write_all(bytes);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(!raw.is_empty(), "no answer to {:?}", preview(bytes));
    parse_response(&raw)
}

/// A POST head for a payment, with `extra` header lines (each ending in CRLF).
pub fn payment_head(operation: &str, content_length: usize, extra: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST /v1/payments/{operation} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n"
    )
    .into_bytes();
    head.extend_from_slice(extra);
    head.extend_from_slice(b"\r\n");
    head
}

/// A whole payment request with `body`, connection closed after it.
pub fn payment_request(body: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut extra = extra.to_vec();
    extra.extend_from_slice(b"connection: close\r\n");
    let mut request = payment_head("approve", body.len(), &extra);
    request.extend_from_slice(body);
    request
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}
