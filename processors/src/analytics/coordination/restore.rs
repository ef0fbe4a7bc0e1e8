//! Rebuilding the claim book on start from the stored `coordination_events`, in memory
//! bounded by what the book needs rather than by the length of the history.
//!
//! An item's holding depends only on its events since its last *reset*: a `complete`
//! or `fail` (after which nobody holds it) or a gap longer than the lease (at the event
//! after it, the holding has lapsed). So the history is read in windows, newest first:
//! the windows within one lease of the newest event name the items that may be held
//! now, and older windows are read only while some of those items have not reached a
//! reset, filtered to those items when they are few. An item claimed and completed a
//! hundred times costs its last window; an item renewed all week costs a week of
//! windows, one at a time.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch};

use super::{float_at, CoordinationConfig, Sighting};
use crate::analytics::sql_literal;
use crate::columns::{primitives, string_at, strings, timestamps};
use crate::Result;

/// Windows are at least a minute long (a tiny lease must not mean a query per
/// millisecond) and at most an hour (one window's rows are held at once).
const MIN_WINDOW_NS: i64 = 60 * 1_000_000_000;
const MAX_WINDOW_NS: i64 = 3_600 * 1_000_000_000;
/// Up to this many open items, an older window reads only their rows.
const MAX_NAMED_ITEMS: usize = 1_000;

/// One stored event of an item, as the book replays it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredEvent {
    pub(super) time: i64,
    event: Option<String>,
    agent: Option<String>,
    team: Option<String>,
    work_type: Option<String>,
    story_points: Option<f64>,
}

impl StoredEvent {
    pub(super) fn sighting<'a>(&'a self, work_id: &'a str) -> Sighting<'a> {
        Sighting {
            time: self.time,
            work_id,
            event: self.event.as_deref(),
            agent: self.agent.as_deref(),
            team: self.team.as_deref(),
            work_type: self.work_type.as_deref(),
            story_points: self.story_points,
        }
    }

    /// After it nobody holds the item, whatever came before.
    fn ends(&self) -> bool {
        matches!(self.event.as_deref(), Some("complete" | "fail"))
    }
}

/// Each row of `rows` (`time`, `work_id`, `event`, `agent_id`, `team`, `work_type`,
/// `story_points`, times in nanoseconds), in the order given; rows without a time or
/// work id are skipped.
pub(super) fn read_events(
    rows: &RecordBatch,
    mut each: impl FnMut(&str, StoredEvent),
) -> Result<()> {
    let time = timestamps(rows, "time")?;
    let work = strings(rows, "work_id")?;
    let event = strings(rows, "event")?;
    let agent = strings(rows, "agent_id")?;
    let team = strings(rows, "team")?;
    let work_type = strings(rows, "work_type")?;
    let points = primitives::<arrow::datatypes::Float64Type>(rows, "story_points")?;
    let owned = |column, row| string_at(column, row).map(str::to_owned);
    for row in 0..rows.num_rows() {
        if time.is_null(row) || work.is_null(row) {
            continue;
        }
        each(
            work.value(row),
            StoredEvent {
                time: time.value(row),
                event: owned(event, row),
                agent: owned(agent, row),
                team: owned(team, row),
                work_type: owned(work_type, row),
                story_points: float_at(points, row),
            },
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Item {
    /// Its events since the last reset found, in time order.
    events: Vec<StoredEvent>,
    /// Older events may still matter.
    open: bool,
}

impl Item {
    /// Drops what precedes the newest reset among `events`; true if there was one.
    fn trim(&mut self, lease_ns: i64) -> bool {
        let events = &self.events;
        let reset = (0..events.len()).rev().find(|&i| {
            events[i].ends()
                || events
                    .get(i + 1)
                    .is_some_and(|next| next.time.saturating_sub(events[i].time) > lease_ns)
        });
        if let Some(i) = reset {
            self.events.drain(..=i);
            self.open = false;
        }
        reset.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The oldest and newest stored event times.
    Bounds,
    /// The events from `from` (inclusive) to `to` (exclusive; the first window has no
    /// end but the present).
    Window {
        from: i64,
        to: Option<i64>,
    },
    Done,
}

/// The stored history the claim book needs, read a window at a time: ask
/// [`Lookback::next_sql`], answer with [`Lookback::read`] until it asks nothing more,
/// then replay [`Lookback::into_events`].
#[derive(Debug)]
pub struct Lookback {
    lease_ns: i64,
    window_ns: i64,
    present: String,
    step: Step,
    oldest: i64,
    /// The newest event's time less one lease: items seen since may be held now.
    relevant_from: i64,
    items: HashMap<String, Item>,
    windows: usize,
}

impl Lookback {
    /// Events dated beyond `tolerance_seconds` ahead of the wall clock are left out,
    /// as the live book leaves them out.
    pub fn new(config: &CoordinationConfig, tolerance_seconds: u64) -> Lookback {
        let lease_ns = i64::try_from(config.lease_timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        Lookback {
            lease_ns,
            window_ns: lease_ns.clamp(MIN_WINDOW_NS, MAX_WINDOW_NS),
            present: format!("time <= now() + INTERVAL '{tolerance_seconds} seconds'"),
            step: Step::Bounds,
            oldest: 0,
            relevant_from: 0,
            items: HashMap::new(),
            windows: 0,
        }
    }

    /// The next query to answer, or `None` when the history needed is read.
    pub fn next_sql(&self) -> Option<String> {
        let present = &self.present;
        match self.step {
            Step::Bounds => Some(format!(
                "SELECT min(time) AS oldest, max(time) AS newest \
                 FROM coordination_events WHERE {present}"
            )),
            Step::Window { from, to } => {
                let mut sql = format!(
                    "SELECT time, work_id, event, agent_id, team, work_type, story_points \
                     FROM coordination_events WHERE {present} \
                     AND time >= to_timestamp_nanos({from})"
                );
                if let Some(to) = to {
                    sql.push_str(&format!(" AND time < to_timestamp_nanos({to})"));
                }
                if from < self.relevant_from {
                    // Below the relevant windows only the open items' events matter.
                    let open: Vec<&str> = self.open().collect();
                    if open.len() <= MAX_NAMED_ITEMS {
                        let names: Vec<String> = open.into_iter().map(sql_literal).collect();
                        sql.push_str(&format!(" AND work_id IN ({})", names.join(", ")));
                    }
                }
                Some(sql)
            }
            Step::Done => None,
        }
    }

    /// Takes the answer to the last [`Lookback::next_sql`] (times in nanoseconds).
    pub fn read(&mut self, batches: &[RecordBatch]) -> Result<()> {
        match self.step {
            Step::Bounds => {
                let bound = |name| -> Result<Option<i64>> {
                    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
                        return Ok(None);
                    };
                    let times = timestamps(b, name)?;
                    Ok((!times.is_null(0)).then(|| times.value(0)))
                };
                self.step = match (bound("oldest")?, bound("newest")?) {
                    (Some(oldest), Some(newest)) => {
                        self.oldest = oldest;
                        self.relevant_from = newest.saturating_sub(self.lease_ns);
                        Step::Window {
                            from: newest.saturating_sub(self.window_ns.min(self.lease_ns)),
                            to: None,
                        }
                    }
                    _ => Step::Done,
                };
            }
            Step::Window { from, .. } => {
                self.windows += 1;
                self.read_window(batches, from)?;
                let more = from > self.oldest
                    && (from > self.relevant_from || self.open().next().is_some());
                self.step = if more {
                    Step::Window {
                        from: from.saturating_sub(self.window_ns),
                        to: Some(from),
                    }
                } else {
                    Step::Done
                };
            }
            Step::Done => {}
        }
        Ok(())
    }

    fn read_window(&mut self, batches: &[RecordBatch], from: i64) -> Result<()> {
        let mut found: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for b in batches {
            read_events(b, |work_id, event| match found.get_mut(work_id) {
                Some(events) => events.push(event),
                None => {
                    found.insert(work_id.to_owned(), vec![event]);
                }
            })?;
        }
        for (work_id, mut events) in found {
            events.sort_by_key(|e| e.time);
            match self.items.get_mut(&work_id) {
                Some(item) if item.open => {
                    events.append(&mut item.events);
                    item.events = events;
                    item.trim(self.lease_ns);
                }
                Some(_) => {}
                // First seen (newest first): it may be held now only if seen within
                // one lease of the newest event.
                None => {
                    if events.last().is_some_and(|e| e.time >= self.relevant_from) {
                        let mut item = Item { events, open: true };
                        item.trim(self.lease_ns);
                        self.items.insert(work_id, item);
                    }
                }
            }
        }
        // An open item with no event in the lease before its first has a gap there.
        let lease = self.lease_ns;
        for item in self.items.values_mut().filter(|i| i.open) {
            if item
                .events
                .first()
                .is_none_or(|e| e.time.saturating_sub(from) >= lease)
            {
                item.open = false;
            }
        }
        Ok(())
    }

    fn open(&self) -> impl Iterator<Item = &str> {
        self.items
            .iter()
            .filter(|(_, i)| i.open)
            .map(|(w, _)| w.as_str())
    }

    /// The windows read.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The events to replay, each with its work id, in time order.
    pub(super) fn into_events(self) -> Vec<(String, StoredEvent)> {
        let mut all: Vec<(String, StoredEvent)> = self
            .items
            .into_iter()
            .flat_map(|(w, item)| item.events.into_iter().map(move |e| (w.clone(), e)))
            .collect();
        all.sort_by_key(|(_, e)| e.time);
        all
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::analytics::coordination::CoordinationEvents;
    use crate::schema::timestamp_type;

    const MINUTE_NS: i64 = 60_000_000_000;

    /// `(time, work id, event, agent)`.
    type Row = (i64, String, &'static str, &'static str);

    fn batch(rows: &[&Row]) -> RecordBatch {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let schema = Schema::new(vec![
            Field::new("time", timestamp_type(), true),
            text("work_id"),
            text("event"),
            text("agent_id"),
            text("team"),
            text("work_type"),
            Field::new("story_points", DataType::Float64, true),
        ]);
        let strings = |f: &dyn Fn(&Row) -> Option<String>| {
            Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>()) as _
        };
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                strings(&|r| Some(r.1.clone())),
                strings(&|r| Some(r.2.to_owned())),
                strings(&|r| Some(r.3.to_owned())),
                strings(&|r| Some(format!("team-{}", r.1.len()))),
                strings(&|_| None),
                Arc::new(
                    rows.iter()
                        .map(|r| (r.2 == "claim").then_some(r.0 as f64))
                        .collect::<Float64Array>(),
                ),
            ],
        )
        .unwrap()
    }

    /// What the store answers to `history`'s next query over `table`, as the SQL
    /// says; and whether that query named the items.
    fn answer(history: &Lookback, table: &[Row]) -> (Vec<RecordBatch>, bool) {
        let sql = history.next_sql().unwrap();
        match history.step {
            Step::Bounds => {
                let times = |t: Option<i64>| {
                    Arc::new(TimestampNanosecondArray::from(vec![t]).with_timezone("UTC")) as _
                };
                let schema = Schema::new(vec![
                    Field::new("oldest", timestamp_type(), true),
                    Field::new("newest", timestamp_type(), true),
                ]);
                let oldest = table.iter().map(|r| r.0).min();
                let newest = table.iter().map(|r| r.0).max();
                let b = RecordBatch::try_new(Arc::new(schema), vec![times(oldest), times(newest)])
                    .unwrap();
                (vec![b], false)
            }
            Step::Window { from, to } => {
                let named = sql.contains("work_id IN");
                let open: Vec<&str> = history.open().collect();
                let rows: Vec<&Row> = table
                    .iter()
                    .filter(|r| r.0 >= from && to.is_none_or(|to| r.0 < to))
                    .filter(|r| !named || open.contains(&r.1.as_str()))
                    .collect();
                // Two batches, as a scan of two files would answer.
                let (a, b) = rows.split_at(rows.len() / 2);
                (vec![batch(a), batch(b)], named)
            }
            Step::Done => unreachable!(),
        }
    }

    fn book_state(p: &CoordinationEvents) -> Vec<String> {
        let book = p.book();
        let mut state: Vec<String> = book
            .items
            .iter()
            .map(|(w, h)| format!("{w} {h:?}"))
            .collect();
        state.sort();
        state
    }

    /// A history of `items` items over five hours: most are claimed, worked on and
    /// completed again and again; every seventh is renewed by progress throughout,
    /// and every eleventh is abandoned for longer than the lease now and then.
    fn history(items: usize) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        for i in 0..items {
            let work = format!("W-{i}");
            let mut t = next() % (10 * MINUTE_NS);
            let agents = ["a", "b", "c"];
            while t < 300 * MINUTE_NS {
                let agent = agents[(next() % 3) as usize];
                let event = if i % 7 == 0 {
                    if t < MINUTE_NS * 20 {
                        "claim"
                    } else {
                        "progress"
                    }
                } else {
                    ["claim", "claim", "progress", "complete", "fail", "release"]
                        [(next() % 6) as usize]
                };
                rows.push((t, work.clone(), event, agent));
                let gap = if i % 11 == 0 && next() % 5 == 0 {
                    15
                } else {
                    1 + next() % 8
                };
                t += gap * MINUTE_NS;
            }
        }
        rows
    }

    #[test]
    fn the_windows_rebuild_the_book_the_whole_history_builds() {
        let config = CoordinationConfig {
            lease_timeout_ms: 10 * 60_000,
            ..Default::default()
        };
        let table = history(300);
        let mut sorted: Vec<&Row> = table.iter().collect();
        sorted.sort_by_key(|r| r.0);
        let whole = CoordinationEvents::new(&config);
        whole.restore(&batch(&sorted)).unwrap();

        let mut lookback = Lookback::new(&config, 600);
        let (mut queries, mut named) = (0, 0);
        while lookback.next_sql().is_some() {
            let (batches, by_name) = answer(&lookback, &table);
            lookback.read(&batches).unwrap();
            queries += 1;
            named += usize::from(by_name);
        }
        // The items renewed all along need every window back to their claims; the
        // others stop at their last completion or lapse.
        assert_eq!(lookback.windows(), 30, "{queries} queries");
        assert!(named > 20, "{named} of {queries} queries named their items");
        let restored = CoordinationEvents::new(&config);
        restored.restore_from(lookback);
        assert!(restored.held() > 40, "{} held", restored.held());
        assert_eq!(book_state(&restored), book_state(&whole));
    }

    #[test]
    fn without_renewals_only_the_last_lease_is_read() {
        let config = CoordinationConfig {
            lease_timeout_ms: 10 * 60_000,
            ..Default::default()
        };
        // Each item is claimed and completed in turn, five hours long.
        let table: Vec<Row> = history(300)
            .into_iter()
            .enumerate()
            .map(|(i, (t, w, _, a))| (t, w, if i % 2 == 0 { "claim" } else { "complete" }, a))
            .collect();
        let mut lookback = Lookback::new(&config, 600);
        while lookback.next_sql().is_some() {
            let (batches, _) = answer(&lookback, &table);
            lookback.read(&batches).unwrap();
        }
        // The last lease names the items; one window more finds each one's last
        // completion, or that its claim follows one, or a lapse.
        assert_eq!(lookback.windows(), 2);
    }

    #[test]
    fn an_empty_history_asks_once() {
        let mut lookback = Lookback::new(&CoordinationConfig::default(), 600);
        let (batches, _) = answer(&lookback, &[]);
        lookback.read(&batches).unwrap();
        assert_eq!(lookback.next_sql(), None);
        let p = CoordinationEvents::new(&CoordinationConfig::default());
        p.restore_from(lookback);
        assert_eq!(p.held(), 0);
    }
}
