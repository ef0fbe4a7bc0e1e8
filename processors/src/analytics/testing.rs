//! Span batches for the analytics' unit tests, built through the real OTLP conversion.

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::convert::{spans_from_otlp, Converted};
use crate::processor::TableBatch;
use crate::schema::Table;

pub fn kv(key: &str, value: &str) -> KeyValue {
    any(key, any_value::Value::StringValue(value.into()))
}

pub fn kv_int(key: &str, value: i64) -> KeyValue {
    any(key, any_value::Value::IntValue(value))
}

fn any(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A span of `service` ending at `end_ms`, lasting `duration_ms`, with `attributes`.
pub fn span(n: u64, end_ms: u64, duration_ms: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: format!("op {n}"),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: end_ms.saturating_sub(duration_ms) * 1_000_000,
        end_time_unix_nano: end_ms * 1_000_000,
        attributes,
        ..Default::default()
    }
}

pub fn failed(mut s: Span) -> Span {
    s.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "boom".into(),
    });
    s
}

/// The spans of `service` as the pipeline hands them to processors: the rows alone
/// ([`table_batch`] adds their ids as numbers, as the receiver does).
pub fn batch(service: &str, spans: Vec<Span>) -> RecordBatch {
    converted(service, spans).batch
}

/// The spans of `service` as the pipeline hands them to processors, with their ids as
/// numbers beside the rows.
pub fn table_batch(service: &str, spans: Vec<Span>) -> TableBatch {
    let converted = converted(service, spans);
    let with_ids = TableBatch::new(Table::SPANS, converted.batch).with_ids(converted.ids);
    assert!(with_ids.ids.is_some(), "the receiver gives spans' ids");
    with_ids
}

fn converted(service: &str, spans: Vec<Span>) -> Converted {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    spans_from_otlp(&request).expect("valid spans")
}
