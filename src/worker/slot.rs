//! Where a payment's records live in the results topic: a payment's **slot**.
//!
//! The results topic is partitioned like the requests: a payment's records go to the
//! results partition numbered like the request partition it arrived on. The request
//! partition follows the order id (the request's record key), so an order's requests and
//! its idempotency state have one owner, and a worker reads, keeps and restores only the
//! results partitions of the request partitions it owns: more workers divide the state.
//!
//! A payment is the pair (order id, idempotency key). The record key in the results topic
//! is that pair as a JSON array, `["A-1","pay-1"]`: unambiguous whatever either holds,
//! and readable in `kafka-console-consumer`. The same key on another order is another
//! payment; the PG's own de-duplication by key is what stands between them
//! (docs/guarantees.md).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The results partition: the request's partition.
    pub partition: i32,
    /// The results record key: `[order id, idempotency key]` as JSON.
    pub key: String,
}

impl Slot {
    /// The slot of the payment with `idempotency_key` on `order_id`, whose request arrived
    /// on request partition `partition`.
    pub fn of(partition: i32, order_id: &str, idempotency_key: &str) -> Slot {
        Slot {
            partition,
            key: serde_json::json!([order_id, idempotency_key]).to_string(),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on results partition {}", self.key, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_is_told_apart_whatever_its_parts_hold() {
        let a = Slot::of(1, "A/1", "k");
        let b = Slot::of(1, "A", "1/k");
        assert_ne!(a.key, b.key);
        assert_eq!(a.key, r#"["A/1","k"]"#);
        assert_ne!(Slot::of(1, "A\"", "k").key, Slot::of(1, "A", "\"k").key);
        assert_eq!(Slot::of(2, "A", "k").partition, 2);
    }
}
