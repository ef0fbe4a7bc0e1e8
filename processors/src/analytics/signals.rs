//! The signals health and anomaly detection read: per scope (overall, each service,
//! each team) and per evaluation interval, counts of calls, errors, Apdex-satisfied and
//! -tolerating calls, claims, conflicts, completions and failures, plus a latency
//! histogram; and when each agent was last seen in each scope.
//!
//! Fed off the acknowledgement path ([`Processor::observe`]) from `spans` and
//! `coordination_events`, bucketed by the records' own times, so what an evaluation
//! reads is what SQL over the same window of the stored history reads (see README's
//! recomputation). A ring of `window / interval + 3` buckets per scope bounds memory;
//! records older than the ring are not counted, and at most `max_scopes` services and
//! teams and `max_agents` agents are followed.
//!
//! A span's team is its `coordination.team` attribute, else its resource's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use arrow::array::RecordBatch;

use super::attributes::{booleans, primitives, string_at, strings, timestamps, MapColumn, Text};
use super::coordination::COORDINATION_EVENTS;
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use crate::Result;

const TEAM: &str = "coordination.team";

/// Upper bounds (ms) of the latency buckets: 1 ms × 1.25^k up to about 70 s, fine
/// enough that a p95 read from them moves by at most a quarter when latency does not.
pub static LATENCY_BOUNDS_MS: LazyLock<Vec<f64>> =
    LazyLock::new(|| (0..=50).map(|k| 1.25f64.powi(k)).collect());

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    Overall,
    Service,
    Team,
}

impl ScopeKind {
    pub fn name(self) -> &'static str {
        match self {
            ScopeKind::Overall => "overall",
            ScopeKind::Service => "service",
            ScopeKind::Team => "team",
        }
    }
}

/// What happened in a scope over some time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub calls: u64,
    pub errors: u64,
    /// Calls within the latency target (Apdex satisfied)...
    pub satisfied: u64,
    /// ...and within four times it (Apdex tolerating).
    pub tolerating: u64,
    pub claims: u64,
    pub conflicts: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.satisfied += o.satisfied;
        self.tolerating += o.tolerating;
        self.claims += o.claims;
        self.conflicts += o.conflicts;
        self.completed += o.completed;
        self.failed += o.failed;
    }
}

#[derive(Clone)]
struct Bucket {
    idx: i64,
    counts: Counts,
    latency: Vec<u32>,
}

struct Ring {
    buckets: Vec<Bucket>,
}

impl Ring {
    fn new(len: usize) -> Ring {
        Ring {
            buckets: vec![
                Bucket {
                    idx: i64::MIN,
                    counts: Counts::default(),
                    latency: Vec::new(),
                };
                len
            ],
        }
    }

    /// The bucket of interval `idx`, emptied if it held an older interval.
    fn at(&mut self, idx: i64) -> &mut Bucket {
        let len = self.buckets.len() as i64;
        let b = &mut self.buckets[idx.rem_euclid(len) as usize];
        if b.idx != idx {
            b.idx = idx;
            b.counts = Counts::default();
            b.latency.clear();
        }
        b
    }
}

/// Where an agent was last seen: overall, per service, per team.
#[derive(Default)]
struct AgentSeen {
    overall: i64,
    services: Vec<(String, i64)>,
    teams: Vec<(String, i64)>,
}

fn seen(list: &mut Vec<(String, i64)>, name: &str, time: i64) {
    match list.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = entry.1.max(time),
        None => list.push((name.to_owned(), time)),
    }
}

/// The settings [`Signals`] needs, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct SignalsConfig {
    pub interval_ns: i64,
    pub window_ns: i64,
    pub latency_target_ns: i64,
    pub liveness_horizon_ns: i64,
    pub max_scopes: usize,
    pub max_agents: usize,
}

/// One scope's figures at an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeSignals {
    pub kind: ScopeKind,
    pub name: String,
    /// Over the health window.
    pub window: Counts,
    /// Over the last interval.
    pub last: Counts,
    /// p95 latency of the last interval's calls, in ms (bucket upper bound).
    pub last_p95_ms: Option<f64>,
    /// Agents seen within the window, and within the liveness horizon.
    pub agents_live: u64,
    pub agents_known: u64,
}

pub struct Signals {
    config: SignalsConfig,
    ring_len: usize,
    state: Mutex<State>,
    /// Records left out: too old for the ring, or beyond the scope and agent caps.
    ignored: AtomicU64,
}

#[derive(Default)]
struct State {
    /// By [`ScopeKind`] (as an index), then name.
    scopes: [HashMap<String, Ring>; 3],
    agents: HashMap<String, AgentSeen>,
    /// The newest interval seen, which ages the ring.
    newest: i64,
}

type Fast = foldhash::fast::RandomState;

/// A service, team and interval.
type GroupKey<'a> = (Option<Text<'a>>, Option<Text<'a>>, i64);
/// Records of one service, team and interval: counts and latency buckets.
type Groups<'a> = std::collections::HashMap<GroupKey<'a>, (Counts, Vec<u32>), Fast>;
/// An agent, its service and its team.
type AgentKey<'a> = (Text<'a>, Option<Text<'a>>, Option<Text<'a>>);
/// When each agent was last seen, by agent, service and team.
type Agents<'a> = std::collections::HashMap<AgentKey<'a>, i64, Fast>;

/// One batch's records, grouped by (service, team, interval) and by agent before they
/// touch the shared state: a row costs a hash of borrowed strings, no allocation. The
/// rows of a trace share their group and agent, so each run of such rows is summed
/// apart first and hashed once.
#[derive(Default)]
struct Tally<'a> {
    groups: Groups<'a>,
    agents: Agents<'a>,
    group_run: Option<(GroupKey<'a>, (Counts, Vec<u32>))>,
    agent_run: Option<(AgentKey<'a>, i64)>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, interval_ns: i64, r: Record<'a>) {
        let idx = r.time.div_euclid(interval_ns);
        let (service, team) = (r.service.map(Text), r.team.map(Text));
        let key = (service, team, idx);
        let (counts, latency) = match &mut self.group_run {
            Some((k, run)) if *k == key => run,
            slot => {
                if let Some((k, run)) = slot.take() {
                    absorb(&mut self.groups, k, run);
                }
                &mut slot.insert((key, Default::default())).1
            }
        };
        counts.add(&r.counts);
        if let Some(ms) = r.latency_ms {
            let bounds = &*LATENCY_BOUNDS_MS;
            if latency.is_empty() {
                *latency = vec![0; bounds.len() + 1];
            }
            latency[bounds.partition_point(|b| *b < ms)] += 1;
        }
        if let Some(agent) = r.agent {
            let key = (Text(agent), service, team);
            match &mut self.agent_run {
                Some((k, seen_at)) if *k == key => *seen_at = (*seen_at).max(r.time),
                slot => {
                    if let Some((k, time)) = slot.replace((key, r.time)) {
                        agent_seen(&mut self.agents, k, time);
                    }
                }
            }
        }
    }

    /// The tally with its last runs added.
    fn finish(mut self) -> Self {
        if let Some((k, run)) = self.group_run.take() {
            absorb(&mut self.groups, k, run);
        }
        if let Some((k, time)) = self.agent_run.take() {
            agent_seen(&mut self.agents, k, time);
        }
        self
    }
}

/// Adds a run of records to its group.
fn absorb<'a>(groups: &mut Groups<'a>, key: GroupKey<'a>, (counts, latency): (Counts, Vec<u32>)) {
    let (c, l) = groups.entry(key).or_default();
    c.add(&counts);
    if l.is_empty() {
        *l = latency;
    } else {
        for (a, b) in l.iter_mut().zip(&latency) {
            *a += b;
        }
    }
}

/// Notes that `key` was seen at `time`.
fn agent_seen<'a>(agents: &mut Agents<'a>, key: AgentKey<'a>, time: i64) {
    let seen_at = agents.entry(key).or_insert(time);
    *seen_at = (*seen_at).max(time);
}

/// A record's contribution to its scopes.
struct Record<'a> {
    time: i64,
    service: Option<&'a str>,
    team: Option<&'a str>,
    agent: Option<&'a str>,
    counts: Counts,
    latency_ms: Option<f64>,
}

impl Signals {
    pub fn new(config: SignalsConfig) -> Signals {
        let ring_len = (config.window_ns / config.interval_ns.max(1)).max(1) as usize + 3;
        Signals {
            config,
            ring_len,
            state: Mutex::new(State {
                newest: i64::MIN,
                ..State::default()
            }),
            ignored: AtomicU64::new(0),
        }
    }

    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a batch's tally, group by group.
    fn merge(&self, tally: Tally<'_>) {
        let tally = tally.finish();
        let mut state = self.state();
        let state = &mut *state;
        let bounds = &*LATENCY_BOUNDS_MS;
        if let Some(newest) = tally.groups.keys().map(|k| k.2).max() {
            state.newest = state.newest.max(newest);
        }
        let oldest_kept = state.newest - self.ring_len as i64 + 1;
        for ((service, team, idx), (counts, latency)) in &tally.groups {
            if *idx <= oldest_kept {
                self.ignored
                    .fetch_add(counts.calls + counts.claims, Ordering::Relaxed);
                continue;
            }
            let scopes = [
                Some((ScopeKind::Overall, "")),
                service.map(|Text(s)| (ScopeKind::Service, s)),
                team.map(|Text(t)| (ScopeKind::Team, t)),
            ];
            for (kind, name) in scopes.into_iter().flatten() {
                let of_kind = &mut state.scopes[kind as usize];
                if !of_kind.contains_key(name) {
                    if of_kind.len() >= self.config.max_scopes {
                        self.ignored.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    of_kind.insert(name.to_owned(), Ring::new(self.ring_len));
                }
                let Some(ring) = of_kind.get_mut(name) else {
                    continue;
                };
                let bucket = ring.at(*idx);
                bucket.counts.add(counts);
                if !latency.is_empty() {
                    if bucket.latency.is_empty() {
                        bucket.latency = vec![0; bounds.len() + 1];
                    }
                    for (a, b) in bucket.latency.iter_mut().zip(latency) {
                        *a += b;
                    }
                }
            }
        }
        for ((Text(agent), service, team), time) in tally.agents {
            let (service, team) = (service.map(|Text(s)| s), team.map(|Text(t)| t));
            if !state.agents.contains_key(agent) && state.agents.len() >= self.config.max_agents {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let seen_at = state.agents.entry(agent.to_owned()).or_default();
            seen_at.overall = seen_at.overall.max(time);
            if let Some(s) = service {
                seen(&mut seen_at.services, s, time);
            }
            if let Some(t) = team {
                seen(&mut seen_at.teams, t, time);
            }
        }
    }

    /// Counts the spans of a batch.
    pub fn observe_spans(&self, spans: &RecordBatch) -> Result<()> {
        let start = timestamps(spans, "start_time")?;
        let service = strings(spans, "service_name")?;
        let status = strings(spans, "status_code")?;
        let agent = strings(spans, "agent_id")?;
        let duration = primitives::<arrow::datatypes::Int64Type>(spans, "duration_ns")?;
        let attributes = MapColumn::of(spans, "attributes")?;
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let teams = attributes.mentions(&[TEAM]) || resource.mentions(&[TEAM]);
        let target = self.config.latency_target_ns;
        let mut tally = Tally::default();
        for row in 0..spans.num_rows() {
            let d = duration.value(row);
            let counts = Counts {
                calls: 1,
                errors: u64::from(Text(status.value(row)) == Text("ERROR")),
                satisfied: u64::from(d <= target),
                tolerating: u64::from(d > target && d <= target.saturating_mul(4)),
                ..Counts::default()
            };
            let team = if teams {
                attributes
                    .get(row, TEAM)
                    .or_else(|| resource.get(row, TEAM))
            } else {
                None
            };
            tally.add(
                self.config.interval_ns,
                Record {
                    time: start.value(row),
                    service: string_at(service, row),
                    team,
                    agent: string_at(agent, row),
                    counts,
                    latency_ms: Some(d.max(0) as f64 / 1e6),
                },
            );
        }
        self.merge(tally);
        Ok(())
    }

    /// Counts the claims, conflicts and outcomes of `coordination_events` rows.
    pub fn observe_events(&self, rows: &RecordBatch) -> Result<()> {
        let time = timestamps(rows, "time")?;
        let event = strings(rows, "event")?;
        let team = strings(rows, "team")?;
        let service = strings(rows, "service_name")?;
        let agent = strings(rows, "agent_id")?;
        let conflict = booleans(rows, "conflict")?;
        let mut tally = Tally::default();
        for row in 0..rows.num_rows() {
            let event = string_at(event, row).unwrap_or("");
            let counts = Counts {
                claims: u64::from(event == "claim"),
                conflicts: u64::from(event == "claim" && conflict.value(row)),
                completed: u64::from(event == "complete"),
                failed: u64::from(event == "fail"),
                ..Counts::default()
            };
            tally.add(
                self.config.interval_ns,
                Record {
                    time: time.value(row),
                    service: string_at(service, row),
                    team: string_at(team, row),
                    agent: string_at(agent, row),
                    counts,
                    latency_ms: None,
                },
            );
        }
        self.merge(tally);
        Ok(())
    }

    /// Every scope's figures for the window of intervals ending before interval `end`
    /// (the window is `[end·interval − window, end·interval)`).
    pub fn read(&self, end: i64) -> Vec<ScopeSignals> {
        let n = (self.config.window_ns / self.config.interval_ns.max(1)).max(1);
        let window_start = (end - n).saturating_mul(self.config.interval_ns);
        let window_end = end.saturating_mul(self.config.interval_ns);
        let horizon = window_end.saturating_sub(self.config.liveness_horizon_ns);
        let bounds = &*LATENCY_BOUNDS_MS;
        let state = self.state();
        let kinds = [ScopeKind::Overall, ScopeKind::Service, ScopeKind::Team];
        let mut out: Vec<ScopeSignals> = kinds
            .iter()
            .flat_map(|kind| state.scopes[*kind as usize].iter().map(move |s| (kind, s)))
            .map(|(kind, (name, ring))| {
                let mut window = Counts::default();
                let mut last = Counts::default();
                let mut latency: &[u32] = &[];
                for b in &ring.buckets {
                    if b.idx >= end - n && b.idx < end {
                        window.add(&b.counts);
                    }
                    if b.idx == end - 1 {
                        last = b.counts;
                        latency = &b.latency;
                    }
                }
                ScopeSignals {
                    kind: *kind,
                    name: name.clone(),
                    window,
                    last,
                    last_p95_ms: p95(latency, bounds),
                    agents_live: 0,
                    agents_known: 0,
                }
            })
            .collect();
        let index: HashMap<(ScopeKind, &str), usize> = out
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.kind, s.name.as_str()), i))
            .collect();
        let mut live = vec![(0u64, 0u64); out.len()];
        let mut count = |kind: ScopeKind, name: &str, at: i64| {
            if let Some(&i) = index.get(&(kind, name)) {
                if at >= horizon && at < window_end {
                    live[i].1 += 1;
                    if at >= window_start {
                        live[i].0 += 1;
                    }
                }
            }
        };
        for seen_at in state.agents.values() {
            count(ScopeKind::Overall, "", seen_at.overall);
            for (s, at) in &seen_at.services {
                count(ScopeKind::Service, s, *at);
            }
            for (t, at) in &seen_at.teams {
                count(ScopeKind::Team, t, *at);
            }
        }
        for (s, (l, k)) in out.iter_mut().zip(live) {
            s.agents_live = l;
            s.agents_known = k;
        }
        // A scope with nothing in the window is gone for now: not scored, not fed to
        // its detectors (whose alerts then resolve).
        out.retain(|s| s.window != Counts::default());
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }
}

/// The upper bound of the bucket holding the 95th percentile.
fn p95(latency: &[u32], bounds: &[f64]) -> Option<f64> {
    let total: u64 = latency.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * 0.95).ceil() as u64;
    let mut seen = 0;
    for (i, c) in latency.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= rank {
            return Some(bounds.get(i).copied().unwrap_or(f64::INFINITY));
        }
    }
    None
}

impl Processor for Signals {
    fn name(&self) -> &'static str {
        "signals"
    }

    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS || table == COORDINATION_EVENTS
    }

    fn observe(&self, input: &TableBatch) {
        let result = if input.table == Table::SPANS {
            self.observe_spans(&input.batch)
        } else if input.table == COORDINATION_EVENTS {
            self.observe_events(&input.batch)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            debug_assert!(false, "signals: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::testing::{batch, failed, kv, span};

    const S: i64 = 1_000_000_000;

    fn signals() -> Signals {
        Signals::new(SignalsConfig {
            interval_ns: 10 * S,
            window_ns: 60 * S,
            latency_target_ns: S / 10,
            liveness_horizon_ns: 600 * S,
            max_scopes: 100,
            max_agents: 100,
        })
    }

    #[test]
    fn runs_of_rows_and_rows_between_them_all_count() {
        let s = signals();
        let team = |n: u64, t: &str| span(n, 95_010, 10, vec![kv("coordination.team", t)]);
        // red, red, blue, red: the second run of red joins the first.
        let spans = vec![
            team(1, "red"),
            team(2, "red"),
            team(3, "blue"),
            team(4, "red"),
        ];
        s.observe_spans(&batch("api", spans)).unwrap();
        let read = s.read(10);
        let calls = |name: &str| {
            read.iter()
                .find(|x| x.kind == ScopeKind::Team && x.name == name)
                .map(|x| x.window.calls)
        };
        assert_eq!((calls("red"), calls("blue")), (Some(3), Some(1)));
        let api = read.iter().find(|x| x.kind == ScopeKind::Service).unwrap();
        assert_eq!(api.window.calls, 4);
    }

    #[test]
    fn spans_count_in_their_interval_and_scopes() {
        let s = signals();
        // end_ms, duration_ms: starts at 95 s, 105 s, 118 s.
        let spans = vec![
            span(1, 95_010, 10, vec![kv("gen_ai.agent.id", "a")]),
            failed(span(2, 105_300, 300, vec![kv("coordination.team", "red")])),
            span(3, 119_000, 1_000, vec![]),
        ];
        s.observe_spans(&batch("api", spans)).unwrap();
        let read = s.read(12);
        let api = read.iter().find(|x| x.kind == ScopeKind::Service).unwrap();
        assert_eq!(api.name, "api");
        assert_eq!(
            api.window,
            Counts {
                calls: 3,
                errors: 1,
                satisfied: 1,
                tolerating: 1,
                ..Counts::default()
            }
        );
        assert_eq!(api.last.calls, 1);
        assert_eq!((api.agents_live, api.agents_known), (1, 1));
        let red = read.iter().find(|x| x.kind == ScopeKind::Team).unwrap();
        assert_eq!(
            (red.name.as_str(), red.window.calls, red.window.errors),
            ("red", 1, 1)
        );
        // Before the interval of the first span, nothing.
        assert!(s.read(9).iter().all(|x| x.window.calls == 0));
    }

    #[test]
    fn p95_reads_the_bucket_of_the_95th_percentile() {
        let bounds = [1.0, 2.0, 4.0];
        assert_eq!(p95(&[90, 5, 5, 0], &bounds), Some(2.0));
        assert_eq!(p95(&[0, 0, 0, 1], &bounds), Some(f64::INFINITY));
        assert_eq!(p95(&[], &bounds), None);
    }
}
