//! What the gateway and the worker must agree on byte for byte: the request and reply
//! records and their headers (the return address and its header names, the dialect
//! that spells them, the trace context), correlation ids, the payment envelope, dead letters, error codes and the
//! problem answers they become, and Kafka's rules for topic names.
//!
//! Nothing here knows a runtime or a client library: a worker in another language only has
//! to match these files.

pub(crate) mod correlation_id;
pub(crate) mod dead_letter;
pub(crate) mod dialect;
pub(crate) mod header_names;
pub(crate) mod json_number;
pub(crate) mod outcome_lookup;
pub(crate) mod payment;
pub(crate) mod problem;
pub(crate) mod record;
pub(crate) mod reply_error;
pub(crate) mod return_address;
pub(crate) mod topic_name;
pub(crate) mod traceparent;
