//! The signals health and anomaly detection read: per scope (overall, each service,
//! each team) and per evaluation interval, counts of calls, errors, Apdex-satisfied and
//! -tolerating calls, claims, conflicts, completions and failures, plus a latency
//! histogram; and when each agent was last seen, and in which services and teams.
//!
//! Fed off the acknowledgement path ([`Processor::observe`]) from `spans` and
//! `coordination_events`, bucketed by the records' own times (a span's end, when its
//! outcome is known; an event's time), so what an evaluation reads is what SQL over
//! the same window of the stored history reads (see the health reference's
//! recomputation). Which intervals are live is the wall clock's say ([`LiveClock`]),
//! never the newest record's: each scope keeps the intervals of the window and the
//! grace period before now; older records are not counted (`late`), nor are records
//! dated beyond the future tolerance (`future`). Scopes idle for longer than that and
//! agents not seen within the liveness horizon expire; at most `max_scopes` services
//! and teams are followed (newcomers beyond are not, `capacity`), and at most
//! `max_agents` agents: a full map forgets the tenth silent the longest (`capacity`),
//! so the agents at work are always followed.
//!
//! A span's team is its `coordination.team` attribute, else its resource's.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use arrow::array::RecordBatch;

use super::clock::{LiveClock, Skip};
use super::coordination::COORDINATION_EVENTS;
use crate::columns::{booleans, primitives, string_at, strings, timestamps, MapColumn, Text};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use crate::Result;

const TEAM: &str = "coordination.team";
const NAME: &str = "signals";

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

#[derive(Clone, Default)]
struct Bucket {
    counts: Counts,
    latency: Vec<u32>,
}

/// A scope's intervals, by index: only those with records, none older than the live
/// window (and none beyond the future tolerance), so a record from a wrong clock
/// occupies a bucket of its own instead of overwriting the present.
type Ring = std::collections::BTreeMap<i64, Bucket>;

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
    /// How long after an interval ends it is evaluated.
    pub grace_ns: i64,
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
    /// Agents holding work seen since the window's start, and agents holding work.
    pub agents_live: u64,
    pub agents_known: u64,
}

pub struct Signals {
    config: SignalsConfig,
    /// Intervals kept per scope, up to the present: the window, the grace period and
    /// one interval either side.
    keep: i64,
    clock: LiveClock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By [`ScopeKind`] (as an index), then name.
    scopes: [HashMap<String, Ring>; 3],
    agents: HashMap<String, AgentSeen>,
    /// The interval of the wall clock at the last pruning of old intervals.
    pruned: i64,
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
struct Tally<'a> {
    /// Records after this time (ns) are from a clock ahead of ours: left out.
    latest: i64,
    future: u64,
    groups: Groups<'a>,
    agents: Agents<'a>,
    group_run: Option<(GroupKey<'a>, (Counts, Vec<u32>))>,
    agent_run: Option<(AgentKey<'a>, i64)>,
}

impl<'a> Tally<'a> {
    fn new(latest: i64) -> Tally<'a> {
        Tally {
            latest,
            future: 0,
            groups: Groups::default(),
            agents: Agents::default(),
            group_run: None,
            agent_run: None,
        }
    }

    fn add(&mut self, interval_ns: i64, r: Record<'a>) {
        if r.time > self.latest {
            self.future += 1;
            return;
        }
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
/// Forgets about `n` of the agents silent the longest (more when they tie): a full
/// map makes room for newcomers, so the agents working now are always followed.
/// Answers how many were forgotten.
fn forget_longest_silent(agents: &mut HashMap<String, AgentSeen>, n: usize) -> u64 {
    let mut times: Vec<i64> = agents.values().map(|a| a.overall).collect();
    if times.is_empty() {
        return 0;
    }
    let k = n.clamp(1, times.len()) - 1;
    let (_, newest_forgotten, _) = times.select_nth_unstable(k);
    let newest_forgotten = *newest_forgotten;
    let before = agents.len();
    agents.retain(|_, a| a.overall > newest_forgotten);
    (before - agents.len()) as u64
}

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
    pub fn new(config: SignalsConfig, clock: LiveClock) -> Signals {
        let interval = config.interval_ns.max(1);
        let window = (config.window_ns / interval).max(1);
        let grace = (config.grace_ns.max(0) + interval - 1) / interval;
        Signals {
            config,
            keep: window + grace + 2,
            clock,
            state: Mutex::new(State {
                pruned: i64::MIN,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a batch's tally, group by group, to the intervals of the live window.
    fn merge(&self, tally: Tally<'_>) {
        let tally = tally.finish();
        self.clock.skip(NAME, Skip::Future, tally.future);
        let now = self.clock.now();
        let oldest_kept = now.div_euclid(self.config.interval_ns.max(1)) - self.keep + 1;
        let mut state = self.state();
        let state = &mut *state;
        self.prune(state, oldest_kept, now);
        let bounds = &*LATENCY_BOUNDS_MS;
        let (mut late, mut capped) = (0, 0);
        for ((service, team, idx), (counts, latency)) in &tally.groups {
            if *idx < oldest_kept {
                late += counts.calls + counts.claims + counts.completed + counts.failed;
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
                        capped += 1;
                        continue;
                    }
                    of_kind.insert(name.to_owned(), Ring::new());
                }
                let Some(ring) = of_kind.get_mut(name) else {
                    continue;
                };
                let bucket = ring.entry(*idx).or_default();
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
                capped += forget_longest_silent(&mut state.agents, self.config.max_agents / 10 + 1);
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
        self.clock.skip(NAME, Skip::Late, late);
        self.clock.skip(NAME, Skip::Capacity, capped);
    }

    /// Once per interval of the wall clock: drops the intervals that left the live
    /// window, the scopes left with none, and the agents not seen within the liveness
    /// horizon, so that churning services, teams and agents cost no memory once idle.
    fn prune(&self, state: &mut State, oldest_kept: i64, now: i64) {
        if state.pruned >= oldest_kept {
            return;
        }
        state.pruned = oldest_kept;
        for of_kind in &mut state.scopes {
            of_kind.retain(|_, ring| {
                *ring = ring.split_off(&oldest_kept);
                !ring.is_empty()
            });
        }
        let horizon = now.saturating_sub(self.config.liveness_horizon_ns);
        state.agents.retain(|_, seen_at| {
            seen_at.services.retain(|(_, at)| *at >= horizon);
            seen_at.teams.retain(|(_, at)| *at >= horizon);
            seen_at.overall >= horizon
        });
    }

    /// Counts the spans of a batch.
    pub fn observe_spans(&self, spans: &RecordBatch) -> Result<()> {
        let start = timestamps(spans, "start_time")?;
        let end = timestamps(spans, "end_time")?;
        let service = strings(spans, "service_name")?;
        let status = strings(spans, "status_code")?;
        let agent = strings(spans, "agent_id")?;
        let duration = primitives::<arrow::datatypes::Int64Type>(spans, "duration_ns")?;
        let attributes = MapColumn::of(spans, "attributes")?;
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let teams = attributes.mentions(&[TEAM]) || resource.mentions(&[TEAM]);
        let target = self.config.latency_target_ns;
        let mut tally = Tally::new(self.clock.latest_accepted());
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
                    // A call counts when its outcome is known: at its end.
                    time: match end.value(row) {
                        0 => start.value(row),
                        t => t,
                    },
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
        let mut tally = Tally::new(self.clock.latest_accepted());
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
    /// `holders` are the agents holding work now, with each item's team
    /// ([`super::coordination::CoordinationEvents::holders`]).
    pub fn read(&self, end: i64, holders: &[(String, Option<String>)]) -> Vec<ScopeSignals> {
        let n = (self.config.window_ns / self.config.interval_ns.max(1)).max(1);
        let window_start = (end - n).saturating_mul(self.config.interval_ns);
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
                for (idx, b) in ring.range(end - n..end) {
                    window.add(&b.counts);
                    if *idx == end - 1 {
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
        // Liveness: of the agents holding work, those seen (anywhere) since the
        // window's start. A team whose holders all went silent has no calls left in the
        // window, and is scored on that alone.
        for (_, team) in holders {
            let team = team.as_deref();
            for (kind, name) in [(ScopeKind::Overall, Some("")), (ScopeKind::Team, team)] {
                let Some(name) = name else { continue };
                if !out.iter().any(|s| s.kind == kind && s.name == name) {
                    out.push(ScopeSignals {
                        kind,
                        name: name.to_owned(),
                        window: Counts::default(),
                        last: Counts::default(),
                        last_p95_ms: None,
                        agents_live: 0,
                        agents_known: 0,
                    });
                }
            }
        }
        let index: HashMap<(ScopeKind, &str), usize> = out
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.kind, s.name.as_str()), i))
            .collect();
        let mut live = vec![(0u64, 0u64); out.len()];
        let mut counted: HashSet<(usize, &str)> = HashSet::new();
        for (agent, team) in holders {
            let seen_at = state.agents.get(agent);
            let alive = seen_at.is_some_and(|a| a.overall >= window_start);
            let services = seen_at
                .into_iter()
                .flat_map(|a| &a.services)
                .map(|(s, _)| (ScopeKind::Service, s.as_str()));
            let scopes = [
                (ScopeKind::Overall, Some("")),
                (ScopeKind::Team, team.as_deref()),
            ]
            .into_iter()
            .filter_map(|(kind, name)| Some((kind, name?)))
            .chain(services);
            for key in scopes {
                let Some(&i) = index.get(&key) else { continue };
                if counted.insert((i, agent.as_str())) {
                    live[i].1 += 1;
                    live[i].0 += u64::from(alive);
                }
            }
        }
        for (s, (l, k)) in out.iter_mut().zip(live) {
            s.agents_live = l;
            s.agents_known = k;
        }
        // A scope with nothing in the window and nobody holding work is gone for now:
        // not scored, not fed to its detectors (whose alerts then resolve).
        out.retain(|s| s.window != Counts::default() || s.agents_known > 0);
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
        NAME
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

    /// Signals at 120 s after the epoch.
    fn signals() -> Signals {
        let (clock, _) = LiveClock::manual(120 * S, 600);
        signals_on(clock)
    }

    fn signals_on(clock: LiveClock) -> Signals {
        Signals::new(
            SignalsConfig {
                interval_ns: 10 * S,
                window_ns: 60 * S,
                grace_ns: 2 * S,
                latency_target_ns: S / 10,
                liveness_horizon_ns: 600 * S,
                max_scopes: 100,
                max_agents: 100,
            },
            clock,
        )
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
        let read = s.read(10, &[]);
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
        // Agent a holds work.
        let read = s.read(12, &[("a".into(), None)]);
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
        assert!(s.read(9, &[]).iter().all(|x| x.window.calls == 0));
    }

    #[test]
    fn a_record_from_a_clock_a_day_ahead_leaves_the_present_alone() {
        let (clock, time) = LiveClock::manual(120 * S, 600);
        let s = signals_on(clock.clone());
        let now = |n: u64, end_ms: u64| span(n, end_ms, 10, vec![kv("gen_ai.agent.id", "a")]);
        s.observe_spans(&batch("api", vec![now(1, 115_000)]))
            .unwrap();
        // A day ahead, from another service; then the present goes on.
        let ahead = span(2, 86_520_000, 10, vec![kv("gen_ai.agent.id", "b")]);
        s.observe_spans(&batch("web", vec![ahead])).unwrap();
        time.set(130 * S);
        s.observe_spans(&batch("api", vec![now(3, 125_000)]))
            .unwrap();
        let read = s.read(13, &[]);
        let api = read.iter().find(|x| x.name == "api").expect("api scored");
        assert_eq!((api.window.calls, api.last.calls), (2, 1));
        assert!(read.iter().all(|x| x.name != "web"), "{read:?}");
        let overall = read.iter().find(|x| x.kind == ScopeKind::Overall).unwrap();
        assert_eq!(overall.window.calls, 2);
        assert_eq!(clock.skipped(NAME, Skip::Future), 1);
        // Within the tolerance, a record ahead counts in its own interval.
        s.observe_spans(&batch("api", vec![now(4, 200_000)]))
            .unwrap();
        assert_eq!(
            s.read(21, &[])
                .iter()
                .find(|x| x.name == "api")
                .unwrap()
                .last
                .calls,
            1
        );
    }

    #[test]
    fn records_older_than_the_live_window_are_late_and_idle_scopes_expire() {
        let (clock, time) = LiveClock::manual(120 * S, 600);
        let s = signals_on(clock.clone());
        let at = |n: u64, end_ms: u64| span(n, end_ms, 10, vec![kv("gen_ai.agent.id", "a")]);
        // The window (6 intervals), the grace period and one either side: 9 kept, the
        // oldest being interval 4 ([40 s, 50 s)).
        s.observe_spans(&batch("api", vec![at(1, 45_000), at(2, 39_000)]))
            .unwrap();
        assert_eq!(clock.skipped(NAME, Skip::Late), 1);
        assert!(s.read(12, &[]).iter().all(|x| x.name != "api"));
        assert_eq!(
            s.read(5, &[])
                .iter()
                .find(|x| x.name == "api")
                .unwrap()
                .window
                .calls,
            1
        );
        // Ten minutes of silence: the scope is gone, memory and all.
        time.set(720 * S);
        s.observe_spans(&batch("web", vec![span(3, 715_000, 10, vec![])]))
            .unwrap();
        let state = s.state();
        let services: Vec<&String> = state.scopes[ScopeKind::Service as usize].keys().collect();
        assert_eq!(services, ["web"]);
        assert!(state.agents.is_empty());
    }

    #[test]
    fn a_full_agent_map_forgets_the_longest_silent_so_newcomers_are_followed() {
        let (clock, time) = LiveClock::manual(100 * S, 600);
        let s = signals_on(clock.clone());
        // 250 agents, one a second, into a map of 100.
        for n in 0..250u64 {
            time.set((100 + n as i64) * S);
            let end_ms = (100 + n) * 1_000 - 500;
            let agent = format!("agent-{n}");
            s.observe_spans(&batch(
                "api",
                vec![span(n, end_ms, 10, vec![kv("gen_ai.agent.id", &agent)])],
            ))
            .unwrap();
        }
        let holders: Vec<(String, Option<String>)> = ["agent-249", "agent-248"]
            .iter()
            .map(|a| ((*a).to_owned(), None))
            .collect();
        let overall = s
            .read(35, &holders)
            .into_iter()
            .find(|x| x.kind == ScopeKind::Overall);
        let overall = overall.expect("overall scope");
        assert_eq!((overall.agents_live, overall.agents_known), (2, 2));
        let state = s.state();
        assert!(state.agents.len() <= 100);
        assert!(state.agents.contains_key("agent-249") && !state.agents.contains_key("agent-0"));
        assert!(clock.skipped(NAME, Skip::Capacity) >= 150);
    }

    #[test]
    fn liveness_counts_the_agents_holding_work_and_which_went_silent() {
        let (clock, time) = LiveClock::manual(100 * S, 600);
        let s = signals_on(clock);
        let by = |n: u64, end_ms: u64, agent: &str, team: &str| {
            span(
                n,
                end_ms,
                10,
                vec![kv("gen_ai.agent.id", agent), kv("coordination.team", team)],
            )
        };
        // a and b (red) and c (blue) are seen early; later only a and c.
        s.observe_spans(&batch(
            "api",
            vec![by(1, 30_000, "a", "red"), by(2, 31_000, "b", "red")],
        ))
        .unwrap();
        s.observe_spans(&batch("web", vec![by(3, 32_000, "c", "blue")]))
            .unwrap();
        time.set(130 * S);
        s.observe_spans(&batch("api", vec![by(4, 125_000, "a", "red")]))
            .unwrap();
        s.observe_spans(&batch("web", vec![by(5, 126_000, "c", "blue")]))
            .unwrap();
        // a and b hold red items, c holds nothing (it finished): it does not count.
        let holders = [
            ("a".into(), Some("red".into())),
            ("b".into(), Some("red".into())),
        ];
        let read = s.read(13, &holders);
        let of = |kind: ScopeKind, name: &str| {
            read.iter()
                .find(|x| x.kind == kind && x.name == name)
                .map(|x| (x.agents_live, x.agents_known))
        };
        // The window is [70 s, 130 s): b went silent while holding work.
        assert_eq!(of(ScopeKind::Overall, ""), Some((1, 2)));
        assert_eq!(of(ScopeKind::Team, "red"), Some((1, 2)));
        assert_eq!(of(ScopeKind::Service, "api"), Some((1, 2)));
        assert_eq!(of(ScopeKind::Service, "web"), Some((0, 0)));
        // Nobody holds work: nobody is missed.
        assert!(s.read(13, &[]).iter().all(|x| x.agents_known == 0));
        // A team whose holders all went silent is still read, on liveness alone.
        time.set(230 * S);
        let read = s.read(23, &[("b".into(), Some("red".into()))]);
        let red = read.iter().find(|x| x.kind == ScopeKind::Team).unwrap();
        assert_eq!(
            (red.window.calls, red.agents_live, red.agents_known),
            (0, 0, 1)
        );
    }

    #[test]
    fn p95_reads_the_bucket_of_the_95th_percentile() {
        let bounds = [1.0, 2.0, 4.0];
        assert_eq!(p95(&[90, 5, 5, 0], &bounds), Some(2.0));
        assert_eq!(p95(&[0, 0, 0, 1], &bounds), Some(f64::INFINITY));
        assert_eq!(p95(&[], &bounds), None);
    }
}
