//! Compaction: the small files of a partition merged into one larger file.
//!
//! A merge is committed in this order, so that a crash at any point leaves either the
//! inputs or the output in the history, never both and never neither:
//! 1. the output is written under its `.tmp` name and synced;
//! 2. a journal (`_compaction/<name>.json`) naming the output and its inputs is
//!    written and synced;
//! 3. the output is renamed into place: this is the commit point;
//! 4. the inputs leave the store's snapshot at once, and are deleted once no query
//!    that could still read them runs; then the journal is removed.
//!
//! On open, a journal whose output exists has its inputs deleted; one whose output
//! does not exist is dropped (the `.tmp` is removed with the other unfinished files).
//! A read-only reader ignores the inputs of committed journals.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use swarmscope_processors::schema::Table;

use super::layout::StoredFile;
use super::writer::{self, PendingFile};
use crate::{Error, Result};

pub(crate) const JOURNAL_DIR: &str = "_compaction";

/// The record of one merge, kept until its inputs are deleted.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Journal {
    pub output: PathBuf,
    pub inputs: Vec<PathBuf>,
}

impl Journal {
    fn path(data_dir: &Path, output: &Path) -> PathBuf {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        data_dir.join(JOURNAL_DIR).join(format!("{name}.json"))
    }

    /// Writes and syncs the journal; returns its path.
    pub fn store(&self, data_dir: &Path) -> Result<PathBuf> {
        let dir = data_dir.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let path = Journal::path(data_dir, &self.output);
        let tmp = writer::tmp_path(&path);
        let text = serde_json::to_vec(self).map_err(|e| Error::Wal(e.to_string()))?;
        {
            use std::io::Write;
            let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
            f.write_all(&text).map_err(Error::io(&tmp))?;
            f.sync_all().map_err(Error::io(&tmp))?;
        }
        writer::rename_into_place(&tmp, &path)?;
        Ok(path)
    }

    /// Every journal under `data_dir`, with its path. Unreadable journals (a crash
    /// while one was written, before its output could be committed) are skipped.
    pub fn load_all(data_dir: &Path) -> Result<Vec<(PathBuf, Journal)>> {
        let dir = data_dir.join(JOURNAL_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(Error::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let journal = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(journal) = journal {
                    out.push((path, journal));
                }
            }
        }
        Ok(out)
    }
}

/// Finishes or drops the merges a crash interrupted. Runs before the files are listed.
pub(crate) fn recover(data_dir: &Path) -> Result<()> {
    let dir = data_dir.join(JOURNAL_DIR);
    for (path, journal) in Journal::load_all(data_dir)? {
        if journal.output.exists() {
            delete_files(&journal.inputs)?;
            tracing::info!(output = %journal.output.display(), inputs = journal.inputs.len(), "completed an interrupted compaction");
        }
        std::fs::remove_file(&path).map_err(Error::io(&path))?;
    }
    // Journals torn while being written.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The inputs of committed merges: files a reader must not count, though they may
/// still be on disk.
pub(crate) fn replaced_files(data_dir: &Path) -> Result<HashSet<PathBuf>> {
    Ok(Journal::load_all(data_dir)?
        .into_iter()
        .filter(|(_, j)| j.output.exists())
        .flat_map(|(_, j)| j.inputs)
        .collect())
}

/// Deletes `paths` (already gone is fine) and the partition directories left empty.
pub(crate) fn delete_files(paths: &[PathBuf]) -> Result<usize> {
    let mut deleted = 0;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path)(e)),
        }
        // `hour=HH`, then `date=...`; removal fails harmlessly unless empty.
        let hour_dir = path.parent();
        for dir in [hour_dir, hour_dir.and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(deleted)
}

/// Groups of small files worth merging (see [`plan_sized`]); files whose size cannot
/// be read are left out.
pub(crate) fn plan(
    files: &[StoredFile],
    min_files: usize,
    target_bytes: u64,
) -> Vec<Vec<StoredFile>> {
    let sized: Vec<(StoredFile, u64)> = files
        .iter()
        .filter_map(|f| Some((f.clone(), std::fs::metadata(&f.path).ok()?.len())))
        .collect();
    plan_sized(&sized, min_files, target_bytes)
}

/// Size-tiered planning. Files under `target_bytes` are grouped by partition hour and
/// by size tier (a factor of 4 per tier), oldest first; a group is at least
/// `min_files` files and together at most about `target_bytes`. Merging only files of
/// like size keeps the write amplification logarithmic while a partition is still
/// being written: a merged file waits for peers of its own size instead of being
/// rewritten with every handful of new small files.
pub(crate) fn plan_sized(
    files: &[(StoredFile, u64)],
    min_files: usize,
    target_bytes: u64,
) -> Vec<Vec<StoredFile>> {
    let tier = |size: u64| (64 - size.leading_zeros()) / 2;
    let mut buckets: std::collections::BTreeMap<(i64, u32), Vec<(StoredFile, u64)>> =
        std::collections::BTreeMap::new();
    for (file, size) in files {
        if *size < target_bytes {
            buckets
                .entry((file.hour, tier(*size)))
                .or_default()
                .push((file.clone(), *size));
        }
    }
    let mut groups = Vec::new();
    for (_, small) in buckets {
        let mut group = Vec::new();
        let mut bytes = 0;
        for (file, size) in small {
            if !group.is_empty() && bytes + size > target_bytes {
                if group.len() >= min_files {
                    groups.push(std::mem::take(&mut group));
                } else {
                    group.clear();
                }
                bytes = 0;
            }
            bytes += size;
            group.push(file);
        }
        if group.len() >= min_files {
            groups.push(group);
        }
    }
    groups
}

/// Streams the rows of `inputs` (all of one partition of `table`) into one new file,
/// written under its `.tmp` name and synced. Blocking.
pub(crate) fn merge(
    table: Table,
    inputs: &[StoredFile],
    props: &WriterProperties,
) -> Result<PendingFile> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Wal("nothing to merge".into()))?;
    let dir = first
        .path
        .parent()
        .ok_or_else(|| Error::Wal("a stored file has no partition directory".into()))?;
    let (tmp, path) = writer::new_file_name(dir);
    let written = (|| {
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        let mut out = ArrowWriter::try_new(file, table.schema(), Some(props.clone()))?;
        for input in inputs {
            let file = File::open(&input.path).map_err(Error::io(&input.path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
                .with_batch_size(8192)
                .build()?;
            for batch in reader {
                out.write(&batch?)?;
            }
        }
        let file = out.into_inner()?;
        file.sync_all().map_err(Error::io(&tmp))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(PendingFile {
        tmp,
        file: StoredFile {
            path,
            hour: first.hour,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hour: i64, n: usize) -> StoredFile {
        StoredFile {
            path: PathBuf::from(format!("/d/spans/h{hour}/f{n:03}.parquet")),
            hour,
        }
    }

    #[test]
    fn only_files_of_like_size_in_one_partition_are_grouped() {
        let mut files = Vec::new();
        // Hour 1: six 1 KiB files, two 64 KiB (an earlier merge), one at the target.
        for n in 0..6 {
            files.push((file(1, n), 1024));
        }
        files.push((file(1, 6), 64 * 1024));
        files.push((file(1, 7), 65 * 1024));
        files.push((file(1, 8), 1 << 20));
        // Hour 2: three small files, fewer than min_files.
        for n in 0..3 {
            files.push((file(2, n), 1024));
        }
        let groups = plan_sized(&files, 4, 1 << 20);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0], (0..6).map(|n| file(1, n)).collect::<Vec<_>>());
        // With min_files 2, the two 64 KiB files make a group of their own.
        let groups = plan_sized(&files, 2, 1 << 20);
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert!(groups.contains(&vec![file(1, 6), file(1, 7)]));
    }

    #[test]
    fn groups_stop_at_the_target_size() {
        let files: Vec<_> = (0..10).map(|n| (file(1, n), 300)).collect();
        let groups = plan_sized(&files, 2, 1000);
        // Three files of 300 fit under 1000, a fourth does not.
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| g.len() == 3));
    }
}
