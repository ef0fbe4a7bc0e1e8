//! Files that cannot be read leave the history for `<data_dir>/_quarantine/`.
//!
//! One truncated or overwritten Parquet file would otherwise fail every query of its
//! table ("Corrupt footer", naming no file). The store checks each file's footer when
//! it opens (reading the footer only, so the check costs a few reads per file), and
//! again whenever a query meets a Parquet error; a file that fails is moved under
//! `_quarantine/` with its partition path kept, for a person to inspect, and the rest
//! of the table stays queryable. Nothing is deleted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use parquet::file::metadata::ParquetMetaDataReader;
use swarmscope_processors::schema::Table;

use super::{ParquetStore, StoredFile};
use crate::{Error, Result};

/// The folder under the data directory that quarantined files go to.
pub const QUARANTINE_DIR: &str = "_quarantine";

/// Why `path` cannot be read as Parquet, or `None` when its footer parses.
pub(crate) fn unreadable(path: &Path) -> Option<String> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Gone meanwhile (retention, compaction): not this check's business.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(e.to_string()),
    };
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .err()
        .map(|e| e.to_string())
}

/// Moves `path` (under `data_dir`) to the same place under `_quarantine/`, and says so
/// loudly. Returns the new path.
pub(crate) fn quarantine(data_dir: &Path, path: &Path, reason: &str) -> Result<PathBuf> {
    let relative = path.strip_prefix(data_dir).unwrap_or(path);
    let target = data_dir.join(QUARANTINE_DIR).join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    std::fs::rename(path, &target).map_err(Error::io(path))?;
    tracing::error!(
        file = %path.display(),
        moved_to = %target.display(),
        reason,
        "unreadable Parquet file quarantined; its rows are no longer queried"
    );
    Ok(target)
}

/// Takes the files whose footer does not parse out of `files`, with the reason.
pub(crate) fn take_unreadable(files: &mut Vec<StoredFile>) -> Vec<(StoredFile, String)> {
    let mut out = Vec::new();
    files.retain(|f| match unreadable(&f.path) {
        Some(reason) => {
            out.push((f.clone(), reason));
            false
        }
        None => true,
    });
    out
}

impl ParquetStore {
    /// Checks the footer of every file of the history and moves those that cannot be
    /// read to `_quarantine/`, removing them from their tables by a commit. Called when
    /// a query meets an error reading files; returns the files moved.
    pub async fn quarantine_unreadable(&self) -> Result<Vec<PathBuf>> {
        // An object on object storage is whole or absent (a PUT is atomic).
        if self.inner.read_only || self.inner.remote.is_some() {
            return Ok(Vec::new());
        }
        let mut moved = Vec::new();
        for table in Table::ALL {
            let mut log = self.inner.delta[table].lock().await;
            let Some(log) = log.as_mut() else {
                continue;
            };
            let mut files = self.state(*table).files.clone();
            let unreadable = take_unreadable(&mut files);
            if unreadable.is_empty() {
                continue;
            }
            let gone: Vec<StoredFile> = unreadable.iter().map(|(f, _)| f.clone()).collect();
            log.remove_unreadable(&gone).await?;
            let files = log.files().to_vec();
            self.state(*table).files = files;
            for (file, reason) in unreadable {
                moved.push(quarantine(self.data_dir(), &file.path, &reason)?);
                self.inner.quarantined.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(moved)
    }

    /// Files moved to `_quarantine/` since the store opened.
    pub fn quarantined_files(&self) -> usize {
        self.inner.quarantined.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_file_is_unreadable_and_moves_with_its_partition_path() {
        let dir = tempfile::tempdir().unwrap();
        let partition = dir.path().join("spans/date=2026-01-01/hour=00");
        std::fs::create_dir_all(&partition).unwrap();
        let path = partition.join("a.parquet");
        std::fs::write(&path, b"PAR1 not really parquet").unwrap();
        let reason = unreadable(&path).expect("a broken footer is found");
        assert!(!reason.is_empty());
        let moved = quarantine(dir.path(), &path, &reason).unwrap();
        assert_eq!(
            moved,
            dir.path()
                .join("_quarantine/spans/date=2026-01-01/hour=00/a.parquet")
        );
        assert!(moved.exists());
        assert!(!path.exists());
        // A file that is gone is not reported.
        assert_eq!(unreadable(&path), None);
    }
}
