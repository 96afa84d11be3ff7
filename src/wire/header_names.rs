//! The names of the headers that route a reply back: the correlation id, the reply topic
//! and the reply partition.
//!
//! Spring's names by default (`KafkaHeaders.CORRELATION_ID`, `REPLY_TOPIC`,
//! `REPLY_PARTITION`). Spring lets an application rename them
//! (`ReplyingKafkaTemplate.setCorrelationHeaderName` and its siblings), so a worker fleet
//! may expect other names; `"header_names"` in the config names them for the gateway and
//! the reference worker alike. The encodings do not change with the names.

use crate::wire::record::headers;
use crate::wire::traceparent;
use serde::{Deserialize, Serialize};

/// The names in use, read from `"header_names"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderNames {
    /// On the request and echoed on the reply: 16 raw bytes.
    pub correlation_id: String,
    /// On the request: the UTF-8 topic to reply to.
    pub reply_topic: String,
    /// On the request, in partition-per-host routing only: the 4-byte big-endian partition.
    pub reply_partition: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            correlation_id: "kafka_correlationId".to_string(),
            reply_topic: "kafka_replyTopic".to_string(),
            reply_partition: "kafka_replyPartition".to_string(),
        }
    }
}

/// Headers kreply itself puts on the same records, which no renamed header may shadow.
const FIXED: [&str; 3] = [
    headers::IDEMPOTENCY_KEY,
    headers::ERROR,
    traceparent::HEADER,
];

impl HeaderNames {
    /// Why these names cannot work, if they cannot: an empty name, or a name used twice
    /// (a worker would read one header as another).
    pub fn check(&self) -> Result<(), String> {
        let named = [
            ("correlation_id", &self.correlation_id),
            ("reply_topic", &self.reply_topic),
            ("reply_partition", &self.reply_partition),
        ];
        for (i, (key, name)) in named.iter().enumerate() {
            if name.is_empty() {
                return Err(format!(
                    "\"header_names.{key}\" is empty; name the header, or leave the key out for Spring's name"
                ));
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, n)| n == name) {
                return Err(format!(
                    "\"header_names.{key}\" and \"header_names.{other}\" are both \"{name}\"; each header needs a name of its own"
                ));
            }
            if FIXED.contains(&name.as_str()) {
                return Err(format!(
                    "\"header_names.{key}\" is \"{name}\", a header kreply already uses for something else; choose another name"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(json: &str) -> HeaderNames {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn springs_names_are_the_default_and_one_may_be_renamed_alone() {
        let spring = names("{}");
        assert_eq!(spring.correlation_id, "kafka_correlationId");
        assert_eq!(spring.reply_topic, "kafka_replyTopic");
        assert_eq!(spring.reply_partition, "kafka_replyPartition");
        spring.check().unwrap();
        let renamed = names(r#"{"correlation_id": "x-corr"}"#);
        assert_eq!(
            (
                renamed.correlation_id.as_str(),
                renamed.reply_topic.as_str()
            ),
            ("x-corr", "kafka_replyTopic")
        );
        renamed.check().unwrap();
    }

    #[test]
    fn empty_shared_and_shadowing_names_are_refused_naming_the_key() {
        let err = names(r#"{"reply_topic": ""}"#).check().unwrap_err();
        assert!(
            err.starts_with("\"header_names.reply_topic\" is empty"),
            "{err}"
        );
        let err = names(r#"{"reply_partition": "kafka_replyTopic"}"#)
            .check()
            .unwrap_err();
        assert!(
            err.starts_with(
                "\"header_names.reply_partition\" and \"header_names.reply_topic\" are both"
            ),
            "{err}"
        );
        let err = names(r#"{"correlation_id": "traceparent"}"#)
            .check()
            .unwrap_err();
        assert!(err.contains("already uses"), "{err}");
        assert!(serde_json::from_str::<HeaderNames>(r#"{"replyTopic": "x"}"#).is_err());
    }
}
