//! Derived analytics: what swarmscope computes from the telemetry it stores (docs/analytics.md).
//!
//! Each concern is a [`Processor`](crate::processor::Processor) in a file of its own:
//! - [`coordination`]: `coordination_events` rows, with conflicts and cycle times, from
//!   spans carrying `coordination.work.id` and `.event` (on the acknowledgement path),
//!   and the `work_activity` view of every span naming a work item;
//! - [`genai`]: the `genai_usage` view with each call's cost, and token metrics;
//! - [`span_metrics`]: the spanmetrics connector's calls and duration series;
//! - [`graph`]: the call graph between services and between agents;
//! - [`velocity`]: the `velocity` view over `coordination_events`;
//! - [`signals`] → [`evaluator`]: per-interval counts, from which [`health`] scores,
//!   [`anomaly`] detectors and [`alerts`] rules are evaluated.

pub mod alerts;
pub mod anomaly;
pub mod clock;
pub mod coordination;
pub mod evaluator;
pub mod genai;
pub mod graph;
pub mod health;
mod ids;
pub mod series;
pub mod signals;
pub mod span_metrics;
pub mod velocity;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use serde::{Deserialize, Serialize};

use crate::processor::Processor;
use alerts::{AlertBook, AlertRule};
use anomaly::AnomalyConfig;
use clock::{LiveClock, DEFAULT_FUTURE_TOLERANCE_SECONDS};
use coordination::{CoordinationConfig, CoordinationEvents};
use evaluator::{Evaluation, Evaluator};
use genai::{GenAiConfig, GenAiUsage};
use graph::{GraphConfig, ServiceGraph};
use health::HealthConfig;
use signals::Signals;
use span_metrics::{SpanMetrics, SpanMetricsConfig};
use velocity::{VelocityConfig, WorkMetrics};

/// A SQL string literal of `value` (quotes doubled, so it cannot end the literal).
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[test]
fn sql_literals_cannot_break_out() {
    assert_eq!(sql_literal("a'b"), "'a''b'");
}

/// `[processors]`: every analytics processor's section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// All analytics at once; off, the collector stores and serves what it receives
    /// and derives nothing (no derived rows, no evaluations, no alerts).
    pub enabled: bool,
    /// Records dated further than this ahead of the wall clock are stored but kept out
    /// of the live analytics ([`clock`]).
    pub future_tolerance_seconds: u64,
    pub coordination: CoordinationConfig,
    pub genai: GenAiConfig,
    pub span_metrics: SpanMetricsConfig,
    pub velocity: VelocityConfig,
    pub health: HealthConfig,
    pub anomaly: AnomalyConfig,
    pub graph: GraphConfig,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            future_tolerance_seconds: DEFAULT_FUTURE_TOLERANCE_SECONDS,
            coordination: CoordinationConfig::default(),
            genai: GenAiConfig::default(),
            span_metrics: SpanMetricsConfig::default(),
            velocity: VelocityConfig::default(),
            health: HealthConfig::default(),
            anomaly: AnomalyConfig::default(),
            graph: GraphConfig::default(),
        }
    }
}

impl AnalyticsConfig {
    /// Checks what serde cannot; every message names the key.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.coordination.validate()?;
        self.genai.validate()?;
        self.health.validate()?;
        self.anomaly.validate()?;
        self.velocity.validate()
    }
}

/// The analytics processors of one collector, built from their config.
pub struct Analytics {
    pub config: AnalyticsConfig,
    /// The live analytics' clock, shared by every processor.
    pub clock: LiveClock,
    pub coordination: Arc<CoordinationEvents>,
    pub genai: Arc<GenAiUsage>,
    pub span_metrics: Option<Arc<SpanMetrics>>,
    pub work: Arc<WorkMetrics>,
    pub signals: Arc<Signals>,
    pub graph: Option<Arc<ServiceGraph>>,
    /// Health, anomaly detection and alert rules, run by the collector every
    /// `processors.health.interval_seconds`; see [`Analytics::evaluator`].
    evaluator: Mutex<Evaluator>,
    health_score: prometheus::GaugeVec,
    alerts_firing: prometheus::IntGaugeVec,
}

impl Analytics {
    /// The processors of `config`, with the threshold `rules` of `[[alerts.rules]]`,
    /// on the wall clock.
    pub fn new(config: &AnalyticsConfig, rules: Vec<AlertRule>) -> Analytics {
        let clock = LiveClock::wall(config.future_tolerance_seconds);
        Analytics::with_clock(config, rules, clock)
    }

    /// The same on `clock`.
    pub fn with_clock(
        config: &AnalyticsConfig,
        rules: Vec<AlertRule>,
        clock: LiveClock,
    ) -> Analytics {
        let signals = Arc::new(Signals::new(config.health.signals(), clock.clone()));
        let coordination = Arc::new(CoordinationEvents::with_clock(
            &config.coordination,
            clock.clone(),
        ));
        Analytics {
            evaluator: Mutex::new(
                Evaluator::new(
                    config.health.clone(),
                    config.anomaly.clone(),
                    rules,
                    Arc::clone(&signals),
                )
                .with_holders(Arc::clone(&coordination)),
            ),
            signals,
            graph: config
                .graph
                .enabled
                .then(|| Arc::new(ServiceGraph::new(&config.graph, clock.clone()))),
            health_score: prometheus::GaugeVec::new(
                prometheus::Opts::new(
                    "swarmscope_health_score",
                    "Health score in [0, 100] at the latest evaluation, by scope (overall, service, team) and name.",
                ),
                &["scope", "name"],
            )
            .unwrap_or_else(|e| unreachable!("metric options are constant: {e}")),
            alerts_firing: prometheus::IntGaugeVec::new(
                prometheus::Opts::new("swarmscope_alerts_firing", "Alerts firing now, by severity."),
                &["severity"],
            )
            .unwrap_or_else(|e| unreachable!("metric options are constant: {e}")),
            config: config.clone(),
            coordination,
            genai: Arc::new(GenAiUsage::with_clock(&config.genai, clock.clone())),
            span_metrics: config
                .span_metrics
                .enabled
                .then(|| Arc::new(SpanMetrics::new(&config.span_metrics))),
            work: Arc::new(WorkMetrics::new(&config.velocity, clock.clone())),
            clock,
        }
    }

    /// The processors, in the order the pipeline runs them (none when disabled).
    pub fn processors(&self) -> Vec<Arc<dyn Processor>> {
        if !self.config.enabled {
            return Vec::new();
        }
        let mut all: Vec<Arc<dyn Processor>> = vec![
            self.coordination.clone(),
            self.genai.clone(),
            self.work.clone(),
            self.signals.clone(),
        ];
        if let Some(m) = &self.span_metrics {
            all.push(m.clone());
        }
        if let Some(g) = &self.graph {
            all.push(g.clone());
        }
        all
    }

    /// The evaluator, locked. A panic while it was held leaves it usable (an evaluation
    /// updates its state as a whole or not at all), so a poisoned lock is taken as is.
    pub fn evaluator(&self) -> std::sync::MutexGuard<'_, Evaluator> {
        self.evaluator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the evaluation of the window ending with interval `end` and publishes
    /// its scores as `swarmscope_health_score{scope,name}`. Its alert transitions are
    /// made by [`Analytics::commit`] once they are recorded.
    pub fn evaluate(&self, end: i64) -> Evaluation {
        let evaluation = self.evaluator().evaluate(end);
        self.health_score.reset();
        for h in &evaluation.health {
            self.health_score
                .with_label_values(&[h.scope, &h.name])
                .set(h.score);
        }
        evaluation
    }

    /// Makes `book` (an evaluation's, its transitions recorded) the firing alerts, and
    /// publishes them as `swarmscope_alerts_firing{severity}`.
    pub fn commit(&self, book: AlertBook) {
        let mut evaluator = self.evaluator();
        evaluator.commit(book);
        self.alerts_firing.reset();
        for severity in ["critical", "warning"] {
            self.alerts_firing.with_label_values(&[severity]).set(0);
        }
        for alert in evaluator.firing() {
            self.alerts_firing
                .with_label_values(&[alert.severity()])
                .inc();
        }
    }

    /// Everything they expose on `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let mut all = self.genai.collectors();
        all.push(Box::new(self.health_score.clone()));
        all.push(Box::new(self.alerts_firing.clone()));
        all.push(self.clock.collector());
        all.extend(self.work.collectors());
        if let Some(m) = &self.span_metrics {
            all.push(Box::new(SpanMetricsCollector(m.clone())));
        }
        if let Some(g) = &self.graph {
            all.extend(g.collectors());
        }
        all
    }

    /// The SQL views over the stored tables: (name, definition).
    pub fn views(&self) -> Vec<(&'static str, String)> {
        vec![
            ("genai_usage", genai::view_sql()),
            ("work_activity", coordination::view_sql()),
            ("velocity", velocity::view_sql(&self.config.velocity)),
        ]
    }
}

struct SpanMetricsCollector(Arc<SpanMetrics>);

impl Collector for SpanMetricsCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.family().desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.family().collect()
    }
}
