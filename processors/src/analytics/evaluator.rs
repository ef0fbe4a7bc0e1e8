//! The periodic evaluation: every `processors.health.interval_seconds`, the collector
//! asks the [`Evaluator`] for the interval that just ended. It reads the
//! [`Signals`], scores every scope ([`super::health`]), feeds the anomaly detectors one
//! value per series ([`super::anomaly`]), checks the threshold rules, and passes what
//! holds to the [`AlertBook`]. What comes out (health rows, alert transitions) is
//! stored and sent on by the collector; this file does no I/O.
//!
//! The detected series, per service: `request_rate` (calls per second, either way),
//! `error_rate` and `latency_p95_ms` (upwards; only for intervals with at least
//! `min_calls` calls); per team: `completed_items` per interval (downwards).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::alerts::{Alert, AlertBook, AlertRule, Condition};
use super::anomaly::{AnomalyConfig, Detector, Direction, Floor};
use super::coordination::CoordinationEvents;
use super::health::{score, HealthConfig, HealthScore};
use super::signals::{ScopeKind, ScopeSignals, Signals};

/// One detected series kind.
struct Series {
    metric: &'static str,
    alertname: &'static str,
    severity: &'static str,
    direction: Direction,
    floor: Floor,
    /// How a value reads in an annotation.
    percent: bool,
    /// Bursty by nature: a burst that recurs is not an anomaly (see the anomaly module).
    bursty: bool,
}

impl Series {
    fn detector(&self) -> Detector {
        let detector = Detector::new(self.direction, self.floor);
        if self.bursty {
            detector.tolerating_recurrence()
        } else {
            detector
        }
    }
}

const REQUEST_RATE: Series = Series {
    metric: "request_rate",
    alertname: "RequestRateAnomaly",
    severity: "warning",
    direction: Direction::Both,
    floor: Floor {
        relative: 0.1,
        absolute: 0.5,
    },
    percent: false,
    bursty: true,
};
const ERROR_RATE: Series = Series {
    metric: "error_rate",
    alertname: "ErrorRateAnomaly",
    severity: "critical",
    direction: Direction::Up,
    // A point of error rate, and never below the sampling noise of the interval's
    // calls (see the anomaly module).
    floor: Floor {
        relative: 0.0,
        absolute: 0.01,
    },
    percent: true,
    bursty: false,
};
const LATENCY: Series = Series {
    metric: "latency_p95_ms",
    alertname: "LatencyAnomaly",
    severity: "warning",
    direction: Direction::Up,
    floor: Floor {
        relative: 0.25,
        absolute: 1.0,
    },
    percent: false,
    bursty: false,
};
const VELOCITY: Series = Series {
    metric: "completed_items",
    alertname: "VelocityAnomaly",
    severity: "warning",
    direction: Direction::Down,
    floor: Floor {
        relative: 0.2,
        absolute: 1.0,
    },
    percent: false,
    bursty: false,
};

/// How long a detector may go unfed before it is dropped: the connectors' 15 minutes.
const DETECTOR_EXPIRY_NS: i64 = 15 * 60 * 1_000_000_000;

/// What one evaluation produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// The end of the evaluated interval (nanoseconds), the rows' `time`.
    pub at: i64,
    pub health: Vec<HealthScore>,
    /// Alerts that started or ended.
    pub transitions: Vec<Alert>,
    /// The firing alerts once the transitions are made: [`Evaluator::commit`] takes it
    /// once they are recorded, so a transition the store refused is not made (and is
    /// found again at the next evaluation).
    pub book: AlertBook,
}

pub struct Evaluator {
    health: HealthConfig,
    anomaly: AnomalyConfig,
    rules: Vec<AlertRule>,
    signals: Arc<Signals>,
    /// Who holds work, for liveness.
    coordination: Option<Arc<CoordinationEvents>>,
    /// Each series' detector, with the evaluation (`at`) that last fed it and the
    /// fingerprint of its alert.
    detectors: HashMap<(&'static str, String), (Detector, i64, String)>,
    /// Per rule and scope name: since when its condition holds.
    pending: HashMap<(usize, String), i64>,
    book: AlertBook,
    latest: Vec<HealthScore>,
}

fn scope_label(kind: ScopeKind) -> &'static str {
    match kind {
        ScopeKind::Overall => "scope",
        ScopeKind::Service => "service",
        ScopeKind::Team => "team",
    }
}

fn scope_value(s: &ScopeSignals) -> &str {
    match s.kind {
        ScopeKind::Overall => "overall",
        _ => &s.name,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn show(value: f64, percent: bool) -> String {
    if percent {
        format!("{:.1}%", value * 100.0)
    } else {
        format!("{value:.2}")
    }
}

impl Evaluator {
    pub fn new(
        health: HealthConfig,
        anomaly: AnomalyConfig,
        rules: Vec<AlertRule>,
        signals: Arc<Signals>,
    ) -> Evaluator {
        Evaluator {
            health,
            anomaly,
            rules,
            signals,
            coordination: None,
            detectors: HashMap::new(),
            pending: HashMap::new(),
            book: AlertBook::default(),
            latest: Vec::new(),
        }
    }

    /// Reads who holds work from `coordination`, for the liveness component.
    pub fn with_holders(mut self, coordination: Arc<CoordinationEvents>) -> Evaluator {
        self.coordination = Some(coordination);
        self
    }

    /// After the firing alerts were restored (on start): each detector alert's series
    /// gets a detector warmed up on the baseline the alert fired against, and firing.
    pub fn seed_restored(&mut self) {
        let series = [&REQUEST_RATE, &ERROR_RATE, &LATENCY, &VELOCITY];
        let restored: Vec<Alert> = self.book.firing().cloned().collect();
        for alert in restored {
            let (Some(baseline), "ewma_mad") = (alert.baseline, alert.detector.as_str()) else {
                continue;
            };
            let Some(s) = series
                .iter()
                .find(|s| alert.labels.get("metric").map(String::as_str) == Some(s.metric))
            else {
                continue;
            };
            let scope = ["service", "team"]
                .into_iter()
                .find_map(|label| Some(format!("{label}/{}", alert.labels.get(label)?)));
            let Some(scope) = scope else { continue };
            let mut detector = Detector::restored(s.direction, s.floor, baseline, &self.anomaly);
            if s.bursty {
                detector = detector.tolerating_recurrence();
            }
            self.detectors
                .insert((s.metric, scope), (detector, 0, alert.fingerprint.clone()));
        }
    }

    /// Makes an evaluation's transitions, once recorded.
    pub fn commit(&mut self, book: AlertBook) {
        self.book = book;
    }

    pub fn book_mut(&mut self) -> &mut AlertBook {
        &mut self.book
    }

    pub fn firing(&self) -> Vec<Alert> {
        let mut all: Vec<Alert> = self.book.firing().cloned().collect();
        all.sort_by(|a, b| (a.starts_at, &a.fingerprint).cmp(&(b.starts_at, &b.fingerprint)));
        all
    }

    /// The alerts restored as resolved at or after `since` (nanoseconds).
    pub fn resolved_since(&self, since: i64) -> Vec<Alert> {
        self.book.resolved_since(since)
    }

    /// The scores of the latest evaluation.
    pub fn latest(&self) -> &[HealthScore] {
        &self.latest
    }

    fn interval_ns(&self) -> i64 {
        i64::try_from(self.health.interval_seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000)
    }

    /// The interval to evaluate at wall-clock time `now_ns`: the last one that ended
    /// at least `grace_ms` ago, as the index [`Evaluator::evaluate`] takes.
    pub fn due(&self, now_ns: i64) -> i64 {
        let grace = i64::try_from(self.health.grace_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        now_ns.saturating_sub(grace).div_euclid(self.interval_ns())
    }

    /// When interval `end` becomes due.
    pub fn due_at(&self, end: i64) -> i64 {
        let grace = i64::try_from(self.health.grace_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        end.saturating_mul(self.interval_ns()).saturating_add(grace)
    }

    /// Evaluates the window ending with interval `end` (exclusive).
    pub fn evaluate(&mut self, end: i64) -> Evaluation {
        let interval = self.interval_ns();
        let at = end.saturating_mul(interval);
        let window_ns = i64::try_from(self.health.window_seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        let mut holders = self
            .coordination
            .as_ref()
            .map(|c| c.holders())
            .unwrap_or_default();
        // The agents a team expects count as holders of work: their silence matters.
        let holding: std::collections::HashSet<String> =
            holders.iter().map(|(agent, _)| agent.clone()).collect();
        for (team, agents) in &self.health.expected_agents {
            for agent in agents.iter().filter(|a| !holding.contains(*a)) {
                holders.push((agent.clone(), Some(team.clone())));
            }
        }
        let scopes = self.signals.read(end, &holders);

        // Health, with the alerts firing before this evaluation.
        let firing: Vec<Alert> = self.book.firing().cloned().collect();
        let firing_in = |s: &ScopeSignals| -> u64 {
            firing
                .iter()
                .filter(|a| match s.kind {
                    ScopeKind::Overall => true,
                    kind => a.labels.get(scope_label(kind)) == Some(&s.name),
                })
                .count() as u64
        };
        let health: Vec<HealthScore> = scopes
            .iter()
            .filter_map(|s| score(&self.health, s, firing_in(s), (at - window_ns, at)))
            .collect();

        let mut holding = Vec::new();
        let mut undecided = HashSet::new();
        if self.anomaly.enabled {
            self.detect(at, &scopes, &mut holding, &mut undecided);
            // A series gone for longer than the idle expiry (a service or team that
            // left) frees its detector, unless it is firing.
            self.detectors.retain(|_, (d, fed, _)| {
                at.saturating_sub(*fed) <= DETECTOR_EXPIRY_NS || d.firing()
            });
            // A service that stopped sending keeps its request-rate alert firing:
            // absence is no recovery.
            for ((metric, _), (d, fed, fp)) in &self.detectors {
                if *metric == REQUEST_RATE.metric && *fed != at && d.firing() {
                    undecided.insert(fp.clone());
                }
            }
        }
        self.check_rules(at, &scopes, &health, &mut holding);
        let mut book = self.book.clone();
        let transitions = book.update(at, holding, &undecided);
        self.latest.clone_from(&health);
        Evaluation {
            at,
            health,
            transitions,
            book,
        }
    }

    fn detect(
        &mut self,
        at: i64,
        scopes: &[ScopeSignals],
        holding: &mut Vec<Condition>,
        undecided: &mut HashSet<String>,
    ) {
        let seconds = self.health.interval_seconds as f64;
        let min_calls = self.anomaly.min_calls;
        for s in scopes {
            // (series, value, calls it is a share of)
            let mut values: Vec<(&Series, Option<f64>, Option<u64>)> = Vec::new();
            match s.kind {
                ScopeKind::Service => {
                    let enough = s.last.calls >= min_calls;
                    values.push((&REQUEST_RATE, Some(s.last.calls as f64 / seconds), None));
                    values.push((
                        &ERROR_RATE,
                        enough.then(|| s.last.errors as f64 / s.last.calls as f64),
                        Some(s.last.calls),
                    ));
                    values.push((&LATENCY, if enough { s.last_p95_ms } else { None }, None));
                }
                ScopeKind::Team if s.window.completed + s.window.failed > 0 => {
                    values.push((&VELOCITY, Some(s.last.completed as f64), None));
                }
                _ => {}
            }
            for (series, value, calls) in values {
                let label = scope_label(s.kind);
                let name = scope_value(s);
                let alert_labels = labels(&[
                    ("alertname", series.alertname),
                    ("severity", series.severity),
                    (label, name),
                    ("metric", series.metric),
                ]);
                let fp = super::alerts::fingerprint(&alert_labels);
                let key = (series.metric, format!("{label}/{name}"));
                if !self.detectors.contains_key(&key)
                    && self.detectors.len() >= self.anomaly.max_series
                {
                    continue;
                }
                let (detector, fed, _) = self
                    .detectors
                    .entry(key)
                    .or_insert_with(|| (series.detector(), at, fp.clone()));
                *fed = at;
                let Some(value) = value else {
                    undecided.insert(fp);
                    continue;
                };
                let j = detector.observe_share(value, calls, &self.anomaly);
                if !detector.warmed_up(&self.anomaly) || j.baseline.is_none() {
                    undecided.insert(fp);
                    continue;
                }
                if j.firing {
                    let baseline = j.baseline.unwrap_or_default();
                    let summary = format!(
                        "{} of {label} {name} is {}, against a baseline of {}",
                        series.metric,
                        show(value, series.percent),
                        show(baseline, series.percent),
                    );
                    holding.push(Condition::new(
                        alert_labels,
                        summary,
                        format!(
                            "robust z-score {:.1} (median/MAD and EWMA over the last {} intervals)",
                            j.score.unwrap_or_default(),
                            self.anomaly.window
                        ),
                        value,
                        baseline,
                        "ewma_mad",
                    ));
                }
            }
        }
    }

    fn check_rules(
        &mut self,
        at: i64,
        scopes: &[ScopeSignals],
        health: &[HealthScore],
        holding: &mut Vec<Condition>,
    ) {
        let window_s = self.health.window_seconds as f64;
        let mut live = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for s in scopes.iter().filter(|s| s.kind.name() == rule.scope) {
                let name = scope_value(s);
                if rule.scope_name.as_deref().is_some_and(|n| n != name) {
                    continue;
                }
                let w = &s.window;
                let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
                let value = match rule.metric.as_str() {
                    "health_score" => health
                        .iter()
                        .find(|h| h.scope == s.kind.name() && h.name == name)
                        .map(|h| h.score),
                    "request_rate" => Some(w.calls as f64 / window_s),
                    "error_rate" => ratio(w.errors, w.calls),
                    "latency_p95_ms" => s.last_p95_ms,
                    "conflict_rate" => ratio(w.conflicts, w.claims),
                    "work_success_rate" => ratio(w.completed, w.completed + w.failed),
                    "completed_items" => Some(w.completed as f64),
                    _ => Some(s.agents_live as f64),
                };
                let Some(value) = value.filter(|v| rule.holds(*v)) else {
                    continue;
                };
                let key = (i, name.to_owned());
                let since = *self.pending.entry(key.clone()).or_insert(at);
                live.insert(key);
                if at - since < rule.for_ns() {
                    continue;
                }
                let label = scope_label(s.kind);
                let mut alert_labels = rule.labels.clone();
                alert_labels.extend(labels(&[
                    ("alertname", &rule.name),
                    ("severity", &rule.severity),
                    (label, name),
                    ("metric", &rule.metric),
                ]));
                let summary = rule
                    .summary
                    .clone()
                    .unwrap_or_else(|| "{metric} of {scope} is {value}".into())
                    .replace("{metric}", &rule.metric)
                    .replace("{scope}", &format!("{label} {name}"))
                    .replace("{value}", &format!("{value:.2}"));
                holding.push(Condition::new(
                    alert_labels,
                    summary,
                    format!(
                        "{} {} {} for {}",
                        rule.metric, rule.op, rule.threshold, rule.for_
                    ),
                    value,
                    rule.threshold,
                    "threshold",
                ));
            }
        }
        self.pending.retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::alerts::alert_rows;
    use crate::analytics::clock::{LiveClock, ManualTime};
    use crate::analytics::testing::{batch, failed, span};

    const S: u64 = 1_000;

    /// Signals on a clock that [`traffic`] moves to the end of the interval it sends.
    struct Traffic {
        signals: Arc<Signals>,
        time: ManualTime,
    }

    fn evaluator(rules: Vec<AlertRule>) -> (Evaluator, Traffic) {
        let health = HealthConfig {
            interval_seconds: 10,
            window_seconds: 60,
            ..HealthConfig::default()
        };
        let (clock, time) = LiveClock::manual(0, 600);
        let signals = Arc::new(Signals::new(health.signals(), clock));
        (
            Evaluator::new(
                health,
                AnomalyConfig::default(),
                rules,
                Arc::clone(&signals),
            ),
            Traffic { signals, time },
        )
    }

    /// One interval (`i`, of 10 s) of traffic: 50 calls, `errors` of them failed, sent
    /// as the interval ends.
    fn traffic(t: &Traffic, i: u64, errors: u64) {
        t.time.set(((i + 1) * 10 * S * 1_000_000) as i64);
        let signals = &t.signals;
        let spans = (0..50)
            .map(|n| {
                let s = span(i * 100 + n, i * 10 * S + 1_000 + n * 100, 20, vec![]);
                if n < errors {
                    failed(s)
                } else {
                    s
                }
            })
            .collect();
        signals.observe_spans(&batch("api", spans)).unwrap();
    }

    #[test]
    fn an_error_jump_after_a_minute_fires_and_resolves() {
        let (mut e, signals) = evaluator(Vec::new());
        for i in 0..7 {
            traffic(&signals, i, 0);
            let out = evaluated(&mut e, i as i64 + 1);
            assert!(
                out.transitions.is_empty(),
                "interval {i}: {:?}",
                out.transitions
            );
        }
        traffic(&signals, 7, 30);
        let out = evaluated(&mut e, 8);
        assert_eq!(out.transitions.len(), 1, "{out:?}");
        let alert = &out.transitions[0];
        assert_eq!(alert.status, "firing");
        assert_eq!(alert.labels["alertname"], "ErrorRateAnomaly");
        assert_eq!(alert.labels["service"], "api");
        assert_eq!(alert.value, Some(0.6));
        // Health now counts the firing alert.
        traffic(&signals, 8, 30);
        let out = evaluated(&mut e, 9);
        let api = out.health.iter().find(|h| h.name == "api").unwrap();
        assert_eq!(api.components[5], Some(50.0));
        for i in 9..11 {
            traffic(&signals, i, 0);
            let out = evaluated(&mut e, i as i64 + 1);
            if i == 10 {
                assert_eq!(out.transitions.len(), 1);
                assert_eq!(out.transitions[0].status, "resolved");
            }
        }
        assert!(e.firing().is_empty());
    }

    /// `intervals` intervals of traffic without errors, each evaluated.
    fn normal(e: &mut Evaluator, t: &Traffic, intervals: u64) {
        for i in 0..intervals {
            traffic(t, i, 0);
            evaluated(e, i as i64 + 1);
        }
    }

    /// Evaluates interval `end` and commits its transitions, as the collector does once
    /// they are stored.
    fn evaluated(e: &mut Evaluator, end: i64) -> Evaluation {
        let out = e.evaluate(end);
        e.commit(out.book.clone());
        out
    }

    #[test]
    fn an_agent_a_team_expects_counts_against_liveness_while_silent() {
        let (clock, time) = LiveClock::manual(0, 600);
        let health = HealthConfig {
            interval_seconds: 10,
            window_seconds: 60,
            expected_agents: [(
                "red".to_owned(),
                vec!["scout".to_owned(), "lookout".to_owned()],
            )]
            .into(),
            ..HealthConfig::default()
        };
        let signals = Arc::new(Signals::new(health.signals(), clock));
        let mut e = Evaluator::new(
            health,
            AnomalyConfig::default(),
            Vec::new(),
            Arc::clone(&signals),
        );
        time.set((10 * S * 1_000_000) as i64);
        let scout = span(
            1,
            5 * S,
            20,
            vec![
                crate::analytics::testing::kv("gen_ai.agent.id", "scout"),
                crate::analytics::testing::kv("coordination.team", "red"),
            ],
        );
        signals.observe_spans(&batch("api", vec![scout])).unwrap();
        let out = evaluated(&mut e, 1);
        let red = out
            .health
            .iter()
            .find(|h| h.name == "red")
            .expect("team red scored");
        let input = |name: &str| {
            let i = crate::analytics::health::INPUTS
                .iter()
                .position(|n| *n == name)
                .unwrap();
            red.inputs[i]
        };
        assert_eq!((input("agents_live"), input("agents_known")), (1, 2));
        let liveness = crate::analytics::health::COMPONENTS
            .iter()
            .position(|n| *n == "liveness")
            .unwrap();
        assert_eq!(red.components[liveness], Some(50.0));
    }

    #[test]
    fn a_transition_not_recorded_is_not_made_and_comes_again() {
        let (mut e, t) = evaluator(Vec::new());
        normal(&mut e, &t, 7);
        traffic(&t, 7, 30);
        // The store refused the firing row: the evaluation is not committed.
        let refused = e.evaluate(8);
        assert_eq!(refused.transitions.len(), 1);
        assert!(e.firing().is_empty());
        traffic(&t, 8, 30);
        let again = evaluated(&mut e, 9);
        assert_eq!(again.transitions.len(), 1, "{again:?}");
        assert_eq!(again.transitions[0].status, "firing");
        assert_eq!(e.firing().len(), 1);
    }

    #[test]
    fn a_restored_alert_is_judged_against_the_baseline_it_fired_on() {
        let (mut e, t) = evaluator(Vec::new());
        normal(&mut e, &t, 7);
        traffic(&t, 7, 30);
        assert_eq!(evaluated(&mut e, 8).transitions.len(), 1);
        // A restart: a new evaluator with the firing alert restored from its row.
        let (mut restarted, t) = evaluator(Vec::new());
        let rows = alert_rows(0, &e.firing()).unwrap();
        restarted.book_mut().restore(&rows).unwrap();
        restarted.seed_restored();
        // The errors go on past a fresh detector's warm-up: the alert keeps firing...
        for i in 8..20 {
            traffic(&t, i, 30);
            let out = evaluated(&mut restarted, i as i64 + 1);
            assert!(out.transitions.is_empty(), "interval {i}: {out:?}");
        }
        // ...and resolves when they stop.
        let resolved: Vec<usize> = (20..23)
            .map(|i| {
                traffic(&t, i, 0);
                evaluated(&mut restarted, i as i64 + 1).transitions.len()
            })
            .collect();
        assert_eq!(resolved, [0, 1, 0]);
    }

    #[test]
    fn a_service_that_stops_sending_keeps_its_request_rate_alert() {
        let (mut e, t) = evaluator(Vec::new());
        normal(&mut e, &t, 7);
        // Silence, for longer than the window (60 s) and well past it.
        let mut fired = Vec::new();
        for end in 8..40 {
            t.time.set(end * 10_000_000_000);
            fired.extend(evaluated(&mut e, end).transitions);
        }
        let names: Vec<(&str, &str)> = fired
            .iter()
            .map(|a| (a.name(), a.status.as_str()))
            .collect();
        assert_eq!(names, [("RequestRateAnomaly", "firing")]);
        assert_eq!(e.firing().len(), 1);
    }

    #[test]
    fn detectors_of_series_gone_idle_are_dropped() {
        let (mut e, t) = evaluator(Vec::new());
        normal(&mut e, &t, 3);
        assert_eq!(
            e.detectors.len(),
            3,
            "request rate, error rate, latency of api"
        );
        // Sixteen minutes later, with no traffic from api.
        let end = 3 + 16 * 6;
        t.time.set(end * 10_000_000_000);
        evaluated(&mut e, end);
        assert!(e.detectors.is_empty());
    }

    #[test]
    fn a_threshold_rule_fires_after_its_for_duration() {
        let rule = AlertRule {
            name: "LowHealth".into(),
            metric: "health_score".into(),
            scope: "service".into(),
            scope_name: Some("api".into()),
            op: "<".into(),
            threshold: 90.0,
            for_: "20s".into(),
            severity: "page".into(),
            summary: Some("{scope} health is {value}".into()),
            labels: BTreeMap::new(),
        };
        let (mut e, signals) = evaluator(vec![rule]);
        let mut fired = Vec::new();
        for i in 0..5 {
            traffic(&signals, i, 40);
            fired.push(evaluated(&mut e, i as i64 + 1).transitions.len());
        }
        // Holds from the first interval; fires once 20 s have passed.
        assert_eq!(fired, [0, 0, 1, 0, 0]);
        let alert = &e.firing()[0];
        assert_eq!(alert.labels["severity"], "page");
        assert!(alert.annotations["summary"].starts_with("service api health is"));
    }
}
