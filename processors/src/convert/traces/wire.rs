//! `ExportTraceServiceRequest` protobuf bytes → the `spans` table, without prost.
//!
//! The general path decodes a request into prost's owned structs (a `String` or `Vec`
//! for every id, name, key and value) and then copies them into Arrow builders. This
//! one walks the protobuf wire format once and appends straight into the same
//! builders, borrowing every string from the request buffer: no allocation per span,
//! attribute or value.
//!
//! It takes only the common case: a request prost decodes without complaint and whose
//! spans are all valid. On anything else (a malformed message, invalid UTF-8, a
//! rejected span, a repeated singular message that prost would merge, nesting deeper
//! than [`MAX_VALUE_DEPTH`]) it returns `None` and the caller takes the general path,
//! which then produces exactly the error, repair or partial success it always did.
//! Property tests hold the two paths to the same batch.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, EntityRef};
use prost::Message as _;

use super::{kind_name, status_name, SpanCapacity, SpanColumns};
use crate::anyvalue;
use crate::convert::{
    agent_id, id_error, Converted, MapCapacity, OriginCapacity, Rejections, AGENT_ID_KEYS,
    MAX_REPEATED_BYTES,
};
use crate::wire::{Fields, Malformed, Value};
use crate::Result;

/// How deep an array or key-value-list attribute value may nest before this path
/// hands the request to prost (whose recursion limit then applies as usual).
const MAX_VALUE_DEPTH: usize = 16;

/// Why the wire walk stepped aside: the general path decides what the request is.
#[derive(Debug)]
struct Fallback;

/// Malformed wire data: prost decides how to refuse it.
impl From<Malformed> for Fallback {
    fn from(_: Malformed) -> Fallback {
        Fallback
    }
}

type Walk<T> = std::result::Result<T, Fallback>;

/// Builds the `spans` batch of one protobuf-encoded `ExportTraceServiceRequest`, or
/// `None` when the request needs the general path (see the module docs).
pub fn spans_from_protobuf(bytes: &[u8]) -> Option<Result<Converted>> {
    match request(bytes) {
        Ok(columns) => Some(
            columns
                .finish()
                .map(|(batch, ids)| Rejections::default().finish(batch, "spans").with_ids(ids)),
        ),
        Err(Fallback) => None,
    }
}

/// Sets a singular message field, stepping aside when it repeats (prost merges).
fn once<'a>(slot: &mut Option<&'a [u8]>, value: Value<'a>) -> Walk<()> {
    if slot.replace(value.bytes()?).is_some() {
        return Err(Fallback);
    }
    Ok(())
}

/// Skips a field this path does not store; its wire type is already checked.
fn skip(_: Value<'_>) -> Walk<()> {
    Ok(())
}

/// The request split into its resources, scopes and spans before any row is built,
/// so that the columns are allocated once at about their final size.
fn request(bytes: &[u8]) -> Walk<SpanColumns> {
    let resources = split(bytes)?;
    let mut columns = SpanColumns::with_capacity(capacity(&resources)?);
    let mut scratch = Scratch::default();
    for (resource, scopes) in &resources {
        for (scope, spans) in scopes {
            let origin = OriginView { resource, scope };
            for span in spans {
                self::span(span, &origin, &mut columns, &mut scratch)?;
            }
            append_origin(&mut columns, &origin, spans.len())?;
        }
    }
    Ok(columns)
}

/// The request's resources, each with its scopes and their spans.
fn split(bytes: &[u8]) -> Walk<Vec<Split<'_>>> {
    let mut resources = Vec::new();
    let mut fields = Fields::of(bytes);
    while let Some((number, value)) = fields.next()? {
        match number {
            1 => resources.push(resource_spans(value.bytes()?)?),
            _ => skip(value)?,
        }
    }
    Ok(resources)
}

/// One `ResourceSpans`: its resource, and each of its scopes with their spans.
type Split<'a> = (ResourceHead<'a>, Vec<(ScopeHead<'a>, Vec<&'a [u8]>)>);

/// How large the columns of `resources` will grow: exact for the rows and for what
/// the resources and scopes repeat on each; for the spans' own attributes, those of
/// each scope's first span times its spans, with a quarter more (spans of one scope
/// come from one instrumentation, and a column that falls short grows as it would
/// have without this), within what the span messages can hold: a large first span
/// followed by many small ones must not reserve more than the request could fill.
/// The span messages' bytes alone would do as the estimate, but memory reserved and
/// handed back for every request stays with the process.
fn capacity(resources: &[Split<'_>]) -> Walk<SpanCapacity> {
    let mut c = SpanCapacity {
        rows: 0,
        bytes: 0,
        attributes: MapCapacity::NONE,
        origin: OriginCapacity {
            rows: 0,
            resource_attributes: MapCapacity::NONE,
            scope_attributes: MapCapacity::NONE,
            bytes: 0,
        },
    };
    let mut span_bytes = 0usize;
    for (resource, scopes) in resources {
        for (scope, spans) in scopes {
            let Some(first) = spans.first() else {
                continue;
            };
            let rows = spans.len();
            c.rows += rows;
            span_bytes = span_bytes.saturating_add(spans.iter().map(|s| s.len()).sum());
            let one = span_attributes(first)?;
            let headroom = MapCapacity {
                entries: one.entries / 4,
                key_bytes: one.key_bytes / 4,
                value_bytes: one.value_bytes / 4,
            };
            c.attributes = c.attributes.add(one.add(headroom).times(rows));
            let o = &mut c.origin;
            o.resource_attributes = o
                .resource_attributes
                .add(rendered(&resource.attributes).times(rows));
            o.scope_attributes = o
                .scope_attributes
                .add(rendered(&scope.attributes).times(rows));
            let longest = [
                resource.service_name.map_or(0, str::len),
                resource.schema_url.len(),
                scope.name.len(),
                scope.version.len(),
                scope.schema_url.len(),
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            o.bytes = o.bytes.saturating_add(rows.saturating_mul(longest));
        }
    }
    // Each attribute takes at least two bytes of a span (its field's tag and length),
    // and its key and its value are bytes of the span.
    c.attributes = MapCapacity {
        entries: c.attributes.entries.min(span_bytes / 2),
        key_bytes: c.attributes.key_bytes.min(span_bytes),
        value_bytes: c.attributes.value_bytes.min(span_bytes),
    };
    // Past the limit, the general path refuses the request with its reason.
    let o = &c.origin;
    let repeated = [o.resource_attributes, o.scope_attributes]
        .iter()
        .fold(0usize, |sum, m| {
            sum.saturating_add(m.key_bytes)
                .saturating_add(m.value_bytes)
        });
    if repeated > MAX_REPEATED_BYTES {
        return Err(Fallback);
    }
    c.origin.rows = c.rows;
    c.bytes = c.rows.saturating_mul(SHORT_STRING);
    Ok(c)
}

/// The attributes of one span: how many, and the bytes of their keys and of their
/// values as sent (a number's text may be a few bytes longer).
fn span_attributes(span: &[u8]) -> Walk<MapCapacity> {
    let mut one = MapCapacity::NONE;
    let mut fields = Fields::of(span);
    while let Some((number, value)) = fields.next()? {
        if number == 9 {
            let (key, value) = key_value(value.bytes()?)?;
            one.entries += 1;
            one.key_bytes += key.len();
            one.value_bytes += value.map_or(0, <[u8]>::len);
        }
    }
    Ok(one)
}

/// The size of one row of `attributes`.
fn rendered(attributes: &RenderedAttributes<'_>) -> MapCapacity {
    MapCapacity {
        entries: attributes.len(),
        key_bytes: attributes.iter().map(|(key, _)| key.len()).sum(),
        value_bytes: attributes
            .iter()
            .map(|(_, value)| value.as_deref().map_or(0, str::len))
            .sum(),
    }
}

/// The bytes a span's name, kind, status or agent id is expected to take: the
/// columns grow past it where a request's are longer.
const SHORT_STRING: usize = 16;

/// Buffers reused across a request.
#[derive(Default)]
struct Scratch {
    /// Non-string attribute values, rendered.
    text: String,
}

/// A rendered attribute map of a resource or scope, appended to every span row.
type RenderedAttributes<'a> = Vec<(&'a str, Option<std::borrow::Cow<'a, str>>)>;

/// What every span of one `ResourceSpans` repeats.
struct ResourceHead<'a> {
    service_name: Option<&'a str>,
    agent_id: Option<&'a str>,
    attributes: RenderedAttributes<'a>,
    dropped: u32,
    schema_url: &'a str,
}

/// What every span of one `ScopeSpans` repeats.
#[derive(Default)]
struct ScopeHead<'a> {
    name: &'a str,
    version: &'a str,
    attributes: RenderedAttributes<'a>,
    dropped: u32,
    schema_url: &'a str,
}

/// A span's resource and scope.
struct OriginView<'r, 'a> {
    resource: &'r ResourceHead<'a>,
    scope: &'r ScopeHead<'a>,
}

/// `ResourceSpans` and `ScopeSpans` share one layout: 1, the resource or scope (a
/// singular message); 2, the repeated messages inside; 3, the schema URL.
type Envelope<'a> = (Option<&'a [u8]>, Vec<&'a [u8]>, &'a str);

fn envelope(bytes: &[u8]) -> Walk<Envelope<'_>> {
    let (mut head, mut items, mut schema_url) = (None, Vec::new(), "");
    let mut fields = Fields::of(bytes);
    while let Some((number, value)) = fields.next()? {
        match number {
            1 => once(&mut head, value)?,
            2 => items.push(value.bytes()?),
            3 => schema_url = value.str()?,
            _ => skip(value)?,
        }
    }
    Ok((head, items, schema_url))
}

fn resource_spans(bytes: &[u8]) -> Walk<Split<'_>> {
    let (resource, scope_spans, schema_url) = envelope(bytes)?;
    let mut attributes = Vec::new();
    let mut dropped = 0;
    if let Some(resource) = resource {
        let mut fields = Fields::of(resource);
        while let Some((number, value)) = fields.next()? {
            match number {
                1 => attributes.push(rendered_key_value(value.bytes()?, 3)?),
                2 => dropped = value.varint()? as u32,
                3 => {
                    // Not stored, but prost would refuse it if it were malformed.
                    EntityRef::decode(value.bytes()?).map_err(|_| Fallback)?;
                }
                _ => skip(value)?,
            }
        }
    }
    let head = ResourceHead {
        service_name: first_string(&attributes, "service.name"),
        agent_id: agent_id(|key| first_string(&attributes, key)),
        attributes,
        dropped,
        schema_url,
    };
    let scopes = scope_spans
        .into_iter()
        .map(self::scope_spans)
        .collect::<Walk<_>>()?;
    Ok((head, scopes))
}

/// The value of the first attribute named `key`, if that value is a string: what
/// `attribute_str` finds in the prost structs.
fn first_string<'a>(attributes: &RenderedAttributes<'a>, key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| match v {
            Some(std::borrow::Cow::Borrowed(s)) => Some(*s),
            _ => None,
        })
}

fn scope_spans(bytes: &[u8]) -> Walk<(ScopeHead<'_>, Vec<&[u8]>)> {
    let (scope, spans, schema_url) = envelope(bytes)?;
    let mut head = ScopeHead {
        schema_url,
        ..ScopeHead::default()
    };
    if let Some(scope) = scope {
        let mut fields = Fields::of(scope);
        while let Some((number, value)) = fields.next()? {
            match number {
                1 => head.name = value.str()?,
                2 => head.version = value.str()?,
                3 => head.attributes.push(rendered_key_value(value.bytes()?, 4)?),
                4 => head.dropped = value.varint()? as u32,
                _ => skip(value)?,
            }
        }
    }
    Ok((head, spans))
}

/// A hex id checked as [`super::ValidSpan`] checks it; a failure steps aside so the
/// general path rejects the span with its message.
fn id(bytes: &[u8], len: usize) -> Walk<IdHex> {
    if id_error(bytes, len, "").is_some() {
        return Err(Fallback);
    }
    Ok(IdHex::of(bytes))
}

/// The lowercase hex of an id of up to 16 bytes, on the stack.
struct IdHex {
    buf: [u8; 32],
    len: usize,
}

impl IdHex {
    /// An id of 16 or 8 bytes (as [`id`] checked) as hex.
    fn of(bytes: &[u8]) -> Self {
        let mut buf = [0u8; 32];
        let len = 2 * bytes.len().min(16);
        // The slice is twice the bytes' length: encoding cannot fail.
        let _ = hex::encode_to_slice(&bytes[..len / 2], &mut buf[..len]);
        IdHex { buf, len }
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn time(t: u64) -> Walk<i64> {
    i64::try_from(t).map_err(|_| Fallback)
}

fn span(
    bytes: &[u8],
    origin: &OriginView<'_, '_>,
    columns: &mut SpanColumns,
    scratch: &mut Scratch,
) -> Walk<()> {
    let (mut trace_id, mut span_id, mut parent_span_id): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut trace_state, mut name) = ("", "");
    let (mut kind, mut start, mut end) = (0i32, 0u64, 0u64);
    let (mut flags, mut dropped_attributes, mut dropped_events, mut dropped_links) = (0, 0, 0, 0);
    let mut status = None;
    let (mut events, mut links) = (0usize, 0usize);
    // The first attribute of each of AGENT_ID_KEYS: Some(None) when the first one is
    // not a string, as `attribute_str` reads it.
    let mut agent_keys: [Option<Option<&str>>; AGENT_ID_KEYS.len()] = [None; AGENT_ID_KEYS.len()];
    let mut fields = Fields::of(bytes);
    while let Some((number, value)) = fields.next()? {
        match number {
            1 => trace_id = value.bytes()?,
            2 => span_id = value.bytes()?,
            3 => trace_state = value.str()?,
            4 => parent_span_id = value.bytes()?,
            5 => name = value.str()?,
            6 => kind = value.varint()? as i32,
            7 => start = value.fixed64()?,
            8 => end = value.fixed64()?,
            9 => {
                let (key, string) =
                    append_key_value(value.bytes()?, 4, &mut columns.attributes, scratch)?;
                if let Some(at) = AGENT_ID_KEYS.iter().position(|k| *k == key) {
                    agent_keys[at].get_or_insert(string);
                }
            }
            10 => dropped_attributes = value.varint()? as u32,
            11 => {
                event(value.bytes()?, columns, scratch)?;
                events += 1;
            }
            12 => dropped_events = value.varint()? as u32,
            13 => {
                link(value.bytes()?, columns, scratch)?;
                links += 1;
            }
            14 => dropped_links = value.varint()? as u32,
            15 => once(&mut status, value)?,
            16 => flags = value.fixed32()?,
            _ => skip(value)?,
        }
    }
    let trace_hex = id(trace_id, 16)?;
    let span_hex = id(span_id, 8)?;
    let parent_hex = if parent_span_id.is_empty() {
        None
    } else {
        Some(id(parent_span_id, 8)?)
    };
    let (start, end) = (time(start)?, time(end)?);
    let (status_code, status_message) = span_status(status)?;

    let c = columns;
    c.start_time.append_value(start);
    c.end_time.append_value(end);
    c.duration_ns.append_value(end.saturating_sub(start));
    c.trace_id.append_value(trace_hex.as_str());
    c.span_id.append_value(span_hex.as_str());
    c.parent_span_id
        .append_option(parent_hex.as_ref().map(IdHex::as_str));
    c.ids.push(trace_id, span_id, parent_span_id);
    c.trace_state.append_value(trace_state);
    c.name.append_value(name);
    c.kind.append_value(kind_name(kind));
    c.status_code.append_value(status_name(status_code));
    c.status_message.append_value(status_message);
    let agent_id = agent_id(|key| {
        AGENT_ID_KEYS
            .iter()
            .position(|k| *k == key)
            .and_then(|at| agent_keys[at].flatten())
    })
    .or(origin.resource.agent_id);
    c.agent_id.append_option(agent_id);
    c.attributes.append(true).map_err(|_| Fallback)?;
    c.events.lengths.push(events);
    c.links.lengths.push(links);
    c.flags.append_value(flags);
    c.dropped_attributes.append_value(dropped_attributes);
    c.dropped_events.append_value(dropped_events);
    c.dropped_links.append_value(dropped_links);
    Ok(())
}

/// A span's `Status`: its code and message.
fn span_status(status: Option<&[u8]>) -> Walk<(i32, &str)> {
    let (mut code, mut message) = (0i32, "");
    if let Some(status) = status {
        let mut fields = Fields::of(status);
        while let Some((number, value)) = fields.next()? {
            match number {
                2 => message = value.str()?,
                3 => code = value.varint()? as i32,
                _ => skip(value)?,
            }
        }
    }
    Ok((code, message))
}

/// The resource and scope columns of a scope's `rows` spans: the same on each, so the
/// single values go in as runs.
fn append_origin(c: &mut SpanColumns, origin: &OriginView<'_, '_>, rows: usize) -> Walk<()> {
    let (resource, scope) = (origin.resource, origin.scope);
    let o = &mut c.origin;
    match resource.service_name {
        Some(name) => o.service_name.append_value_n(name, rows),
        None => o.service_name.append_nulls(rows),
    }
    o.resource_dropped.append_value_n(resource.dropped, rows);
    o.resource_schema_url
        .append_value_n(resource.schema_url, rows);
    o.scope_name.append_value_n(scope.name, rows);
    o.scope_version.append_value_n(scope.version, rows);
    o.scope_dropped.append_value_n(scope.dropped, rows);
    o.scope_schema_url.append_value_n(scope.schema_url, rows);
    for _ in 0..rows {
        append_rendered(&mut o.resource_attributes, &resource.attributes)?;
        append_rendered(&mut o.scope_attributes, &scope.attributes)?;
    }
    Ok(())
}

fn event(bytes: &[u8], columns: &mut SpanColumns, scratch: &mut Scratch) -> Walk<()> {
    let (mut time_unix_nano, mut name, mut dropped) = (0u64, "", 0u32);
    let e = &mut columns.events;
    let mut fields = Fields::of(bytes);
    while let Some((number, value)) = fields.next()? {
        match number {
            1 => time_unix_nano = value.fixed64()?,
            2 => name = value.str()?,
            3 => {
                append_key_value(value.bytes()?, 5, &mut e.attributes, scratch)?;
            }
            4 => dropped = value.varint()? as u32,
            _ => skip(value)?,
        }
    }
    e.time.append_value(time(time_unix_nano)?);
    e.name.append_value(name);
    e.attributes.append(true).map_err(|_| Fallback)?;
    e.dropped.append_value(dropped);
    Ok(())
}

fn link(bytes: &[u8], columns: &mut SpanColumns, scratch: &mut Scratch) -> Walk<()> {
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    let (mut trace_state, mut dropped, mut flags) = ("", 0u32, 0u32);
    let l = &mut columns.links;
    let mut fields = Fields::of(bytes);
    while let Some((number, value)) = fields.next()? {
        match number {
            1 => trace_id = value.bytes()?,
            2 => span_id = value.bytes()?,
            3 => trace_state = value.str()?,
            4 => {
                append_key_value(value.bytes()?, 5, &mut l.attributes, scratch)?;
            }
            5 => dropped = value.varint()? as u32,
            6 => flags = value.fixed32()?,
            _ => skip(value)?,
        }
    }
    l.trace_id.append_value(id(trace_id, 16)?.as_str());
    l.span_id.append_value(id(span_id, 8)?.as_str());
    l.trace_state.append_value(trace_state);
    l.attributes.append(true).map_err(|_| Fallback)?;
    l.dropped.append_value(dropped);
    l.flags.append_value(flags);
    Ok(())
}

/// The parts of a `KeyValue`: its key and its `AnyValue` message, if set.
fn key_value(bytes: &[u8]) -> Walk<(&str, Option<&[u8]>)> {
    let (mut key, mut value) = ("", None);
    let mut fields = Fields::of(bytes);
    while let Some((number, field)) = fields.next()? {
        match number {
            1 => key = field.str()?,
            2 => once(&mut value, field)?,
            // `key_strindex` (profiles only): an int32.
            3 => {
                field.varint()?;
            }
            _ => skip(field)?,
        }
    }
    Ok((key, value))
}

/// A value's text: borrowed from the request when the value is a string, otherwise
/// rendered into the scratch buffer, or none for an empty `AnyValue`.
enum Text<'a> {
    None,
    String(&'a str),
    Rendered,
}

/// Renders an `AnyValue` as [`anyvalue::render`] does. `depth` is how deep the value
/// sits in the request, for prost's recursion limit.
fn render<'a>(bytes: &'a [u8], depth: usize, out: &mut String) -> Walk<Text<'a>> {
    out.clear();
    let mut fields = Fields::of(bytes);
    let Some((number, value)) = fields.next()? else {
        return Ok(Text::None);
    };
    if fields.rest().is_empty() {
        // The common case: exactly one scalar.
        match number {
            1 => return Ok(Text::String(value.str()?)),
            2 => {
                out.push_str(if value.varint()? != 0 {
                    "true"
                } else {
                    "false"
                });
                return Ok(Text::Rendered);
            }
            3 => {
                out.push_str(itoa::Buffer::new().format(value.varint()? as i64));
                return Ok(Text::Rendered);
            }
            4 => {
                out.push_str(&anyvalue::render_double(f64::from_bits(value.fixed64()?)));
                return Ok(Text::Rendered);
            }
            7 => {
                base64::engine::general_purpose::STANDARD.encode_string(value.bytes()?, out);
                return Ok(Text::Rendered);
            }
            _ => {}
        }
    }
    // Arrays, key-value lists, and anything unusual: prost decodes the value, within
    // a depth that prost would also accept within the whole request.
    let decoded = AnyValue::decode(bytes).map_err(|_| Fallback)?;
    if depth + value_depth(&decoded) > MAX_VALUE_DEPTH {
        return Err(Fallback);
    }
    match anyvalue::render(&decoded) {
        None => Ok(Text::None),
        Some(text) => {
            out.push_str(&text);
            match decoded.value {
                Some(any_value::Value::StringValue(_)) => Err(Fallback),
                _ => Ok(Text::Rendered),
            }
        }
    }
}

/// How many messages deep a decoded value nests below itself.
fn value_depth(value: &AnyValue) -> usize {
    match &value.value {
        Some(any_value::Value::ArrayValue(a)) => {
            1 + a
                .values
                .iter()
                .map(|v| 1 + value_depth(v))
                .max()
                .unwrap_or(0)
        }
        Some(any_value::Value::KvlistValue(l)) => {
            1 + l
                .values
                .iter()
                .map(|kv| 1 + kv.value.as_ref().map_or(0, |v| 1 + value_depth(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Appends one attribute to a map being built; returns its key and, when its value
/// is a string, that string.
fn append_key_value<'a>(
    bytes: &'a [u8],
    depth: usize,
    map: &mut crate::convert::AttributeBuilder,
    scratch: &mut Scratch,
) -> Walk<(&'a str, Option<&'a str>)> {
    let (key, value) = key_value(bytes)?;
    map.keys().append_value(key);
    let text = match value {
        Some(value) => render(value, depth + 1, &mut scratch.text)?,
        None => Text::None,
    };
    Ok(match text {
        Text::None => {
            map.values().append_null();
            (key, None)
        }
        Text::String(s) => {
            map.values().append_value(s);
            (key, Some(s))
        }
        Text::Rendered => {
            map.values().append_value(&scratch.text);
            (key, None)
        }
    })
}

/// A resource or scope attribute, rendered once for all the spans that repeat it.
fn rendered_key_value(
    bytes: &[u8],
    depth: usize,
) -> Walk<(&str, Option<std::borrow::Cow<'_, str>>)> {
    let (key, value) = key_value(bytes)?;
    let mut out = String::new();
    let text = match value {
        Some(value) => match render(value, depth + 1, &mut out)? {
            Text::None => None,
            Text::String(s) => Some(std::borrow::Cow::Borrowed(s)),
            Text::Rendered => Some(std::borrow::Cow::Owned(out)),
        },
        None => None,
    };
    Ok((key, text))
}

fn append_rendered(
    map: &mut crate::convert::AttributeBuilder,
    attributes: &[(&str, Option<std::borrow::Cow<'_, str>>)],
) -> Walk<()> {
    for (key, value) in attributes {
        map.keys().append_value(key);
        map.values().append_option(value.as_deref());
    }
    map.append(true).map_err(|_| Fallback)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    use super::*;

    fn span(attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_spelled_in_lowercase_hex_byte_by_byte() {
        for b in 0..=255u8 {
            let trace: Vec<u8> = (0..16u8).map(|i| b.rotate_left(u32::from(i)) ^ i).collect();
            let want: String = trace.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(IdHex::of(&trace).as_str(), want);
            assert_eq!(IdHex::of(&trace[..8]).as_str(), &want[..16]);
        }
    }

    #[test]
    fn a_large_first_span_does_not_size_the_rest() {
        let large = (0..50)
            .map(|i| KeyValue {
                key: format!("key.{i}"),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".repeat(1000))),
                }),
                ..Default::default()
            })
            .collect();
        let spans = std::iter::once(span(large))
            .chain((0..2000).map(|_| span(Vec::new())))
            .collect();
        let bytes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let c = capacity(&split(&bytes).expect("a request")).expect("sized");
        assert_eq!(c.rows, 2001);
        // The first span alone would ask for 2,001 × 50 × 1,250 bytes of values.
        assert!(c.attributes.value_bytes <= bytes.len(), "{c:?}");
        assert!(c.attributes.key_bytes <= bytes.len(), "{c:?}");
        assert!(c.attributes.entries <= bytes.len() / 2, "{c:?}");
        // And the batch is what it always was.
        let converted = spans_from_protobuf(&bytes)
            .expect("the wire path")
            .expect("valid");
        assert_eq!(converted.batch.num_rows(), 2001);
    }
}
