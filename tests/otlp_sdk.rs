//! The real OpenTelemetry Rust SDK and its OTLP exporters (gRPC and HTTP) against a
//! running swarmscope; what they send is read back with SQL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{temp_data_dir, Server};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .build()
}

fn tracer_provider(server: &Server, transport: Transport, service: &str) -> SdkTracerProvider {
    let exporter = match transport {
        Transport::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&server.grpc)
            .with_timeout(Duration::from_secs(10))
            .build(),
        Transport::HttpProtobuf | Transport::HttpJson => {
            let protocol = match transport {
                Transport::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(format!("{}/v1/traces", server.http))
                .with_timeout(Duration::from_secs(10))
                .build()
        }
    }
    .expect("span exporter");
    // The simple processor exports on the calling thread, which has the test's
    // runtime entered; the batch processor's own thread has no Tokio reactor for tonic.
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource(service))
        .build()
}

/// Sends 3 spans (a root with two children, one failing) and returns the trace id as
/// the SDK reports it.
fn send_trace(provider: &SdkTracerProvider) -> String {
    let tracer = provider.tracer("swarm-agent");
    let root = tracer
        .span_builder("plan sprint")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("gen_ai.agent.id", "agent-7"),
            KeyValue::new("coordination.work.id", "W-42"),
            KeyValue::new("coordination.work.story_points", 5.5),
            KeyValue::new("retries", 3_i64),
            KeyValue::new("cached", true),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let cx = opentelemetry::Context::current_with_span(root);
    let mut child = tracer
        .span_builder("claim work")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    child.add_event("claimed", vec![KeyValue::new("queue", "backlog")]);
    child.end();
    let mut failing = tracer
        .span_builder("complete work")
        .with_kind(SpanKind::Internal)
        .start_with_context(&tracer, &cx);
    failing.set_status(Status::error("conflict"));
    failing.end();
    cx.span().end();
    provider.force_flush().expect("flush spans");
    trace_id
}

fn check_trace(server: &Server, service: &str, trace_id: &str) {
    let q = |sql: &str| server.rows(&sql.replace("$svc", service).replace("$tid", trace_id));
    assert_eq!(
        q("SELECT count(*) FROM spans WHERE service_name = '$svc' AND trace_id = '$tid'"),
        vec![vec![serde_json::json!(3)]]
    );
    let rows = q(
        "SELECT name, kind, status_code, status_message, parent_span_id IS NULL, agent_id \
         FROM spans WHERE trace_id = '$tid' ORDER BY name",
    );
    assert_eq!(
        rows,
        vec![
            serde_json::json!(["claim work", "CLIENT", "UNSET", "", false, null])
                .as_array()
                .unwrap()
                .clone(),
            serde_json::json!([
                "complete work",
                "INTERNAL",
                "ERROR",
                "conflict",
                false,
                null
            ])
            .as_array()
            .unwrap()
            .clone(),
            serde_json::json!(["plan sprint", "SERVER", "UNSET", "", true, "agent-7"])
                .as_array()
                .unwrap()
                .clone(),
        ]
    );
    // Attribute values of every type, rendered as docs/tables.md says.
    let attrs = q(
        "SELECT attributes['coordination.work.id'], attributes['coordination.work.story_points'], \
         attributes['retries'], attributes['cached'], resource_attributes['deployment.environment'], \
         scope_name, duration_ns >= 0 \
         FROM spans WHERE trace_id = '$tid' AND name = 'plan sprint'",
    );
    assert_eq!(
        attrs,
        vec![
            serde_json::json!(["W-42", "5.5", "3", "true", "test", "swarm-agent", true])
                .as_array()
                .unwrap()
                .clone()
        ]
    );
    // Events and the parent/child link survive.
    let events = q(
        "SELECT events[1]['name'], events[1]['attributes']['queue'] FROM spans \
         WHERE trace_id = '$tid' AND name = 'claim work'",
    );
    assert_eq!(
        events,
        vec![serde_json::json!(["claimed", "backlog"])
            .as_array()
            .unwrap()
            .clone()]
    );
    let parented = q(
        "SELECT count(*) FROM spans c JOIN spans p ON c.parent_span_id = p.span_id \
         WHERE c.trace_id = '$tid' AND p.name = 'plan sprint'",
    );
    assert_eq!(parented, vec![vec![serde_json::json!(2)]]);
}

fn runtime() -> tokio::runtime::Runtime {
    // The SDK's HTTP exporter builds a reqwest client, whose rustls needs a provider.
    swarmscope_sinks::tls::install_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn sdk_spans_over_grpc_and_http_are_queryable() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let rt = runtime();
    for (transport, service) in [
        (Transport::Grpc, "svc-grpc"),
        (Transport::HttpProtobuf, "svc-http-proto"),
        (Transport::HttpJson, "svc-http-json"),
    ] {
        let _guard = rt.enter();
        let provider = tracer_provider(&server, transport, service);
        let trace_id = send_trace(&provider);
        provider.shutdown().expect("shutdown");
        assert_eq!(trace_id.len(), 32, "{transport:?}");
        check_trace(&server, service, &trace_id);
    }
    assert_eq!(server.scalar("SELECT count(*) FROM spans"), 9);
}

#[test]
fn sdk_metrics_over_grpc_and_http_are_queryable() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let rt = runtime();
    for (transport, service) in [
        (Transport::Grpc, "m-grpc"),
        (Transport::HttpProtobuf, "m-http"),
    ] {
        let provider = rt.block_on(async {
            let exporter = match transport {
                Transport::Grpc => opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(&server.grpc)
                    .build(),
                _ => opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("{}/v1/metrics", server.http))
                    .build(),
            }
            .expect("metric exporter");
            // Exports run as Tokio tasks, where both tonic and async reqwest work.
            let reader =
                PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
            SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource(service))
                .build()
        });
        let meter = provider.meter("swarm-meter");
        let counter = meter
            .u64_counter("work_items_completed")
            .with_unit("{item}")
            .build();
        counter.add(2, &[KeyValue::new("team", "red")]);
        counter.add(3, &[KeyValue::new("team", "red")]);
        counter.add(7, &[KeyValue::new("team", "blue")]);
        let histogram = meter
            .f64_histogram("claim_latency")
            .with_unit("ms")
            .with_boundaries(vec![10.0, 100.0])
            .build();
        for v in [5.0, 50.0, 60.0, 500.0] {
            histogram.record(v, &[]);
        }
        let gauge = meter.f64_gauge("queue_depth").build();
        gauge.record(12.5, &[KeyValue::new("queue", "backlog")]);
        // Shutdown collects and exports once (a force_flush before it would export the
        // cumulative points a second time).
        provider.shutdown().expect("shutdown");

        let q = |sql: &str| server.rows(&sql.replace("$svc", service));
        assert_eq!(
            q("SELECT attributes['team'], value, metric_type, is_monotonic, aggregation_temporality, unit \
               FROM metrics WHERE service_name = '$svc' AND metric_name = 'work_items_completed' \
               ORDER BY 1"),
            vec![
                serde_json::json!(["blue", 7.0, "sum", true, "CUMULATIVE", "{item}"]).as_array().unwrap().clone(),
                serde_json::json!(["red", 5.0, "sum", true, "CUMULATIVE", "{item}"]).as_array().unwrap().clone(),
            ]
        );
        assert_eq!(
            q("SELECT count, sum, min, max, bucket_counts, explicit_bounds, metric_type FROM metrics \
               WHERE service_name = '$svc' AND metric_name = 'claim_latency'"),
            vec![serde_json::json!([4, 615.0, 5.0, 500.0, [1, 2, 1], [10.0, 100.0], "histogram"]).as_array().unwrap().clone()]
        );
        assert_eq!(
            q(
                "SELECT value, metric_type, attributes['queue'] FROM metrics \
               WHERE service_name = '$svc' AND metric_name = 'queue_depth'"
            ),
            vec![serde_json::json!([12.5, "gauge", "backlog"])
                .as_array()
                .unwrap()
                .clone()]
        );
    }
}

#[test]
fn sdk_logs_over_grpc_and_http_are_queryable() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let rt = runtime();
    for (transport, service) in [(Transport::Grpc, "l-grpc"), (Transport::HttpJson, "l-http")] {
        let provider = rt.block_on(async {
            let exporter = match transport {
                Transport::Grpc => opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(&server.grpc)
                    .build(),
                _ => opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpJson)
                    .with_endpoint(format!("{}/v1/logs", server.http))
                    .build(),
            }
            .expect("log exporter");
            SdkLoggerProvider::builder()
                .with_simple_exporter(exporter)
                .with_resource(resource(service))
                .build()
        });
        let _guard = rt.enter();
        let logger = provider.logger("swarm-logger");
        for (i, severity) in [Severity::Info, Severity::Warn, Severity::Error]
            .into_iter()
            .enumerate()
        {
            let mut record = logger.create_log_record();
            record.set_body(AnyValue::from(format!("agent message {i}")));
            record.set_severity_number(severity);
            record.set_severity_text(severity.name());
            record.add_attribute("work.id", format!("W-{i}"));
            logger.emit(record);
        }
        provider.force_flush().expect("flush logs");
        provider.shutdown().expect("shutdown");
        let rows = server.rows(&format!(
            "SELECT body, severity_number, severity_text, attributes['work.id'], scope_name \
             FROM logs WHERE service_name = '{service}' ORDER BY body"
        ));
        assert_eq!(
            rows,
            vec![
                serde_json::json!(["agent message 0", 9, "INFO", "W-0", "swarm-logger"])
                    .as_array()
                    .unwrap()
                    .clone(),
                serde_json::json!(["agent message 1", 13, "WARN", "W-1", "swarm-logger"])
                    .as_array()
                    .unwrap()
                    .clone(),
                serde_json::json!(["agent message 2", 17, "ERROR", "W-2", "swarm-logger"])
                    .as_array()
                    .unwrap()
                    .clone(),
            ]
        );
    }
}

#[test]
fn exporter_with_bearer_token_is_accepted_and_without_is_refused() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        common::Options {
            otlp_token: Some("sekrit".into()),
            ..Default::default()
        },
    );
    let rt = runtime();
    let with_token = rt.block_on(async {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", "Bearer sekrit".parse().expect("header"));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&server.grpc)
            .with_metadata(metadata)
            .build()
            .expect("exporter");
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build()
    });
    let http_with_token = rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", server.http))
            .with_headers(HashMap::from([(
                "Authorization".to_owned(),
                "Bearer sekrit".to_owned(),
            )]))
            .build()
            .expect("exporter");
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build()
    });
    let without = rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&server.grpc)
            .build()
            .expect("exporter");
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build()
    });
    for (provider, name) in [
        (&with_token, "authorised"),
        (&http_with_token, "authorised-http"),
        (&without, "anonymous"),
    ] {
        let tracer = provider.tracer("t");
        // The simple processor exports on the calling thread; the runtime's workers
        // drive the connection.
        let _guard = rt.enter();
        tracer.in_span(name.to_owned(), |_| {});
    }
    assert_eq!(
        server.rows("SELECT name FROM spans ORDER BY name"),
        vec![
            vec![serde_json::json!("authorised")],
            vec![serde_json::json!("authorised-http")]
        ]
    );
}
