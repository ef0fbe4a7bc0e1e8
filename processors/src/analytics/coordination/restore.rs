//! Rebuilding the claim book on start from the stored `coordination_events`, in memory
//! bounded by the number of items rather than by the length of the history.
//!
//! Only `claim`, `progress`, `release`, `complete` and `fail` change a holding. An
//! item's holding depends only on those events since its last *reset*: a `complete` or
//! `fail` (after which nobody holds it) or a gap longer than the lease between two of
//! them (at the later one, the holding has lapsed). So the history is read twice, in
//! windows of the lease (at least a minute, at most an hour):
//! 1. newest first, time and event only: the items seen within a lease of the newest
//!    event may be held now, and for each, where its events since its last reset begin.
//!    Older windows are read only while some item has not reached its reset, and only
//!    those items' events once at most a thousand are left. A few words per item.
//! 2. oldest first, from the earliest of those beginnings: the items' events replayed
//!    into the book in time order, one window at a time.
//!
//! An item claimed and completed a hundred times costs its last window or two; an item
//! renewed all week costs a week of windows, none of them held at once.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch};

use super::{float_at, CoordinationConfig, CoordinationEvents, Sighting};
use crate::analytics::sql_literal;
use crate::columns::{primitives, string_at, strings, timestamps};
use crate::Result;

/// Windows are at least a minute long (a tiny lease must not mean a query per
/// millisecond) and at most an hour (one window's rows are held at once).
const MIN_WINDOW_NS: i64 = 60 * 1_000_000_000;
const MAX_WINDOW_NS: i64 = 3_600 * 1_000_000_000;
/// Up to this many items, a window reads only their rows.
const MAX_NAMED_ITEMS: usize = 1_000;
/// The events that change a holding; the others (none, or a name the book does not
/// know) leave it as it is.
const HOLDING_EVENTS: &str = "('claim', 'progress', 'release', 'complete', 'fail')";

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
}

/// After it nobody holds the item, whatever came before.
fn ends(event: Option<&str>) -> bool {
    matches!(event, Some("complete" | "fail"))
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

/// An item that may be held now: where its events since its last reset begin, as far
/// as read.
#[derive(Debug)]
struct Chain {
    start: i64,
    /// Its reset is not found yet: older events may still matter.
    open: bool,
}

impl Chain {
    /// Goes back through `older` (newest first, all before `start`) until a reset.
    fn extend(&mut self, older: impl Iterator<Item = (i64, bool)>, lease_ns: i64) {
        for (time, ends) in older {
            if self.start.saturating_sub(time) > lease_ns {
                self.open = false;
                return;
            }
            self.start = time;
            if ends {
                // Replayed from the reset on: it clears whatever came before.
                self.open = false;
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The oldest and newest stored event times.
    Bounds,
    /// Pass 1: the events from `from` on, before `to` (the first window: to the present).
    Back {
        from: i64,
        to: Option<i64>,
    },
    /// Pass 2: the events from `from` on, before `to` (the last window: to the present).
    Forward {
        from: i64,
        to: Option<i64>,
    },
    Done,
}

/// The stored history the claim book needs, read a window at a time: ask
/// [`Lookback::next_sql`], answer with [`Lookback::read`] until it asks nothing more.
#[derive(Debug)]
pub struct Lookback {
    lease_ns: i64,
    window_ns: i64,
    present: String,
    step: Step,
    oldest: i64,
    newest: i64,
    /// The newest event's time less one lease: items seen since may be held now.
    relevant_from: i64,
    items: HashMap<String, Chain>,
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
            present: format!(
                "time <= now() + INTERVAL '{tolerance_seconds} seconds' \
                 AND event IN {HOLDING_EVENTS}"
            ),
            step: Step::Bounds,
            oldest: 0,
            newest: 0,
            relevant_from: 0,
            items: HashMap::new(),
            windows: 0,
        }
    }

    /// The next query to answer, or `None` when the book is rebuilt.
    pub fn next_sql(&self) -> Option<String> {
        let present = &self.present;
        let (columns, from, to, named) = match self.step {
            Step::Bounds => {
                return Some(format!(
                    "SELECT min(time) AS oldest, max(time) AS newest \
                     FROM coordination_events WHERE {present}"
                ))
            }
            // Below the window of the items that may be held, only the open ones matter.
            Step::Back { from, to } => (
                "time, work_id, event",
                from,
                to,
                (from < self.relevant_from).then(|| self.names(|c| c.open)),
            ),
            Step::Forward { from, to } => (
                "time, work_id, event, agent_id, team, work_type, story_points",
                from,
                to,
                Some(self.names(|_| true)),
            ),
            Step::Done => return None,
        };
        let mut sql = format!(
            "SELECT {columns} FROM coordination_events WHERE {present} \
             AND time >= to_timestamp_nanos({from})"
        );
        if let Some(to) = to {
            sql.push_str(&format!(" AND time < to_timestamp_nanos({to})"));
        }
        if let Some(Some(names)) = named {
            sql.push_str(&format!(" AND work_id IN ({names})"));
        }
        Some(sql)
    }

    /// The items `which` picks as SQL literals, if they are few enough to name.
    fn names(&self, which: impl Fn(&Chain) -> bool) -> Option<String> {
        let mut picked = self.items.iter().filter(|(_, c)| which(c));
        let few: Vec<String> = picked
            .by_ref()
            .take(MAX_NAMED_ITEMS + 1)
            .map(|(w, _)| sql_literal(w))
            .collect();
        (few.len() <= MAX_NAMED_ITEMS).then(|| few.join(", "))
    }

    /// Takes the answer to the last [`Lookback::next_sql`] (times in nanoseconds); the
    /// second pass replays into `book`.
    pub fn read(&mut self, batches: &[RecordBatch], book: &CoordinationEvents) -> Result<()> {
        self.step = match self.step {
            Step::Bounds => {
                let bound = |name| -> Result<Option<i64>> {
                    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
                        return Ok(None);
                    };
                    let times = timestamps(b, name)?;
                    Ok((!times.is_null(0)).then(|| times.value(0)))
                };
                match (bound("oldest")?, bound("newest")?) {
                    (Some(oldest), Some(newest)) => {
                        self.oldest = oldest;
                        self.newest = newest;
                        self.relevant_from = newest.saturating_sub(self.lease_ns);
                        Step::Back {
                            from: newest.saturating_sub(self.window_ns.min(self.lease_ns)),
                            to: None,
                        }
                    }
                    _ => Step::Done,
                }
            }
            Step::Back { from, .. } => {
                self.windows += 1;
                self.read_back(batches, from)?;
                let open = self.items.values().any(|c| c.open);
                if from > self.oldest && (from > self.relevant_from || open) {
                    Step::Back {
                        from: from.saturating_sub(self.window_ns),
                        to: Some(from),
                    }
                } else {
                    match self.items.values().map(|c| c.start).min() {
                        Some(start) => self.forward_from(start),
                        None => Step::Done,
                    }
                }
            }
            Step::Forward { to, .. } => {
                self.windows += 1;
                self.replay(batches, book)?;
                match to {
                    Some(to) => self.forward_from(to),
                    None => Step::Done,
                }
            }
            Step::Done => Step::Done,
        };
        Ok(())
    }

    fn forward_from(&self, from: i64) -> Step {
        let to = from.saturating_add(self.window_ns);
        Step::Forward {
            from,
            to: (to <= self.newest).then_some(to),
        }
    }

    /// Pass 1: each item's events in the window `from`.., newest first.
    fn read_back(&mut self, batches: &[RecordBatch], from: i64) -> Result<()> {
        let mut found: HashMap<&str, Vec<(i64, bool)>> = HashMap::new();
        for b in batches {
            let time = timestamps(b, "time")?;
            let work = strings(b, "work_id")?;
            let event = strings(b, "event")?;
            for row in (0..b.num_rows()).filter(|&r| !time.is_null(r) && !work.is_null(r)) {
                found
                    .entry(work.value(row))
                    .or_default()
                    .push((time.value(row), ends(string_at(event, row))));
            }
        }
        for (work_id, mut events) in found {
            // Newest first; at one time, a reset first, so that the replay starts
            // before everything of that time.
            events.sort_by_key(|&(time, ends)| (std::cmp::Reverse(time), std::cmp::Reverse(ends)));
            match self.items.get_mut(work_id) {
                Some(chain) if chain.open => chain.extend(events.into_iter(), self.lease_ns),
                Some(_) => {}
                // First seen (newest first): it may be held now only if seen within
                // one lease of the newest event.
                None => {
                    let (newest, newest_ends) = events[0];
                    if newest >= self.relevant_from {
                        let mut chain = Chain {
                            start: newest,
                            open: !newest_ends,
                        };
                        if chain.open {
                            chain.extend(events.into_iter().skip(1), self.lease_ns);
                        }
                        self.items.insert(work_id.to_owned(), chain);
                    }
                }
            }
        }
        // An open item with no event in the lease before its first has a gap there.
        let lease = self.lease_ns;
        for chain in self.items.values_mut().filter(|c| c.open) {
            if chain.start.saturating_sub(from) >= lease {
                chain.open = false;
            }
        }
        Ok(())
    }

    /// Pass 2: the window's events of the items, from each one's start, in time order.
    fn replay(&self, batches: &[RecordBatch], book: &CoordinationEvents) -> Result<()> {
        let mut events: Vec<(String, StoredEvent)> = Vec::new();
        for b in batches {
            read_events(b, |work_id, e| {
                if self.items.get(work_id).is_some_and(|c| e.time >= c.start) {
                    events.push((work_id.to_owned(), e));
                }
            })?;
        }
        events.sort_by_key(|(_, e)| e.time);
        book.replay(&events);
        Ok(())
    }

    /// The windows read.
    pub fn windows(&self) -> usize {
        self.windows
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::schema::timestamp_type;

    const MINUTE_NS: i64 = 60_000_000_000;

    /// `(time, work id, event, agent)`.
    type Row = (i64, String, Option<&'static str>, &'static str);

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
                strings(&|r| r.2.map(str::to_owned)),
                strings(&|r| Some(r.3.to_owned())),
                strings(&|r| Some(format!("team-{}", r.1.len()))),
                strings(&|_| None),
                Arc::new(
                    rows.iter()
                        .map(|r| (r.2 == Some("claim")).then_some(r.0 as f64))
                        .collect::<Float64Array>(),
                ),
            ],
        )
        .unwrap()
    }

    /// What the store answers to `history`'s next query over `table`, as its SQL says;
    /// and whether that query named its items.
    fn answer(history: &Lookback, table: &[Row]) -> (Vec<RecordBatch>, bool) {
        let sql = history.next_sql().unwrap();
        let holding = |r: &&Row| {
            matches!(
                r.2,
                Some("claim" | "progress" | "release" | "complete" | "fail")
            )
        };
        let (from, to) = match history.step {
            Step::Bounds => {
                let times = |t: Option<i64>| {
                    Arc::new(TimestampNanosecondArray::from(vec![t]).with_timezone("UTC")) as _
                };
                let schema = Schema::new(vec![
                    Field::new("oldest", timestamp_type(), true),
                    Field::new("newest", timestamp_type(), true),
                ]);
                let oldest = table.iter().filter(holding).map(|r| r.0).min();
                let newest = table.iter().filter(holding).map(|r| r.0).max();
                let b = RecordBatch::try_new(Arc::new(schema), vec![times(oldest), times(newest)])
                    .unwrap();
                return (vec![b], false);
            }
            Step::Back { from, to } | Step::Forward { from, to } => (from, to),
            Step::Done => unreachable!(),
        };
        let named: Option<Vec<String>> = sql.split_once("work_id IN (").map(|(_, names)| {
            names
                .trim_end_matches(')')
                .split(", ")
                .map(|n| n.trim_matches('\'').to_owned())
                .collect()
        });
        let rows: Vec<&Row> = table
            .iter()
            .filter(holding)
            .filter(|r| r.0 >= from && to.is_none_or(|to| r.0 < to))
            .filter(|r| named.as_ref().is_none_or(|n| n.contains(&r.1)))
            .collect();
        // Two batches, as a scan of two files would answer.
        let (a, b) = rows.split_at(rows.len() / 2);
        (vec![batch(a), batch(b)], named.is_some())
    }

    /// The holdings that have not lapsed by `table`'s newest event (a lapsed holding is
    /// as good as none: the next event of its item drops it first).
    fn book_state(p: &CoordinationEvents, table: &[Row]) -> Vec<String> {
        let newest = table.iter().map(|r| r.0).max().unwrap_or_default();
        let book = p.book();
        let mut state: Vec<String> = book
            .items
            .iter()
            .filter(|(_, h)| newest - h.last_seen <= book.lease_ns)
            .map(|(w, h)| format!("{w} {h:?}"))
            .collect();
        state.sort();
        state
    }

    fn assert_same(restored: &CoordinationEvents, whole: &CoordinationEvents, table: &[Row]) {
        let (restored, whole) = (book_state(restored, table), book_state(whole, table));
        let missing: Vec<_> = whole
            .iter()
            .filter(|h| !restored.contains(h))
            .take(3)
            .collect();
        let extra: Vec<_> = restored
            .iter()
            .filter(|h| !whole.contains(h))
            .take(3)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} restored, {} whole; missing {missing:?}, extra {extra:?}",
            restored.len(),
            whole.len()
        );
    }

    /// Restores `table` through a [`Lookback`]: the book, the queries asked and how
    /// many of them named their items.
    fn restore(config: &CoordinationConfig, table: &[Row]) -> (CoordinationEvents, usize, usize) {
        let book = CoordinationEvents::new(config);
        let mut lookback = Lookback::new(config, 600);
        let (mut queries, mut named) = (0, 0);
        while lookback.next_sql().is_some() {
            let (batches, by_name) = answer(&lookback, table);
            lookback.read(&batches, &book).unwrap();
            queries += 1;
            named += usize::from(by_name);
        }
        (book, queries, named)
    }

    /// A history of `items` items over five hours: most are claimed, worked on and
    /// completed again and again; every seventh is renewed by progress throughout,
    /// and every eleventh is abandoned for longer than the lease now and then. Between
    /// them, events that change no holding: spans naming the item and no event, and
    /// heartbeats.
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
                rows.push((t, work.clone(), Some(event), agent));
                rows.push((t + MINUTE_NS / 2, work.clone(), None, agent));
                rows.push((t + MINUTE_NS / 3, work.clone(), Some("heartbeat"), agent));
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

    fn lease_10_minutes() -> CoordinationConfig {
        CoordinationConfig {
            lease_timeout_ms: 10 * 60_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_windows_rebuild_the_book_the_whole_history_builds() {
        let config = lease_10_minutes();
        let table = history(300);
        let mut sorted: Vec<&Row> = table.iter().collect();
        sorted.sort_by_key(|r| r.0);
        let whole = CoordinationEvents::new(&config);
        whole.restore(&batch(&sorted)).unwrap();

        let (restored, queries, named) = restore(&config, &table);
        // The items renewed all along need every window back to their claims, and
        // then forward again; the others stop at their last completion or lapse.
        assert_eq!(queries, 1 + 30 + 30);
        assert!(named > 25, "{named} of {queries} queries named their items");
        assert!(restored.held() > 40, "{} held", restored.held());
        assert_same(&restored, &whole, &table);
    }

    #[test]
    fn without_renewals_only_the_last_lease_or_two_is_read() {
        // Each item is claimed and completed in turn, five hours long.
        let table: Vec<Row> = history(300)
            .into_iter()
            .filter(|r| r.2.is_some_and(|e| e != "heartbeat"))
            .enumerate()
            .map(|(i, (t, w, _, a))| (t, w, Some(if i % 2 == 0 { "claim" } else { "complete" }), a))
            .collect();
        let mut sorted: Vec<&Row> = table.iter().collect();
        sorted.sort_by_key(|r| r.0);
        let whole = CoordinationEvents::new(&lease_10_minutes());
        whole.restore(&batch(&sorted)).unwrap();

        let (restored, queries, _) = restore(&lease_10_minutes(), &table);
        // The last lease names the items; one window more finds each one's last
        // completion, or that its claim follows one, or a lapse; two forward.
        assert_eq!(queries, 1 + 2 + 2);
        assert_same(&restored, &whole, &table);
    }

    #[test]
    fn an_empty_history_asks_once() {
        let (book, queries, _) = restore(&CoordinationConfig::default(), &[]);
        assert_eq!(queries, 1);
        assert_eq!(book.held(), 0);
        // Only events that change no holding: nothing to replay either.
        let table = vec![(MINUTE_NS, "W-1".to_owned(), None, "a")];
        let (book, queries, _) = restore(&CoordinationConfig::default(), &table);
        assert_eq!((queries, book.held()), (1, 0));
    }
}
