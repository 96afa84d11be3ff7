//! The results store: what happened to each payment, by idempotency key, kept in Kafka.
//!
//! A compacted topic is the durable record: it survives a worker restart and, unlike a
//! local file, every worker can read it, so it moves with the request partitions when the
//! group rebalances. Each worker reads the whole topic into memory, and reads it up to its
//! end again whenever it is given new request partitions, before serving them, so that
//! what the previous owner recorded is known first.
//!
//! A key always hashes to the same results partition, so offsets order the records of one
//! key: a record read back is applied only if it is newer than what is known (our own
//! `Final` must not be overwritten by our own older `Pending` arriving late).

use crate::kafka::ProducerSession;
use crate::worker::answer::Recorded;
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, Kafka, KrafkaError, Record};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a catch-up may take before the worker reports it and tries again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

pub struct ResultsStore {
    topic: String,
    partitions: Vec<i32>,
    reader: Consumer,
    producer: Arc<ProducerSession>,
    known: Mutex<HashMap<String, (i64, Recorded)>>,
}

impl ResultsStore {
    /// Opens the store on every partition of `topic`, from the beginning, and reads it all.
    pub async fn open(
        kafka: &Kafka,
        topic: &str,
        partitions: Vec<i32>,
        producer: Arc<ProducerSession>,
        fetch_max_wait: Duration,
    ) -> Result<ResultsStore, KrafkaError> {
        let reader = kafka
            .consumer_without_group()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(fetch_max_wait)
            .build()
            .await?;
        reader.assign(topic, partitions.clone()).await?;
        let store = ResultsStore {
            topic: topic.to_string(),
            partitions,
            reader,
            producer,
            known: Mutex::new(HashMap::new()),
        };
        store.catch_up().await?;
        Ok(store)
    }

    /// Reads every partition up to the end it has now.
    pub async fn catch_up(&self) -> Result<(), KrafkaError> {
        let mut ends = Vec::with_capacity(self.partitions.len());
        for &partition in &self.partitions {
            ends.push((
                partition,
                self.reader
                    .fetch_watermarks(&self.topic, partition)
                    .await?
                    .1,
            ));
        }
        let started = Instant::now();
        loop {
            let mut behind = false;
            for &(partition, end) in &ends {
                let position = self
                    .reader
                    .position(&self.topic, partition)
                    .await
                    .unwrap_or(0);
                behind |= position < end;
            }
            if !behind {
                return Ok(());
            }
            if started.elapsed() > CATCH_UP_LIMIT {
                return Err(KrafkaError::timeout(format!(
                    "reading {} to its end",
                    self.topic
                )));
            }
            for record in self.reader.poll(Duration::from_millis(200)).await? {
                self.apply(record);
            }
        }
    }

    /// What is known about `key`.
    pub fn get(&self, key: &str) -> Option<Recorded> {
        self.lock().get(key).map(|(_, recorded)| recorded.clone())
    }

    /// Writes `recorded` for `key` (acks=all) and remembers it.
    pub async fn put(&self, key: &str, recorded: &Recorded) -> Result<(), KrafkaError> {
        let value = serde_json::to_vec(recorded).unwrap_or_default();
        let meta = self
            .producer
            .send(Record::new(self.topic.as_str(), value).key(key.as_bytes().to_vec()))
            .await?;
        self.remember(key.to_string(), meta.offset, recorded.clone());
        Ok(())
    }

    fn apply(&self, record: ConsumerRecord) {
        let Some(key) = record.key_str().map(str::to_string) else {
            return;
        };
        match record
            .value
            .as_deref()
            .map(serde_json::from_slice::<Recorded>)
        {
            Some(Ok(recorded)) => self.remember(key, record.offset, recorded),
            // A tombstone forgets the key.
            None => drop(self.lock().remove(&key)),
            Some(Err(e)) => log::warn!(
                "results record for {key} at offset {} is unreadable: {e}",
                record.offset
            ),
        }
    }

    fn remember(&self, key: String, offset: i64, recorded: Recorded) {
        let mut known = self.lock();
        let newer = known.get(&key).is_none_or(|(seen, _)| offset >= *seen);
        if newer {
            known.insert(key, (offset, recorded));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Recorded)>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
