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
//!
//! Settling also reads: an attempt reads its own `pending` back ([`ResultsStore::claim`])
//! to learn what precedes it in the log, and a repeat waits for an unfinished attempt's
//! final record ([`ResultsStore::wait_settled`]). Many settle tasks read at once, so one
//! of them polls (holding `reader`) and the others wait for that poll to be applied.
//!
//! A log that started over (a re-created topic, a broker that lost its data) would leave
//! the reader asking for a topic id that no longer exists, or positioned past the new
//! log's end: tansu answers neither with an error. An attempt that cannot read its own
//! `pending` back within [`READ_BACK_STUCK`] therefore opens the reader again, on a new
//! client, from the beginning ([`ResultsStore::reopen`]).

use crate::config::Config;
use crate::kafka::{self, ProducerSession};
use crate::worker::answer::Recorded;
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, Kafka, KrafkaError, Record};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a catch-up, or reading an attempt's own `pending` back, may take before the
/// worker reports it and tries again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// One poll of the reader; it returns as soon as records come.
const READ_POLL: Duration = Duration::from_millis(200);
/// Reading a `pending` back takes tens of milliseconds; this long means the reader is stuck
/// on a log that started over.
const READ_BACK_STUCK: Duration = Duration::from_secs(3);

pub struct ResultsStore {
    topic: String,
    partitions: Vec<i32>,
    /// Held by the one task polling it; replaced by [`ResultsStore::reopen`].
    reader: tokio::sync::Mutex<Consumer>,
    /// How the reader is built again: brokers, and the fetch wait.
    config: Config,
    /// Polls applied so far: a task that waited for `poller` reads the state again first.
    polls: AtomicU64,
    /// Reopens so far: attempts stuck at the same moment reopen the reader once, not once
    /// each (each reopen connects anew, up to `connect_timeout_ms` while brokers are away).
    reopens: AtomicU64,
    producer: Arc<ProducerSession>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The newest record of each key, and its offset.
    known: HashMap<String, (i64, Recorded)>,
    /// Keys with an attempt reading its `pending` back: every record read for them.
    watched: HashMap<String, Watch>,
}

/// The records of one key from some point on, for the attempts deciding their race.
struct Watch {
    attempts: usize,
    seen: Vec<(i64, Recorded)>,
}

impl ResultsStore {
    /// Opens the store on every partition of `topic`, from the beginning, and reads it all.
    pub async fn open(
        kafka: &Kafka,
        config: &Config,
        partitions: Vec<i32>,
        producer: Arc<ProducerSession>,
    ) -> Result<ResultsStore, KrafkaError> {
        let topic = &config.worker.results_topic;
        let reader = open_reader(kafka, config, &partitions).await?;
        let store = ResultsStore {
            topic: topic.to_string(),
            partitions,
            reader: tokio::sync::Mutex::new(reader),
            config: config.clone(),
            polls: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            producer,
            state: Mutex::new(State::default()),
        };
        store.catch_up().await?;
        Ok(store)
    }

    /// Reads every partition up to the end it has now.
    pub async fn catch_up(&self) -> Result<(), KrafkaError> {
        let mut ends = Vec::with_capacity(self.partitions.len());
        for &partition in &self.partitions {
            let reader = self.reader.lock().await;
            ends.push((
                partition,
                reader.fetch_watermarks(&self.topic, partition).await?.1,
            ));
        }
        let started = Instant::now();
        loop {
            let mut behind = false;
            for &(partition, end) in &ends {
                let reader = self.reader.lock().await;
                let position = reader.position(&self.topic, partition).await.unwrap_or(0);
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
            let polls = self.polls.load(Ordering::Acquire);
            self.read_more(polls).await?;
        }
    }

    /// What is known about `key`.
    pub fn get(&self, key: &str) -> Option<Recorded> {
        self.lock()
            .known
            .get(key)
            .map(|(_, recorded)| recorded.clone())
    }

    /// Writes `pending` (whose attempt is `attempt`) for `key` and reads the log until the
    /// reader has seen it; returns the latest record of `key` before it, which decides the
    /// race ([`race::decide`](super::race::decide)). The offset in the produce ack is not
    /// trusted: the reader must meet the record itself.
    pub async fn claim(
        &self,
        key: &str,
        pending: &Recorded,
        attempt: &str,
    ) -> Result<Option<Recorded>, KrafkaError> {
        let _watch = WatchGuard::new(self, key);
        self.put(key, pending).await?;
        let mut ours = None;
        let mut met = |state: &State| {
            ours = state
                .watched
                .get(key)
                .and_then(|watch| watch.offset_of(attempt));
            ours.is_some()
        };
        let reopens = self.reopens.load(Ordering::Acquire);
        let mut found = self.read_until(READ_BACK_STUCK, &mut met).await?;
        if !found {
            self.reopen(reopens).await?;
            found = self.read_until(CATCH_UP_LIMIT, &mut met).await?;
        }
        let Some(offset) = ours.filter(|_| found) else {
            return Err(KrafkaError::timeout(format!(
                "reading back the pending record of {key} from {}",
                self.topic
            )));
        };
        Ok(self.lock().watched.get(key).and_then(|w| w.before(offset)))
    }

    /// Reads the log for up to `limit` until `key` has a final or retryable record; that
    /// record, or `None` when the time ran out first.
    pub async fn wait_settled(
        &self,
        key: &str,
        limit: Duration,
    ) -> Result<Option<Recorded>, KrafkaError> {
        let mut settled = None;
        self.read_until(limit, |state| {
            settled = state
                .known
                .get(key)
                .map(|(_, recorded)| recorded)
                .filter(|recorded| !matches!(recorded, Recorded::Pending { .. }))
                .cloned();
            settled.is_some()
        })
        .await?;
        Ok(settled)
    }

    /// Reads until `done` holds for the state (`true`) or `limit` has passed (`false`).
    async fn read_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> Result<bool, KrafkaError> {
        let started = Instant::now();
        loop {
            // Taken before looking, so a poll applied in between is not missed.
            let polls = self.polls.load(Ordering::Acquire);
            if done(&self.lock()) {
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            self.read_more(polls).await?;
        }
    }

    /// Polls the reader once and applies what it returns, unless another task has done
    /// so since `polls` was read: then its records are there to look at first.
    async fn read_more(&self, polls: u64) -> Result<(), KrafkaError> {
        let reader = self.reader.lock().await;
        if self.polls.load(Ordering::Acquire) != polls {
            return Ok(());
        }
        let polled = reader.poll(READ_POLL).await;
        self.polls.fetch_add(1, Ordering::AcqRel);
        for record in polled? {
            self.apply(record);
        }
        Ok(())
    }

    /// Opens the reader again on a new client (fresh topic ids), from the beginning. What
    /// is known stays known, as older than anything the new log holds: a record of the old
    /// log is better than none, and any record read from now on replaces it. Nothing is
    /// done when another attempt has reopened it since `seen` reopens.
    async fn reopen(&self, seen: u64) -> Result<(), KrafkaError> {
        let mut reader = self.reader.lock().await;
        if self.reopens.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        log::warn!(
            "worker: cannot read {} back; its log may have started over: reading it again from the beginning on a new connection",
            self.topic
        );
        let kafka = kafka::connect_brokers(&self.config, "the config", "kreply-worker-results")
            .await
            .map_err(|e| {
                KrafkaError::timeout(format!("reconnecting to read {}: {e}", self.topic))
            })?;
        *reader = open_reader(&kafka, &self.config, &self.partitions).await?;
        for (offset, _) in self.lock().known.values_mut() {
            *offset = -1;
        }
        self.reopens.fetch_add(1, Ordering::AcqRel);
        self.polls.fetch_add(1, Ordering::AcqRel);
        Ok(())
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
            Some(Ok(recorded)) => {
                let mut state = self.lock();
                if let Some(watch) = state.watched.get_mut(&key) {
                    watch.seen.push((record.offset, recorded.clone()));
                }
                drop(state);
                self.remember(key, record.offset, recorded);
            }
            // A tombstone forgets the key.
            None => drop(self.lock().known.remove(&key)),
            Some(Err(e)) => log::warn!(
                "results record for {key} at offset {} is unreadable: {e}",
                record.offset
            ),
        }
    }

    fn remember(&self, key: String, offset: i64, recorded: Recorded) {
        let known = &mut self.lock().known;
        let newer = known.get(&key).is_none_or(|(seen, _)| offset >= *seen);
        if newer {
            known.insert(key, (offset, recorded));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Watch {
    /// Where the reader met the `pending` of `attempt`.
    fn offset_of(&self, attempt: &str) -> Option<i64> {
        self.seen
            .iter()
            .find_map(|(offset, recorded)| match recorded {
                Recorded::Pending { attempt: a, .. } if a == attempt => Some(*offset),
                _ => None,
            })
    }

    /// The latest record before `offset`.
    fn before(&self, offset: i64) -> Option<Recorded> {
        self.seen
            .iter()
            .filter(|(at, _)| *at < offset)
            .max_by_key(|(at, _)| *at)
            .map(|(_, recorded)| recorded.clone())
    }
}

/// A reader on every partition of the results topic, from the beginning.
async fn open_reader(
    kafka: &Kafka,
    config: &Config,
    partitions: &[i32],
) -> Result<Consumer, KrafkaError> {
    let reader = kafka
        .consumer_without_group()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(config.fetch_max_wait_ms))
        .build()
        .await?;
    reader
        .assign(&config.worker.results_topic, partitions.to_vec())
        .await?;
    Ok(reader)
}

/// Watches a key while an attempt on it decides its race. It starts from the newest
/// record known, so with what the reader applies next it holds every record that can
/// precede the attempt's `pending`; attempts on one key share it.
struct WatchGuard<'a> {
    store: &'a ResultsStore,
    key: &'a str,
}

impl<'a> WatchGuard<'a> {
    fn new(store: &'a ResultsStore, key: &'a str) -> WatchGuard<'a> {
        let state = &mut *store.lock();
        let newest = state.known.get(key).cloned();
        let watch = state
            .watched
            .entry(key.to_string())
            .or_insert_with(|| Watch {
                attempts: 0,
                seen: newest.into_iter().collect(),
            });
        watch.attempts += 1;
        WatchGuard { store, key }
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let watched = &mut self.store.lock().watched;
        if let Some(watch) = watched.get_mut(self.key) {
            watch.attempts -= 1;
            if watch.attempts == 0 {
                watched.remove(self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(attempt: &str) -> Recorded {
        Recorded::Pending {
            attempt: attempt.into(),
            started_ms: 1,
        }
    }

    #[test]
    fn the_record_before_an_attempt_is_the_latest_by_offset_not_by_arrival() {
        let watch = Watch {
            attempts: 1,
            seen: vec![
                (3, Recorded::Retryable),
                (9, pending("ours")),
                (7, pending("theirs")),
                (12, Recorded::Retryable),
            ],
        };
        assert_eq!(watch.offset_of("ours"), Some(9));
        assert_eq!(watch.before(9), Some(pending("theirs")));
        assert_eq!(watch.offset_of("nobody"), None);
        assert_eq!(watch.before(3), None);
    }
}
