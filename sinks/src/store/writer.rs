//! Buffered batches → Parquet files, one per partition hour, written atomically.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use swarmscope_processors::schema::Table;

use super::layout::{partition_dir, StoredFile, NANOS_PER_HOUR};
use super::StorageConfig;
use crate::{Error, Result};

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn writer_properties(config: &StorageConfig) -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .build())
}

/// The partition hour of every row: the table's time column, and for logs without a
/// `time` their `observed_time`; rows with neither land in the epoch's hour.
fn row_hours(table: Table, batch: &RecordBatch) -> Result<Vec<i64>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_primitive::<TimestampNanosecondType>().clone())
            .ok_or_else(|| {
                Error::Arrow(arrow::error::ArrowError::SchemaError(format!("no {name}")))
            })
    };
    let primary = column(table.time_column())?;
    let fallback = match table {
        Table::Logs => Some(column("observed_time")?),
        _ => None,
    };
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

/// Writes `batches` of `table` under `data_dir`, one new file per partition hour.
/// Blocking; call from a blocking thread.
pub(crate) fn write_partitioned(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    props: &WriterProperties,
) -> Result<Vec<StoredFile>> {
    let batch = concat_batches(&table.schema(), batches)?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let hours = row_hours(table, &batch)?;
    let mut distinct = hours.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let table_dir = data_dir.join(table.name());
    let mut written = Vec::with_capacity(distinct.len());
    for hour in distinct {
        let part = if written.is_empty() && hours.iter().all(|h| *h == hour) {
            batch.clone()
        } else {
            let mask: BooleanArray = hours.iter().map(|h| Some(*h == hour)).collect();
            filter_record_batch(&batch, &mask)?
        };
        let dir = partition_dir(&table_dir, hour);
        let path = write_file(&dir, &part, props)?;
        written.push(StoredFile { path, hour });
    }
    Ok(written)
}

/// Writes one file as `<name>.tmp`, syncs it, renames it into place and syncs the
/// directory, so that the file is either whole or absent after a crash.
fn write_file(
    dir: &Path,
    batch: &RecordBatch,
    props: &WriterProperties,
) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("part-{millis}-{}-{seq:06}.parquet", std::process::id());
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp_path).map_err(Error::io(&tmp_path))?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&batch.schema()), Some(props.clone()))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(Error::io(&tmp_path))?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(Error::io(&final_path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))?;
    Ok(final_path)
}
