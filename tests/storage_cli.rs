//! The store as other tools see it (plain Parquet readers), flushing by rows and on
//! shutdown, and the CLI: `query --data-dir`, `query --server`, `config check`.

mod common;

use std::process::Command;

use common::{binary, blocking_request, eventually, parquet_files, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message;

fn logs(n: usize, first: u64) -> Vec<u8> {
    let records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: first + i as u64,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("line {i}"))),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn send_logs(server: &Server, body: &[u8]) {
    let (status, _) = blocking_request(
        "POST",
        &format!("{}/v1/logs", server.http),
        &[("content-type", "application/x-protobuf".into())],
        body,
    )
    .expect("send");
    assert_eq!(status, 200);
}

#[test]
fn files_are_plain_parquet_written_by_rows_and_on_shutdown() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            flush_rows: Some(100),
            ..Default::default()
        },
    );
    let t0 = 1_700_000_000_000_000_000;
    // 150 rows pass flush_rows: a file appears without a shutdown or a timer.
    send_logs(&server, &logs(150, t0));
    eventually("a flush by row count", || {
        (!parquet_files(&dir.join("logs")).is_empty()).then_some(())
    });
    // 30 more stay buffered (below flush_rows) but are queryable at once.
    send_logs(&server, &logs(30, t0 + 1000));
    assert_eq!(server.scalar("SELECT count(*) FROM logs"), 180);
    assert!(server.stop().success());

    // Read with the parquet crate's plain reader: no swarmscope code involved.
    let mut rows = 0;
    for path in parquet_files(&dir.join("logs")) {
        let reader =
            SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("parquet");
        let meta = reader.metadata();
        rows += meta.file_metadata().num_rows();
        let schema = meta.file_metadata().schema_descr();
        let columns: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).path().string())
            .collect();
        for c in [
            "time",
            "observed_time",
            "severity_number",
            "body",
            "service_name",
        ] {
            assert!(columns.iter().any(|x| x == c), "{c} missing in {columns:?}");
        }
        let compression = meta.row_group(0).column(0).compression();
        assert!(
            format!("{compression:?}").starts_with("ZSTD"),
            "{compression:?}"
        );
        assert!(
            path.to_string_lossy()
                .contains("/logs/date=2023-11-14/hour=22/"),
            "{}",
            path.display()
        );
    }
    assert_eq!(rows, 180);
}

#[test]
fn query_command_reads_a_data_dir_or_a_server() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    send_logs(&server, &logs(3, 1_700_000_000_000_000_000));

    let via_server = Command::new(binary())
        .args([
            "query",
            "--server",
            &server.api,
            "--format",
            "csv",
            "SELECT body FROM logs ORDER BY body",
        ])
        .output()
        .expect("run");
    assert!(
        via_server.status.success(),
        "{}",
        String::from_utf8_lossy(&via_server.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&via_server.stdout),
        "body\nline 0\nline 1\nline 2\n"
    );

    let table = Command::new(binary())
        .args([
            "query",
            "--server",
            &server.api,
            "--format",
            "table",
            "SELECT count(*) AS n FROM logs",
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("| n |") && text.contains("| 3 |"), "{text}");

    let bad = Command::new(binary())
        .args(["query", "--server", &server.api, "DROP TABLE logs"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("refused"));

    assert!(server.stop().success());
    let embedded = Command::new(binary())
        .args(["query", "--data-dir"])
        .arg(&dir)
        .args(["--format", "json", "SELECT count(*) AS n FROM logs"])
        .output()
        .expect("run");
    assert!(
        embedded.status.success(),
        "{}",
        String::from_utf8_lossy(&embedded.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&embedded.stdout).expect("json");
    assert_eq!(v["rows"], serde_json::json!([[3]]));
}

#[test]
fn config_check_prints_the_effective_config_or_exits_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[storage]\nflush_rows = 1000\n[api]\nauth_token = \"${SWARMSCOPE_TEST_CLI_TOKEN}\"\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&good)
        .env("SWARMSCOPE_TEST_CLI_TOKEN", "hush")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("flush_rows = 1000"), "{text}");
    assert!(text.contains("grpc_address = \"127.0.0.1:4317\""), "{text}");
    assert!(!text.contains("hush"), "secrets are masked: {text}");

    for (body, key) in [
        (
            "[receivers.otlp]\ngrpc_adress = \"0.0.0.0:4317\"\n",
            "grpc_adress",
        ),
        ("[storage]\nflush_rows = 0\n", "storage.flush_rows"),
        ("[storage]\nflush_rows = \"many\"\n", "flush_rows"),
        ("[unknown_section]\n", "unknown_section"),
    ] {
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, body).expect("write");
        for args in [vec!["config", "check"], vec!["serve", "--config"]] {
            let out = Command::new(binary())
                .args(&args)
                .arg(&bad)
                .output()
                .expect("run");
            assert_eq!(out.status.code(), Some(2), "{args:?} {body}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(key), "{args:?}: {err}");
        }
    }
    let missing = Command::new(binary())
        .args(["config", "check", "/nonexistent.toml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    let usage = Command::new(binary())
        .args(["serve", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
}
