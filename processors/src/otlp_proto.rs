//! OTLP protobuf decoding, with invalid UTF-8 repaired rather than refused.
//!
//! Protobuf `string` fields must hold UTF-8, and prost refuses a whole message when one
//! does not. OpenTelemetry's position (OTEP 0257, "Consistent position towards UTF-8
//! validation") is that a receiver should not drop a whole batch for it, and that the
//! default correction is Rust's `String::from_utf8_lossy`: every run of invalid bytes
//! becomes one U+FFFD. So when prost refuses a message, [`decode`] walks the wire
//! format once with the OTLP schema in hand ([`Msg`]), rewrites each string field that
//! is not UTF-8 that way, and decodes the result. Messages that were valid take the
//! plain prost path and pay nothing.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::encoding::encode_varint;
use prost::Message;

use crate::wire::{Fields, Malformed, Value};

/// Nesting deeper than this is refused, as prost's own recursion limit does.
const MAX_DEPTH: usize = 100;

/// A decoded request and how many of its string fields were repaired.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded<T> {
    pub request: T,
    pub repaired_strings: usize,
}

impl<T> Decoded<T> {
    /// The warning to return in `partial_success.error_message`, if any was repaired.
    pub fn warning(&self) -> Option<String> {
        (self.repaired_strings > 0).then(|| {
            format!(
                "{} string field(s) were not valid UTF-8; each invalid sequence was replaced with U+FFFD",
                self.repaired_strings
            )
        })
    }
}

/// An OTLP export request that [`decode`] knows the schema of.
pub trait OtlpRequest: Message + Default + Sized {
    const ROOT: Msg;
}

impl OtlpRequest for ExportTraceServiceRequest {
    const ROOT: Msg = Msg::TraceRequest;
}
impl OtlpRequest for ExportMetricsServiceRequest {
    const ROOT: Msg = Msg::MetricsRequest;
}
impl OtlpRequest for ExportLogsServiceRequest {
    const ROOT: Msg = Msg::LogsRequest;
}

/// Decodes `bytes` as `T`; if that fails only because string fields hold invalid
/// UTF-8, decodes them repaired instead. Any other fault is prost's error.
pub fn decode<T: OtlpRequest>(bytes: &[u8]) -> Result<Decoded<T>, prost::DecodeError> {
    match T::decode(bytes) {
        Ok(request) => Ok(Decoded {
            request,
            repaired_strings: 0,
        }),
        Err(original) => {
            let mut repaired = Vec::with_capacity(bytes.len() + 16);
            let mut count = 0;
            if repair(bytes, T::ROOT, 0, &mut repaired, &mut count).is_err() || count == 0 {
                return Err(original);
            }
            Ok(Decoded {
                request: T::decode(repaired.as_slice())?,
                repaired_strings: count,
            })
        }
    }
}

/// The OTLP messages (trace, metrics and logs requests, and everything inside them)
/// whose string and message fields [`repair`] needs to tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    TraceRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint,
    SummaryDataPoint,
    Exemplar,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    Resource,
    EntityRef,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a length-delimited field of a message holds.
enum Field {
    Str,
    Msg(Msg),
    /// Bytes, packed numbers, or a field this schema does not know: copied as is.
    Opaque,
}

/// The field numbers of `opentelemetry/proto/**/*.proto` (v1).
fn field(msg: Msg, number: u64) -> Field {
    use Field::{Msg as M, Str};
    use Msg::*;
    match (msg, number) {
        (TraceRequest, 1) => M(ResourceSpans),
        (ResourceSpans, 1) | (ResourceMetrics, 1) | (ResourceLogs, 1) => M(Resource),
        (ResourceSpans, 2) => M(ScopeSpans),
        (ResourceMetrics, 2) => M(ScopeMetrics),
        (ResourceLogs, 2) => M(ScopeLogs),
        (ResourceSpans | ResourceMetrics | ResourceLogs, 3) => Str,
        (ScopeSpans | ScopeMetrics | ScopeLogs, 1) => M(Scope),
        (ScopeSpans, 2) => M(Span),
        (ScopeMetrics, 2) => M(Metric),
        (ScopeLogs, 2) => M(LogRecord),
        (ScopeSpans | ScopeMetrics | ScopeLogs, 3) => Str,
        (Span, 3 | 5) => Str,
        (Span, 9) => M(KeyValue),
        (Span, 11) => M(Event),
        (Span, 13) => M(Link),
        (Span, 15) => M(Status),
        (Event, 2) => Str,
        (Event, 3) => M(KeyValue),
        (Link, 3) => Str,
        (Link, 4) => M(KeyValue),
        (Status, 2) => Str,
        (MetricsRequest, 1) => M(ResourceMetrics),
        (Metric, 1..=3) => Str,
        (Metric, 5) => M(Gauge),
        (Metric, 7) => M(Sum),
        (Metric, 9) => M(Histogram),
        (Metric, 10) => M(ExponentialHistogram),
        (Metric, 11) => M(Summary),
        (Metric, 12) => M(KeyValue),
        (Gauge | Sum, 1) => M(NumberDataPoint),
        (Histogram, 1) => M(HistogramDataPoint),
        (ExponentialHistogram, 1) => M(ExponentialHistogramDataPoint),
        (Summary, 1) => M(SummaryDataPoint),
        (NumberDataPoint, 7) | (HistogramDataPoint, 9) | (SummaryDataPoint, 7) => M(KeyValue),
        (ExponentialHistogramDataPoint, 1) => M(KeyValue),
        (NumberDataPoint, 5) | (HistogramDataPoint, 8) | (ExponentialHistogramDataPoint, 11) => {
            M(Exemplar)
        }
        (Exemplar, 7) => M(KeyValue),
        (LogsRequest, 1) => M(ResourceLogs),
        (LogRecord, 3 | 12) => Str,
        (LogRecord, 5) => M(AnyValue),
        (LogRecord, 6) => M(KeyValue),
        (Resource, 1) => M(KeyValue),
        (Resource, 3) => M(EntityRef),
        (EntityRef, 1..=4) => Str,
        (Scope, 1 | 2) => Str,
        (Scope, 3) => M(KeyValue),
        (KeyValue, 1) => Str,
        (KeyValue, 2) => M(AnyValue),
        (AnyValue, 1) => Str,
        (AnyValue, 5) => M(ArrayValue),
        (AnyValue, 6) => M(KeyValueList),
        (ArrayValue, 1) => M(AnyValue),
        (KeyValueList, 1) => M(KeyValue),
        _ => Field::Opaque,
    }
}

/// Why the wire walk gave up; the caller then reports prost's own error.
fn repair(
    buf: &[u8],
    msg: Msg,
    depth: usize,
    out: &mut Vec<u8>,
    count: &mut usize,
) -> Result<(), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let mut fields = Fields::of(buf);
    loop {
        let start = fields.rest();
        let Some((number, value)) = fields.next()? else {
            return Ok(());
        };
        if let Value::Bytes(bytes) = value {
            // Wire type 2: length-delimited.
            let key = number << 3 | 2;
            match field(msg, number) {
                Field::Str if std::str::from_utf8(bytes).is_err() => {
                    let fixed = String::from_utf8_lossy(bytes);
                    *count += 1;
                    encode_varint(key, out);
                    encode_varint(fixed.len() as u64, out);
                    out.extend_from_slice(fixed.as_bytes());
                    continue;
                }
                Field::Msg(inner) => {
                    let mut nested = Vec::with_capacity(bytes.len());
                    let before = *count;
                    repair(bytes, inner, depth + 1, &mut nested, count)?;
                    if *count != before {
                        encode_varint(key, out);
                        encode_varint(nested.len() as u64, out);
                        out.extend_from_slice(&nested);
                        continue;
                    }
                }
                _ => {}
            }
        }
        // Unchanged: the field's bytes as they came.
        out.extend_from_slice(&start[..start.len() - fields.rest().len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// A request whose strings carry `MARK` where the test puts invalid bytes.
    const MARK: &str = "\u{1}\u{2}\u{3}";

    fn traces() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: format!("name{MARK}"),
                            start_time_unix_nano: 5,
                            attributes: vec![KeyValue {
                                key: format!("key{MARK}"),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(format!(
                                        "value{MARK}"
                                    ))),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                        Span {
                            name: "fine".into(),
                            // Bytes that are not UTF-8 are allowed in bytes fields.
                            span_id: vec![0xff; 8],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// `MARK` replaced on the wire by a lone continuation byte and a truncated
    /// sequence (same length, so the length prefixes stay right).
    fn corrupt(bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        let mark = MARK.as_bytes();
        let mut i = 0;
        while i + mark.len() <= out.len() {
            if &out[i..i + mark.len()] == mark {
                out[i..i + mark.len()].copy_from_slice(&[0x80, 0xe2, 0x82]);
            }
            i += 1;
        }
        out
    }

    #[test]
    fn valid_requests_decode_as_prost_does() {
        let bytes = traces().encode_to_vec();
        let decoded = decode::<ExportTraceServiceRequest>(&bytes).unwrap();
        assert_eq!(decoded.request, traces());
        assert_eq!(decoded.repaired_strings, 0);
        assert_eq!(decoded.warning(), None);
    }

    #[test]
    fn invalid_utf8_in_names_keys_and_values_is_replaced() {
        let bytes = corrupt(traces().encode_to_vec());
        assert!(
            ExportTraceServiceRequest::decode(bytes.as_slice()).is_err(),
            "prost refuses it"
        );
        let decoded = decode::<ExportTraceServiceRequest>(&bytes).unwrap();
        assert_eq!(decoded.repaired_strings, 3);
        let span = &decoded.request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "name\u{fffd}\u{fffd}");
        assert_eq!(span.attributes[0].key, "key\u{fffd}\u{fffd}");
        assert_eq!(
            span.attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    "value\u{fffd}\u{fffd}".into()
                ))
            })
        );
        // Everything else is as sent.
        assert_eq!(span.trace_id, vec![1; 16]);
        assert_eq!(span.start_time_unix_nano, 5);
        let other = &decoded.request.resource_spans[0].scope_spans[0].spans[1];
        assert_eq!(other.name, "fine");
        assert_eq!(other.span_id, vec![0xff; 8]);
        assert!(decoded.warning().unwrap().contains("3 string field(s)"));
    }

    #[test]
    fn log_bodies_inside_arrays_are_repaired() {
        let body = AnyValue {
            value: Some(any_value::Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::StringValue(format!("x{MARK}"))),
                    }],
                },
            )),
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(body),
                        severity_text: format!("INFO{MARK}"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = corrupt(request.encode_to_vec());
        let decoded = decode::<ExportLogsServiceRequest>(&bytes).unwrap();
        assert_eq!(decoded.repaired_strings, 2);
        let record = &decoded.request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.severity_text, "INFO\u{fffd}\u{fffd}");
    }

    #[test]
    fn other_faults_are_still_refused_with_prosts_error() {
        let mut bytes = traces().encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(decode::<ExportTraceServiceRequest>(&bytes).is_err());
        assert!(decode::<ExportMetricsServiceRequest>(b"\xff\xff\xff").is_err());
    }
}
