//! A record the broker acknowledged but stored late (issue 8's soak: SOAK-57824, SOAK-329).
//!
//! tansu 0.6.0 takes a produce batch's offsets before it stores the batch, and its fetch
//! returns whatever batches are stored past the fetch offset. Two producers writing one
//! partition at once can therefore have the later batch fetched first, and a plain consumer
//! moves past the earlier one for good. Every partition kreply reads is written by several
//! producers (gateways, workers), so its consumers check each poll for a hole and read it
//! again ([`kreply::kafka::offset_gaps`]). This test makes the race happen and checks that
//! a reader doing so receives every acknowledged record, once.

mod common;

use common::Broker;
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::producer::{Acks, Producer};
use krafka::{Kafka, Record};
use kreply::kafka::offset_gaps::{self, OffsetGaps};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "stored-late";
const PRODUCERS: usize = 6;
/// Sends each producer has in flight at once, so its batches are small and many.
const IN_FLIGHT: usize = 4;
const ROUNDS_PER_PASS: usize = 100;
/// Passes are repeated until the race has happened at least once (a hole read again).
const MAX_PASSES: usize = 10;

#[test]
fn a_reader_reads_every_record_of_a_partition_written_by_many_producers_at_once() {
    let broker = Broker::start();
    broker.create_topics(&[TOPIC], 1);
    let addr = broker.addr.clone();
    broker.runtime.block_on(async move {
        let reader = Reader::start(&addr).await;
        let producers = producers(&addr).await;
        let mut acked = BTreeSet::new();
        let mut passes = 0;
        while passes < MAX_PASSES && (passes < 2 || reader.holes_read_again() == 0) {
            acked.extend(write_pass(&producers, passes).await);
            passes += 1;
        }
        let holes = reader.holes_read_again();
        let delivered = reader.finish(acked.len()).await;
        let unique: BTreeSet<i64> = delivered.iter().copied().collect();
        let missing: Vec<&i64> = acked.difference(&unique).collect();
        println!(
            "{} records acknowledged in {passes} passes, {} delivered, holes read again: {holes}",
            acked.len(),
            delivered.len(),
        );
        assert!(
            missing.is_empty(),
            "acknowledged, never delivered: {missing:?}"
        );
        assert_eq!(
            delivered.len(),
            unique.len(),
            "a record was delivered twice"
        );
    });
}

async fn producers(addr: &str) -> Vec<Arc<Producer>> {
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let kafka = Kafka::builder(addr).connect().await.unwrap();
        let producer = kafka
            .producer()
            .acks(Acks::All)
            .idempotent(true)
            .linger(Duration::from_millis(1))
            .build()
            .await
            .unwrap();
        producers.push(Arc::new(producer));
    }
    producers
}

/// Every producer writes `ROUNDS_PER_PASS` x `IN_FLIGHT` records at once; their offsets.
async fn write_pass(producers: &[Arc<Producer>], pass: usize) -> Vec<i64> {
    let mut writers = Vec::new();
    for (n, producer) in producers.iter().enumerate() {
        let producer = Arc::clone(producer);
        writers.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for round in 0..ROUNDS_PER_PASS {
                let sends = (0..IN_FLIGHT).map(|k| {
                    let record = Record::new(TOPIC, format!("{pass}-{n}-{round}-{k}")).key("one");
                    let producer = Arc::clone(&producer);
                    tokio::spawn(async move { producer.send(record).await })
                });
                for send in sends.collect::<Vec<_>>() {
                    offsets.push(send.await.unwrap().expect("acknowledged").offset);
                }
            }
            offsets
        }));
    }
    let mut offsets = Vec::new();
    for writer in writers {
        offsets.extend(writer.await.unwrap());
    }
    offsets
}

/// A live reader of the partition, as kreply's consumers read: repeats dropped, holes
/// read again.
struct Reader {
    delivered: Arc<Mutex<Vec<i64>>>,
    holes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    async fn start(addr: &str) -> Reader {
        let consumer = Kafka::builder(addr)
            .connect()
            .await
            .unwrap()
            .consumer_without_group()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(1))
            .max_poll_records(-1)
            .build()
            .await
            .unwrap();
        consumer.assign(TOPIC, vec![0]).await.unwrap();
        let delivered = Arc::default();
        let holes = Arc::default();
        let stop = Arc::default();
        let task = tokio::spawn(read(
            consumer,
            Arc::clone(&delivered),
            Arc::clone(&holes),
            Arc::clone(&stop),
        ));
        Reader {
            delivered,
            holes,
            stop,
            task,
        }
    }

    fn holes_read_again(&self) -> usize {
        self.holes.load(Ordering::Relaxed)
    }

    /// What was delivered, once `expected` records were or reading went quiet.
    async fn finish(self, expected: usize) -> Vec<i64> {
        let mut quiet = 0;
        let mut last = 0;
        while quiet < 20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.delivered.lock().unwrap().len();
            if now >= expected {
                break;
            }
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.delivered.lock().unwrap().clone()
    }
}

async fn read(
    consumer: Consumer,
    delivered: Arc<Mutex<Vec<i64>>>,
    holes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let mut gaps = OffsetGaps::new(kreply::kafka::BrokerCompat::Tansu06);
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_millis(50);
        let (records, checked) = offset_gaps::poll_in_order(&consumer, TOPIC, &mut gaps, wait)
            .await
            .unwrap();
        holes.fetch_add(checked.read_again.len(), Ordering::Relaxed);
        delivered
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.offset));
    }
}
