//! OTLP → Arrow: one [`RecordBatch`] per export request and table.
//!
//! Conversion is where records are validated. A record that breaks the OTLP data
//! model (a trace id that is not 16 bytes, a timestamp past year 2262, a histogram
//! whose bucket counts do not match its bounds) is left out and counted; the caller
//! reports the count through OTLP `partial_success` and stores the rest.
//!
//! Normalisation (the only ways a stored row differs from what was sent):
//! attribute values and log bodies are stored as text ([`crate::anyvalue`]); a
//! `start_time` of 0 on a metric point, and `time`/`observed_time` of 0 on a log
//! record, are stored as null; metrics without data points store no row.

mod logs;
mod metrics;
pub mod to_otlp;
mod traces;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, MapBuilder, MapFieldNames, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::anyvalue;
use crate::processor::SpanIds;
use crate::Result;

pub use logs::logs_from_otlp;
pub use metrics::metrics_from_otlp;
pub use traces::{spans_from_otlp, spans_from_protobuf};

/// What conversion of one export request produced.
#[derive(Debug)]
pub struct Converted {
    /// The valid records, in request order.
    pub batch: RecordBatch,
    /// How many records were left out as invalid (spans, data points or log records).
    pub rejected: i64,
    /// Why, for `partial_success.error_message`; set when `rejected > 0`.
    pub error_message: Option<String>,
    /// A span batch's ids as numbers ([`crate::processor::TableBatch::ids`]).
    pub ids: Option<SpanIds>,
}

/// How many bytes of resource and scope attributes the rows of one request may repeat
/// between them. Each row stores its resource's and its scope's attributes, so a
/// request within `receivers.otlp.max_request_bytes` would otherwise expand without
/// bound: a 1 MiB resource attribute over 30,000 small spans is 30 GB of rows.
pub const MAX_REPEATED_BYTES: usize = 64 * 1024 * 1024;

/// Refuses a request whose rows, `(rows, repeated bytes per row)` for each scope,
/// repeat more than [`MAX_REPEATED_BYTES`] of attributes between them.
pub(crate) fn check_repeated(scopes: impl Iterator<Item = (usize, usize)>) -> Result<()> {
    let total = scopes.fold(0usize, |total, (rows, bytes)| {
        total.saturating_add(rows.saturating_mul(bytes))
    });
    if total > MAX_REPEATED_BYTES {
        return Err(crate::Error::TooLarge(format!(
            "the request's records would repeat {total} bytes of their resources' and \
             scopes' attributes, more than the {MAX_REPEATED_BYTES} a request may expand \
             to: send large resource or scope attributes with fewer records per request"
        )));
    }
    Ok(())
}

/// The bytes of the attributes every row of `resource` and `scope` repeats, as sent.
pub(crate) fn origin_bytes(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
) -> usize {
    use prost::Message as _;
    let attributes = |a: &[KeyValue]| a.iter().map(KeyValue::encoded_len).sum::<usize>();
    resource.map_or(0, |r| attributes(&r.attributes))
        + scope.map_or(0, |s| attributes(&s.attributes))
}

impl Converted {
    /// With a span batch's ids as numbers.
    pub(crate) fn with_ids(self, ids: SpanIds) -> Converted {
        Converted {
            ids: Some(ids),
            ..self
        }
    }
}

/// Counts invalid records and keeps the first reason, which is what a user needs to
/// find the bug in their exporter.
#[derive(Default)]
pub(crate) struct Rejections {
    count: i64,
    first: Option<String>,
}

impl Rejections {
    pub(crate) fn reject(&mut self, n: i64, why: impl FnOnce() -> String) {
        if self.count == 0 {
            self.first = Some(why());
        }
        self.count += n;
    }

    pub(crate) fn finish(self, batch: RecordBatch, what: &str) -> Converted {
        let error_message = self
            .first
            .map(|first| format!("{} {what} rejected; first: {first}", self.count));
        Converted {
            batch,
            rejected: self.count,
            error_message,
            ids: None,
        }
    }
}

/// The batch of a converted request, its columns shrunk to their length: builders
/// grow by doubling, so without this a buffered batch would cost the store's memory
/// budget (and the process) up to twice what its rows take.
pub(crate) fn tight_batch(schema: SchemaRef, mut columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    for column in &mut columns {
        Array::shrink_to_fit(column);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Nanoseconds since the epoch as Arrow stores them; `None` past `i64::MAX` (2262).
pub(crate) fn nanos(t: u64) -> Option<i64> {
    i64::try_from(t).ok()
}

/// Lowercase hex of an id, checked for the length OTLP requires.
pub(crate) fn hex_id(bytes: &[u8], len: usize, what: &str) -> std::result::Result<String, String> {
    match id_error(bytes, len, what) {
        Some(why) => Err(why),
        None => Ok(hex::encode(bytes)),
    }
}

/// Like [`hex_id`], for ids that may be absent (empty).
pub(crate) fn optional_hex_id(
    bytes: &[u8],
    len: usize,
    what: &str,
) -> std::result::Result<Option<String>, String> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        hex_id(bytes, len, what).map(Some)
    }
}

pub(crate) fn timestamp_builder() -> TimestampNanosecondBuilder {
    timestamp_builder_with(BUILDER_DEFAULT)
}

pub(crate) fn timestamp_builder_with(rows: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

pub(crate) type AttributeBuilder = MapBuilder<StringBuilder, StringBuilder>;

pub(crate) fn attribute_builder() -> AttributeBuilder {
    attribute_builder_with(BUILDER_DEFAULT, MapCapacity::default())
}

/// The capacity, in items and in bytes, an Arrow builder's `new()` starts with.
const BUILDER_DEFAULT: usize = 1024;

/// How large a column of attribute maps will grow: its entries over all rows, and the
/// bytes of their keys and of their values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MapCapacity {
    pub entries: usize,
    pub key_bytes: usize,
    pub value_bytes: usize,
}

/// What a builder's `new()` starts with, for batches of unknown size.
impl Default for MapCapacity {
    fn default() -> Self {
        MapCapacity {
            entries: BUILDER_DEFAULT,
            key_bytes: BUILDER_DEFAULT,
            value_bytes: BUILDER_DEFAULT,
        }
    }
}

impl MapCapacity {
    pub(crate) const NONE: MapCapacity = MapCapacity {
        entries: 0,
        key_bytes: 0,
        value_bytes: 0,
    };

    /// `rows` rows that each hold what `self` says one row holds.
    pub(crate) fn times(self, rows: usize) -> MapCapacity {
        MapCapacity {
            entries: self.entries.saturating_mul(rows),
            key_bytes: self.key_bytes.saturating_mul(rows),
            value_bytes: self.value_bytes.saturating_mul(rows),
        }
    }

    pub(crate) fn add(self, other: MapCapacity) -> MapCapacity {
        MapCapacity {
            entries: self.entries.saturating_add(other.entries),
            key_bytes: self.key_bytes.saturating_add(other.key_bytes),
            value_bytes: self.value_bytes.saturating_add(other.value_bytes),
        }
    }
}

/// An attribute map builder for `rows` rows, allocated once for `capacity` (builders
/// grow by doubling, and each step copies all they hold).
pub(crate) fn attribute_builder_with(rows: usize, capacity: MapCapacity) -> AttributeBuilder {
    MapBuilder::with_capacity(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::with_capacity(capacity.entries, capacity.key_bytes),
        StringBuilder::with_capacity(capacity.entries, capacity.value_bytes),
        rows,
    )
}

pub(crate) fn append_attributes(b: &mut AttributeBuilder, attributes: &[KeyValue]) -> Result<()> {
    for kv in attributes {
        b.keys().append_value(&kv.key);
        b.values()
            .append_option(kv.value.as_ref().and_then(anyvalue::render));
    }
    b.append(true)?;
    Ok(())
}

/// Where a span's `agent_id` comes from, first found first: the span's attributes,
/// then its resource's, in each of them these keys in this order (docs/analytics.md).
pub(crate) const AGENT_ID_KEYS: [&str; 2] = ["gen_ai.agent.id", "coordination.agent.id"];

/// The agent id among one set of attributes: the string value `lookup` finds for the
/// first of [`AGENT_ID_KEYS`] that has one. Both span decoders call this, once for the
/// span and once for its resource.
pub(crate) fn agent_id<'a>(lookup: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    AGENT_ID_KEYS.iter().find_map(|key| lookup(key))
}

/// Whether `bytes` is a valid id of `len` bytes: the right length and not all zeros
/// (OTLP's invalid id). Both span decoders check ids with it.
pub(crate) fn id_error(bytes: &[u8], len: usize, what: &str) -> Option<String> {
    if bytes.len() != len {
        return Some(format!("{what} must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Some(format!("{what} must not be all zeros"));
    }
    None
}

/// The string value of attribute `key`, if present.
pub(crate) fn attribute_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Where a record came from: its resource and instrumentation scope, repeated on
/// every row because a columnar store compresses the repetition away.
pub(crate) struct Origin<'a> {
    pub resource: Option<&'a Resource>,
    pub resource_schema_url: &'a str,
    pub scope: Option<&'a InstrumentationScope>,
    pub scope_schema_url: &'a str,
}

pub(crate) struct OriginColumns {
    service_name: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    resource_attributes: AttributeBuilder,
    resource_dropped: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_attributes: AttributeBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
}

/// How large the resource and scope columns of a batch will grow (see
/// [`OriginColumns::with_capacity`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginCapacity {
    pub rows: usize,
    pub resource_attributes: MapCapacity,
    pub scope_attributes: MapCapacity,
    /// A bound on the bytes of each of the short strings (service and scope names).
    pub bytes: usize,
}

/// What builders' `new()` start with, for batches of unknown size.
impl Default for OriginCapacity {
    fn default() -> Self {
        OriginCapacity {
            rows: BUILDER_DEFAULT,
            resource_attributes: MapCapacity::default(),
            scope_attributes: MapCapacity::default(),
            bytes: BUILDER_DEFAULT,
        }
    }
}

impl OriginColumns {
    pub(crate) fn new() -> Self {
        OriginColumns::with_capacity(OriginCapacity::default())
    }

    /// Columns allocated once for what `c` says they will hold.
    pub(crate) fn with_capacity(c: OriginCapacity) -> Self {
        OriginColumns {
            service_name: StringBuilder::with_capacity(c.rows, c.bytes),
            scope_name: StringBuilder::with_capacity(c.rows, c.bytes),
            scope_version: StringBuilder::with_capacity(c.rows, c.bytes),
            resource_attributes: attribute_builder_with(c.rows, c.resource_attributes),
            resource_dropped: UInt32Builder::with_capacity(c.rows),
            resource_schema_url: StringBuilder::with_capacity(c.rows, c.bytes),
            scope_attributes: attribute_builder_with(c.rows, c.scope_attributes),
            scope_dropped: UInt32Builder::with_capacity(c.rows),
            scope_schema_url: StringBuilder::with_capacity(c.rows, c.bytes),
        }
    }

    pub(crate) fn append(&mut self, origin: &Origin<'_>) -> Result<()> {
        let resource_attributes = origin.resource.map_or(&[][..], |r| &r.attributes[..]);
        self.service_name
            .append_option(attribute_str(resource_attributes, "service.name"));
        append_attributes(&mut self.resource_attributes, resource_attributes)?;
        self.resource_dropped
            .append_value(origin.resource.map_or(0, |r| r.dropped_attributes_count));
        self.resource_schema_url
            .append_value(origin.resource_schema_url);
        let scope = origin.scope;
        self.scope_name
            .append_value(scope.map_or("", |s| s.name.as_str()));
        self.scope_version
            .append_value(scope.map_or("", |s| s.version.as_str()));
        append_attributes(
            &mut self.scope_attributes,
            scope.map_or(&[][..], |s| &s.attributes[..]),
        )?;
        self.scope_dropped
            .append_value(scope.map_or(0, |s| s.dropped_attributes_count));
        self.scope_schema_url.append_value(origin.scope_schema_url);
        Ok(())
    }

    /// The columns in the order of `schema::origin_fields`.
    pub(crate) fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.service_name.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.resource_dropped.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_attributes.finish()),
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_schema_url.finish()),
        ]
    }
}

#[cfg(test)]
mod tests;
