//! The SQL surface, tested as SQL: every `tests/sql/*.slt` file (sqllogictest, as
//! DataFusion tests itself) runs against a store of known rows, part of them in Parquet
//! files and part still buffered, through the same [`QueryEngine`] the API uses.
//!
//! The data: the OTLP protocol's own examples (`tests/fixtures/otlp-json`) for `logs`
//! and `metrics`, and [`spans`] below: ten spans of two services over two hours of
//! 2023-11-14, the first hour flushed to Parquet, the second buffered.
//!
//! A query whose first line is `-- format: csv` or `-- format: json` is answered in
//! that encoding (as `POST /api/v1/query` answers with `Accept: text/csv`, or JSON),
//! one output line per row, so the files pin those shapes too.
//!
//! `SLT_COMPLETE=1 cargo test --test sqllogic` rewrites the files with the answers the
//! engine gives now (DataFusion's `--complete`); review the diff before committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use sqllogictest::{DBOutput, DefaultColumnType};
use swarmscope_processors::analytics::{Analytics, AnalyticsConfig};
use swarmscope_processors::convert;
use swarmscope_processors::otlp_json;
use swarmscope_processors::schema::Table;
use swarmscope_queries::{encode, QueryConfig, QueryEngine};
use swarmscope_sinks::store::{ParquetStore, StorageConfig};

/// 2023-11-14T22:00:00Z.
const BASE: u64 = 1_699_999_200_000_000_000;
const MINUTE: u64 = 60_000_000_000;

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.into()))
}

/// Span `i` (1-based) of `service`, `minutes` after 22:00, lasting `ms` milliseconds.
struct Spec {
    service: &'static str,
    name: &'static str,
    minutes: u64,
    ms: u64,
    team: &'static str,
    agent: Option<&'static str>,
    error: bool,
}

const SPECS: [Spec; 10] = [
    Spec {
        service: "planner",
        name: "claim",
        minutes: 1,
        ms: 10,
        team: "red",
        agent: Some("agent-1"),
        error: false,
    },
    Spec {
        service: "planner",
        name: "complete",
        minutes: 5,
        ms: 30,
        team: "red",
        agent: Some("agent-1"),
        error: false,
    },
    Spec {
        service: "planner",
        name: "claim",
        minutes: 10,
        ms: 20,
        team: "blue",
        agent: Some("agent-2"),
        error: false,
    },
    Spec {
        service: "planner",
        name: "fail",
        minutes: 20,
        ms: 40,
        team: "blue",
        agent: Some("agent-2"),
        error: true,
    },
    Spec {
        service: "coder",
        name: "llm.call",
        minutes: 30,
        ms: 900,
        team: "red",
        agent: None,
        error: false,
    },
    Spec {
        service: "coder",
        name: "llm.call",
        minutes: 59,
        ms: 1100,
        team: "red",
        agent: None,
        error: true,
    },
    // The second hour, 23:xx, stays buffered.
    Spec {
        service: "planner",
        name: "claim",
        minutes: 61,
        ms: 15,
        team: "red",
        agent: Some("agent-3"),
        error: false,
    },
    Spec {
        service: "planner",
        name: "complete",
        minutes: 70,
        ms: 25,
        team: "red",
        agent: Some("agent-3"),
        error: false,
    },
    Spec {
        service: "coder",
        name: "llm.call",
        minutes: 80,
        ms: 700,
        team: "blue",
        agent: None,
        error: false,
    },
    Spec {
        service: "coder",
        name: "tool.run",
        minutes: 90,
        ms: 50,
        team: "blue",
        agent: None,
        error: false,
    },
];

/// The spans of `SPECS[range]`, grouped under their service's resource.
fn spans(range: std::ops::Range<usize>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for (i, spec) in SPECS.iter().enumerate().take(range.end).skip(range.start) {
        let start = BASE + spec.minutes * MINUTE;
        let mut attributes = vec![
            text("coordination.team", spec.team),
            attr("tokens", any_value::Value::IntValue(40 + i as i64)),
            attr("cached", any_value::Value::BoolValue(i % 2 == 0)),
        ];
        if let Some(agent) = spec.agent {
            attributes.push(text("gen_ai.agent.id", agent));
        }
        let span = Span {
            trace_id: [[0xab; 8], (i as u64 / 2 + 1).to_be_bytes()].concat(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 2 == 1 {
                (i as u64).to_be_bytes().to_vec()
            } else {
                Vec::new()
            },
            name: spec.name.into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + spec.ms * 1_000_000,
            attributes,
            status: Some(Status {
                code: if spec.error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Ok as i32
                },
                message: if spec.error {
                    "boom".into()
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        };
        match resource_spans.iter_mut().find(|r| {
            r.resource
                .as_ref()
                .is_some_and(|res| res.attributes[0] == text("service.name", spec.service))
        }) {
            Some(r) => r.scope_spans[0].spans.push(span),
            None => resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", spec.service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "agents".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/otlp-json")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The store every file reads: written once, then opened read-write by each file's
/// engine (the buffered rows come back from the write-ahead log).
async fn populate(dir: &Path) {
    let store = ParquetStore::open(StorageConfig {
        data_dir: dir.to_owned(),
        // The data is from 2018 and 2023; keep it.
        retention_hours: 1_000_000,
        ..StorageConfig::default()
    })
    .await
    .expect("store");
    let first_hour = convert::spans_from_otlp(&spans(0..6)).expect("convert");
    store
        .append(Table::SPANS, first_hour.batch)
        .await
        .expect("append");
    let logs = otlp_json::decode_logs(&fixture("logs.json")).expect("logs.json");
    let logs = convert::logs_from_otlp(&logs).expect("convert logs");
    store.append(Table::LOGS, logs.batch).await.expect("append");
    let metrics = otlp_json::decode_metrics(&fixture("metrics.json")).expect("metrics.json");
    let metrics = convert::metrics_from_otlp(&metrics).expect("convert metrics");
    store
        .append(Table::METRICS, metrics.batch)
        .await
        .expect("append");
    store.flush().await.expect("flush");
    let second_hour = convert::spans_from_otlp(&spans(6..10)).expect("convert");
    store
        .append(Table::SPANS, second_hour.batch)
        .await
        .expect("append");
    store.close().expect("close");
}

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

struct Swarmscope {
    engine: Arc<QueryEngine>,
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Swarmscope {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let format = sql
            .lines()
            .next()
            .and_then(|l| l.trim().strip_prefix("-- format:"))
            .map(str::trim);
        let result = self
            .engine
            .sql(sql)
            .await
            .map_err(|e| SqlError(e.to_string()))?;
        let lines = |text: String| DBOutput::Rows {
            types: vec![DefaultColumnType::Text],
            rows: text.lines().map(|l| vec![l.to_owned()]).collect(),
        };
        match format {
            Some("csv") => {
                let bytes = encode::csv(&result).map_err(|e| SqlError(e.to_string()))?;
                return Ok(lines(String::from_utf8_lossy(&bytes).into_owned()));
            }
            Some("json") => {
                let v = encode::json(&result).map_err(|e| SqlError(e.to_string()))?;
                let rows = v["rows"].as_array().cloned().unwrap_or_default();
                let mut text = v["columns"].to_string();
                for row in rows {
                    text += "\n";
                    text += &row.to_string();
                }
                return Ok(lines(text));
            }
            Some(other) => return Err(SqlError(format!("unknown format {other:?}"))),
            None => {}
        }
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &result.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .map(|s| {
                            if s.is_empty() {
                                "(empty)".to_owned()
                            } else {
                                s
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "swarmscope"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    populate(tmp.path()).await;
    let store = ParquetStore::open(StorageConfig {
        data_dir: tmp.path().to_owned(),
        retention_hours: 1_000_000,
        ..StorageConfig::default()
    })
    .await
    .expect("reopen");
    assert_eq!(
        store.buffered_rows(Table::SPANS),
        4,
        "the second hour is buffered"
    );
    let engine = Arc::new(
        QueryEngine::new(
            store,
            QueryConfig {
                threads: 2,
                ..QueryConfig::default()
            },
        )
        .expect("engine"),
    );
    let analytics = Analytics::new(&AnalyticsConfig::default(), Vec::new());
    engine
        .register_analytics(&analytics)
        .await
        .expect("analytics views");
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files in tests/sql");
    let complete = std::env::var_os("SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let engine = Arc::clone(&engine);
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = Arc::clone(&engine);
            async move { Ok(Swarmscope { engine }) }
        });
        if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
