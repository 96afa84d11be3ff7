//! A record to produce, in the gateway's own terms.
//!
//! Request and dead-letter records are built here, runtime-free and testable to the byte;
//! only the Kafka side turns them into the client library's type.

/// The header names and encodings of `../shared/wire-conventions.md` (Spring dialect)
/// that are not configurable. The correlation id, reply topic and reply partition headers
/// are named in the config (`header_names.rs`); `traceparent` is in `traceparent.rs`.
pub mod headers {
    /// The caller's `Idempotency-Key`, carried from the gateway to the worker (UTF-8).
    pub const IDEMPOTENCY_KEY: &str = "kreply_idempotencyKey";
    /// On a reply: the agreed error code (UTF-8); see `reply_error.rs`.
    pub const ERROR: &str = "kreply_error";
    pub const DLT_ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    pub const DLT_ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    pub const DLT_ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    pub const DLT_ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    pub const DLT_ORIGINAL_TIMESTAMP_TYPE: &str = "kafka_dlt-original-timestamp-type";
    pub const DLT_EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    pub const DLT_EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
}

/// One record for the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// A fixed partition, else the producer's murmur2 hash of the key decides.
    pub partition: Option<i32>,
    /// When the record was made, in ms since the epoch; also its Kafka timestamp.
    pub timestamp_ms: i64,
}

impl OutgoingRecord {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Where the broker wrote a produced record, as its acknowledgement said (for records
/// read back, `kafka::ConsumedAt` is the place shown in log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenAt {
    pub partition: i32,
    pub offset: i64,
}

/// Milliseconds since the epoch, for record timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
