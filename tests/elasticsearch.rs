//! The Elasticsearch sink against a stand-in that speaks `_bulk` as Elasticsearch does
//! (see `common/elasticsearch.rs`): every document arrives once in its data stream,
//! items refused with 429 are sent again, mapping errors land in `dead_letters`, and
//! every request the sink sends is a valid bulk request.

mod common;

use std::collections::HashMap;

use common::elasticsearch::Elasticsearch;
use common::{blocking_get, eventually, temp_data_dir, text, Options, Server};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::Span;

fn span(i: u64, now: u64, mapping_error: bool) -> Span {
    let mut attributes = vec![text("gen_ai.agent.id", &format!("agent-{}", i % 4))];
    if mapping_error {
        attributes.push(text("es.test", "mapping_error"));
    }
    Span {
        trace_id: [[9u8; 8], (i + 1).to_be_bytes()].concat(),
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: format!("step-{i}"),
        kind: 3,
        start_time_unix_nano: now + i,
        end_time_unix_nano: now + i + 2_000_000,
        attributes,
        ..Default::default()
    }
}

#[test]
fn documents_arrive_once_in_their_data_streams_and_refusals_are_dead_lettered() {
    let es = Elasticsearch::start("elastic", "changeme");
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            extra: format!(
                "[sinks.elasticsearch]\nendpoint = \"{}\"\nusername = \"elastic\"\npassword = \"changeme\"\n",
                es.url
            ),
            ..Options::default()
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    // 30 spans in three requests; 3 of them the cluster cannot map.
    for request in 0..3u64 {
        let spans = (request * 10..request * 10 + 10)
            .map(|i| span(i, now, i % 10 == 7))
            .collect();
        server.send_spans("planner", spans);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = LogsServiceClient::connect(server.grpc.clone())
            .await
            .expect("connect");
        let record = LogRecord {
            time_unix_nano: now,
            severity_text: "WARN".into(),
            severity_number: 13,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("claim contested".into())),
            }),
            ..Default::default()
        };
        client
            .export(ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![record],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .expect("export logs");
    });

    let dead = eventually("three dead letters", || {
        let rows = server.rows(
            "SELECT sink, source_table, destination, status, error_type, reason, document \
             FROM dead_letters ORDER BY document",
        );
        (rows.len() == 3).then_some(rows)
    });
    let spans = eventually("27 span documents and the log", || {
        es.with(|c| {
            let by_index = |index: &str| {
                c.documents
                    .iter()
                    .filter(|(i, _)| i == index)
                    .map(|(_, d)| d.clone())
                    .collect::<Vec<_>>()
            };
            let spans = by_index("traces-generic.otel-default");
            let logs = by_index("logs-generic.otel-default");
            (spans.len() >= 27 && logs.len() == 1).then(|| {
                assert_eq!(logs[0]["body"]["text"], "claim contested");
                assert_eq!(logs[0]["severity_text"], "WARN");
                assert!(logs[0]["@timestamp"].is_string(), "{}", logs[0]);
                spans
            })
        })
    });
    // Each span exactly once, none of the refused ones.
    let mut ids: HashMap<String, usize> = HashMap::new();
    for doc in &spans {
        *ids.entry(doc["span_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        assert_eq!(doc["resource"]["attributes"]["service.name"], "planner");
        assert_eq!(doc["kind"], "CLIENT");
        assert_eq!(doc["duration"], 2_000_000);
        assert!(doc["attributes"]["gen_ai.agent.id"].is_string(), "{doc}");
    }
    assert_eq!(spans.len(), 27, "duplicates: {ids:?}");
    assert_eq!(ids.len(), 27);
    let (rejected, refused, mapping_errors) = es.with(|c| {
        (
            c.rejected_items,
            c.refused_requests.clone(),
            c.mapping_errors,
        )
    });
    assert!(
        rejected >= 9,
        "the stand-in refused {rejected} items with 429"
    );
    assert!(refused.is_empty(), "invalid bulk requests: {refused:?}");
    assert_eq!(mapping_errors, 3);

    for row in &dead {
        assert_eq!(row[0], "elasticsearch");
        assert_eq!(row[1], "spans");
        assert_eq!(row[2], "traces-generic.otel-default");
        assert_eq!(row[3], 400);
        assert_eq!(row[4], "document_parsing_exception");
        assert!(
            row[5]
                .as_str()
                .is_some_and(|r| r.contains("attributes.es.test")),
            "{row:?}"
        );
        let document: serde_json::Value =
            serde_json::from_str(row[6].as_str().unwrap_or_default()).expect("JSON document");
        assert_eq!(document["attributes"]["es.test"], "mapping_error");
    }
    let (status, body) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics.contains("swarmscope_sink_dead_letters_total{sink=\"elasticsearch\"} 3"),
        "{metrics}"
    );
    let retried =
        format!("swarmscope_sink_item_retries_total{{sink=\"elasticsearch\"}} {rejected}");
    assert!(metrics.contains(&retried), "{retried} not in\n{metrics}");
}

#[test]
fn an_api_key_signs_in_and_a_wrong_one_loses_nothing() {
    // The sink starts with a key the cluster does not know: refused (401), retried.
    let es = Elasticsearch::start_with_api_key("a2V5LWlkOnNlY3JldA==");
    let (_tmp, dir) = temp_data_dir();
    let config = |key: &str| Options {
        extra: format!(
            "[sinks.elasticsearch]\nendpoint = \"{}\"\napi_key = \"{key}\"\n",
            es.url
        ),
        ..Options::default()
    };
    let server = Server::start_with(&dir, config("d3Jvbmc6a2V5"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    server.send_spans("keyed", (0..5).map(|i| span(i, now, false)).collect());
    eventually("the wrong key refused", || {
        es.with(|c| (c.unauthorized >= 2).then_some(()))
    });
    assert_eq!(es.with(|c| c.documents.len()), 0);
    assert!(server.stop().success());
    // With the right key, what waited on disk arrives.
    let server = Server::start_with(&dir, config("a2V5LWlkOnNlY3JldA=="));
    eventually("the 5 spans", || (es.span_documents() == 5).then_some(()));
    assert!(server.stop().success());
}
