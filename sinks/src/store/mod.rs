//! The store: the write path from an accepted batch to a committed Parquet file.
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
//!    hand over every buffer, writes one Parquet file per table and partition hour, and
//!    commits each table's files to its Delta log ([`delta`]) marked with the segment;
//!    under the lock queries snapshot under, it then swaps the batches for the files. A
//!    query sees every row exactly once.
//!
//! Recovery ([`recovery`], when the store opens) opens each table's Delta log
//! (converting a directory of plain Parquet in place), quarantines unreadable files
//! ([`quarantine`]) and replays the log segments a table has not committed before the
//! store takes any request.
//!
//! Files leave a table by compaction ([`compactor`], merging with [`compact`]) and
//! retention ([`retention`]), each a commit; [`ParquetStore::vacuum`] deletes them once
//! `storage.vacuum_after` has passed, so a reader of an older version still finds them.

mod compact;
mod compactor;
mod config;
mod delta;
mod flush;
mod layout;
mod log;
mod metrics;
mod quarantine;
mod recovery;
mod remote;
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
pub use config::{Location, S3Config, StorageConfig, WalFsync};
pub use layout::StoredFile;
pub use metrics::StoreMetrics;
pub use quarantine::QUARANTINE_DIR;
pub use recovery::Recovery;
pub use remote::Remote;
pub(crate) use retention::from_partition_hour;
pub use writer::{writer_properties, RANDOM_ID_COLUMNS};

use crate::memory::MemoryLimiter;
use crate::{Error, Result};

/// Under `data_dir`, where the files of tables on object storage are written before
/// their upload; what a crash leaves there was never committed, or was uploaded.
const STAGING_DIR: &str = "_staging";

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
    /// Rows being written by the flushes in progress, by the segment each flush sealed
    /// (one flush writes while the one before it commits).
    flushing: Vec<(u64, Vec<RecordBatch>)>,
    /// Files of the table's Delta snapshot, oldest partition first.
    files: Vec<StoredFile>,
}

struct Inner {
    config: StorageConfig,
    /// The bucket the tables live in, when `storage.url` is `s3://`.
    remote: Option<Remote>,
    /// Where the tables' Parquet files are written: `data_dir`, or, for tables on
    /// object storage, the staging directory they are uploaded from.
    tables_dir: PathBuf,
    props: WriterProperties,
    read_only: bool,
    wal_dir: PathBuf,
    tables: BTreeMap<Table, Mutex<TableState>>,
    /// The pipeline's memory budget, which the buffered rows are charged to.
    memory: MemoryLimiter,
    /// Memory held by admitted rows not yet in a Parquet file (this store's share of
    /// `memory`).
    buffered_bytes: AtomicUsize,
    /// The part of `buffered_bytes` that flushes in progress have taken.
    flushing_bytes: AtomicUsize,
    /// Serialises the flushes' writing, so two never take the same buffer.
    flush_lock: tokio::sync::Mutex<()>,
    /// Serialises the flushes' commits, in the order they wrote.
    commits: Arc<tokio::sync::Mutex<flush::Commits>>,
    /// Tests only: a table whose next commit waits for the receiver, then fails.
    #[cfg(test)]
    fail_next_commit: Mutex<Option<(Table, tokio::sync::oneshot::Receiver<()>)>>,
    /// Woken when a buffer should be flushed early.
    full: Notify,
    /// The log writer thread; `None` for a read-only store.
    log: Option<log::LogHandle>,
    recovery: Recovery,
    /// Each table's Delta log; `None` for a table a read-only store has not found yet.
    /// Commits to one table are serialised by its lock.
    delta: BTreeMap<Table, tokio::sync::Mutex<Option<delta::DeltaLog>>>,
    /// The transaction id this store's flushes commit under (`txn.appId`), kept with
    /// the write-ahead log whose segment numbers are their versions.
    writer_id: String,
    /// When vacuum last ran.
    vacuumed: Mutex<Option<std::time::Instant>>,
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
    pub async fn open(config: StorageConfig) -> Result<ParquetStore> {
        let memory = MemoryLimiter::new(config.max_buffered_bytes);
        ParquetStore::open_with(config, memory).await
    }

    /// Opens (creating if needed) the store for writing, charging its buffer to
    /// `memory`: opens each table's Delta log (converting a directory of plain Parquet
    /// in place), quarantines unreadable files, and replays the write-ahead log
    /// segments a table has not committed.
    pub async fn open_with(
        mut config: StorageConfig,
        memory: MemoryLimiter,
    ) -> Result<ParquetStore> {
        config.validate()?;
        let (remote, tables_dir) = match config.location()? {
            Location::Local(dir) => {
                config.data_dir = dir;
                (None, config.data_dir.clone())
            }
            Location::S3(url) => {
                let remote = Remote::connect(&url, &config.s3)?;
                remote.probe().await?;
                (Some(remote), config.data_dir.join(STAGING_DIR))
            }
        };
        let recovered = recovery::recover(&config, remote.as_ref(), &tables_dir).await?;
        memory.force_charge(recovered.buffered_bytes);
        let wal_dir = config.data_dir.join("_wal");
        let log = wal::Wal::create(
            &wal_dir,
            recovered.last_segment + 1,
            config.wal_fsync == WalFsync::Always,
        )?;
        let (handle, commands) = log::LogHandle::new();
        let inner = Arc::new(Inner {
            props: writer::writer_properties(&config)?,
            config,
            remote,
            tables_dir,
            read_only: false,
            wal_dir,
            tables: recovered
                .tables
                .into_iter()
                .map(|(t, s)| (t, Mutex::new(s)))
                .collect(),
            memory,
            buffered_bytes: AtomicUsize::new(recovered.buffered_bytes),
            flushing_bytes: AtomicUsize::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            commits: Arc::default(),
            #[cfg(test)]
            fail_next_commit: Mutex::default(),
            full: Notify::new(),
            log: Some(handle),
            recovery: recovered.recovery,
            delta: recovered
                .logs
                .into_iter()
                .map(|(t, l)| (t, tokio::sync::Mutex::new(Some(l))))
                .collect(),
            writer_id: recovered.writer_id,
            vacuumed: Mutex::default(),
            quarantined: AtomicUsize::new(recovered.quarantined),
            metrics: StoreMetrics::new(),
        });
        log::start(&inner, log, commands)?;
        Ok(ParquetStore { inner })
    }

    /// Opens a data directory for queries only (`swarmscope query --data-dir`): each
    /// query reads the newest committed version of each table's Delta log (advanced by
    /// the commits since the last query, not read anew); rows a server holds in memory
    /// are not seen.
    pub async fn open_read_only(data_dir: impl Into<PathBuf>) -> Result<ParquetStore> {
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
        let store = ParquetStore {
            inner: Arc::new(Inner {
                props: writer::writer_properties(&config)?,
                remote: None,
                tables_dir: config.data_dir.clone(),
                wal_dir: config.data_dir.join("_wal"),
                memory: MemoryLimiter::new(config.max_buffered_bytes),
                config,
                read_only: true,
                tables,
                buffered_bytes: AtomicUsize::new(0),
                flushing_bytes: AtomicUsize::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                commits: Arc::default(),
                #[cfg(test)]
                fail_next_commit: Mutex::default(),
                full: Notify::new(),
                log: None,
                recovery: Recovery::default(),
                delta: Table::ALL
                    .iter()
                    .map(|t| (*t, tokio::sync::Mutex::new(None)))
                    .collect(),
                writer_id: String::new(),
                vacuumed: Mutex::default(),
                quarantined: AtomicUsize::new(0),
                metrics: StoreMetrics::new(),
            }),
        };
        store.refresh().await?;
        Ok(store)
    }

    /// Brings a read-only store's snapshots up to the newest committed versions,
    /// reading only the commits since the last call. A store that writes is always
    /// current: this does nothing.
    pub async fn refresh(&self) -> Result<()> {
        if !self.inner.read_only {
            return Ok(());
        }
        for &table in Table::ALL {
            let mut log = self.inner.delta[&table].lock().await;
            match log.as_mut() {
                Some(log) => log.refresh().await?,
                None => *log = delta::DeltaLog::open(self.data_dir(), None, table, None).await?,
            }
            let mut files = match log.as_ref() {
                Some(log) => log.files().to_vec(),
                // A directory no server of a version with Delta logs has opened yet:
                // its plain Parquet files, as they lie.
                None => layout::scan_table(self.data_dir(), table, false)?,
            };
            // A reader leaves the directory as it is (a server may own it): it skips
            // what it cannot read.
            for (file, reason) in quarantine::take_unreadable(&mut files) {
                tracing::warn!(file = %file.path.display(), reason, "skipping an unreadable Parquet file");
            }
            self.state(table).files = files;
        }
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The bucket the tables live in, when they are on object storage.
    pub fn remote(&self) -> Option<&Remote> {
        self.inner.remote.as_ref()
    }

    /// Where a query reads `file` of `table`: its local path, or its object's URL.
    pub fn file_url(&self, table: Table, file: &StoredFile) -> String {
        match &self.inner.remote {
            Some(remote) => {
                let table_dir = self.inner.tables_dir.join(table.name());
                remote.object_url(table, &delta::relative_path(&table_dir, file))
            }
            None => file.path.to_string_lossy().into_owned(),
        }
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
        let state = self.state(table);
        let mut batches: Vec<RecordBatch> = state
            .flushing
            .iter()
            .flat_map(|(_, taken)| taken.iter().cloned())
            .collect();
        batches.extend(state.buffered.iter().cloned());
        Ok(Snapshot {
            files: state.files.clone(),
            batches,
        })
    }

    /// Rows accepted but not yet in a Parquet file.
    pub fn buffered_rows(&self, table: Table) -> usize {
        let state = self.state(table);
        state.buffered_rows
            + state
                .flushing
                .iter()
                .flat_map(|(_, taken)| taken)
                .map(|b| b.num_rows())
                .sum::<usize>()
    }

    /// Memory held by accepted rows not yet in a Parquet file.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffered_bytes.load(Ordering::Acquire)
    }

    /// Whether the rows no flush has taken yet are worth a flush before the next tick:
    /// a third of the memory budget (a flush writing, the one before it committing,
    /// and the rows arriving meanwhile each take up to a third), or `flush_rows` rows
    /// of one of `tables` (an append asks about the tables it wrote to, not every one).
    fn worth_flushing(&self, tables: &[Table]) -> bool {
        let inner = &self.inner;
        let untaken = inner
            .buffered_bytes
            .load(Ordering::Acquire)
            .saturating_sub(inner.flushing_bytes.load(Ordering::Acquire));
        untaken >= inner.memory.limit() / 3
            || tables
                .iter()
                .any(|t| self.state(*t).buffered_rows >= inner.config.flush_rows)
    }

    /// Files of `table` in the history, and their bytes on disk.
    pub fn stored_files(&self, table: Table) -> (usize, u64) {
        let state = self.state(table);
        let bytes = state.files.iter().map(|f| f.size).sum();
        (state.files.len(), bytes)
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

#[cfg(test)]
mod tests_s3;
