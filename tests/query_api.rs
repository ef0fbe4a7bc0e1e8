//! The query API (docs/api.md): result formats, the read-only sandbox, partition pruning,
//! tables, auth, and the same answers after a restart.

mod common;

use arrow::datatypes::DataType;
use common::{blocking_get, blocking_request, parquet_files, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

const HOUR: u64 = 3_600_000_000_000;
/// 2023-11-14T22:00:00Z
const BASE: u64 = 1_699_999_200_000_000_000;

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// `n` spans of `service` starting at `start`, one millisecond apart.
fn spans(service: &str, start: u64, n: usize) -> Vec<u8> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: [[1u8; 8], (i as u64 + 1).to_be_bytes()].concat(),
            span_id: (start / 1_000_000 + i as u64).to_be_bytes().to_vec(),
            name: format!("op-{}", i % 3),
            start_time_unix_nano: start + i as u64 * 1_000_000,
            end_time_unix_nano: start + i as u64 * 1_000_000 + 500,
            attributes: vec![string_attr(
                "coordination.team",
                if i % 2 == 0 { "red" } else { "blue" },
            )],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn send(server: &Server, body: &[u8]) {
    let (status, _) = server.post_traces(body);
    assert_eq!(status, 200);
}

fn error_of(server: &Server, sql: &str) -> (u16, String) {
    let (status, body) = server.query_raw(sql, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
    (status, v["error"].as_str().expect("error field").to_owned())
}

#[test]
fn read_only_sandbox_refuses_writes_and_file_access() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    send(&server, &spans("svc", BASE, 5));
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE spans",
        "INSERT INTO spans SELECT * FROM spans",
        "DELETE FROM spans",
        "COPY (SELECT * FROM spans) TO '/tmp/swarmscope-exfil.csv'",
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let (status, error) = error_of(&server, sql);
        assert_eq!(status, 400, "{sql}: {error}");
        assert!(
            error.contains("refused") || error.contains("not supported"),
            "{sql}: {error}"
        );
    }
    assert!(!std::path::Path::new("/tmp/swarmscope-exfil.csv").exists());
    // No way to read files through table functions or URL tables.
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
    ] {
        let (status, error) = error_of(&server, sql);
        assert_eq!(status, 400, "{sql}: {error}");
    }
    // Bad SQL and unknown columns are the caller's error, clearly worded.
    let (status, error) = error_of(&server, "SELEC 1");
    assert_eq!(status, 400);
    assert!(error.to_lowercase().contains("sql"), "{error}");
    let (status, error) = error_of(&server, "SELECT no_such_column FROM spans");
    assert_eq!(status, 400);
    assert!(error.contains("no_such_column"), "{error}");
    // A malformed request body.
    let (status, body) = blocking_request(
        "POST",
        &format!("{}/api/v1/query", server.api),
        &[("content-type", "application/json".into())],
        b"{\"query\": 1}",
    )
    .expect("request");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("sql"));
    // Everything is still there.
    assert_eq!(server.scalar("SELECT count(*) FROM spans"), 5);
}

#[test]
fn results_come_as_json_csv_or_arrow() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    send(&server, &spans("svc", BASE, 4));
    let sql = "SELECT attributes['coordination.team'] AS team, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1";
    let v = server.sql(sql);
    assert_eq!(
        v["columns"],
        json!([{"name": "team", "type": "Utf8"}, {"name": "n", "type": "Int64"}])
    );
    assert_eq!(v["rows"], json!([["blue", 2], ["red", 2]]));

    let (status, csv) = server.query_raw(sql, "text/csv");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&csv), "team,n\nblue,2\nred,2\n");

    let (status, ipc) = server.query_raw(sql, "application/vnd.apache.arrow.stream");
    assert_eq!(status, 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).expect("arrow stream");
    assert_eq!(reader.schema().field(1).name(), "n");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 2);

    // Strings are scanned as views; results carry the stored Utf8, nested ones too, in
    // JSON and in Arrow, from the buffer and (after a restart) from Parquet alike.
    let check = |server: &Server| {
        let sql = "SELECT service_name, array_agg(name) AS names FROM spans GROUP BY 1";
        let v = server.sql(sql);
        assert_eq!(
            v["columns"][0],
            json!({"name": "service_name", "type": "Utf8"})
        );
        assert_eq!(v["rows"][0][0], json!("svc"));
        let (status, ipc) = server.query_raw(sql, "application/vnd.apache.arrow.stream");
        assert_eq!(status, 200);
        let reader =
            arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).expect("arrow stream");
        let schema = reader.schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            schema.field(1).data_type(),
            &DataType::new_list(DataType::Utf8, true)
        );
    };
    check(&server);
    assert!(server.stop().success());
    assert_eq!(parquet_files(&dir.join("spans")).len(), 1);
    check(&Server::start(&dir));
}

#[test]
fn tables_endpoint_lists_every_table_with_its_columns() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let (status, body) = blocking_get(&format!("{}/api/v1/tables", server.api)).expect("get");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let names: Vec<&str> = v["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "spans",
            "metrics",
            "logs",
            "coordination_events",
            "health",
            "alerts",
            "dead_letters",
            "genai_attribution",
            "graph_edges",
            "genai_usage",
            "work_activity",
            "velocity"
        ]
    );
    let span_columns: Vec<&str> = v["tables"][0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    for required in [
        "start_time",
        "end_time",
        "duration_ns",
        "trace_id",
        "span_id",
        "parent_span_id",
        "trace_state",
        "name",
        "kind",
        "status_code",
        "status_message",
        "service_name",
        "scope_name",
        "scope_version",
        "resource_attributes",
        "attributes",
        "events",
        "links",
        "agent_id",
    ] {
        assert!(span_columns.contains(&required), "spans lacks {required}");
    }
    assert_eq!(
        v["tables"][0]["columns"][0]["type"],
        "Timestamp(µs, \"UTC\")"
    );
}

#[test]
fn api_token_guards_the_api_but_not_health() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            api_token: Some("q".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        blocking_get(&format!("{}/healthz", server.api))
            .expect("get")
            .0,
        200
    );
    assert_eq!(
        blocking_get(&format!("{}/api/v1/tables", server.api))
            .expect("get")
            .0,
        401
    );
    let (status, _) = blocking_request(
        "POST",
        &format!("{}/api/v1/query", server.api),
        &[("content-type", "application/json".into())],
        br#"{"sql":"SELECT 1"}"#,
    )
    .expect("post");
    assert_eq!(status, 401);
    assert_eq!(server.scalar("SELECT 1"), 1);
}

fn physical_plan(server: &Server, sql: &str) -> String {
    server
        .rows(&format!("EXPLAIN {sql}"))
        .iter()
        .find(|r| r[0] == "physical_plan")
        .map(|r| r[1].as_str().unwrap_or("").to_owned())
        .expect("physical plan")
}

#[test]
fn time_predicates_prune_partitions_and_results_survive_restart() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    // Three partition hours, 10 spans each, written to Parquet by a graceful stop.
    for h in 0..3 {
        send(&server, &spans("svc", BASE + h * HOUR, 10));
    }
    let queries = [
        "SELECT count(*) FROM spans",
        "SELECT name, count(*), sum(duration_ns) FROM spans GROUP BY name ORDER BY name",
        "SELECT trace_id, span_id, CAST(start_time AS VARCHAR) AS started FROM spans ORDER BY start_time",
    ];
    let before: Vec<_> = queries.iter().map(|q| server.rows(q)).collect();
    assert_eq!(before[0], vec![vec![json!(30)]]);
    // Still buffered: one hour's predicate reads the one buffered batch of that hour.
    let hour = "SELECT count(*) FROM spans WHERE start_time >= TIMESTAMP '2023-11-14T23:00:00Z' \
                AND start_time < TIMESTAMP '2023-11-15T00:00:00Z'";
    assert_eq!(server.scalar(hour), 10);
    let plan = physical_plan(&server, hour);
    assert!(plan.contains("partition_sizes=[1]"), "{plan}");
    assert!(!plan.contains(".parquet"), "{plan}");
    let all = physical_plan(&server, "SELECT name FROM spans");
    assert!(all.contains("partition_sizes=[3]"), "{all}");
    assert!(server.stop().success(), "graceful stop exits 0");

    let files: Vec<_> = common::parquet_files(&dir.join("spans"));
    assert_eq!(files.len(), 3, "one file per hour: {files:?}");
    for (file, partition) in files.iter().zip([
        "/date=2023-11-14/hour=22/",
        "/date=2023-11-14/hour=23/",
        "/date=2023-11-15/hour=00/",
    ]) {
        assert!(file.to_string_lossy().contains(partition), "{files:?}");
    }

    let server = Server::start(&dir);
    let after: Vec<_> = queries.iter().map(|q| server.rows(q)).collect();
    assert_eq!(before, after);

    // One hour's predicate reads one file; EXPLAIN shows it.
    assert_eq!(server.scalar(hour), 10);
    let physical = physical_plan(&server, hour);
    let scanned: Vec<&str> = physical.matches(".parquet").collect();
    assert_eq!(scanned.len(), 1, "{physical}");
    assert!(physical.contains("hour=23"), "{physical}");
    // Row-group pruning predicate reaches the Parquet scan.
    assert!(
        physical.contains("pruning_predicate") || physical.contains("predicate="),
        "{physical}"
    );
}

/// Count by one string column runs `GroupByViewExec` and gives the same counts from
/// the buffer and, after a restart, from Parquet.
#[test]
fn count_by_service_is_counted_by_view_from_buffer_and_parquet() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let services = [
        ("checkout", 7),
        ("a-service-name-longer-than-twelve-bytes", 30),
        ("ledger", 12),
    ];
    for (round, (service, n)) in services.iter().cycle().take(6).enumerate() {
        send(&server, &spans(service, BASE + round as u64 * HOUR / 2, *n));
    }
    let sql = "SELECT service_name, count(*) AS spans, count(parent_span_id) AS children \
               FROM spans GROUP BY service_name ORDER BY service_name";
    let expected = vec![
        vec![
            json!("a-service-name-longer-than-twelve-bytes"),
            json!(60),
            json!(0),
        ],
        vec![json!("checkout"), json!(14), json!(0)],
        vec![json!("ledger"), json!(24), json!(0)],
    ];
    assert_eq!(server.rows(sql), expected);
    let plan = physical_plan(&server, sql);
    assert!(plan.contains("GroupByViewExec"), "{plan}");
    assert!(server.stop().success());

    let server = Server::start(&dir);
    assert!(!parquet_files(&dir.join("spans")).is_empty());
    assert_eq!(server.rows(sql), expected);
    let plan = physical_plan(&server, sql);
    assert!(
        plan.contains("GroupByViewExec") && plan.contains(".parquet"),
        "{plan}"
    );
}

/// A scan evaluates its filters while it decodes Parquet (no `FilterExec` above it)
/// where that spares decoding a costly column for the rows they drop (a random id, an
/// attribute map) or where a filter looks an id up; filters over cheap columns run
/// after the decoding. Either way the answers are the same.
#[test]
fn filters_are_evaluated_while_decoding_where_they_spare_a_costly_column() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    for h in 0..3 {
        send(&server, &spans("svc", BASE + h * HOUR, 10));
    }
    assert!(server.stop().success());
    let server = Server::start(&dir);
    // Per hour: `op-1` is spans 1, 4 and 7; each trace id has one span an hour.
    let trace = "01010101010101010000000000000005";
    for (sql, count, while_decoding) in [
        ("SELECT count(*) FROM spans WHERE name = 'op-1'", 9, false),
        (
            "SELECT count(*) FROM spans WHERE name = 'op-1' AND duration_ns > 0",
            9,
            false,
        ),
        (
            "SELECT count(span_id) FROM spans WHERE name = 'op-1'",
            9,
            true,
        ),
        (
            "SELECT count(attributes['coordination.team']) FROM spans WHERE name = 'op-1'",
            9,
            true,
        ),
        (
            &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"),
            3,
            true,
        ),
    ] {
        assert_eq!(server.scalar(sql), count, "{sql}");
        let plan = physical_plan(&server, sql);
        assert!(plan.contains(".parquet"), "{plan}");
        assert_eq!(
            !plan.contains("FilterExec"),
            while_decoding,
            "{sql}: {plan}"
        );
    }
}
