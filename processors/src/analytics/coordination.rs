//! Coordination events (docs/analytics.md): every span or span event that carries
//! `coordination.work.id` and `coordination.work.event` becomes a row of
//! `coordination_events`, derived on the acknowledgement path so the history never
//! misses an acknowledged claim. A span that names an item without an event gives the
//! book nothing to judge: everything its row would hold is in `spans` already, so it is
//! not stored a second time (the `work_activity` view reads it there, [`view_sql`]).
//!
//! A [`ClaimBook`] follows who holds each work item, so a row can say what the span
//! alone cannot: whether a claim hit an item another agent holds (`conflict`, with the
//! holder in `held_by`), how long an item took from claim to completion
//! (`cycle_time_ms`), and, on a completion that does not repeat them, the team, type and
//! story points its claim carried. Times are the events' own (a span's end, a span
//! event's time), never the clock of this process, so replaying the history gives the
//! same answers.
//!
//! The rules, per event of an item (by agent `a` at time `t`):
//! - a holding not seen for `lease_timeout_ms` has lapsed and is dropped first;
//! - `claim`: held by another agent → `conflict = true`, the holder keeps it; otherwise
//!   `a` holds it (a repeated claim by the holder renews it);
//! - `progress`: renews the holder's lease; on an item nobody holds, `a` takes it (its
//!   claim was not seen);
//! - `complete`, `fail`: the item is done and let go, `cycle_time_ms = t − claim time`;
//! - `release`: the holder (or an unnamed agent) lets it go.
//!
//! The book is bounded by `max_work_items`: when it is full the lapsed holdings go,
//! then the least recently seen. On start the collector rebuilds it from the stored
//! history, reading back only what the book needs ([`Lookback`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Array, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::clock::{LiveClock, Skip, DEFAULT_FUTURE_TOLERANCE_SECONDS};
use crate::columns::{number, string_at, strings, timestamps, MapColumn};
use crate::processor::{Processor, TableBatch};
use crate::schema::{timestamp_type, Table, TableDef};
use crate::{Error, Result};

mod restore;
pub use restore::Lookback;

pub const WORK_ID: &str = "coordination.work.id";
const WORK_EVENT: &str = "coordination.work.event";
const WORK_TYPE: &str = "coordination.work.type";
const PRIORITY: &str = "coordination.work.priority";
const STORY_POINTS: &str = "coordination.work.story_points";
const PROGRESS_PCT: &str = "coordination.work.progress_pct";
const TEAM: &str = "coordination.team";

pub const COORDINATION_EVENTS: Table = Table::declare(&TableDef {
    name: "coordination_events",
    code: 4,
    time_column: "time",
    fallback_time_column: None,
    exact_nanos: &[],
    cluster_column: None,
    schema: || SCHEMA.clone(),
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("work_id", DataType::Utf8, false),
        text("event"),
        text("agent_id"),
        text("team"),
        text("work_type"),
        text("priority"),
        Field::new("story_points", DataType::Float64, true),
        Field::new("progress_pct", DataType::Float64, true),
        Field::new("conflict", DataType::Boolean, false),
        text("held_by"),
        Field::new("cycle_time_ms", DataType::Int64, true),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("span_name", DataType::Utf8, false),
        text("service_name"),
    ]))
});

/// The `work_activity` view: every span that names a work item, with or without an
/// event, read from `spans` as the processor reads it (each attribute from the span,
/// else its resource; the time is the span's end, or its start when it has none).
/// Spans naming items are common and mostly say nothing of the items' holdings, so
/// only those with an event are stored again, as `coordination_events`.
pub fn view_sql() -> String {
    let attr = |key: &str| {
        format!("arrow_cast(coalesce(attributes['{key}'], resource_attributes['{key}']), 'Utf8')")
    };
    format!(
        "SELECT CASE WHEN end_time = arrow_cast(0, 'Timestamp(Nanosecond, Some(\"UTC\"))') \
         THEN start_time ELSE end_time END AS time, start_time, \
         arrow_cast(attributes['{WORK_ID}'], 'Utf8') AS work_id, {event} AS event, \
         agent_id, {team} AS team, {work_type} AS work_type, {priority} AS priority, \
         try_cast({points} AS DOUBLE) AS story_points, \
         try_cast({progress} AS DOUBLE) AS progress_pct, \
         trace_id, span_id, name AS span_name, service_name \
         FROM spans WHERE attributes['{WORK_ID}'] IS NOT NULL",
        event = attr(WORK_EVENT),
        team = attr(TEAM),
        work_type = attr(WORK_TYPE),
        priority = attr(PRIORITY),
        points = attr(STORY_POINTS),
        progress = attr(PROGRESS_PCT),
    )
}

/// `[processors.coordination]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// A holding not renewed (claim or progress by its holder) for this long lapses.
    pub lease_timeout_ms: u64,
    /// Work items followed at once; beyond it the least recently seen are forgotten.
    pub max_work_items: usize,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            lease_timeout_ms: 3_600_000,
            max_work_items: 100_000,
        }
    }
}

impl CoordinationConfig {
    pub fn validate(&self) -> std::result::Result<(), crate::ConfigError> {
        use crate::config_error::positive;
        positive(
            "processors.coordination.lease_timeout_ms",
            self.lease_timeout_ms,
        )?;
        positive(
            "processors.coordination.max_work_items",
            self.max_work_items as u64,
        )
    }
}

/// One coordination event, as read from a span or span event (or a stored row).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sighting<'a> {
    pub time: i64,
    pub work_id: &'a str,
    pub event: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub team: Option<&'a str>,
    pub work_type: Option<&'a str>,
    pub story_points: Option<f64>,
}

/// What the book adds to an event's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub conflict: bool,
    pub held_by: Option<String>,
    pub cycle_time_ms: Option<i64>,
    /// From the item's claim, for an event that does not say it itself.
    pub team: Option<String>,
    pub work_type: Option<String>,
    pub story_points: Option<f64>,
}

#[derive(Clone, Debug)]
struct Holding {
    agent: Option<String>,
    claimed_at: Option<i64>,
    last_seen: i64,
    team: Option<String>,
    work_type: Option<String>,
    story_points: Option<f64>,
}

/// Who holds which work item; see the module documentation for the rules.
#[derive(Debug)]
pub struct ClaimBook {
    /// Keyed by work id, with a seeded fast hash (one lookup per event on the
    /// acknowledgement path).
    items: HashMap<String, Holding, foldhash::fast::RandomState>,
    lease_ns: i64,
    cap: usize,
    forgotten: u64,
}

impl ClaimBook {
    pub fn new(config: &CoordinationConfig) -> ClaimBook {
        ClaimBook {
            items: HashMap::default(),
            lease_ns: i64::try_from(config.lease_timeout_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            cap: config.max_work_items,
            forgotten: 0,
        }
    }

    /// Items held now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Holdings dropped because the book was full.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Who holds work at `now`: (agent, the item's team) for each holding with an agent
    /// that has not lapsed, one per agent and team.
    pub fn holders(&self, now: i64) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = self
            .items
            .values()
            .filter(|h| now.saturating_sub(h.last_seen) <= self.lease_ns)
            .filter_map(|h| Some((h.agent.clone()?, h.team.clone())))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Applies one event and says what its row records.
    pub fn apply(&mut self, s: &Sighting<'_>) -> Verdict {
        let lease = self.lease_ns;
        let mut held = self.items.get_mut(s.work_id);
        if held
            .as_ref()
            .is_some_and(|h| s.time.saturating_sub(h.last_seen) > lease)
        {
            self.items.remove(s.work_id);
            held = None;
        }
        let mut verdict = Verdict::default();
        let other_holder = |h: &Holding| match (&h.agent, s.agent) {
            (Some(holder), Some(agent)) => holder != agent,
            _ => false,
        };
        match (s.event, held) {
            (Some("claim"), Some(h)) if other_holder(h) => {
                verdict.conflict = true;
                verdict.held_by = h.agent.clone();
                verdict.fill_from(h, s);
            }
            (Some("claim" | "progress"), Some(h)) => {
                if h.agent.is_none() {
                    h.agent = s.agent.map(str::to_owned);
                }
                if !other_holder(h) {
                    h.last_seen = h.last_seen.max(s.time);
                }
                fill(h, s);
                verdict.fill_from(h, s);
            }
            (Some(event @ ("claim" | "progress")), None) => {
                let h = Holding {
                    agent: s.agent.map(str::to_owned),
                    claimed_at: (event == "claim").then_some(s.time),
                    last_seen: s.time,
                    team: s.team.map(str::to_owned),
                    work_type: s.work_type.map(str::to_owned),
                    story_points: s.story_points,
                };
                self.make_room(s.time);
                self.items.insert(s.work_id.to_owned(), h);
            }
            (Some("complete" | "fail"), Some(_)) => {
                if let Some(h) = self.items.remove(s.work_id) {
                    verdict.cycle_time_ms = h
                        .claimed_at
                        .map(|at| s.time.saturating_sub(at).max(0) / 1_000_000);
                    verdict.fill_from(&h, s);
                }
            }
            (Some("release"), Some(h)) => {
                let by_holder = !other_holder(h);
                verdict.fill_from(h, s);
                if by_holder {
                    self.items.remove(s.work_id);
                }
            }
            (_, Some(h)) => verdict.fill_from(h, s),
            (_, None) => {}
        }
        verdict
    }

    /// Makes room for one more item: lapsed holdings first, then the least recently
    /// seen tenth of the book.
    fn make_room(&mut self, now: i64) {
        if self.items.len() < self.cap {
            return;
        }
        let lease = self.lease_ns;
        self.items
            .retain(|_, h| now.saturating_sub(h.last_seen) <= lease);
        if self.items.len() < self.cap {
            return;
        }
        let mut seen: Vec<i64> = self.items.values().map(|h| h.last_seen).collect();
        let drop = (self.cap / 10).max(1).min(seen.len());
        let (_, cutoff, _) = seen.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        let before = self.items.len();
        self.items.retain(|_, h| h.last_seen > cutoff);
        self.forgotten += (before - self.items.len()) as u64;
    }
}

fn fill(h: &mut Holding, s: &Sighting<'_>) {
    if let Some(team) = s.team {
        h.team.get_or_insert_with(|| team.to_owned());
    }
    if let Some(t) = s.work_type {
        h.work_type.get_or_insert_with(|| t.to_owned());
    }
    if s.story_points.is_some() && h.story_points.is_none() {
        h.story_points = s.story_points;
    }
}

impl Verdict {
    fn fill_from(&mut self, h: &Holding, s: &Sighting<'_>) {
        if s.team.is_none() {
            self.team.clone_from(&h.team);
        }
        if s.work_type.is_none() {
            self.work_type.clone_from(&h.work_type);
        }
        if s.story_points.is_none() {
            self.story_points = h.story_points;
        }
    }
}

/// The processor deriving `coordination_events` from spans.
pub struct CoordinationEvents {
    book: Mutex<ClaimBook>,
    clock: LiveClock,
}

const NAME: &str = "coordination";

impl CoordinationEvents {
    /// On the wall clock, with the default future tolerance.
    pub fn new(config: &CoordinationConfig) -> CoordinationEvents {
        CoordinationEvents::with_clock(config, LiveClock::wall(DEFAULT_FUTURE_TOLERANCE_SECONDS))
    }

    /// Events dated beyond `clock`'s tolerance are stored without a verdict and leave
    /// the book as it is: a claim from a clock a day ahead must not hold its item for a
    /// day.
    pub fn with_clock(config: &CoordinationConfig, clock: LiveClock) -> CoordinationEvents {
        CoordinationEvents {
            book: Mutex::new(ClaimBook::new(config)),
            clock,
        }
    }

    /// Replays stored `coordination_events` rows (in time order) into the book, as on
    /// start: claims held before a restart are still held after it.
    pub fn restore(&self, rows: &RecordBatch) -> Result<()> {
        let mut events = Vec::with_capacity(rows.num_rows());
        restore::read_events(rows, |work_id, e| events.push((work_id.to_owned(), e)))?;
        self.replay(&events);
        Ok(())
    }

    fn replay(&self, events: &[(String, restore::StoredEvent)]) {
        let latest = self.clock.latest_accepted();
        let mut book = self.book();
        for (work_id, e) in events.iter().filter(|(_, e)| e.time <= latest) {
            book.apply(&e.sighting(work_id));
        }
    }

    /// Work items held now.
    pub fn held(&self) -> usize {
        self.book().len()
    }

    /// The agents holding work now (wall clock), with each item's team.
    pub fn holders(&self) -> Vec<(String, Option<String>)> {
        let now = self.clock.now();
        self.book().holders(now)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, ClaimBook> {
        // A panic while holding the lock leaves a book that is still consistent
        // (every update is a single map operation), so keep using it.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rows(&self, spans: &RecordBatch) -> Result<Option<RecordBatch>> {
        let attributes = MapColumn::of(spans, "attributes")?;
        let events = spans
            .column_by_name("events")
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| Error::Schema("no list column events".into()))?;
        let event_rows = events
            .values()
            .as_struct_opt()
            .ok_or_else(|| Error::Schema("events must be a list of structs".into()))?;
        let event_attributes = MapColumn::new(
            event_rows
                .column_by_name("attributes")
                .ok_or_else(|| Error::Schema("no events.attributes".into()))?
                .as_ref(),
        )?;
        let in_spans = attributes.mentions(&[WORK_ID]);
        let in_events = event_attributes.mentions(&[WORK_ID]);
        if !in_spans && !in_events {
            return Ok(None);
        }
        // The common case of spans that name items and never say what happened to
        // them is ruled out by one search of each batch's keys.
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let event_named = [&attributes, &event_attributes, &resource]
            .iter()
            .any(|m| m.mentions(&[WORK_EVENT]));
        if !event_named {
            return Ok(None);
        }
        let found = sightings(
            spans,
            &attributes,
            &resource,
            events,
            &event_attributes,
            in_spans,
            in_events,
        )?;
        if found.is_empty() {
            return Ok(None);
        }
        // Claims are decided in the order they happened, whatever order a client
        // batched them in (ties in the order found). The order is sorted, not the
        // events, which are large to move.
        let mut order: Vec<(i64, usize)> = found
            .iter()
            .enumerate()
            .map(|(i, f)| (f.sighting.time, i))
            .collect();
        order.sort_unstable();
        let latest = self.clock.latest_accepted();
        let mut future = 0;
        // The rows keep the order found, span by span as the client sent them: a
        // trace's events stay together, where time order would scatter them, so the
        // ids they share compress.
        let mut verdicts = vec![Verdict::default(); found.len()];
        {
            let mut book = self.book();
            for &(time, i) in &order {
                if time > latest {
                    future += 1;
                } else {
                    verdicts[i] = book.apply(&found[i].sighting);
                }
            }
        }
        self.clock.skip(NAME, Skip::Future, future);
        let found: Vec<&Found<'_>> = found.iter().collect();
        build(spans, &found, &verdicts).map(Some)
    }
}

/// Every coordination event of `spans`: the spans that name a work item (`in_spans`)
/// and their span events that do (`in_events`), each with its time and agent; those
/// that name no event are left out.
fn sightings<'a>(
    spans: &'a RecordBatch,
    attributes: &MapColumn<'a>,
    resource: &MapColumn<'a>,
    events: &'a arrow::array::ListArray,
    event_attributes: &MapColumn<'a>,
    in_spans: bool,
    in_events: bool,
) -> Result<Vec<Found<'a>>> {
    let event_rows = events
        .values()
        .as_struct_opt()
        .ok_or_else(|| Error::Schema("events must be a list of structs".into()))?;
    let start = timestamps(spans, "start_time")?;
    let end = timestamps(spans, "end_time")?;
    let agent_ids = strings(spans, "agent_id")?;
    let event_time = event_rows
        .column_by_name("time")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>())
        .ok_or_else(|| Error::Schema("no events.time".into()))?;

    let mut found: Vec<Found<'_>> = Vec::with_capacity(spans.num_rows());
    let offsets = events.value_offsets();
    for row in 0..spans.num_rows() {
        let span_time = match end.value(row) {
            0 => start.value(row),
            t => t,
        };
        let event_rows = offsets[row] as usize..offsets[row + 1] as usize;
        let has_events = in_events && !event_rows.is_empty();
        if !in_spans && !has_events {
            continue;
        }
        // Each row's coordination attributes are read in one pass, the resource's
        // only when a value is missing.
        let span_keys = Keys::of(attributes, row);
        let mut resource_keys: Option<Keys<'_>> = None;
        if let Some(work_id) = span_keys.get(Attr::WorkId) {
            let res = resource_keys.get_or_insert_with(|| Keys::of(resource, row));
            found.extend(Found::read(
                row,
                span_time,
                work_id,
                |f| span_keys.get(f).or_else(|| res.get(f)),
                string_at(agent_ids, row),
            ));
        }
        if !has_events {
            continue;
        }
        for e in event_rows {
            let event_keys = Keys::of(event_attributes, e);
            let Some(work_id) = event_keys.get(Attr::WorkId) else {
                continue;
            };
            let res = resource_keys.get_or_insert_with(|| Keys::of(resource, row));
            let agent = crate::convert::agent_id(|k| event_attributes.get(e, k))
                .or_else(|| string_at(agent_ids, row));
            found.extend(Found::read(
                row,
                event_time.value(e),
                work_id,
                |f| {
                    event_keys
                        .get(f)
                        .or_else(|| span_keys.get(f))
                        .or_else(|| res.get(f))
                },
                agent,
            ));
        }
    }
    Ok(found)
}

fn float_at(array: &Float64Array, row: usize) -> Option<f64> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// An event found in a span batch, with the span row it belongs to.
struct Found<'a> {
    row: usize,
    sighting: Sighting<'a>,
    priority: Option<&'a str>,
    progress_pct: Option<f64>,
}

impl<'a> Found<'a> {
    /// The event of a span or span event naming `work_id`, if it names one.
    fn read(
        row: usize,
        time: i64,
        work_id: &'a str,
        lookup: impl Fn(Attr) -> Option<&'a str>,
        agent: Option<&'a str>,
    ) -> Option<Found<'a>> {
        let event = lookup(Attr::Event)?;
        Some(Found {
            row,
            sighting: Sighting {
                time,
                work_id,
                event: Some(event),
                agent,
                team: lookup(Attr::Team),
                work_type: lookup(Attr::WorkType),
                story_points: lookup(Attr::StoryPoints).and_then(number),
            },
            priority: lookup(Attr::Priority),
            progress_pct: lookup(Attr::ProgressPct).and_then(number),
        })
    }
}

/// The coordination attributes, in the order of [`Keys`].
#[derive(Clone, Copy)]
enum Attr {
    WorkId,
    Event,
    Team,
    WorkType,
    StoryPoints,
    Priority,
    ProgressPct,
}

const FIELD_KEYS: [&str; 7] = [
    WORK_ID,
    WORK_EVENT,
    TEAM,
    WORK_TYPE,
    STORY_POINTS,
    PRIORITY,
    PROGRESS_PCT,
];

/// One row's coordination attributes, read in one pass over its entries.
#[derive(Default)]
struct Keys<'a>([Option<&'a str>; 7]);

impl<'a> Keys<'a> {
    fn of(map: &MapColumn<'a>, row: usize) -> Keys<'a> {
        let mut keys = Keys::default();
        // One byte rules out most keys before any comparison, and their values are
        // not read.
        let wanted =
            |k: &str| k.as_bytes().first() == Some(&b'c') && k.starts_with("coordination.");
        map.scan_where(row, wanted, |k, v| {
            if let Some(i) = FIELD_KEYS.iter().position(|f| *f == k) {
                keys.0[i].get_or_insert(v);
            }
        });
        keys
    }

    fn get(&self, field: Attr) -> Option<&'a str> {
        self.0[field as usize]
    }
}

fn build(spans: &RecordBatch, found: &[&Found<'_>], verdicts: &[Verdict]) -> Result<RecordBatch> {
    let n = found.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    // Each text column sized to what it will hold: the rows stay buffered until a
    // flush, and a column that is mostly null (an event name, a priority) costs the
    // store's memory budget nothing for bytes it never uses.
    let text = |value: &dyn Fn(&Found<'_>, &Verdict) -> Option<usize>| {
        let bytes = found
            .iter()
            .zip(verdicts)
            .filter_map(|(f, v)| value(f, v))
            .sum();
        StringBuilder::with_capacity(n, bytes)
    };
    let mut work = text(&|f, _| Some(f.sighting.work_id.len()));
    let mut event = text(&|f, _| f.sighting.event.map(str::len));
    let mut agent = text(&|f, _| f.sighting.agent.map(str::len));
    let mut team = text(&|f, v| f.sighting.team.or(v.team.as_deref()).map(str::len));
    let mut work_type = text(&|f, v| {
        f.sighting
            .work_type
            .or(v.work_type.as_deref())
            .map(str::len)
    });
    let mut priority = text(&|f, _| f.priority.map(str::len));
    let mut held_by = text(&|_, v| v.held_by.as_deref().map(str::len));
    let mut points = Float64Builder::with_capacity(n);
    let mut progress = Float64Builder::with_capacity(n);
    let mut conflict = BooleanBuilder::with_capacity(n);
    let mut cycle = Int64Builder::with_capacity(n);
    for (f, v) in found.iter().zip(verdicts) {
        let s = &f.sighting;
        time.append_value(s.time);
        work.append_value(s.work_id);
        event.append_option(s.event);
        agent.append_option(s.agent);
        team.append_option(s.team.or(v.team.as_deref()));
        work_type.append_option(s.work_type.or(v.work_type.as_deref()));
        priority.append_option(f.priority);
        points.append_option(s.story_points.or(v.story_points));
        progress.append_option(f.progress_pct);
        conflict.append_value(v.conflict);
        held_by.append_option(v.held_by.as_deref());
        cycle.append_option(v.cycle_time_ms);
    }
    // The span's own columns, gathered in one pass each.
    let rows = UInt32Array::from_iter_values(found.iter().map(|f| f.row as u32));
    let of_span = |name: &str| -> Result<ArrayRef> {
        let column = spans
            .column_by_name(name)
            .ok_or_else(|| Error::Schema(format!("no column {name}")))?;
        Ok(arrow::compute::take(column, &rows, None)?)
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(work.finish()),
        Arc::new(event.finish()),
        Arc::new(agent.finish()),
        Arc::new(team.finish()),
        Arc::new(work_type.finish()),
        Arc::new(priority.finish()),
        Arc::new(points.finish()),
        Arc::new(progress.finish()),
        Arc::new(conflict.finish()),
        Arc::new(held_by.finish()),
        Arc::new(cycle.finish()),
        of_span("trace_id")?,
        of_span("span_id")?,
        of_span("name")?,
        of_span("service_name")?,
    ];
    Ok(RecordBatch::try_new(COORDINATION_EVENTS.schema(), columns)?)
}

impl Processor for CoordinationEvents {
    fn name(&self) -> &'static str {
        NAME
    }

    fn derive(&self, input: &TableBatch) -> Result<Vec<TableBatch>> {
        if input.table != Table::SPANS {
            return Ok(Vec::new());
        }
        Ok(self
            .rows(&input.batch)?
            .map(|rows| vec![TableBatch::new(COORDINATION_EVENTS, rows)])
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
