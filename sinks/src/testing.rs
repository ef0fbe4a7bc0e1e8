//! Batches for the unit tests of framing, the log and the queues: one `Int64` column
//! `n`, so that a test can tell its records apart by their first value; and trace
//! export requests as a receiver gets them.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

/// A batch whose column `n` holds `n` and `n + 1`.
pub(crate) fn batch(n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![n, n + 1]))])
        .unwrap_or_else(|e| unreachable!("{e}"))
}

/// The first value of column `n`.
pub(crate) fn first(batch: &RecordBatch) -> i64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map_or(i64::MIN, |a| a.value(0))
}

/// A protobuf `ExportTraceServiceRequest` of one span starting at each of `starts`
/// (Unix nanoseconds), every span valid, so that
/// [`spans_from_protobuf`](swarmscope_processors::convert::spans_from_protobuf) takes
/// it.
pub(crate) fn trace_request(starts: &[u64]) -> bytes::Bytes {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    let text = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{i}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1000,
            attributes: vec![text("gen_ai.request.model", "gpt-4o")],
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec().into()
}
