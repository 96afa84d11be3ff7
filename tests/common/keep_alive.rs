//! A keep-alive HTTP/1.1 client: one connection reused for request after request, as a load
//! balancer's connection pool does. The soak sends up to 100,000 payments; a fresh
//! connection per request (what [`super::request`] does) would mostly measure connection
//! setup, fill `TIME_WAIT`, and leave the gateway's keep-alive path untested.
//!
//! A server may close a connection that sat idle (async-h1 does after 60 s, and a gateway
//! may have an idle timeout of its own), so before reusing one the client checks that the
//! server has not closed it, and opens a new one if it has. A request that fails is
//! returned as an error, never sent again, since a payment must not be sent twice behind
//! the test's back.

use super::{HttpResponse, encode_request, parse_response};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct KeepAlive {
    addr: SocketAddr,
    connection: Option<BufReader<TcpStream>>,
    /// Reused connections found closed by the server and replaced.
    pub reopened: usize,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            connection: None,
            reopened: 0,
        }
    }

    /// Sends one request on the open connection (opening one if needed) and reads its
    /// response. After an error, or when the server says `connection: close`, the next
    /// request opens a new connection.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let result = self.exchange(&encode_request(self.addr, method, path, headers, body));
        let reusable = result
            .as_ref()
            .is_ok_and(|r| r.header("connection") != Some("close"));
        if !reusable {
            self.connection = None;
        }
        result
    }

    /// The open connection (none after an error or a `connection: close`), for a test
    /// that goes on with it by hand.
    pub fn into_stream(self) -> Option<TcpStream> {
        self.connection.map(BufReader::into_inner)
    }

    fn exchange(&mut self, request: &[u8]) -> std::io::Result<HttpResponse> {
        if self.connection.as_ref().is_some_and(closed_by_server) {
            self.reopened += 1;
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(open) => open,
            none => none.insert(connect(self.addr)?),
        };
        connection.get_mut().write_all(request)?;
        Ok(parse_response(&read_response(connection)?))
    }
}

/// Whether the server closed this idle connection (or sent something unasked): a
/// non-blocking peek sees end-of-file, data or an error instead of "nothing yet".
fn closed_by_server(connection: &BufReader<TcpStream>) -> bool {
    if !connection.buffer().is_empty() {
        return true;
    }
    let stream = connection.get_ref();
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let peeked = stream.peek(&mut [0u8; 1]);
    let blocking = stream.set_nonblocking(false);
    let idle = matches!(&peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    !idle || blocking.is_err()
}

fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    Ok(BufReader::new(stream))
}

/// One response's raw bytes: the head, then a body framed by `content-length` or chunked.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut length = 0;
    let mut chunked = false;
    loop {
        let line = read_line(reader, &mut raw)?;
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().map_err(invalid)?;
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    if chunked {
        read_chunks(reader, &mut raw)?;
    } else {
        let start = raw.len();
        raw.resize(start + length, 0);
        reader.read_exact(&mut raw[start..])?;
    }
    Ok(raw)
}

/// Chunks up to the last (empty) one and its trailer, appended raw for `parse_response`.
fn read_chunks(reader: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let size_text = read_line(reader, raw)?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(invalid)?;
        if size == 0 {
            while !read_line(reader, raw)?.is_empty() {}
            return Ok(());
        }
        let start = raw.len();
        raw.resize(start + size + 2, 0);
        reader.read_exact(&mut raw[start..])?;
    }
}

/// Appends one CRLF-terminated line to `raw`; returns it without the line end.
fn read_line(reader: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> std::io::Result<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a whole response",
        ));
    }
    raw.extend_from_slice(&line);
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
