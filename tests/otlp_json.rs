//! OTLP/JSON over HTTP: the protocol's own examples (`tests/fixtures/otlp-json`, copied from the OTLP repository) and
//! bodies written by hand per the spec, read back with SQL.

mod common;

use common::{blocking_request, temp_data_dir, Server};
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/otlp-json")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn post_json(server: &Server, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (status, body) = blocking_request(
        "POST",
        &format!("{}{path}", server.http),
        &[("content-type", "application/json".into())],
        body,
    )
    .expect("request");
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

fn row(v: serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().expect("array").clone()
}

#[test]
fn protocol_examples_are_stored() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);

    let (status, response) = post_json(&server, "/v1/traces", &fixture("trace.json"));
    assert_eq!((status, response), (200, json!({})));
    assert_eq!(
        server.rows(
            "SELECT trace_id, span_id, parent_span_id, name, kind, service_name, scope_name, \
             scope_version, scope_attributes['my.scope.attribute'], attributes['my.span.attr'], \
             CAST(start_time AS VARCHAR), duration_ns FROM spans"
        ),
        vec![row(json!([
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "eee19b7ec3c1b173",
            "I'm a server span",
            "SERVER",
            "my.service",
            "my.library",
            "1.0.0",
            "some scope attribute",
            "some value",
            "2018-12-13T14:51:00Z",
            1_000_000_000
        ]))]
    );

    let (status, response) = post_json(&server, "/v1/logs", &fixture("logs.json"));
    assert_eq!((status, response), (200, json!({})));
    assert_eq!(
        server.rows(
            "SELECT body, severity_text, trace_id, span_id, attributes['boolean.attribute'], \
             attributes['int.attribute'], attributes['double.attribute'], attributes['array.attribute'], \
             attributes['map.attribute'], CAST(time AS VARCHAR) FROM logs"
        ),
        vec![row(json!([
            "Example log record",
            "Information",
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "true",
            "10",
            "637.704",
            "[\"many\",\"values\"]",
            "{\"some.map.key\":\"some value\"}",
            "2018-12-13T14:51:00.300Z"
        ]))]
    );

    // The example's histogram has 3 bucket counts for 1 bound, which the OTLP data
    // model forbids (it must be bounds + 1): that point is rejected, the rest stored.
    let (status, response) = post_json(&server, "/v1/metrics", &fixture("metrics.json"));
    assert_eq!(status, 200);
    assert_eq!(response["partialSuccess"]["rejectedDataPoints"], "1");
    assert!(
        response["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("3 bucket counts for 1 explicit bounds"),
        "{response}"
    );
    assert_eq!(
        server.rows(
            "SELECT metric_name, metric_type, value, is_monotonic, aggregation_temporality, \
             description, start_time IS NULL FROM metrics ORDER BY metric_name"
        ),
        vec![
            row(json!([
                "my.counter",
                "sum",
                5.0,
                true,
                "DELTA",
                "I`m a Counter",
                false
            ])),
            row(json!([
                "my.gauge",
                "gauge",
                10.0,
                null,
                null,
                "I`m a Gauge",
                true
            ])),
        ]
    );
}

#[test]
fn hand_written_bodies_follow_the_otlp_json_rules() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    // Hex ids in lower case, integer enums, lowerCamelCase, 64-bit ints as strings,
    // every AnyValue kind, events and links.
    let traces = json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "planner"}},
            {"key": "host.cpu", "value": {"intValue": "8"}}
        ], "droppedAttributesCount": 1},
        "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
        "scopeSpans": [{
            "scope": {"name": "agents", "version": "0.3"},
            "spans": [{
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "spanId": "b7ad6b7169203331",
                "traceState": "vendor=1",
                "name": "gen_ai chat",
                "kind": 3,
                "flags": 257,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000250000000",
                "attributes": [
                    {"key": "gen_ai.agent.id", "value": {"stringValue": "agent-1"}},
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "9007199254740993"}},
                    {"key": "temperature", "value": {"doubleValue": 0.25}},
                    {"key": "stream", "value": {"boolValue": false}},
                    {"key": "blob", "value": {"bytesValue": "aGVsbG8="}}
                ],
                "droppedAttributesCount": 2,
                "events": [{"timeUnixNano": "1700000000100000000", "name": "tool_call",
                            "attributes": [{"key": "tool", "value": {"stringValue": "search"}}]}],
                "droppedEventsCount": 3,
                "links": [{"traceId": "11111111111111111111111111111111", "spanId": "2222222222222222",
                           "attributes": [{"key": "rel", "value": {"stringValue": "follows"}}]}],
                "status": {"code": 2, "message": "rate limited"}
            }]
        }]
    }]});
    let (status, _) = post_json(&server, "/v1/traces", traces.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(
        server.rows(
            "SELECT kind, status_code, status_message, flags, trace_state, agent_id, \
             attributes['gen_ai.usage.input_tokens'], attributes['temperature'], attributes['stream'], \
             attributes['blob'], resource_attributes['host.cpu'], resource_dropped_attributes_count, \
             resource_schema_url, dropped_attributes_count, dropped_events_count, \
             events[1]['name'], CAST(events[1]['time'] AS VARCHAR), links[1]['trace_id'], \
             links[1]['attributes']['rel'], duration_ns FROM spans"
        ),
        vec![row(json!([
            "CLIENT", "ERROR", "rate limited", 257, "vendor=1", "agent-1",
            "9007199254740993", "0.25", "false", "aGVsbG8=", "8", 1,
            "https://opentelemetry.io/schemas/1.26.0", 2, 3,
            "tool_call", "2023-11-14T22:13:20.100Z", "11111111111111111111111111111111",
            "follows", 250_000_000
        ]))]
    );

    // All five metric kinds.
    let metrics = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "tokens", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
            "dataPoints": [{"asInt": "120", "timeUnixNano": "1700000000000000000"}]}},
        {"name": "latency", "histogram": {"aggregationTemporality": 1, "dataPoints": [{
            "timeUnixNano": "1700000000000000000", "count": "6", "sum": 21.5,
            "bucketCounts": ["1", "2", "3"], "explicitBounds": [1.0, 5.0]}]}},
        {"name": "exp", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [{
            "timeUnixNano": "1700000000000000000", "count": "5", "scale": 3, "zeroCount": "1",
            "positive": {"offset": -2, "bucketCounts": ["1", "3"]}}]}},
        {"name": "rpc_quantiles", "summary": {"dataPoints": [{
            "timeUnixNano": "1700000000000000000", "count": "10", "sum": 100.0,
            "quantileValues": [{"quantile": 0.5, "value": 9.0}, {"quantile": 0.99, "value": 30.0}]}]}},
        {"name": "workers", "gauge": {"dataPoints": [{"asDouble": 3.5, "timeUnixNano": "1700000000000000000"}]}}
    ]}]}]});
    let (status, response) = post_json(&server, "/v1/metrics", metrics.to_string().as_bytes());
    assert_eq!((status, response), (200, json!({})));
    assert_eq!(
        server.rows(
            "SELECT metric_name, metric_type, value, value_int, count, sum, bucket_counts, \
             scale, zero_count, positive_offset, positive_bucket_counts, quantiles \
             FROM metrics ORDER BY metric_name"
        ),
        vec![
            row(json!([
                "exp",
                "exponential_histogram",
                null,
                null,
                5,
                null,
                null,
                3,
                1,
                -2,
                [1, 3],
                null
            ])),
            row(json!([
                "latency",
                "histogram",
                null,
                null,
                6,
                21.5,
                [1, 2, 3],
                null,
                null,
                null,
                null,
                null
            ])),
            row(
                json!(["rpc_quantiles", "summary", null, null, 10, 100.0, null, null, null, null, null,
                [{"quantile": 0.5, "value": 9.0}, {"quantile": 0.99, "value": 30.0}]])
            ),
            row(json!([
                "tokens", "sum", 120.0, 120, null, null, null, null, null, null, null, null
            ])),
            row(json!([
                "workers", "gauge", 3.5, null, null, null, null, null, null, null, null, null
            ])),
        ]
    );

    // A body that is not OTLP/JSON is refused whole, naming the field.
    let (status, response) = post_json(
        &server,
        "/v1/logs",
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"not-hex"}]}]}]}"#,
    );
    assert_eq!(status, 400);
    assert!(
        response["message"]
            .as_str()
            .unwrap_or("")
            .contains("resourceLogs[0].scopeLogs[0].logRecords[0].traceId"),
        "{response}"
    );
    assert_eq!(server.scalar("SELECT count(*) FROM logs"), 0);
}
