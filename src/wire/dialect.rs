//! Dialects: how one request-reply exchange is spelled on the wire, Spring Kafka's way or
//! NestJS's (see `../shared/wire-conventions.md`).
//!
//! Both use the same header names (`kafka_correlationId`, `kafka_replyTopic`,
//! `kafka_replyPartition`); they differ in the bytes:
//!
//! | | Spring (default) | NestJS |
//! |---|---|---|
//! | correlation id | 16 raw bytes (the UUID's halves, big-endian) | UTF-8 text (NestJS sends a UUID's 36 characters) |
//! | reply partition | 4-byte big-endian int32, only in partition-per-host routing | decimal ASCII digits, always (see [`Dialect::reply_partition`]) |
//! | worker error | `kreply_error: <code>`, the value says why | `kafka_nest-err: <text>` (kreply's worker: `{"status":"error","code":..,"message":..}`) |
//! | end of the answer | the reply itself | `kafka_nest-is-disposed` (one zero byte) |
//!
//! The gateway speaks the dialect its config names. The worker answers in the dialect it
//! was asked in, told by [`Dialect::of_request`].

use crate::wire::correlation_id::CorrelationId;
use crate::wire::record::headers;
use crate::wire::reply_error::ReplyError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// On a NestJS reply: the handler's error (`KafkaHeaders.NEST_ERR`).
pub const NEST_ERR: &str = "kafka_nest-err";
/// On a NestJS reply: the answer is complete (`KafkaHeaders.NEST_IS_DISPOSED`).
pub const NEST_IS_DISPOSED: &str = "kafka_nest-is-disposed";

/// A NestJS id as kreply sends it: a UUID's hyphenated text.
const NEST_ID_LEN: usize = 36;

/// The lowest partition of any topic: what NestJS's client names as its reply partition
/// when it reads every partition of its reply topic.
const NEST_LOWEST_PARTITION: i32 = 0;

/// One way of spelling the exchange, as `"dialect"` names it in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Spring,
    Nestjs,
}

/// A worker's error as a reply carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerError {
    pub code: ReplyError,
    /// What the error header itself said (NestJS); `None` when the value says it (Spring).
    pub said: Option<Value>,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Spring => "spring",
            Dialect::Nestjs => "nestjs",
        }
    }

    /// The correlation id that stands for `uuid` in this dialect. The same UUID is the
    /// `x-correlation-id` the caller sees, so `GET /v1/requests/{uuid}` finds it again.
    pub fn correlation_id(self, uuid: Uuid) -> CorrelationId {
        match self {
            Dialect::Spring => CorrelationId::from_wire(uuid.as_bytes()),
            Dialect::Nestjs => CorrelationId::from_wire(uuid.hyphenated().to_string().as_bytes()),
        }
    }

    /// A fresh id for a request.
    pub fn new_correlation_id(self) -> CorrelationId {
        self.correlation_id(Uuid::new_v4())
    }

    /// Whether a reply's id has the shape of one this gateway sends: anything else
    /// cannot name a waiter, and is dropped unread.
    pub fn is_own_id(self, id: &[u8]) -> bool {
        match self {
            Dialect::Spring => id.len() == CorrelationId::SPRING_LEN,
            Dialect::Nestjs => id.len() == NEST_ID_LEN,
        }
    }

    /// The dialect among `in_use` whose ids have `id`'s shape: a gateway whose flows speak
    /// both tells its own replies apart by length alone.
    pub fn of_own_id(id: &[u8], in_use: &[Dialect]) -> Option<Dialect> {
        in_use.iter().copied().find(|dialect| dialect.is_own_id(id))
    }

    /// The reply partition a request names, given the one this host owns (`None`: it reads
    /// every partition of its topic, topic-per-host routing).
    ///
    /// Spring's `ReplyingKafkaTemplate` sends a partition only when it is told one, so in
    /// topic-per-host routing a Spring request has none and the worker picks. NestJS's
    /// `ClientKafka` always sends one: the lowest partition of the reply topic that its
    /// consumer was assigned (`Math.min(...memberPartitions)`, as a decimal string). A
    /// host that reads every partition of its topic is, in NestJS's terms, a client alone
    /// in its group, assigned them all, so it names the lowest: partition 0, which every
    /// topic has. Spreading the replies instead (round-robin, or a hash of the id, over
    /// the topic's partitions) was the alternative; naming what NestJS names keeps the
    /// requests byte for byte those of NestJS's own client, so a fleet that serves
    /// ClientKafka serves kreply, and needs no partition count when a request is built, so
    /// it can never name a partition the topic lacks. The cost: a NestJS flow's replies
    /// share one partition of the host's topic, one leader, as every host's do in
    /// partition-per-host routing.
    pub fn reply_partition(self, owned: Option<i32>) -> Option<i32> {
        match self {
            Dialect::Spring => owned,
            Dialect::Nestjs => owned.or(Some(NEST_LOWEST_PARTITION)),
        }
    }

    /// The reply partition header's bytes.
    pub fn partition_bytes(self, partition: i32) -> Vec<u8> {
        match self {
            Dialect::Spring => partition.to_be_bytes().to_vec(),
            Dialect::Nestjs => partition.to_string().into_bytes(),
        }
    }

    /// The dialect a request was asked in. Decimal digits in the reply partition mean
    /// NestJS: as Spring's int32, four digit bytes would name partition 808,464,432 or
    /// more, which no topic has. Without a partition header, a 16-byte id is Spring's and
    /// anything else is a string id (a NestJS-like client that names no partition; kreply's
    /// gateway and NestJS's `ClientKafka` always name one).
    pub fn of_request(correlation_id: &[u8], reply_partition: Option<&[u8]>) -> Dialect {
        match reply_partition {
            Some(bytes) if is_decimal(bytes) => Dialect::Nestjs,
            Some(_) => Dialect::Spring,
            None if correlation_id.len() == CorrelationId::SPRING_LEN => Dialect::Spring,
            None => Dialect::Nestjs,
        }
    }

    /// Reads the reply partition header; the error names what is wrong with it.
    pub fn read_partition(self, bytes: &[u8]) -> Result<i32, &'static str> {
        match self {
            Dialect::Spring => bytes
                .try_into()
                .map(i32::from_be_bytes)
                .map_err(|_| "is not 4 bytes"),
            Dialect::Nestjs => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<i32>().ok())
                .filter(|p| *p >= 0)
                .ok_or("is not a partition number"),
        }
    }

    /// The worker's error on a reply, if it carries one; `header` reads a header by name.
    pub fn error_of<'a>(self, header: impl Fn(&str) -> Option<&'a [u8]>) -> Option<WorkerError> {
        match self {
            Dialect::Spring => header(headers::ERROR).map(|code| WorkerError {
                code: ReplyError::from_code(code),
                said: None,
            }),
            Dialect::Nestjs => header(NEST_ERR).map(nest_error),
        }
    }

    /// Whether a reply only closes an answer already given: an older NestJS server sends
    /// its value, then a record with nothing but `kafka_nest-is-disposed`.
    pub fn is_end_marker<'a>(
        self,
        value: Option<&[u8]>,
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> bool {
        self == Dialect::Nestjs
            && value.is_none_or(|v| v.is_empty() || v == b"null")
            && header(NEST_IS_DISPOSED).is_some()
            && header(NEST_ERR).is_none()
    }

    /// The headers a worker's reply adds in this dialect, for an answer with `error` (and
    /// `detail`, why) or without: NestJS's client waits for `kafka_nest-is-disposed`
    /// before it completes, and reads an error only from `kafka_nest-err`.
    pub fn reply_headers(self, error: Option<ReplyError>, detail: &str) -> Vec<(String, Vec<u8>)> {
        match (self, error) {
            (Dialect::Spring, None) => vec![],
            (Dialect::Spring, Some(error)) => {
                vec![(headers::ERROR.to_string(), error.code().as_bytes().to_vec())]
            }
            (Dialect::Nestjs, error) => {
                let mut nest = vec![(NEST_IS_DISPOSED.to_string(), vec![0])];
                if let Some(error) = error {
                    let err = json!({"status": "error", "code": error.code(), "message": detail});
                    nest.push((NEST_ERR.to_string(), err.to_string().into_bytes()));
                }
                nest
            }
        }
    }
}

/// A NestJS error: kreply's worker names its code in a JSON object; any other error (a
/// string, `{"status":"error","message":..}` from an exception filter) is one this gateway
/// does not know, so its outcome is unknown.
fn nest_error(err: &[u8]) -> WorkerError {
    let said = serde_json::from_slice(err)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(err).into_owned()));
    let code = said
        .get("code")
        .and_then(Value::as_str)
        .map_or(ReplyError::Unrecognised, |c| {
            ReplyError::from_code(c.as_bytes())
        });
    WorkerError {
        code,
        said: Some(said),
    }
}

fn is_decimal(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<&'static [u8]> {
        None
    }

    #[test]
    fn one_uuid_is_sixteen_bytes_in_spring_and_its_text_in_nestjs() {
        let uuid = Uuid::new_v4();
        let spring = Dialect::Spring.correlation_id(uuid);
        let nest = Dialect::Nestjs.correlation_id(uuid);
        assert_eq!(spring.as_bytes(), uuid.as_bytes());
        assert_eq!(nest.as_bytes(), uuid.hyphenated().to_string().as_bytes());
        assert_eq!(spring.to_string(), nest.to_string());
        assert!(Dialect::Spring.is_own_id(spring.as_bytes()));
        assert!(Dialect::Nestjs.is_own_id(nest.as_bytes()));
        assert!(!Dialect::Nestjs.is_own_id(spring.as_bytes()));
    }

    #[test]
    fn partitions_are_big_endian_in_spring_and_digits_in_nestjs_both_ways() {
        assert_eq!(Dialect::Spring.partition_bytes(258), [0, 0, 1, 2]);
        assert_eq!(Dialect::Nestjs.partition_bytes(258), b"258");
        assert_eq!(Dialect::Spring.read_partition(&[0, 0, 1, 2]), Ok(258));
        assert_eq!(Dialect::Nestjs.read_partition(b"258"), Ok(258));
        assert!(Dialect::Spring.read_partition(b"2").is_err());
        assert!(Dialect::Nestjs.read_partition(b"-1").is_err());
        assert!(Dialect::Nestjs.read_partition(&[0, 0, 0, 1]).is_err());
    }

    #[test]
    fn nestjs_always_names_a_reply_partition_and_spring_only_an_owned_one() {
        assert_eq!(Dialect::Spring.reply_partition(None), None);
        assert_eq!(Dialect::Spring.reply_partition(Some(4)), Some(4));
        assert_eq!(Dialect::Nestjs.reply_partition(Some(4)), Some(4));
        assert_eq!(Dialect::Nestjs.reply_partition(None), Some(0));
    }

    #[test]
    fn the_request_tells_its_dialect() {
        let spring_id = [7; 16];
        let nest_id = b"7b2d0d2e-8d6a-4a43-9a53-7b6c2a0b0b71";
        assert_eq!(Dialect::of_request(&spring_id, None), Dialect::Spring);
        assert_eq!(
            Dialect::of_request(&spring_id, Some(&[0, 0, 0, 3])),
            Dialect::Spring
        );
        assert_eq!(Dialect::of_request(nest_id, Some(b"3")), Dialect::Nestjs);
        assert_eq!(Dialect::of_request(nest_id, Some(b"1000")), Dialect::Nestjs);
        // A 16-character string id still says NestJS through its partition.
        assert_eq!(
            Dialect::of_request(b"abcdefghijklmnop", Some(b"0")),
            Dialect::Nestjs
        );
        assert_eq!(Dialect::of_request(nest_id, None), Dialect::Nestjs);
    }

    #[test]
    fn a_nestjs_error_names_a_kreply_code_or_is_unknown() {
        let ours = br#"{"status":"error","code":"declined","message":"limit"}"#;
        let header = |name: &str| (name == NEST_ERR).then_some(&ours[..]);
        let error = Dialect::Nestjs.error_of(header).unwrap();
        assert_eq!(error.code, ReplyError::Declined);
        assert_eq!(error.said.unwrap()["message"], "limit");
        let foreign = |name: &str| (name == NEST_ERR).then_some(&b"Internal server error"[..]);
        let error = Dialect::Nestjs.error_of(foreign).unwrap();
        assert_eq!(error.code, ReplyError::Unrecognised);
        assert_eq!(error.said, Some(json!("Internal server error")));
        assert_eq!(Dialect::Nestjs.error_of(none), None);
        // Each dialect reads only its own error header.
        let spring = |name: &str| (name == headers::ERROR).then_some(&b"declined"[..]);
        assert_eq!(Dialect::Nestjs.error_of(spring), None);
        assert_eq!(
            Dialect::Spring.error_of(spring).unwrap().code,
            ReplyError::Declined
        );
    }

    #[test]
    fn a_worker_reply_in_nestjs_is_disposed_and_its_error_round_trips() {
        let ok = Dialect::Nestjs.reply_headers(None, "");
        assert_eq!(ok, [(NEST_IS_DISPOSED.to_string(), vec![0])]);
        let failed = Dialect::Nestjs.reply_headers(Some(ReplyError::PgError), "down");
        let err = &failed[1].1;
        let header = |name: &str| (name == NEST_ERR).then_some(&err[..]);
        assert_eq!(
            Dialect::Nestjs.error_of(header).unwrap().code,
            ReplyError::PgError
        );
        assert!(Dialect::Spring.reply_headers(None, "").is_empty());
    }

    #[test]
    fn only_a_bare_disposed_record_is_an_end_marker() {
        let disposed = |name: &str| (name == NEST_IS_DISPOSED).then_some(&[0u8][..]);
        assert!(Dialect::Nestjs.is_end_marker(None, disposed));
        assert!(!Dialect::Nestjs.is_end_marker(Some(b"{}"), disposed));
        assert!(!Dialect::Spring.is_end_marker(None, disposed));
        assert!(!Dialect::Nestjs.is_end_marker(None, none));
    }

    #[test]
    fn the_config_names_a_dialect_in_lowercase() {
        let read = |s: &str| serde_json::from_str::<Dialect>(s);
        assert_eq!(read("\"nestjs\"").unwrap(), Dialect::Nestjs);
        assert_eq!(read("\"spring\"").unwrap(), Dialect::Spring);
        assert!(read("\"NestJS\"").is_err());
    }
}
