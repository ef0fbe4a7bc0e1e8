//! Acknowledged means kept, for old timestamps too: a record that retention would
//! delete at once is refused through `partial_success`, never acknowledged and then
//! deleted.

mod common;

use std::time::SystemTime;

use common::{
    blocking_get, blocking_request, eventually, temp_data_dir, trace_request, Options, Server,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const HOUR: u64 = 3_600_000_000_000;

fn span(id: u64, start: u64) -> Span {
    Span {
        trace_id: [[9u8; 8], id.to_be_bytes()].concat(),
        span_id: id.to_be_bytes().to_vec(),
        name: format!("span-{id}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

#[test]
fn records_older_than_retention_are_reported_and_the_fresh_ones_survive_restart_and_retention() {
    let (_tmp, dir) = temp_data_dir();
    let options = Options {
        retention_hours: Some(24),
        flush_interval_ms: Some(200),
        ..Options::default()
    };
    let server = Server::start_with(&dir, options.clone());
    let now = now_nanos();
    // 2018, two days ago, and three fresh ones, in one request.
    let request = trace_request(vec![
        span(1, 1_544_712_660_000_000_000),
        span(2, now - 48 * HOUR),
        span(3, now),
        span(4, now - HOUR),
        span(5, now - 2 * HOUR),
    ]);
    let (status, body) = server.post_traces(&request.encode_to_vec());
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(body.as_slice()).expect("response");
    let partial = response.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(
        partial.error_message,
        "2 spans older than retention_hours = 24 were not stored"
    );

    // OTLP/JSON reports it in its own shape.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a","spanId":"0a0a0a0a0a0a0a0a","name":"old","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
    let (status, body) = blocking_request(
        "POST",
        &format!("{}/v1/traces", server.http),
        &[("content-type", "application/json".into())],
        json.as_bytes(),
    )
    .expect("export JSON");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");

    let count = |server: &Server| server.scalar("SELECT count(*) FROM spans").as_i64();
    assert_eq!(count(&server), Some(3));
    let refused = {
        let (_, body) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
        String::from_utf8_lossy(&body).into_owned()
    };
    assert!(
        refused.contains(
            "swarmscope_receiver_refused_spans_total{reason=\"retention\",receiver=\"otlp\",transport=\"http\"} 3"
        ),
        "{refused}"
    );

    // The rows are in Parquet and retention has run over them.
    let runs = eventually("a flush", || {
        // Read before the flush count, so a pass counted here may precede the flush.
        let runs = server.metric("swarmscope_store_retention_runs_total");
        (server.metric("swarmscope_store_flushes_total{result=\"ok\"}") >= 1.0).then_some(runs)
    });
    eventually("a retention pass after the flush", || {
        (server.metric("swarmscope_store_retention_runs_total") > runs).then_some(())
    });
    assert_eq!(count(&server), Some(3));
    assert!(server.stop().success());
    let server = Server::start_with(&dir, options);
    eventually("a retention pass after restart", || {
        (server.metric("swarmscope_store_retention_runs_total") >= 1.0).then_some(())
    });
    assert_eq!(count(&server), Some(3));
    assert_eq!(
        server.metric("swarmscope_store_retention_deleted_files_total"),
        0.0
    );
}

/// The write-ahead log keeps a protobuf trace request as it arrived; after a crash,
/// replay converts it again and keeps exactly the spans that were acknowledged, not
/// those retention refused at receipt.
#[test]
fn a_crash_replays_the_acknowledged_spans_of_a_request_and_not_the_refused_ones() {
    let (_tmp, dir) = temp_data_dir();
    // No flush before the crash: every acknowledged span is only in the log.
    let options = Options {
        retention_hours: Some(24),
        ..Options::default()
    };
    let server = Server::start_with(&dir, options.clone());
    let now = now_nanos();
    let request = trace_request(vec![
        span(11, now - 72 * HOUR),
        span(12, now),
        span(13, now - 30 * HOUR),
        span(14, now - 3 * HOUR),
    ]);
    let (status, body) = server.post_traces(&request.encode_to_vec());
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(body.as_slice()).expect("response");
    assert_eq!(response.partial_success.map(|p| p.rejected_spans), Some(2));
    let names = |server: &Server| {
        server
            .rows("SELECT name FROM spans ORDER BY name")
            .iter()
            .map(|row| row[0].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&server), ["span-12", "span-14"]);
    server.kill9();

    // Replayed before the listeners open.
    let server = Server::start_with(&dir, options);
    assert_eq!(names(&server), ["span-12", "span-14"]);
}
