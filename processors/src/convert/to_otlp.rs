//! Arrow → OTLP: the inverse of the conversion.
//!
//! It proves the conversion loses nothing (the round-trip property tests) and lets a
//! stored batch be re-exported as OTLP. What comes back differs from what was sent only
//! by the normalisation documented in [`crate::convert`]: attribute values and log bodies
//! are strings, and spans and logs are grouped by resource and scope per run of
//! consecutive rows that share them (a request's rows, usually), not across the batch.

use arrow::array::{Array, AsArray, ListArray, MapArray, RecordBatch, StructArray};
use arrow::datatypes::{
    Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
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

use crate::Result;

/// Typed access to a batch's columns by name.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a dyn Array> {
        self.0
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")).into())
    }
    fn str(&self, name: &str, row: usize) -> Result<Option<&'a str>> {
        let a = self.get(name)?.as_string::<i32>();
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
    fn string(&self, name: &str, row: usize) -> Result<String> {
        Ok(self.str(name, row)?.unwrap_or_default().to_owned())
    }
    fn hex(&self, name: &str, row: usize) -> Result<Vec<u8>> {
        Ok(self
            .str(name, row)?
            .and_then(|s| hex::decode(s).ok())
            .unwrap_or_default())
    }
    fn time(&self, name: &str, row: usize) -> Result<u64> {
        let a = self.get(name)?.as_primitive::<TimestampNanosecondType>();
        Ok(if a.is_valid(row) {
            a.value(row) as u64
        } else {
            0
        })
    }
    fn u32(&self, name: &str, row: usize) -> Result<u32> {
        Ok(self.get(name)?.as_primitive::<UInt32Type>().value(row))
    }
    fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        name: &str,
        row: usize,
    ) -> Result<Option<T::Native>> {
        let a = self.get(name)?.as_primitive::<T>();
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
    fn attributes(&self, name: &str, row: usize) -> Result<Vec<KeyValue>> {
        Ok(map_entries(self.get(name)?.as_map(), row))
    }
    fn list(&self, name: &str, row: usize) -> Result<Option<std::sync::Arc<dyn Array>>> {
        let a: &ListArray = self.get(name)?.as_list::<i32>();
        Ok(a.is_valid(row).then(|| a.value(row)))
    }
}

fn map_entries(map: &MapArray, row: usize) -> Vec<KeyValue> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|i| KeyValue {
            key: keys.value(i).to_owned(),
            value: values.is_valid(i).then(|| string_value(values.value(i))),
            ..Default::default()
        })
        .collect()
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    }
}

fn struct_field<'a>(s: &'a StructArray, name: &str) -> Result<&'a dyn Array> {
    s.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| ArrowError::SchemaError(format!("no struct field {name}")).into())
}

/// The resource, scope and their schema URLs of one row.
fn origin(c: &Columns<'_>, row: usize) -> Result<(Resource, String, InstrumentationScope, String)> {
    let resource = Resource {
        attributes: c.attributes("resource_attributes", row)?,
        dropped_attributes_count: c.u32("resource_dropped_attributes_count", row)?,
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: c.string("scope_name", row)?,
        version: c.string("scope_version", row)?,
        attributes: c.attributes("scope_attributes", row)?,
        dropped_attributes_count: c.u32("scope_dropped_attributes_count", row)?,
    };
    Ok((
        resource,
        c.string("resource_schema_url", row)?,
        scope,
        c.string("scope_schema_url", row)?,
    ))
}

/// Whether rows `a` and `b` have the same resource and scope, schema URLs included.
fn same_origin(c: &Columns<'_>, a: usize, b: usize) -> Result<bool> {
    for name in [
        "resource_schema_url",
        "scope_name",
        "scope_version",
        "scope_schema_url",
    ] {
        if c.str(name, a)? != c.str(name, b)? {
            return Ok(false);
        }
    }
    for name in [
        "resource_dropped_attributes_count",
        "scope_dropped_attributes_count",
    ] {
        if c.u32(name, a)? != c.u32(name, b)? {
            return Ok(false);
        }
    }
    for name in ["resource_attributes", "scope_attributes"] {
        if !same_entries(c.get(name)?.as_map(), a, b) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether rows `a` and `b` of a `Map<Utf8, Utf8>` column hold the same entries.
fn same_entries(map: &MapArray, a: usize, b: usize) -> bool {
    if map.is_valid(a) != map.is_valid(b) {
        return false;
    }
    let offsets = map.value_offsets();
    let range = |row: usize| offsets[row] as usize..offsets[row + 1] as usize;
    let (ra, rb) = (range(a), range(b));
    let keys = map.keys().as_string::<i32>();
    let values = map.values().as_string::<i32>();
    ra.len() == rb.len()
        && ra.zip(rb).all(|(i, j)| {
            keys.value(i) == keys.value(j)
                && values.is_valid(i) == values.is_valid(j)
                && values.value(i) == values.value(j)
        })
}

fn kind_number(name: &str) -> i32 {
    match name {
        "UNSPECIFIED" => 0,
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        other => other.parse().unwrap_or(0),
    }
}

fn status_number(name: &str) -> i32 {
    match name {
        "UNSET" => 0,
        "OK" => 1,
        "ERROR" => 2,
        other => other.parse().unwrap_or(0),
    }
}

fn temporality_number(name: &str) -> i32 {
    match name {
        "DELTA" => 1,
        "CUMULATIVE" => 2,
        "UNSPECIFIED" => 0,
        other => other.parse().unwrap_or(0),
    }
}

/// The `spans` rows of `batch` as an export request.
pub fn spans_to_otlp(batch: &RecordBatch) -> Result<ExportTraceServiceRequest> {
    let c = Columns(batch);
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for row in 0..batch.num_rows() {
        let mut events = Vec::new();
        if let Some(list) = c.list("events", row)? {
            let s = list.as_struct();
            let times = struct_field(s, "time")?.as_primitive::<TimestampNanosecondType>();
            let names = struct_field(s, "name")?.as_string::<i32>();
            let attrs = struct_field(s, "attributes")?.as_map();
            let dropped = struct_field(s, "dropped_attributes_count")?.as_primitive::<UInt32Type>();
            for i in 0..s.len() {
                events.push(span::Event {
                    time_unix_nano: times.value(i) as u64,
                    name: names.value(i).to_owned(),
                    attributes: map_entries(attrs, i),
                    dropped_attributes_count: dropped.value(i),
                });
            }
        }
        let mut links = Vec::new();
        if let Some(list) = c.list("links", row)? {
            let s = list.as_struct();
            let trace_ids = struct_field(s, "trace_id")?.as_string::<i32>();
            let span_ids = struct_field(s, "span_id")?.as_string::<i32>();
            let states = struct_field(s, "trace_state")?.as_string::<i32>();
            let attrs = struct_field(s, "attributes")?.as_map();
            let dropped = struct_field(s, "dropped_attributes_count")?.as_primitive::<UInt32Type>();
            let flags = struct_field(s, "flags")?.as_primitive::<UInt32Type>();
            for i in 0..s.len() {
                links.push(span::Link {
                    trace_id: hex::decode(trace_ids.value(i)).unwrap_or_default(),
                    span_id: hex::decode(span_ids.value(i)).unwrap_or_default(),
                    trace_state: states.value(i).to_owned(),
                    attributes: map_entries(attrs, i),
                    dropped_attributes_count: dropped.value(i),
                    flags: flags.value(i),
                });
            }
        }
        let span = Span {
            trace_id: c.hex("trace_id", row)?,
            span_id: c.hex("span_id", row)?,
            trace_state: c.string("trace_state", row)?,
            parent_span_id: c.hex("parent_span_id", row)?,
            flags: c.u32("flags", row)?,
            name: c.string("name", row)?,
            kind: kind_number(&c.string("kind", row)?),
            start_time_unix_nano: c.time("start_time", row)?,
            end_time_unix_nano: c.time("end_time", row)?,
            attributes: c.attributes("attributes", row)?,
            dropped_attributes_count: c.u32("dropped_attributes_count", row)?,
            events,
            dropped_events_count: c.u32("dropped_events_count", row)?,
            links,
            dropped_links_count: c.u32("dropped_links_count", row)?,
            status: Some(Status {
                message: c.string("status_message", row)?,
                code: status_number(&c.string("status_code", row)?),
            }),
        };
        let grouped = row > 0 && same_origin(&c, row - 1, row)?;
        let last = resource_spans.last_mut().filter(|_| grouped);
        if let Some(scope) = last.and_then(|r: &mut ResourceSpans| r.scope_spans.last_mut()) {
            scope.spans.push(span);
            continue;
        }
        let (resource, resource_schema_url, scope, scope_schema_url) = origin(&c, row)?;
        resource_spans.push(ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: vec![span],
                schema_url: scope_schema_url,
            }],
            schema_url: resource_schema_url,
        });
    }
    Ok(ExportTraceServiceRequest { resource_spans })
}

/// The `logs` rows of `batch` as an export request.
pub fn logs_to_otlp(batch: &RecordBatch) -> Result<ExportLogsServiceRequest> {
    let c = Columns(batch);
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    for row in 0..batch.num_rows() {
        let record = LogRecord {
            time_unix_nano: c.time("time", row)?,
            observed_time_unix_nano: c.time("observed_time", row)?,
            severity_number: c
                .get("severity_number")?
                .as_primitive::<Int32Type>()
                .value(row),
            severity_text: c.string("severity_text", row)?,
            body: c.str("body", row)?.map(string_value),
            attributes: c.attributes("attributes", row)?,
            dropped_attributes_count: c.u32("dropped_attributes_count", row)?,
            flags: c.u32("flags", row)?,
            trace_id: c.hex("trace_id", row)?,
            span_id: c.hex("span_id", row)?,
            event_name: c.string("event_name", row)?,
        };
        let grouped = row > 0 && same_origin(&c, row - 1, row)?;
        let last = resource_logs.last_mut().filter(|_| grouped);
        if let Some(scope) = last.and_then(|r: &mut ResourceLogs| r.scope_logs.last_mut()) {
            scope.log_records.push(record);
            continue;
        }
        let (resource, resource_schema_url, scope, scope_schema_url) = origin(&c, row)?;
        resource_logs.push(ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope),
                log_records: vec![record],
                schema_url: scope_schema_url,
            }],
            schema_url: resource_schema_url,
        });
    }
    Ok(ExportLogsServiceRequest { resource_logs })
}

fn u64_list(list: Option<std::sync::Arc<dyn Array>>) -> Vec<u64> {
    list.map(|a| a.as_primitive::<UInt64Type>().values().to_vec())
        .unwrap_or_default()
}

/// The `metrics` rows of `batch` as an export request, one metric per data point.
pub fn metrics_to_otlp(batch: &RecordBatch) -> Result<ExportMetricsServiceRequest> {
    let c = Columns(batch);
    let mut resource_metrics = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let metric = Metric {
            name: c.string("metric_name", row)?,
            description: c.string("description", row)?,
            unit: c.string("unit", row)?,
            metadata: c.attributes("metadata", row)?,
            data: Some(point_data(&c, row)?),
        };
        let (resource, resource_schema_url, scope, scope_schema_url) = origin(&c, row)?;
        resource_metrics.push(ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope),
                metrics: vec![metric],
                schema_url: scope_schema_url,
            }],
            schema_url: resource_schema_url,
        });
    }
    Ok(ExportMetricsServiceRequest { resource_metrics })
}

/// What every kind of data point of a row has.
struct PointCommon {
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    flags: u32,
    temporality: i32,
    exemplars: Vec<Exemplar>,
}

/// Row `row`'s data point, of its `metric_type`.
fn point_data(c: &Columns, row: usize) -> Result<Data> {
    let p = PointCommon {
        attributes: c.attributes("attributes", row)?,
        start: c.time("start_time", row)?,
        time: c.time("time", row)?,
        flags: c.u32("flags", row)?,
        temporality: c
            .str("aggregation_temporality", row)?
            .map(temporality_number)
            .unwrap_or(0),
        exemplars: exemplars(c, row)?,
    };
    Ok(match c.string("metric_type", row)?.as_str() {
        "gauge" => Data::Gauge(Gauge {
            data_points: vec![number_point(c, row, p)?],
        }),
        "sum" => {
            let temporality = p.temporality;
            Data::Sum(Sum {
                data_points: vec![number_point(c, row, p)?],
                aggregation_temporality: temporality,
                is_monotonic: c.get("is_monotonic")?.as_boolean().value(row),
            })
        }
        "histogram" => histogram_data(c, row, p)?,
        "exponential_histogram" => exponential_data(c, row, p)?,
        _ => summary_data(c, row, p)?,
    })
}

fn number_point(c: &Columns, row: usize, p: PointCommon) -> Result<NumberDataPoint> {
    let value = match c.opt::<Int64Type>("value_int", row)? {
        Some(i) => Some(number_data_point::Value::AsInt(i)),
        None => c
            .opt::<Float64Type>("value", row)?
            .map(number_data_point::Value::AsDouble),
    };
    Ok(NumberDataPoint {
        attributes: p.attributes,
        start_time_unix_nano: p.start,
        time_unix_nano: p.time,
        exemplars: p.exemplars,
        flags: p.flags,
        value,
    })
}

fn histogram_data(c: &Columns, row: usize, p: PointCommon) -> Result<Data> {
    Ok(Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: p.attributes,
            start_time_unix_nano: p.start,
            time_unix_nano: p.time,
            count: c.opt::<UInt64Type>("count", row)?.unwrap_or(0),
            sum: c.opt::<Float64Type>("sum", row)?,
            bucket_counts: u64_list(c.list("bucket_counts", row)?),
            explicit_bounds: c
                .list("explicit_bounds", row)?
                .map(|a| a.as_primitive::<Float64Type>().values().to_vec())
                .unwrap_or_default(),
            exemplars: p.exemplars,
            flags: p.flags,
            min: c.opt::<Float64Type>("min", row)?,
            max: c.opt::<Float64Type>("max", row)?,
        }],
        aggregation_temporality: p.temporality,
    }))
}

fn exponential_data(c: &Columns, row: usize, p: PointCommon) -> Result<Data> {
    let buckets = |offset: &str, counts: &str| -> Result<Option<Buckets>> {
        Ok(match c.opt::<Int32Type>(offset, row)? {
            Some(offset) => Some(Buckets {
                offset,
                bucket_counts: u64_list(c.list(counts, row)?),
            }),
            None => None,
        })
    };
    Ok(Data::ExponentialHistogram(ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint {
            attributes: p.attributes,
            start_time_unix_nano: p.start,
            time_unix_nano: p.time,
            count: c.opt::<UInt64Type>("count", row)?.unwrap_or(0),
            sum: c.opt::<Float64Type>("sum", row)?,
            scale: c.opt::<Int32Type>("scale", row)?.unwrap_or(0),
            zero_count: c.opt::<UInt64Type>("zero_count", row)?.unwrap_or(0),
            positive: buckets("positive_offset", "positive_bucket_counts")?,
            negative: buckets("negative_offset", "negative_bucket_counts")?,
            flags: p.flags,
            exemplars: p.exemplars,
            min: c.opt::<Float64Type>("min", row)?,
            max: c.opt::<Float64Type>("max", row)?,
            zero_threshold: c.opt::<Float64Type>("zero_threshold", row)?.unwrap_or(0.0),
        }],
        aggregation_temporality: p.temporality,
    }))
}

fn summary_data(c: &Columns, row: usize, p: PointCommon) -> Result<Data> {
    let mut quantile_values = Vec::new();
    if let Some(list) = c.list("quantiles", row)? {
        let s = list.as_struct();
        let q = struct_field(s, "quantile")?.as_primitive::<Float64Type>();
        let v = struct_field(s, "value")?.as_primitive::<Float64Type>();
        for i in 0..s.len() {
            quantile_values.push(ValueAtQuantile {
                quantile: q.value(i),
                value: v.value(i),
            });
        }
    }
    Ok(Data::Summary(Summary {
        data_points: vec![SummaryDataPoint {
            attributes: p.attributes,
            start_time_unix_nano: p.start,
            time_unix_nano: p.time,
            count: c.opt::<UInt64Type>("count", row)?.unwrap_or(0),
            sum: c.opt::<Float64Type>("sum", row)?.unwrap_or(0.0),
            quantile_values,
            flags: p.flags,
        }],
    }))
}

/// Row `row`'s exemplars.
fn exemplars(c: &Columns, row: usize) -> Result<Vec<Exemplar>> {
    let mut exemplars = Vec::new();
    let Some(list) = c.list("exemplars", row)? else {
        return Ok(exemplars);
    };
    let s = list.as_struct();
    let times = struct_field(s, "time")?.as_primitive::<TimestampNanosecondType>();
    let values = struct_field(s, "value")?.as_primitive::<Float64Type>();
    let ints = struct_field(s, "value_int")?.as_primitive::<Int64Type>();
    let trace_ids = struct_field(s, "trace_id")?.as_string::<i32>();
    let span_ids = struct_field(s, "span_id")?.as_string::<i32>();
    let attrs = struct_field(s, "filtered_attributes")?.as_map();
    for i in 0..s.len() {
        let value = if ints.is_valid(i) {
            Some(exemplar::Value::AsInt(ints.value(i)))
        } else if values.is_valid(i) {
            Some(exemplar::Value::AsDouble(values.value(i)))
        } else {
            None
        };
        let id = |a: &arrow::array::StringArray| {
            if a.is_valid(i) {
                hex::decode(a.value(i)).unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        exemplars.push(Exemplar {
            filtered_attributes: map_entries(attrs, i),
            time_unix_nano: times.value(i) as u64,
            span_id: id(span_ids),
            trace_id: id(trace_ids),
            value,
        });
    }
    Ok(exemplars)
}
