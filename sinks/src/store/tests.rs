use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use swarmscope_processors::convert::spans_from_otlp;

use super::*;

pub(super) const HOUR: u64 = 3_600_000_000_000;

pub(super) fn spans_at(starts: &[u64]) -> RecordBatch {
    spans_with_status(starts, |_| status::StatusCode::Unset as i32)
}

/// [`spans_at`], the status code of the `i`th span `status(i)`.
fn spans_with_status(starts: &[u64], status: impl Fn(usize) -> i32) -> RecordBatch {
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, s)| Span {
            status: Some(Status {
                code: status(i),
                ..Default::default()
            }),
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{i}"),
            start_time_unix_nano: *s,
            end_time_unix_nano: s + 1000,
            attributes: vec![KeyValue {
                key: "coordination.work.id".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("W-{s}"))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    spans_from_otlp(&request).unwrap().batch
}

async fn store(dir: &Path) -> ParquetStore {
    ParquetStore::open(StorageConfig {
        data_dir: dir.to_owned(),
        ..StorageConfig::default()
    })
    .await
    .unwrap()
}

fn rows(snapshot: &Snapshot) -> usize {
    snapshot.batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test]
async fn appended_rows_are_visible_before_and_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let base = 1_700_000_000 * 1_000_000_000u64;
    store
        .append(Table::SPANS, spans_at(&[base, base + 1, base + HOUR]))
        .await
        .unwrap();
    let before = store.snapshot(Table::SPANS).unwrap();
    assert_eq!(rows(&before), 3);
    assert!(before.files.is_empty());

    store.flush().await.unwrap();
    let after = store.snapshot(Table::SPANS).unwrap();
    assert_eq!(rows(&after), 0);
    assert_eq!(after.files.len(), 2, "one file per partition hour");
    let names: Vec<String> = after
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert!(
        names[0].starts_with("spans/date=2023-11-14/hour=22/part-"),
        "{names:?}"
    );
    assert!(
        names[1].starts_with("spans/date=2023-11-14/hour=23/part-"),
        "{names:?}"
    );
    assert_eq!(store.buffered_rows(Table::SPANS), 0);
}

#[tokio::test]
async fn reopening_finds_the_files_and_removes_unfinished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    s.append(Table::SPANS, spans_at(&[5 * HOUR])).await.unwrap();
    s.flush().await.unwrap();
    let file = s.snapshot(Table::SPANS).unwrap().files[0].path.clone();
    let leftover = file.with_extension("parquet.tmp");
    std::fs::write(&leftover, b"half a file").unwrap();
    drop(s);

    let reopened = store(dir.path()).await;
    let snap = reopened.snapshot(Table::SPANS).unwrap();
    assert_eq!(snap.files.len(), 1);
    assert_eq!(snap.files[0].path, file);
    assert_eq!(
        snap.files[0].time_range(),
        (5 * HOUR as i64, 6 * HOUR as i64)
    );
    assert!(!leftover.exists());
}

#[tokio::test]
async fn read_only_store_sees_new_files_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let writer = store(dir.path()).await;
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert!(reader.snapshot(Table::SPANS).unwrap().files.is_empty());
    writer
        .append(Table::SPANS, spans_at(&[HOUR]))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    // A reader sees the new commit once it refreshes (every query does).
    assert!(reader.snapshot(Table::SPANS).unwrap().files.is_empty());
    reader.refresh().await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 1);
    assert!(matches!(
        reader.append(Table::SPANS, spans_at(&[HOUR])).await,
        Err(Error::ReadOnly)
    ));
    assert!(ParquetStore::open_read_only(dir.path().join("missing"))
        .await
        .is_err());
}

#[tokio::test]
async fn full_buffer_wakes_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(StorageConfig {
        data_dir: dir.path().to_owned(),
        flush_rows: 2,
        flush_interval_ms: 3_600_000,
        // The spans are from 1970; keep them.
        retention_hours: 1_000_000,
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn(store.clone().run_flusher(async {
        let _ = stopped.await;
    }));
    // The interval's first tick fires at once; wait for the buffer to be written by
    // the fill-triggered flush instead.
    store
        .append(Table::SPANS, spans_at(&[HOUR, HOUR + 1]))
        .await
        .unwrap();
    let mut waited = 0;
    while store.snapshot(Table::SPANS).unwrap().files.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 1000, "flusher never wrote the full buffer");
    }
    stop.send(()).unwrap();
    flusher.await.unwrap();
    assert_eq!(store.buffered_rows(Table::SPANS), 0);
}

#[test]
fn config_errors_name_the_key() {
    let bad = StorageConfig {
        flush_rows: 0,
        ..StorageConfig::default()
    };
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "storage.flush_rows must be > 0, got 0"
    );
}

fn total_rows(store: &ParquetStore, table: Table) -> usize {
    let snap = store.snapshot(table).unwrap();
    let in_files: usize = snap
        .files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(&f.path).unwrap();
            parquet::file::reader::SerializedFileReader::new(file)
                .map(|r| {
                    use parquet::file::reader::FileReader;
                    r.metadata().file_metadata().num_rows() as usize
                })
                .unwrap()
        })
        .sum();
    in_files + rows(&snap)
}

#[tokio::test]
async fn acknowledged_rows_survive_a_crash_and_replay_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    s.append(Table::SPANS, spans_at(&[HOUR, HOUR + 1]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    s.append(Table::SPANS, spans_at(&[HOUR + 2, HOUR + 3, HOUR + 4]))
        .await
        .unwrap();
    // A crash: the store goes away without a flush.
    drop(s);

    let reopened = store(dir.path()).await;
    assert_eq!(
        reopened.recovery().rows,
        3,
        "only the unflushed rows are replayed"
    );
    assert_eq!(total_rows(&reopened, Table::SPANS), 5);
    drop(reopened);

    // Replay is idempotent: crashing again before a flush replays the same rows once.
    let again = store(dir.path()).await;
    assert_eq!(again.recovery().rows, 3);
    assert_eq!(total_rows(&again, Table::SPANS), 5);
    again.flush().await.unwrap();
    drop(again);

    let flushed = store(dir.path()).await;
    assert_eq!(flushed.recovery().rows, 0);
    assert_eq!(total_rows(&flushed, Table::SPANS), 5);
}

#[tokio::test]
async fn a_crash_between_the_commit_and_the_logs_truncation_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    crash_between_the_commit_and_the_logs_truncation(StorageConfig {
        data_dir: dir.path().to_owned(),
        ..StorageConfig::default()
    })
    .await;
}

/// Rows of `table` in its committed files (read back from the bucket for tables on
/// object storage) plus those buffered.
pub(super) async fn stored_rows(store: &ParquetStore, table: Table) -> usize {
    use object_store::ObjectStoreExt;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let snapshot = store.snapshot(table).unwrap();
    let table_dir = store.inner.tables_dir.join(table.name());
    let mut rows = rows(&snapshot);
    for file in &snapshot.files {
        let in_file = match store.remote() {
            Some(remote) => {
                let object = remote.object(table, &delta::relative_path(&table_dir, file));
                let bytes = remote
                    .store()
                    .get(&object)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                SerializedFileReader::new(bytes).map(|r| r.metadata().file_metadata().num_rows())
            }
            None => SerializedFileReader::new(std::fs::File::open(&file.path).unwrap())
                .map(|r| r.metadata().file_metadata().num_rows()),
        };
        rows += in_file.unwrap() as usize;
    }
    rows
}

/// The store of `config` committed a flush, and died before its checkpoint was
/// written and the segment deleted: the segment is not replayed.
pub(super) async fn crash_between_the_commit_and_the_logs_truncation(config: StorageConfig) {
    let s = ParquetStore::open(config.clone()).await.unwrap();
    s.append(Table::SPANS, spans_at(&[HOUR, HOUR + 1]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    drop(s);
    // Put the world back to "committed to the table, checkpoint not yet written,
    // segment not yet deleted".
    let wal_dir = config.data_dir.join("_wal");
    let covered = wal::Checkpoint::load(&wal_dir).unwrap().covered_segment;
    std::fs::remove_file(wal_dir.join("checkpoint.json")).unwrap();
    let mut log = wal::Wal::create(&wal_dir, covered, true).unwrap();
    log.write(
        crate::frame::Record::encode(&[(Table::SPANS, &spans_at(&[HOUR, HOUR + 1]))]).unwrap(),
    )
    .unwrap();
    log.sync(true).unwrap();
    drop(log);

    let reopened = ParquetStore::open(config.clone()).await.unwrap();
    assert_eq!(
        reopened.recovery().rows,
        0,
        "the committed segment is not replayed"
    );
    assert_eq!(reopened.recovery().committed_rows, 2);
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 2);
    // New flushes go on after the committed segment, and are replayed when not.
    reopened
        .append(Table::SPANS, spans_at(&[HOUR + 2]))
        .await
        .unwrap();
    drop(reopened);
    let again = ParquetStore::open(config).await.unwrap();
    assert_eq!(again.recovery().rows, 1);
    assert_eq!(stored_rows(&again, Table::SPANS).await, 3);
}

#[tokio::test]
async fn a_crash_between_the_upload_and_the_commit_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    crash_between_the_upload_and_the_commit(StorageConfig {
        data_dir: dir.path().to_owned(),
        ..StorageConfig::default()
    })
    .await;
}

/// Whether `file` of `table` is still stored (on disk, or in the bucket).
async fn exists(store: &ParquetStore, table: Table, file: &StoredFile) -> bool {
    use object_store::ObjectStoreExt;
    match store.remote() {
        Some(remote) => {
            let table_dir = store.inner.tables_dir.join(table.name());
            let object = remote.object(table, &delta::relative_path(&table_dir, file));
            remote.store().head(&object).await.is_ok()
        }
        None => file.path.exists(),
    }
}

/// The store of `config` wrote (and uploaded) a flush's file and died before the
/// commit: the rows come back from the log, once, and vacuum deletes the file.
pub(super) async fn crash_between_the_upload_and_the_commit(config: StorageConfig) {
    let config = StorageConfig {
        vacuum_after: std::time::Duration::ZERO,
        ..config
    };
    let s = ParquetStore::open(config.clone()).await.unwrap();
    let rows = spans_at(&[HOUR, HOUR + 1]);
    s.append(Table::SPANS, rows.clone()).await.unwrap();
    // The flush's file is written (and uploaded), and the process dies before the
    // commit.
    let staged =
        writer::write_partitioned(&s.inner.tables_dir, Table::SPANS, &[rows], &s.inner.props)
            .unwrap();
    staged[0].commit().unwrap();
    let orphan = staged[0].file.clone();
    if let Some(remote) = s.remote() {
        let table_dir = s.inner.tables_dir.join(Table::SPANS.name());
        let relative = delta::relative_path(&table_dir, &orphan);
        remote
            .upload(Table::SPANS, &relative, &orphan.path)
            .await
            .unwrap();
    }
    drop(s);

    let reopened = ParquetStore::open(config).await.unwrap();
    assert_eq!(
        reopened.recovery().rows,
        2,
        "the rows come back from the log"
    );
    assert!(reopened.snapshot(Table::SPANS).unwrap().files.is_empty());
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 2);
    reopened.flush().await.unwrap();
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 2);
    // The upload no commit took is deleted by vacuum.
    assert!(exists(&reopened, Table::SPANS, &orphan).await);
    assert_eq!(reopened.vacuum().await.unwrap(), 1);
    assert!(!exists(&reopened, Table::SPANS, &orphan).await);
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 2);
}

#[tokio::test]
async fn over_the_memory_budget_appends_are_refused_until_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let batch = spans_at(&[HOUR]);
    let size = batch.get_array_memory_size();
    let s = ParquetStore::open(StorageConfig {
        data_dir: dir.path().to_owned(),
        max_buffered_bytes: size * 2,
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    s.memory().admission().unwrap();
    s.append(Table::SPANS, batch.clone()).await.unwrap();
    s.memory().admission().unwrap();
    s.append(Table::SPANS, batch.clone()).await.unwrap();
    assert!(
        matches!(s.memory().admission(), Err(Error::Backpressure { .. })),
        "a batch like the last one would not fit"
    );
    assert!(matches!(
        s.append(Table::SPANS, batch.clone()).await,
        Err(Error::Backpressure { .. })
    ));
    assert_eq!(
        s.buffered_rows(Table::SPANS),
        2,
        "a refused batch is not kept"
    );
    s.flush().await.unwrap();
    assert_eq!(s.buffered_bytes(), 0);
    assert_eq!(s.memory().used(), 0, "a flush gives the budget back");
    s.memory().admission().unwrap();
    s.append(Table::SPANS, batch).await.unwrap();
    assert_eq!(total_rows(&s, Table::SPANS), 3);

    // A batch larger than the whole budget is still taken when nothing is buffered.
    s.flush().await.unwrap();
    let starts: Vec<u64> = (0..2000).map(|i| HOUR + i).collect();
    let big = spans_at(&starts);
    assert!(big.get_array_memory_size() > size * 2);
    s.append(Table::SPANS, big).await.unwrap();
    assert_eq!(total_rows(&s, Table::SPANS), 2003);
}

#[tokio::test]
async fn every_fsync_mode_keeps_rows_across_a_process_crash() {
    for mode in [WalFsync::Always, WalFsync::Interval, WalFsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            data_dir: dir.path().to_owned(),
            wal_fsync: mode,
            ..StorageConfig::default()
        };
        let s = ParquetStore::open(config.clone()).await.unwrap();
        for i in 0..5 {
            s.append(Table::LOGS, logs_at(i)).await.unwrap();
        }
        // The writer thread hands its last bytes to the OS when it stops.
        s.close().unwrap();
        assert!(matches!(
            s.append(Table::LOGS, logs_at(9)).await,
            Err(Error::Closed)
        ));
        drop(s);
        let reopened = ParquetStore::open(config).await.unwrap();
        assert_eq!(total_rows(&reopened, Table::LOGS), 5, "{mode:?}");
    }
}

fn logs_at(i: u64) -> RecordBatch {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: HOUR + i,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    swarmscope_processors::convert::logs_from_otlp(&request)
        .unwrap()
        .batch
}

/// A store whose retention is 24 hours.
async fn store_keeping_a_day(dir: &Path) -> ParquetStore {
    ParquetStore::open(StorageConfig {
        data_dir: dir.to_owned(),
        retention_hours: 24,
        vacuum_after: std::time::Duration::from_secs(3600),
        ..StorageConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn retention_deletes_expired_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_keeping_a_day(dir.path()).await;
    let now = std::time::SystemTime::now();
    let now_nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let day_and_a_half_ago = now_nanos - 36 * HOUR;
    s.append(Table::SPANS, spans_at(&[day_and_a_half_ago, now_nanos]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let before = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(before.len(), 2);

    assert_eq!(s.enforce_retention(now).await.unwrap(), 1);
    let after = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(after.len(), 1);
    assert!(after[0].path.exists());
    assert_eq!(total_rows(&s, Table::SPANS), 1);
    // The expired file stays on disk for readers of older versions until vacuum_after
    // (an hour) has passed.
    let expired = before.iter().find(|f| !after.contains(f)).unwrap();
    assert_eq!(s.vacuum().await.unwrap(), 0);
    assert!(expired.path.exists());
    // Nothing more to do the second time.
    assert_eq!(s.enforce_retention(now).await.unwrap(), 0);
}

/// A store where four small files make a partition worth compacting.
async fn compacting_store(dir: &Path) -> ParquetStore {
    compacting_store_of_row_groups(dir, StorageConfig::default().row_group_rows).await
}

async fn compacting_store_of_row_groups(dir: &Path, row_group_rows: usize) -> ParquetStore {
    ParquetStore::open(StorageConfig {
        data_dir: dir.to_owned(),
        compaction_min_files: 4,
        row_group_rows,
        ..StorageConfig::default()
    })
    .await
    .unwrap()
}

/// Five flushes of `per_flush` rows into one partition hour, and one in the next.
async fn five_small_files(s: &ParquetStore, per_flush: u64) {
    for f in 0..5u64 {
        let starts: Vec<u64> = (0..per_flush).map(|i| HOUR + f * 1000 + i).collect();
        s.append(Table::SPANS, spans_at(&starts)).await.unwrap();
        s.flush().await.unwrap();
    }
    s.append(Table::SPANS, spans_at(&[2 * HOUR])).await.unwrap();
    s.flush().await.unwrap();
}

fn parquet_files_on_disk(dir: &Path) -> Vec<PathBuf> {
    layout::scan_table(dir, Table::SPANS, false)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect()
}

/// The row groups of the merged files, read from their footer.
fn row_group_rows(path: &Path) -> Vec<i64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows())
        .collect()
}

/// The exact start of every row of a stored file (`start_time_unix_nano`), in file
/// order, checking that each batch reads back with the table's stored Arrow schema
/// (timestamps in UTC microseconds), that `start_time` agrees and that each row's
/// attribute reads back as [`spans_at`] wrote it.
fn start_times_with_the_table_schema(path: &Path) -> Vec<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut starts = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.schema(), Table::SPANS.stored_schema());
        let exact = batch.column_by_name("start_time_unix_nano").unwrap();
        let micros = batch.column_by_name("start_time").unwrap();
        let exact = exact.as_primitive::<Int64Type>().values();
        let micros = micros.as_primitive::<TimestampMicrosecondType>().values();
        for (ns, us) in exact.iter().zip(micros.iter()) {
            assert_eq!(ns / 1000, *us);
        }
        let attributes = batch.column_by_name("attributes").unwrap().as_map();
        for (row, ns) in exact.iter().enumerate() {
            let values = attributes.value(row);
            assert_eq!(
                values.column(1).as_string::<i32>().value(0),
                format!("W-{ns}")
            );
        }
        starts.extend(exact.iter());
    }
    starts
}

#[tokio::test]
async fn compaction_merges_a_partitions_small_files_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacting_store(dir.path()).await;
    five_small_files(&s, 3).await;
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 6);

    assert_eq!(s.compact().await.unwrap(), 5);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(total_rows(&s, Table::SPANS), 16);
    // Row groups this small are decoded and written again as one.
    assert_eq!(row_group_rows(&files[0].path), vec![15]);
    // The inputs stay on disk, out of the table, until vacuum.
    assert_eq!(parquet_files_on_disk(dir.path()).len(), 7);
    // Nothing left to merge; a reopened store sees the same rows.
    assert_eq!(s.compact().await.unwrap(), 0);
    drop(s);
    assert_eq!(
        total_rows(&compacting_store(dir.path()).await, Table::SPANS),
        16
    );
}

/// A partition still being written waits for `compaction_min_files` files of a tier; a
/// quiet one is merged whole, whatever the number of its files.
#[tokio::test]
async fn a_quiet_partition_is_merged_below_min_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = |quiet_after| StorageConfig {
        data_dir: dir.path().to_owned(),
        compaction_quiet_after: quiet_after,
        ..StorageConfig::default()
    };
    let s = ParquetStore::open(config(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    five_small_files(&s, 3).await;
    assert_eq!(s.compact().await.unwrap(), 0);
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 6);
    drop(s);

    // The same files, quiet from the moment they are written: the next hour's one
    // file is laid out too.
    let s = ParquetStore::open(config(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(s.compact().await.unwrap(), 6);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(row_group_rows(&files[0].path), vec![15]);
    assert_eq!(total_rows(&s, Table::SPANS), 16);
    // One file a partition: nothing more to merge.
    assert_eq!(s.compact().await.unwrap(), 0);
}

/// Row groups of a flush's size are copied, not decoded and encoded again: the merged
/// file has the inputs' row groups, and keeps what readers use of them (the Arrow
/// schema, statistics, page indexes, the bloom filter on `trace_id`).
#[tokio::test]
async fn large_row_groups_are_copied_with_their_indexes() {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};

    let dir = tempfile::tempdir().unwrap();
    // Row groups of 3 rows are at least 16 / COPY_DIVISOR = 1 row: copied.
    let s = compacting_store_of_row_groups(dir.path(), 16).await;
    five_small_files(&s, 3).await;
    let inputs: Vec<PathBuf> = s.snapshot(Table::SPANS).unwrap().files[..5]
        .iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(s.compact().await.unwrap(), 5);
    let merged = s.snapshot(Table::SPANS).unwrap().files[0].path.clone();
    assert!(!inputs.contains(&merged));
    assert_eq!(row_group_rows(&merged), vec![3; 5]);
    assert_eq!(total_rows(&s, Table::SPANS), 16);

    // Every row, with the table's own Arrow schema (timestamps in UTC).
    let starts = start_times_with_the_table_schema(&merged);
    let expected: Vec<i64> = (0..5u64)
        .flat_map(|f| (0..3u64).map(move |i| (HOUR + f * 1000 + i) as i64))
        .collect();
    assert_eq!(starts, expected);

    // Statistics and page indexes where the flush wrote them.
    let file = std::fs::File::open(&merged).unwrap();
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .unwrap();
    let start_time = |g: usize| {
        metadata
            .row_group(g)
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "start_time_unix_nano")
            .unwrap()
    };
    for g in 0..5 {
        let c = &metadata.row_group(g).columns()[start_time(g)];
        let min = c
            .statistics()
            .and_then(|s| s.min_bytes_opt())
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
        assert_eq!(min, Some(expected[g * 3]), "row group {g}");
    }
    assert_eq!(metadata.offset_index().map(|o| o.len()), Some(5));
    // A reader that finds pages by the offset index finds the copied ones.
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let last =
        ParquetRecordBatchReaderBuilder::try_new_with_options(file.try_clone().unwrap(), options)
            .unwrap()
            .with_row_groups(vec![4])
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
    let column = last.column_by_name("start_time_unix_nano").unwrap();
    assert_eq!(
        column.as_primitive::<Int64Type>().values().as_ref(),
        &expected[12..]
    );

    assert_trace_id_bloom_filters(&merged);
}

/// A merge of large row groups and small ones (under load: the first flush, the tail of
/// one split at an hour boundary) copies the large ones and re-encodes only the small
/// ones, together, into full row groups.
#[tokio::test]
async fn only_the_small_row_groups_of_a_merge_are_encoded_again() {
    let dir = tempfile::tempdir().unwrap();
    // Row groups of 32 rows; 2 rows (32 / COPY_DIVISOR) or more are copied.
    let s = compacting_store_of_row_groups(dir.path(), 32).await;
    // 36 flushes of 1 row, but for the 11th and the 31st, of 2 rows.
    let mut expected = Vec::new();
    for f in 0..36u64 {
        let rows = if f == 10 || f == 30 { 2 } else { 1 };
        let starts: Vec<u64> = (0..rows).map(|i| HOUR + f * 1000 + i).collect();
        expected.extend(starts.iter().map(|t| *t as i64));
        s.append(Table::SPANS, spans_at(&starts)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.compact().await.unwrap(), 36);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 1, "{files:?}");
    // The 2-row groups as they were; the 1-row ones as one full row group (32 rows)
    // when it fills, then the rest (2 rows) at the end.
    assert_eq!(row_group_rows(&files[0].path), vec![2, 2, 32, 2]);

    let mut starts = start_times_with_the_table_schema(&files[0].path);
    starts.sort_unstable();
    assert_eq!(starts, expected);
    assert_trace_id_bloom_filters(&files[0].path);
    // A reopened store reads the same rows.
    drop(s);
    assert_eq!(
        total_rows(
            &compacting_store_of_row_groups(dir.path(), 24).await,
            Table::SPANS
        ),
        expected.len()
    );
}

/// The settings of a store in `dir` whose partitions are quiet the given time after
/// their last write: merged while written from `min_files` files, laid out in row
/// groups of `row_group_rows`.
fn quiet_after(
    dir: &Path,
    min_files: usize,
    row_group_rows: usize,
) -> impl Fn(std::time::Duration) -> StorageConfig + '_ {
    move |quiet_after| StorageConfig {
        data_dir: dir.to_owned(),
        compaction_min_files: min_files,
        compaction_quiet_after: quiet_after,
        row_group_rows,
        ..StorageConfig::default()
    }
}

/// `flushes` flushed one by one into a store in `dir`, then laid out once quiet in row
/// groups of `row_group_rows`: the store, and the path of its one laid-out file.
async fn laid_out(
    dir: &Path,
    row_group_rows: usize,
    flushes: Vec<RecordBatch>,
) -> (ParquetStore, PathBuf) {
    let config = quiet_after(dir, 1000, row_group_rows);
    let s = ParquetStore::open(config(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    let files = flushes.len();
    for batch in flushes {
        s.append(Table::SPANS, batch).await.unwrap();
        s.flush().await.unwrap();
    }
    drop(s);
    let s = ParquetStore::open(config(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(s.compact().await.unwrap(), files);
    let laid_out = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(laid_out.len(), 1, "{laid_out:?}");
    assert!(laid_out[0].is_laid_out(), "{laid_out:?}");
    let path = laid_out[0].path.clone();
    (s, path)
}

/// A quiet partition is laid out for reading once: the row groups merges copied while
/// it was written (a flush's each) are written again as full ones, in a file whose
/// name says so, and it is left alone after; data coming late is merged into it, its
/// row groups of at least half the size copied.
#[tokio::test]
async fn a_quiet_partition_is_laid_out_in_full_row_groups_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = quiet_after(dir.path(), 4, 16);
    let s = ParquetStore::open(config(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    five_small_files(&s, 3).await;
    // Merged while being written: the flushes' row groups copied as they are.
    assert_eq!(s.compact().await.unwrap(), 5);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(row_group_rows(&files[0].path), vec![3; 5]);
    assert!(!files.iter().any(StoredFile::is_laid_out), "{files:?}");
    drop(s);

    // Quiet: each partition's one file is written again, in full row groups.
    let s = ParquetStore::open(config(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(s.compact().await.unwrap(), 2);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(StoredFile::is_laid_out), "{files:?}");
    assert!(files[0]
        .path
        .to_string_lossy()
        .ends_with("-optimized.parquet"));
    assert_eq!(row_group_rows(&files[0].path), vec![15]);
    let expected: Vec<i64> = (0..5u64)
        .flat_map(|f| (0..3u64).map(move |i| (HOUR + f * 1000 + i) as i64))
        .collect();
    assert_eq!(start_times_with_the_table_schema(&files[0].path), expected);
    assert_trace_id_bloom_filters(&files[0].path);
    assert_eq!(total_rows(&s, Table::SPANS), 16);
    // Laid out: nothing more to do.
    assert_eq!(s.compact().await.unwrap(), 0);

    // Late data, 10 rows then 3: merged in; the row groups of at least half of 16
    // rows are copied, the 3 rows written again.
    for (f, rows) in [(5u64, 10u64), (6, 3)] {
        let starts: Vec<u64> = (0..rows).map(|i| HOUR + f * 1000 + i).collect();
        s.append(Table::SPANS, spans_at(&starts)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.compact().await.unwrap(), 3);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].is_laid_out());
    assert_eq!(row_group_rows(&files[0].path), vec![15, 10, 3]);
    assert_eq!(total_rows(&s, Table::SPANS), 29);
    assert_eq!(s.compact().await.unwrap(), 0);
}

/// A quiet partition's layout groups each row group's spans by status (`ERROR`, `OK`,
/// `UNSET`), each status's in the order they came, with page statistics on
/// `status_code`: the pages that may hold errors are the errors' and one more at most.
#[tokio::test]
async fn a_quiet_partitions_layout_groups_spans_by_status() {
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;

    let dir = tempfile::tempdir().unwrap();
    let status = |start: u64| match start % 20 {
        0 => status::StatusCode::Error,
        1..=6 => status::StatusCode::Ok,
        _ => status::StatusCode::Unset,
    };
    // Three flushes, each under half a row group (so written again, not copied), the
    // third's rows split between the two row groups laid out.
    let mut written = Vec::new();
    let mut flushes = Vec::new();
    for f in 0..3u64 {
        let starts: Vec<u64> = (0..20_000).map(|i| HOUR + f * 100_000 + i).collect();
        flushes.push(spans_with_status(&starts, |i| status(starts[i]) as i32));
        written.extend(starts);
    }
    let (_store, path) = laid_out(dir.path(), 50_000, flushes).await;
    assert_eq!(row_group_rows(&path), vec![50_000, 10_000]);

    // Every row once; in each row group, by status, then in the order they came.
    let starts = start_times_with_the_table_schema(&path);
    let mut expected: Vec<u64> = Vec::new();
    for group in written.chunks(50_000) {
        for wanted in ["STATUS_CODE_ERROR", "STATUS_CODE_OK", "STATUS_CODE_UNSET"] {
            expected.extend(group.iter().filter(|s| status(**s).as_str_name() == wanted));
        }
    }
    let expected: Vec<i64> = expected.into_iter().map(|s| s as i64).collect();
    assert_eq!(starts.len(), expected.len());
    let first_out_of_place = starts.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_out_of_place, None, "rows out of place");

    // The pages of `status_code` that may hold errors, by their statistics.
    let file = std::fs::File::open(&path).unwrap();
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .unwrap();
    let column = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "status_code")
        .unwrap();
    for g in 0..2 {
        let rows = metadata.row_group(g).num_rows();
        let ColumnIndexMetaData::BYTE_ARRAY(index) = &metadata.column_index().unwrap()[g][column]
        else {
            panic!("no statistics on status_code's pages");
        };
        let pages = metadata.offset_index().unwrap()[g][column].page_locations();
        assert!(g == 1 || pages.len() > 1, "{pages:?}");
        let mut may_hold_errors = 0;
        for (p, page) in pages.iter().enumerate() {
            let end = pages.get(p + 1).map_or(rows, |next| next.first_row_index);
            let (min, max) = (index.min_value(p).unwrap(), index.max_value(p).unwrap());
            if min <= &b"ERROR"[..] && &b"ERROR"[..] <= max {
                may_hold_errors += end - page.first_row_index;
            }
        }
        let errors = rows / 20;
        assert!(
            errors <= may_hold_errors && may_hold_errors <= errors + 20_000,
            "{may_hold_errors} rows of {rows} may hold errors"
        );
    }
}

/// A status column of more values than a status has (codes no version of OTLP
/// defines, kept as numbers) is not grouped: the layout keeps the order rows came in.
#[tokio::test]
async fn a_layout_keeps_the_order_of_spans_of_many_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let starts: Vec<u64> = (0..30).map(|i| HOUR + i).collect();
    let flushes = starts
        .chunks(10)
        .map(|flush| spans_with_status(flush, |i| 10 - i as i32))
        .collect();
    let (_store, path) = laid_out(dir.path(), 100, flushes).await;
    assert_eq!(row_group_rows(&path), vec![30]);
    let expected: Vec<i64> = starts.iter().map(|s| *s as i64).collect();
    assert_eq!(start_times_with_the_table_schema(&path), expected);
}

#[tokio::test]
async fn a_merges_inputs_are_vacuumed_once_vacuum_after_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacting_store(dir.path()).await;
    five_small_files(&s, 2).await;
    let old = s.snapshot(Table::SPANS).unwrap();
    assert_eq!(s.compact().await.unwrap(), 5);
    // New snapshots see the merged file; an older one's files still exist.
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 2);
    assert!(old.files.iter().all(|f| f.path.exists()));
    assert_eq!(s.vacuum().await.unwrap(), 0, "younger than vacuum_after");
    drop(s);

    let config = StorageConfig {
        data_dir: dir.path().to_owned(),
        compaction_min_files: 4,
        vacuum_after: std::time::Duration::ZERO,
        ..StorageConfig::default()
    };
    let s = ParquetStore::open(config).await.unwrap();
    assert_eq!(s.vacuum().await.unwrap(), 5);
    assert_eq!(parquet_files_on_disk(dir.path()).len(), 2);
    assert_eq!(total_rows(&s, Table::SPANS), 11);
}

#[tokio::test]
async fn a_reader_sees_a_merges_output_or_its_inputs_never_both() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacting_store(dir.path()).await;
    five_small_files(&s, 2).await;
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    let rows_read = |r: &ParquetStore| {
        r.snapshot(Table::SPANS)
            .unwrap()
            .files
            .iter()
            .map(|f| row_group_rows(&f.path).iter().sum::<i64>())
            .sum::<i64>()
    };
    assert_eq!(rows_read(&reader), 11);
    s.compact().await.unwrap();
    // Before it refreshes, the reader holds the version before the merge, whose files
    // are all still there; after, the version with the merged file.
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 6);
    assert_eq!(rows_read(&reader), 11);
    reader.refresh().await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 2);
    assert_eq!(rows_read(&reader), 11);
    assert_eq!(parquet_files_on_disk(dir.path()).len(), 7);
}

#[tokio::test]
async fn a_merge_interrupted_before_its_commit_leaves_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let s = compacting_store(dir.path()).await;
    five_small_files(&s, 2).await;
    let inputs: Vec<StoredFile> = s.snapshot(Table::SPANS).unwrap().files[..5].to_vec();
    // A merge's output written, then a crash before its commit.
    let merge = compact::Merge {
        inputs,
        quiet: false,
    };
    let pending = compact::merge(Table::SPANS, &merge, &s.inner.props).unwrap();
    pending.commit().unwrap();
    drop(s);

    let reopened = ParquetStore::open(StorageConfig {
        data_dir: dir.path().to_owned(),
        compaction_min_files: 4,
        vacuum_after: std::time::Duration::ZERO,
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(reopened.snapshot(Table::SPANS).unwrap().files.len(), 6);
    assert_eq!(total_rows(&reopened, Table::SPANS), 11);
    assert_eq!(reopened.vacuum().await.unwrap(), 1);
    assert!(!pending.file.path.exists());
    assert_eq!(parquet_files_on_disk(dir.path()).len(), 6);
}

/// Checks that every row group of the file at `path` has a bloom filter on `trace_id`
/// that holds the test spans' trace id and not another.
fn assert_trace_id_bloom_filters(path: &Path) {
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

    let options = ReadOptionsBuilder::new()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let file = std::fs::File::open(path).unwrap();
    let reader = SerializedFileReader::new_with_options(file, options).unwrap();
    assert!(reader.num_row_groups() > 0);
    for g in 0..reader.num_row_groups() {
        let row_group = reader.get_row_group(g).unwrap();
        let column = row_group
            .metadata()
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "trace_id")
            .unwrap();
        let filter = row_group
            .get_column_bloom_filter(column)
            .unwrap_or_else(|| panic!("row group {g}: no bloom filter on trace_id"));
        assert!(filter.check("01010101010101010101010101010101"));
        assert!(!filter.check("02020202020202020202020202020202"));
    }
}

#[tokio::test]
async fn stored_files_carry_a_bloom_filter_on_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    s.append(Table::SPANS, spans_at(&[HOUR, HOUR + 1]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let snap = s.snapshot(Table::SPANS).unwrap();
    assert_eq!(snap.files.len(), 1);
    assert_trace_id_bloom_filters(&snap.files[0].path);
}

/// A flushed file: zstd; min/max statistics on the columns readers prune with (times
/// and numbers), none on strings (whose min and max span everything a flush holds) or
/// nested leaves; random ids without a dictionary but with the bloom filter on
/// `trace_id`, span ids with their lengths apart (`DELTA_LENGTH_BYTE_ARRAY`) and read
/// back as written; other strings dictionary-encoded; times and durations
/// delta-encoded.
#[tokio::test]
async fn flushed_files_carry_statistics_where_readers_prune() {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let base = 1_700_000_000 * 1_000_000_000u64;
    let starts: Vec<u64> = (0..50).map(|i| base + i).collect();
    store.append(Table::SPANS, spans_at(&starts)).await.unwrap();
    store.flush().await.unwrap();
    let files = store.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 1);
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0].path).unwrap()).unwrap();
    let row_group = reader.metadata().row_group(0);
    let column = |path: &str| {
        row_group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == path)
            .unwrap_or_else(|| panic!("no column {path}"))
    };
    assert!(column("start_time")
        .statistics()
        .is_some_and(|s| s.min_bytes_opt().is_some()));
    for pruned in ["start_time", "end_time", "duration_ns", "flags"] {
        let c = column(pruned);
        assert!(c.statistics().is_some(), "{pruned}");
        assert!(matches!(c.compression(), Compression::ZSTD(_)), "{pruned}");
    }
    let map_leaves: Vec<_> = row_group
        .columns()
        .iter()
        .filter(|c| c.column_path().string().starts_with("attributes."))
        .collect();
    assert!(!map_leaves.is_empty());
    for c in map_leaves
        .into_iter()
        .chain(["trace_id", "span_id", "service_name", "name", "status_code"].map(column))
    {
        let path = c.column_path().string();
        assert!(c.statistics().is_none(), "{path}");
    }
    for id in ["trace_id", "span_id"] {
        let encodings: Vec<Encoding> = column(id).encodings().collect();
        assert!(
            !encodings.contains(&Encoding::RLE_DICTIONARY),
            "{id}: {encodings:?}"
        );
    }
    assert!(column("trace_id").bloom_filter_offset().is_some());
    for id in ["span_id", "parent_span_id"] {
        let encodings: Vec<Encoding> = column(id).encodings().collect();
        assert!(
            encodings.contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY),
            "{id}: {encodings:?}"
        );
    }
    let name_encodings: Vec<Encoding> = column("name").encodings().collect();
    assert!(
        name_encodings.contains(&Encoding::RLE_DICTIONARY),
        "{name_encodings:?}"
    );
    for time in [
        "start_time",
        "start_time_unix_nano",
        "end_time",
        "duration_ns",
    ] {
        let encodings: Vec<Encoding> = column(time).encodings().collect();
        assert!(
            encodings.contains(&Encoding::DELTA_BINARY_PACKED)
                && !encodings.contains(&Encoding::RLE_DICTIONARY),
            "{time}: {encodings:?}"
        );
    }
    // The values read back as written.
    assert_eq!(
        start_times_with_the_table_schema(&files[0].path),
        starts.iter().map(|t| *t as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        span_ids(&files[0].path),
        (1..=starts.len() as u64)
            .map(|i| format!("{i:016x}"))
            .collect::<Vec<_>>()
    );
}

/// The `span_id` column of the spans file at `path`, in row order.
fn span_ids(path: &Path) -> Vec<String> {
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["span_id"]);
    let mut ids = Vec::new();
    for batch in builder.with_projection(mask).build().unwrap() {
        let batch = batch.unwrap();
        let column = batch.column(0).as_string::<i32>();
        ids.extend(column.iter().map(|id| id.unwrap().to_owned()));
    }
    ids
}

/// A store's configuration in `dir` whose retention keeps every test timestamp.
fn keeping_every_hour(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_owned(),
        retention_hours: 1_000_000,
        ..StorageConfig::default()
    }
}

#[tokio::test]
async fn a_batch_and_the_rows_derived_from_it_are_logged_and_replayed_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = keeping_every_hour(dir.path());
    let s = ParquetStore::open(config.clone()).await.unwrap();
    s.append_all(vec![
        (Table::SPANS, spans_at(&[HOUR, HOUR + 1])),
        (Table::LOGS, logs_at(1)),
    ])
    .await
    .unwrap();
    assert_eq!(s.buffered_rows(Table::SPANS), 2);
    assert_eq!(s.buffered_rows(Table::LOGS), 1);
    s.close().unwrap();
    drop(s);
    let reopened = ParquetStore::open(config).await.unwrap();
    assert_eq!(reopened.recovery().batches, 2);
    assert_eq!(reopened.recovery().segments, 1);
    assert_eq!(total_rows(&reopened, Table::SPANS), 2);
    assert_eq!(total_rows(&reopened, Table::LOGS), 1);
}

#[tokio::test]
async fn a_request_logged_as_received_replays_as_the_rows_it_was_acknowledged_with() {
    let dir = tempfile::tempdir().unwrap();
    let config = keeping_every_hour(dir.path());
    let s = ParquetStore::open(config.clone()).await.unwrap();
    let request = crate::testing::trace_request(&[3 * HOUR, 4 * HOUR + 5, 4 * HOUR + 6]);
    let converted = swarmscope_processors::convert::spans_from_protobuf(&request)
        .unwrap()
        .unwrap()
        .batch;
    // Retention refused the span of hour 3 at receipt.
    let (spans, _) = from_partition_hour(Table::SPANS, converted, 4).unwrap();
    s.append_request(
        request.clone(),
        4,
        vec![(Table::SPANS, spans.clone()), (Table::LOGS, logs_at(1))],
    )
    .await
    .unwrap();
    // The rows of a request go without it, or it with none.
    assert!(s
        .append_request(request, 4, vec![(Table::LOGS, logs_at(2))])
        .await
        .is_err());
    let buffered = s.snapshot(Table::SPANS).unwrap().batches;
    assert_eq!(buffered, vec![spans.clone()]);
    s.close().unwrap();
    drop(s);

    let reopened = ParquetStore::open(config.clone()).await.unwrap();
    assert_eq!(reopened.recovery().batches, 2);
    assert_eq!(reopened.recovery().rows, 3);
    assert_eq!(reopened.recovery().corrupt_records, 0);
    assert_eq!(
        reopened.snapshot(Table::SPANS).unwrap().batches,
        vec![spans]
    );
    assert_eq!(total_rows(&reopened, Table::LOGS), 1);
    reopened.flush().await.unwrap();
    drop(reopened);
    let flushed = ParquetStore::open(config).await.unwrap();
    assert_eq!(flushed.recovery().rows, 0);
    assert_eq!(stored_rows(&flushed, Table::SPANS).await, 2);
}

#[tokio::test]
async fn rows_older_than_retention_are_split_off_by_their_partition_hour() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_keeping_a_day(dir.path()).await;
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(100 * 24 * 3600 + 1800);
    let now_nanos = 100 * 24 * HOUR + 1800 * 1_000_000_000;
    // The cut-off is the partition hour retention deletes below: 24 hours before this
    // one began, so a row 24.4 hours old stays and a row 25 hours old goes.
    let batch = spans_at(&[
        now_nanos,
        now_nanos - 24 * HOUR - HOUR / 3,
        now_nanos - 25 * HOUR,
        HOUR,
    ]);
    let (kept, expired) = s.without_expired(Table::SPANS, batch, now).unwrap();
    assert_eq!((kept.num_rows(), expired), (2, 2));
    let fresh = spans_at(&[now_nanos]);
    let (same, none) = s.without_expired(Table::SPANS, fresh.clone(), now).unwrap();
    assert_eq!((same, none), (fresh, 0));
}

/// Every `.parquet` and `.parquet.tmp` file under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
            if entry.is_dir() {
                pending.push(entry);
            } else if entry.to_string_lossy().contains(".parquet") {
                found.push(entry);
            }
        }
    }
    found
}

/// A store buffering two spans and a log record, appended as one record.
async fn store_with_two_spans_and_a_log(dir: &Path) -> ParquetStore {
    let s = store(dir).await;
    s.append_all(vec![
        (Table::SPANS, spans_at(&[HOUR, HOUR + 1])),
        (Table::LOGS, logs_at(0)),
    ])
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn a_table_that_cannot_be_written_holds_back_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_two_spans_and_a_log(dir.path()).await;
    // The spans' partition cannot be made: its directory is taken by a file.
    let blocker = dir.path().join("spans/date=1970-01-01");
    std::fs::write(&blocker, b"not a directory").unwrap();
    assert!(s.flush().await.is_err());
    assert_eq!(s.buffered_rows(Table::SPANS), 2);
    assert!(s.snapshot(Table::SPANS).unwrap().files.is_empty());
    assert_eq!(s.buffered_rows(Table::LOGS), 0);
    assert_eq!(s.snapshot(Table::LOGS).unwrap().files.len(), 1);
    assert_eq!(
        parquet_files(&dir.path().join("spans")),
        Vec::<PathBuf>::new(),
        "no file of the failed table is left"
    );
    // A crash now replays the spans only: the logs' table has their segment.
    drop(s);
    let reopened = store(dir.path()).await;
    assert_eq!(reopened.recovery().rows, 2);
    assert_eq!(reopened.recovery().committed_rows, 1);
    std::fs::remove_file(&blocker).unwrap();
    reopened.flush().await.unwrap();
    assert_eq!(reopened.snapshot(Table::SPANS).unwrap().files.len(), 1);
    drop(reopened);
    let again = store(dir.path()).await;
    assert_eq!(again.recovery().rows, 0, "the flush retired the log");
    assert_eq!(total_rows(&again, Table::SPANS), 2);
    assert_eq!(total_rows(&again, Table::LOGS), 1);
}

#[tokio::test]
async fn a_flush_behind_one_that_could_not_commit_holds_its_rows_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_two_spans_and_a_log(dir.path()).await;
    // The first flush's commit of the spans waits for `fail`, then fails.
    let (fail, gate) = tokio::sync::oneshot::channel();
    *lock(&s.inner.fail_next_commit) = Some((Table::SPANS, gate));
    let first = s.begin_flush().await.unwrap().expect("rows to flush");
    // The next flush takes the rows that arrived meanwhile and writes them while the
    // first one commits.
    s.append(Table::SPANS, spans_at(&[HOUR + 2])).await.unwrap();
    let second = tokio::spawn({
        let s = s.clone();
        async move { s.flush().await }
    });
    while !lock_state(&s.inner, Table::SPANS).buffered.is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        rows(&s.snapshot(Table::SPANS).unwrap()),
        3,
        "rows being flushed are read"
    );
    fail.send(()).unwrap();
    assert!(first.await.unwrap().is_err());
    let held_back = second.await.unwrap().unwrap_err();
    assert!(
        matches!(held_back, Error::HeldBack { table: "spans" }),
        "{held_back}"
    );
    // Nothing of the spans was committed; every row is buffered, in the order it came.
    let snapshot = s.snapshot(Table::SPANS).unwrap();
    assert!(snapshot.files.is_empty());
    let starts: Vec<i64> = snapshot
        .batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("start_time")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::TimestampNanosecondArray>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    let hour = HOUR as i64;
    assert_eq!(starts, vec![hour, hour + 1, hour + 2]);
    assert_eq!(s.buffered_rows(Table::SPANS), 3);
    assert_eq!(
        parquet_files(&dir.path().join("spans")),
        Vec::<PathBuf>::new(),
        "no file of the spans is left"
    );
    assert_eq!(
        s.snapshot(Table::LOGS).unwrap().files.len(),
        1,
        "the logs committed"
    );
    // A crash now replays the three spans, and not the committed log record.
    drop(s);
    let reopened = store(dir.path()).await;
    assert_eq!(reopened.recovery().rows, 3);
    assert_eq!(reopened.recovery().committed_rows, 1);
    reopened.flush().await.unwrap();
    drop(reopened);
    let again = store(dir.path()).await;
    assert_eq!(again.recovery().rows, 0, "the flush retired the log");
    assert_eq!(total_rows(&again, Table::SPANS), 3);
    assert_eq!(total_rows(&again, Table::LOGS), 1);
}

#[tokio::test]
async fn past_fifty_commits_a_checkpoint_is_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    for i in 0..55u64 {
        s.append(Table::SPANS, spans_at(&[HOUR + i])).await.unwrap();
        s.flush().await.unwrap();
    }
    let log = dir.path().join("spans/_delta_log");
    assert!(
        log.join("00000000000000000049.checkpoint.parquet").exists(),
        "{:?}",
        std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 55);
    drop(s);
    let reopened = store(dir.path()).await;
    assert_eq!(reopened.recovery().rows, 0);
    assert_eq!(total_rows(&reopened, Table::SPANS), 55);
}

#[tokio::test]
async fn a_flush_commits_what_delta_rs_would_and_after_another_writers_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let table_dir = dir.path().join("spans");
    s.append(Table::SPANS, spans_at(&[HOUR])).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(commit_versions(&table_dir), vec![0, 1]);
    let first =
        std::fs::read_to_string(table_dir.join("_delta_log/00000000000000000001.json")).unwrap();
    let actions: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let info = &actions[0]["commitInfo"];
    assert_eq!(info["operation"], "WRITE", "{first}");
    assert_eq!(info["operationParameters"]["mode"], "Append", "{first}");
    let add = actions.iter().find_map(|a| a.get("add")).expect("an add");
    let stats: serde_json::Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
    assert_eq!(stats["numRecords"], 1, "{first}");
    assert_eq!(add["partitionValues"]["hour"], "1", "{first}");
    let txn = actions.iter().find_map(|a| a.get("txn")).expect("a txn");
    assert!(
        txn["appId"].as_str().is_some_and(|id| !id.is_empty()),
        "{first}"
    );

    // Another writer adds a copy of that file as version 2, behind the store's back.
    let ours = s.snapshot(Table::SPANS).unwrap().files[0].clone();
    let copy = ours.path.with_file_name("from-another-writer.parquet");
    std::fs::copy(&ours.path, &copy).unwrap();
    let other = loaded_table(&table_dir).await;
    let mut add = delta::tests_support_add(&table_dir, &copy, ours.hour);
    add.data_change = true;
    deltalake_core::kernel::transaction::CommitBuilder::default()
        .with_actions(vec![deltalake_core::kernel::Action::Add(add)])
        .build(
            Some(other.snapshot().unwrap()),
            other.log_store(),
            deltalake_core::protocol::DeltaOperation::Write {
                mode: deltalake_core::protocol::SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .unwrap();

    // The store's next flush finds version 2 taken, reads the table and commits as 3;
    // its files are the table's, the other writer's among them.
    s.append(Table::SPANS, spans_at(&[HOUR + 1])).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(commit_versions(&table_dir), vec![0, 1, 2, 3]);
    let third =
        std::fs::read_to_string(table_dir.join("_delta_log/00000000000000000003.json")).unwrap();
    assert!(third.contains("\"txn\""), "{third}");
    assert_eq!(total_rows(&s, Table::SPANS), 3);
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 3);
    drop(s);
    let reopened = store(dir.path()).await;
    assert_eq!(reopened.recovery().rows, 0, "both flushes were committed");
    assert_eq!(total_rows(&reopened, Table::SPANS), 3);
}

/// The versions of the commits (`NNN.json`) in a table's `_delta_log/`, in order.
fn commit_versions(table_dir: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn past_its_retention_the_log_before_a_checkpoint_is_deleted_and_the_table_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        data_dir: dir.path().to_owned(),
        delta_log_retention: std::time::Duration::ZERO,
        ..StorageConfig::default()
    };
    let s = ParquetStore::open(config.clone()).await.unwrap();
    let table_dir = dir.path().join("spans");
    // Versions 1..=48: no checkpoint yet, nothing is deleted.
    for i in 0..48u64 {
        s.append(Table::SPANS, spans_at(&[HOUR + i])).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(commit_versions(&table_dir), (0..=48).collect::<Vec<_>>());
    // A reader that read the table before the cleanup.
    let early = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(early.snapshot(Table::SPANS).unwrap().files.len(), 48);
    // Version 49 writes the first checkpoint, and the commits before it go; so does
    // version 99 with its own.
    for i in 48..105u64 {
        s.append(Table::SPANS, spans_at(&[HOUR + i])).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(commit_versions(&table_dir), (99..=105).collect::<Vec<_>>());
    let log = table_dir.join("_delta_log");
    assert!(log.join("00000000000000000099.checkpoint.parquet").exists());
    assert!(!log.join("00000000000000000049.checkpoint.parquet").exists());

    // Every reader still reads every row: this process's snapshot, a reader opened
    // now, and the store reopened, which finds every flush committed (its `txn` is in
    // the checkpoint) and replays nothing.
    assert_eq!(total_rows(&s, Table::SPANS), 105);
    early.refresh().await.unwrap();
    assert_eq!(early.snapshot(Table::SPANS).unwrap().files.len(), 105);
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 105);
    drop(s);
    let reopened = ParquetStore::open(config).await.unwrap();
    assert_eq!(reopened.recovery().rows, 0);
    assert_eq!(total_rows(&reopened, Table::SPANS), 105);
    reopened
        .append(Table::SPANS, spans_at(&[HOUR + 200]))
        .await
        .unwrap();
    reopened.flush().await.unwrap();
    reader.refresh().await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 106);
}

/// The Delta table at `table_dir` as delta-rs reads it, at its newest version.
async fn loaded_table(table_dir: &Path) -> deltalake_core::DeltaTable {
    let url = url::Url::from_directory_path(table_dir.canonicalize().unwrap()).unwrap();
    let mut table = deltalake_core::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap();
    table.load().await.unwrap();
    table
}

/// The table properties in the newest commit of `table_dir` that sets any.
async fn table_properties(table_dir: &Path) -> std::collections::HashMap<String, String> {
    let table = loaded_table(table_dir).await;
    table.snapshot().unwrap().metadata().configuration().clone()
}

#[tokio::test]
async fn a_table_carries_the_stores_retentions_and_takes_new_ones_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("spans");
    drop(store(dir.path()).await);
    let properties = table_properties(&table_dir).await;
    let property = |p: &std::collections::HashMap<String, String>, k: &str| p.get(k).cloned();
    assert_eq!(
        property(&properties, "delta.logRetentionDuration").as_deref(),
        Some("interval 600 seconds")
    );
    assert_eq!(
        property(&properties, "delta.deletedFileRetentionDuration").as_deref(),
        Some("interval 3600 seconds")
    );
    assert_eq!(
        property(&properties, "delta.checkpointInterval").as_deref(),
        Some("50")
    );
    // The one column the store writes statistics for.
    assert_eq!(
        property(&properties, "delta.dataSkippingStatsColumns").as_deref(),
        Some("start_time")
    );
    assert_eq!(commit_versions(&table_dir), vec![0]);

    // Opened under other settings, the table takes them in one commit.
    let config = StorageConfig {
        data_dir: dir.path().to_owned(),
        delta_log_retention: std::time::Duration::from_secs(7200),
        ..StorageConfig::default()
    };
    drop(ParquetStore::open(config.clone()).await.unwrap());
    let properties = table_properties(&table_dir).await;
    assert_eq!(
        property(&properties, "delta.logRetentionDuration").as_deref(),
        Some("interval 7200 seconds")
    );
    assert_eq!(commit_versions(&table_dir), vec![0, 1]);
    let second =
        std::fs::read_to_string(table_dir.join("_delta_log/00000000000000000001.json")).unwrap();
    assert!(
        second.contains("\"operation\":\"SET TBLPROPERTIES\""),
        "{second}"
    );
    drop(ParquetStore::open(config).await.unwrap());
    assert_eq!(commit_versions(&table_dir), vec![0, 1], "nothing to change");
}

#[tokio::test]
async fn a_table_whose_creation_was_cut_short_is_created_on_open() {
    let dir = tempfile::tempdir().unwrap();
    // A crash after `_delta_log/` was made, before the first commit was written.
    std::fs::create_dir_all(dir.path().join("spans/_delta_log")).unwrap();
    let reader = ParquetStore::open_read_only(dir.path()).await.unwrap();
    assert!(reader.snapshot(Table::SPANS).unwrap().files.is_empty());
    let s = store(dir.path()).await;
    s.append(Table::SPANS, spans_at(&[HOUR])).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 1);
    reader.refresh().await.unwrap();
    assert_eq!(reader.snapshot(Table::SPANS).unwrap().files.len(), 1);
}

#[tokio::test]
async fn reopening_a_store_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let commits = |table: &str| {
        std::fs::read_dir(dir.path().join(table).join("_delta_log"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count()
    };
    drop(store(dir.path()).await);
    assert_eq!(commits("spans"), 1, "CREATE TABLE");
    drop(store(dir.path()).await);
    assert_eq!(
        commits("spans"),
        1,
        "the schema is the table's: nothing to evolve"
    );
    assert_eq!(commits("logs"), 1);
}

#[tokio::test]
async fn a_table_written_by_an_older_version_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    // The spans table as a version without its last column would have made it.
    let mut older = delta::delta_columns(Table::SPANS).unwrap();
    let partitions = older.split_off(older.len() - 2);
    let dropped = older.pop().unwrap();
    older.extend(partitions);
    let table_dir = dir.path().join("spans");
    std::fs::create_dir_all(&table_dir).unwrap();
    let url = url::Url::from_directory_path(table_dir.canonicalize().unwrap()).unwrap();
    deltalake_core::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(older)
        .with_partition_columns(["date", "hour"])
        .await
        .unwrap();

    let s = store(dir.path()).await;
    let second = std::fs::read_to_string(table_dir.join("_delta_log/00000000000000000001.json"))
        .expect("a second commit");
    assert!(second.contains("\"operation\":\"ADD COLUMN\""), "{second}");
    assert!(second.contains(dropped.name()), "{second}");
    s.append(Table::SPANS, spans_at(&[HOUR])).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(total_rows(&s, Table::SPANS), 1);
}

/// A data directory from before the stored types (nanosecond timestamps, unsigned
/// counts, no `start_time_unix_nano`): its files are converted in place, read, and
/// merged with new ones into a file of the stored types that keeps every exact start.
#[tokio::test]
async fn files_of_nanoseconds_from_an_older_version_merge_into_the_stored_types() {
    let dir = tempfile::tempdir().unwrap();
    let older = [HOUR + 7, HOUR + 8];
    let partition = layout::partition_dir(&dir.path().join("spans"), 1);
    std::fs::create_dir_all(&partition).unwrap();
    let batch = spans_at(&older);
    assert_eq!(
        batch.schema(),
        Table::SPANS.schema(),
        "the older file's types"
    );
    let file = std::fs::File::create(partition.join("older.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let s = compacting_store(dir.path()).await;
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 1);
    for f in 0..4u64 {
        s.append(Table::SPANS, spans_at(&[HOUR + 100 + f]))
            .await
            .unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.compact().await.unwrap(), 5);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 1);
    let mut starts = start_times_with_the_table_schema(&files[0].path);
    starts.sort_unstable();
    let mut expected: Vec<i64> = older.iter().map(|t| *t as i64).collect();
    expected.extend((0..4).map(|f| (HOUR + 100 + f) as i64));
    assert_eq!(starts, expected);
}
