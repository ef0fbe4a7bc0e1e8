//! The Parquet store: the write path from an accepted batch to a Parquet file.
//!
//! Stages, each with one owner and one file:
//! 1. [`ParquetStore::append`] charges a batch (and the rows derived from it) to the
//!    pipeline's [`MemoryLimiter`] and encodes them as one log record ([`log`]).
//! 2. The log writer thread appends the records that arrived together to the
//!    write-ahead log ([`wal`]), syncs once for all of them (group commit, per
//!    `storage.wal_fsync`), moves their batches into the tables' buffers, and only then
//!    answers. A success from `append` is the acknowledgement: the rows are durable and
//!    visible to queries.
//! 3. A flush ([`flush`]; every `flush_interval_ms`, when a buffer reaches `flush_rows`
//!    or memory runs short, and on shutdown) asks the log writer to seal its segment and
//!    hand over every buffer, writes one Parquet file per table and partition hour,
//!    commits them with the checkpoint, and then, under the lock queries snapshot
//!    under, swaps the batches for the files. A query sees every row exactly once.
//!
//! Recovery ([`recovery`], when the store opens) completes the last checkpoint,
//! quarantines unreadable files ([`quarantine`]) and replays the log segments the
//! checkpoint does not cover before the store takes any request.
//!
//! Files leave the history by compaction ([`compactor`], merging with [`compact`]) and
//! retention ([`retention`]). Either takes them out of the snapshot first and deletes
//! them only once no query that began before could still read them ([`readers`]).

mod compact;
mod compactor;
mod config;
mod flush;
mod layout;
mod log;
mod metrics;
mod quarantine;
mod readers;
mod recovery;
mod retention;
mod wal;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;
use swarmscope_processors::schema::Table;
use tokio::sync::Notify;

pub use crate::frame::Damage;
pub use config::{StorageConfig, WalFsync};
pub use layout::StoredFile;
pub use metrics::StoreMetrics;
pub use quarantine::QUARANTINE_DIR;
pub use readers::ReadGuard;
pub use recovery::Recovery;
pub use writer::{writer_properties, RANDOM_ID_COLUMNS};

use crate::memory::MemoryLimiter;
use crate::{Error, Result};

/// What a query reads of one table: the files and the rows not yet in a file.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub files: Vec<StoredFile>,
    pub batches: Vec<RecordBatch>,
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

struct Inner {
    config: StorageConfig,
    props: WriterProperties,
    read_only: bool,
    wal_dir: PathBuf,
    tables: BTreeMap<Table, Mutex<TableState>>,
    /// The pipeline's memory budget, which the buffered rows are charged to.
    memory: MemoryLimiter,
    /// Memory held by admitted rows not yet in a Parquet file (this store's share of
    /// `memory`).
    buffered_bytes: AtomicUsize,
    /// Serialises flushes so two never write the same buffer.
    flush_lock: tokio::sync::Mutex<()>,
    /// Woken when a buffer should be flushed early.
    full: Notify,
    /// The log writer thread; `None` for a read-only store.
    log: Option<log::LogHandle>,
    recovery: Recovery,
    readers: Mutex<readers::Readers>,
    retired: Mutex<Vec<readers::Retired>>,
    /// Files moved to `_quarantine/` since the store opened.
    quarantined: AtomicUsize,
    metrics: StoreMetrics,
}

/// The Parquet history under `storage.data_dir`. Cheap to clone.
#[derive(Clone)]
pub struct ParquetStore {
    inner: Arc<Inner>,
}

impl ParquetStore {
    /// Opens (creating if needed) the store for writing, with a memory budget of its
    /// own (`storage.max_buffered_bytes`); see [`ParquetStore::open_with`].
    pub fn open(config: StorageConfig) -> Result<ParquetStore> {
        let memory = MemoryLimiter::new(config.max_buffered_bytes);
        ParquetStore::open_with(config, memory)
    }

    /// Opens (creating if needed) the store for writing, charging its buffer to
    /// `memory`: completes the last checkpoint, removes what a crash left
    /// half-written, quarantines unreadable files, and replays the write-ahead log.
    pub fn open_with(config: StorageConfig, memory: MemoryLimiter) -> Result<ParquetStore> {
        config.validate()?;
        let recovered = recovery::recover(&config)?;
        memory.force_charge(recovered.buffered_bytes);
        let wal_dir = config.data_dir.join("_wal");
        let log = wal::Wal::create(&wal_dir, recovered.last_segment + 1)?;
        let (handle, commands) = log::LogHandle::new();
        let inner = Arc::new(Inner {
            props: writer::writer_properties(&config)?,
            config,
            read_only: false,
            wal_dir,
            tables: recovered
                .tables
                .into_iter()
                .map(|(t, s)| (t, Mutex::new(s)))
                .collect(),
            memory,
            buffered_bytes: AtomicUsize::new(recovered.buffered_bytes),
            flush_lock: tokio::sync::Mutex::new(()),
            full: Notify::new(),
            log: Some(handle),
            recovery: recovered.recovery,
            readers: Mutex::default(),
            retired: Mutex::default(),
            quarantined: AtomicUsize::new(recovered.quarantined),
            metrics: StoreMetrics::new(),
        });
        log::start(&inner, log, commands)?;
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
            .iter()
            .map(|t| (*t, Mutex::new(TableState::default())))
            .collect();
        Ok(ParquetStore {
            inner: Arc::new(Inner {
                props: writer::writer_properties(&config)?,
                wal_dir: config.data_dir.join("_wal"),
                memory: MemoryLimiter::new(config.max_buffered_bytes),
                config,
                read_only: true,
                tables,
                buffered_bytes: AtomicUsize::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                full: Notify::new(),
                log: None,
                recovery: Recovery::default(),
                readers: Mutex::default(),
                retired: Mutex::default(),
                quarantined: AtomicUsize::new(0),
                metrics: StoreMetrics::new(),
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// The memory budget the buffered rows are charged to.
    pub fn memory(&self) -> &MemoryLimiter {
        &self.inner.memory
    }

    /// The store's metrics, to register with the registry `/metrics` serves.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// What recovery replayed when the store opened.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    fn state(&self, table: Table) -> MutexGuard<'_, TableState> {
        lock_state(&self.inner, table)
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
            for (file, reason) in quarantine::take_unreadable(&mut files) {
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

    /// Rows accepted but not yet in a Parquet file.
    pub fn buffered_rows(&self, table: Table) -> usize {
        let state = self.state(table);
        state.buffered_rows + state.flushing.iter().map(|b| b.num_rows()).sum::<usize>()
    }

    /// Memory held by accepted rows not yet in a Parquet file.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffered_bytes.load(Ordering::Acquire)
    }

    /// Files of `table` in the history, and their bytes on disk.
    pub fn stored_files(&self, table: Table) -> (usize, u64) {
        let files = self.state(table).files.clone();
        let bytes = files
            .iter()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum();
        (files.len(), bytes)
    }
}

/// Locks a mutex whose every mutation is a push, a swap or a clear, so that a panic
/// elsewhere cannot leave it half-done: a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_state(inner: &Inner, table: Table) -> MutexGuard<'_, TableState> {
    lock(&inner.tables[&table])
}

#[cfg(test)]
mod tests;
