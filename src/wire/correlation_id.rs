//! Correlation ids: the bytes that tie a reply to the request waiting for it.
//!
//! The id is kept as the exact header bytes put on the wire, because workers echo them
//! verbatim and replies are matched byte for byte. Spring's `ReplyingKafkaTemplate` sends
//! a UUID as 16 raw bytes (most- then least-significant half, big-endian), which is exactly
//! `Uuid::as_bytes`. The NestJS dialect sends the UUID's text instead (`dialect.rs`); the
//! registry does not care, since it only compares bytes.

use std::borrow::Borrow;
use std::fmt;
use uuid::Uuid;

/// The wire bytes of one `kafka_correlationId` header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Box<[u8]>);

impl CorrelationId {
    /// The length of a Spring id, the only kind this gateway sends.
    pub const SPRING_LEN: usize = 16;

    /// A fresh random id in Spring's 16-byte form.
    pub fn new_spring() -> Self {
        CorrelationId(Box::new(*Uuid::new_v4().as_bytes()))
    }

    /// The id carried by a received header.
    pub fn from_wire(bytes: &[u8]) -> Self {
        CorrelationId(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Lets the registry look a reply's header bytes up without copying them.
impl Borrow<[u8]> for CorrelationId {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// For logs and problem bodies: a UUID when it is one, else text, else hex.
impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Ok(uuid) = Uuid::from_slice(&self.0) {
            return write!(f, "{}", uuid.hyphenated());
        }
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.chars().all(|c| c.is_ascii_graphic()) => f.write_str(text),
            _ => self.0.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_ids_are_the_uuids_big_endian_halves() {
        let id = CorrelationId::new_spring();
        let uuid = Uuid::parse_str(&id.to_string()).unwrap();
        let (msb, lsb) = uuid.as_u64_pair();
        assert_eq!(&id.as_bytes()[..8], msb.to_be_bytes());
        assert_eq!(&id.as_bytes()[8..], lsb.to_be_bytes());
    }

    #[test]
    fn ids_display_as_uuid_text_or_hex() {
        assert_eq!(CorrelationId::from_wire(b"nest-42").to_string(), "nest-42");
        assert_eq!(CorrelationId::from_wire(&[0, 255]).to_string(), "00ff");
    }

    #[test]
    fn two_fresh_ids_differ() {
        assert_ne!(CorrelationId::new_spring(), CorrelationId::new_spring());
    }
}
