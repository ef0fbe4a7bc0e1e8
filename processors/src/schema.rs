//! Arrow schemas of every stored table (docs/tables.md).
//!
//! Timestamps are `Timestamp(Nanosecond, "UTC")` as rows arrive (microseconds as they
//! are stored: [`Table::stored_schema`]), ids lowercase hex, attribute maps
//! `Map<Utf8, Utf8>` (see [`crate::anyvalue`] for how non-string values are rendered).
//! Beyond the required columns each table keeps every other field of its OTLP record
//! (flags, dropped counts, schema URLs, scope attributes), so nothing sent is lost.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use arrow::array::{new_null_array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Fields, Int32Type, Int64Type, Schema, SchemaRef,
    TimeUnit, UInt16Type, UInt32Type, UInt8Type,
};
use arrow::error::ArrowError;

/// How a table is declared: all the store, the write-ahead log and the query engine
/// need to know of it. A table is one `Table` constant built from one of these (the
/// derived tables each in a file of their own), listed in `Table::ALL` (the catalogue,
/// which knows every owner; this module knows none of them).
pub struct TableDef {
    /// The SQL name of the table, which is also its directory under the data dir.
    pub name: &'static str,
    /// The table's id in the write-ahead log and the sinks' queues: unique, and never
    /// reused for another table once records carry it.
    pub code: u8,
    /// The column whose value places a row in its `date=/hour=` partition and that
    /// time predicates prune on.
    pub time_column: &'static str,
    /// Where a row's partition time comes from when `time_column` is null.
    pub fallback_time_column: Option<&'static str>,
    /// Timestamp columns whose exact nanoseconds are stored beside them, as Int64
    /// `<column>_unix_nano` (stored timestamps are microseconds; see [`Table::stored_schema`]).
    pub exact_nanos: &'static [&'static str],
    /// A string column of few values that a quiet partition's layout groups the rows
    /// of each row group it writes by, in the values' order and each value's rows in
    /// arrival order, with page statistics: a filter on one value (`status_code =
    /// 'ERROR'`) reads the pages that hold it.
    pub cluster_column: Option<&'static str>,
    pub schema: fn() -> SchemaRef,
}

/// One of the tables swarmscope stores. Cheap to copy; equal by [`TableDef::code`].
#[derive(Clone, Copy)]
pub struct Table(&'static TableDef);

impl Table {
    pub const SPANS: Table = Table(&TableDef {
        name: "spans",
        code: 1,
        time_column: "start_time",
        fallback_time_column: None,
        exact_nanos: &["start_time"],
        cluster_column: Some("status_code"),
        schema: || SPANS.clone(),
    });
    pub const METRICS: Table = Table(&TableDef {
        name: "metrics",
        code: 2,
        time_column: "time",
        fallback_time_column: None,
        exact_nanos: &[],
        cluster_column: None,
        schema: || METRICS.clone(),
    });
    pub const LOGS: Table = Table(&TableDef {
        name: "logs",
        code: 3,
        time_column: "time",
        fallback_time_column: Some("observed_time"),
        exact_nanos: &[],
        cluster_column: None,
        schema: || LOGS.clone(),
    });
    /// Records a sink's endpoint refused for good (an Elasticsearch mapping error, say),
    /// kept rather than dropped: one row per refused document.
    pub const DEAD_LETTERS: Table = Table(&TableDef {
        name: "dead_letters",
        code: 8,
        time_column: "time",
        fallback_time_column: None,
        exact_nanos: &[],
        cluster_column: None,
        schema: || DEAD_LETTERS.clone(),
    });

    /// The table `def` declares (for a derived table's constant).
    pub const fn declare(def: &'static TableDef) -> Table {
        Table(def)
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn code(self) -> u8 {
        self.0.code
    }

    pub fn schema(self) -> SchemaRef {
        (self.0.schema)()
    }

    /// The table as it is stored and queried: its Parquet files, its Delta schema and
    /// its SQL columns. Every reader of Delta Lake can read it: timestamps are
    /// microseconds (Delta's `timestamp`; nanoseconds are a table feature DuckDB's and
    /// Spark's readers lack), unsigned integers are widened to signed ones (`UInt32` to
    /// `Int64`, as Spark reads them), and the columns of [`TableDef::exact_nanos`] keep
    /// their exact nanoseconds beside them as Int64 `<column>_unix_nano`. Rows are
    /// accepted, logged and analysed in [`Table::schema`], and converted by
    /// [`Table::to_stored`].
    pub fn stored_schema(self) -> SchemaRef {
        static STORED: LazyLock<RwLock<HashMap<u8, SchemaRef>>> = LazyLock::new(RwLock::default);
        if let Some(schema) = STORED
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.code())
        {
            return Arc::clone(schema);
        }
        let schema = self.schema();
        let mut fields = Vec::with_capacity(schema.fields().len() + self.0.exact_nanos.len());
        for field in schema.fields() {
            fields.push(stored_field(field));
            if self.0.exact_nanos.contains(&field.name().as_str()) {
                // Nullable: files written before the column existed have none.
                fields.push(Field::new(
                    format!("{}{EXACT_NANOS_SUFFIX}", field.name()),
                    DataType::Int64,
                    true,
                ));
            }
        }
        let stored = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        STORED
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.code(), Arc::clone(&stored));
        stored
    }

    /// `batch` (of this table's [`Table::schema`], or of the stored schema of an older
    /// version, as read from its files) in the [`Table::stored_schema`]: columns matched
    /// by name and cast, the exact nanoseconds taken from their nanosecond timestamps,
    /// and a column the batch lacks null where it may be.
    pub fn to_stored(self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        self.to_stored_projected(batch, None)
    }

    /// [`Table::to_stored`] of only the stored columns at `projection` (all if `None`).
    pub fn to_stored_projected(
        self,
        batch: &RecordBatch,
        projection: Option<&[usize]>,
    ) -> Result<RecordBatch, ArrowError> {
        let target = match projection {
            Some(p) => Arc::new(self.stored_schema().project(p)?),
            None => self.stored_schema(),
        };
        let source = batch.schema();
        let column = |field: &FieldRef| -> Result<ArrayRef, ArrowError> {
            // `find`, not `index_of`: a column the batch lacks (the exact nanoseconds,
            // always) is no error, and `index_of` formats one naming every column.
            if let Some((i, _)) = source.fields().find(field.name()) {
                let column = batch.column(i);
                return if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast_stored(column, field.data_type())
                };
            }
            let exact_of = field
                .name()
                .strip_suffix(EXACT_NANOS_SUFFIX)
                .filter(|c| self.0.exact_nanos.contains(c));
            if let Some((i, _)) = exact_of.and_then(|c| source.fields().find(c)) {
                let column = batch.column(i);
                if let DataType::Timestamp(TimeUnit::Nanosecond, _) = column.data_type() {
                    return cast(column, &DataType::Int64);
                }
            }
            if field.is_nullable() {
                Ok(new_null_array(field.data_type(), batch.num_rows()))
            } else {
                Err(ArrowError::SchemaError(format!(
                    "{}: no column {} to store",
                    self.name(),
                    field.name()
                )))
            }
        };
        let columns = target
            .fields()
            .iter()
            .map(column)
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(target, columns, &options)
    }

    /// The column whose value places a row in its `date=/hour=` partition and that
    /// time predicates prune on.
    pub fn time_column(self) -> &'static str {
        self.0.time_column
    }

    /// Where a row's partition time comes from when its time column is null.
    pub fn fallback_time_column(self) -> Option<&'static str> {
        self.0.fallback_time_column
    }

    /// The column a quiet partition's layout groups rows by (see
    /// [`TableDef::cluster_column`]).
    pub fn cluster_column(self) -> Option<&'static str> {
        self.0.cluster_column
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.code() == other.code()
    }
}

impl Eq for Table {}

impl std::hash::Hash for Table {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

impl PartialOrd for Table {
    fn partial_cmp(&self, other: &Table) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Table {
    fn cmp(&self, other: &Table) -> std::cmp::Ordering {
        self.code().cmp(&other.code())
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The stored type of timestamps (see [`Table::stored_schema`]).
pub fn stored_timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The name of a column's exact nanoseconds: `start_time_unix_nano`, as OTLP names it.
pub const EXACT_NANOS_SUFFIX: &str = "_unix_nano";

/// `batch` with its top-level timestamps in nanoseconds, as the analytics read rows:
/// for rows queried back from the store, whose timestamps are microseconds.
pub fn with_nanosecond_times(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, tz) if *unit != TimeUnit::Nanosecond => {
                let nanos = DataType::Timestamp(TimeUnit::Nanosecond, tz.clone());
                columns.push(cast(column, &nanos)?);
                fields.push(field.as_ref().clone().with_data_type(nanos));
            }
            _ => {
                columns.push(Arc::clone(column));
                fields.push(field.as_ref().clone());
            }
        }
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema, columns, &options)
}

/// `column` cast to its stored type `to`: an unsigned count widened to the signed
/// integer it is stored as (which holds every value) one conversion a value, and
/// anything else by arrow's [`cast`], which takes its checked path for these widenings
/// too: an `Option` a value, and a null buffer built from them
/// (`cargo bench --bench hotpaths -- request/to_stored`).
fn cast_stored(column: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    fn widen<F, T>(column: &ArrayRef) -> ArrayRef
    where
        F: ArrowPrimitiveType,
        T: ArrowPrimitiveType,
        T::Native: From<F::Native>,
    {
        Arc::new(column.as_primitive::<F>().unary::<_, T>(T::Native::from))
    }
    Ok(match (column.data_type(), to) {
        (DataType::UInt8, DataType::Int32) => widen::<UInt8Type, Int32Type>(column),
        (DataType::UInt16, DataType::Int32) => widen::<UInt16Type, Int32Type>(column),
        (DataType::UInt32, DataType::Int64) => widen::<UInt32Type, Int64Type>(column),
        _ => return cast(column, to),
    })
}

/// `field` with its type as stored (see [`Table::stored_schema`]).
fn stored_field(field: &Field) -> Field {
    field.clone().with_data_type(stored_type(field.data_type()))
}

fn stored_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::List(item) => DataType::List(Arc::new(stored_field(item))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| stored_field(f)).collect())
        }
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(stored_field(entries)), *sorted),
        other => other.clone(),
    }
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

pub fn list_of(item: DataType) -> DataType {
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

static DEAD_LETTERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the sink gave up on the record.
        Field::new("time", timestamp_type(), false),
        Field::new("sink", DataType::Utf8, false),
        // The table the record came from, and where the sink sent it.
        Field::new("source_table", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        // The endpoint's answer: HTTP status, error type and reason.
        Field::new("status", DataType::Int32, false),
        Field::new("error_type", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        // The record as the sink sent it (a JSON document for Elasticsearch).
        Field::new("document", DataType::Utf8, false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Unsigned counts widen to their stored type as arrow's cast widens them: every
    /// value, the extremes and the nulls where they were.
    #[test]
    fn stored_counts_widen_as_arrow_casts_them() {
        use arrow::array::{UInt16Array, UInt32Array, UInt8Array};
        let columns: [(ArrayRef, DataType); 3] = [
            (
                Arc::new(UInt8Array::from(vec![
                    Some(0),
                    None,
                    Some(u8::MAX),
                    Some(7),
                ])),
                DataType::Int32,
            ),
            (
                Arc::new(UInt16Array::from(vec![Some(u16::MAX), Some(0), None])),
                DataType::Int32,
            ),
            (
                Arc::new(UInt32Array::from(vec![
                    None,
                    Some(u32::MAX),
                    Some(0),
                    Some(3),
                ])),
                DataType::Int64,
            ),
        ];
        for (column, to) in columns {
            let widened = cast_stored(&column, &to).unwrap();
            assert_eq!(widened.data_type(), &to);
            assert_eq!(widened.as_ref(), cast(&column, &to).unwrap().as_ref());
        }
    }

    #[test]
    fn every_table_has_a_unique_name_and_code_and_its_time_column() {
        for (i, a) in Table::ALL.iter().enumerate() {
            for b in &Table::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.code(), b.code());
            }
            assert_eq!(Table::from_code(a.code()), Some(*a));
            assert_eq!(Table::from_name(a.name()), Some(*a));
            let schema = a.schema();
            for column in [Some(a.time_column()), a.fallback_time_column()]
                .into_iter()
                .flatten()
            {
                assert_eq!(
                    schema
                        .field_with_name(column)
                        .map(|f| f.data_type().clone())
                        .ok(),
                    Some(timestamp_type()),
                    "{a:?}.{column}"
                );
            }
        }
    }
}
