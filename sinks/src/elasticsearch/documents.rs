//! Stored rows as Elasticsearch documents in the OpenTelemetry-native shape the
//! Collector's `elasticsearch` exporter writes (`mapping.mode: otel`), each with the
//! data stream it goes to.
//!
//! The batch is reshaped as Arrow (columns moved and renamed, never copied): the table's
//! time column becomes `@timestamp`, `resource_*` columns move under `resource`,
//! `scope_*` under `scope`, and each table renames the few columns whose OTel-native
//! names differ. Arrow's JSON writer then writes the documents in one pass (maps become
//! objects, timestamps RFC 3339). Metric points, whose value goes under a key named
//! after the metric (`metrics.<name>`), go through `serde_json` row by row instead.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{Field, Fields, Schema};
use serde_json::{Map, Value};
use swarmscope_processors::schema::Table;

/// One document (its JSON text) and where it goes.
pub struct Document {
    pub index: &'static str,
    pub source_table: Table,
    pub body: String,
}

/// The data stream (or index) documents of `table` go to, if the sink takes it.
pub fn index_of(table: Table) -> Option<&'static str> {
    match table {
        t if t == Table::SPANS => Some("traces-generic.otel-default"),
        t if t == Table::METRICS => Some("metrics-generic.otel-default"),
        t if t == Table::LOGS => Some("logs-generic.otel-default"),
        t if t.name() == "alerts" => Some("alerts"),
        _ => None,
    }
}

/// The documents of `batch`, one per row.
pub fn documents(table: Table, batch: &RecordBatch) -> Result<Vec<Document>, String> {
    let Some(index) = index_of(table) else {
        return Ok(Vec::new());
    };
    let shaped = if table == Table::METRICS {
        with_offset_timezones(batch)
    } else {
        otel_native(table, batch).and_then(|b| with_offset_timezones(&b))
    }
    .map_err(|e| e.to_string())?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&shaped).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    let text = String::from_utf8(writer.into_inner()).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let body = if table == Table::METRICS {
                let row: Map<String, Value> =
                    serde_json::from_str(line).map_err(|e| e.to_string())?;
                Value::Object(reshape_metric(row)).to_string()
            } else {
                line.to_owned()
            };
            Ok(Document {
                index,
                source_table: table,
                body,
            })
        })
        .collect()
}

/// `batch` in the OTel-native shape (see the module documentation).
fn otel_native(table: Table, batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut resource = (Vec::new(), Vec::new());
    let mut scope = (Vec::new(), Vec::new());
    let mut status = (Vec::new(), Vec::new());
    let time = table.time_column();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let renamed = |to: &str| field.as_ref().clone().with_name(to);
        let (group, field) = match name {
            "service_name" => continue,
            n if n == time => (None, renamed("@timestamp")),
            "end_time" => (None, renamed("end_timestamp")),
            "observed_time" => (None, renamed("observed_timestamp")),
            "duration_ns" => (None, renamed("duration")),
            "status_code" if table == Table::SPANS => (Some(&mut status), renamed("code")),
            "status_message" if table == Table::SPANS => (Some(&mut status), renamed("message")),
            n => match (n.strip_prefix("resource_"), n.strip_prefix("scope_")) {
                (Some(rest), _) => (Some(&mut resource), renamed(rest)),
                (_, Some(rest)) => (Some(&mut scope), renamed(rest)),
                _ => (None, field.as_ref().clone()),
            },
        };
        match group {
            Some((group_fields, group_columns)) => {
                group_fields.push(field);
                group_columns.push(Arc::clone(column));
            }
            None => {
                fields.push(field);
                columns.push(Arc::clone(column));
            }
        }
    }
    for (name, (group_fields, group_columns)) in
        [("status", status), ("resource", resource), ("scope", scope)]
    {
        if !group_fields.is_empty() {
            let array = StructArray::try_new(Fields::from(group_fields), group_columns, None)?;
            fields.push(Field::new(name, array.data_type().clone(), false));
            columns.push(Arc::new(array));
        }
    }
    if table == Table::LOGS {
        // `body.text`, as the Collector's exporter writes a string body.
        if let Some(i) = fields.iter().position(|f| f.name() == "body") {
            let body = StructArray::try_new(
                Fields::from(vec![fields[i].clone().with_name("text")]),
                vec![Arc::clone(&columns[i])],
                None,
            )?;
            fields[i] = Field::new("body", body.data_type().clone(), false);
            columns[i] = Arc::new(body);
        }
    }
    if let Some(stream) = data_stream(table, batch.num_rows())? {
        fields.push(Field::new("data_stream", stream.data_type().clone(), false));
        columns.push(Arc::new(stream));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// `data_stream.{type, dataset, namespace}` of every row, for a data stream's table.
fn data_stream(table: Table, rows: usize) -> Result<Option<StructArray>, arrow::error::ArrowError> {
    let Some((kind, rest)) = index_of(table).and_then(|i| i.split_once('-')) else {
        return Ok(None);
    };
    let Some(dataset) = rest.strip_suffix("-default") else {
        return Ok(None);
    };
    let constant = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; rows])) };
    let fields = ["type", "dataset", "namespace"]
        .map(|n| Field::new(n, arrow::datatypes::DataType::Utf8, false));
    Ok(Some(StructArray::try_new(
        Fields::from(fields.to_vec()),
        vec![constant(kind), constant(dataset), constant("default")],
        None,
    )?))
}

/// `batch` with its `UTC` timestamps (nested ones too) as `+00:00`, the same instants:
/// arrow's JSON writer formats offset time zones only (named ones need chrono-tz).
fn with_offset_timezones(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::datatypes::{DataType, Field, Schema};
    fn offset(t: &DataType) -> DataType {
        match t {
            DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, Some("+00:00".into())),
            DataType::List(f) => DataType::List(std::sync::Arc::new(field(f))),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| field(f)).collect()),
            other => other.clone(),
        }
    }
    fn field(f: &Field) -> Field {
        f.clone().with_data_type(offset(f.data_type()))
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        let target = offset(column.data_type());
        if &target == column.data_type() {
            columns.push(column.clone());
        } else {
            columns.push(arrow::compute::cast(column, &target)?);
        }
    }
    let schema = Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| field(f))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(std::sync::Arc::new(schema), columns)
}

/// A metric point's row (as JSON) in the OTel-native shape.
fn reshape_metric(mut row: Map<String, Value>) -> Map<String, Value> {
    let mut doc = Map::new();
    let mut resource = Map::new();
    let mut scope = Map::new();
    if let Some(t) = row.remove("time") {
        doc.insert("@timestamp".into(), t);
    }
    row.remove("service_name");
    rename(&mut row, "start_time", "start_timestamp");
    metric_value(&mut row, &mut doc);
    for (key, value) in row {
        if let Some(rest) = key.strip_prefix("resource_") {
            resource.insert(rest.to_owned(), value);
        } else if let Some(rest) = key.strip_prefix("scope_") {
            scope.insert(rest.to_owned(), value);
        } else {
            doc.insert(key, value);
        }
    }
    doc.insert("resource".into(), Value::Object(resource));
    doc.insert("scope".into(), Value::Object(scope));
    doc.insert(
        "data_stream".into(),
        serde_json::json!({ "type": "metrics", "dataset": "generic.otel", "namespace": "default" }),
    );
    doc
}

fn rename(row: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = row.remove(from) {
        row.insert(to.to_owned(), v);
    }
}

/// `metrics.<name>`: the point's value in the shape Elasticsearch stores it (a number;
/// a `histogram` of bucket midpoints and counts; `sum`/`value_count` for a summary).
/// The columns it came from are left out.
fn metric_value(row: &mut Map<String, Value>, doc: &mut Map<String, Value>) {
    let Some(Value::String(name)) = row.remove("metric_name") else {
        return;
    };
    let kind = row.remove("metric_type");
    let take = |row: &mut Map<String, Value>, key: &str| row.remove(key).filter(|v| !v.is_null());
    let number = take(row, "value").or_else(|| take(row, "value_int"));
    let count = take(row, "count");
    let sum = take(row, "sum");
    let counts = take(row, "bucket_counts");
    let bounds = take(row, "explicit_bounds");
    for unused in [
        "min",
        "max",
        "quantiles",
        "scale",
        "zero_count",
        "zero_threshold",
        "positive_offset",
        "positive_bucket_counts",
        "negative_offset",
        "negative_bucket_counts",
        "exemplars",
    ] {
        row.remove(unused);
    }
    let value = match kind.as_ref().and_then(Value::as_str) {
        Some("histogram") => {
            let counts = counts
                .and_then(|c| c.as_array().cloned())
                .unwrap_or_default();
            let bounds: Vec<f64> = bounds
                .and_then(|b| b.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            Some(serde_json::json!({
                "counts": counts,
                "values": midpoints(&bounds, counts.len()),
            }))
        }
        Some("summary") | Some("exponential_histogram") => {
            Some(serde_json::json!({ "sum": sum, "value_count": count }))
        }
        _ => number,
    };
    doc.insert(
        "metrics".into(),
        Value::Object(Map::from_iter(value.map(|v| (name, v)))),
    );
    doc.insert("type".into(), kind.unwrap_or(Value::Null));
}

/// A value for each of `buckets` buckets of `bounds`, as the Collector's exporter picks
/// them: the middle of each bounded bucket, half the first bound for the first, the
/// last bound for the overflow bucket.
fn midpoints(bounds: &[f64], buckets: usize) -> Vec<f64> {
    (0..buckets)
        .map(
            |i| match (i.checked_sub(1).and_then(|j| bounds.get(j)), bounds.get(i)) {
                (Some(lo), Some(hi)) => (lo + hi) / 2.0,
                (None, Some(hi)) if *hi > 0.0 => hi / 2.0,
                (None, Some(hi)) => *hi,
                (Some(lo), None) => *lo,
                (None, None) => 0.0,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn a_span_becomes_an_otel_native_document() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "planner")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "plan".into(),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_250_000_000,
                        attributes: vec![kv("gen_ai.agent.id", "a-1")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = swarmscope_processors::convert::spans_from_otlp(&request)
            .unwrap()
            .batch;
        let docs = documents(Table::SPANS, &batch).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].index, "traces-generic.otel-default");
        let doc: Value = serde_json::from_str(&docs[0].body).unwrap();
        assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(doc["trace_id"], "01".repeat(16));
        assert_eq!(doc["span_id"], "02".repeat(8));
        assert_eq!(doc["name"], "plan");
        assert_eq!(doc["kind"], "SERVER");
        assert_eq!(doc["duration"], 250_000_000);
        assert_eq!(doc["status"]["code"], "UNSET");
        assert_eq!(doc["attributes"]["gen_ai.agent.id"], "a-1");
        assert_eq!(doc["resource"]["attributes"]["service.name"], "planner");
        assert_eq!(doc["data_stream"]["type"], "traces");
        assert_eq!(doc["data_stream"]["dataset"], "generic.otel");
        assert!(doc.get("service_name").is_none() && doc.get("start_time").is_none());
    }

    #[test]
    fn histogram_values_are_bucket_midpoints() {
        assert_eq!(midpoints(&[1.0, 3.0], 3), vec![0.5, 2.0, 3.0]);
    }
}
