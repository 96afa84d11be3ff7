//! One results partition's slice of the idempotency index, on disk: a redb file.
//!
//! In memory the index grows with the keys in the idempotency window: at 86.4 M keys a day
//! a 24-hour window needs about 11 GB. On disk a worker's memory is the page cache each
//! file is opened with, whatever the window holds; and a restarted worker resumes from the
//! file's checkpoint instead of reading the results topic again from offset 0.
//!
//! The file is a prefix of its partition. Each batch of records is applied in one
//! transaction together with `read_to`, the next offset to read, so whatever commit the
//! file opens at, it holds exactly the records before its checkpoint.
//!
//! Most commits are non-durable (no fsync). That is safe because the file is only a cache of
//! the results topic, which is the durable record: a crash loses the commits since the last
//! durable one, the file opens at that one (still a prefix), and the worker reads the rest
//! again from the topic. Durable commits also save redb's allocator state ("quick repair"),
//! so opening after a crash does not walk the whole file.
//!
//! A key is the 16-byte [`KeyId`], its [`Known`] a few hand-encoded bytes ([`encode`]). A
//! second table orders the keys by when they were written, so a sweep of the keys past the
//! window reads only those, never the whole file.

// Nothing reads through it yet: results.rs moves onto it next.

use super::results_index::{Kept, KeyId, Known, LogPlace};
use redb::{
    Builder, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Each key's newest [`Known`], as [`encode`] writes it.
const KEYS: TableDefinition<&KeyId, &[u8]> = TableDefinition::new("keys");
/// One row per key of KEYS, [`expiry_row`]: the keys in the order they were written.
const EXPIRY: TableDefinition<&[u8; 24], ()> = TableDefinition::new("expiry");
/// The checkpoint, under [`READ_TO`].
const STATE: TableDefinition<&str, i64> = TableDefinition::new("state");
/// What the file belongs to, free-form: see [`PartitionFile::meta`].
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const READ_TO: &str = "read_to";

type Keys<'t> = Table<'t, &'static KeyId, &'static [u8]>;
type Expiry<'t> = Table<'t, &'static [u8; 24], ()>;

/// One results partition's slice of the idempotency index, on disk.
pub struct PartitionFile {
    db: redb::Database,
    path: PathBuf,
}

impl PartitionFile {
    /// Opens the file at `path`, creating it if there is none, with a page cache of
    /// `cache_bytes`: the memory the file costs (redb's default is 1 GiB). It trusts the
    /// file: a page altered outside redb (a failing disk, a hand edit) may panic in redb,
    /// where [`open_verified`](Self::open_verified) reports it. The worker opens verified;
    /// the tests time and compare both.
    #[cfg(test)]
    pub fn open(path: &Path, cache_bytes: usize) -> Result<PartitionFile, FileError> {
        Self::open_with(path, cache_bytes, false)
    }

    /// As `open` (built for the tests only, so not linked), after reading the whole file
    /// to check every page's checksum, so a damaged file is an error instead of a panic:
    /// about 0.15 s a million keys when the file is in the OS's cache.
    pub fn open_verified(path: &Path, cache_bytes: usize) -> Result<PartitionFile, FileError> {
        Self::open_with(path, cache_bytes, true)
    }

    fn open_with(
        path: &Path,
        cache_bytes: usize,
        verify: bool,
    ) -> Result<PartitionFile, FileError> {
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(verify)
            .create(path)
            .map_err(|e| FileError::new(path, "open", e.into()))?;
        let file = PartitionFile {
            db,
            path: path.to_path_buf(),
        };
        file.blame("open", file.create_tables())?;
        Ok(file)
    }

    /// The newest Known of `id`, or None. An entry past the window is still returned (the
    /// caller checks the window); a key removed by a tombstone or a sweep is None.
    pub fn get(&self, id: &KeyId) -> Result<Option<Known>, FileError> {
        self.blame(
            "read",
            self.reading(KEYS).and_then(|keys| stored(&keys, id)),
        )
    }

    /// Applies `batch` in one transaction, with the checkpoint `read_to` if given, so the
    /// file never holds a record past its checkpoint nor misses one before it. `(id,
    /// Some(known))` keeps `known` unless the stored entry has a higher offset (as
    /// `ResultsIndex::remember`); `(id, None)` is a tombstone. `durable` commits with an
    /// fsync; otherwise a crash may revert the file to its last durable commit.
    pub fn apply(
        &self,
        batch: &[(KeyId, Option<Known>)],
        read_to: Option<i64>,
        durable: bool,
    ) -> Result<(), FileError> {
        self.blame("write", self.apply_in_one(batch, read_to, durable))
    }

    /// The checkpoint: the next offset to read, None for a new or cleared file.
    pub fn read_to(&self) -> Result<Option<i64>, FileError> {
        let state = self.reading(STATE);
        let read_to = state.and_then(|state| Ok(state.get(READ_TO)?.map(|v| v.value())));
        self.blame("read", read_to)
    }

    /// Deletes up to `limit` entries written before `cutoff_ms`, oldest first, and returns
    /// how many it deleted: a bounded step, so a sweep never holds the writer long.
    pub fn sweep(&self, cutoff_ms: i64, limit: usize) -> Result<usize, FileError> {
        self.blame("sweep", self.sweep_some(cutoff_ms, limit))
    }

    /// How many keys are held (redb keeps each table's length in its root: O(1)).
    pub fn len(&self) -> Result<u64, FileError> {
        let len = self.reading(KEYS).and_then(|keys| Ok(keys.len()?));
        self.blame("read", len)
    }

    /// Empties the file, all keys and the checkpoint, for a log that started over or a file
    /// that is not this partition's. The metadata stays: the caller sets what it belongs to.
    pub fn clear(&self) -> Result<(), FileError> {
        self.blame("clear", self.empty())
    }

    /// A metadata value set by [`set_meta`](Self::set_meta), e.g. the results layout or the
    /// topic the file belongs to.
    pub fn meta(&self, name: &str) -> Result<Option<String>, FileError> {
        let meta = self.reading(META);
        let value = meta.and_then(|meta| Ok(meta.get(name)?.map(|v| v.value().to_string())));
        self.blame("read", value)
    }

    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), FileError> {
        self.blame("write", self.put_meta(name, value))
    }

    /// Marks every entry as read from a log that is gone (offset -1): older than any record
    /// the new log will hold, and no longer readable at its place. Only under tansu's rules,
    /// whose log can start over under a reader (`results.rs`, `reopen`); it rewrites every
    /// entry, a chunk at a time so memory stays bounded.
    pub fn demote_all(&self) -> Result<(), FileError> {
        self.blame("write", self.demote())
    }

    /// Every table exists from the start, so a read never meets a missing one.
    fn create_tables(&self) -> Result<(), Cause> {
        let write = self.db.begin_write()?;
        write.open_table(KEYS)?;
        write.open_table(EXPIRY)?;
        write.open_table(STATE)?;
        write.open_table(META)?;
        commit(write, true)
    }

    fn reading<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, Cause> {
        Ok(self.db.begin_read()?.open_table(table)?)
    }

    fn apply_in_one(
        &self,
        batch: &[(KeyId, Option<Known>)],
        read_to: Option<i64>,
        durable: bool,
    ) -> Result<(), Cause> {
        let write = self.db.begin_write()?;
        {
            let mut keys = write.open_table(KEYS)?;
            let mut expiry = write.open_table(EXPIRY)?;
            for (id, known) in batch {
                match known {
                    Some(known) => keep(&mut keys, &mut expiry, id, known)?,
                    None => forget(&mut keys, &mut expiry, id)?,
                }
            }
        }
        if let Some(offset) = read_to {
            write.open_table(STATE)?.insert(READ_TO, offset)?;
        }
        commit(write, durable)
    }

    fn sweep_some(&self, cutoff_ms: i64, limit: usize) -> Result<usize, Cause> {
        let write = self.db.begin_write()?;
        let mut deleted = 0;
        {
            let mut keys = write.open_table(KEYS)?;
            let mut expiry = write.open_table(EXPIRY)?;
            let due = due_rows(&expiry, cutoff_ms, limit)?;
            if due.is_empty() {
                return Ok(0);
            }
            for row in &due {
                expiry.remove(row)?;
                deleted += usize::from(sweep_key(&mut keys, &mut expiry, row, cutoff_ms)?);
            }
        }
        commit(write, false)?;
        Ok(deleted)
    }

    /// Durable: were it lost in a crash, the file would reopen holding the old log's keys
    /// under the old log's checkpoint.
    fn empty(&self) -> Result<(), Cause> {
        let write = self.db.begin_write()?;
        write.delete_table(KEYS)?;
        write.delete_table(EXPIRY)?;
        write.open_table(KEYS)?;
        write.open_table(EXPIRY)?;
        write.open_table(STATE)?.remove(READ_TO)?;
        commit(write, true)
    }

    fn demote(&self) -> Result<(), Cause> {
        const CHUNK: usize = 10_000;
        let write = self.db.begin_write()?;
        {
            let mut keys = write.open_table(KEYS)?;
            let mut after: Option<KeyId> = None;
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let range = match &after {
                    None => keys.range(..)?,
                    Some(id) => keys.range((Bound::Excluded(id), Bound::Unbounded))?,
                };
                for entry in range.take(CHUNK) {
                    let (id, bytes) = entry?;
                    chunk.push((*id.value(), decode(bytes.value())?));
                }
                let Some(&(last, _)) = chunk.last() else {
                    break;
                };
                for (id, mut known) in chunk {
                    known.place.offset = -1;
                    keys.insert(&id, encode(&known)?.as_slice())?;
                }
                after = Some(last);
            }
        }
        commit(write, true)
    }

    fn put_meta(&self, name: &str, value: &str) -> Result<(), Cause> {
        let write = self.db.begin_write()?;
        write.open_table(META)?.insert(name, value)?;
        commit(write, true)
    }

    fn blame<T>(&self, doing: &'static str, result: Result<T, Cause>) -> Result<T, FileError> {
        result.map_err(|cause| FileError::new(&self.path, doing, cause))
    }

    /// How many rows EXPIRY holds: one per key, when nothing went behind its back.
    #[cfg(test)]
    fn expiry_rows(&self) -> u64 {
        self.reading(EXPIRY).unwrap().len().unwrap()
    }

    /// Writes `bytes` as `id`'s entry as they are, to test how garbage is read.
    #[cfg(test)]
    fn put_raw(&self, id: &KeyId, bytes: &[u8]) {
        let write = self.db.begin_write().unwrap();
        write.open_table(KEYS).unwrap().insert(id, bytes).unwrap();
        commit(write, false).unwrap();
    }
}

/// Non-durable: no fsync, kept by a later durable commit or a clean close, lost in a crash.
/// Durable: fsynced, with the allocator state saved, so that opening after a crash trusts
/// it instead of rebuilding it from every page of the file (redb's quick repair).
fn commit(mut write: WriteTransaction, durable: bool) -> Result<(), Cause> {
    if durable {
        write.set_quick_repair(true);
    } else {
        write.set_durability(Durability::None)?;
    }
    Ok(write.commit()?)
}

/// The entry of `id`, decoded.
fn stored(
    keys: &impl ReadableTable<&'static KeyId, &'static [u8]>,
    id: &KeyId,
) -> Result<Option<Known>, Cause> {
    keys.get(id)?.map(|bytes| decode(bytes.value())).transpose()
}

/// Stores `known` unless the stored entry is from a later offset. An equal offset is the
/// same record read again, and is taken, as `ResultsIndex::remember` does.
fn keep(keys: &mut Keys, expiry: &mut Expiry, id: &KeyId, known: &Known) -> Result<(), Cause> {
    let old = stored(keys, id)?;
    if old
        .as_ref()
        .is_some_and(|old| old.place.offset > known.place.offset)
    {
        return Ok(());
    }
    if let Some(old) = old {
        expiry.remove(&expiry_row(old.written_ms, id))?;
    }
    keys.insert(id, encode(known)?.as_slice())?;
    expiry.insert(&expiry_row(known.written_ms, id), ())?;
    Ok(())
}

fn forget(keys: &mut Keys, expiry: &mut Expiry, id: &KeyId) -> Result<(), Cause> {
    if let Some(old) = stored(keys, id)? {
        keys.remove(id)?;
        expiry.remove(&expiry_row(old.written_ms, id))?;
    }
    Ok(())
}

/// Deletes the key of the expiry `row` if its entry was written before `cutoff_ms`. The
/// entry's own time decides, not the row's: a row that outlived a rewrite of its key must
/// not take the newer entry with it, which is filed again under its own time instead.
fn sweep_key(
    keys: &mut Keys,
    expiry: &mut Expiry,
    row: &[u8; 24],
    cutoff_ms: i64,
) -> Result<bool, Cause> {
    let id = id_of(row);
    let Some(known) = stored(keys, &id)? else {
        return Ok(false);
    };
    if known.written_ms < cutoff_ms {
        keys.remove(&id)?;
        return Ok(true);
    }
    expiry.insert(&expiry_row(known.written_ms, &id), ())?;
    Ok(false)
}

/// The first `limit` rows of EXPIRY written before `cutoff_ms`.
fn due_rows(expiry: &Expiry, cutoff_ms: i64, limit: usize) -> Result<Vec<[u8; 24]>, Cause> {
    let before_cutoff = expiry.range(..&expiry_row(cutoff_ms, &[0; 16]))?;
    let mut due = Vec::new();
    for row in before_cutoff.take(limit) {
        due.push(*row?.0.value());
    }
    Ok(due)
}

/// When `id`'s entry was written, big-endian, then `id`: compared as bytes, rows sort by
/// time. The sign bit is flipped so that a negative time sorts before a positive one.
fn expiry_row(written_ms: i64, id: &KeyId) -> [u8; 24] {
    let mut row = [0; 24];
    row[..8].copy_from_slice(&((written_ms as u64) ^ (1 << 63)).to_be_bytes());
    row[8..].copy_from_slice(id);
    row
}

fn id_of(row: &[u8; 24]) -> KeyId {
    let mut id = [0; 16];
    id.copy_from_slice(&row[8..]);
    id
}

const PENDING: u8 = 0;
const FINAL: u8 = 1;
const RETRYABLE: u8 = 2;

/// A Known as stored: partition i32, offset i64, written_ms i64, the state's tag, and for a
/// pending record started_ms i64, attempt and fingerprint (each a u16 length and UTF-8),
/// integers little-endian. 21 bytes for a final record; no serialization crate needed.
fn encode(known: &Known) -> Result<Vec<u8>, Cause> {
    let mut out = Vec::with_capacity(21);
    out.extend(known.place.partition.to_le_bytes());
    out.extend(known.place.offset.to_le_bytes());
    out.extend(known.written_ms.to_le_bytes());
    match &known.kept {
        Kept::Pending {
            attempt,
            started_ms,
            fingerprint,
        } => {
            out.push(PENDING);
            out.extend(started_ms.to_le_bytes());
            put_text(&mut out, attempt)?;
            put_text(&mut out, fingerprint)?;
        }
        Kept::Final => out.push(FINAL),
        Kept::Retryable => out.push(RETRYABLE),
    }
    Ok(out)
}

fn put_text(out: &mut Vec<u8>, text: &str) -> Result<(), Cause> {
    let len = u16::try_from(text.len()).map_err(|_| Cause::TooLong(text.len()))?;
    out.extend(len.to_le_bytes());
    out.extend(text.as_bytes());
    Ok(())
}

/// What [`encode`] wrote; anything else is an error.
fn decode(bytes: &[u8]) -> Result<Known, Cause> {
    let mut rest = Reader(bytes);
    let partition = i32::from_le_bytes(rest.take()?);
    let offset = i64::from_le_bytes(rest.take()?);
    let written_ms = i64::from_le_bytes(rest.take()?);
    let kept = match rest.take::<1>()? {
        [PENDING] => {
            let started_ms = i64::from_le_bytes(rest.take()?);
            let attempt = rest.text()?;
            let fingerprint = rest.text()?;
            Kept::Pending {
                attempt,
                started_ms,
                fingerprint,
            }
        }
        [FINAL] => Kept::Final,
        [RETRYABLE] => Kept::Retryable,
        [tag] => return Err(Cause::Garbled(format!("unknown state tag {tag}"))),
    };
    if !rest.0.is_empty() {
        return Err(Cause::Garbled(format!(
            "{} bytes past its end",
            rest.0.len()
        )));
    }
    let place = LogPlace { partition, offset };
    Ok(Known::at(place, written_ms, kept))
}

/// The bytes of an entry not read yet.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Cause> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or_else(cut_short)?;
        self.0 = rest;
        Ok(*head)
    }

    fn text(&mut self) -> Result<Box<str>, Cause> {
        let len = usize::from(u16::from_le_bytes(self.take()?));
        let (text, rest) = self.0.split_at_checked(len).ok_or_else(cut_short)?;
        self.0 = rest;
        let text =
            std::str::from_utf8(text).map_err(|_| Cause::Garbled("text not UTF-8".into()))?;
        Ok(text.into())
    }
}

fn cut_short() -> Cause {
    Cause::Garbled("cut short".into())
}

/// What went wrong with a worker's state file: the file, what was being done, a fix where
/// there is one, and the cause.
#[derive(Debug)]
pub struct FileError {
    path: PathBuf,
    doing: &'static str,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Redb(redb::Error),
    /// A stored entry that is not one [`encode`] writes.
    Garbled(String),
    /// A pending record's attempt or fingerprint longer than a u16 length can say.
    TooLong(usize),
}

impl FileError {
    fn new(path: &Path, doing: &'static str, cause: Cause) -> FileError {
        FileError {
            path: path.to_path_buf(),
            doing,
            cause,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        write!(f, "cannot {} the worker's state file {path}", self.doing)?;
        if let Some(fix) = self.cause.fix() {
            write!(f, " ({fix})")?;
        }
        write!(f, ": {}", self.cause)
    }
}

impl std::error::Error for FileError {}

impl Cause {
    fn fix(&self) -> Option<&'static str> {
        use redb::Error as E;
        match self {
            Cause::Garbled(_)
            | Cause::Redb(
                E::Corrupted(_)
                | E::UpgradeRequired(_)
                | E::RepairAborted
                | E::TableTypeMismatch(_)
                | E::TypeDefinitionChanged(_)
                | E::TableIsMultimap(_),
            ) => Some(
                "it is a cache of the results topic: remove it, and the worker rebuilds it \
                 from the topic",
            ),
            Cause::Redb(E::DatabaseAlreadyOpen | E::LockProtocolMismatch) => {
                Some("it is open already: give each worker a state directory of its own")
            }
            Cause::Redb(E::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Some("it is not one: remove it, and the worker makes a new one from the topic")
            }
            // A full disk or a missing directory: removing the file would not help.
            _ => None,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Redb(e) => write!(f, "{e}"),
            Cause::Garbled(what) => write!(f, "a garbled entry: {what}"),
            Cause::TooLong(len) => write!(
                f,
                "a pending record's attempt or fingerprint of {len} bytes (at most {} fit)",
                u16::MAX
            ),
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Cause {
            fn from(e: $error) -> Cause {
                Cause::Redb(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::results_index::key_id;
    use std::ops::Range;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    const CACHE: usize = 1 << 20;
    /// Set on a child process of [`crash_while_writing`]: the file it fills, then aborts.
    /// Not `KREPLY_`-named: no operator sets it (`config::reference` lists those).
    const CRASH_ENV: &str = "PARTITION_FILE_TEST_CRASH";

    /// A directory of its own for one test, removed after it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("kreply-partition-file-{}-{n}", std::process::id());
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("2.redb")
        }

        fn open(&self) -> PartitionFile {
            PartitionFile::open(&self.file(), CACHE).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn id(n: u64) -> KeyId {
        key_id(&format!("order-{n}"))
    }

    fn at(offset: i64, written_ms: i64, kept: Kept) -> Known {
        let place = LogPlace {
            partition: 2,
            offset,
        };
        Known::at(place, written_ms, kept)
    }

    fn pending(attempt: &str) -> Kept {
        Kept::Pending {
            attempt: attempt.into(),
            started_ms: 5,
            fingerprint: "6f1e0c2a-fingerprint".into(),
        }
    }

    fn kept(file: &PartitionFile, n: u64) -> Option<Kept> {
        file.get(&id(n)).unwrap().map(|known| known.kept)
    }

    #[test]
    fn every_state_reads_back_as_written() {
        let states = [pending("a-1"), pending(""), Kept::Final, Kept::Retryable];
        for kept in states {
            let known = Known::at(
                LogPlace {
                    partition: -3,
                    offset: -1,
                },
                i64::MIN,
                kept,
            );
            assert_eq!(decode(&encode(&known).unwrap()).unwrap(), known);
        }
    }

    #[test]
    fn the_newest_offset_wins_across_batches_and_inside_one() {
        let scratch = Scratch::new();
        let file = scratch.open();
        file.apply(&[(id(1), Some(at(9, 0, Kept::Final)))], None, false)
            .unwrap();
        file.apply(&[(id(1), Some(at(4, 0, Kept::Retryable)))], None, false)
            .unwrap();
        assert_eq!(kept(&file, 1), Some(Kept::Final), "an older offset, later");
        let batch = [
            (id(2), Some(at(20, 0, pending("a")))),
            (id(2), Some(at(12, 0, Kept::Retryable))),
            (id(1), Some(at(9, 1, Kept::Retryable))),
        ];
        file.apply(&batch, None, false).unwrap();
        assert_eq!(kept(&file, 2), Some(pending("a")));
        assert_eq!(
            kept(&file, 1),
            Some(Kept::Retryable),
            "the same offset again"
        );
        assert_eq!(file.get(&id(3)).unwrap(), None);
    }

    #[test]
    fn a_tombstone_deletes_the_key() {
        let scratch = Scratch::new();
        let file = scratch.open();
        let batch = [
            (id(1), Some(at(1, 0, Kept::Final))),
            (id(2), Some(at(2, 0, Kept::Final))),
            (id(3), None),
        ];
        file.apply(&batch, None, false).unwrap();
        file.apply(&[(id(1), None)], None, false).unwrap();
        assert_eq!(file.get(&id(1)).unwrap(), None);
        assert_eq!(kept(&file, 2), Some(Kept::Final));
        assert_eq!(file.len().unwrap(), 1);
        assert_eq!(file.sweep(i64::MAX, 10).unwrap(), 1, "no row left behind");
    }

    #[test]
    fn the_checkpoint_and_keys_survive_a_close() {
        let scratch = Scratch::new();
        let file = scratch.open();
        assert_eq!(file.read_to().unwrap(), None);
        file.apply(&[(id(1), Some(at(0, 0, Kept::Final)))], Some(1), false)
            .unwrap();
        file.apply(&[(id(2), Some(at(1, 0, Kept::Final)))], Some(2), true)
            .unwrap();
        file.apply(&[(id(3), Some(at(2, 0, Kept::Final)))], Some(3), false)
            .unwrap();
        drop(file);
        let file = scratch.open();
        assert_eq!(file.read_to().unwrap(), Some(3), "a clean close keeps all");
        assert_eq!(file.len().unwrap(), 3);
        for n in 1..=3 {
            assert_eq!(kept(&file, n), Some(Kept::Final));
        }
    }

    #[test]
    fn a_sweep_deletes_keys_written_before_the_cutoff_at_most_limit_at_a_time() {
        let scratch = Scratch::new();
        let file = scratch.open();
        let batch: Vec<_> = (0..10)
            .map(|n| (id(n), Some(at(n as i64, n as i64 * 100 - 300, Kept::Final))))
            .collect();
        file.apply(&batch, None, false).unwrap();
        // Written at -300, -200, ... 600: the cutoff 250 takes the six before it.
        assert_eq!(file.sweep(250, 4).unwrap(), 4);
        assert_eq!(file.get(&id(0)).unwrap(), None, "oldest first");
        assert!(file.get(&id(4)).unwrap().is_some());
        assert_eq!(file.sweep(250, 4).unwrap(), 2);
        assert_eq!(file.sweep(250, 4).unwrap(), 0);
        assert_eq!(file.len().unwrap(), 4);
        assert!(file.get(&id(5)).unwrap().is_none());
        assert!(file.get(&id(6)).unwrap().is_some(), "written at 300");
    }

    #[test]
    fn a_key_rewritten_after_the_cutoff_survives_the_sweep() {
        let scratch = Scratch::new();
        let file = scratch.open();
        file.apply(&[(id(1), Some(at(1, 10, pending("a"))))], None, false)
            .unwrap();
        file.apply(&[(id(1), Some(at(2, 90, Kept::Final)))], None, false)
            .unwrap();
        assert_eq!(file.sweep(50, 10).unwrap(), 0);
        assert_eq!(kept(&file, 1), Some(Kept::Final));
        // A row the rewrite did not remove (written behind the table's back) takes nothing,
        // and the entry is swept at its own time.
        file.apply(&[(id(2), Some(at(3, 10, Kept::Final)))], None, false)
            .unwrap();
        file.put_raw(&id(2), &encode(&at(4, 90, Kept::Retryable)).unwrap());
        assert_eq!(file.sweep(50, 10).unwrap(), 0);
        assert_eq!(kept(&file, 2), Some(Kept::Retryable));
        assert_eq!(file.sweep(100, 10).unwrap(), 2);
        assert_eq!(file.len().unwrap(), 0);
    }

    #[test]
    fn len_counts_each_key_once() {
        let scratch = Scratch::new();
        let file = scratch.open();
        assert_len(&file, 0, "a new file");
        let batch: Vec<_> = (0..5)
            .map(|n| (id(n), Some(at(1, 0, Kept::Final))))
            .collect();
        file.apply(&batch, None, false).unwrap();
        file.apply(&batch, None, false).unwrap();
        file.apply(&[(id(0), Some(at(2, 9, Kept::Retryable)))], None, false)
            .unwrap();
        assert_len(&file, 5, "overwrites");
        file.apply(&[(id(1), None), (id(99), None)], None, false)
            .unwrap();
        assert_len(&file, 4, "a tombstone");
        assert_eq!(file.sweep(5, 100).unwrap(), 3);
        assert_len(&file, 1, "a sweep");
    }

    /// `file` holds `keys` keys, and as many expiry rows.
    fn assert_len(file: &PartitionFile, keys: u64, after: &str) {
        assert_eq!(file.len().unwrap(), keys, "{after}");
        assert_eq!(file.expiry_rows(), keys, "expiry rows, {after}");
    }

    #[test]
    fn a_garbled_entry_is_an_error_naming_the_file_and_the_fix() {
        let scratch = Scratch::new();
        let file = scratch.open();
        let whole = encode(&at(7, 8, pending("attempt"))).unwrap();
        for cut in 0..whole.len() {
            assert!(decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let longer = [&whole[..], &[0]].concat();
        let mut bad_text = whole.clone();
        bad_text[31] = 0xff; // The attempt's first byte.
        let bad_tag = [&whole[..20], &[7]].concat();
        let garbage: [&[u8]; 5] = [&longer, &bad_text, &bad_tag, b"", b"not an entry"];
        for garbage in garbage {
            file.put_raw(&id(1), garbage);
            let error = file.get(&id(1)).unwrap_err().to_string();
            assert!(
                error.starts_with("cannot read the worker's state file /"),
                "{error}"
            );
            assert!(error.contains("2.redb (it is a cache"), "{error}");
            assert!(error.contains(": a garbled entry: "), "{error}");
        }
        let error = file.apply(&[(id(1), None)], Some(1), false).unwrap_err();
        assert!(error.to_string().contains("garbled"), "{error}");
        assert_eq!(file.read_to().unwrap(), None, "nothing of a failed batch");
    }

    #[test]
    fn a_text_too_long_to_store_is_refused_not_cut() {
        let scratch = Scratch::new();
        let file = scratch.open();
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        let error = file
            .apply(&[(id(1), Some(at(1, 0, pending(&long))))], None, false)
            .unwrap_err();
        assert!(error.to_string().contains("of 65536 bytes"), "{error}");
        assert_eq!(file.len().unwrap(), 0);
    }

    #[test]
    fn a_file_that_is_not_a_state_file_is_an_error() {
        let scratch = Scratch::new();
        std::fs::write(scratch.file(), vec![0x5a; 8192]).unwrap();
        let error = PartitionFile::open(&scratch.file(), CACHE).err().unwrap();
        let error = error.to_string();
        assert!(
            error.starts_with("cannot open the worker's state file /"),
            "{error}"
        );
        assert!(
            error.contains("2.redb (it is not one: remove it"),
            "{error}"
        );
    }

    #[test]
    fn a_file_is_open_once_at_a_time() {
        let scratch = Scratch::new();
        let _file = scratch.open();
        let error = PartitionFile::open(&scratch.file(), CACHE).err().unwrap();
        assert!(error.to_string().contains("(it is open already"), "{error}");
    }

    #[test]
    fn a_file_scribbled_over_is_an_error_not_a_panic() {
        let scratch = Scratch::new();
        let file = scratch.open();
        fill(&file, 0..4_000, None);
        drop(file);
        let mut bytes = std::fs::read(scratch.file()).unwrap();
        for byte in &mut bytes[4096..] {
            *byte ^= 0x5a;
        }
        std::fs::write(scratch.file(), &bytes).unwrap();
        let error = PartitionFile::open_verified(&scratch.file(), CACHE);
        let error = error.err().unwrap();
        assert!(error.to_string().contains("(it is a cache"), "{error}");
    }

    #[test]
    fn clear_empties_keys_and_checkpoint() {
        let scratch = Scratch::new();
        let file = scratch.open();
        file.set_meta("layout", "partitions=3").unwrap();
        let batch: Vec<_> = (0..50)
            .map(|n| (id(n), Some(at(1, 0, Kept::Final))))
            .collect();
        file.apply(&batch, Some(51), false).unwrap();
        file.clear().unwrap();
        assert_eq!(file.len().unwrap(), 0);
        assert_eq!(file.read_to().unwrap(), None);
        assert_eq!(file.get(&id(3)).unwrap(), None);
        assert_eq!(file.sweep(i64::MAX, 100).unwrap(), 0);
        assert_eq!(
            file.meta("layout").unwrap().as_deref(),
            Some("partitions=3")
        );
        file.apply(&batch[..1], Some(1), false).unwrap();
        assert_eq!(file.len().unwrap(), 1, "usable after");
    }

    #[test]
    fn metadata_is_kept_across_a_close() {
        let scratch = Scratch::new();
        let file = scratch.open();
        assert_eq!(file.meta("topic").unwrap(), None);
        file.set_meta("topic", "payments.results").unwrap();
        file.set_meta("layout", "partitions=3").unwrap();
        file.set_meta("layout", "partitions=6").unwrap();
        drop(file);
        let file = scratch.open();
        let topic = file.meta("topic").unwrap();
        assert_eq!(topic.as_deref(), Some("payments.results"));
        assert_eq!(
            file.meta("layout").unwrap().as_deref(),
            Some("partitions=6")
        );
    }

    #[test]
    fn a_crash_keeps_the_last_durable_checkpoint_and_only_what_precedes_it() {
        let keys = 10_000;
        fill_then_abort_when_a_child(keys);
        let scratch = Scratch::new();
        let (file, _) = crash_while_writing(&scratch, "a_crash_keeps", false);
        assert_eq!(file.read_to().unwrap(), Some(keys as i64));
        assert_eq!(file.len().unwrap(), keys);
        assert_eq!(kept(&file, keys - 1), Some(Kept::Final));
        assert_eq!(file.get(&id(keys)).unwrap(), None, "the non-durable batch");
    }

    /// `cargo test --release --lib partition_file -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement: run it when asked"]
    fn measure_a_million_keys() {
        let keys = 1_000_000;
        fill_then_abort_when_a_child(keys);
        let scratch = Scratch::new();
        let file = PartitionFile::open(&scratch.file(), 16 << 20).unwrap();
        let started = Instant::now();
        fill(&file, 0..keys, None);
        let took = started.elapsed();
        println!(
            "{keys} keys, batches of {BATCH}, a durable commit every {DURABLE_EVERY}: {:.2} s, \
             {}, {}",
            took.as_secs_f64(),
            size(&scratch.file()),
            rss()
        );
        let started = Instant::now();
        for n in (0..keys).step_by(10) {
            assert!(file.get(&id(n)).unwrap().is_some());
        }
        let per_get = started.elapsed() / (keys / 10) as u32;
        println!("get: {per_get:?} each (100,000 of them)");
        let started = Instant::now();
        fill(&file, keys..2 * keys, Some(keys));
        let took = started.elapsed();
        println!(
            "{keys} more, each batch then a sweep of as many: {:.2} s, {}, {}",
            took.as_secs_f64(),
            size(&scratch.file()),
            rss()
        );
        assert_eq!(file.len().unwrap(), keys);
        let stats = file.db.begin_write().unwrap().stats().unwrap();
        let page = stats.page_size() as u64;
        println!(
            "pages of {page} bytes: {} leaf, {} branch, {} allocated; {} bytes stored, {} of \
             metadata, {} fragmented",
            stats.leaf_pages(),
            stats.branch_pages(),
            stats.allocated_pages(),
            stats.stored_bytes(),
            stats.metadata_bytes(),
            stats.fragmented_bytes()
        );
        let started = Instant::now();
        drop(file);
        println!("close: {:?}", started.elapsed());
        for verify in [false, true] {
            let started = Instant::now();
            let file = PartitionFile::open_with(&scratch.file(), 16 << 20, verify).unwrap();
            let open = started.elapsed();
            println!("open after a clean close, verified {verify}: {open:?}");
            drop(file);
        }
        println!("{}", rss());
        for verify in [false, true] {
            let crashed = Scratch::new();
            let (file, open) = crash_while_writing(&crashed, "measure_a_million", verify);
            assert_eq!(file.read_to().unwrap(), Some(keys as i64));
            println!("open after a crash, verified {verify}: {open:?}");
        }
    }

    const BATCH: u64 = 2_000;
    const DURABLE_EVERY: u64 = 100;

    /// Keys `keys`, final records written at their own number, with the checkpoint after
    /// each batch; with `window`, each batch is followed by a sweep of the keys that many
    /// older, as a worker would do.
    fn fill(file: &PartitionFile, keys: Range<u64>, window: Option<u64>) {
        let end = keys.end;
        for (n, first) in keys.step_by(BATCH as usize).enumerate() {
            let last = (first + BATCH).min(end);
            let batch: Vec<_> = (first..last)
                .map(|k| (id(k), Some(at(k as i64, k as i64, Kept::Final))))
                .collect();
            let durable = (n as u64 + 1).is_multiple_of(DURABLE_EVERY) || last == end;
            file.apply(&batch, Some(last as i64), durable).unwrap();
            if let Some(window) = window {
                let cutoff = last.saturating_sub(window) as i64;
                assert_eq!(file.sweep(cutoff, BATCH as usize).unwrap(), BATCH as usize);
            }
        }
    }

    /// In a child process of [`crash_while_writing`]: fills its file with `keys` keys, the
    /// last commit durable, then one non-durable batch more, and aborts.
    fn fill_then_abort_when_a_child(keys: u64) {
        let Some(path) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let file = PartitionFile::open(Path::new(&path), 16 << 20).unwrap();
        fill(&file, 0..keys, None);
        let lost = [(id(keys), Some(at(keys as i64, 0, Kept::Final)))];
        file.apply(&lost, Some(keys as i64 + 1), false).unwrap();
        std::process::abort();
    }

    /// Runs the test named `test` (a unique prefix) in a child process that writes to
    /// `scratch`'s file and aborts, then opens the file: the file and how long opening took.
    fn crash_while_writing(
        scratch: &Scratch,
        test: &str,
        verify: bool,
    ) -> (PartitionFile, Duration) {
        let module = module_path!().split_once("::").unwrap().1;
        let status = Command::new(std::env::current_exe().unwrap())
            .args([&format!("{module}::{test}"), "--include-ignored"])
            .args(["--test-threads=1", "--quiet"])
            .env(CRASH_ENV, scratch.file())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child was to abort: {status}");
        let started = Instant::now();
        let file = PartitionFile::open_with(&scratch.file(), CACHE, verify).unwrap();
        (file, started.elapsed())
    }

    /// The file's length, and what it takes on disk (less where redb left holes).
    fn size(path: &Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(path).unwrap();
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let on_disk = mib(file.blocks() * 512);
        format!("file {:.1} MiB ({on_disk:.1} MiB on disk)", mib(file.len()))
    }

    /// The process's resident memory now and at its peak.
    fn rss() -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            let line = status.lines().find(|line| line.starts_with(name));
            line.map_or("?".into(), |line| line[name.len()..].trim().to_string())
        };
        format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
    }
}
