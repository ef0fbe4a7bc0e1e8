//! The Parquet store: the write path from an accepted batch to a Parquet file.
//!
//! Stages, each with one owner:
//! 1. [`ParquetStore::append`] takes a converted batch. This is the acknowledgement
//!    point: once it returns, the request may be answered with success. (A write-ahead
//!    log slots in here, before the batch enters the buffer.)
//! 2. The batch waits in its table's in-memory buffer, where queries already see it.
//! 3. A flush (every `flush_interval_ms`, when a buffer reaches `flush_rows`, and on
//!    shutdown) moves the buffer aside, writes one Parquet file per partition hour,
//!    and then, under the same lock that queries snapshot under, swaps the batches for
//!    the files. A query therefore sees every row exactly once: in memory or in a
//!    file, never both, never neither.

mod config;
mod layout;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;
use swarmscope_processors::schema::Table;
use tokio::sync::Notify;

pub use config::StorageConfig;
pub use layout::StoredFile;

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
    tables: BTreeMap<Table, Mutex<TableState>>,
    /// Serialises flushes so two never write the same buffer.
    flush_lock: tokio::sync::Mutex<()>,
    /// Woken when a buffer reaches `flush_rows`.
    full: Notify,
}

/// The Parquet history under `storage.data_dir`. Cheap to clone.
#[derive(Clone)]
pub struct ParquetStore {
    inner: Arc<Inner>,
}

impl ParquetStore {
    /// Opens (creating if needed) the store for writing: finds the existing files and
    /// removes what a crash left half-written.
    pub fn open(config: StorageConfig) -> Result<ParquetStore> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(Error::io(&config.data_dir))?;
        Self::build(config, false)
    }

    /// Opens a data directory for queries only (`swarmscope query --data-dir`). Each
    /// snapshot lists the directory anew, so files a running server adds are seen.
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
        Self::build(config, true)
    }

    fn build(config: StorageConfig, read_only: bool) -> Result<ParquetStore> {
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let files = layout::scan_table(&config.data_dir, table, !read_only)?;
            tables.insert(
                table,
                Mutex::new(TableState {
                    files,
                    ..TableState::default()
                }),
            );
        }
        Ok(ParquetStore {
            inner: Arc::new(Inner {
                props: writer::writer_properties(&config)?,
                config,
                read_only,
                tables,
                flush_lock: tokio::sync::Mutex::new(()),
                full: Notify::new(),
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    fn state(&self, table: Table) -> MutexGuard<'_, TableState> {
        // A panic while holding the lock leaves consistent vectors behind (every
        // mutation is a single push/swap), so a poisoned lock is still usable.
        self.inner.tables[&table]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accepts a batch of `table`. When this returns, the rows are visible to queries
    /// and will be written by the next flush.
    pub async fn append(&self, table: Table, batch: RecordBatch) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let full = {
            let mut state = self.state(table);
            state.buffered_rows += batch.num_rows();
            state.buffered.push(batch);
            state.buffered_rows >= self.inner.config.flush_rows
        };
        if full {
            self.inner.full.notify_one();
        }
        Ok(())
    }

    /// The files and in-memory rows of `table`, consistent with each other.
    pub fn snapshot(&self, table: Table) -> Result<Snapshot> {
        if self.inner.read_only {
            let files = layout::scan_table(self.data_dir(), table, false)?;
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

    /// Rows accepted but not yet in a Parquet file, per table.
    pub fn buffered_rows(&self, table: Table) -> usize {
        let state = self.state(table);
        state.buffered_rows + state.flushing.iter().map(|b| b.num_rows()).sum::<usize>()
    }

    /// Writes every buffered row to Parquet.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.inner.flush_lock.lock().await;
        let mut first_error = None;
        for table in Table::ALL {
            if let Err(e) = self.flush_table(table).await {
                tracing::error!(table = table.name(), error = %e, "flush failed; rows stay buffered");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn flush_table(&self, table: Table) -> Result<()> {
        let batches = {
            let mut state = self.state(table);
            if state.buffered.is_empty() {
                return Ok(());
            }
            state.buffered_rows = 0;
            let taken = std::mem::take(&mut state.buffered);
            state.flushing.clone_from(&taken);
            taken
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let inner = Arc::clone(&self.inner);
        let written = tokio::task::spawn_blocking(move || {
            writer::write_partitioned(&inner.config.data_dir, table, &batches, &inner.props)
                .map_err(|e| (e, batches))
        })
        .await
        .map_err(|e| Error::Io {
            path: self.data_dir().to_owned(),
            source: std::io::Error::other(e),
        })?;
        let mut state = self.state(table);
        match written {
            Ok(files) => {
                tracing::debug!(table = table.name(), rows, files = files.len(), "flushed");
                state.files.extend(files);
                state.flushing.clear();
                Ok(())
            }
            Err((e, mut batches)) => {
                // Put the rows back in front of what arrived meanwhile; the next flush
                // tries again.
                state.flushing.clear();
                state.buffered_rows += rows;
                batches.append(&mut state.buffered);
                state.buffered = batches;
                Err(e)
            }
        }
    }

    /// Flushes every `flush_interval_ms`, and whenever a buffer fills, until
    /// `shutdown` resolves; then flushes what is left.
    pub async fn run_flusher(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.inner.config.flush_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
                _ = self.inner.full.notified() => {}
            }
            // Errors are logged by `flush`; the rows stay buffered for the next try.
            let _ = self.flush().await;
        }
        let _ = self.flush().await;
    }
}

#[cfg(test)]
mod tests;
