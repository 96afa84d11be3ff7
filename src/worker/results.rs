//! The results store: what happened to each payment, kept in Kafka, read per partition.
//!
//! A compacted topic is the durable record: it survives a worker restart and, unlike a
//! local file, every worker can read it, so it moves with the request partitions when the
//! group rebalances. It is partitioned like the requests (`slot.rs`): a worker reads only
//! the results partitions numbered like the request partitions it owns ([`ResultsStore::own`]),
//! and reads a partition it is given up to its end before serving it, so that what the
//! previous owner recorded is known first. "Its end" is not the high watermark, which
//! tansu reports wrong after a batch of several records: the worker writes a marker record
//! to the partition and reads until its marker comes back ([`ResultsStore::catch_up`]).
//!
//! A payment's records all land on its slot's partition, so offsets order them: a record
//! read back is applied only if it is newer than what is known (our own `Final` must not be
//! overwritten by our own older `Pending` arriving late).
//!
//! Settling also reads: an attempt reads its own `pending` back ([`ResultsStore::claim`])
//! to learn what precedes it in the log, and a repeat waits for an unfinished attempt's
//! final record ([`ResultsStore::wait_settled`]). Many settle tasks read at once, so one
//! of them polls (holding `reader`) and the others wait for that poll to be applied.
//!
//! A log that started over (a re-created topic, a broker that lost its data) would leave
//! the reader asking for a topic id that no longer exists, or positioned past the new
//! log's end: tansu answers neither with an error. On tansu a read-back (an attempt's
//! `pending`, a catch-up's markers) whose reader brings nothing for [`READ_BACK_STUCK`]
//! therefore opens the reader again, on a new client, from the beginning
//! ([`ResultsStore::reopen`]). Kafka answers both with errors the client acts on, so there
//! a silent reader is only waited for, and the index is never discarded.
//!
//! A final record's reply is not kept: a repeat that needs it reads it at its place in
//! the log, on a connection of its own ([`ResultsStore::lookup`]).

use crate::config::Config;
use crate::error::StartupError;
use crate::kafka::metadata_keeper::{Keeper, keep_fresh};
use crate::kafka::offset_gaps::{self, OffsetGaps};
use crate::kafka::{self, ProducerSession};
use crate::wire::record::now_ms;
use crate::worker::answer::{Answer, Recorded};
use crate::worker::metrics::{Produced, WorkerMetrics};
use crate::worker::results_index::{self, Kept, Known, LogPlace, ResultsIndex};
use crate::worker::results_layout::{self, Layout, Verdict};
use crate::worker::slot::Slot;
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::{ConsumerRecord, Kafka, KrafkaError, Record};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a catch-up, or reading an attempt's own `pending` back, may take before the
/// worker reports it and tries again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// One poll of the reader; it returns as soon as records come.
const READ_POLL: Duration = Duration::from_millis(200);
/// Reading a `pending` back takes a few milliseconds; this long means the reader is stuck
/// on a log that started over.
const READ_BACK_STUCK: Duration = Duration::from_secs(3);
/// How long a read from before a record may bring nothing before it starts from the
/// beginning: a record is there to read, so a fetch returns at once.
const FIND_STALL: Duration = Duration::from_secs(1);
/// The smallest results record, in bytes of a produce batch: a batch of
/// `producer_batch_bytes` holds at most that many bytes / this records.
const SMALLEST_RESULTS_RECORD: usize = 64;
/// Marker records have this key, with the partition number after it. No payment's record
/// key can equal it (those are JSON arrays, and 0xFF never occurs in UTF-8), so compaction
/// never drops a payment's record for a marker.
const MARKER_KEY: &[u8] = b"\xffkreply-catch-up/";
/// How often a long read of gained partitions logs how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The name a partition file keeps its layout record's value under.
const LAYOUT_META: &str = "layout";

/// Why a partition given to this worker cannot be served.
#[derive(Debug)]
pub enum NotServed {
    /// The brokers: try again later.
    Unread(KrafkaError),
    /// Its records were written under another layout: the worker must stop.
    Refused(StartupError),
}

pub struct ResultsStore {
    topic: String,
    /// How many partitions the topic has.
    partition_count: usize,
    /// Held by the one task polling it; replaced by [`ResultsStore::reopen`].
    reader: tokio::sync::Mutex<Reader>,
    /// How the reader is built again: brokers, security, the topic.
    config: Config,
    window: Duration,
    /// Where each owned partition's file is (`worker.state_dir`).
    state_dir: PathBuf,
    /// Polls applied so far: a task that waited for `reader` reads the state again first.
    polls: AtomicU64,
    /// Records applied so far: whether the reader is still moving.
    applied: AtomicU64,
    /// Reopens so far: attempts stuck at the same moment reopen the reader once, not once
    /// each (each reopen connects anew, up to `connect_timeout_ms` while brokers are away).
    reopens: AtomicU64,
    /// Reads final records back at their place; connected on first use, and again after
    /// an error.
    finals: tokio::sync::Mutex<Option<Consumer>>,
    producer: Arc<ProducerSession>,
    metrics: Arc<WorkerMetrics>,
    state: Mutex<State>,
}

struct State {
    /// The partitions this worker reads: those of the request partitions it owns.
    owned: BTreeMap<i32, ResultsIndex>,
    /// Payments with an attempt reading its `pending` back: every record read for them.
    watched: HashMap<String, Watch>,
    /// Marker records written by a catch-up and not read back yet.
    markers: HashSet<String>,
}

/// Where to read `partition` of `topic`, whose file is `index`, from: the file's
/// checkpoint, unless the log now ends before it (`end`): then the file is of a log that
/// is gone (a topic made anew), and is emptied, its layout with it.
fn resume_at(index: &mut ResultsIndex, topic: &str, partition: i32, end: Option<i64>) -> i64 {
    let read_to = index.read_to();
    match end {
        Some(end) if end < read_to => {
            log::warn!(
                "worker: {topic}/{partition} ends at offset {end}, before its state file's checkpoint {read_to}: the log started over; the file is emptied and the partition read from its start"
            );
            // An empty layout value names none: the new log's own is read, or written.
            let emptied = index.clear().and_then(|()| index.set_meta(LAYOUT_META, ""));
            if let Err(e) = emptied {
                log::warn!("worker: {e}");
            }
            0
        }
        _ => {
            log::info!(
                "worker: reading {topic}/{partition} from offset {read_to}{} (its state file holds {} payments)",
                end.map(|end| format!(" to about {end}"))
                    .unwrap_or_default(),
                index.len()
            );
            read_to
        }
    }
}

/// The newest layout record read from the partition whose file is `index`.
fn layout_of(index: &ResultsIndex) -> Option<Layout> {
    let value = index.meta(LAYOUT_META).ok()??;
    results_layout::parse(Some(value.as_bytes()))
}

/// The records of one payment from some point on, for the attempts deciding their race.
struct Watch {
    attempts: usize,
    seen: Vec<Known>,
}

impl ResultsStore {
    /// The store on the results topic of `partition_count` partitions, reading none of
    /// them yet: [`ResultsStore::own`] gives it the partitions to read.
    pub async fn open(
        kafka: &Kafka,
        config: &Config,
        partition_count: usize,
        producer: Arc<ProducerSession>,
        metrics: Arc<WorkerMetrics>,
    ) -> Result<ResultsStore, KrafkaError> {
        let reader = Reader::open(kafka, config, &[]).await?;
        Ok(ResultsStore {
            topic: config.worker.results_topic.clone(),
            partition_count,
            reader: tokio::sync::Mutex::new(reader),
            config: config.clone(),
            window: Duration::from_millis(config.worker.idempotency_window_ms),
            state_dir: config.worker.state_dir.clone(),
            polls: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            finals: tokio::sync::Mutex::new(None),
            producer,
            metrics,
            state: Mutex::new(State {
                owned: BTreeMap::new(),
                watched: HashMap::new(),
                markers: HashSet::new(),
            }),
        })
    }

    /// Reads exactly the results partitions in `owned` from now on: a partition gained is
    /// read to its end, and its layout checked, before this returns; a partition lost is
    /// forgotten (its next owner reads it). The partitions gained.
    pub async fn own(&self, owned: &HashSet<i32>) -> Result<Vec<i32>, NotServed> {
        let gained = self.assign(owned).await?;
        if gained.is_empty() {
            return Ok(gained);
        }
        let served = self.serve(&gained).await;
        if served.is_err() {
            // Taken afresh next time: read from the beginning, layout checked.
            self.lock().owned.retain(|p, _| !gained.contains(p));
        }
        served.map(|()| gained)
    }

    /// Reads the gained `partitions` to their end and checks their layouts.
    async fn serve(&self, partitions: &[i32]) -> Result<(), NotServed> {
        let started = Instant::now();
        let before = self.read_so_far(partitions);
        self.catch_up(partitions).await.map_err(NotServed::Unread)?;
        let read = self.read_so_far(partitions) - before;
        self.metrics.results_restored.add(read.max(0) as u64);
        let secs = started.elapsed().as_secs_f64();
        log::info!(
            "worker: results partitions {partitions:?} read to their end: {read} records in {secs:.1} s ({:.0}/s), {} payments held",
            read as f64 / secs.max(0.001),
            self.keys()
        );
        for &partition in partitions {
            self.check_layout(partition).await?;
        }
        Ok(())
    }

    /// Points the reader at `owned`, a gained partition from its file's checkpoint; the
    /// gained.
    async fn assign(&self, owned: &HashSet<i32>) -> Result<Vec<i32>, NotServed> {
        let mut reader = self.reader.lock().await;
        let mut sorted: Vec<i32> = owned.iter().copied().collect();
        sorted.sort_unstable();
        let gained: Vec<i32> = {
            let state = &mut *self.lock();
            // Dropping a file's index makes what it read durable, for when it comes back.
            state.owned.retain(|partition, _| owned.contains(partition));
            sorted
                .iter()
                .copied()
                .filter(|partition| !state.owned.contains_key(partition))
                .collect()
        };
        let unread = NotServed::Unread;
        reader
            .consumer
            .assign(&self.topic, sorted)
            .await
            .map_err(unread)?;
        reader.gaps.retain(|partition| owned.contains(&partition));
        let ends = log_ends(&reader.consumer, &self.topic, &gained).await;
        for &partition in &gained {
            let mut opened = self.open_partition(partition)?;
            let listed = ends.get(&partition).copied();
            let end = self.log_end(partition, listed, opened.read_to()).await;
            let from = resume_at(&mut opened, &self.topic, partition, end);
            reader
                .consumer
                .seek(&self.topic, partition, from)
                .await
                .map_err(unread)?;
            reader.gaps.expect(partition, from);
            self.lock().owned.insert(partition, opened);
        }
        self.polls.fetch_add(1, Ordering::AcqRel);
        Ok(gained)
    }

    /// Where `partition` ends, from its `listed` end (ListOffsets "latest"), for a file
    /// read up to `read_to`. tansu lists its newest batch's first offset + 1
    /// (`whole_batches`), which is below `read_to` whenever the file read a newest batch
    /// of several records, though the log did not start over: there that batch is read to
    /// find the end. `None` when unknown.
    async fn log_end(&self, partition: i32, listed: Option<i64>, read_to: i64) -> Option<i64> {
        let listed = listed?;
        if self.config.broker_compat.lists_log_ends() || listed == 0 || listed >= read_to {
            return Some(listed);
        }
        match self.batch_end(partition, listed - 1).await {
            Ok(end) => {
                let end = end.map_or(listed, |end| end.max(listed));
                log::debug!(
                    "worker: {}/{partition} is listed to end at {listed}; its newest batch ends at {end}",
                    self.topic
                );
                Some(end)
            }
            Err(e) => {
                log::warn!("worker: reading where {}/{partition} ends: {e}", self.topic);
                None
            }
        }
    }

    /// Where the batch of `partition` that starts at `base` ends: after the last record a
    /// read from `base` brings; `None` when it brings none.
    async fn batch_end(&self, partition: i32, base: i64) -> Result<Option<i64>, KrafkaError> {
        let mut finals = self.finals.lock().await;
        let reader = self.side_reader(finals.take()).await?;
        reader.assign(&self.topic, vec![partition]).await?;
        reader.seek(&self.topic, partition, base).await?;
        let started = Instant::now();
        let mut end = None;
        while end.is_none() && started.elapsed() < FIND_STALL {
            let polled = reader.poll(READ_POLL).await?;
            end = polled
                .iter()
                .filter(|r| r.partition == partition && r.offset >= base)
                .map(|r| r.offset + 1)
                .max();
        }
        *finals = Some(reader);
        Ok(end)
    }

    /// The reader of single records (`finals`): `kept`, or a new one.
    async fn side_reader(&self, kept: Option<Consumer>) -> Result<Consumer, KrafkaError> {
        if let Some(reader) = kept {
            return Ok(reader);
        }
        let kafka = kafka::client(&self.config, "kreply-worker-results-finals").await?;
        open_reader(&kafka, &self.config, &[]).await
    }

    /// The file of `partition`. A file that cannot be opened is a cache lost: it is
    /// removed and made anew, and the partition restored from the topic.
    fn open_partition(&self, partition: i32) -> Result<ResultsIndex, NotServed> {
        let path = self
            .state_dir
            .join(format!("{}-{partition}.redb", self.topic));
        ResultsIndex::open(&path, self.window).or_else(|e| {
            log::warn!("worker: {e}; restoring partition {partition} from the topic instead");
            let _ = std::fs::remove_file(&path);
            ResultsIndex::open(&path, self.window)
                .map_err(|e| NotServed::Refused(StartupError::new(e.to_string())))
        })
    }

    /// Serves `partition` if its layout agrees, writing its layout record if it has none.
    async fn check_layout(&self, partition: i32) -> Result<(), NotServed> {
        let recorded = self.owned(partition, layout_of).flatten();
        match results_layout::verdict(
            recorded.as_ref(),
            &self.topic,
            partition,
            self.partition_count,
        ) {
            Verdict::Serve => Ok(()),
            Verdict::Refuse(why) => Err(NotServed::Refused(why)),
            Verdict::Write => {
                let (key, value) = results_layout::record(self.partition_count);
                let record = Record::new(self.topic.as_str(), value)
                    .key(key)
                    .partition(partition);
                let _acknowledged = self
                    .producer
                    .send(record)
                    .await
                    .map_err(NotServed::Unread)?;
                Ok(())
            }
        }
    }

    /// Reads every partition this worker reads up to the end it has now.
    pub async fn catch_up_owned(&self) -> Result<(), KrafkaError> {
        let owned: Vec<i32> = self.lock().owned.keys().copied().collect();
        self.catch_up(&owned).await
    }

    /// Reads `partitions` up to the end they have now: writes a marker record to each and
    /// reads until all of them come back.
    pub async fn catch_up(&self, partitions: &[i32]) -> Result<(), KrafkaError> {
        let mut ours = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let id = uuid::Uuid::new_v4().to_string();
            self.lock().markers.insert(id.clone());
            ours.push(id.clone());
            let mut key = MARKER_KEY.to_vec();
            key.extend_from_slice(partition.to_string().as_bytes());
            let marker = Record::new(self.topic.as_str(), id.into_bytes())
                .key(key)
                .partition(partition);
            if let Err(e) = self.producer.send(marker).await {
                self.forget_markers(&ours);
                return Err(e);
            }
        }
        let mut reported = Instant::now();
        let met = |state: &State| {
            // A restore of a large partition takes minutes: say how far it is.
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                log::info!(
                    "worker: reading results partitions {partitions:?}: at offsets {:?}",
                    read_tos(state, partitions)
                );
            }
            ours.iter().all(|id| !state.markers.contains(id))
        };
        let found = self.read_back(partitions, met).await;
        self.forget_markers(&ours);
        match found? {
            true => Ok(()),
            false => Err(KrafkaError::timeout(format!(
                "reading {} partitions {partitions:?} to their end (the marker records did not come back)",
                self.topic
            ))),
        }
    }

    /// Records read of `partitions` in all: the sum of their checkpoints.
    fn read_so_far(&self, partitions: &[i32]) -> i64 {
        read_tos(&self.lock(), partitions)
            .iter()
            .map(|(_, at)| at)
            .sum()
    }

    fn forget_markers(&self, ids: &[String]) {
        let markers = &mut self.lock().markers;
        for id in ids {
            markers.remove(id);
        }
    }

    /// The newest record of the payment in `slot`, reading a final one's reply back from
    /// the log.
    pub async fn lookup(&self, slot: &Slot) -> Result<Option<Recorded>, KrafkaError> {
        let known = self
            .owned(slot.partition, |index| index.get(&slot.key))
            .ok_or_else(|| not_owned(slot))?
            .map_err(|e| KrafkaError::illegal_state(e.to_string()))?;
        self.whole_of(slot, known).await
    }

    /// Whether a record written at `written_ms` is older than the idempotency window.
    pub fn past_window(&self, written_ms: i64) -> bool {
        results_index::past_window(self.window, written_ms, now_ms())
    }

    /// How many payments are known (within the idempotency window), over the partitions
    /// this worker reads.
    pub fn keys(&self) -> usize {
        let state = self.lock();
        state.owned.values().map(|index| index.len()).sum()
    }

    /// What `read` says of owned partition `partition`; `None` when it is not owned.
    fn owned<T>(&self, partition: i32, read: impl FnOnce(&ResultsIndex) -> T) -> Option<T> {
        self.lock().owned.get(&partition).map(read)
    }

    /// Writes `pending` (whose attempt is `attempt`) for the payment in `slot` and reads
    /// the log until the reader has seen it; returns the latest record of the payment
    /// before it, which decides the race ([`race::decide`](super::race::decide)). The
    /// offset in the produce ack is not trusted: the reader must meet the record itself.
    pub async fn claim(
        &self,
        slot: &Slot,
        pending: &Recorded,
        attempt: &str,
    ) -> Result<Option<Recorded>, KrafkaError> {
        let _watch = WatchGuard::new(self, slot);
        self.put(slot, pending).await?;
        let mut ours = None;
        let mut met = |state: &State| {
            ours = state
                .watched
                .get(&slot.key)
                .and_then(|watch| watch.offset_of(attempt));
            ours.is_some()
        };
        let found = self.read_back(&[slot.partition], &mut met).await?;
        let Some(offset) = ours.filter(|_| found) else {
            return Err(KrafkaError::timeout(format!(
                "reading back the pending record of {slot} from {}",
                self.topic
            )));
        };
        let before = self
            .lock()
            .watched
            .get(&slot.key)
            .and_then(|w| w.before(offset));
        self.whole_of(slot, before).await
    }

    /// Reads until `met` holds for a record this worker has just written to one of
    /// `partitions`. On tansu, when the reader brings nothing new for [`READ_BACK_STUCK`]
    /// first, the log may have started over: reopens the reader and tries once more
    /// ([`BrokerCompat::reopens_silent_readers`](crate::kafka::BrokerCompat::reopens_silent_readers)); on Kafka, reads for up to
    /// [`CATCH_UP_LIMIT`]. `false` when the record never came. Only a
    /// stall counts, not the time taken: a new owner reads a whole partition before its
    /// marker comes back.
    async fn read_back(
        &self,
        partitions: &[i32],
        mut met: impl FnMut(&State) -> bool,
    ) -> Result<bool, KrafkaError> {
        if !self.config.broker_compat.reopens_silent_readers() {
            // Kafka: a silent reader is a partition between leaders; what is known stays.
            return self.read_until(partitions, CATCH_UP_LIMIT, met).await;
        }
        let reopens = self.reopens.load(Ordering::Acquire);
        if self.read_while_moving(partitions, &mut met).await? {
            return Ok(true);
        }
        self.reopen(reopens).await?;
        self.read_while_moving(partitions, &mut met).await
    }

    /// Reads until `met` holds (`true`) or the reader has applied no record for
    /// [`READ_BACK_STUCK`] (`false`).
    async fn read_while_moving(
        &self,
        partitions: &[i32],
        mut met: impl FnMut(&State) -> bool,
    ) -> Result<bool, KrafkaError> {
        let mut applied = self.applied.load(Ordering::Acquire);
        let mut moved = Instant::now();
        loop {
            let polls = self.polls.load(Ordering::Acquire);
            if self.still_owned(partitions, &mut met)? {
                return Ok(true);
            }
            let now_applied = self.applied.load(Ordering::Acquire);
            if now_applied != applied {
                (applied, moved) = (now_applied, Instant::now());
            } else if moved.elapsed() >= READ_BACK_STUCK {
                return Ok(false);
            }
            self.read_more(polls).await?;
        }
    }

    /// Whether `met` holds; an error when one of `partitions` is no longer read here (it
    /// went to another worker: what is read of it would never come).
    fn still_owned(
        &self,
        partitions: &[i32],
        met: &mut impl FnMut(&State) -> bool,
    ) -> Result<bool, KrafkaError> {
        let state = self.lock();
        if let Some(lost) = partitions.iter().find(|p| !state.owned.contains_key(p)) {
            return Err(KrafkaError::illegal_state(format!(
                "partition {lost} of {} went to another worker",
                self.topic
            )));
        }
        Ok(met(&state))
    }

    /// Reads the log for up to `limit` until the payment in `slot` has a final or
    /// retryable record; that record, or `None` when the time ran out first.
    pub async fn wait_settled(
        &self,
        slot: &Slot,
        limit: Duration,
    ) -> Result<Option<Recorded>, KrafkaError> {
        let mut settled = None;
        self.read_until(&[slot.partition], limit, |state| {
            settled = state
                .owned
                .get(&slot.partition)
                // A file that cannot be read now counts as not settled yet: the wait ends
                // in doubt, never in a charge taken for a first one.
                .and_then(|index| index.get(&slot.key).ok().flatten())
                .filter(|known| !matches!(known.kept, Kept::Pending { .. }));
            settled.is_some()
        })
        .await?;
        self.whole_of(slot, settled).await
    }

    /// The whole record `known` stands for, if any: as kept, or a final one read back.
    async fn whole_of(
        &self,
        slot: &Slot,
        known: Option<Known>,
    ) -> Result<Option<Recorded>, KrafkaError> {
        let Some(known) = known else {
            return Ok(None);
        };
        match known.kept.whole() {
            Some(recorded) => Ok(Some(recorded)),
            None => self.read_final(slot, known.place).await.map(Some),
        }
    }

    /// Reads the final record of the payment in `slot` at `place`. One that is no longer
    /// there (its log started over, or the record was removed) gives an in-doubt answer:
    /// the payment was settled, but what it said is lost, so it must not be charged again.
    async fn read_final(&self, slot: &Slot, place: LogPlace) -> Result<Recorded, KrafkaError> {
        if place.offset < 0 {
            return Ok(no_longer_kept());
        }
        let mut finals = self.finals.lock().await;
        let reader = self.side_reader(finals.take()).await?;
        let read = if self.config.broker_compat.fetches_inside_batches() {
            read_exactly_at(&reader, &self.topic, place).await?
        } else {
            let back = (self.config.producer_batch_bytes / SMALLEST_RESULTS_RECORD).max(1) as i64;
            read_at(&reader, &self.topic, place, back).await?
        };
        *finals = Some(reader);
        Ok(read
            .filter(|record| record.key.as_deref() == Some(slot.key.as_bytes()))
            .and_then(|record| serde_json::from_slice(record.value.as_deref()?).ok())
            .filter(|recorded| matches!(recorded, Recorded::Final { .. }))
            .unwrap_or_else(no_longer_kept))
    }

    /// Reads until `done` holds for the state (`true`) or `limit` has passed (`false`).
    async fn read_until(
        &self,
        partitions: &[i32],
        limit: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> Result<bool, KrafkaError> {
        let started = Instant::now();
        loop {
            // Taken before looking, so a poll applied in between is not missed.
            let polls = self.polls.load(Ordering::Acquire);
            if self.still_owned(partitions, &mut done)? {
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
        let mut reader = self.reader.lock().await;
        if self.polls.load(Ordering::Acquire) != polls {
            return Ok(());
        }
        let polled = reader.poll(&self.topic, &self.metrics).await;
        self.polls.fetch_add(1, Ordering::AcqRel);
        let polled = polled?;
        let count = polled.len() as u64;
        for record in polled {
            self.apply(record);
        }
        self.flush();
        self.applied.fetch_add(count, Ordering::AcqRel);
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
        let kafka = kafka::client(&self.config, "kreply-worker-results").await?;
        let owned: Vec<i32> = self.lock().owned.keys().copied().collect();
        *reader = Reader::open(&kafka, &self.config, &owned).await?;
        for owned in self.lock().owned.values_mut() {
            if let Err(e) = owned.log_started_over() {
                log::warn!("worker: {e}");
            }
        }
        self.reopens.fetch_add(1, Ordering::AcqRel);
        self.polls.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Writes `recorded` for the payment in `slot` (acks=all) and remembers it.
    pub async fn put(&self, slot: &Slot, recorded: &Recorded) -> Result<(), KrafkaError> {
        let value = serde_json::to_vec(recorded).unwrap_or_default();
        let handed_over = Instant::now();
        let record = Record::new(self.topic.as_str(), value)
            .key(slot.key.as_bytes().to_vec())
            .partition(slot.partition);
        let meta = self.producer.send(record).await?;
        let elapsed = handed_over.elapsed();
        self.metrics.produce_acked(Produced::Result, elapsed);
        let place = LogPlace {
            partition: meta.partition,
            offset: meta.offset,
        };
        let known = Known::of(place, now_ms(), recorded);
        // Not into a watch: an attempt must meet its own `pending` where the reader
        // finds it, after what precedes it, not where the ack says it is.
        if let Some(owned) = self.lock().owned.get_mut(&slot.partition) {
            owned.remember(&slot.key, known, now_ms());
        }
        Ok(())
    }

    /// Writes what each owned partition took in to its file. The reader flushes after
    /// each poll; the poll loop calls it too, each turn, so a burst read before the worker
    /// went idle is made durable within a second, not at the next read.
    pub fn flush(&self) {
        let now = now_ms();
        for (partition, owned) in self.lock().owned.iter_mut() {
            if let Err(e) = owned.flush(now) {
                // Kept in memory and written with the next poll's records.
                log::warn!("worker: partition {partition}: {e}");
            }
        }
    }

    fn apply(&self, record: ConsumerRecord) {
        let state = &mut *self.lock();
        // Records of a partition given up since they were fetched are its next owner's.
        let Some(owned) = state.owned.get_mut(&record.partition) else {
            return;
        };
        owned.read(record.offset);
        let key = record.key.as_deref().unwrap_or_default();
        if key.starts_with(MARKER_KEY) {
            let id = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            state.markers.remove(id.as_ref());
            return;
        }
        if key == results_layout::KEY {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            if let Err(e) = owned.set_meta(LAYOUT_META, &value) {
                log::warn!("worker: {e}");
            }
            return;
        }
        let Some(key) = record.key_str() else {
            return;
        };
        let place = LogPlace {
            partition: record.partition,
            offset: record.offset,
        };
        match record.value.as_deref().map(Kept::parse) {
            Some(Ok(kept)) => {
                let known = Known::at(place, record.timestamp, kept);
                if let Some(watch) = state.watched.get_mut(key) {
                    watch.seen.push(known.clone());
                }
                owned.remember(key, known, now_ms());
            }
            // A tombstone forgets the payment.
            None => owned.forget(key),
            Some(Err(e)) => log::warn!(
                "results record for {key} at {}/{} is unreadable: {e}",
                record.partition,
                record.offset
            ),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How far each of `partitions` has been read.
fn read_tos(state: &State, partitions: &[i32]) -> Vec<(i32, i64)> {
    partitions
        .iter()
        .filter_map(|p| Some((*p, state.owned.get(p)?.read_to())))
        .collect()
}

/// Where each of `partitions` of `topic` ends now (its next offset), as far as the brokers
/// say; a partition they did not answer for is left out.
async fn log_ends(reader: &Consumer, topic: &str, partitions: &[i32]) -> HashMap<i32, i64> {
    if partitions.is_empty() {
        return HashMap::new();
    }
    let asked: Vec<(&str, i32)> = partitions.iter().map(|&p| (topic, p)).collect();
    // -1: the latest offset (ListOffsets' LATEST_TIMESTAMP).
    reader
        .offsets_for_times(&asked, -1)
        .await
        .into_iter()
        .filter_map(|((_, partition), end)| Some((partition, end.ok()?)))
        .filter(|&(_, end)| end >= 0)
        .collect()
}

/// The error for a payment whose results partition this worker does not read.
fn not_owned(slot: &Slot) -> KrafkaError {
    KrafkaError::illegal_state(format!(
        "{slot}: this worker does not read that partition (it went to another worker)"
    ))
}

impl Watch {
    /// Where the reader met the `pending` of `attempt`.
    fn offset_of(&self, attempt: &str) -> Option<i64> {
        self.seen.iter().find_map(|known| match &known.kept {
            Kept::Pending { attempt: a, .. } if **a == *attempt => Some(known.place.offset),
            _ => None,
        })
    }

    /// The latest record before `offset`.
    fn before(&self, offset: i64) -> Option<Known> {
        self.seen
            .iter()
            .filter(|known| known.place.offset < offset)
            .max_by_key(|known| known.place.offset)
            .cloned()
    }
}

/// The consumer that reads the owned results partitions, and what it has read of them.
struct Reader {
    consumer: Consumer,
    gaps: OffsetGaps,
    /// Follows the partitions' leaders for the reader's client (`metadata_keeper`).
    _fresh: Keeper,
}

impl Reader {
    /// A reader on `partitions` of the results topic, from the beginning, on `kafka`.
    async fn open(
        kafka: &Kafka,
        config: &Config,
        partitions: &[i32],
    ) -> Result<Reader, KrafkaError> {
        let topic = config.worker.results_topic.clone();
        Ok(Reader {
            consumer: open_reader(kafka, config, partitions).await?,
            gaps: OffsetGaps::new(config.broker_compat),
            _fresh: keep_fresh(kafka, vec![topic]).await?,
        })
    }

    /// The next records of `topic`, in order, none twice, none read past while it was
    /// being stored (two workers' attempts of one payment land on one partition at once,
    /// and the race between them is decided by what precedes each `pending`).
    async fn poll(
        &mut self,
        topic: &str,
        metrics: &WorkerMetrics,
    ) -> Result<Vec<ConsumerRecord>, KrafkaError> {
        let (records, holes) =
            offset_gaps::poll_in_order(&self.consumer, topic, &mut self.gaps, READ_POLL).await?;
        metrics.offset_holes("results", &holes);
        Ok(records)
    }
}

/// A reader on `partitions` of the results topic, from the beginning.
async fn open_reader(
    kafka: &Kafka,
    config: &Config,
    partitions: &[i32],
) -> Result<Consumer, KrafkaError> {
    let compat = config.broker_compat;
    // Drained polls: krafka otherwise stops decoding a fetch after about 1,000 records
    // and fetches again from there, inside a batch, and tansu's memory storage skips the
    // rest of a batch fetched from its middle (see `kafka::whole_batches`).
    let reader = kafka
        .consumer_without_group()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(compat.read_back_wait(Duration::from_millis(config.fetch_max_wait_ms)))
        .isolation_level(compat.isolation())
        .max_poll_records(-1)
        .build()
        .await?;
    reader
        .assign(&config.worker.results_topic, partitions.to_vec())
        .await?;
    Ok(reader)
}

/// The record at `place`, read with `reader` (left assigned to that partition); `None`
/// when the log no longer holds it (compaction removed it: the first record from there
/// is a later one). Kafka serves a fetch from any offset, so one read from `place` tells.
async fn read_exactly_at(
    reader: &Consumer,
    topic: &str,
    place: LogPlace,
) -> Result<Option<ConsumerRecord>, KrafkaError> {
    reader.assign(topic, vec![place.partition]).await?;
    reader.seek(topic, place.partition, place.offset).await?;
    match first_from(reader, place, CATCH_UP_LIMIT).await? {
        Some(record) => Ok((record.offset == place.offset).then_some(record)),
        None => Err(KrafkaError::timeout(format!(
            "reading {topic}/{}@{} back",
            place.partition, place.offset
        ))),
    }
}

/// [`read_exactly_at`] for tansu. On tansu's memory storage a fetch from inside a batch
/// starts at the next batch, or returns nothing when that batch is the partition's last,
/// so the read starts `back` records earlier, at or before the start of any batch that
/// holds `place`; failing that, from the beginning.
async fn read_at(
    reader: &Consumer,
    topic: &str,
    place: LogPlace,
    back: i64,
) -> Result<Option<ConsumerRecord>, KrafkaError> {
    reader.assign(topic, vec![place.partition]).await?;
    let near = place.offset.saturating_sub(back).max(0);
    for from in [near, 0] {
        reader.seek(topic, place.partition, from).await?;
        let limit = if from == 0 {
            CATCH_UP_LIMIT
        } else {
            FIND_STALL
        };
        match first_from(reader, place, limit).await? {
            Some(record) if record.offset == place.offset => return Ok(Some(record)),
            Some(_) if from == 0 => return Ok(None),
            None if from == 0 => break,
            _ => {}
        }
    }
    Err(KrafkaError::timeout(format!(
        "reading {topic}/{}@{} back",
        place.partition, place.offset
    )))
}

/// The first record at or after `place` that a read from the reader's position meets
/// within `limit`.
async fn first_from(
    reader: &Consumer,
    place: LogPlace,
    limit: Duration,
) -> Result<Option<ConsumerRecord>, KrafkaError> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let polled = reader.poll(READ_POLL).await?;
        let at_or_after = polled
            .into_iter()
            .filter(|r| r.partition == place.partition && r.offset >= place.offset);
        if let Some(first) = at_or_after.min_by_key(|r| r.offset) {
            return Ok(Some(first));
        }
    }
    Ok(None)
}

/// The answer for a payment that was settled, when what it said is no longer on record.
fn no_longer_kept() -> Recorded {
    Answer::in_doubt(
        "this payment was settled before, but its answer is no longer on record; check with the PG before retrying",
    )
    .to_final()
}

/// Watches a payment while an attempt on it decides its race. It starts from the newest
/// record known, so with what the reader applies next it holds every record that can
/// precede the attempt's `pending`; attempts on one payment share it.
struct WatchGuard<'a> {
    store: &'a ResultsStore,
    key: &'a str,
}

impl<'a> WatchGuard<'a> {
    fn new(store: &'a ResultsStore, slot: &'a Slot) -> WatchGuard<'a> {
        let state = &mut *store.lock();
        let newest = state
            .owned
            .get(&slot.partition)
            // Unreadable now: the claim's lookup just before read it, so this is rare, and
            // a watch without it sees the records the reader applies next all the same.
            .and_then(|index| index.get(&slot.key).ok().flatten());
        let watch = state
            .watched
            .entry(slot.key.clone())
            .or_insert_with(|| Watch {
                attempts: 0,
                seen: newest.into_iter().collect(),
            });
        watch.attempts += 1;
        WatchGuard {
            store,
            key: &slot.key,
        }
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

    fn at(offset: i64, recorded: Recorded) -> Known {
        Known {
            place: LogPlace {
                partition: 0,
                offset,
            },
            written_ms: 0,
            kept: Kept::of(&recorded),
        }
    }

    fn pending(attempt: &str) -> Recorded {
        Recorded::Pending {
            attempt: attempt.into(),
            started_ms: 1,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn the_record_before_an_attempt_is_the_latest_by_offset_not_by_arrival() {
        let watch = Watch {
            attempts: 1,
            seen: vec![
                at(3, Recorded::Retryable),
                at(9, pending("ours")),
                at(7, pending("theirs")),
                at(12, Recorded::Retryable),
            ],
        };
        assert_eq!(watch.offset_of("ours"), Some(9));
        assert_eq!(watch.before(9), Some(at(7, pending("theirs"))));
        assert_eq!(watch.offset_of("nobody"), None);
        assert_eq!(watch.before(3), None);
    }
}
