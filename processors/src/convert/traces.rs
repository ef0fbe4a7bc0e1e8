//! `ExportTraceServiceRequest` → the `spans` table.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, ListArray, StringBuilder, StructArray, UInt32Builder};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};

use super::{
    append_attributes, attribute_builder, attribute_builder_with, attribute_str, check_repeated,
    hex_id, nanos, optional_hex_id, origin_bytes, tight_batch, timestamp_builder,
    timestamp_builder_with, AttributeBuilder, Converted, MapCapacity, Origin, OriginCapacity,
    OriginColumns, Rejections,
};
use crate::processor::SpanIds;
use crate::schema::{event_fields, link_fields, Table};
use crate::Result;

mod wire;

pub use wire::spans_from_protobuf;

/// The SQL spelling of a span kind; unknown numbers are kept as their decimal text.
pub fn kind_name(kind: i32) -> Cow<'static, str> {
    Cow::Borrowed(match kind {
        0 => "UNSPECIFIED",
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        other => return Cow::Owned(other.to_string()),
    })
}

/// The SQL spelling of a status code; unknown numbers are kept as their decimal text.
pub fn status_name(code: i32) -> Cow<'static, str> {
    Cow::Borrowed(match StatusCode::try_from(code) {
        Ok(StatusCode::Unset) => "UNSET",
        Ok(StatusCode::Ok) => "OK",
        Ok(StatusCode::Error) => "ERROR",
        Err(_) => return Cow::Owned(code.to_string()),
    })
}

/// Builds the `spans` batch of one export request.
pub fn spans_from_otlp(request: &ExportTraceServiceRequest) -> Result<Converted> {
    check_repeated(request.resource_spans.iter().flat_map(|rs| {
        rs.scope_spans.iter().map(|ss| {
            let repeated = origin_bytes(rs.resource.as_ref(), ss.scope.as_ref());
            (ss.spans.len(), repeated)
        })
    }))?;
    let mut columns = SpanColumns::new();
    let mut rejections = Rejections::default();
    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let origin = Origin {
                resource: resource_spans.resource.as_ref(),
                resource_schema_url: &resource_spans.schema_url,
                scope: scope_spans.scope.as_ref(),
                scope_schema_url: &scope_spans.schema_url,
            };
            for (i, span) in scope_spans.spans.iter().enumerate() {
                match ValidSpan::check(span) {
                    Ok(valid) => columns.append(span, &valid, &origin)?,
                    Err(why) => rejections.reject(1, || {
                        format!("resource_spans[{ri}].scope_spans[{si}].spans[{i}]: {why}")
                    }),
                }
            }
        }
    }
    let (batch, ids) = columns.finish()?;
    Ok(rejections.finish(batch, "spans").with_ids(ids))
}

/// The parts of a span that need checking, checked.
struct ValidSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    start: i64,
    end: i64,
    event_times: Vec<i64>,
    links: Vec<(String, String)>,
}

impl ValidSpan {
    fn check(span: &Span) -> std::result::Result<ValidSpan, String> {
        let trace_id = hex_id(&span.trace_id, 16, "trace_id")?;
        let span_id = hex_id(&span.span_id, 8, "span_id")?;
        let parent_span_id = optional_hex_id(&span.parent_span_id, 8, "parent_span_id")?;
        let start =
            nanos(span.start_time_unix_nano).ok_or("start_time_unix_nano is past the year 2262")?;
        let end =
            nanos(span.end_time_unix_nano).ok_or("end_time_unix_nano is past the year 2262")?;
        let event_times = span
            .events
            .iter()
            .map(|e| nanos(e.time_unix_nano).ok_or("an event's time_unix_nano is past 2262"))
            .collect::<std::result::Result<_, _>>()?;
        let links = span
            .links
            .iter()
            .map(|l| {
                Ok((
                    hex_id(&l.trace_id, 16, "link trace_id")?,
                    hex_id(&l.span_id, 8, "link span_id")?,
                ))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(ValidSpan {
            trace_id,
            span_id,
            parent_span_id,
            start,
            end,
            event_times,
            links,
        })
    }
}

struct SpanColumns {
    start_time: arrow::array::TimestampNanosecondBuilder,
    end_time: arrow::array::TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    agent_id: StringBuilder,
    attributes: AttributeBuilder,
    events: EventColumns,
    links: LinkColumns,
    flags: UInt32Builder,
    dropped_attributes: UInt32Builder,
    dropped_events: UInt32Builder,
    dropped_links: UInt32Builder,
    origin: OriginColumns,
    ids: SpanIds,
}

/// How large a `spans` batch will grow, known before its first row when the request
/// has been split into its spans first (see [`SpanColumns::with_capacity`]).
#[derive(Clone, Copy, Debug)]
struct SpanCapacity {
    rows: usize,
    /// A bound on the bytes of each of the short strings of a row (name, kind, status
    /// and agent id), over all rows.
    bytes: usize,
    attributes: MapCapacity,
    origin: OriginCapacity,
}

/// What builders' `new()` start with, for batches of unknown size.
impl Default for SpanCapacity {
    fn default() -> Self {
        let origin = OriginCapacity::default();
        SpanCapacity {
            rows: origin.rows,
            bytes: origin.bytes,
            attributes: MapCapacity::default(),
            origin,
        }
    }
}

impl SpanColumns {
    fn new() -> Self {
        SpanColumns::with_capacity(SpanCapacity::default())
    }

    /// Columns allocated once for what `c` says they will hold: a builder left to grow
    /// doubles, copying all it holds at each step, and the batch is then shrunk to its
    /// length ([`tight_batch`]) with one more copy of each column.
    fn with_capacity(c: SpanCapacity) -> Self {
        let rows = c.rows;
        SpanColumns {
            start_time: timestamp_builder_with(rows),
            end_time: timestamp_builder_with(rows),
            duration_ns: Int64Builder::with_capacity(rows),
            trace_id: StringBuilder::with_capacity(rows, rows.saturating_mul(32)),
            span_id: StringBuilder::with_capacity(rows, rows.saturating_mul(16)),
            parent_span_id: StringBuilder::with_capacity(rows, rows.saturating_mul(16)),
            trace_state: StringBuilder::with_capacity(rows, 0),
            name: StringBuilder::with_capacity(rows, c.bytes),
            kind: StringBuilder::with_capacity(rows, c.bytes),
            status_code: StringBuilder::with_capacity(rows, c.bytes),
            status_message: StringBuilder::with_capacity(rows, 0),
            agent_id: StringBuilder::with_capacity(rows, c.bytes),
            attributes: attribute_builder_with(rows, c.attributes),
            events: EventColumns::with_rows(rows),
            links: LinkColumns::with_rows(rows),
            flags: UInt32Builder::with_capacity(rows),
            dropped_attributes: UInt32Builder::with_capacity(rows),
            dropped_events: UInt32Builder::with_capacity(rows),
            dropped_links: UInt32Builder::with_capacity(rows),
            origin: OriginColumns::with_capacity(c.origin),
            ids: SpanIds::with_capacity(rows),
        }
    }

    fn append(&mut self, span: &Span, valid: &ValidSpan, origin: &Origin<'_>) -> Result<()> {
        self.start_time.append_value(valid.start);
        self.end_time.append_value(valid.end);
        self.duration_ns
            .append_value(valid.end.saturating_sub(valid.start));
        self.trace_id.append_value(&valid.trace_id);
        self.span_id.append_value(&valid.span_id);
        self.parent_span_id
            .append_option(valid.parent_span_id.as_deref());
        self.ids
            .push(&span.trace_id, &span.span_id, &span.parent_span_id);
        self.trace_state.append_value(&span.trace_state);
        self.name.append_value(&span.name);
        self.kind.append_value(kind_name(span.kind));
        let status = span.status.clone().unwrap_or_default();
        self.status_code.append_value(status_name(status.code));
        self.status_message.append_value(&status.message);
        let resource_attributes = origin.resource.map_or(&[][..], |r| &r.attributes[..]);
        let agent_id = [&span.attributes[..], resource_attributes]
            .into_iter()
            .find_map(|attrs| super::agent_id(|key| attribute_str(attrs, key)));
        self.agent_id.append_option(agent_id);
        append_attributes(&mut self.attributes, &span.attributes)?;
        self.events.append(span, &valid.event_times)?;
        self.links.append(span, &valid.links)?;
        self.flags.append_value(span.flags);
        self.dropped_attributes
            .append_value(span.dropped_attributes_count);
        self.dropped_events.append_value(span.dropped_events_count);
        self.dropped_links.append_value(span.dropped_links_count);
        self.origin.append(origin)
    }

    /// The batch, and its rows' ids as numbers.
    fn finish(mut self) -> Result<(RecordBatch, SpanIds)> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.agent_id.finish()),
            Arc::new(self.attributes.finish()),
            self.events.finish(),
            self.links.finish(),
            Arc::new(self.flags.finish()),
            Arc::new(self.dropped_attributes.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.dropped_links.finish()),
        ];
        columns.extend(self.origin.finish());
        Ok((tight_batch(Table::SPANS.schema(), columns)?, self.ids))
    }
}

/// `events`: a list of structs per span, built as flat child columns plus offsets.
struct EventColumns {
    time: arrow::array::TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributeBuilder,
    dropped: UInt32Builder,
    lengths: Vec<usize>,
}

impl EventColumns {
    /// Columns of events, their list lengths allocated for `rows` spans (the events
    /// themselves are few, and grow as they come).
    fn with_rows(rows: usize) -> Self {
        EventColumns {
            time: timestamp_builder(),
            name: StringBuilder::new(),
            attributes: attribute_builder(),
            dropped: UInt32Builder::new(),
            lengths: Vec::with_capacity(rows),
        }
    }

    fn append(&mut self, span: &Span, times: &[i64]) -> Result<()> {
        for (event, time) in span.events.iter().zip(times) {
            self.time.append_value(*time);
            self.name.append_value(&event.name);
            append_attributes(&mut self.attributes, &event.attributes)?;
            self.dropped.append_value(event.dropped_attributes_count);
        }
        self.lengths.push(span.events.len());
        Ok(())
    }

    fn finish(mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped.finish()),
        ];
        let values = StructArray::new(event_fields(), children, None);
        list_array(
            DataType::Struct(event_fields()),
            self.lengths,
            Arc::new(values),
        )
    }
}

struct LinkColumns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: AttributeBuilder,
    dropped: UInt32Builder,
    flags: UInt32Builder,
    lengths: Vec<usize>,
}

impl LinkColumns {
    /// As [`EventColumns::with_rows`].
    fn with_rows(rows: usize) -> Self {
        LinkColumns {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            attributes: attribute_builder(),
            dropped: UInt32Builder::new(),
            flags: UInt32Builder::new(),
            lengths: Vec::with_capacity(rows),
        }
    }

    fn append(&mut self, span: &Span, ids: &[(String, String)]) -> Result<()> {
        for (link, (trace_id, span_id)) in span.links.iter().zip(ids) {
            self.trace_id.append_value(trace_id);
            self.span_id.append_value(span_id);
            self.trace_state.append_value(&link.trace_state);
            append_attributes(&mut self.attributes, &link.attributes)?;
            self.dropped.append_value(link.dropped_attributes_count);
            self.flags.append_value(link.flags);
        }
        self.lengths.push(span.links.len());
        Ok(())
    }

    fn finish(mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped.finish()),
            Arc::new(self.flags.finish()),
        ];
        let values = StructArray::new(link_fields(), children, None);
        list_array(
            DataType::Struct(link_fields()),
            self.lengths,
            Arc::new(values),
        )
    }
}

/// A non-null list column from per-row lengths and the flat child values.
pub(crate) fn list_array(item: DataType, lengths: Vec<usize>, values: ArrayRef) -> ArrayRef {
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", item, true)),
        OffsetBuffer::from_lengths(lengths),
        values,
        None,
    ))
}
