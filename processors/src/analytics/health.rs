//! Health scores: per service, per team and overall, a weighted mean of named
//! components, each in [0, 100], over the last `window_seconds`:
//!
//! | component | formula |
//! |---|---|
//! | `errors` | 100 × (1 − error spans / spans) |
//! | `latency` | 100 × Apdex = 100 × (spans ≤ T + ½ × spans in (T, 4T]) / spans, T = `latency_target_ms` |
//! | `work` | 100 × completed / (completed + failed) work items |
//! | `conflicts` | 100 × (1 − conflicting claims / claims) |
//! | `liveness` | 100 × agents holding work seen since the window's start / agents holding work |
//! | `alerts` | max(0, 100 − 50 × firing alerts of the scope) |
//!
//! A component without data (no spans, no claims...) is left out and the weights of
//! the others renormalised: `score = Σ wᵢ·cᵢ / Σ wᵢ` over the components present. The
//! `alerts` component only counts beside another one. Every component is a share
//! of counts, so a score is within [0, 100] whatever the input.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::signals::{ScopeKind, ScopeSignals};
use crate::config_error::{positive, ConfigError};
use crate::schema::{timestamp_type, Table, TableDef};
use crate::Result;

// Code 5 is not used: it named a stored genai_usage table before that became a view.
pub const HEALTH: Table = Table::declare(&TableDef {
    name: "health",
    code: 6,
    time_column: "time",
    fallback_time_column: None,
    exact_nanos: &[],
    cluster_column: None,
    schema: || SCHEMA.clone(),
});

/// The components, in the order of [`HealthScore::components`] and of the table.
pub const COMPONENTS: [&str; 6] = [
    "errors",
    "latency",
    "work",
    "conflicts",
    "liveness",
    "alerts",
];

pub const INPUTS: [&str; 12] = [
    "calls",
    "errors",
    "apdex_satisfied",
    "apdex_tolerating",
    "claims",
    "conflicts",
    "completed",
    "failed",
    "agents_live",
    "agents_known",
    "alerts_firing",
    "latency_target_ms",
];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", timestamp_type(), false),
        Field::new("scope", DataType::Utf8, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ];
    for c in COMPONENTS {
        fields.push(Field::new(format!("{c}_score"), DataType::Float64, true));
    }
    for i in INPUTS {
        fields.push(Field::new(format!("input_{i}"), DataType::UInt64, false));
    }
    fields.push(Field::new("window_start", timestamp_type(), false));
    fields.push(Field::new("window_end", timestamp_type(), false));
    Arc::new(Schema::new(fields))
});

/// `[processors.health.weights]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthWeights {
    pub errors: f64,
    pub latency: f64,
    pub work: f64,
    pub conflicts: f64,
    pub liveness: f64,
    pub alerts: f64,
}

impl Default for HealthWeights {
    fn default() -> Self {
        HealthWeights {
            errors: 0.3,
            latency: 0.2,
            work: 0.2,
            conflicts: 0.1,
            liveness: 0.1,
            alerts: 0.1,
        }
    }
}

impl HealthWeights {
    fn as_array(&self) -> [f64; 6] {
        [
            self.errors,
            self.latency,
            self.work,
            self.conflicts,
            self.liveness,
            self.alerts,
        ]
    }
}

/// `[processors.health]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often scores (and anomaly detectors and alert rules) are evaluated.
    pub interval_seconds: u64,
    /// The span of history a score covers.
    pub window_seconds: u64,
    /// How long after an interval ends it is evaluated, for data still in flight: an
    /// SDK's batch processor exports every 5 s by default, so a call that ends just
    /// before an interval's end reaches the collector up to 5 s later.
    pub grace_ms: u64,
    /// Apdex's T: a call within it is satisfied, within 4T tolerated.
    pub latency_target_ms: u64,
    /// An agent not seen for this long is forgotten: it no longer places a holder of
    /// work in the scope of a service it was seen in.
    pub liveness_horizon_seconds: u64,
    /// Services and teams followed (each kind); beyond, new ones are not scored.
    pub max_scopes: usize,
    pub max_agents: usize,
    pub weights: HealthWeights,
    /// Agents each team expects to hear from, by team: silent since the window's start,
    /// they count against liveness as a silent holder of work does.
    pub expected_agents: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_seconds: 10,
            window_seconds: 300,
            grace_ms: 6_000,
            latency_target_ms: 1_000,
            liveness_horizon_seconds: 900,
            max_scopes: 1_000,
            max_agents: 100_000,
            weights: HealthWeights::default(),
            expected_agents: Default::default(),
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let key = |k: &str| format!("processors.health.{k}");
        for (k, v) in [
            ("interval_seconds", self.interval_seconds),
            ("window_seconds", self.window_seconds),
            ("latency_target_ms", self.latency_target_ms),
            ("liveness_horizon_seconds", self.liveness_horizon_seconds),
        ] {
            positive(key(k), v)?;
        }
        if !self.window_seconds.is_multiple_of(self.interval_seconds) {
            return Err(ConfigError::invalid(
                key("window_seconds"),
                format!(
                    "a multiple of {} ({})",
                    key("interval_seconds"),
                    self.interval_seconds
                ),
                self.window_seconds,
            ));
        }
        for (name, w) in COMPONENTS.iter().zip(self.weights.as_array()) {
            if !(w.is_finite() && w >= 0.0) {
                return Err(ConfigError::invalid(
                    key(&format!("weights.{name}")),
                    ">= 0",
                    w,
                ));
            }
        }
        if self.weights.as_array().iter().sum::<f64>() <= 0.0 {
            return Err(ConfigError::rule(key("weights"), "must not all be 0"));
        }
        Ok(())
    }

    pub fn signals(&self) -> super::signals::SignalsConfig {
        let s = |v: u64| {
            i64::try_from(v)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000)
        };
        super::signals::SignalsConfig {
            interval_ns: s(self.interval_seconds),
            window_ns: s(self.window_seconds),
            grace_ns: i64::try_from(self.grace_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            latency_target_ns: i64::try_from(self.latency_target_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            liveness_horizon_ns: s(self.liveness_horizon_seconds),
            max_scopes: self.max_scopes,
            max_agents: self.max_agents,
        }
    }
}

/// One scope's score with everything it was computed from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthScore {
    pub scope: &'static str,
    pub name: String,
    pub score: f64,
    /// By [`COMPONENTS`]; None where there was no data.
    pub components: [Option<f64>; 6],
    pub inputs: [u64; 12],
    pub window_start: i64,
    pub window_end: i64,
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part.min(whole) as f64 / whole as f64)
}

/// The score of one scope, or None when no component has data.
pub fn score(
    config: &HealthConfig,
    s: &ScopeSignals,
    alerts_firing: u64,
    window: (i64, i64),
) -> Option<HealthScore> {
    let w = &s.window;
    let apdex_points = 2 * w.satisfied + w.tolerating;
    let mut components = [
        share(w.calls - w.errors.min(w.calls), w.calls),
        share(apdex_points, 2 * w.calls),
        share(w.completed, w.completed + w.failed),
        share(w.claims - w.conflicts.min(w.claims), w.claims),
        share(s.agents_live, s.agents_known),
        None,
    ];
    if components.iter().any(Option::is_some) {
        components[5] = Some((100.0 - 50.0 * alerts_firing as f64).max(0.0));
    }
    let weights = config.weights.as_array();
    let (sum, total) = components
        .iter()
        .zip(weights)
        .filter_map(|(c, w)| c.map(|c| (c * w, w)))
        .fold((0.0, 0.0), |(s, t), (cw, w)| (s + cw, t + w));
    if total <= 0.0 {
        return None;
    }
    Some(HealthScore {
        scope: s.kind.name(),
        name: match s.kind {
            ScopeKind::Overall => "overall".into(),
            _ => s.name.clone(),
        },
        score: (sum / total).clamp(0.0, 100.0),
        components,
        inputs: [
            w.calls,
            w.errors,
            w.satisfied,
            w.tolerating,
            w.claims,
            w.conflicts,
            w.completed,
            w.failed,
            s.agents_live,
            s.agents_known,
            alerts_firing,
            config.latency_target_ms,
        ],
        window_start: window.0,
        window_end: window.1,
    })
}

impl HealthScore {
    /// The breakdown as `GET /api/v1/health` returns it.
    pub fn to_json(&self) -> serde_json::Value {
        let components: serde_json::Map<String, serde_json::Value> = COMPONENTS
            .iter()
            .zip(&self.components)
            .filter_map(|(name, c)| c.map(|c| ((*name).to_owned(), serde_json::json!(c))))
            .collect();
        let inputs: serde_json::Map<String, serde_json::Value> = INPUTS
            .iter()
            .zip(&self.inputs)
            .map(|(name, v)| ((*name).to_owned(), serde_json::json!(v)))
            .collect();
        serde_json::json!({
            "scope": self.scope,
            "name": self.name,
            "score": self.score,
            "components": components,
            "inputs": inputs,
        })
    }
}

/// `health` rows for `scores`, evaluated at `time`.
pub fn health_rows(time: i64, scores: &[HealthScore]) -> Result<RecordBatch> {
    let n = scores.len();
    let ts = || TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let (mut t, mut start, mut end) = (ts(), ts(), ts());
    let (mut scope, mut name) = (StringBuilder::new(), StringBuilder::new());
    let mut total = Float64Builder::with_capacity(n);
    let mut components: Vec<Float64Builder> = (0..COMPONENTS.len())
        .map(|_| Float64Builder::new())
        .collect();
    let mut inputs: Vec<UInt64Builder> = (0..INPUTS.len()).map(|_| UInt64Builder::new()).collect();
    for s in scores {
        t.append_value(time);
        scope.append_value(s.scope);
        name.append_value(&s.name);
        total.append_value(s.score);
        for (b, c) in components.iter_mut().zip(&s.components) {
            b.append_option(*c);
        }
        for (b, v) in inputs.iter_mut().zip(&s.inputs) {
            b.append_value(*v);
        }
        start.append_value(s.window_start);
        end.append_value(s.window_end);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(t.finish()),
        Arc::new(scope.finish()),
        Arc::new(name.finish()),
        Arc::new(total.finish()),
    ];
    columns.extend(
        components
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef),
    );
    columns.extend(inputs.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(start.finish()));
    columns.push(Arc::new(end.finish()));
    Ok(RecordBatch::try_new(HEALTH.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::signals::Counts;
    use proptest::prelude::*;

    fn signals(window: Counts, live: u64, known: u64) -> ScopeSignals {
        ScopeSignals {
            kind: ScopeKind::Service,
            name: "api".into(),
            window,
            last: Counts::default(),
            last_p95_ms: None,
            agents_live: live,
            agents_known: known,
        }
    }

    #[test]
    fn components_without_data_are_left_out_not_perfect() {
        let config = HealthConfig::default();
        let s = signals(
            Counts {
                calls: 100,
                errors: 50,
                satisfied: 100,
                ..Counts::default()
            },
            0,
            0,
        );
        let h = score(&config, &s, 0, (0, 1)).unwrap();
        assert_eq!(
            h.components,
            [Some(50.0), Some(100.0), None, None, None, Some(100.0)]
        );
        // (0.3 × 50 + 0.2 × 100 + 0.1 × 100) / 0.6
        assert!((h.score - 45.0 / 0.6).abs() < 1e-9, "{}", h.score);
        assert_eq!(
            score(&config, &signals(Counts::default(), 0, 0), 3, (0, 1)),
            None
        );
    }

    #[test]
    fn more_errors_lower_the_score() {
        let config = HealthConfig::default();
        let at = |errors| {
            let s = signals(
                Counts {
                    calls: 100,
                    errors,
                    satisfied: 100,
                    ..Counts::default()
                },
                1,
                1,
            );
            score(&config, &s, 0, (0, 1)).unwrap().score
        };
        assert!(at(0) > at(10) && at(10) > at(60) && at(60) > at(100));
        assert_eq!(at(0), 100.0);
    }

    proptest! {
        #[test]
        fn scores_stay_within_0_and_100(
            counts in prop::array::uniform8(0u64..1_000_000),
            live in 0u64..1000,
            known in 0u64..1000,
            alerts in 0u64..10,
            weights in prop::array::uniform6(0.0f64..10.0),
        ) {
            let [calls, errors, satisfied, tolerating, claims, conflicts, completed, failed] = counts;
            let config = HealthConfig {
                weights: HealthWeights {
                    errors: weights[0],
                    latency: weights[1],
                    work: weights[2],
                    conflicts: weights[3],
                    liveness: weights[4],
                    alerts: weights[5],
                },
                ..HealthConfig::default()
            };
            let s = signals(
                Counts { calls, errors, satisfied, tolerating, claims, conflicts, completed, failed },
                live,
                known,
            );
            if let Some(h) = score(&config, &s, alerts, (0, 1)) {
                prop_assert!((0.0..=100.0).contains(&h.score), "{}", h.score);
                for c in h.components.iter().flatten() {
                    prop_assert!((0.0..=100.0).contains(c), "{c}");
                }
            }
        }
    }
}
