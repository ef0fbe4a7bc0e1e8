//! Reader epochs and the retirement of files: a file that leaves the history
//! (compaction, retention) is deleted only once no query that could still read it runs.
//!
//! Every query holds a [`ReadGuard`] of the epoch it began in; the epoch moves on
//! whenever files leave the snapshot, and retired files wait for the readers of their
//! epoch and before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{compact, lock, Inner, ParquetStore};
use crate::{Error, Result};

/// Queries in flight, by the epoch they began in. The epoch moves on whenever files
/// leave the snapshot.
#[derive(Default)]
pub(super) struct Readers {
    epoch: u64,
    active: BTreeMap<u64, usize>,
}

/// Files out of the snapshot, to delete once no reader of `epoch` or before remains.
pub(super) struct Retired {
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

impl ParquetStore {
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
    pub(super) fn retire(&self, files: Vec<PathBuf>, journal: Option<PathBuf>) {
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
}
