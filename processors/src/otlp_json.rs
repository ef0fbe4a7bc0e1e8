//! OTLP/JSON → the protobuf message types.
//!
//! Follows the OTLP/JSON rules of the OTLP specification: lowerCamelCase field names
//! (the proto names are accepted too, as any proto3 JSON parser does), trace and span
//! ids as hex (case-insensitive) rather than base64, enums as integers (names are
//! accepted), 64-bit integers as strings or numbers, unknown fields ignored. Errors
//! name the path of the offending field, e.g.
//! `resourceSpans[0].scopeSpans[0].spans[2].traceId: invalid hex`.
//!
//! ```
//! use swarmscope_processors::otlp_json::decode_traces;
//!
//! let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
//!     "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
//!     "name":"claim","kind":2,"startTimeUnixNano":"1544712660000000000",
//!     "endTimeUnixNano":1544712661000000000}]}]}]}"#;
//! let request = decode_traces(body).unwrap();
//! let span = &request.resource_spans[0].scope_spans[0].spans[0];
//! assert_eq!(span.kind, 2);
//! assert_eq!(span.trace_id.len(), 16);
//! ```

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as Any, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_traces(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let value = parse(body)?;
    let root = root(&value)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: root.list("resourceSpans", |o| {
            Ok(ResourceSpans {
                resource: o.opt_obj("resource", resource)?,
                scope_spans: o.list("scopeSpans", |o| {
                    Ok(ScopeSpans {
                        scope: o.opt_obj("scope", scope)?,
                        spans: o.list("spans", span)?,
                        schema_url: o.string("schemaUrl")?,
                    })
                })?,
                schema_url: o.string("schemaUrl")?,
            })
        })?,
    })
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn decode_metrics(body: &[u8]) -> Result<ExportMetricsServiceRequest> {
    let value = parse(body)?;
    let root = root(&value)?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: root.list("resourceMetrics", |o| {
            Ok(ResourceMetrics {
                resource: o.opt_obj("resource", resource)?,
                scope_metrics: o.list("scopeMetrics", |o| {
                    Ok(ScopeMetrics {
                        scope: o.opt_obj("scope", scope)?,
                        metrics: o.list("metrics", metric)?,
                        schema_url: o.string("schemaUrl")?,
                    })
                })?,
                schema_url: o.string("schemaUrl")?,
            })
        })?,
    })
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub fn decode_logs(body: &[u8]) -> Result<ExportLogsServiceRequest> {
    let value = parse(body)?;
    let root = root(&value)?;
    Ok(ExportLogsServiceRequest {
        resource_logs: root.list("resourceLogs", |o| {
            Ok(ResourceLogs {
                resource: o.opt_obj("resource", resource)?,
                scope_logs: o.list("scopeLogs", |o| {
                    Ok(ScopeLogs {
                        scope: o.opt_obj("scope", scope)?,
                        log_records: o.list("logRecords", log_record)?,
                        schema_url: o.string("schemaUrl")?,
                    })
                })?,
                schema_url: o.string("schemaUrl")?,
            })
        })?,
    })
}

fn parse(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| Error::Json(format!("not valid JSON: {e}")))
}

fn root(value: &Value) -> Result<Obj<'_>> {
    match value {
        Value::Object(map) => Ok(Obj {
            map,
            path: String::new(),
        }),
        _ => Err(Error::Json("the body must be a JSON object".into())),
    }
}

/// A JSON object being decoded, with the path that leads to it for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

/// `fooBar` → `foo_bar`, the proto field name a proto3 JSON parser also accepts.
fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Obj<'a> {
    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::Json(format!("{}: {what}", self.at(key)))
    }

    /// The field's value; JSON `null` counts as absent, as in proto3 JSON.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .get(key)
            .or_else(|| self.map.get(&snake(key)))
            .filter(|v| !v.is_null())
    }

    fn take_obj(&self, key: &str, path: String) -> Result<Option<Obj<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj { map: m, path })),
            Some(_) => Err(self.err(key, "expected an object")),
        }
    }

    fn opt_obj<T>(&self, key: &str, f: impl Fn(&Obj<'a>) -> Result<T>) -> Result<Option<T>> {
        self.take_obj(key, self.at(key))?.map(|o| f(&o)).transpose()
    }

    fn list<T>(&self, key: &str, f: impl Fn(&Obj<'a>) -> Result<T>) -> Result<Vec<T>> {
        let items = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(self.err(key, "expected an array")),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(m) => f(&Obj {
                    map: m,
                    path: format!("{}[{i}]", self.at(key)),
                }),
                _ => Err(Error::Json(format!(
                    "{}[{i}]: expected an object",
                    self.at(key)
                ))),
            })
            .collect()
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err(key, "expected a string")),
        }
    }

    fn bool(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(key, "expected true or false")),
        }
    }

    /// An integer field: a JSON number or a decimal string.
    fn int<T: TryFrom<i128> + Default>(&self, key: &str) -> Result<T> {
        match self.get(key) {
            None => Ok(T::default()),
            Some(v) => int_value(v)
                .and_then(|i| T::try_from(i).ok())
                .ok_or_else(|| self.err(key, "expected an integer in range")),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| double_value(v).ok_or_else(|| self.err(key, "expected a number")))
            .transpose()
    }

    fn f64(&self, key: &str) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(0.0))
    }

    fn f64_list(&self, key: &str) -> Result<Vec<f64>> {
        self.array_of(key, double_value)
    }

    fn u64_list(&self, key: &str) -> Result<Vec<u64>> {
        self.array_of(key, |v| int_value(v).and_then(|i| u64::try_from(i).ok()))
    }

    fn array_of<T>(&self, key: &str, f: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| f(v).ok_or_else(|| self.err(&format!("{key}[{i}]"), "bad number")))
                .collect(),
            Some(_) => Err(self.err(key, "expected an array")),
        }
    }

    /// A trace or span id: hex, either case.
    fn hex_id(&self, key: &str) -> Result<Vec<u8>> {
        let s = self.string(key)?;
        hex::decode(&s).map_err(|_| self.err(key, format!("invalid hex id {s:?}")))
    }

    /// An enum: its number, or its proto name.
    fn enumeration(&self, key: &str, names: &[&str]) -> Result<i32> {
        match self.get(key) {
            Some(Value::String(s)) if !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit()) => {
                names
                    .iter()
                    .position(|n| n == s)
                    .map(|i| i as i32)
                    .ok_or_else(|| self.err(key, format!("unknown enum value {s:?}")))
            }
            _ => self.int(key),
        }
    }

    fn attributes(&self, key: &str) -> Result<Vec<KeyValue>> {
        self.list(key, key_value)
    }
}

fn int_value(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                // A float with no fraction (1e9) is still an integer.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1.8e19)
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn double_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.trim().parse().ok(),
        },
        _ => None,
    }
}

fn key_value(o: &Obj<'_>) -> Result<KeyValue> {
    Ok(KeyValue {
        key: o.string("key")?,
        value: o.opt_obj("value", any_value)?,
        ..Default::default()
    })
}

fn any_value(o: &Obj<'_>) -> Result<AnyValue> {
    let value = if let Some(v) = o.get("stringValue") {
        Any::StringValue(
            v.as_str()
                .ok_or_else(|| o.err("stringValue", "expected a string"))?
                .to_owned(),
        )
    } else if o.get("boolValue").is_some() {
        Any::BoolValue(o.bool("boolValue")?)
    } else if o.get("intValue").is_some() {
        Any::IntValue(o.int("intValue")?)
    } else if o.get("doubleValue").is_some() {
        Any::DoubleValue(o.f64("doubleValue")?)
    } else if o.get("bytesValue").is_some() {
        let s = o.string("bytesValue")?;
        Any::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(&s)
                .map_err(|_| o.err("bytesValue", "invalid base64"))?,
        )
    } else if let Some(array) = o.take_obj("arrayValue", o.at("arrayValue"))? {
        Any::ArrayValue(ArrayValue {
            values: array.list("values", any_value)?,
        })
    } else if let Some(kv) = o.take_obj("kvlistValue", o.at("kvlistValue"))? {
        Any::KvlistValue(KeyValueList {
            values: kv.attributes("values")?,
        })
    } else {
        return Ok(AnyValue { value: None });
    };
    Ok(AnyValue { value: Some(value) })
}

fn resource(o: &Obj<'_>) -> Result<Resource> {
    Ok(Resource {
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
        ..Default::default()
    })
}

fn scope(o: &Obj<'_>) -> Result<InstrumentationScope> {
    Ok(InstrumentationScope {
        name: o.string("name")?,
        version: o.string("version")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
    })
}

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
const TEMPORALITIES: &[&str] = &[
    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
    "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_CUMULATIVE",
];

fn span(o: &Obj<'_>) -> Result<Span> {
    Ok(Span {
        trace_id: o.hex_id("traceId")?,
        span_id: o.hex_id("spanId")?,
        trace_state: o.string("traceState")?,
        parent_span_id: o.hex_id("parentSpanId")?,
        flags: o.int("flags")?,
        name: o.string("name")?,
        kind: o.enumeration("kind", SPAN_KINDS)?,
        start_time_unix_nano: o.int("startTimeUnixNano")?,
        end_time_unix_nano: o.int("endTimeUnixNano")?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
        events: o.list("events", |o| {
            Ok(span::Event {
                time_unix_nano: o.int("timeUnixNano")?,
                name: o.string("name")?,
                attributes: o.attributes("attributes")?,
                dropped_attributes_count: o.int("droppedAttributesCount")?,
            })
        })?,
        dropped_events_count: o.int("droppedEventsCount")?,
        links: o.list("links", |o| {
            Ok(span::Link {
                trace_id: o.hex_id("traceId")?,
                span_id: o.hex_id("spanId")?,
                trace_state: o.string("traceState")?,
                attributes: o.attributes("attributes")?,
                dropped_attributes_count: o.int("droppedAttributesCount")?,
                flags: o.int("flags")?,
            })
        })?,
        dropped_links_count: o.int("droppedLinksCount")?,
        status: o.opt_obj("status", |o| {
            Ok(Status {
                message: o.string("message")?,
                code: o.enumeration("code", STATUS_CODES)?,
            })
        })?,
    })
}

fn exemplars(o: &Obj<'_>) -> Result<Vec<Exemplar>> {
    o.list("exemplars", |o| {
        let value = if o.get("asInt").is_some() {
            Some(exemplar::Value::AsInt(o.int("asInt")?))
        } else {
            o.opt_f64("asDouble")?.map(exemplar::Value::AsDouble)
        };
        Ok(Exemplar {
            filtered_attributes: o.attributes("filteredAttributes")?,
            time_unix_nano: o.int("timeUnixNano")?,
            span_id: o.hex_id("spanId")?,
            trace_id: o.hex_id("traceId")?,
            value,
        })
    })
}

fn number_points(o: &Obj<'_>) -> Result<Vec<NumberDataPoint>> {
    o.list("dataPoints", |o| {
        let value = if o.get("asInt").is_some() {
            Some(number_data_point::Value::AsInt(o.int("asInt")?))
        } else {
            o.opt_f64("asDouble")?
                .map(number_data_point::Value::AsDouble)
        };
        Ok(NumberDataPoint {
            attributes: o.attributes("attributes")?,
            start_time_unix_nano: o.int("startTimeUnixNano")?,
            time_unix_nano: o.int("timeUnixNano")?,
            exemplars: exemplars(o)?,
            flags: o.int("flags")?,
            value,
        })
    })
}

fn buckets(o: &Obj<'_>) -> Result<Buckets> {
    Ok(Buckets {
        offset: o.int("offset")?,
        bucket_counts: o.u64_list("bucketCounts")?,
    })
}

fn metric(o: &Obj<'_>) -> Result<Metric> {
    let at = |key: &str| o.at(key);
    let data = if let Some(g) = o.take_obj("gauge", at("gauge"))? {
        Some(Data::Gauge(Gauge {
            data_points: number_points(&g)?,
        }))
    } else if let Some(s) = o.take_obj("sum", at("sum"))? {
        Some(Data::Sum(Sum {
            data_points: number_points(&s)?,
            aggregation_temporality: s.enumeration("aggregationTemporality", TEMPORALITIES)?,
            is_monotonic: s.bool("isMonotonic")?,
        }))
    } else if let Some(h) = o.take_obj("histogram", at("histogram"))? {
        Some(Data::Histogram(Histogram {
            data_points: h.list("dataPoints", |p| {
                Ok(HistogramDataPoint {
                    attributes: p.attributes("attributes")?,
                    start_time_unix_nano: p.int("startTimeUnixNano")?,
                    time_unix_nano: p.int("timeUnixNano")?,
                    count: p.int("count")?,
                    sum: p.opt_f64("sum")?,
                    bucket_counts: p.u64_list("bucketCounts")?,
                    explicit_bounds: p.f64_list("explicitBounds")?,
                    exemplars: exemplars(p)?,
                    flags: p.int("flags")?,
                    min: p.opt_f64("min")?,
                    max: p.opt_f64("max")?,
                })
            })?,
            aggregation_temporality: h.enumeration("aggregationTemporality", TEMPORALITIES)?,
        }))
    } else if let Some(h) = o.take_obj("exponentialHistogram", at("exponentialHistogram"))? {
        Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: h.list("dataPoints", |p| {
                Ok(ExponentialHistogramDataPoint {
                    attributes: p.attributes("attributes")?,
                    start_time_unix_nano: p.int("startTimeUnixNano")?,
                    time_unix_nano: p.int("timeUnixNano")?,
                    count: p.int("count")?,
                    sum: p.opt_f64("sum")?,
                    scale: p.int("scale")?,
                    zero_count: p.int("zeroCount")?,
                    positive: p.opt_obj("positive", buckets)?,
                    negative: p.opt_obj("negative", buckets)?,
                    flags: p.int("flags")?,
                    exemplars: exemplars(p)?,
                    min: p.opt_f64("min")?,
                    max: p.opt_f64("max")?,
                    zero_threshold: p.f64("zeroThreshold")?,
                })
            })?,
            aggregation_temporality: h.enumeration("aggregationTemporality", TEMPORALITIES)?,
        }))
    } else if let Some(s) = o.take_obj("summary", at("summary"))? {
        Some(Data::Summary(Summary {
            data_points: s.list("dataPoints", |p| {
                Ok(SummaryDataPoint {
                    attributes: p.attributes("attributes")?,
                    start_time_unix_nano: p.int("startTimeUnixNano")?,
                    time_unix_nano: p.int("timeUnixNano")?,
                    count: p.int("count")?,
                    sum: p.f64("sum")?,
                    quantile_values: p.list("quantileValues", |q| {
                        Ok(ValueAtQuantile {
                            quantile: q.f64("quantile")?,
                            value: q.f64("value")?,
                        })
                    })?,
                    flags: p.int("flags")?,
                })
            })?,
        }))
    } else {
        None
    };
    Ok(Metric {
        name: o.string("name")?,
        description: o.string("description")?,
        unit: o.string("unit")?,
        metadata: o.attributes("metadata")?,
        data,
    })
}

fn log_record(o: &Obj<'_>) -> Result<LogRecord> {
    Ok(LogRecord {
        time_unix_nano: o.int("timeUnixNano")?,
        observed_time_unix_nano: o.int("observedTimeUnixNano")?,
        severity_number: o.int("severityNumber").or_else(|_| {
            // Severity names are accepted as an enum would be.
            match o.string("severityNumber")?.as_str() {
                s if s.starts_with("SEVERITY_NUMBER_") => Ok(severity_from_name(s)),
                _ => Err(o.err("severityNumber", "expected an integer")),
            }
        })?,
        severity_text: o.string("severityText")?,
        body: o.opt_obj("body", any_value)?,
        attributes: o.attributes("attributes")?,
        dropped_attributes_count: o.int("droppedAttributesCount")?,
        flags: o.int("flags")?,
        trace_id: o.hex_id("traceId")?,
        span_id: o.hex_id("spanId")?,
        event_name: o.string("eventName")?,
    })
}

fn severity_from_name(name: &str) -> i32 {
    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
    SeverityNumber::from_str_name(name).map_or(0, |s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numbers_and_strings_for_64_bit_ints() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1544712660300000000","observedTimeUnixNano":1544712660300000000,
             "severityNumber":"SEVERITY_NUMBER_WARN","body":{"intValue":"7"}}]}]}]}"#;
        let r = decode_logs(body).unwrap();
        let rec = &r.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, 1544712660300000000);
        assert_eq!(rec.observed_time_unix_nano, 1544712660300000000);
        assert_eq!(rec.severity_number, 13);
        assert_eq!(rec.body.as_ref().unwrap().value, Some(Any::IntValue(7)));
    }

    #[test]
    fn names_the_path_of_a_bad_field() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#;
        let err = decode_traces(body).unwrap_err().to_string();
        assert!(
            err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
            "{err}"
        );
    }

    #[test]
    fn accepts_enum_names_and_snake_case() {
        let body = br#"{"resource_spans":[{"scope_spans":[{"spans":[
            {"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708",
             "kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
        let r = decode_traces(body).unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.kind, 3);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn rejects_non_objects() {
        assert!(decode_metrics(b"[1,2]").is_err());
        assert!(decode_metrics(b"{\"resourceMetrics\": 3}").is_err());
        assert!(decode_metrics(b"not json").is_err());
    }
}
