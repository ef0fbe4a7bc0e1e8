//! The Parquet store: the write path from an accepted batch to a Parquet file.
//!
//! Stages, each with one owner:
//! 1. [`ParquetStore::append`] admits a batch against the memory budget and encodes it
//!    as a log record.
//! 2. The log writer thread appends the records that arrived together to the
//!    write-ahead log ([`wal`]), syncs once for all of them (group commit, per
//!    `storage.wal_fsync`), moves their batches into the tables' buffers, and only then
//!    answers. A success from `append` is the acknowledgement: the rows are durable and
//!    visible to queries.
//! 3. A flush (every `flush_interval_ms`, when a buffer reaches `flush_rows` or half
//!    the memory budget, and on shutdown) asks the log writer to seal its segment and
//!    hand over every buffer, writes one Parquet file per table and partition hour,
//!    commits them with the checkpoint, and then, under the lock queries snapshot
//!    under, swaps the batches for the files. A query sees every row exactly once.
//!
//! Recovery ([`ParquetStore::open`]) completes the last checkpoint and replays the log
//! segments it does not cover before the store takes any request.
//!
//! Files leave the history by compaction ([`compact`]) and retention. Either takes
//! them out of the snapshot first and deletes them only once no query that began
//! before could still read them: every query holds a [`ReadGuard`] while it runs.

mod compact;
mod config;
mod layout;
mod quarantine;
mod wal;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;
use swarmscope_processors::schema::Table;
use tokio::sync::{oneshot, Notify};

pub use config::{StorageConfig, WalFsync};
pub use layout::StoredFile;
pub use quarantine::QUARANTINE_DIR;
pub use wal::Damage;
pub use writer::{writer_properties, RANDOM_ID_COLUMNS};

use crate::{Error, Result};

/// What a query reads of one table: the files and the rows not yet in a file.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub files: Vec<StoredFile>,
    pub batches: Vec<RecordBatch>,
}

/// What recovery found in the write-ahead log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub segments: usize,
    pub batches: usize,
    pub rows: usize,
    pub corrupt_records: usize,
    pub torn_tails: usize,
}

#[derive(Default)]
struct TableState {
    /// Accepted rows waiting for the next flush.
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    /// Rows being written by the flush in progress.
    flushing: Vec<RecordBatch>,
    /// Files of the history, in the order they were written.
    files: Vec<StoredFile>,
}

/// Every table's buffer, handed from the log writer to a flush.
struct Taken {
    sealed_segment: u64,
    tables: Vec<(Table, Vec<RecordBatch>)>,
}

enum Command {
    Append {
        table: Table,
        batch: RecordBatch,
        record: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Rotate {
        done: oneshot::Sender<Result<Taken>>,
    },
}

/// Queries in flight, by the epoch they began in. The epoch moves on whenever files
/// leave the snapshot.
#[derive(Default)]
struct Readers {
    epoch: u64,
    active: BTreeMap<u64, usize>,
}

/// Files out of the snapshot, to delete once no reader of `epoch` or before remains.
struct Retired {
    epoch: u64,
    files: Vec<PathBuf>,
    /// The compaction journal to remove once `files` are gone.
    journal: Option<PathBuf>,
}

/// Held by a query while it runs, so the files of its snapshot stay on disk.
pub struct ReadGuard {
    inner: Arc<Inner>,
    epoch: u64,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut readers = lock(&self.inner.readers);
        if let Some(n) = readers.active.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                readers.active.remove(&self.epoch);
            }
        }
    }
}

struct Inner {
    config: StorageConfig,
    props: WriterProperties,
    read_only: bool,
    wal_dir: PathBuf,
    tables: BTreeMap<Table, Mutex<TableState>>,
    /// Memory held by admitted rows not yet in a Parquet file.
    buffered_bytes: AtomicUsize,
    /// The size of the last admitted batch: what [`ParquetStore::admission`] expects
    /// the next request to take.
    last_batch_bytes: AtomicUsize,
    /// Serialises flushes so two never write the same buffer.
    flush_lock: tokio::sync::Mutex<()>,
    /// Woken when a buffer should be flushed early.
    full: Notify,
    /// To the log writer thread; `None` for a read-only store.
    log: Option<Mutex<mpsc::Sender<Command>>>,
    recovery: Recovery,
    readers: Mutex<Readers>,
    retired: Mutex<Vec<Retired>>,
    /// Files moved to `_quarantine/` since the store opened.
    quarantined: AtomicUsize,
}

/// The Parquet history under `storage.data_dir`. Cheap to clone.
#[derive(Clone)]
pub struct ParquetStore {
    inner: Arc<Inner>,
}

impl ParquetStore {
    /// Opens (creating if needed) the store for writing: completes the last checkpoint,
    /// removes what a crash left half-written, and replays the write-ahead log.
    pub fn open(config: StorageConfig) -> Result<ParquetStore> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(Error::io(&config.data_dir))?;
        let wal_dir = config.data_dir.join("_wal");
        std::fs::create_dir_all(&wal_dir).map_err(Error::io(&wal_dir))?;

        // Phase two of an interrupted flush: its files are named by the checkpoint.
        let checkpoint = wal::Checkpoint::load(&wal_dir)?;
        for path in &checkpoint.pending_files {
            let tmp = writer::tmp_path(path);
            if tmp.exists() && !path.exists() {
                writer::rename_into_place(&tmp, path)?;
            }
        }
        compact::recover(&config.data_dir)?;
        let mut tables = BTreeMap::new();
        let mut quarantined = 0;
        for table in Table::ALL {
            let mut files = layout::scan_table(&config.data_dir, table, true)?;
            // Found now, not by a user's query later.
            let unreadable = take_unreadable(&mut files);
            for (file, reason) in &unreadable {
                quarantine::quarantine(&config.data_dir, &file.path, reason)?;
            }
            quarantined += unreadable.len();
            tables.insert(
                table,
                TableState {
                    files,
                    ..TableState::default()
                },
            );
        }

        // Replay what the checkpoint does not cover.
        wal::delete_covered(&wal_dir, checkpoint.covered_segment)?;
        let mut recovery = Recovery::default();
        let mut buffered_bytes = 0;
        let mut last_segment = checkpoint.covered_segment;
        for (segment, path) in wal::list_segments(&wal_dir)? {
            let (records, damage) = wal::read_segment(&path)?;
            if damage != Damage::default() {
                tracing::warn!(segment = %path.display(), corrupt_records = damage.corrupt_records, torn_tail = damage.torn_tail, "damaged write-ahead log segment; its good records are kept");
            }
            recovery.segments += 1;
            recovery.corrupt_records += damage.corrupt_records;
            recovery.torn_tails += usize::from(damage.torn_tail);
            for (table, batch) in records {
                recovery.batches += 1;
                recovery.rows += batch.num_rows();
                buffered_bytes += batch.get_array_memory_size();
                let state = tables.get_mut(&table).ok_or(Error::Closed)?;
                state.buffered_rows += batch.num_rows();
                state.buffered.push(batch);
            }
            last_segment = segment;
        }
        if recovery.segments > 0 {
            tracing::info!(
                segments = recovery.segments,
                rows = recovery.rows,
                "replayed the write-ahead log"
            );
        }

        let log = wal::Wal::create(&wal_dir, last_segment + 1)?;
        let (sender, receiver) = mpsc::channel();
        let inner = Arc::new(Inner {
            props: writer::writer_properties(&config)?,
            config,
            read_only: false,
            wal_dir,
            tables: tables
                .into_iter()
                .map(|(t, s)| (t, Mutex::new(s)))
                .collect(),
            buffered_bytes: AtomicUsize::new(buffered_bytes),
            last_batch_bytes: AtomicUsize::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            full: Notify::new(),
            log: Some(Mutex::new(sender)),
            recovery,
            readers: Mutex::default(),
            retired: Mutex::default(),
            quarantined: AtomicUsize::new(quarantined),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("swarmscope-wal".into())
            .spawn(move || log_writer(weak, log, receiver))
            .map_err(|e| Error::Wal(format!("cannot start the log writer: {e}")))?;
        Ok(ParquetStore { inner })
    }

    /// Opens a data directory for queries only (`swarmscope query --data-dir`). Each
    /// snapshot lists the directory anew, so files a running server adds are seen;
    /// rows a server holds in memory are not.
    pub fn open_read_only(data_dir: impl Into<PathBuf>) -> Result<ParquetStore> {
        let config = StorageConfig {
            data_dir: data_dir.into(),
            ..StorageConfig::default()
        };
        if !config.data_dir.is_dir() {
            return Err(Error::Io {
                path: config.data_dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such data directory"),
            });
        }
        let tables = Table::ALL
            .into_iter()
            .map(|t| (t, Mutex::new(TableState::default())))
            .collect();
        Ok(ParquetStore {
            inner: Arc::new(Inner {
                props: writer::writer_properties(&config)?,
                wal_dir: config.data_dir.join("_wal"),
                config,
                read_only: true,
                tables,
                buffered_bytes: AtomicUsize::new(0),
                last_batch_bytes: AtomicUsize::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                full: Notify::new(),
                log: None,
                recovery: Recovery::default(),
                readers: Mutex::default(),
                retired: Mutex::default(),
                quarantined: AtomicUsize::new(0),
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// What recovery replayed when the store opened.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    fn state(&self, table: Table) -> MutexGuard<'_, TableState> {
        lock_state(&self.inner, table)
    }

    /// Whether a request like the last one would fit the memory budget now, asked
    /// before a request is decoded: an overloaded collector then refuses requests for
    /// the cost of reading their headers instead of spending its CPU on decoding and
    /// converting rows that [`append`](Self::append) would refuse anyway (as the
    /// OpenTelemetry Collector's `memory_limiter` sits first in a pipeline).
    /// `Err(Backpressure)` means: retry later.
    pub fn admission(&self) -> Result<()> {
        let buffered = self.buffered_bytes();
        let limit = self.inner.config.max_buffered_bytes;
        let expected = self.inner.last_batch_bytes.load(Ordering::Relaxed);
        if buffered > 0 && buffered + expected > limit {
            self.inner.full.notify_one();
            return Err(Error::Backpressure { buffered, limit });
        }
        Ok(())
    }

    /// Accepts a batch of `table`. When this returns `Ok`, the rows are in the
    /// write-ahead log (synced as `storage.wal_fsync` says) and visible to queries.
    /// `Err(Backpressure)` means nothing was taken; the client should retry.
    pub async fn append(&self, table: Table, batch: RecordBatch) -> Result<()> {
        let Some(log) = &self.inner.log else {
            return Err(Error::ReadOnly);
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let size = batch.get_array_memory_size();
        self.inner.last_batch_bytes.store(size, Ordering::Relaxed);
        let limit = self.inner.config.max_buffered_bytes;
        let before = self.inner.buffered_bytes.fetch_add(size, Ordering::AcqRel);
        // An empty buffer admits any batch, or a request larger than the budget would
        // be refused forever; the budget bounds what accumulates, not one request
        // (which `max_request_bytes` bounds).
        if before > 0 && before + size > limit {
            self.inner.buffered_bytes.fetch_sub(size, Ordering::AcqRel);
            self.inner.full.notify_one();
            return Err(Error::Backpressure {
                buffered: before,
                limit,
            });
        }
        let result = self.log_append(log, table, batch).await;
        if result.is_err() {
            self.inner.buffered_bytes.fetch_sub(size, Ordering::AcqRel);
        } else if before + size >= limit / 2
            || self.state(table).buffered_rows >= self.inner.config.flush_rows
        {
            self.inner.full.notify_one();
        }
        result
    }

    async fn log_append(
        &self,
        log: &Mutex<mpsc::Sender<Command>>,
        table: Table,
        batch: RecordBatch,
    ) -> Result<()> {
        let record = wal::encode_record(table, &batch)?;
        let (done, answer) = oneshot::channel();
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Command::Append {
                table,
                batch,
                record,
                done,
            })
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The files and in-memory rows of `table`, consistent with each other.
    pub fn snapshot(&self, table: Table) -> Result<Snapshot> {
        if self.inner.read_only {
            // A merge commits its output before it deletes its inputs; while both
            // are on disk, the journal says which to skip.
            let replaced = compact::replaced_files(self.data_dir())?;
            let mut files = layout::scan_table(self.data_dir(), table, false)?;
            files.retain(|f| !replaced.contains(&f.path));
            // A reader leaves the directory as it is (a server may own it): it skips
            // what it cannot read.
            for (file, reason) in take_unreadable(&mut files) {
                tracing::warn!(file = %file.path.display(), reason, "skipping an unreadable Parquet file");
            }
            return Ok(Snapshot {
                files,
                batches: Vec::new(),
            });
        }
        let state = self.state(table);
        let mut batches = state.flushing.clone();
        batches.extend(state.buffered.iter().cloned());
        Ok(Snapshot {
            files: state.files.clone(),
            batches,
        })
    }

    /// Checks the footer of every file of the history and moves those that cannot be
    /// read to `_quarantine/`, out of every later snapshot. Called when a query meets
    /// a Parquet error; returns the files moved.
    pub fn quarantine_unreadable(&self) -> Result<Vec<PathBuf>> {
        if self.inner.read_only {
            return Ok(Vec::new());
        }
        let mut moved = Vec::new();
        for table in Table::ALL {
            let files = self.state(table).files.clone();
            let unreadable: Vec<(PathBuf, String)> = files
                .iter()
                .filter_map(|f| quarantine::unreadable(&f.path).map(|r| (f.path.clone(), r)))
                .collect();
            if unreadable.is_empty() {
                continue;
            }
            self.state(table)
                .files
                .retain(|f| !unreadable.iter().any(|(path, _)| *path == f.path));
            for (path, reason) in unreadable {
                moved.push(quarantine::quarantine(self.data_dir(), &path, &reason)?);
                self.inner.quarantined.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(moved)
    }

    /// Files moved to `_quarantine/` since the store opened.
    pub fn quarantined_files(&self) -> usize {
        self.inner.quarantined.load(Ordering::Relaxed)
    }

    /// Rows accepted but not yet in a Parquet file.
    pub fn buffered_rows(&self, table: Table) -> usize {
        let state = self.state(table);
        state.buffered_rows + state.flushing.iter().map(|b| b.num_rows()).sum::<usize>()
    }

    /// Memory held by accepted rows not yet in a Parquet file.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffered_bytes.load(Ordering::Acquire)
    }

    /// Writes every buffered row to Parquet and retires the log segments it covered.
    pub async fn flush(&self) -> Result<()> {
        let Some(log) = &self.inner.log else {
            return Ok(());
        };
        let _guard = self.inner.flush_lock.lock().await;
        if Table::ALL
            .iter()
            .all(|t| self.state(*t).buffered.is_empty())
        {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Command::Rotate { done })
            .map_err(|_| Error::Closed)?;
        let taken = answer.await.map_err(|_| Error::Closed)??;
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || commit_flush(&inner, taken))
            .await
            .map_err(|e| Error::Wal(format!("flush task failed: {e}")))?;
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush failed; rows stay buffered and logged");
        }
        result
    }

    /// Deletes the files of partitions whose hour ended more than `retention_hours`
    /// before `now`. They leave the snapshot first, so new queries no longer read them.
    /// Returns how many files were deleted.
    pub fn enforce_retention(&self, now: std::time::SystemTime) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let now_hour = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() / 3600) as i64);
        let cutoff = now_hour - self.inner.config.retention_hours as i64;
        let mut deleted = 0;
        for table in Table::ALL {
            let expired: Vec<PathBuf> = {
                let mut state = self.state(table);
                let (expired, kept) = std::mem::take(&mut state.files)
                    .into_iter()
                    .partition(|f| f.hour < cutoff);
                state.files = kept;
                expired.into_iter().map(|f| f.path).collect()
            };
            deleted += expired.len();
            if !expired.is_empty() {
                self.retire(expired, None);
            }
        }
        if deleted > 0 {
            tracing::info!(
                deleted,
                retention_hours = self.inner.config.retention_hours,
                "retention removed expired partitions"
            );
        }
        self.delete_retired()?;
        Ok(deleted)
    }

    /// Starts a query: the files of any snapshot taken from now on stay on disk until
    /// the guard is dropped.
    pub fn reading(&self) -> ReadGuard {
        let mut readers = lock(&self.inner.readers);
        let epoch = readers.epoch;
        *readers.active.entry(epoch).or_default() += 1;
        ReadGuard {
            inner: Arc::clone(&self.inner),
            epoch,
        }
    }

    /// Files already out of the snapshot, to delete when no query can read them.
    fn retire(&self, files: Vec<PathBuf>, journal: Option<PathBuf>) {
        let epoch = {
            let mut readers = lock(&self.inner.readers);
            readers.epoch += 1;
            readers.epoch - 1
        };
        lock(&self.inner.retired).push(Retired {
            epoch,
            files,
            journal,
        });
    }

    /// Deletes the retired files no running query began early enough to read.
    /// Returns how many files were deleted.
    pub fn delete_retired(&self) -> Result<usize> {
        let oldest_reader = lock(&self.inner.readers).active.keys().next().copied();
        let due: Vec<Retired> = {
            let mut retired = lock(&self.inner.retired);
            let (due, kept) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|r| oldest_reader.is_none_or(|oldest| r.epoch < oldest));
            *retired = kept;
            due
        };
        let mut deleted = 0;
        for (i, r) in due.iter().enumerate() {
            let result = compact::delete_files(&r.files).and_then(|n| {
                if let Some(journal) = &r.journal {
                    std::fs::remove_file(journal).map_err(Error::io(journal))?;
                }
                Ok(n)
            });
            match result {
                Ok(n) => deleted += n,
                Err(e) => {
                    // Try again on the next tick.
                    lock(&self.inner.retired).extend(due.into_iter().skip(i));
                    return Err(e);
                }
            }
        }
        Ok(deleted)
    }

    /// Merges, per table, each group of small files of a partition into one file
    /// (see [`compact`]). Returns how many files were merged away.
    pub async fn compact(&self) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let mut merged = 0;
        for table in Table::ALL {
            let files = self.state(table).files.clone();
            let config = &self.inner.config;
            // Every group the plan finds: merges that copy row groups cost I/O, not
            // CPU, so a backlog (a burst, a restart) is worked off in one tick.
            for group in compact::plan(
                &files,
                config.compaction_min_files,
                config.compaction_target_bytes,
            ) {
                // Retention must not delete the inputs while they are read.
                let reading = self.reading();
                let inner = Arc::clone(&self.inner);
                let inputs = group.clone();
                let output = tokio::task::spawn_blocking(move || {
                    let pending = compact::merge(table, &inputs, &inner.props)?;
                    let journal = compact::Journal {
                        output: pending.file.path.clone(),
                        inputs: inputs.iter().map(|f| f.path.clone()).collect(),
                    }
                    .store(&inner.config.data_dir)
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&pending.tmp);
                    })?;
                    if let Err(e) = pending.commit() {
                        let _ = std::fs::remove_file(&pending.tmp);
                        let _ = std::fs::remove_file(&journal);
                        return Err(e);
                    }
                    Ok((pending.file, journal))
                })
                .await
                .map_err(|e| Error::Wal(format!("compaction task failed: {e}")))?;
                let (output, journal) = output?;
                let swapped = {
                    let mut state = self.state(table);
                    let position = state.files.iter().position(|f| *f == group[0]);
                    let all_there = group.iter().all(|g| state.files.contains(g));
                    match position {
                        Some(at) if all_there => {
                            state.files[at] = output.clone();
                            state.files.retain(|f| !group[1..].contains(f));
                            true
                        }
                        _ => false,
                    }
                };
                drop(reading);
                let inputs: Vec<PathBuf> = group.iter().map(|f| f.path.clone()).collect();
                if swapped {
                    tracing::info!(table = table.name(), inputs = inputs.len(), output = %output.path.display(), "compacted");
                    merged += inputs.len();
                    self.retire(inputs, Some(journal));
                } else {
                    // Retention took some inputs meanwhile: the merge is void. Its output
                    // goes; its inputs stay where retention left them.
                    compact::delete_files(std::slice::from_ref(&output.path))?;
                    std::fs::remove_file(&journal).map_err(Error::io(&journal))?;
                }
            }
        }
        self.delete_retired()?;
        Ok(merged)
    }

    /// Flushes every `flush_interval_ms`, and whenever a buffer fills, until
    /// `shutdown` resolves; then flushes what is left. Retention runs on every tick.
    /// Compaction runs beside it, as often, in its own task, so that a long merge
    /// never holds up a flush.
    pub async fn run_flusher(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.inner.config.flush_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (stop_compactor, mut stopped) = tokio::sync::watch::channel(false);
        let compactor = tokio::spawn({
            let store = self.clone();
            let mut ticker = tokio::time::interval(self.inner.config.flush_interval());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            async move {
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    if let Err(e) = store.compact().await {
                        tracing::error!(error = %e, "compaction failed; the inputs stay");
                    }
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
                _ = self.inner.full.notified() => {}
            }
            // Errors are logged by `flush`; the rows stay buffered for the next try.
            let _ = self.flush().await;
            if let Err(e) = self.enforce_retention(std::time::SystemTime::now()) {
                tracing::error!(error = %e, "retention failed");
            }
        }
        // A merge under way is finished, so that the directory holds no merged file
        // beside its inputs once the process exits (recovery would resolve it, but
        // other readers of the directory meanwhile would count both).
        let _ = stop_compactor.send(true);
        let _ = compactor.await;
        let _ = self.flush().await;
        let _ = self.delete_retired();
    }
}

/// Locks a mutex whose every mutation is a push, a swap or a clear, so that a panic
/// elsewhere cannot leave it half-done: a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the files whose footer does not parse out of `files`, with the reason.
fn take_unreadable(files: &mut Vec<StoredFile>) -> Vec<(StoredFile, String)> {
    let mut unreadable = Vec::new();
    files.retain(|f| match quarantine::unreadable(&f.path) {
        Some(reason) => {
            unreadable.push((f.clone(), reason));
            false
        }
        None => true,
    });
    unreadable
}

fn lock_state(inner: &Inner, table: Table) -> MutexGuard<'_, TableState> {
    lock(&inner.tables[&table])
}

/// Writes the taken buffers as Parquet and commits them with the checkpoint. On error
/// the rows go back in front of their tables' buffers (they are still in the log).
fn commit_flush(inner: &Inner, taken: Taken) -> Result<()> {
    let mut pending = Vec::new();
    let mut failure = None;
    for (table, batches) in &taken.tables {
        if batches.is_empty() {
            continue;
        }
        match writer::write_partitioned(&inner.config.data_dir, *table, batches, &inner.props) {
            Ok(files) => pending.push((*table, files)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let committed = match failure {
        Some(e) => Err(e),
        None => {
            let checkpoint = wal::Checkpoint {
                covered_segment: taken.sealed_segment,
                pending_files: pending
                    .iter()
                    .flat_map(|(_, files)| files.iter().map(|f| f.file.path.clone()))
                    .collect(),
            };
            checkpoint.store(&inner.wal_dir).and_then(|()| {
                // From here the flush is decided; renames that fail are redone by
                // recovery from the checkpoint.
                for (_, files) in &pending {
                    for f in files {
                        f.commit()?;
                    }
                }
                Ok(())
            })
        }
    };
    match committed {
        Ok(()) => {
            let mut freed = 0;
            for (table, batches) in &taken.tables {
                let files = pending
                    .iter()
                    .find(|(t, _)| t == table)
                    .map(|(_, files)| files.iter().map(|f| f.file.clone()).collect::<Vec<_>>())
                    .unwrap_or_default();
                freed += batches
                    .iter()
                    .map(|b| b.get_array_memory_size())
                    .sum::<usize>();
                let mut state = lock_state(inner, *table);
                state.files.extend(files);
                state.flushing.clear();
            }
            inner.buffered_bytes.fetch_sub(freed, Ordering::AcqRel);
            wal::delete_covered(&inner.wal_dir, taken.sealed_segment)?;
            tracing::debug!(segment = taken.sealed_segment, "flushed and checkpointed");
            Ok(())
        }
        Err(e) => {
            for (_, files) in &pending {
                for f in files {
                    let _ = std::fs::remove_file(&f.tmp);
                }
            }
            for (table, mut batches) in taken.tables {
                let mut state = lock_state(inner, table);
                state.flushing.clear();
                state.buffered_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                batches.append(&mut state.buffered);
                state.buffered = batches;
            }
            Err(e)
        }
    }
}

/// The log writer thread: the single owner of the write-ahead log and of admission
/// into the buffers. Runs until the store is dropped.
fn log_writer(inner: std::sync::Weak<Inner>, mut log: wal::Wal, commands: mpsc::Receiver<Command>) {
    let (mode, interval) = match inner.upgrade() {
        Some(i) => (
            i.config.wal_fsync,
            Duration::from_millis(i.config.wal_fsync_interval_ms),
        ),
        None => return,
    };
    let mut last_sync = Instant::now();
    let mut appends: Vec<(Table, RecordBatch, oneshot::Sender<Result<()>>)> = Vec::new();
    loop {
        // Wait for work; in interval mode wake up to sync on time.
        let first = match mode {
            WalFsync::Interval => match commands.recv_timeout(interval) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            _ => match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            },
        };
        let Some(inner) = inner.upgrade() else { break };
        // Everything that arrived meanwhile joins this group.
        for command in first.into_iter().chain(commands.try_iter()) {
            match command {
                Command::Append {
                    table,
                    batch,
                    record,
                    done,
                } => match log.write(&record) {
                    Ok(()) => appends.push((table, batch, done)),
                    Err(e) => {
                        // The group's earlier records were in the same unwritten
                        // buffer, which the next write leaves behind: they fail too.
                        let message = e.to_string();
                        let _ = done.send(Err(Error::Wal(message.clone())));
                        for (_, _, done) in appends.drain(..) {
                            let _ = done.send(Err(Error::Wal(message.clone())));
                        }
                    }
                },
                Command::Rotate { done } => {
                    commit_group(&inner, &mut log, mode, &mut appends, &mut last_sync);
                    let result = log.rotate(mode != WalFsync::Never).map(|sealed| Taken {
                        sealed_segment: sealed,
                        tables: Table::ALL
                            .into_iter()
                            .map(|t| {
                                let mut state = lock_state(&inner, t);
                                state.buffered_rows = 0;
                                let taken = std::mem::take(&mut state.buffered);
                                state.flushing.clone_from(&taken);
                                (t, taken)
                            })
                            .collect(),
                    });
                    let _ = done.send(result);
                }
            }
        }
        commit_group(&inner, &mut log, mode, &mut appends, &mut last_sync);
        if mode == WalFsync::Interval && last_sync.elapsed() >= interval {
            if let Err(e) = log.sync(true) {
                tracing::error!(error = %e, "write-ahead log sync failed");
            }
            last_sync = Instant::now();
        }
    }
    let _ = log.sync(mode != WalFsync::Never);
}

/// Makes a group of appended records durable (per the mode), moves their batches into
/// the buffers, and answers their senders.
fn commit_group(
    inner: &Inner,
    log: &mut wal::Wal,
    mode: WalFsync,
    appends: &mut Vec<(Table, RecordBatch, oneshot::Sender<Result<()>>)>,
    last_sync: &mut Instant,
) {
    if appends.is_empty() {
        return;
    }
    let synced = log.sync(mode == WalFsync::Always);
    if mode == WalFsync::Always {
        *last_sync = Instant::now();
    }
    for (table, batch, done) in appends.drain(..) {
        match &synced {
            Ok(()) => {
                {
                    let mut state = lock_state(inner, table);
                    state.buffered_rows += batch.num_rows();
                    state.buffered.push(batch);
                }
                let _ = done.send(Ok(()));
            }
            Err(e) => {
                let _ = done.send(Err(Error::Wal(e.to_string())));
            }
        }
    }
}

#[cfg(test)]
mod tests;
