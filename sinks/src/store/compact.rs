//! Compaction: the small files of a partition merged into one larger file, written
//! under its `.tmp` name, synced and renamed into place; [`compactor`](super::compactor)
//! commits it in place of its inputs.
//!
//! Versions before the Delta logs journalled their merges in `_compaction/`: on open, a
//! journal whose output exists has its inputs deleted and one whose output does not is
//! dropped, before such a directory is converted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::is_null;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::{ArrowWriter, ProjectionMask, ARROW_SCHEMA_META_KEY};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use serde::{Deserialize, Serialize};
use swarmscope_processors::schema::Table;

use super::layout::StoredFile;
use super::writer::{self, output, Output, PendingFile};
use crate::{Error, Result};

pub(crate) const JOURNAL_DIR: &str = "_compaction";

/// The record of one merge by a version before the Delta logs.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Journal {
    pub output: PathBuf,
    pub inputs: Vec<PathBuf>,
}

impl Journal {
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

/// What compaction merges (see [`plan`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// The fewest files of a size tier a partition still being written merges.
    pub min_files: usize,
    /// Files under this size are small; merges grow up to it.
    pub target_bytes: u64,
    /// A partition none of whose files was written after this instant (milliseconds
    /// since the epoch) is quiet.
    pub quiet_before_ms: i64,
}

/// Each file merged whole into a quiet partition's laid-out file grows it by at least
/// a quarter: the same bound on rewriting as the size tiers' factor of 4.
const GROWTH: u64 = 4;

/// One merge: its inputs, all of one partition, oldest first, and whether the
/// partition is quiet, so the output is laid out for reading (see [`merge`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Merge {
    pub inputs: Vec<StoredFile>,
    pub quiet: bool,
}

/// The merges worth making: groups of files within one partition, together at most
/// about `target_bytes`, oldest file first.
///
/// A partition still being written is planned by size tier ([`plan_tiered`]): merging
/// only small files (under `target_bytes`) of like size keeps the write amplification
/// logarithmic while flushes keep adding small files. A quiet partition (no file
/// written since `quiet_before_ms`: its hour is over and late data has stopped coming)
/// is laid out for reading once ([`plan_quiet`]), as Delta's `OPTIMIZE` does: the
/// tiers alone would leave up to `min_files - 1` files of each tier there for good, each
/// in the row groups a flush under load wrote, and every query that reads the hour
/// would pay for each of them.
pub(crate) fn plan(files: &[StoredFile], policy: Policy) -> Vec<Merge> {
    let mut partitions: std::collections::BTreeMap<i64, Vec<&StoredFile>> =
        std::collections::BTreeMap::new();
    for file in files {
        partitions.entry(file.hour).or_default().push(file);
    }
    let mut merges = Vec::new();
    for files in partitions.into_values() {
        let quiet = files
            .iter()
            .all(|f| f.modified_ms <= policy.quiet_before_ms);
        let groups = if quiet {
            plan_quiet(files, policy.target_bytes)
        } else {
            let small = files
                .into_iter()
                .filter(|f| f.size < policy.target_bytes)
                .collect();
            plan_tiered(small, policy.min_files, policy.target_bytes)
        };
        merges.extend(groups.into_iter().map(|inputs| Merge { inputs, quiet }));
    }
    // The merges of partitions being written first: their files keep coming, while a
    // quiet partition's layout is for readers and runs at a lower priority.
    merges.sort_by_key(|m| m.quiet);
    merges
}

/// Size tiers of one partition's small files: a factor of 4 per tier; a group is at
/// least `min_files` files of one tier. A merged file waits for peers of its own size
/// instead of being rewritten with every handful of new small files.
fn plan_tiered(
    small: Vec<&StoredFile>,
    min_files: usize,
    target_bytes: u64,
) -> Vec<Vec<StoredFile>> {
    let tier = |size: u64| (64 - size.leading_zeros()) / 2;
    let mut tiers: std::collections::BTreeMap<u32, Vec<&StoredFile>> =
        std::collections::BTreeMap::new();
    for file in small {
        tiers.entry(tier(file.size)).or_default().push(file);
    }
    tiers
        .into_values()
        .flat_map(|files| pack(files, target_bytes))
        .filter(|group| group.len() >= min_files)
        .collect()
}

/// A quiet partition laid out for reading: every file not yet laid out (a flush's, a
/// merge's while the partition was written) is merged, with the partition's other small
/// files, into as few as `target_bytes` allows (one that large alone). A laid-out file
/// more than [`GROWTH`] times the size of all smaller ones together stays as it is (they
/// merge among themselves), so late data trickling into an old hour does not rewrite
/// its large file every time; nor does one at the target size. Once laid out, a
/// partition has nothing more to merge until data comes late.
fn plan_quiet(files: Vec<&StoredFile>, target_bytes: u64) -> Vec<Vec<StoredFile>> {
    let mut candidates: Vec<&StoredFile> = files
        .into_iter()
        .filter(|f| f.size < target_bytes || !f.is_laid_out())
        .collect();
    candidates.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let mut rest: u64 = candidates.iter().map(|f| f.size).sum();
    let mut settled = 0;
    for file in &candidates {
        rest -= file.size;
        if !file.is_laid_out() || file.size <= GROWTH.saturating_mul(rest) {
            break;
        }
        settled += 1;
    }
    let mut merging = candidates.split_off(settled);
    merging.sort_by(|a, b| a.path.cmp(&b.path));
    pack(merging, target_bytes)
        .into_iter()
        .filter(|group| group.len() >= 2 || group.iter().any(|f| !f.is_laid_out()))
        .collect()
}

/// `files` in order, cut into runs of at most about `target_bytes` together.
fn pack(files: Vec<&StoredFile>, target_bytes: u64) -> Vec<Vec<StoredFile>> {
    let mut groups = Vec::new();
    let mut group: Vec<StoredFile> = Vec::new();
    let mut bytes = 0;
    for file in files {
        if !group.is_empty() && bytes + file.size > target_bytes {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
        bytes += file.size;
        group.push(file.clone());
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// Merges the inputs of `merge` (all of one partition of `table`) into one new file,
/// written under its `.tmp` name and synced. Blocking.
///
/// While the partition is written, a row group of at least `row_group_rows /
/// COPY_DIVISOR` rows (a flush's worth under load) is copied as it is: its encoded
/// pages, statistics, page indexes and bloom filters, with no decoding and no encoding,
/// so merging it costs I/O, not CPU. The smaller row groups (a trickle of flushes, the
/// tail of a flush split at an hour boundary) are decoded and written again together,
/// as full row groups, which compress and read better than many small ones. Only what
/// is small is re-encoded, so a merge under load neither competes with the flushes for
/// long nor holds much memory.
///
/// A quiet partition's merge lays its output out for reading: every row group under
/// half of `row_group_rows` is written again into full ones, once for the life of the
/// hour, so each query that reads it opens a few row groups (statistics, bloom filters,
/// page indexes, filters set up per column chunk) where the flushes wrote dozens. Its
/// output's name says so ([`StoredFile::is_laid_out`]).
pub(crate) fn merge(table: Table, merge: &Merge, props: &WriterProperties) -> Result<PendingFile> {
    let inputs = &merge.inputs;
    let first = inputs
        .first()
        .ok_or_else(|| Error::Wal("nothing to merge".into()))?;
    let dir = first
        .path
        .parent()
        .ok_or_else(|| Error::Wal("a stored file has no partition directory".into()))?;
    let (tmp, path) = writer::new_file_name(dir, merge.quiet);
    let written = (|| {
        let opened = inputs
            .iter()
            .map(|input| {
                let file = File::open(&input.path).map_err(Error::io(&input.path))?;
                let metadata = ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Optional)
                    .parse_and_finish(&file)?;
                Ok((file, Arc::new(metadata)))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = File::create(&tmp).map_err(Error::io(&tmp))?;
        if merge.quiet {
            let props = laid_out(props, table);
            write_merged(
                out,
                table,
                &opened,
                &props,
                LAID_OUT_DIVISOR,
                table.cluster_column(),
            )?
        } else {
            write_merged(out, table, &opened, props, COPY_DIVISOR, None)?
        }
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .map_err(Error::io(&tmp))
    })();
    let size = written.and_then(|()| Ok(std::fs::metadata(&tmp).map_err(Error::io(&tmp))?.len()));
    let size = match size {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    Ok(PendingFile {
        tmp,
        file: StoredFile {
            path,
            hour: first.hour,
            size,
            modified_ms: super::layout::now_ms(),
        },
    })
}

/// Row groups of at least `row_group_rows / COPY_DIVISOR` rows are merged by copying
/// (16,384 rows by default): the line sits well under what a flush writes under load, so
/// flushed row groups are copied, never re-encoded beside the flushes, which raised the
/// peak RSS when some fell under it (`benches/RESULTS.md`).
const COPY_DIVISOR: usize = 16;

/// A quiet partition's merge copies the row groups of at least `row_group_rows /
/// LAID_OUT_DIVISOR` rows: a half-full one gains little from being written again.
const LAID_OUT_DIVISOR: usize = 2;

/// The largest dictionary page a laid-out column chunk keeps before it falls back to
/// plain pages.
const LAID_OUT_DICTIONARY_BYTES: usize = 8 << 20;

/// The store's writer settings for a quiet partition's layout. A full row group holds
/// more distinct attribute values than parquet's default dictionary page (1 MiB)
/// takes, and past it a column chunk falls back to plain pages, which compress worse
/// (laid-out spans took 4% more bytes than the flushes' row groups; with room for the
/// dictionary, 6-8% fewer). Flushes keep the default: their row groups are smaller, and
/// each open writer would hold the larger dictionaries in memory under load.
///
/// The table's cluster column, whose rows the layout groups by value, gets page
/// statistics: with a value's rows together, a page holds one value or the ends of
/// two, and a reader filtering on one value skips the pages of the others.
fn laid_out(props: &WriterProperties, table: Table) -> WriterProperties {
    let mut builder = props
        .clone()
        .into_builder()
        .set_dictionary_page_size_limit(LAID_OUT_DICTIONARY_BYTES);
    if let Some(column) = table.cluster_column() {
        builder = builder.set_column_statistics_enabled(column.into(), EnabledStatistics::Page);
    }
    builder.build()
}

/// Writes the rows of `inputs` into `out` with the table's schema: row groups of at
/// least `row_group_rows / copy_divisor` rows copied byte for byte, smaller ones
/// re-encoded together (see [`merge`]), their rows grouped by `cluster` if given.
fn write_merged(
    out: File,
    table: Table,
    inputs: &[(File, Arc<ParquetMetaData>)],
    props: &WriterProperties,
    copy_divisor: usize,
    cluster: Option<&'static str>,
) -> Result<Output> {
    let schema = table.stored_schema();
    let (mut writer, columns) =
        ArrowWriter::try_new(output(out), schema.clone(), Some(props.clone()))?
            .into_serialized_writer()?;
    let row_group_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
    let min_rows = row_group_rows / copy_divisor;
    let mut small = Reencoder::new(columns, table, inputs, row_group_rows, cluster);
    for (i, (input, metadata)) in inputs.iter().enumerate() {
        // A file written with another schema (an older version's) is never copied:
        // its rows go through the decoder and are converted to the table's.
        let copyable = same_schema(metadata, &writer);
        for (g, rg) in metadata.row_groups().iter().enumerate() {
            if copyable && rg.num_rows() as usize >= min_rows {
                copy_row_group(&mut writer, input, metadata, g)?;
            } else {
                small.add(&mut writer, i, g)?;
            }
        }
    }
    small.finish(&mut writer)?;
    Ok(writer.into_inner()?)
}

/// Whether a stored file has the schema the merged file is written with: Parquet's,
/// and the Arrow schema stored beside it (`ARROW:schema`, which keeps what Parquet
/// cannot say, such as the time zone of the timestamps).
fn same_schema(metadata: &ParquetMetaData, writer: &SerializedFileWriter<Output>) -> bool {
    let arrow_schema = |kvs: Option<&Vec<KeyValue>>| {
        kvs.and_then(|kvs| {
            kvs.iter()
                .find(|kv| kv.key == ARROW_SCHEMA_META_KEY)
                .cloned()
        })
    };
    metadata.file_metadata().schema_descr() == writer.schema_descr()
        && arrow_schema(metadata.file_metadata().key_value_metadata())
            == arrow_schema(writer.properties().key_value_metadata())
}

/// Appends row group `g` of `input` to `writer` byte for byte, with its statistics,
/// page indexes and bloom filters.
fn copy_row_group(
    writer: &mut SerializedFileWriter<Output>,
    input: &File,
    metadata: &ParquetMetaData,
    g: usize,
) -> Result<()> {
    let rg = metadata.row_group(g);
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
    Ok(())
}

/// The small row groups of a merge, decoded and encoded again into full row groups.
struct Reencoder<'a> {
    factory: ArrowRowGroupWriterFactory,
    table: Table,
    /// The merge's inputs, and the Arrow reading of each once one of its row groups
    /// is read.
    inputs: &'a [(File, Arc<ParquetMetaData>)],
    readings: Vec<Option<ArrowReaderMetadata>>,
    schema: SchemaRef,
    row_group_rows: usize,
    /// The row group being encoded, and how many rows it holds.
    open: Option<(Vec<ArrowColumnWriter>, usize)>,
    /// Where rows are grouped by the table's cluster column (a quiet partition's
    /// layout): the parts of row groups that make up the next row group, read once
    /// they fill it.
    clustered: Option<Clustered>,
}

/// The rows of the next row group of a layout that groups rows by `column`.
struct Clustered {
    column: &'static str,
    parts: Vec<Part>,
    rows: usize,
}

/// Rows `rows` of row group `group` of the merge's input `input`.
struct Part {
    input: usize,
    group: usize,
    rows: std::ops::Range<usize>,
}

/// Which rows of a part one reading takes: all, or those whose cluster column holds
/// one value (`None`: null).
enum Rows<'a> {
    All,
    Valued(&'a str, Option<&'a str>),
}

/// A row group's rows are grouped by its cluster column when the column holds at most
/// this many values; each value is one more reading of the row group's parts (of that
/// column first, then of the value's rows), and a column of more values is not the
/// kind [`TableDef::cluster_column`](swarmscope_processors::schema::TableDef) names.
const MAX_CLUSTER_VALUES: usize = 8;

impl<'a> Reencoder<'a> {
    fn new(
        factory: ArrowRowGroupWriterFactory,
        table: Table,
        inputs: &'a [(File, Arc<ParquetMetaData>)],
        row_group_rows: usize,
        cluster: Option<&'static str>,
    ) -> Self {
        Reencoder {
            factory,
            table,
            inputs,
            readings: vec![None; inputs.len()],
            schema: table.stored_schema(),
            row_group_rows: row_group_rows.max(1),
            open: None,
            clustered: cluster.map(|column| Clustered {
                column,
                parts: Vec::new(),
                rows: 0,
            }),
        }
    }

    /// Encodes the rows of row group `g` of input `input` into the open row group,
    /// closing it into `writer` whenever it is full; where rows are grouped, they are
    /// read once the row group they belong to is complete.
    fn add(
        &mut self,
        writer: &mut SerializedFileWriter<Output>,
        input: usize,
        g: usize,
    ) -> Result<()> {
        let rows = self.inputs[input].1.row_group(g).num_rows().max(0) as usize;
        let part = |rows| Part {
            input,
            group: g,
            rows,
        };
        let mut start = 0;
        while start < rows {
            let Some(clustered) = &mut self.clustered else {
                return self.encode(writer, &part(start..rows), Rows::All).map(drop);
            };
            let take = (rows - start).min(self.row_group_rows - clustered.rows);
            clustered.parts.push(part(start..start + take));
            clustered.rows += take;
            start += take;
            if clustered.rows == self.row_group_rows {
                self.encode_clustered(writer)?;
            }
        }
        Ok(())
    }

    /// Encodes the parts gathered for the next row group, the rows of each value of
    /// the cluster column together, in the values' order (nulls last); in the order
    /// they came if the column is missing or holds more than [`MAX_CLUSTER_VALUES`].
    fn encode_clustered(&mut self, writer: &mut SerializedFileWriter<Output>) -> Result<()> {
        let Some(clustered) = &mut self.clustered else {
            return Ok(());
        };
        let column = clustered.column;
        let parts = std::mem::take(&mut clustered.parts);
        let rows = std::mem::replace(&mut clustered.rows, 0);
        let values = self.cluster_values(&parts, column)?;
        let mut written = 0;
        match &values {
            Some(values) => {
                for value in values {
                    for part in &parts {
                        written +=
                            self.encode(writer, part, Rows::Valued(column, value.as_deref()))?;
                    }
                }
            }
            None => {
                for part in &parts {
                    written += self.encode(writer, part, Rows::All)?;
                }
            }
        }
        // Each row is one value's (or null): the readings took every row once, so the
        // row group closed when it was full, as it does unclustered.
        if written != rows {
            return Err(Error::Wal(format!(
                "grouping rows by {column} read {written} of {rows} rows"
            )));
        }
        Ok(())
    }

    /// Decodes `which` rows of `part` and encodes them into the open row group,
    /// closing it into `writer` whenever it is full. Returns how many rows it encoded.
    fn encode(
        &mut self,
        writer: &mut SerializedFileWriter<Output>,
        part: &Part,
        which: Rows,
    ) -> Result<usize> {
        let metadata = self.reading(part.input)?;
        // An older version's file (nanosecond timestamps, fewer columns) is converted.
        let convert = metadata.schema().fields() != self.schema.fields();
        let filter = match which {
            Rows::All => None,
            Rows::Valued(column, value) => Some(value_filter(&metadata, column, value)?),
        };
        let mut encoded = 0;
        for batch in self.read(part, metadata, None, filter)? {
            let mut batch = batch?;
            if convert {
                batch = self.table.to_stored(&batch)?;
            }
            encoded += batch.num_rows();
            while batch.num_rows() > 0 {
                let (columns, rows) = match &mut self.open {
                    Some(open) => open,
                    None => self.open.insert((
                        self.factory
                            .create_column_writers(writer.flushed_row_groups().len())?,
                        0,
                    )),
                };
                let take = batch.num_rows().min(self.row_group_rows - *rows);
                let part = batch.slice(0, take);
                let mut leaves = columns.iter_mut();
                for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                    for leaf in compute_leaves(field, column)? {
                        leaves
                            .next()
                            .ok_or_else(|| Error::Wal("more leaves than column writers".into()))?
                            .write(&leaf)?;
                    }
                }
                *rows += take;
                batch = batch.slice(take, batch.num_rows() - take);
                if *rows == self.row_group_rows {
                    self.close_row_group(writer)?;
                }
            }
        }
        Ok(encoded)
    }

    /// The Arrow reading of input `input` (its schema and how it maps to Parquet's).
    fn reading(&mut self, input: usize) -> Result<ArrowReaderMetadata> {
        if let Some(reading) = &self.readings[input] {
            return Ok(reading.clone());
        }
        let metadata = Arc::clone(&self.inputs[input].1);
        let reading = ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new())?;
        self.readings[input] = Some(reading.clone());
        Ok(reading)
    }

    /// A reader of `part`'s rows, of the columns `projection` picks (all if `None`),
    /// those `filter` keeps if any.
    fn read(
        &self,
        part: &Part,
        metadata: ArrowReaderMetadata,
        projection: Option<ProjectionMask>,
        filter: Option<RowFilter>,
    ) -> Result<ParquetRecordBatchReader> {
        let total = metadata.metadata().row_group(part.group).num_rows().max(0) as usize;
        let selectors = [
            RowSelector::skip(part.rows.start),
            RowSelector::select(part.rows.len()),
            RowSelector::skip(total.saturating_sub(part.rows.end)),
        ];
        let selection: RowSelection = selectors.into_iter().filter(|s| s.row_count > 0).collect();
        let file = self.inputs[part.input]
            .0
            .try_clone()
            .map_err(|e| Error::Wal(e.to_string()))?;
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
            .with_row_groups(vec![part.group])
            .with_row_selection(selection)
            .with_batch_size(8192);
        if let Some(projection) = projection {
            builder = builder.with_projection(projection);
        }
        if let Some(filter) = filter {
            builder = builder.with_row_filter(filter);
        }
        Ok(builder.build()?)
    }

    /// The values `column` holds in `parts`, sorted, null last if any row has none;
    /// `None` if a part has no such string column or it holds more than
    /// [`MAX_CLUSTER_VALUES`].
    fn cluster_values(
        &mut self,
        parts: &[Part],
        column: &str,
    ) -> Result<Option<Vec<Option<String>>>> {
        let mut values = std::collections::BTreeSet::new();
        let mut nulls = false;
        for part in parts {
            let metadata = self.reading(part.input)?;
            let Some(mask) = column_mask(&metadata, column) else {
                return Ok(None);
            };
            for batch in self.read(part, metadata, Some(mask), None)? {
                let batch = batch?;
                let Some(strings) = batch.column(0).as_string_opt::<i32>() else {
                    return Ok(None);
                };
                nulls |= strings.null_count() > 0;
                for value in strings.iter().flatten() {
                    if !values.contains(value) {
                        if values.len() == MAX_CLUSTER_VALUES {
                            return Ok(None);
                        }
                        values.insert(value.to_owned());
                    }
                }
            }
        }
        let mut values: Vec<Option<String>> = values.into_iter().map(Some).collect();
        if nulls {
            values.push(None);
        }
        Ok(Some(values))
    }

    /// Writes the open row group, if any, to `writer`.
    fn close_row_group(&mut self, writer: &mut SerializedFileWriter<Output>) -> Result<()> {
        let Some((columns, _)) = self.open.take() else {
            return Ok(());
        };
        let mut group = writer.next_row_group()?;
        for column in columns {
            column.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }

    fn finish(mut self, writer: &mut SerializedFileWriter<Output>) -> Result<()> {
        self.encode_clustered(writer)?;
        self.close_row_group(writer)
    }
}

/// The projection of the top-level `column` of a file, if it has one.
fn column_mask(metadata: &ArrowReaderMetadata, column: &str) -> Option<ProjectionMask> {
    let root = metadata.schema().index_of(column).ok()?;
    Some(ProjectionMask::roots(
        metadata.metadata().file_metadata().schema_descr(),
        [root],
    ))
}

/// The rows whose `column` is `value` (null if `None`).
fn value_filter(
    metadata: &ArrowReaderMetadata,
    column: &str,
    value: Option<&str>,
) -> Result<RowFilter> {
    let mask = column_mask(metadata, column)
        .ok_or_else(|| Error::Wal(format!("no column {column} to group rows by")))?;
    let value = value.map(StringArray::new_scalar);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| match &value {
        Some(value) => eq(batch.column(0), value),
        None => is_null(batch.column(0)),
    });
    Ok(RowFilter::new(vec![Box::new(predicate)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written at 1,000 ms: quiet for a policy whose cutoff is later.
    fn file(hour: i64, n: usize, size: u64) -> StoredFile {
        StoredFile {
            path: PathBuf::from(format!("/d/spans/h{hour}/f{n:03}.parquet")),
            hour,
            size,
            modified_ms: 1_000,
        }
    }

    fn busy(min_files: usize, target_bytes: u64) -> Policy {
        Policy {
            min_files,
            target_bytes,
            quiet_before_ms: 0,
        }
    }

    /// Written by a quiet partition's merge at 1,000 ms.
    fn laid_out(hour: i64, n: usize, size: u64) -> StoredFile {
        StoredFile {
            path: PathBuf::from(format!("/d/spans/h{hour}/f{n:03}-optimized.parquet")),
            ..file(hour, n, size)
        }
    }

    /// The inputs of each merge `plan` finds, checking that each is quiet or not as
    /// `quiet` says.
    fn plan_of(files: &[StoredFile], quiet: bool, policy: Policy) -> Vec<Vec<StoredFile>> {
        plan(files, policy)
            .into_iter()
            .map(|m| {
                assert_eq!(m.quiet, quiet, "{m:?}");
                m.inputs
            })
            .collect()
    }

    fn quiet(target_bytes: u64) -> Policy {
        Policy {
            min_files: 1_000,
            target_bytes,
            quiet_before_ms: 2_000,
        }
    }

    #[test]
    fn only_files_of_like_size_in_one_partition_are_grouped() {
        let mut files = Vec::new();
        // Hour 1: six 1 KiB files, two 64 KiB (an earlier merge), one at the target.
        for n in 0..6 {
            files.push(file(1, n, 1024));
        }
        files.push(file(1, 6, 64 * 1024));
        files.push(file(1, 7, 65 * 1024));
        files.push(file(1, 8, 1 << 20));
        // Hour 2: three small files, fewer than min_files.
        for n in 0..3 {
            files.push(file(2, n, 1024));
        }
        let groups = plan_of(&files, false, busy(4, 1 << 20));
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(
            groups[0],
            (0..6).map(|n| file(1, n, 1024)).collect::<Vec<_>>()
        );
        // With min_files 2, the two 64 KiB files make a group of their own.
        let groups = plan_of(&files, false, busy(2, 1 << 20));
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert!(groups.contains(&vec![file(1, 6, 0), file(1, 7, 0)]));
    }

    #[test]
    fn groups_stop_at_the_target_size() {
        let files: Vec<_> = (0..10).map(|n| file(1, n, 300)).collect();
        let groups = plan_of(&files, false, busy(2, 1000));
        // Three files of 300 fit under 1000, a fourth does not.
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| g.len() == 3));
    }

    #[test]
    fn a_quiet_partition_is_merged_whole_across_tiers() {
        // Seven flushes of about a megabyte, two tails: fewer than min_files in any tier.
        let mut files: Vec<_> = (0..7)
            .map(|n| file(1, n, 1_000_000 + n as u64 * 100_000))
            .collect();
        files.push(file(1, 7, 40_000));
        files.push(file(1, 8, 300_000));
        assert!(plan_of(&files, false, busy(8, 1 << 30)).is_empty());
        let groups = plan_of(&files, true, quiet(1 << 30));
        assert_eq!(groups, vec![files.clone()]);
        // One file written since the cutoff: the partition is still being written.
        files[3].modified_ms = 3_000;
        assert!(plan_of(&files, true, quiet(1 << 30)).is_empty());
    }

    #[test]
    fn a_quiet_partitions_laid_out_file_waits_for_a_quarter_of_its_size() {
        let big = laid_out(1, 0, 10_000);
        let late = |n, size| file(1, n, size);
        // Two late files of 1,000: too little to rewrite the big one for; they merge.
        let files = vec![big.clone(), late(1, 1_000), late(2, 1_000)];
        assert_eq!(
            plan_of(&files, true, quiet(1 << 20)),
            vec![vec![late(1, 0), late(2, 0)]]
        );
        // The late files merged: nothing to do.
        let merged = laid_out(1, 3, 2_000);
        assert!(plan_of(&[big.clone(), merged.clone()], true, quiet(1 << 20)).is_empty());
        // A quarter of its size has come late: all of it merges.
        let files = vec![big.clone(), merged, late(4, 500)];
        assert_eq!(plan_of(&files, true, quiet(1 << 20)).concat().len(), 3);
        // Laid-out files at the target are never inputs, and groups stay under it.
        let files = vec![
            laid_out(2, 0, 1_000),
            laid_out(2, 1, 400),
            laid_out(2, 2, 400),
            laid_out(2, 3, 400),
        ];
        let groups = plan_of(&files, true, quiet(1_000));
        assert_eq!(groups, vec![vec![laid_out(2, 1, 0), laid_out(2, 2, 0)]]);
    }

    /// Every file of a quiet partition that a flush or a merge under load wrote is
    /// written again once, however large, and alone if nothing else is left to merge.
    #[test]
    fn a_quiet_partitions_files_are_each_laid_out_once() {
        // The whole hour in one file merged while it was written: laid out alone.
        let merged_under_load = file(1, 0, 10_000);
        assert_eq!(
            plan_of(
                std::slice::from_ref(&merged_under_load),
                true,
                quiet(1 << 20)
            ),
            vec![vec![merged_under_load.clone()]]
        );
        // Larger than the target: alone too.
        assert_eq!(
            plan_of(std::slice::from_ref(&merged_under_load), true, quiet(1_000)),
            vec![vec![merged_under_load.clone()]]
        );
        // Beside a laid-out file it dwarfs: merged with it.
        let files = vec![merged_under_load.clone(), laid_out(1, 1, 1_000)];
        assert_eq!(plan_of(&files, true, quiet(1 << 20)), vec![files.clone()]);
        // A partition laid out, in files that do not fit together: nothing to do.
        let files = vec![laid_out(1, 2, 600), laid_out(1, 3, 600)];
        assert!(plan_of(&files, true, quiet(1_000)).is_empty());
        // Files at the target that are not laid out are each written again.
        let files = vec![file(2, 0, 1_000), file(2, 1, 400), file(2, 2, 400)];
        assert_eq!(
            plan_of(&files, true, quiet(1_000)),
            vec![vec![file(2, 0, 0)], vec![file(2, 1, 0), file(2, 2, 0)]]
        );
    }

    /// A partition being written is merged before a quiet one is laid out, whatever
    /// their hours.
    #[test]
    fn merges_of_partitions_being_written_come_first() {
        let mut files: Vec<_> = (0..2).map(|n| file(1, n, 100)).collect();
        for n in 0..2 {
            files.push(StoredFile {
                modified_ms: 3_000,
                ..file(2, n, 100)
            });
        }
        let policy = Policy {
            min_files: 2,
            ..quiet(1 << 20)
        };
        let merges = plan(&files, policy);
        let order: Vec<(i64, bool)> = merges.iter().map(|m| (m.inputs[0].hour, m.quiet)).collect();
        assert_eq!(order, vec![(2, false), (1, true)]);
    }
}
