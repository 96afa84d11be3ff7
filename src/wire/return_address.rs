//! The return address on a request: the headers that bring its reply back to the host
//! that waits for it (the Return Address and Correlation Identifier patterns, in Spring's
//! encodings; see `../shared/wire-conventions.md`).
//!
//! The reply topic and, in partition-per-host routing, the reply partition are the same on
//! every request a host sends, so they are fixed once at startup; only the correlation id
//! differs. A NestJS request names a reply partition in topic-per-host routing too, as
//! NestJS's client always does ([`Dialect::reply_partition`]). Exactly one header of each
//! name, and never `spring_json_header_types`.

use crate::wire::correlation_id::CorrelationId;
use crate::wire::dialect::Dialect;
use crate::wire::header_names::HeaderNames;

/// Where this host's replies go, under the header names in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAddress {
    names: HeaderNames,
    /// How the partition is spelled (the id comes spelled already).
    dialect: Dialect,
    topic: String,
    /// The partition this host owns (partition-per-host routing); `None`: it reads every
    /// partition of `topic`, and the dialect decides whether a request names one.
    partition: Option<i32>,
}

impl ReturnAddress {
    pub fn new(
        names: HeaderNames,
        dialect: Dialect,
        topic: &str,
        partition: Option<i32>,
    ) -> ReturnAddress {
        ReturnAddress {
            names,
            dialect,
            topic: topic.to_string(),
            partition,
        }
    }

    /// The request's routing headers: the correlation id, the UTF-8 reply topic, and the
    /// reply partition when the dialect names one (Spring: 4 bytes big-endian, only the
    /// partition this host owns; NestJS: digits, always).
    pub fn headers(&self, id: &CorrelationId) -> Vec<(String, Vec<u8>)> {
        let names = &self.names;
        let mut headers = vec![
            (names.correlation_id.clone(), id.as_bytes().to_vec()),
            (names.reply_topic.clone(), self.topic.as_bytes().to_vec()),
        ];
        if let Some(partition) = self.dialect.reply_partition(self.partition) {
            headers.push((
                names.reply_partition.clone(),
                self.dialect.partition_bytes(partition),
            ));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host prod1's return address in topic-per-host routing, spelled in `dialect`.
    fn prod1(dialect: Dialect) -> ReturnAddress {
        ReturnAddress::new(
            HeaderNames::default(),
            dialect,
            "payment_response_prod1",
            None,
        )
    }

    /// The correlation id and reply topic headers every request of prod1 carries.
    fn prod1_headers(id: &CorrelationId) -> Vec<(String, Vec<u8>)> {
        vec![
            ("kafka_correlationId".to_string(), id.as_bytes().to_vec()),
            (
                "kafka_replyTopic".to_string(),
                b"payment_response_prod1".to_vec(),
            ),
        ]
    }

    #[test]
    fn topic_per_host_names_the_topic_and_no_partition() {
        let id = CorrelationId::new_spring();
        assert_eq!(prod1(Dialect::Spring).headers(&id), prod1_headers(&id));
    }

    #[test]
    fn partition_per_host_adds_the_partition_as_four_big_endian_bytes() {
        let id = CorrelationId::new_spring();
        let address = ReturnAddress::new(
            HeaderNames::default(),
            Dialect::Spring,
            "payment_response",
            Some(258),
        );
        let headers = address.headers(&id);
        assert_eq!(
            headers[2],
            ("kafka_replyPartition".to_string(), vec![0, 0, 1, 2])
        );
    }

    #[test]
    fn renamed_headers_carry_the_same_bytes() {
        let names = HeaderNames {
            correlation_id: "corr".into(),
            reply_topic: "reply_to".into(),
            reply_partition: "reply_part".into(),
        };
        let id = CorrelationId::new_spring();
        let headers = ReturnAddress::new(names, Dialect::Spring, "r", Some(1)).headers(&id);
        let named: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(named, ["corr", "reply_to", "reply_part"]);
        assert_eq!(headers[0].1, id.as_bytes());
    }

    #[test]
    fn nestjs_in_topic_per_host_routing_names_the_lowest_partition_as_its_client_does() {
        let id = Dialect::Nestjs.new_correlation_id();
        let mut expected = prod1_headers(&id);
        expected.push(("kafka_replyPartition".to_string(), b"0".to_vec()));
        assert_eq!(prod1(Dialect::Nestjs).headers(&id), expected);
    }

    #[test]
    fn nestjs_spells_the_partition_in_digits() {
        let id = Dialect::Nestjs.new_correlation_id();
        let address = ReturnAddress::new(HeaderNames::default(), Dialect::Nestjs, "r", Some(12));
        let headers = address.headers(&id);
        assert_eq!(headers[0].1.len(), 36);
        assert_eq!(headers[2].1, b"12");
    }
}
