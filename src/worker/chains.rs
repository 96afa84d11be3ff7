//! One chain per order: the requests of one (partition, key) settle one after another, in
//! offset order; different orders never wait for each other.
//!
//! The poll loop hands each new request to its order's chain ([`Chains::push`]) and keeps
//! polling; a chain is a task that lives while its order has requests queued. A request
//! whose settling fails (a broker away, a read-back that timed out) is tried again after a
//! pause, so a later request of the same order never overtakes it; settling is safe to
//! repeat (the results store answers a repeat from its record). Each settled request is
//! reported to the poll loop, which commits each partition's settled prefix
//! (`settled_prefix.rs`).
//!
//! A chain gives up, leaving its requests unsettled for the next owner to read, when its
//! partition is no longer this worker's or the worker is stopping.

use super::{Worker, request, settle};
use crate::kafka;
use crate::wire::traceparent::{self, LogField};
use krafka::ConsumerRecord;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The first pause before a failed request is tried again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// An order: a request partition and a record key.
type Order = (i32, Vec<u8>);

/// A request that needs no further work: its reply is acknowledged, or it was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settled {
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Which reading of the partition it came from (`pipeline.rs`).
    pub(super) reading: u64,
}

/// A request as a chain holds it: the record, the reading it came from, and when it was
/// polled (for `kreply_worker_settle_duration_seconds`).
type Held = (ConsumerRecord, u64, Instant);

/// The chains of every order with requests queued, and what they share.
pub(super) struct Chains {
    shared: Arc<Shared>,
    settled: mpsc::UnboundedSender<Settled>,
}

struct Shared {
    /// Per order with a live chain: its requests not started yet. An entry exists exactly
    /// while its chain runs.
    queues: Mutex<HashMap<Order, VecDeque<Held>>>,
    /// Requests queued or being settled.
    held: AtomicUsize,
    /// The partitions this worker still owns; chains of others give up.
    owned: Mutex<HashSet<i32>>,
    /// Set on a stop: a failed request is not tried again.
    stopping: AtomicBool,
}

impl Chains {
    /// No chains yet; settled requests are reported on the receiver.
    pub(super) fn new() -> (Chains, mpsc::UnboundedReceiver<Settled>) {
        let (settled, reports) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queues: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            owned: Mutex::new(HashSet::new()),
            stopping: AtomicBool::new(false),
        });
        (Chains { shared, settled }, reports)
    }

    /// Requests queued or being settled.
    pub(super) fn held(&self) -> usize {
        self.shared.held.load(Ordering::Acquire)
    }

    /// The partitions this worker owns now: chains of the others give up.
    pub(super) fn own(&self, partitions: &HashSet<i32>) {
        *lock(&self.shared.owned) = partitions.clone();
    }

    /// A stop was asked for: requests under way finish, a failed one is not tried again.
    pub(super) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Queues `record` (of the partition's reading `reading`) behind its order's earlier
    /// requests, or starts its order's chain.
    pub(super) fn push(&self, worker: &Arc<Worker>, record: ConsumerRecord, reading: u64) {
        let mut order = (
            record.partition,
            record.key.as_deref().unwrap_or_default().to_vec(),
        );
        // A lookup only reads: behind its order's payment at the PG it would wait for the
        // payment to finish, and could never answer "in progress". Its own chain.
        if request::is_lookup(record.value.as_deref().unwrap_or_default()) {
            order.1.extend_from_slice(b"\xfflookup@");
            order.1.extend_from_slice(&record.offset.to_be_bytes());
        }
        self.shared.held.fetch_add(1, Ordering::AcqRel);
        // The poll that brought it has just returned.
        let polled = Instant::now();
        let mut queues = lock(&self.shared.queues);
        if let Some(queue) = queues.get_mut(&order) {
            queue.push_back((record, reading, polled));
            return;
        }
        queues.insert(order.clone(), VecDeque::new());
        drop(queues);
        let chain = Chain {
            worker: Arc::clone(worker),
            shared: Arc::clone(&self.shared),
            settled: self.settled.clone(),
            order,
        };
        tokio::spawn(chain.run((record, reading, polled)));
    }
}

/// One order's chain.
struct Chain {
    worker: Arc<Worker>,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedSender<Settled>,
    order: Order,
}

impl Chain {
    /// Settles `first`, then every request queued behind it, until none is left.
    async fn run(self, first: Held) {
        let mut next = Some(first);
        while let Some((record, reading, polled)) = next {
            let done = self.settle(&record).await;
            self.shared.held.fetch_sub(1, Ordering::AcqRel);
            next = if done { self.next() } else { self.give_up() };
            if done {
                self.worker.metrics.settled(polled.elapsed());
                let settled = Settled {
                    partition: record.partition,
                    offset: record.offset,
                    reading,
                };
                let _ = self.settled.send(settled);
            }
        }
    }

    /// Settles `record`, trying again after a failure while the partition is still ours
    /// and no stop was asked for; `false` when it gave up.
    async fn settle(&self, record: &ConsumerRecord) -> bool {
        let mut pause = FIRST_RETRY;
        loop {
            if settle_record(&self.worker, record).await {
                return true;
            }
            if !self.still_ours() || self.shared.stopping.load(Ordering::Acquire) {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    fn still_ours(&self) -> bool {
        lock(&self.shared.owned).contains(&self.order.0)
    }

    /// The next request of this order, or `None` (and the chain ends) when none is queued
    /// or the partition is no longer ours.
    fn next(&self) -> Option<Held> {
        if !self.still_ours() {
            return self.give_up();
        }
        let mut queues = lock(&self.shared.queues);
        let queue = queues.get_mut(&self.order)?;
        let next = queue.pop_front();
        if next.is_none() {
            queues.remove(&self.order);
        }
        next
    }

    /// Ends the chain, leaving its queued requests unsettled: the next reader of the
    /// partition reads them again.
    fn give_up(&self) -> Option<Held> {
        let dropped = lock(&self.shared.queues)
            .remove(&self.order)
            .map_or(0, |queue| queue.len());
        self.shared.held.fetch_sub(dropped, Ordering::AcqRel);
        None
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    match settle::settle_and_reply(worker, item, record.partition, record.timestamp).await {
        Ok(()) => true,
        Err(why) => {
            log::error!(
                "worker: request at {at}: {why}; it will be tried again traceparent={trace}"
            );
            false
        }
    }
}
