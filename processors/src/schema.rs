//! Arrow schemas of every stored table (SPEC §6).
//!
//! Timestamps are `Timestamp(Nanosecond, "UTC")`, ids lowercase hex, attribute maps
//! `Map<Utf8, Utf8>` (see [`crate::anyvalue`] for how non-string values are rendered).
//! Beyond the required columns each table keeps every other field of its OTLP record
//! (flags, dropped counts, schema URLs, scope attributes), so nothing sent is lost.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The tables swarmscope stores, in the order `GET /api/v1/tables` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Spans,
    Metrics,
    Logs,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Spans, Table::Metrics, Table::Logs];

    /// The SQL name of the table, which is also its directory under the data dir.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Metrics => "metrics",
            Table::Logs => "logs",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS.clone(),
            Table::Metrics => METRICS.clone(),
            Table::Logs => LOGS.clone(),
        }
    }

    /// The column whose value places a row in its `date=/hour=` partition and that
    /// time predicates prune on.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => "start_time",
            Table::Metrics | Table::Logs => "time",
        }
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` with the field names arrow's `MapBuilder` is configured with in
/// [`crate::convert`].
pub fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", map_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("attributes", map_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
        Field::new("flags", DataType::UInt32, false),
    ])
}

pub fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
    ])
}

pub fn exemplar_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("filtered_attributes", map_type(), false),
    ])
}

/// Columns every table shares: where the record came from.
fn origin_fields() -> Vec<Field> {
    vec![
        Field::new("service_name", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
        Field::new("resource_attributes", map_type(), false),
        Field::new("resource_dropped_attributes_count", DataType::UInt32, false),
        Field::new("resource_schema_url", DataType::Utf8, false),
        Field::new("scope_attributes", map_type(), false),
        Field::new("scope_dropped_attributes_count", DataType::UInt32, false),
        Field::new("scope_schema_url", DataType::Utf8, false),
    ]
}

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("start_time", timestamp_type(), false),
        Field::new("end_time", timestamp_type(), false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("agent_id", DataType::Utf8, true),
        Field::new("attributes", map_type(), false),
        Field::new("events", list_of(DataType::Struct(event_fields())), false),
        Field::new("links", list_of(DataType::Struct(link_fields())), false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
        Field::new("dropped_events_count", DataType::UInt32, false),
        Field::new("dropped_links_count", DataType::UInt32, false),
    ];
    fields.extend(origin_fields());
    Arc::new(Schema::new(fields))
});

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", timestamp_type(), false),
        Field::new("start_time", timestamp_type(), true),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("metric_type", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("metadata", map_type(), false),
        Field::new("attributes", map_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("is_monotonic", DataType::Boolean, true),
        Field::new("aggregation_temporality", DataType::Utf8, true),
        Field::new("count", DataType::UInt64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("bucket_counts", list_of(DataType::UInt64), true),
        Field::new("explicit_bounds", list_of(DataType::Float64), true),
        Field::new(
            "quantiles",
            list_of(DataType::Struct(quantile_fields())),
            true,
        ),
        Field::new("scale", DataType::Int32, true),
        Field::new("zero_count", DataType::UInt64, true),
        Field::new("zero_threshold", DataType::Float64, true),
        Field::new("positive_offset", DataType::Int32, true),
        Field::new("positive_bucket_counts", list_of(DataType::UInt64), true),
        Field::new("negative_offset", DataType::Int32, true),
        Field::new("negative_bucket_counts", list_of(DataType::UInt64), true),
        Field::new(
            "exemplars",
            list_of(DataType::Struct(exemplar_fields())),
            false,
        ),
        Field::new("flags", DataType::UInt32, false),
    ];
    fields.extend(origin_fields());
    Arc::new(Schema::new(fields))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", timestamp_type(), true),
        Field::new("observed_time", timestamp_type(), true),
        Field::new("severity_number", DataType::Int32, false),
        Field::new("severity_text", DataType::Utf8, false),
        Field::new("body", DataType::Utf8, true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("attributes", map_type(), false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ];
    fields.extend(origin_fields());
    Arc::new(Schema::new(fields))
});
