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
use std::sync::Arc;

use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ARROW_SCHEMA_META_KEY};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
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

/// Merges `inputs` (all of one partition of `table`) into one new file, written under
/// its `.tmp` name and synced. Blocking.
///
/// When every input row group holds at least `row_group_rows / COPY_DIVISOR` rows (a
/// flush's worth under load), the row groups are copied as they are: their encoded
/// pages, statistics, page indexes and bloom filters, with no decoding and no
/// encoding, so compaction costs I/O, not CPU. Otherwise (a trickle of flushes, or
/// one small row group among them) the rows are decoded and written again as full row
/// groups, which compress and read better than many small ones.
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
        let opened = inputs
            .iter()
            .map(|input| {
                let file = File::open(&input.path).map_err(Error::io(&input.path))?;
                let metadata = ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Optional)
                    .parse_and_finish(&file)?;
                Ok((file, metadata))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = File::create(&tmp).map_err(Error::io(&tmp))?;
        let min_rows = props.max_row_group_row_count().unwrap_or(usize::MAX) / COPY_DIVISOR;
        let out = if can_copy(&opened, min_rows) {
            copy_row_groups(out, &opened, props)?
        } else {
            reencode(out, table, opened, props)?
        };
        out.sync_all().map_err(Error::io(&tmp))
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

/// Row groups of at least `row_group_rows / COPY_DIVISOR` rows are merged by copying.
const COPY_DIVISOR: usize = 8;

/// Whether the inputs share one schema (Parquet's and the Arrow schema stored beside
/// it) and every row group is large enough to keep as it is.
fn can_copy(inputs: &[(File, ParquetMetaData)], min_rows: usize) -> bool {
    let Some((_, first)) = inputs.first() else {
        return false;
    };
    let schema = first.file_metadata().schema_descr();
    let arrow_schema = arrow_schema_metadata(first);
    inputs.iter().all(|(_, metadata)| {
        metadata.file_metadata().schema_descr() == schema
            && arrow_schema_metadata(metadata) == arrow_schema
            && metadata
                .row_groups()
                .iter()
                .all(|rg| rg.num_rows() as usize >= min_rows)
    })
}

/// The Arrow schema a file was written with (`ARROW:schema`), which keeps the Arrow
/// types Parquet cannot say (the time zone of the timestamps, for one).
fn arrow_schema_metadata(metadata: &ParquetMetaData) -> Option<&KeyValue> {
    metadata
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == ARROW_SCHEMA_META_KEY)
}

/// Writes the row groups of `inputs` into `out` byte for byte, with their statistics,
/// page indexes and bloom filters.
fn copy_row_groups(
    out: File,
    inputs: &[(File, ParquetMetaData)],
    props: &WriterProperties,
) -> Result<File> {
    let Some((_, first)) = inputs.first() else {
        return Err(Error::Wal("nothing to merge".into()));
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props.clone()))?;
    if let Some(kv) = arrow_schema_metadata(first) {
        writer.append_key_value_metadata(kv.clone());
    }
    for (input, metadata) in inputs {
        for (g, rg) in metadata.row_groups().iter().enumerate() {
            let column_indexes = metadata.column_index().and_then(|c| c.get(g));
            let offset_indexes = metadata.offset_index().and_then(|o| o.get(g));
            let mut group = writer.next_row_group()?;
            for (c, column) in rg.columns().iter().enumerate() {
                let bloom_filter = Sbbf::read_from_column_chunk(column, input)?;
                group.append_column(
                    input,
                    ColumnCloseResult {
                        bytes_written: column.compressed_size() as u64,
                        rows_written: rg.num_rows() as u64,
                        metadata: column.clone(),
                        bloom_filter,
                        column_index: column_indexes.and_then(|i| i.get(c)).cloned(),
                        offset_index: offset_indexes.and_then(|i| i.get(c)).cloned(),
                    },
                )?;
            }
            group.close()?;
        }
    }
    Ok(writer.into_inner()?)
}

/// Decodes the rows of `inputs` and writes them again as full row groups.
fn reencode(
    out: File,
    table: Table,
    inputs: Vec<(File, ParquetMetaData)>,
    props: &WriterProperties,
) -> Result<File> {
    let mut writer = ArrowWriter::try_new(out, table.schema(), Some(props.clone()))?;
    for (file, metadata) in inputs {
        let options = ArrowReaderOptions::new();
        let metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), options)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
            .with_batch_size(8192)
            .build()?;
        for batch in reader {
            writer.write(&batch?)?;
        }
    }
    Ok(writer.into_inner()?)
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
