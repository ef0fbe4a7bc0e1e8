//! Alerts: threshold rules from `[[alerts.rules]]`, and the lifecycle every alert
//! goes through, whichever detector raised it.
//!
//! An alert is identified by its labels (`alertname`, `severity`, the scope's label
//! such as `service`, and the rule's own), hashed into a fingerprint exactly as
//! Alertmanager does (FNV-1a over the sorted names and values), so one condition is one
//! alert however often it is evaluated. [`AlertBook`] holds the firing ones; each
//! evaluation tells it which conditions hold, and it answers with the transitions:
//! `firing` when an alert starts, `resolved` (with `ends_at`) when it stops. Those
//! transitions are the `alerts` table's rows and what webhooks are sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, Float64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::columns::{primitives, string_at, strings, timestamps, MapColumn};
use crate::durations::parse_duration;
use crate::schema::{map_type, timestamp_type, Table, TableDef};
use crate::Result;

pub const ALERTS: Table = Table::declare(&TableDef {
    name: "alerts",
    code: 7,
    time_column: "time",
    fallback_time_column: None,
    exact_nanos: &[],
    cluster_column: None,
    schema: || SCHEMA.clone(),
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("alert_name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("labels", map_type(), false),
        Field::new("annotations", map_type(), false),
        Field::new("starts_at", timestamp_type(), false),
        Field::new("ends_at", timestamp_type(), true),
        Field::new("value", DataType::Float64, true),
        Field::new("baseline", DataType::Float64, true),
        Field::new("detector", DataType::Utf8, false),
    ]))
});

/// The metrics a rule can watch, per scope, as an evaluation computes them.
pub const RULE_METRICS: [&str; 8] = [
    "health_score",
    "request_rate",
    "error_rate",
    "latency_p95_ms",
    "conflict_rate",
    "work_success_rate",
    "completed_items",
    "agents_live",
];

/// One `[[alerts.rules]]` entry: fire when `metric` of a matching scope compares to
/// `threshold` by `op` for `for`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The `alertname` label.
    pub name: String,
    /// One of [`RULE_METRICS`].
    pub metric: String,
    /// `overall`, `service` or `team`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Only the scope of this name (a service or team), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_name: Option<String>,
    /// `<`, `<=`, `>`, `>=`.
    pub op: String,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires: `30s`, `2m`, `1h`.
    #[serde(default = "default_for", rename = "for")]
    pub for_: String,
    #[serde(default = "default_severity")]
    pub severity: String,
    /// The `summary` annotation; `{value}` and `{scope}` are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// More labels for the alert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_scope() -> String {
    "overall".into()
}

fn default_for() -> String {
    "0s".into()
}

fn default_severity() -> String {
    "warning".into()
}

impl AlertRule {
    pub fn validate(&self, i: usize) -> std::result::Result<(), crate::ConfigError> {
        use crate::ConfigError;
        let key = |k: &str| format!("alerts.rules[{i}].{k}");
        let quoted = |v: &str| format!("{v:?}");
        if self.name.is_empty() {
            return Err(ConfigError::empty(key("name")));
        }
        if !RULE_METRICS.contains(&self.metric.as_str()) {
            let expected = format!("one of {}", RULE_METRICS.join(", "));
            return Err(ConfigError::invalid(
                key("metric"),
                expected,
                quoted(&self.metric),
            ));
        }
        if !["overall", "service", "team"].contains(&self.scope.as_str()) {
            return Err(ConfigError::invalid(
                key("scope"),
                "overall, service or team",
                quoted(&self.scope),
            ));
        }
        if !["<", "<=", ">", ">="].contains(&self.op.as_str()) {
            return Err(ConfigError::invalid(
                key("op"),
                "<, <=, > or >=",
                quoted(&self.op),
            ));
        }
        if !self.threshold.is_finite() {
            return Err(ConfigError::invalid(
                key("threshold"),
                "a finite number",
                self.threshold,
            ));
        }
        if parse_duration(&self.for_).is_none() {
            return Err(ConfigError::invalid(
                key("for"),
                "a duration such as 30s, 2m or 1h",
                quoted(&self.for_),
            ));
        }
        Ok(())
    }

    pub fn holds(&self, value: f64) -> bool {
        match self.op.as_str() {
            "<" => value < self.threshold,
            "<=" => value <= self.threshold,
            ">" => value > self.threshold,
            _ => value >= self.threshold,
        }
    }

    pub fn for_ns(&self) -> i64 {
        parse_duration(&self.for_)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over the names and values in
/// name order, each followed by the byte 255, as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        eat(name.as_bytes());
        eat(&[255]);
        eat(value.as_bytes());
        eat(&[255]);
    }
    format!("{h:016x}")
}

/// A condition that holds now, as a detector or rule reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// `ewma_mad` or `threshold`.
    pub detector: String,
}

impl Condition {
    /// A condition with its `summary` and `description` annotations.
    pub fn new(
        labels: BTreeMap<String, String>,
        summary: String,
        description: String,
        value: f64,
        baseline: f64,
        detector: &str,
    ) -> Condition {
        Condition {
            labels,
            annotations: [
                ("summary".to_owned(), summary),
                ("description".to_owned(), description),
            ]
            .into(),
            value: Some(value),
            baseline: Some(baseline),
            detector: detector.to_owned(),
        }
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.labels)
    }
}

/// An alert as the book, the API and the webhooks see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub fingerprint: String,
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub detector: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    pub fn severity(&self) -> &str {
        self.labels.get("severity").map_or("", String::as_str)
    }
}

/// The firing alerts.
#[derive(Clone, Debug, Default)]
pub struct AlertBook {
    firing: HashMap<String, Alert>,
    /// On start: the alerts whose last stored transition is a resolution, so that a
    /// notification cut short by a stop can still be made.
    resolved: HashMap<String, Alert>,
}

impl AlertBook {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }

    /// Applies one evaluation at `now`: `holding` are the conditions that hold,
    /// `undecided` the fingerprints whose detectors cannot tell yet (warming up after a
    /// restart), which stay as they are. Returns the transitions.
    pub fn update(
        &mut self,
        now: i64,
        holding: Vec<Condition>,
        undecided: &HashSet<String>,
    ) -> Vec<Alert> {
        let mut transitions = Vec::new();
        let mut seen = HashSet::new();
        for c in holding {
            let fp = c.fingerprint();
            seen.insert(fp.clone());
            match self.firing.get_mut(&fp) {
                Some(alert) => {
                    alert.value = c.value;
                    alert.annotations = c.annotations;
                }
                None => {
                    let alert = Alert {
                        fingerprint: fp.clone(),
                        status: "firing".into(),
                        labels: c.labels,
                        annotations: c.annotations,
                        starts_at: now,
                        ends_at: None,
                        value: c.value,
                        baseline: c.baseline,
                        detector: c.detector,
                    };
                    transitions.push(alert.clone());
                    self.firing.insert(fp, alert);
                }
            }
        }
        let ended: Vec<String> = self
            .firing
            .keys()
            .filter(|fp| !seen.contains(*fp) && !undecided.contains(*fp))
            .cloned()
            .collect();
        for fp in ended {
            if let Some(mut alert) = self.firing.remove(&fp) {
                alert.status = "resolved".into();
                alert.ends_at = Some(now);
                transitions.push(alert);
            }
        }
        transitions.sort_by(|a, b| {
            (a.status.as_str(), &a.fingerprint).cmp(&(b.status.as_str(), &b.fingerprint))
        });
        transitions
    }

    /// Takes back the alerts stored as firing and not resolved since (on start).
    pub fn restore(&mut self, rows: &RecordBatch) -> Result<()> {
        for alert in alerts_from_rows(rows)? {
            if alert.status == "firing" {
                self.resolved.remove(&alert.fingerprint);
                self.firing.insert(alert.fingerprint.clone(), alert);
            } else {
                self.firing.remove(&alert.fingerprint);
                self.resolved.insert(alert.fingerprint.clone(), alert);
            }
        }
        Ok(())
    }

    /// The restored alerts that were resolved at or after `since` (nanoseconds): their
    /// resolution may not have reached every receiver before the stop.
    pub fn resolved_since(&self, since: i64) -> Vec<Alert> {
        let mut out: Vec<Alert> = self
            .resolved
            .values()
            .filter(|a| a.ends_at.is_some_and(|end| end >= since))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.ends_at, &a.fingerprint).cmp(&(b.ends_at, &b.fingerprint)));
        out
    }
}

/// The SQL that reads back the alerts that were firing at the last stop: every
/// transition in time order ([`AlertBook::restore`] keeps the last of each).
pub const RESTORE_SQL: &str = "SELECT * FROM alerts ORDER BY time";

/// `alerts` rows, one per transition, at `now`.
pub fn alert_rows(now: i64, alerts: &[Alert]) -> Result<RecordBatch> {
    let n = alerts.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut starts = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ends = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let (mut fp, mut name, mut status, mut severity, mut detector) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut labels = crate::convert::attribute_builder();
    let mut annotations = crate::convert::attribute_builder();
    let (mut value, mut baseline) = (Float64Builder::new(), Float64Builder::new());
    for a in alerts {
        time.append_value(now);
        fp.append_value(&a.fingerprint);
        name.append_value(a.name());
        status.append_value(&a.status);
        severity.append_value(a.severity());
        append_map(&mut labels, &a.labels)?;
        append_map(&mut annotations, &a.annotations)?;
        starts.append_value(a.starts_at);
        ends.append_option(a.ends_at);
        value.append_option(a.value);
        baseline.append_option(a.baseline);
        detector.append_value(&a.detector);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(fp.finish()),
        Arc::new(name.finish()),
        Arc::new(status.finish()),
        Arc::new(severity.finish()),
        Arc::new(labels.finish()),
        Arc::new(annotations.finish()),
        Arc::new(starts.finish()),
        Arc::new(ends.finish()),
        Arc::new(value.finish()),
        Arc::new(baseline.finish()),
        Arc::new(detector.finish()),
    ];
    Ok(RecordBatch::try_new(ALERTS.schema(), columns)?)
}

fn append_map(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    map: &BTreeMap<String, String>,
) -> Result<()> {
    for (k, v) in map {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true)?;
    Ok(())
}

/// The alerts of `alerts` rows (as stored, or as read back by SQL).
pub fn alerts_from_rows(rows: &RecordBatch) -> Result<Vec<Alert>> {
    let time = |name: &str| timestamps(rows, name);
    let (starts, ends) = (time("starts_at")?, time("ends_at")?);
    let (fp, status, detector) = (
        strings(rows, "fingerprint")?,
        strings(rows, "status")?,
        strings(rows, "detector")?,
    );
    let labels = MapColumn::of(rows, "labels")?;
    let annotations = MapColumn::of(rows, "annotations")?;
    let float = |name: &str| primitives::<arrow::datatypes::Float64Type>(rows, name);
    let (value, baseline) = (float("value")?, float("baseline")?);
    let opt = |a: &arrow::array::Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
    Ok((0..rows.num_rows())
        .map(|i| Alert {
            fingerprint: fp.value(i).to_owned(),
            status: status.value(i).to_owned(),
            labels: labels.entries(i),
            annotations: annotations.entries(i),
            starts_at: starts.value(i),
            ends_at: (!ends.is_null(i)).then(|| ends.value(i)),
            value: opt(value, i),
            baseline: opt(baseline, i),
            detector: string_at(detector, i).unwrap_or_default().to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn condition(service: &str) -> Condition {
        Condition {
            labels: labels(&[
                ("alertname", "HighErrors"),
                ("severity", "critical"),
                ("service", service),
            ]),
            annotations: labels(&[("summary", "errors")]),
            value: Some(0.5),
            baseline: Some(0.01),
            detector: "ewma_mad".into(),
        }
    }

    #[test]
    fn fingerprints_are_alertmanagers() {
        // Alertmanager's model.LabelSet{"alertname": "test"}.Fingerprint().
        assert_eq!(fingerprint(&labels(&[])), "cbf29ce484222325");
        let a = fingerprint(&labels(&[("a", "b"), ("c", "d")]));
        let b = fingerprint(&labels(&[("c", "d"), ("a", "b")]));
        assert_eq!(a, b);
        assert_ne!(a, fingerprint(&labels(&[("a", "b"), ("c", "e")])));
    }

    #[test]
    fn alerts_fire_once_and_resolve_once() {
        let mut book = AlertBook::default();
        let none = HashSet::new();
        let t = book.update(10, vec![condition("api")], &none);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].status.as_str(), t[0].starts_at), ("firing", 10));
        assert!(book.update(20, vec![condition("api")], &none).is_empty());
        // Undecided: kept.
        let undecided: HashSet<String> = [condition("api").fingerprint()].into();
        assert!(book.update(30, vec![], &undecided).is_empty());
        let t = book.update(40, vec![], &none);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].status.as_str(), t[0].starts_at, t[0].ends_at),
            ("resolved", 10, Some(40))
        );
        assert_eq!(book.firing().count(), 0);
    }

    #[test]
    fn rows_round_trip_and_restore_the_firing_ones() {
        let mut book = AlertBook::default();
        let none = HashSet::new();
        let mut all = book.update(10, vec![condition("api"), condition("db")], &none);
        all.extend(book.update(20, vec![condition("api")], &none));
        let rows = alert_rows(20, &all).unwrap();
        assert_eq!(rows.num_rows(), 3);
        let back = alerts_from_rows(&rows).unwrap();
        assert_eq!(back[0].labels, all[0].labels);
        let mut restored = AlertBook::default();
        restored.restore(&rows).unwrap();
        let firing: Vec<&str> = restored
            .firing()
            .map(|a| a.labels["service"].as_str())
            .collect();
        assert_eq!(firing, ["api"]);
        // db resolved at 20: a resolution since 15 is told again after a restart.
        let resolved: Vec<String> = restored
            .resolved_since(15)
            .iter()
            .map(|a| a.labels["service"].clone())
            .collect();
        assert_eq!(resolved, ["db"]);
        assert!(restored.resolved_since(21).is_empty());
    }

    #[test]
    fn durations_and_rules_are_checked() {
        let mut rule = AlertRule {
            name: "LowHealth".into(),
            metric: "health_score".into(),
            scope: "service".into(),
            scope_name: None,
            op: "<".into(),
            threshold: 70.0,
            for_: "2m".into(),
            severity: "warning".into(),
            summary: None,
            labels: BTreeMap::new(),
        };
        assert!(rule.validate(0).is_ok());
        assert!(rule.holds(69.0) && !rule.holds(70.0));
        assert_eq!(rule.for_ns(), 120_000_000_000);
        rule.metric = "happiness".into();
        let e = rule.validate(3).unwrap_err();
        assert_eq!(e.key(), "alerts.rules[3].metric", "{e}");
    }
}
