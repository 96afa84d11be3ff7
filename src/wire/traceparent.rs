//! W3C Trace Context: the `traceparent` that ties one payment's log lines, records and
//! PG call to the caller's trace.
//!
//! The gateway takes the caller's `traceparent` when it is valid (W3C Trace Context level
//! 1, section 3.2) and starts a new trace otherwise, then carries it unchanged as the
//! request record's `traceparent` header; the worker echoes it on the reply and passes a
//! child of it (same trace id, a new parent id) to the PG. A header that breaks the rules
//! is never passed on: the spec says to restart the trace rather than guess.
//!
//! Ids come from the uuid crate's random source (v4), so no random-number crate is needed:
//! a v4 UUID has 122 random bits and its fixed version bits keep it from ever being all
//! zeros, which the spec forbids.

use std::fmt;
use uuid::Uuid;

/// The header's name, on HTTP requests and responses and on Kafka records alike.
pub const HEADER: &str = "traceparent";

/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
const LEN: usize = 55;

/// The sampled flag: set on traces kreply starts, since every log line of the payment
/// records the trace id (the spec's "the caller may have recorded trace data").
const SAMPLED: u8 = 0x01;

/// One `traceparent`, always written as version `00`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A new trace, with a random trace id and parent id.
    pub fn start() -> TraceParent {
        TraceParent {
            trace_id: *Uuid::new_v4().as_bytes(),
            parent_id: new_parent_id(),
            flags: SAMPLED,
        }
    }

    /// The caller's trace when `value` is one valid header, else a new trace.
    pub fn or_start(value: Option<&[u8]>) -> TraceParent {
        value
            .and_then(TraceParent::parse)
            .unwrap_or_else(TraceParent::start)
    }

    /// The same trace under a new parent id: what this hop passes on to the next.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            parent_id: new_parent_id(),
            ..*self
        }
    }

    /// The 32 hex digits every hop of the trace shares.
    #[cfg(test)]
    fn trace_id(&self) -> String {
        self.to_string()[3..35].to_string()
    }

    /// Parses a header value by the spec's rules: lowercase hex only, no all-zero ids,
    /// version `ff` refused, version `00` exactly 55 characters. A later version is read
    /// by its first four fields when what follows them starts with `-`.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < LEN || [value[2], value[35], value[52]] != [b'-'; 3] {
            return None;
        }
        let version = unhex::<1>(&value[..2])?[0];
        let rest_ok = match version {
            0x00 => value.len() == LEN,
            0xff => false,
            _ => value.len() == LEN || value[LEN] == b'-',
        };
        let trace_id = unhex::<16>(&value[3..35])?;
        let parent_id = unhex::<8>(&value[36..52])?;
        let flags = unhex::<1>(&value[53..55])?[0];
        let ids_ok = trace_id != [0; 16] && parent_id != [0; 8];
        (rest_ok && ids_ok).then_some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// A record's `traceparent` as a log line shows it: `traceparent=<value>`, or
/// `traceparent=-` when the record has none that is valid.
#[derive(Clone, Copy)]
pub struct LogField(Option<TraceParent>);

impl LogField {
    /// Parsed now (no allocation), formatted only if a line is logged.
    pub fn of(value: Option<&[u8]>) -> LogField {
        LogField(value.and_then(TraceParent::parse))
    }
}

impl fmt::Display for LogField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(trace) => write!(f, "{HEADER}={trace}"),
            None => write!(f, "{HEADER}=-"),
        }
    }
}

/// 8 random bytes: the low half of a v4 UUID, whose variant bits are never all zero.
fn new_parent_id() -> [u8; 8] {
    Uuid::new_v4().as_u64_pair().1.to_be_bytes()
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
}

impl TraceParent {
    /// The header's 55 bytes, built in place: the value goes on every record and log line
    /// of a payment, and `write!` per hex byte was the worker's largest formatting cost.
    pub fn to_bytes(self) -> [u8; LEN] {
        let mut text = [0u8; LEN];
        text[..3].copy_from_slice(b"00-");
        put_hex(&mut text[3..35], &self.trace_id);
        text[35] = b'-';
        put_hex(&mut text[36..52], &self.parent_id);
        text[52] = b'-';
        put_hex(&mut text[53..55], &[self.flags]);
        text
    }
}

/// Lowercase hex, two digits a byte, into `out` (twice as long as `bytes`).
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_bytes();
        // Only ASCII hex digits and dashes were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own example.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(text: &str) -> Option<TraceParent> {
        TraceParent::parse(text.as_bytes())
    }

    #[test]
    fn a_valid_header_is_read_and_written_back_unchanged() {
        let trace = parse(EXAMPLE).unwrap();
        assert_eq!(trace.to_string(), EXAMPLE);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(parse(unsampled).unwrap().to_string(), unsampled);
    }

    #[test]
    fn headers_that_break_the_rules_are_refused() {
        let cases = [
            ("", "empty"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                "short",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "version 00 with more",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "uppercase trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                "uppercase parent id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "zero parent id",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version not hex",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                "separators",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
                "trace id not hex",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                "flags not hex",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "later version, no dash",
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "leading space",
            ),
        ];
        for (text, why) in cases {
            assert_eq!(parse(text), None, "{why}: {text:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields_and_passed_on_as_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert_eq!(parse(later).unwrap().to_string(), EXAMPLE);
        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(exact).unwrap().to_string(), EXAMPLE);
    }

    #[test]
    fn a_new_trace_is_valid_sampled_and_new_each_time() {
        let (a, b) = (TraceParent::start(), TraceParent::start());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(parse(&a.to_string()), Some(a));
        assert!(a.to_string().ends_with("-01"), "{a}");
        assert_eq!(TraceParent::or_start(Some(b"junk")).to_string().len(), LEN);
        assert_eq!(
            TraceParent::or_start(Some(EXAMPLE.as_bytes())).to_string(),
            EXAMPLE
        );
    }

    #[test]
    fn a_log_field_shows_a_valid_header_or_a_dash() {
        let field = LogField::of(Some(EXAMPLE.as_bytes()));
        assert_eq!(field.to_string(), format!("traceparent={EXAMPLE}"));
        assert_eq!(LogField::of(Some(b"nonsense")).to_string(), "traceparent=-");
        assert_eq!(LogField::of(None).to_string(), "traceparent=-");
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent_id() {
        let parent = parse(EXAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.parent_id, parent.parent_id);
        assert_eq!(child.flags, parent.flags);
        assert_eq!(parse(&child.to_string()), Some(child));
    }
}
