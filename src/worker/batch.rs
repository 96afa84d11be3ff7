//! Settling one polled batch: one task per order (partition and key), each in offset
//! order, and which offsets ended settled.

use super::{Worker, request, settle};
use crate::kafka;
use crate::wire::traceparent::{self, LogField};
use krafka::ConsumerRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Per partition: every offset of the batch, and whether it was settled.
pub(super) type Settled = BTreeMap<i32, BTreeMap<i64, bool>>;

/// Settles a batch: one task per (partition, key), each in offset order, stopping at its
/// first failure so a later request of the same order never overtakes an earlier one.
pub(super) async fn settle(worker: &Arc<Worker>, records: Vec<ConsumerRecord>) -> Settled {
    let mut settled: Settled = BTreeMap::new();
    let mut chains: HashMap<(i32, Vec<u8>), Vec<ConsumerRecord>> = HashMap::new();
    for record in records {
        settled
            .entry(record.partition)
            .or_default()
            .insert(record.offset, false);
        let key = (
            record.partition,
            record.key.as_deref().unwrap_or_default().to_vec(),
        );
        chains.entry(key).or_default().push(record);
    }
    let mut tasks = JoinSet::new();
    for chain in chains.into_values() {
        let worker = Arc::clone(worker);
        tasks.spawn(async move {
            let mut done = Vec::new();
            for record in chain {
                let ok = settle_record(&worker, &record).await;
                done.push((record.partition, record.offset, ok));
                if !ok {
                    break;
                }
            }
            done
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (partition, offset, ok) in done.unwrap_or_default() {
            settled.entry(partition).or_default().insert(offset, ok);
        }
    }
    settled
}

/// `true` when the record needs no further work (answered, or unanswerable and skipped).
async fn settle_record(worker: &Worker, record: &ConsumerRecord) -> bool {
    let at = kafka::ConsumedAt::of(record);
    let header = |name: &str| record.header(name).flatten().map(|bytes| bytes.as_ref());
    let item = match request::read(
        header,
        record.key.as_deref().unwrap_or_default(),
        record.value.as_deref(),
        &worker.names,
    ) {
        Ok(item) => item,
        Err(why) => {
            let trace = LogField::of(header(traceparent::HEADER));
            log::warn!("worker: request at {at} cannot be answered ({why}); skipped {trace}");
            worker.metrics.request("skipped");
            return true;
        }
    };
    let trace = item.trace;
    match settle::settle_and_reply(worker, item, record.timestamp).await {
        Ok(()) => true,
        Err(why) => {
            log::error!(
                "worker: request at {at}: {why}; it will be read again traceparent={trace}"
            );
            false
        }
    }
}
