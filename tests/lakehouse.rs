//! The history as outside engines read it: every table is a Delta Lake table, and
//! DuckDB's Delta extension (`delta_scan`, from its pinned PyPI wheel) reads each
//! acknowledged row exactly once through flushes, compaction, retention and vacuum,
//! reads taken while a merge commits included, on local disk and on S3. Polars reads
//! the types every Delta reader knows. A directory of plain Hive Parquet from before is
//! converted in place.
//!
//! The Python packages are pinned in `tests/lakehouse/requirements.txt`; `bash .ci/run`
//! installs them into a venv and names its interpreter in `SWARMSCOPE_PYTHON`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{parquet_files, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const SPANS_PER_REQUEST: u64 = 40;
const RECENT_REQUESTS: u64 = 6;
const OLD_REQUESTS: u64 = 3;

/// What DuckDB answers to `sql` (over the view `t` of the Delta table at `table`),
/// `repeat` times in one process: one entry per read, rows or `{"error": ...}`.
fn duckdb(table: &Path, sql: &str, repeat: usize) -> Vec<Value> {
    duckdb_read(table.as_os_str(), None, sql, repeat)
}

/// [`duckdb`] of a table at a directory or, with the S3 API's `host:port`, an `s3://` URL.
fn duckdb_read(
    table: &std::ffi::OsStr,
    s3_endpoint: Option<&str>,
    sql: &str,
    repeat: usize,
) -> Vec<Value> {
    let repeat = repeat.to_string();
    let env = s3_endpoint.map(|e| ("S3_ENDPOINT", e));
    let out = run_reader("read.py", &[table, sql.as_ref(), repeat.as_ref()], env);
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The standard output of the reader `script` of `tests/lakehouse/`, run with `args`
/// (and the variable `env`) by the tests' Python.
fn run_reader(script: &str, args: &[&std::ffi::OsStr], env: Option<(&str, &str)>) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lakehouse")
        .join(script);
    let mut command = Command::new(common::python("the lakehouse tests"));
    command.arg(path).args(args);
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let out = command.output().expect("run a reader");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `count(*)` and `count(DISTINCT span_id)` of the spans table, as DuckDB reads them.
fn duckdb_counts(dir: &Path) -> (i64, i64) {
    let reads = duckdb(
        &dir.join("spans"),
        "SELECT count(*), count(DISTINCT span_id) FROM t",
        1,
    );
    counts(&reads[0])
}

fn counts(read: &Value) -> (i64, i64) {
    let row = &read[0];
    match (row[0].as_i64(), row[1].as_i64()) {
        (Some(all), Some(distinct)) => (all, distinct),
        _ => panic!("DuckDB read failed: {read}"),
    }
}

/// Request `r`'s spans, starting at `start_ns`, each with a span id of its own.
fn spans(r: u64, start_ns: u64) -> Vec<Span> {
    (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: [r.to_be_bytes(), [3; 8]].concat(),
            span_id: (r * 1000 + i + 1).to_be_bytes().to_vec(),
            name: format!("op-{}", i % 5),
            start_time_unix_nano: start_ns + i,
            end_time_unix_nano: start_ns + i + 500,
            ..Default::default()
        })
        .collect()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// The `operation` of every commit of a table's Delta log, oldest first, read from
/// the log's JSON files.
fn operations(table: &Path) -> Vec<String> {
    let mut commits: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .expect("_delta_log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    commits
        .iter()
        .filter_map(|c| {
            std::fs::read_to_string(c)
                .expect("commit")
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(|a| a["commitInfo"]["operation"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Recent spans and spans from 2023, a request each; returns how many in all and how
/// many recent.
fn send_history(server: &Server) -> (i64, i64) {
    let now = now_ns();
    for r in 0..RECENT_REQUESTS {
        server.send_spans("lake", spans(r, now - 60_000_000_000 + r * 1_000_000));
    }
    for r in 0..OLD_REQUESTS {
        let r = RECENT_REQUESTS + r;
        server.send_spans("lake", spans(r, 1_700_000_000_000_000_000 + r * 1_000_000));
    }
    let recent = (RECENT_REQUESTS * SPANS_PER_REQUEST) as i64;
    (recent + (OLD_REQUESTS * SPANS_PER_REQUEST) as i64, recent)
}

/// Phase one of both tests: recent spans and spans from 2023, each request flushed into
/// a file of its own, all read back by DuckDB.
fn write_history(dir: &Path) -> (i64, i64) {
    let server = Server::start_with(
        dir,
        Options {
            flush_rows: Some(SPANS_PER_REQUEST as usize),
            flush_interval_ms: Some(50),
            storage_extra: "compaction_min_files = 1000\ncompaction_quiet_after = \"1000h\"\n"
                .into(),
            ..Default::default()
        },
    );
    let (total, recent) = send_history(&server);
    common::eventually("every span in a committed file", || {
        (duckdb_counts(dir) == (total, total)).then_some(())
    });
    assert!(server.stop().success());
    (total, recent)
}

/// What Polars (`pl.read_delta`) reads of the Delta table at `table`.
fn polars(table: &Path) -> Value {
    let out = run_reader("read_polars.py", &[table.as_os_str()], None);
    serde_json::from_slice(&out).expect("a JSON object")
}

#[test]
fn duckdb_reads_each_acknowledged_row_once_through_compaction_retention_and_vacuum() {
    let (_tmp, dir) = temp_data_dir();
    let (total, recent) = write_history(&dir);
    let spans_table = dir.join("spans");
    // Polars reads the same table with the types every Delta reader knows:
    // microsecond timestamps in UTC, signed integers, the exact nanoseconds beside.
    let read = polars(&spans_table);
    assert_eq!(read["rows"], Value::from(total), "{read}");
    assert_eq!(read["distinct_span_ids"], Value::from(total), "{read}");
    assert_eq!(read["exact_starts_agree"], Value::from(true), "{read}");
    let types = &read["types"];
    assert_eq!(
        types["start_time"],
        "Datetime(time_unit='us', time_zone='UTC')"
    );
    assert_eq!(types["start_time_unix_nano"], "Int64");
    assert_eq!(types["flags"], "Int64");
    assert!(
        types["events"].as_str().is_some_and(|t| t
            .contains("'time': Datetime(time_unit='us', time_zone='UTC')")
            && t.contains("'dropped_attributes_count': Int64")),
        "{types}"
    );
    let old_files = parquet_files(&spans_table.join("date=2023-11-14"));
    assert!(!old_files.is_empty());
    assert!(operations(&spans_table)
        .iter()
        .all(|op| op == "CREATE TABLE" || op == "WRITE"));

    // Phase two: a day's retention takes the spans of 2023 away; then, while a client
    // keeps sending (a file per request) and compaction keeps merging, DuckDB reads
    // without pause.
    let server = std::sync::Arc::new(Server::start_with(
        &dir,
        Options {
            flush_rows: Some(SPANS_PER_REQUEST as usize),
            flush_interval_ms: Some(50),
            retention_hours: Some(24),
            storage_extra: "compaction_min_files = 2\n".into(),
            ..Default::default()
        },
    ));
    common::eventually("retention committed", || {
        operations(&spans_table)
            .iter()
            .any(|o| o == "DELETE")
            .then_some(())
    });
    assert_eq!(duckdb_counts(&dir), (recent, recent));
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = std::thread::spawn({
        let server = std::sync::Arc::clone(&server);
        let sending = std::sync::Arc::clone(&sending);
        move || {
            let mut sent = 0;
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let r = 100 + sent;
                server.send_spans("lake", spans(r, now_ns()));
                sent += 1;
            }
            sent
        }
    });
    let reads = duckdb(
        &spans_table,
        "SELECT count(*), count(DISTINCT span_id) FROM t",
        40,
    );
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    let acknowledged = recent + (sent * SPANS_PER_REQUEST) as i64;
    let mut last = recent;
    for read in &reads {
        let (all, distinct) = counts(read);
        assert_eq!(all, distinct, "a row read twice: {read}");
        assert!(
            all >= last && all <= acknowledged,
            "{all} rows after {last}, of {acknowledged}"
        );
        last = all;
    }
    common::eventually("every sent span committed", || {
        (duckdb_counts(&dir) == (acknowledged, acknowledged)).then_some(())
    });
    common::eventually("a merge committed", || {
        operations(&spans_table)
            .iter()
            .any(|o| o == "OPTIMIZE")
            .then_some(())
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(acknowledged)
    );
    let server = std::sync::Arc::into_inner(server).expect("the sender is done");
    assert!(server.stop().success());
    // The removed files stay for readers of older versions until vacuum_after (1 h).
    assert!(
        old_files.iter().all(|f| f.exists()),
        "expired files vacuumed before vacuum_after"
    );

    // Phase three: with vacuum_after = 0, vacuum deletes what no version references.
    let server = Server::start_with(
        &dir,
        Options {
            flush_interval_ms: Some(50),
            retention_hours: Some(24),
            storage_extra: "vacuum_after = \"0s\"\n".into(),
            ..Default::default()
        },
    );
    // Vacuum deletes the files, then commits its end.
    common::eventually("vacuum", || {
        (parquet_files(&spans_table.join("date=2023-11-14")).is_empty()
            && operations(&spans_table).iter().any(|o| o == "VACUUM END"))
        .then_some(())
    });
    assert_eq!(duckdb_counts(&dir), (acknowledged, acknowledged));
    assert!(server.stop().success());
}

#[test]
fn a_directory_of_plain_parquet_is_converted_in_place() {
    let (_tmp, dir) = temp_data_dir();
    let (total, _) = write_history(&dir);
    // What a version before Delta left: the same files, no log.
    let files_before = parquet_files(&dir);
    for entry in std::fs::read_dir(&dir).expect("data dir").flatten() {
        let log = entry.path().join("_delta_log");
        if log.is_dir() {
            std::fs::remove_dir_all(&log).expect("remove _delta_log");
        }
    }

    let server = Server::start(&dir);
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(total)
    );
    assert!(server.stop().success());
    assert_eq!(
        parquet_files(&dir),
        files_before,
        "no file rewritten or lost"
    );
    assert_eq!(duckdb_counts(&dir), (total, total));
    assert_eq!(
        operations(&dir.join("spans")),
        vec!["CREATE TABLE".to_owned()]
    );
}

/// With no log retention, each checkpoint deletes the commits before it; DuckDB, which
/// reads the newest checkpoint and the commits after it, and the server still read
/// every row once, and the server reopens on the cleaned log without replaying a row.
#[test]
fn duckdb_reads_every_row_of_a_table_whose_log_was_cleaned_up() {
    let (_tmp, dir) = temp_data_dir();
    let options = || Options {
        flush_rows: Some(SPANS_PER_REQUEST as usize),
        flush_interval_ms: Some(50),
        storage_extra: "compaction_min_files = 1000\ncompaction_quiet_after = \"1000h\"\n\
                        delta_log_retention = \"0s\"\n"
            .into(),
        ..Default::default()
    };
    let server = Server::start_with(&dir, options());
    let log = dir.join("spans/_delta_log");
    // Requests until the table's second checkpoint (version 99) is written: a flush
    // takes what arrived since the last, so commits come slower than requests.
    let mut sent = 0;
    let now = now_ns();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !log.join("00000000000000000099.checkpoint.parquet").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no second checkpoint after {sent} requests"
        );
        server.send_spans("lake", spans(sent, now - 60_000_000_000 + sent * 1_000_000));
        sent += 1;
    }
    let total = (sent * SPANS_PER_REQUEST) as i64;
    common::eventually("every span in a committed file", || {
        (duckdb_counts(&dir) == (total, total)).then_some(())
    });
    let first_commit = || {
        std::fs::read_dir(&log)
            .expect("_delta_log")
            .filter_map(|e| {
                let name = e.expect("entry").file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .min()
    };
    // The cleanup follows the checkpoint's write.
    common::eventually("the commits before the checkpoint deleted", || {
        (first_commit() >= Some(99)).then_some(())
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(total)
    );
    assert!(server.stop().success());
    let server = Server::start_with(&dir, options());
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(total)
    );
    assert!(server.stop().success());
    assert_eq!(duckdb_counts(&dir), (total, total));
}

/// The same on S3 (moto's S3 API): DuckDB reads the tables from the bucket with its
/// httpfs and Delta extensions, through flushes, merges, retention and vacuum, and the
/// server's SQL agrees.
#[test]
fn on_s3_duckdb_reads_each_acknowledged_row_once_through_compaction_retention_and_vacuum() {
    let Some(s3) = common::s3::S3::start("the lakehouse test on S3") else {
        return;
    };
    let bucket = s3.bucket();
    let (_tmp, dir) = temp_data_dir();
    let table = std::ffi::OsString::from(format!("s3://{bucket}/tables/spans"));
    let read_counts = || {
        let reads = duckdb_read(
            &table,
            Some(s3.host_port()),
            "SELECT count(*), count(DISTINCT span_id) FROM t",
            1,
        );
        counts(&reads[0])
    };
    let options = |retention_hours: u64, extra: &str| Options {
        flush_rows: Some(SPANS_PER_REQUEST as usize),
        flush_interval_ms: Some(50),
        retention_hours: Some(retention_hours),
        storage_extra: format!("{}{extra}", s3.storage_lines(&bucket)),
        ..Default::default()
    };
    let server = Server::start_with(&dir, options(1_000_000, "compaction_min_files = 3\n"));
    let (total, recent) = send_history(&server);
    // Each check starts DuckDB and reads the table through the S3 API, a second or
    // more on a loaded machine: 30 s of them once ran out before the merge was seen.
    let slow_checks = std::time::Duration::from_secs(120);
    common::eventually_within("every span committed and a merge done", slow_checks, || {
        (read_counts() == (total, total)
            && server.metric("swarmscope_store_compactions_total") >= 1.0)
            .then_some(())
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(total)
    );
    assert_eq!(
        server.scalar("SELECT count(DISTINCT span_id) FROM spans"),
        Value::from(total)
    );
    assert!(server.stop().success());
    // Nothing stays staged on local disk, and the bucket holds the files.
    assert!(parquet_files(&dir.join("_staging")).is_empty());
    assert!(!s3.keys(&bucket, "tables/spans/date=2023-11-14/").is_empty());

    // A day's retention removes the spans of 2023; vacuum (after 0 s) deletes their
    // files and the merges' inputs from the bucket.
    let server = Server::start_with(&dir, options(24, "vacuum_after = \"0s\"\n"));
    common::eventually_within("retention and vacuum on the bucket", slow_checks, || {
        (read_counts() == (recent, recent)
            && s3.keys(&bucket, "tables/spans/date=2023-11-14/").is_empty())
        .then_some(())
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans"),
        Value::from(recent)
    );
    assert!(server.stop().success());
}

/// A data directory of an older version: plain Parquet with nanosecond timestamps and
/// unsigned counts (what versions before the Delta types wrote). It is converted in
/// place, nothing rewritten, and reads with the new types: SQL, DuckDB and Polars count
/// every row; its spans have no `start_time_unix_nano` (null), the new ones do.
#[test]
fn files_of_an_older_version_read_with_the_new_types() {
    let (_tmp, dir) = temp_data_dir();
    let old_start = 1_700_000_000_000_000_123u64;
    let request = common::trace_request(spans(1, old_start));
    let batch = swarmscope_processors::convert::spans_from_otlp(&request)
        .expect("convert")
        .batch;
    assert_eq!(
        batch
            .schema()
            .field_with_name("start_time")
            .map(|f| f.data_type().clone())
            .ok(),
        Some(swarmscope_processors::schema::timestamp_type()),
        "nanoseconds, as older versions stored them"
    );
    let partition = dir.join("spans/date=2023-11-14/hour=22");
    std::fs::create_dir_all(&partition).expect("partition");
    let file = std::fs::File::create(partition.join("older.parquet")).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let server = Server::start_with(
        &dir,
        Options {
            flush_rows: Some(SPANS_PER_REQUEST as usize),
            flush_interval_ms: Some(50),
            ..Default::default()
        },
    );
    server.send_spans("lake", spans(2, now_ns()));
    let old = SPANS_PER_REQUEST as i64;
    let total = 2 * old;
    common::eventually("the new spans committed", || {
        (duckdb_counts(&dir) == (total, total)).then_some(())
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE start_time_unix_nano IS NULL"),
        Value::from(old)
    );
    // The old rows' times read back to the microsecond.
    assert_eq!(
        server.scalar("SELECT CAST(min(start_time) AS BIGINT) FROM spans"),
        Value::from((old_start / 1000) as i64)
    );
    assert!(server.stop().success());
    let read = polars(&dir.join("spans"));
    assert_eq!(read["rows"], Value::from(total), "{read}");
}
