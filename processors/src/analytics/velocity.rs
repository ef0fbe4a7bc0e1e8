//! Velocity: per team and window, the work items completed and failed, the story
//! points completed and the cycle time (claim → complete) percentiles.
//!
//! `velocity` is a SQL view over `coordination_events` ([`view_sql`]), so it is always
//! exactly what the stored history says, restarts and late data included, and anyone
//! can read how it is computed. [`WorkMetrics`] keeps the live counters of the same
//! events for `/metrics`.

use std::sync::Mutex;

use arrow::array::Array;
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};

use super::clock::LiveClock;
use super::coordination::COORDINATION_EVENTS;
use crate::columns::{booleans, primitives, string_at, strings, timestamps};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;

/// `[processors.velocity]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VelocityConfig {
    /// The width of a velocity window, aligned on the Unix epoch (hours on the hour).
    pub window_seconds: u64,
    /// Teams with series of their own on `/metrics`; later ones count as `other`.
    pub max_teams: usize,
}

impl Default for VelocityConfig {
    fn default() -> Self {
        VelocityConfig {
            window_seconds: 3600,
            max_teams: 1000,
        }
    }
}

impl VelocityConfig {
    pub fn validate(&self) -> std::result::Result<(), crate::ConfigError> {
        crate::config_error::positive("processors.velocity.window_seconds", self.window_seconds)
    }
}

/// The `velocity` view's definition.
pub fn view_sql(config: &VelocityConfig) -> String {
    let w = format!("INTERVAL '{} seconds'", config.window_seconds);
    let window = format!("date_bin({w}, time, TIMESTAMP '1970-01-01T00:00:00Z')");
    let cycle = "CASE WHEN event = 'complete' THEN cycle_time_ms END";
    format!(
        "SELECT {window} AS window_start, {window} + {w} AS window_end, team, \
         count(CASE WHEN event = 'complete' THEN 1 END) AS completed_items, \
         count(CASE WHEN event = 'fail' THEN 1 END) AS failed_items, \
         coalesce(sum(CASE WHEN event = 'complete' THEN story_points END), 0.0) AS story_points, \
         percentile_cont({cycle}, 0.5) AS cycle_time_p50_ms, \
         percentile_cont({cycle}, 0.95) AS cycle_time_p95_ms \
         FROM coordination_events WHERE event IN ('complete', 'fail') \
         GROUP BY {window}, team"
    )
}

const EVENTS: [&str; 5] = ["claim", "progress", "complete", "fail", "release"];

/// `swarmscope_work_items_total{team,event}`, `swarmscope_coordination_conflicts_total{team}`
/// and `swarmscope_velocity_story_points{team}` (points completed in the current
/// window), from `coordination_events` as they are acknowledged.
pub struct WorkMetrics {
    items: IntCounterVec,
    conflicts: IntCounterVec,
    points: GaugeVec,
    window_ns: i64,
    max_teams: usize,
    clock: LiveClock,
    state: Mutex<TeamState>,
}

#[derive(Default)]
struct TeamState {
    /// The teams with series of their own, and when each was last seen (wall clock).
    teams: std::collections::HashMap<String, i64>,
    /// When idle teams were last looked for.
    swept: i64,
    /// Per team: the window being summed, by its start.
    windows: std::collections::HashMap<String, (i64, f64)>,
}

fn unreachable_metric(e: prometheus::Error) -> ! {
    unreachable!("metric options are constant: {e}")
}

impl WorkMetrics {
    pub fn new(config: &VelocityConfig, clock: LiveClock) -> WorkMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable_metric(e))
        };
        WorkMetrics {
            items: counter(
                "swarmscope_work_items_total",
                "Coordination events, by team and event (claim, progress, complete, fail, release, other).",
                &["team", "event"],
            ),
            conflicts: counter(
                "swarmscope_coordination_conflicts_total",
                "Claims on work items another agent held, by team.",
                &["team"],
            ),
            points: GaugeVec::new(
                Opts::new(
                    "swarmscope_velocity_story_points",
                    "Story points completed in the current velocity window, by team.",
                ),
                &["team"],
            )
            .unwrap_or_else(|e| unreachable_metric(e)),
            window_ns: i64::try_from(config.window_seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000),
            max_teams: config.max_teams,
            clock,
            state: Mutex::new(TeamState::default()),
        }
    }

    /// The collectors to register with the registry `/metrics` serves.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.items.clone()),
            Box::new(self.conflicts.clone()),
            Box::new(self.points.clone()),
        ]
    }

    fn count(&self, rows: &arrow::record_batch::RecordBatch) -> crate::Result<()> {
        let time = timestamps(rows, "time")?;
        let team = strings(rows, "team")?;
        let event = strings(rows, "event")?;
        let conflict = booleans(rows, "conflict")?;
        let points = primitives::<arrow::datatypes::Float64Type>(rows, "story_points")?;
        // The gauge sums the wall clock's window: a completion dated in another one (a
        // late record, or one from a clock ahead of ours) leaves it as it is.
        let current = self.clock.now().div_euclid(self.window_ns) * self.window_ns;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Counted per batch, then added: one metric lookup per team and event.
        let mut items: std::collections::HashMap<(&str, &str), u64> = Default::default();
        let mut conflicts: std::collections::HashMap<&str, u64> = Default::default();
        let now = self.clock.now();
        self.expire_idle_teams(&mut state, now);
        for row in 0..rows.num_rows() {
            let raw_team = string_at(team, row).unwrap_or("");
            let team = if let Some(seen) = state.teams.get_mut(raw_team) {
                *seen = now;
                raw_team
            } else if state.teams.len() < self.max_teams {
                state.teams.insert(raw_team.to_owned(), now);
                raw_team
            } else {
                "other"
            };
            let event = string_at(event, row)
                .and_then(|e| EVENTS.iter().find(|known| **known == e).copied())
                .unwrap_or("other");
            *items.entry((team, event)).or_default() += 1;
            if conflict.value(row) {
                *conflicts.entry(team).or_default() += 1;
            }
            if event == "complete" {
                let window = time.value(row).div_euclid(self.window_ns) * self.window_ns;
                let points = if points.is_null(row) {
                    0.0
                } else {
                    points.value(row)
                };
                if window != current {
                    continue;
                }
                let entry = state
                    .windows
                    .entry(team.to_owned())
                    .or_insert((current, 0.0));
                if entry.0 != current {
                    *entry = (current, 0.0);
                }
                entry.1 += points;
                self.points.with_label_values(&[team]).set(entry.1);
            }
        }
        for ((team, event), n) in items {
            self.items.with_label_values(&[team, event]).inc_by(n);
        }
        for (team, n) in conflicts {
            self.conflicts.with_label_values(&[team]).inc_by(n);
        }
        Ok(())
    }
}

impl WorkMetrics {
    /// Once a minute: a team not seen for 15 minutes (the connectors' expiry) loses
    /// its series, so teams that come and go cost nothing once gone.
    fn expire_idle_teams(&self, state: &mut TeamState, now: i64) {
        const MINUTE: i64 = 60_000_000_000;
        if now.saturating_sub(state.swept) < MINUTE {
            return;
        }
        state.swept = now;
        let idle: Vec<String> = state
            .teams
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) > 15 * MINUTE)
            .map(|(team, _)| team.clone())
            .collect();
        for team in idle {
            state.teams.remove(&team);
            state.windows.remove(&team);
            for event in EVENTS.iter().chain(&["other"]) {
                let _ = self.items.remove_label_values(&[team.as_str(), event]);
            }
            let _ = self.conflicts.remove_label_values(&[&team]);
            let _ = self.points.remove_label_values(&[&team]);
        }
    }
}

impl Processor for WorkMetrics {
    fn name(&self) -> &'static str {
        "work_metrics"
    }

    fn observes(&self, table: Table) -> bool {
        table == COORDINATION_EVENTS
    }

    fn observe(&self, input: &TableBatch) {
        if input.table == COORDINATION_EVENTS {
            if let Err(e) = self.count(&input.batch) {
                debug_assert!(false, "work metrics: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::coordination::{CoordinationConfig, CoordinationEvents};
    use crate::analytics::testing::{batch, kv, kv_int, span};
    use crate::schema::Table;

    #[test]
    fn events_are_counted_per_team_and_the_window_sums_points() {
        let p = CoordinationEvents::new(&CoordinationConfig::default());
        // In the second hour since the epoch, as the second completion.
        let (clock, _) = LiveClock::manual(3_600_600_000_000, 600);
        let m = WorkMetrics::new(&VelocityConfig::default(), clock);
        let work = |n: u64, ms: u64, agent: &str, event: &str, pts: i64| {
            span(
                n,
                ms,
                1,
                vec![
                    kv("gen_ai.agent.id", agent),
                    kv("coordination.team", "red"),
                    kv("coordination.work.id", &format!("W{}", n / 10)),
                    kv("coordination.work.event", event),
                    kv_int("coordination.work.story_points", pts),
                ],
            )
        };
        let spans = vec![
            work(10, 1_000, "a", "claim", 3),
            work(11, 2_000, "b", "claim", 3),
            work(12, 3_000, "a", "complete", 3),
            work(20, 3_600_000, "a", "claim", 2),
            work(21, 3_600_500, "a", "complete", 2),
        ];
        for derived in p
            .derive(&TableBatch::new(Table::SPANS, batch("s", spans)))
            .unwrap()
        {
            m.observe(&derived);
        }
        assert_eq!(m.items.with_label_values(&["red", "claim"]).get(), 3);
        assert_eq!(m.items.with_label_values(&["red", "complete"]).get(), 2);
        assert_eq!(m.conflicts.with_label_values(&["red"]).get(), 1);
        // Only the wall clock's hour counts: the second completion's.
        assert_eq!(m.points.with_label_values(&["red"]).get(), 2.0);
    }

    #[test]
    fn teams_idle_for_15_minutes_lose_their_series() {
        let p = CoordinationEvents::new(&CoordinationConfig::default());
        let (clock, time) = LiveClock::manual(3_600_000_000_000, 600);
        let m = WorkMetrics::new(&VelocityConfig::default(), clock);
        let claim = |n: u64, team: &str| {
            span(
                n,
                1_000,
                1,
                vec![
                    kv("gen_ai.agent.id", "a"),
                    kv("coordination.team", team),
                    kv("coordination.work.id", &format!("W{n}")),
                    kv("coordination.work.event", "claim"),
                ],
            )
        };
        let observe = |s| {
            for derived in p
                .derive(&TableBatch::new(Table::SPANS, batch("s", vec![s])))
                .unwrap()
            {
                m.observe(&derived);
            }
        };
        observe(claim(1, "short-lived"));
        time.set(3_600_000_000_000 + 16 * 60_000_000_000);
        observe(claim(2, "steady"));
        let teams: Vec<String> = m
            .items
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().to_vec())
            .flat_map(|m| m.get_label().to_vec())
            .filter(|l| l.name() == "team")
            .map(|l| l.value().to_owned())
            .collect();
        assert_eq!(teams, ["steady"]);
    }

    #[test]
    fn the_view_bins_by_the_configured_window() {
        let sql = view_sql(&VelocityConfig {
            window_seconds: 600,
            ..Default::default()
        });
        assert!(sql.contains("INTERVAL '600 seconds'"), "{sql}");
    }
}
