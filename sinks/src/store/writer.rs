//! Buffered batches → Parquet files, one per partition hour, written atomically.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, SchemaRef, TimestampNanosecondType};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
    ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use swarmscope_processors::schema::Table;

use super::layout::{self, partition_dir, StoredFile, NANOS_PER_HOUR};
use super::StorageConfig;
use crate::{Error, Result};

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A Parquet file being written: its bytes reach the file a MiB at a time. Parquet's
/// writer buffers 8 KiB and hands a larger page straight on, so a flush's file went to
/// the kernel in a few hundred writes of a few KiB each, and each that ended within a
/// page-cache folio had the kernel zero the rest of it first.
pub(crate) type Output = BufWriter<File>;

/// `file` as an [`Output`].
pub(crate) fn output(file: File) -> Output {
    BufWriter::with_capacity(OUTPUT_BUFFER, file)
}

const OUTPUT_BUFFER: usize = 1 << 20;

/// The Parquet writer settings of the store (compression, dictionaries but for random
/// ids and for times and durations, which are delta-encoded, statistics where readers
/// prune with them, row group size, a bloom filter on `trace_id`).
pub fn writer_properties(config: &StorageConfig) -> Result<WriterProperties> {
    // Looking up one trace is the typical point query, and random ids defeat min/max
    // statistics; a bloom filter per row group lets a reader (DataFusion, DuckDB,
    // Spark) skip every row group without the trace. 1% false positives; the writer
    // folds each filter down to the distinct ids its row group holds.
    let trace_id = ColumnPath::from("trace_id");
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(trace_id, config.row_group_rows as u64);
    for column in pruning_columns() {
        builder = builder.set_column_statistics_enabled(column, EnabledStatistics::Page);
    }
    // Random ids repeat only within a trace: a dictionary saves less than it costs
    // (`cargo bench --bench hotpaths -- flush`: smaller and faster without).
    for id in RANDOM_ID_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(id), false);
    }
    // A span id is 16 random hex digits, and in a plain page each follows its 4-byte
    // length: zstd then spends its time coding short matches of a length and a digit or
    // two, where an entropy coder alone halves the digits. With the lengths in a block of
    // their own (DELTA_LENGTH_BYTE_ARRAY: equal lengths pack to nothing), zstd finds no
    // matches, skips ahead as it does through incompressible input, and codes the digits
    // only: the ids took 10% fewer bytes and their chunks a third less time to write
    // (`benches/RESULTS.md`, session 33). Parent ids gain less (their runs zstd matches
    // whole either way); trace ids, which come in runs too, stay plain: there the
    // encoding saved 1% of the bytes and took longer.
    for id in LENGTHS_APART_COLUMNS {
        builder =
            builder.set_column_encoding(ColumnPath::from(id), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    for column in delta_columns() {
        builder = builder
            .set_column_dictionary_enabled(column.clone(), false)
            .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder.build())
}

/// The columns stored with Parquet's delta encoding instead of a dictionary: the
/// top-level times (timestamps and `*_unix_nano`) and durations (`*_ns`) of every
/// table. Rows arrive nearly in time order, so consecutive times differ by a few bits,
/// while nearly every value is distinct and a dictionary of them saves nothing (the
/// spans' time columns take a third of the bytes they took with one; benches/RESULTS.md).
/// Every Parquet reader (DuckDB, Spark, Trino, pyarrow) decodes it.
fn delta_columns() -> Vec<ColumnPath> {
    top_level_columns(|f| match f.data_type() {
        DataType::Timestamp(..) => true,
        DataType::Int64 => f.name().ends_with("_unix_nano") || f.name().ends_with("_ns"),
        _ => false,
    })
}

/// The columns given min/max statistics (per row group and per page): the top-level
/// columns of primitive type of every table (times, durations, numbers, flags).
/// Readers prune with these (time ranges above all).
///
/// Strings get none. Rows are stored in arrival order, so a row group of a flush holds
/// every service, operation, agent and status of its seconds, and the min and max of
/// such a column span nearly its whole domain: they prune nothing, and comparing every
/// string for them cost 16% of the server's CPU under load (`perf record --call-graph
/// dwarf` of the standard workload). Nested columns (attribute maps, events, links) cannot be pruned
/// by SQL readers at all, and random ids are pruned by the bloom filter.
fn pruning_columns() -> Vec<ColumnPath> {
    top_level_columns(|f| f.data_type().is_primitive() || f.data_type() == &DataType::Boolean)
}

/// The top-level columns of every table's stored schema that `select` picks, once each.
fn top_level_columns(select: impl Fn(&Field) -> bool) -> Vec<ColumnPath> {
    let mut columns: Vec<String> = Table::ALL
        .iter()
        .flat_map(|table| {
            let schema = table.stored_schema();
            schema
                .fields()
                .iter()
                .filter(|f| select(f))
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        })
        .collect();
    columns.sort();
    columns.dedup();
    columns.into_iter().map(ColumnPath::from).collect()
}

/// Columns of random or nearly unique ids, in every table that has them: no dictionary,
/// no statistics. (A work item id repeats a handful of times, over its claim, progress
/// and completion: too few for a dictionary to pay for interning every value.)
pub const RANDOM_ID_COLUMNS: [&str; 4] = ["trace_id", "span_id", "parent_span_id", "work_id"];

/// The span ids, stored with their lengths apart from their digits
/// (`DELTA_LENGTH_BYTE_ARRAY`, which every Parquet reader decodes).
const LENGTHS_APART_COLUMNS: [&str; 2] = ["span_id", "parent_span_id"];

/// The partition hour of every row: the table's time column, or its fallback (a log's
/// `observed_time`) where that is null; rows with neither land in the epoch's hour.
pub(crate) fn row_hours(table: Table, batch: &RecordBatch) -> Result<Vec<i64>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_primitive::<TimestampNanosecondType>().clone())
            .ok_or_else(|| {
                Error::Arrow(arrow::error::ArrowError::SchemaError(format!("no {name}")))
            })
    };
    let primary = column(table.time_column())?;
    let fallback = table.fallback_time_column().map(column).transpose()?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let t = if primary.is_valid(i) {
                primary.value(i)
            } else {
                fallback
                    .as_ref()
                    .filter(|f| f.is_valid(i))
                    .map_or(0, |f| f.value(i))
            };
            t.div_euclid(NANOS_PER_HOUR)
        })
        .collect())
}

/// A written file still under its `.tmp` name: durable, but not yet part of the
/// history until [`PendingFile::commit`] renames it.
pub(crate) struct PendingFile {
    pub tmp: PathBuf,
    pub file: StoredFile,
}

impl PendingFile {
    /// Syncs the written file (a flush's files are written unsynced, and synced when
    /// they are committed).
    pub(crate) fn sync(&self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(&self.tmp))
    }

    pub(crate) fn commit(&self) -> Result<()> {
        rename_into_place(&self.tmp, &self.file.path)
    }
}

/// Renames `tmp` to `path` and syncs the directory.
pub(crate) fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(Error::io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(dir))?;
    }
    Ok(())
}

/// The `.tmp` name a file is written under.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `batches` of `table` under `data_dir` in its stored schema
/// ([`Table::stored_schema`]), one new file per partition hour, each under its `.tmp`
/// name, not yet synced ([`PendingFile::sync`]). Blocking; call from a blocking thread.
///
/// The batches go to one writer per hour as they are, never concatenated. A writer
/// holds a row group's batches in the stored schema until it encodes their columns: a
/// flush's memory is the buffer it drains, the columns the stored schema casts (times
/// and counts; strings are shared, not copied) and the encoders' pages.
pub(crate) fn write_partitioned(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    props: &WriterProperties,
) -> Result<Vec<PendingFile>> {
    let table_dir = data_dir.join(table.name());
    let mut open: BTreeMap<i64, OpenFile> = BTreeMap::new();
    let written = (|| {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let hours = row_hours(table, batch)?;
            let batch = &table.to_stored(batch)?;
            let first = hours[0];
            if hours.iter().all(|h| *h == first) {
                OpenFile::get(&mut open, &table_dir, first, batch, props)?.write(batch)?;
                continue;
            }
            let mut distinct = hours.clone();
            distinct.sort_unstable();
            distinct.dedup();
            for hour in distinct {
                let mask: BooleanArray = hours.iter().map(|h| Some(*h == hour)).collect();
                let part = filter_record_batch(batch, &mask)?;
                OpenFile::get(&mut open, &table_dir, hour, &part, props)?.write(&part)?;
            }
        }
        let mut written = Vec::with_capacity(open.len());
        while let Some((hour, file)) = open.pop_first() {
            let tmp = file.tmp.clone();
            let finished = file.finish().and_then(|path| {
                let size = std::fs::metadata(&tmp).map_err(Error::io(&tmp))?.len();
                Ok((path, size))
            });
            match finished {
                Ok((path, size)) => written.push(PendingFile {
                    tmp,
                    file: StoredFile {
                        path,
                        hour,
                        size,
                        modified_ms: layout::now_ms(),
                    },
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    for p in &written {
                        let _ = std::fs::remove_file(&p.tmp);
                    }
                    return Err(e);
                }
            }
        }
        Ok(written)
    })();
    if written.is_err() {
        for file in open.values() {
            let _ = std::fs::remove_file(&file.tmp);
        }
    }
    written
}

/// A partition's new file being written under its `.tmp` name. Rows are gathered a
/// row group at a time and its columns encoded on several threads ([`encode_columns`]).
struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: SerializedFileWriter<Output>,
    columns: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The rows of the row group being gathered, and how many.
    gathered: Vec<RecordBatch>,
    gathered_rows: usize,
    row_group_rows: usize,
    row_groups: usize,
}

impl OpenFile {
    /// The open file of partition `hour`, created on first use.
    fn get<'a>(
        open: &'a mut BTreeMap<i64, OpenFile>,
        table_dir: &Path,
        hour: i64,
        batch: &RecordBatch,
        props: &WriterProperties,
    ) -> Result<&'a mut OpenFile> {
        use std::collections::btree_map::Entry;
        let slot = match open.entry(hour) {
            Entry::Occupied(file) => return Ok(file.into_mut()),
            Entry::Vacant(slot) => slot,
        };
        let dir = partition_dir(table_dir, hour);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let (tmp, path) = new_file_name(&dir, false);
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        // The Arrow writer embeds the Arrow schema in the file's metadata, as readers
        // of the files expect; its lower-level parts then write the row groups.
        let parts = ArrowWriter::try_new(output(file), batch.schema(), Some(props.clone()))
            .and_then(|w| w.into_serialized_writer());
        let (writer, columns) = match parts {
            Ok(parts) => parts,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        Ok(slot.insert(OpenFile {
            tmp,
            path,
            writer,
            columns,
            schema: batch.schema(),
            gathered: Vec::new(),
            gathered_rows: 0,
            row_group_rows: props.max_row_group_row_count().unwrap_or(usize::MAX).max(1),
            row_groups: 0,
        }))
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            let room = self.row_group_rows - self.gathered_rows;
            let taken = batch.num_rows().min(room);
            self.gathered.push(batch.slice(0, taken));
            self.gathered_rows += taken;
            batch = batch.slice(taken, batch.num_rows() - taken);
            if self.gathered_rows == self.row_group_rows {
                self.write_row_group()?;
            }
        }
        Ok(())
    }

    /// Encodes the gathered rows as the file's next row group.
    fn write_row_group(&mut self) -> Result<()> {
        let writers = self.columns.create_column_writers(self.row_groups)?;
        let gathered = std::mem::take(&mut self.gathered);
        self.gathered_rows = 0;
        let chunks = encode_columns(&self.schema, writers, &gathered)?;
        let mut row_group = self.writer.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.row_groups += 1;
        Ok(())
    }

    /// Closes the file; returns the final path. Neither the file nor its directory
    /// is synced: [`PendingFile::sync`] syncs the file, and the rename into place
    /// syncs the directory.
    fn finish(mut self) -> Result<PathBuf> {
        if self.gathered_rows > 0 {
            self.write_row_group()?;
        }
        self.writer.close()?;
        Ok(self.path)
    }
}

/// Encodes the columns of one row group, `batches`, with `writers` (one per leaf
/// column, in schema order) on up to [`ENCODING_THREADS`] threads, each taking a share
/// of the columns of about equal size; returns the chunks in schema order.
///
/// A flush is the one serial step between the receivers and the history: encoding on
/// one thread, it fell behind the receivers under load and the buffer filled, and
/// requests were refused while cores sat idle.
fn encode_columns(
    schema: &SchemaRef,
    writers: Vec<ArrowColumnWriter>,
    batches: &[RecordBatch],
) -> Result<Vec<ArrowColumnChunk>> {
    // Each leaf column's pieces, one per batch, and the bytes of the top-level column
    // it belongs to, shared among its leaves, as its weight.
    let mut leaves: Vec<(Vec<ArrowLeafColumn>, usize)> = writers
        .iter()
        .map(|_| (Vec::with_capacity(batches.len()), 0))
        .collect();
    for batch in batches {
        let mut leaf = 0;
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let pieces = compute_leaves(field, column)?;
            let weight = column.get_buffer_memory_size() / pieces.len().max(1);
            for piece in pieces {
                let slot = leaves.get_mut(leaf).ok_or_else(|| {
                    Error::Parquet(parquet::errors::ParquetError::General(
                        "more leaf columns than column writers".into(),
                    ))
                })?;
                slot.0.push(piece);
                slot.1 += weight;
                leaf += 1;
            }
        }
    }
    // Heaviest first, each to the lightest lane.
    let lanes = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, ENCODING_THREADS);
    let mut order: Vec<usize> = (0..writers.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(leaves[*i].1));
    let mut loads = vec![0usize; lanes];
    let mut lane_of = vec![0usize; writers.len()];
    for i in order {
        let lane = (0..lanes).min_by_key(|l| loads[*l]).unwrap_or(0);
        loads[lane] += leaves[i].1;
        lane_of[i] = lane;
    }
    let mut work: Vec<Vec<(usize, ArrowColumnWriter, Vec<ArrowLeafColumn>)>> =
        (0..lanes).map(|_| Vec::new()).collect();
    for (i, (writer, (pieces, _))) in writers.into_iter().zip(leaves).enumerate() {
        work[lane_of[i]].push((i, writer, pieces));
    }
    let encode = |columns: Vec<(usize, ArrowColumnWriter, Vec<ArrowLeafColumn>)>| -> Result<Vec<(usize, ArrowColumnChunk)>> {
        columns
            .into_iter()
            .map(|(i, mut writer, pieces)| {
                for piece in &pieces {
                    writer.write(piece)?;
                }
                Ok((i, writer.close()?))
            })
            .collect::<Result<Vec<_>>>()
    };
    let mut lanes = work.into_iter();
    let here = lanes.next().unwrap_or_default();
    let others: Vec<_> = lanes
        .map(|lane| {
            let (done, answer) = std::sync::mpsc::channel();
            encoding_pool().submit(Box::new(move || {
                let _ = done.send(encode(lane));
            }));
            answer
        })
        .collect();
    let mut chunks = encode(here)?;
    for answer in others {
        chunks.extend(answer.recv().map_err(|_| Error::Task {
            task: "flush",
            message: "a column encoding thread panicked".into(),
        })??);
    }
    chunks.sort_by_key(|(i, _)| *i);
    Ok(chunks.into_iter().map(|(_, chunk)| chunk).collect())
}

/// The most threads one row group's columns are encoded on.
const ENCODING_THREADS: usize = 4;

/// The threads that encode columns beside a flush's own, started on first use and
/// kept: a thread started per row group took a fresh allocator arena each time, and
/// the process kept the freed pages of each.
struct EncodingPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl EncodingPool {
    fn submit(&self, job: Box<dyn FnOnce() + Send>) {
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(job);
        // The pool's threads never stop; should they have, the job runs here.
        if let Err(std::sync::mpsc::SendError(job)) = sent {
            job();
        }
    }
}

fn encoding_pool() -> &'static EncodingPool {
    static POOL: std::sync::OnceLock<EncodingPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, ENCODING_THREADS)
            - 1;
        for _ in 0..threads {
            let queue = std::sync::Arc::clone(&queue);
            let started = std::thread::Builder::new()
                .name("swarmscope-encode".into())
                .spawn(move || loop {
                    let job = queue
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "no column encoding thread; flushes encode on one");
            }
        }
        EncodingPool {
            jobs: std::sync::Mutex::new(jobs),
        }
    })
}

/// A new file name in partition directory `dir`: its `.tmp` and its final path; one
/// that says the file is laid out for reading (see [`StoredFile::is_laid_out`]) with
/// `laid_out`.
pub(crate) fn new_file_name(dir: &Path, laid_out: bool) -> (PathBuf, PathBuf) {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = if laid_out {
        layout::LAID_OUT_SUFFIX
    } else {
        ".parquet"
    };
    let name = format!("part-{millis}-{}-{seq:06}{suffix}", std::process::id());
    let final_path = dir.join(&name);
    (tmp_path(&final_path), final_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Column paths apply by name to every table: a delta-encoded name must be an
    /// integer or a timestamp wherever it appears, or the writer would refuse a flush.
    #[test]
    fn delta_encoded_columns_are_integers_in_every_table() {
        let delta: Vec<String> = delta_columns().iter().map(|c| c.string()).collect();
        assert!(delta.contains(&"start_time".to_owned()), "{delta:?}");
        assert!(delta.contains(&"duration_ns".to_owned()), "{delta:?}");
        for table in Table::ALL {
            for field in table.stored_schema().fields() {
                if delta.contains(field.name()) {
                    assert!(
                        matches!(field.data_type(), DataType::Int64 | DataType::Timestamp(..)),
                        "{}.{}: {}",
                        table.name(),
                        field.name(),
                        field.data_type()
                    );
                }
            }
        }
    }

    /// zstd asks the CPU for its features once per process, not once per context
    /// (vendor/zstd-sys/PATCHED.md): Parquet makes two contexts for every column chunk
    /// it writes or reads, and under a hypervisor each `cpuid` is a VM exit. A child
    /// process writes and reads a file once, turns on CPUID faulting (Linux on x86-64
    /// with the `cpuid_fault` CPU flag), where a `cpuid` raises SIGSEGV, then writes
    /// and reads another: it dies if zstd asks again.
    #[test]
    fn zstd_asks_for_cpu_features_once_per_process() {
        const TEST: &str = "store::writer::tests::zstd_asks_for_cpu_features_once_per_process";
        const NO_FAULTING: i32 = 77;
        if std::env::var_os("SWARMSCOPE_CPUID_CHILD").is_some() {
            parquet_round_trip();
            if !cpuid_faults() {
                std::process::exit(NO_FAULTING);
            }
            parquet_round_trip();
            std::process::exit(0);
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([TEST, "--exact", "--test-threads=1", "--nocapture"])
            .env("SWARMSCOPE_CPUID_CHILD", "1")
            .output()
            .expect("runs the child");
        if out.status.code() == Some(NO_FAULTING) {
            eprintln!("CPUID faulting is not available here: not checked");
            return;
        }
        assert!(
            out.status.success(),
            "the child ({}) asked for CPU features again: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Turns on CPUID faulting for the calling thread (`arch_prctl(ARCH_SET_CPUID, 0)`).
    fn cpuid_faults() -> bool {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            const ARCH_SET_CPUID: libc::c_long = 0x1012;
            // SAFETY: arch_prctl with ARCH_SET_CPUID takes an integer argument and
            // changes only whether this thread's `cpuid` faults.
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 0 as libc::c_long) == 0 }
        }
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        false
    }

    /// The store's writer settings, or with `small` pages and dictionaries so small
    /// that pages end inside runs and cycles and dictionaries fall back to plain
    /// encoding.
    fn test_properties(small: bool) -> WriterProperties {
        let props = writer_properties(&StorageConfig::default()).expect("defaults");
        match small {
            true => props
                .into_builder()
                .set_data_page_size_limit(64)
                .set_write_batch_size(7)
                .set_dictionary_page_size_limit(256)
                .build(),
            false => props,
        }
    }

    /// A column of strings shaped the way telemetry repeats itself: runs of one value
    /// (a resource's service), cycles (a map's keys, row after row), values seen
    /// further back than a cycle, and values all distinct. Each value is up to 40 `a`s
    /// with at most one `b`, so that many values of one length differ in one byte only,
    /// wherever it is, at every length the dictionary compares its own way (up to 3, 7
    /// and 16 bytes, and longer).
    fn repeating_strings() -> impl Strategy<Value = Vec<Option<String>>> {
        let value = || {
            (0..=40usize, 0..=40usize).prop_map(|(len, b)| {
                (0..len)
                    .map(|i| if i == b { 'b' } else { 'a' })
                    .collect::<String>()
            })
        };
        let segment = prop_oneof![
            (value(), 1..40usize).prop_map(|(v, n)| vec![Some(v); n]),
            (proptest::collection::vec(value(), 1..20), 1..8usize).prop_map(|(cycle, n)| {
                let one: Vec<Option<String>> = cycle.into_iter().map(Some).collect();
                one.iter().cycle().take(one.len() * n).cloned().collect()
            }),
            proptest::collection::vec(proptest::option::weighted(0.9, value()), 1..60),
        ];
        proptest::collection::vec(segment, 1..30).prop_map(|s| s.concat())
    }

    /// A file of one string column `s` holding `values`, written with `props` in two
    /// writes, so that the encoder carries its state from one batch to the next.
    fn strings_written_in_two(values: &[Option<String>], props: WriterProperties) -> File {
        use arrow::array::StringArray;
        let column = StringArray::from(values.to_vec());
        let batch = RecordBatch::try_from_iter([("s", Arc::new(column) as _)]).expect("batch");
        let file = tempfile::tempfile().expect("temporary file");
        let mut writer =
            ArrowWriter::try_new(file.try_clone().expect("file"), batch.schema(), Some(props))
                .expect("writer");
        let half = values.len() / 2;
        writer.write(&batch.slice(0, half)).expect("write");
        writer
            .write(&batch.slice(half, values.len() - half))
            .expect("write");
        writer.close().expect("close");
        file
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every string reads back as written through Parquet's dictionary encoder,
        /// which the store's copy of parquet lets take a value's key from the value a
        /// period back (vendor/parquet/PATCHED.md): with the store's settings, and with
        /// pages and dictionaries so small that pages end inside runs and cycles and the
        /// dictionary falls back to plain encoding.
        #[test]
        fn strings_read_back_as_written_through_the_dictionary(
            values in repeating_strings(),
            small in proptest::bool::ANY,
        ) {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let file = strings_written_in_two(&values, test_properties(small));
            let reader = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().expect("file"))
                .expect("reader")
                .build()
                .expect("reader");
            let mut read = Vec::new();
            for batch in reader {
                let batch = batch.expect("batch");
                read.extend(batch.column(0).as_string::<i32>().iter().map(|v| v.map(str::to_owned)));
            }
            prop_assert_eq!(&read, &values);
            // As views, as DataFusion reads strings: a dictionary page of short values
            // only is read without its buffer (vendor/parquet/PATCHED.md), whatever
            // pages of longer values follow it in the chunk.
            let mut views = Vec::new();
            for batch in read_as_views(&file, 7) {
                views.extend(batch.column(0).as_string_view().iter().map(|v| v.map(str::to_owned)));
            }
            prop_assert_eq!(views, values);
        }
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every string written is in its row group's bloom filter, which the store's
        /// copy of parquet skips for a value equal to the one before it
        /// (vendor/parquet/PATCHED.md): runs, cycles, and values of one length that
        /// differ in one byte, in two writes. A bloom filter has no false negatives.
        #[test]
        fn every_string_written_is_in_the_bloom_filter(values in repeating_strings()) {
            use parquet::file::properties::ReaderProperties;
            use parquet::file::reader::FileReader;
            use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
            let column = ColumnPath::from("s");
            let props = WriterProperties::builder()
                .set_column_bloom_filter_enabled(column.clone(), true)
                .set_column_bloom_filter_fpp(column.clone(), 0.01)
                .set_column_bloom_filter_max_ndv(column, values.len() as u64)
                .build();
            let file = strings_written_in_two(&values, props);
            let options = ReadOptionsBuilder::new()
                .with_reader_properties(
                    ReaderProperties::builder().set_read_bloom_filter(true).build(),
                )
                .build();
            let reader = SerializedFileReader::new_with_options(file, options).expect("reader");
            prop_assert_eq!(reader.num_row_groups(), 1);
            let row_group = reader.get_row_group(0).expect("row group");
            let filter = row_group.get_column_bloom_filter(0).expect("a bloom filter");
            for value in values.iter().flatten() {
                prop_assert!(filter.check(value.as_str()), "{value:?} is not in the filter");
            }
        }
    }

    /// A column of strings that repeats itself for long stretches, as a request's
    /// resource attributes do row after row: cycles of 1 to 20 values (past the
    /// encoder's window of 16) repeated for 32 to 600 values, some whose first value
    /// recurs inside the cycle (so that it is not the period), some with a null or
    /// another value inside (of the same length, or not), and values of every length
    /// the dictionary compares its own way.
    fn periodic_strings() -> impl Strategy<Value = Vec<Option<String>>> {
        let value = || {
            (0..=24usize, 0..=24usize, 0..3u8).prop_map(|(len, b, c)| {
                (0..len)
                    .map(|i| if i == b { char::from(b'b' + c) } else { 'a' })
                    .collect::<String>()
            })
        };
        let stretch = (
            proptest::collection::vec(value(), 1..=20),
            32..600usize,
            proptest::option::of((any::<proptest::sample::Index>(), 0..3u8)),
        )
            .prop_map(|(cycle, n, odd)| {
                let mut values: Vec<Option<String>> =
                    cycle.iter().cycle().take(n).cloned().map(Some).collect();
                if let Some((at, how)) = odd {
                    let at = at.index(n);
                    values[at] = match (how, values[at].take()) {
                        (0, _) => None,
                        // Another value of the same length: only its bytes tell.
                        (1, Some(v)) if !v.is_empty() => Some(format!("z{}", &v[1..])),
                        _ => Some("odd".to_owned()),
                    };
                }
                values
            });
        proptest::collection::vec(stretch, 1..6).prop_map(|s| s.concat())
    }

    /// The one string column chunk `values` make with the store's settings, `batch`
    /// values a mini-batch, and with a bloom filter if `bloom`: its compressed and
    /// uncompressed sizes, and the values read back.
    fn periodic_column(
        values: &[Option<String>],
        batch: usize,
        bloom: bool,
    ) -> (i64, i64, Vec<Option<String>>) {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut props = test_properties(false)
            .into_builder()
            .set_write_batch_size(batch);
        if bloom {
            props = props.set_column_bloom_filter_enabled(ColumnPath::from("s"), true);
        }
        let file = strings_written_in_two(values, props.build());
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("reader");
        let chunk = builder.metadata().row_group(0).column(0);
        let sizes = (chunk.compressed_size(), chunk.uncompressed_size());
        let mut read = Vec::new();
        for batch in builder.build().expect("reader") {
            let batch = batch.expect("batch");
            read.extend(
                batch
                    .column(0)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_owned)),
            );
        }
        (sizes.0, sizes.1, read)
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A stretch of a string column that is its first few values over and over
        /// takes its dictionary keys in bulk (vendor/parquet/PATCHED.md, the ninth
        /// change): every value reads back as written, and the column chunk has the
        /// same sizes as one written value by value (a bloom filter turns the bulk path
        /// off), in mini-batches that fall inside stretches and across them.
        #[test]
        fn periodic_strings_read_back_as_written_and_encode_as_one_by_one(
            values in periodic_strings(),
            batch in prop_oneof![Just(32usize), Just(100), Just(1024)],
        ) {
            let (compressed, uncompressed, read) = periodic_column(&values, batch, false);
            prop_assert_eq!(&read, &values);
            let (one_compressed, one_uncompressed, one_read) = periodic_column(&values, batch, true);
            prop_assert_eq!(&one_read, &values);
            prop_assert_eq!((compressed, uncompressed), (one_compressed, one_uncompressed));
        }
    }

    /// Numbers shaped like telemetry's counts and flags: runs of one value, and
    /// stretches drawn from `2^bits` values, with nulls, so that dictionary keys and
    /// bit-packed runs take every width from 0 to 17 bits (and past the dictionary's
    /// size limit, plain encoding).
    fn repeating_numbers() -> impl Strategy<Value = Vec<Option<i64>>> {
        let segment = prop_oneof![
            (any::<i64>(), 1..40usize).prop_map(|(v, n)| vec![Some(v); n]),
            (0..=17u32).prop_flat_map(|bits| {
                let value = (0..1i64 << bits).prop_map(move |v| v * 1_000_003);
                proptest::collection::vec(proptest::option::weighted(0.9, value), 1..200)
            }),
        ];
        proptest::collection::vec(segment, 1..30).prop_map(|s| s.concat())
    }

    /// Lists of 0-9 numbers, some null, some holding nulls: repetition levels of one
    /// bit and definition levels of two, bit-packed wherever lengths vary.
    fn number_lists() -> impl Strategy<Value = Vec<Option<Vec<Option<i32>>>>> {
        let item = proptest::option::weighted(0.9, 0..5i32);
        let list = proptest::collection::vec(item, 0..10);
        proptest::collection::vec(proptest::option::weighted(0.9, list), 1..400)
    }

    /// `lists` as an Arrow list column.
    fn list_array(lists: &[Option<Vec<Option<i32>>>]) -> arrow::array::ListArray {
        use arrow::array::{Int32Builder, ListBuilder};
        let mut column = ListBuilder::new(Int32Builder::new());
        for list in lists {
            match list {
                Some(items) => {
                    column.values().extend(items.iter().copied());
                    column.append(true);
                }
                None => column.append(false),
            }
        }
        column.finish()
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every number and list reads back as written through Parquet's dictionary
        /// encoder for numbers, which the store's copy of parquet lets take a value's
        /// key from the value before it, and through its bit-packing of keys and levels,
        /// several values to a word (vendor/parquet/PATCHED.md).
        #[test]
        fn numbers_and_lists_read_back_as_written(
            numbers in repeating_numbers(),
            lists in number_lists(),
            small in proptest::bool::ANY,
        ) {
            use arrow::array::Int64Array;
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let props = test_properties(small);
            let write = |batch: RecordBatch| {
                let file = tempfile::tempfile().expect("temporary file");
                let mut writer = ArrowWriter::try_new(
                    file.try_clone().expect("file"),
                    batch.schema(),
                    Some(props.clone()),
                )
                .expect("writer");
                // Two writes, so that the encoder carries its state from one batch to the next.
                let half = batch.num_rows() / 2;
                writer.write(&batch.slice(0, half)).expect("write");
                writer.write(&batch.slice(half, batch.num_rows() - half)).expect("write");
                writer.close().expect("close");
                ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("reader")
                    .build()
                    .expect("reader")
                    .map(|b| b.expect("batch"))
                    .collect::<Vec<_>>()
            };
            let numbers_batch = RecordBatch::try_from_iter([(
                "n",
                Arc::new(Int64Array::from(numbers.clone())) as _,
            )])
            .expect("batch");
            let read: Vec<Option<i64>> = write(numbers_batch)
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .iter()
                        .collect::<Vec<_>>()
                })
                .collect();
            prop_assert_eq!(read, numbers);
            let lists_batch =
                RecordBatch::try_from_iter([("l", Arc::new(list_array(&lists)) as _)])
                    .expect("batch");
            let read: Vec<Option<Vec<Option<i32>>>> = write(lists_batch)
                .iter()
                .flat_map(|b| {
                    let column = b.column(0).as_list::<i32>();
                    (0..column.len())
                        .map(|i| {
                            column.is_valid(i).then(|| {
                                column
                                    .value(i)
                                    .as_primitive::<arrow::datatypes::Int32Type>()
                                    .iter()
                                    .collect()
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            prop_assert_eq!(read, lists);
        }

        /// A list column's file is the same bytes whether its rows come in one batch or
        /// one row a batch. One batch gives the level encoder slices of many levels,
        /// which the store's copy of parquet bit-packs eight at a time where a group of
        /// them is not one run (vendor/parquet/PATCHED.md, the seventh change); one row
        /// a batch gives it slices of up to ten levels, met at other offsets in the
        /// groups of eight. The levels must come out as a `put` of each would code them.
        #[test]
        fn lists_encode_alike_in_one_batch_or_row_by_row(lists in number_lists()) {
            let batch = RecordBatch::try_from_iter([("l", Arc::new(list_array(&lists)) as _)])
                .expect("batch");
            let props = test_properties(false);
            let write = |batches: &mut dyn Iterator<Item = RecordBatch>| {
                let mut bytes = Vec::new();
                let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props.clone()))
                    .expect("writer");
                for b in batches {
                    writer.write(&b).expect("write");
                }
                writer.close().expect("close");
                bytes
            };
            let whole = write(&mut std::iter::once(batch.clone()));
            let by_row = write(&mut (0..batch.num_rows()).map(|r| batch.slice(r, 1)));
            prop_assert!(whole == by_row, "{} bytes in one batch, {} row by row", whole.len(), by_row.len());
        }
    }

    /// Rows of a number, a string, a list of numbers, a map and a struct of one number
    /// that is never null, where `gaps` says whether any value of the first four may be
    /// null (a null list or map holds nothing either way). The struct is null a fifth
    /// of the time either way: its number then runs with gaps although it has no nulls
    /// of its own.
    #[allow(clippy::type_complexity)]
    fn leaf_rows(
        gaps: bool,
    ) -> impl Strategy<
        Value = Vec<(
            Option<i64>,
            Option<String>,
            Option<Vec<Option<i32>>>,
            Option<Vec<(String, Option<String>)>>,
            Option<i64>,
        )>,
    > {
        // A value null a fifth of the time with `gaps`, never without.
        fn maybe<T: std::fmt::Debug + 'static>(
            gaps: bool,
            value: impl Strategy<Value = T> + 'static,
        ) -> BoxedStrategy<Option<T>> {
            match gaps {
                true => proptest::option::weighted(0.8, value).boxed(),
                false => value.prop_map(Some).boxed(),
            }
        }
        let number = maybe(gaps, any::<i64>());
        let string = maybe(gaps, "[a-c]{0,3}");
        let list =
            proptest::option::weighted(0.8, proptest::collection::vec(maybe(gaps, 0..5i32), 0..6));
        let map = proptest::option::weighted(
            0.8,
            proptest::collection::vec(("[k-m]{1,2}", maybe(gaps, "[x-z]{0,2}")), 0..4),
        );
        let record = proptest::option::weighted(0.8, any::<i64>());
        proptest::collection::vec((number, string, list, map, record), 1..300)
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every leaf reads back as written, whether its values run without a gap (the
        /// store's copy of parquet then takes their indices from a shared table of
        /// 0, 1, 2, ...: vendor/parquet/PATCHED.md, the tenth change) or a null, its
        /// own or its parent's, breaks the run (a list of indices from there on), in
        /// writes cut anywhere, with pages and write batches of a few values or of the
        /// store's size.
        #[test]
        fn leaves_read_back_as_written_with_or_without_gaps(
            rows in proptest::bool::ANY.prop_flat_map(leaf_rows),
            cuts in proptest::collection::vec(0.0..1.0f64, 0..4),
            small in proptest::bool::ANY,
        ) {
            use arrow::array::{Int64Array, MapBuilder, StringArray, StringBuilder};
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for row in &rows {
                match &row.3 {
                    Some(entries) => {
                        for (key, value) in entries {
                            map.keys().append_value(key);
                            map.values().append_option(value.as_deref());
                        }
                        map.append(true).expect("map row");
                    }
                    None => map.append(false).expect("map row"),
                }
            }
            let lists: Vec<_> = rows.iter().map(|r| r.2.clone()).collect();
            let record = arrow::array::StructArray::new(
                vec![Arc::new(Field::new("x", DataType::Int64, false))].into(),
                vec![Arc::new(rows.iter().map(|r| r.4.unwrap_or(0)).collect::<Int64Array>()) as _],
                Some(rows.iter().map(|r| r.4.is_some()).collect::<Vec<bool>>().into()),
            );
            let batch = RecordBatch::try_from_iter([
                ("n", Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()) as _),
                ("s", Arc::new(rows.iter().map(|r| r.1.clone()).collect::<StringArray>()) as _),
                ("l", Arc::new(list_array(&lists)) as _),
                ("m", Arc::new(map.finish()) as _),
                ("r", Arc::new(record) as _),
            ])
            .expect("batch");
            let mut at: Vec<usize> = cuts
                .iter()
                .map(|c| (c * batch.num_rows() as f64) as usize)
                .chain([0, batch.num_rows()])
                .collect();
            at.sort_unstable();
            let file = tempfile::tempfile().expect("temporary file");
            let mut writer = ArrowWriter::try_new(
                file.try_clone().expect("file"),
                batch.schema(),
                Some(test_properties(small)),
            )
            .expect("writer");
            for w in at.windows(2) {
                writer.write(&batch.slice(w[0], w[1] - w[0])).expect("write");
            }
            writer.close().expect("close");
            let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("reader")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect();
            let read = arrow::compute::concat_batches(&batch.schema(), &read).expect("concat");
            prop_assert_eq!(read.num_rows(), batch.num_rows());
            for (i, (got, want)) in read.columns().iter().zip(batch.columns()).enumerate() {
                prop_assert_eq!(got.to_data(), want.to_data(), "column {}", i);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Each page's and each row group's minimum and maximum of an integer column
        /// are its least and greatest values, signed or unsigned as the column's type
        /// says: the store's copy of parquet compares the integers of a signed type
        /// (or none) with `<` and `>` in one loop, having asked the column's type once
        /// (vendor/parquet/PATCHED.md, the eighth change); unsigned ones still compare
        /// as unsigned. Pages of a few values each, in two writes.
        #[test]
        fn integer_statistics_are_each_pages_least_and_greatest(
            numbers in repeating_numbers(),
            small in proptest::bool::ANY,
        ) {
            use arrow::array::{
                ArrayRef, Int32Array, Int64Array, TimestampMicrosecondArray, UInt32Array, UInt64Array,
            };
            use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
            use parquet::file::page_index::column_index::ColumnIndexMetaData;
            let column = |f: fn(i64) -> i64| -> Vec<Option<i64>> {
                numbers.iter().map(|n| n.map(f)).collect()
            };
            // Each column's values as the i64 its statistics are read back as, and its
            // order: (column, values, unsigned).
            let columns: [(ArrayRef, Vec<Option<i64>>, bool); 5] = [
                (Arc::new(Int64Array::from(numbers.clone())), numbers.clone(), false),
                (
                    Arc::new(Int32Array::from_iter(numbers.iter().map(|n| n.map(|v| v as i32)))),
                    column(|v| i64::from(v as i32)),
                    false,
                ),
                (
                    Arc::new(UInt64Array::from_iter(numbers.iter().map(|n| n.map(|v| v as u64)))),
                    numbers.clone(),
                    true,
                ),
                (
                    Arc::new(UInt32Array::from_iter(numbers.iter().map(|n| n.map(|v| v as u32)))),
                    column(|v| i64::from(v as u32)),
                    true,
                ),
                (
                    Arc::new(TimestampMicrosecondArray::from(numbers.clone()).with_timezone("UTC")),
                    numbers.clone(),
                    false,
                ),
            ];
            let batch = RecordBatch::try_from_iter(
                ["i64", "i32", "u64", "u32", "time"]
                    .into_iter()
                    .zip(columns.iter().map(|c| c.0.clone())),
            )
            .expect("batch");
            let props = test_properties(small)
                .into_builder()
                .set_statistics_enabled(EnabledStatistics::Page)
                .set_data_page_row_count_limit(if small { 5 } else { 20_000 })
                .build();
            let mut bytes = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).expect("writer");
            let half = batch.num_rows() / 2;
            writer.write(&batch.slice(0, half)).expect("write");
            writer.write(&batch.slice(half, batch.num_rows() - half)).expect("write");
            writer.close().expect("close");
            let metadata = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Required)
                .parse_and_finish(&bytes::Bytes::from(bytes))
                .expect("metadata");
            prop_assert_eq!(metadata.num_row_groups(), 1);
            // The least and greatest of `values`, as i64s, in the column's order: an
            // unsigned one's is the order of the bits with the sign bit flipped.
            let bounds = |values: &[Option<i64>], unsigned: bool| -> Option<(i64, i64)> {
                let order = |v: &i64| if unsigned { v ^ i64::MIN } else { *v };
                let present = values.iter().flatten();
                let min = present.clone().min_by_key(|v| order(v))?;
                let max = present.max_by_key(|v| order(v))?;
                Some((*min, *max))
            };
            let indexes = metadata.column_index().expect("a column index");
            let offsets = metadata.offset_index().expect("an offset index");
            for (c, (_, values, unsigned)) in columns.iter().enumerate() {
                // A 32-bit column's statistics are 32 bits: an unsigned one's read back
                // zero-extended, as its values are above.
                let widen = |v: i32| match unsigned {
                    true => i64::from(v as u32),
                    false => i64::from(v),
                };
                let as_i64 = |b: Option<&[u8]>| {
                    b.map(|b| match <[u8; 4]>::try_from(b) {
                        Ok(four) => widen(i32::from_le_bytes(four)),
                        Err(_) => i64::from_le_bytes(b.try_into().expect("8 bytes")),
                    })
                };
                let stats = metadata.row_group(0).column(c).statistics().expect("statistics");
                let chunk_bounds =
                    as_i64(stats.min_bytes_opt()).zip(as_i64(stats.max_bytes_opt()));
                prop_assert_eq!(chunk_bounds, bounds(values, *unsigned), "column {}", c);
                let pages = offsets[0][c].page_locations();
                for (p, page) in pages.iter().enumerate() {
                    let from = page.first_row_index as usize;
                    let to = pages.get(p + 1).map_or(values.len(), |n| n.first_row_index as usize);
                    let expected = bounds(&values[from..to], *unsigned);
                    let read = match &indexes[0][c] {
                        ColumnIndexMetaData::INT64(index) => index.min_value(p).copied().zip(index.max_value(p).copied()),
                        ColumnIndexMetaData::INT32(index) => index
                            .min_value(p)
                            .map(|v| widen(*v))
                            .zip(index.max_value(p).map(|v| widen(*v))),
                        other => panic!("column {c}: an index of {other:?}"),
                    };
                    prop_assert_eq!(read, expected, "column {} page {} (rows {}..{})", c, p, from, to);
                }
            }
        }
    }

    /// Zeros of both signs and NaNs read back bit for bit through the dictionary of
    /// numbers, whose runs of equal values the store's copy of parquet keys in one step
    /// (vendor/parquet/PATCHED.md, the eighth change): equal as bytes, not by `==`, for
    /// which 0.0 and -0.0 are one value and a NaN none.
    #[test]
    fn float_zeros_and_nans_read_back_bit_for_bit() {
        use arrow::array::Float64Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let quiet = f64::NAN;
        let other_nan = f64::from_bits(quiet.to_bits() | 1);
        let values = [
            0.0, 0.0, -0.0, -0.0, 0.0, quiet, quiet, other_nan, -0.0, 1.5, 1.5, quiet,
        ];
        let batch =
            RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(values.to_vec())) as _)])
                .expect("batch");
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, batch.schema(), Some(test_properties(false)))
                .expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        let read: Vec<u64> = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .expect("reader")
            .build()
            .expect("reader")
            .flat_map(|b| {
                let b = b.expect("batch");
                let column = b
                    .column(0)
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .clone();
                column
                    .values()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect();
        let written: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(read, written);
    }

    /// The batches of `file`, its strings read as `Utf8View`, `batch_size` rows each.
    fn read_as_views(file: &File, batch_size: usize) -> Vec<RecordBatch> {
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        let plain = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().expect("file"))
            .expect("reader")
            .schema()
            .clone();
        let fields = plain.fields().iter().map(|f| match f.data_type() {
            DataType::Utf8 => Field::new(f.name(), DataType::Utf8View, f.is_nullable()),
            _ => f.as_ref().clone(),
        });
        let schema = Arc::new(arrow::datatypes::Schema::new(fields.collect::<Vec<_>>()));
        let options = ArrowReaderOptions::new().with_schema(schema);
        ParquetRecordBatchReaderBuilder::try_new_with_options(
            file.try_clone().expect("file"),
            options,
        )
        .expect("reader")
        .with_batch_size(batch_size)
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
    }

    /// A column whose dictionary holds only values of 12 bytes or fewer (a status) is
    /// read as views that reference no buffer, and compares as it reads; one with
    /// longer values (a service) keeps its dictionary's buffer.
    #[test]
    fn short_dictionary_strings_read_as_views_without_a_buffer() {
        use arrow::array::{Scalar, StringArray, StringViewArray};
        use arrow::compute::kernels::cmp::eq;
        let status = ["UNSET", "OK", "ERROR", "OK"];
        let statuses: Vec<&str> = (0..10_000).map(|i| status[i % 7 % 4]).collect();
        let services: Vec<String> = (0..10_000)
            .map(|i| format!("agent-service-{:02}", i % 13))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("status", Arc::new(StringArray::from(statuses.clone())) as _),
            (
                "service",
                Arc::new(StringArray::from(services.clone())) as _,
            ),
        ])
        .expect("batch");
        let file = written_with_store_settings(&batch);
        let (mut read_status, mut read_services, mut errors) = (Vec::new(), Vec::new(), 0);
        let error = StringViewArray::from(vec!["ERROR"]);
        for batch in read_as_views(&file, 1024) {
            let status = batch.column(0).as_string_view();
            let service = batch.column(1).as_string_view();
            assert!(
                status.data_buffers().is_empty(),
                "{:?}",
                status.data_buffers()
            );
            assert!(!service.data_buffers().is_empty());
            errors += eq(status, &Scalar::new(&error)).expect("eq").true_count();
            read_status.extend(status.iter().map(|v| v.unwrap_or_default().to_owned()));
            read_services.extend(service.iter().map(|v| v.unwrap_or_default().to_owned()));
        }
        assert_eq!(read_status, statuses);
        assert_eq!(read_services, services);
        assert_eq!(errors, statuses.iter().filter(|s| **s == "ERROR").count());
    }

    /// `batch` written to a temporary file with the store's default settings.
    fn written_with_store_settings(batch: &RecordBatch) -> File {
        let props = writer_properties(&StorageConfig::default()).expect("default settings");
        let file = tempfile::tempfile().expect("temporary file");
        let mut writer =
            ArrowWriter::try_new(file.try_clone().expect("file"), batch.schema(), Some(props))
                .expect("writer");
        writer.write(batch).expect("write");
        writer.close().expect("close");
        file
    }

    /// A file written with the store's settings (zstd) and read back.
    fn parquet_round_trip() {
        use arrow::array::Int64Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let values = Int64Array::from_iter_values(0..10_000);
        let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).expect("batch");
        let file = written_with_store_settings(&batch);
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader")
            .build()
            .expect("reader");
        let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        assert_eq!(rows, 10_000);
    }
}
