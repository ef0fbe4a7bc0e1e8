//! Received OTLP metrics as Prometheus series, for `/metrics` and remote write.
//!
//! [`Translator`] observes every stored `metrics` batch (off the acknowledgement path)
//! and keeps the latest point of each series, as the OpenTelemetry Collector's
//! `prometheus` exporter does:
//! - names and labels by [`super::names`]; `job` from `service.namespace`/`service.name`,
//!   `instance` from `service.instance.id`, the other resource attributes once per
//!   resource in `target_info`; `otel_scope_name`/`otel_scope_version` labels;
//! - monotonic sums are counters, other sums and gauges are gauges, histograms keep
//!   their buckets, summaries their quantiles; delta sums and histograms are added up
//!   into cumulative ones;
//! - a series not updated for `metric_expiration` leaves the exposition, and at most
//!   `max_series` are kept; points of exponential histograms (which the text format
//!   cannot carry), of series past the cap, or whose name another kind of metric holds
//!   are dropped and counted in `swarmscope_prometheus_dropped_points_total{reason}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::columns::{booleans, primitives, string_at, strings, timestamps, MapColumn};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary,
};
use prometheus::IntCounterVec;

use super::names::{label_name, metric_name};
use super::PrometheusConfig;

/// Label names and values, sorted by name: a series' identity within its family.
type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Number(f64),
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

struct Point {
    value: Value,
    /// The point's own time, to keep the latest of points arriving out of order.
    time: i64,
    /// When it arrived, for expiry.
    seen: Instant,
}

struct Family {
    kind: MetricType,
    help: String,
    series: HashMap<Labels, Point>,
}

#[derive(Default)]
struct State {
    families: BTreeMap<String, Family>,
    /// `target_info` series, by their labels.
    targets: HashMap<Labels, Instant>,
    series: usize,
}

/// See the module documentation.
pub struct Translator {
    expiration: Duration,
    max_series: usize,
    resource_labels: bool,
    state: Mutex<State>,
    dropped: IntCounterVec,
}

/// One data point read out of a `metrics` row.
struct Row<'a> {
    family: String,
    kind: MetricType,
    help: std::borrow::Cow<'a, str>,
    labels: Labels,
    delta: bool,
    time: i64,
    value: Value,
}

impl Translator {
    pub fn new(config: &PrometheusConfig) -> Translator {
        Translator {
            expiration: config.expiration(),
            max_series: config.max_series,
            resource_labels: config.resource_to_telemetry_conversion,
            state: Mutex::default(),
            dropped: IntCounterVec::new(
                prometheus::Opts::new(
                    "swarmscope_prometheus_dropped_points_total",
                    "Received OTLP metric points not exposed to Prometheus, by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| unreachable!("metric options are constant: {e}")),
        }
    }

    /// The counter of dropped points, to register beside the translator.
    pub fn dropped(&self) -> IntCounterVec {
        self.dropped.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves whole points behind: usable as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in the points of a `metrics` batch.
    pub fn translate(&self, batch: &RecordBatch) -> crate::Result<()> {
        let rows = self.rows(batch)?;
        let now = Instant::now();
        let mut state = self.state();
        for target in rows.targets {
            state.targets.insert(target, now);
        }
        for row in rows.points {
            self.merge(&mut state, row, now);
        }
        Ok(())
    }

    fn merge(&self, state: &mut State, row: Row<'_>, now: Instant) {
        let full = state.series >= self.max_series;
        let family = state.families.entry(row.family).or_insert_with(|| Family {
            kind: row.kind,
            help: row.help.into_owned(),
            series: HashMap::new(),
        });
        if family.kind != row.kind {
            self.dropped.with_label_values(&["type_conflict"]).inc();
            return;
        }
        match family.series.get_mut(&row.labels) {
            Some(point) => {
                if row.delta {
                    point.value = accumulate(&point.value, row.value);
                } else if row.time >= point.time {
                    point.value = row.value;
                } else {
                    // An older point arriving late: the newer one stands.
                    return;
                }
                point.time = point.time.max(row.time);
                point.seen = now;
            }
            None if full => {
                self.dropped.with_label_values(&["max_series"]).inc();
            }
            None => {
                family.series.insert(
                    row.labels,
                    Point {
                        value: row.value,
                        time: row.time,
                        seen: now,
                    },
                );
                state.series += 1;
            }
        }
    }

    fn rows<'a>(&self, batch: &'a RecordBatch) -> crate::Result<Rows<'a>> {
        let c = MetricColumns::of(batch)?;
        let mut out = Rows::default();
        let mut last_target: Option<Labels> = None;
        for row in 0..batch.num_rows() {
            let (family_kind, value) = match c.point(row) {
                Ok(Some(point)) => point,
                Ok(None) => continue,
                Err(kind) => {
                    self.dropped.with_label_values(&[kind]).inc();
                    continue;
                }
            };
            let kind = c.types.value(row);
            let family = metric_name(
                c.names.value(row),
                c.units.value(row),
                family_kind == MetricType::COUNTER,
                kind == "gauge",
            );
            if family.is_empty() {
                self.dropped.with_label_values(&["invalid_name"]).inc();
                continue;
            }
            let mut labels = c.labels(row, self.resource_labels);
            let target = target_labels(&c.resource, row);
            for (k, v) in target.iter().filter(|(k, _)| k == "job" || k == "instance") {
                labels.insert(k.clone(), v.clone());
            }
            if last_target.as_ref() != Some(&target) {
                out.targets.push(target.clone());
                last_target = Some(target);
            }
            // Label names the text format reserves for the kind's own series.
            let reserved = match family_kind {
                MetricType::HISTOGRAM => Some("le"),
                MetricType::SUMMARY => Some("quantile"),
                _ => None,
            };
            if let Some(r) = reserved {
                labels.remove(r);
            }
            out.points.push(Row {
                family,
                kind: family_kind,
                // promtool wants help text; a metric without a description has its
                // OTLP name.
                help: match c.help.value(row) {
                    "" => format!("OTLP metric {}", c.names.value(row)).into(),
                    described => described.into(),
                },
                labels: labels.into_iter().collect(),
                delta: string_at(c.temporality, row) == Some("DELTA"),
                time: c.times.value(row),
                value,
            });
        }
        Ok(out)
    }

    /// The translated families, after expiring the series not updated in time.
    pub fn families(&self) -> Vec<MetricFamily> {
        let now = Instant::now();
        let mut state = self.state();
        let expiration = self.expiration;
        let fresh = |seen: &Instant| now.duration_since(*seen) < expiration;
        let mut removed = 0;
        state.families.retain(|_, family| {
            let before = family.series.len();
            family.series.retain(|_, p| fresh(&p.seen));
            removed += before - family.series.len();
            !family.series.is_empty()
        });
        state.series -= removed;
        state.targets.retain(|_, seen| fresh(seen));

        let mut out: Vec<MetricFamily> = state
            .families
            .iter()
            .map(|(name, family)| {
                let mut mf = MetricFamily::default();
                mf.set_name(name.clone());
                mf.set_help(family.help.clone());
                mf.set_field_type(family.kind);
                for (labels, point) in &family.series {
                    mf.mut_metric()
                        .push(metric(labels, &point.value, family.kind));
                }
                mf
            })
            .collect();
        if !state.targets.is_empty() {
            let mut mf = MetricFamily::default();
            mf.set_name("target_info".into());
            mf.set_help("Target metadata".into());
            mf.set_field_type(MetricType::GAUGE);
            for labels in state.targets.keys() {
                mf.mut_metric()
                    .push(metric(labels, &Value::Number(1.0), MetricType::GAUGE));
            }
            out.push(mf);
        }
        out
    }
}

#[derive(Default)]
struct Rows<'a> {
    points: Vec<Row<'a>>,
    targets: Vec<Labels>,
}

/// `job` and `instance` of a resource, with its other attributes: `target_info`'s
/// labels.
fn target_labels(resource: &MapColumn<'_>, row: usize) -> Labels {
    let mut labels = BTreeMap::new();
    let (mut name, mut namespace) = (None, None);
    resource.scan(row, |k, v| match k {
        "service.name" => name = Some(v),
        "service.namespace" => namespace = Some(v),
        "service.instance.id" => {
            labels.insert("instance".to_owned(), v.to_owned());
        }
        _ => {
            labels.insert(label_name(k), v.to_owned());
        }
    });
    let job = match (namespace, name) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        _ => None,
    };
    if let Some(job) = job {
        labels.insert("job".to_owned(), job);
    }
    labels.into_iter().collect()
}

/// `previous` plus the delta `next`; a histogram whose bounds changed starts afresh.
fn accumulate(previous: &Value, next: Value) -> Value {
    match (previous, next) {
        (Value::Number(a), Value::Number(b)) => Value::Number(a + b),
        (
            Value::Histogram {
                bounds,
                counts,
                sum,
                count,
            },
            Value::Histogram {
                bounds: b2,
                counts: c2,
                sum: s2,
                count: n2,
            },
        ) if *bounds == b2 && counts.len() == c2.len() => Value::Histogram {
            bounds: b2,
            counts: counts.iter().zip(&c2).map(|(a, b)| a + b).collect(),
            sum: sum + s2,
            count: count + n2,
        },
        (_, next) => next,
    }
}

fn metric(labels: &Labels, value: &Value, kind: MetricType) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name(k.clone());
                pair.set_value(v.clone());
                pair
            })
            .collect(),
    );
    match value {
        Value::Number(v) if kind == MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(*v);
            m.set_counter(c);
        }
        Value::Number(v) => {
            let mut g = Gauge::default();
            g.set_value(*v);
            m.set_gauge(g);
        }
        Value::Histogram {
            bounds,
            counts,
            sum,
            count,
        } => {
            let mut h = Histogram::default();
            let mut cumulative = 0;
            h.set_bucket(
                bounds
                    .iter()
                    .zip(counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect(),
            );
            h.set_sample_sum(*sum);
            h.set_sample_count(*count);
            m.set_histogram(h);
        }
        Value::Summary {
            quantiles,
            sum,
            count,
        } => {
            let mut s = Summary::default();
            s.set_quantile(
                quantiles
                    .iter()
                    .map(|(q, v)| {
                        let mut quantile = Quantile::default();
                        quantile.set_quantile(*q);
                        quantile.set_value(*v);
                        quantile
                    })
                    .collect(),
            );
            s.set_sample_sum(*sum);
            s.set_sample_count(*count);
            m.set_summary(s);
        }
    }
    m
}

impl Processor for Translator {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn observes(&self, table: Table) -> bool {
        table == Table::METRICS
    }

    fn observe(&self, input: &TableBatch) {
        if input.table != Table::METRICS {
            return;
        }
        if let Err(e) = self.translate(&input.batch) {
            // Only a batch of another schema fails here (a bug): counted, and loud in
            // debug builds, as the analytics' observers are.
            self.dropped.with_label_values(&["unreadable"]).inc();
            debug_assert!(
                false,
                "cannot translate a metrics batch for Prometheus: {e}"
            );
        }
    }
}

/// The translated series on `/metrics`. The names are the senders', known only once
/// points arrive, so the collector describes none up front.
pub struct TranslatorCollector(pub std::sync::Arc<Translator>);

impl Collector for TranslatorCollector {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.families()
    }
}

/// The columns of a `metrics` batch the translation reads.
struct MetricColumns<'a> {
    resource: MapColumn<'a>,
    attributes: MapColumn<'a>,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    names: &'a StringArray,
    types: &'a StringArray,
    units: &'a StringArray,
    help: &'a StringArray,
    value: &'a arrow::array::Float64Array,
    value_int: &'a arrow::array::Int64Array,
    monotonic: &'a arrow::array::BooleanArray,
    temporality: &'a StringArray,
    count: &'a arrow::array::UInt64Array,
    sum: &'a arrow::array::Float64Array,
    times: &'a arrow::array::TimestampNanosecondArray,
    buckets: &'a arrow::array::ListArray,
    bounds: &'a arrow::array::ListArray,
    quantiles: &'a arrow::array::ListArray,
}

impl<'a> MetricColumns<'a> {
    fn of(batch: &'a RecordBatch) -> crate::Result<MetricColumns<'a>> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| crate::Error::Schema(format!("no column {name}")))
        };
        Ok(MetricColumns {
            resource: MapColumn::of(batch, "resource_attributes")?,
            attributes: MapColumn::of(batch, "attributes")?,
            scope_name: strings(batch, "scope_name")?,
            scope_version: strings(batch, "scope_version")?,
            names: strings(batch, "metric_name")?,
            types: strings(batch, "metric_type")?,
            units: strings(batch, "unit")?,
            help: strings(batch, "description")?,
            value: primitives::<Float64Type>(batch, "value")?,
            value_int: primitives::<Int64Type>(batch, "value_int")?,
            monotonic: booleans(batch, "is_monotonic")?,
            temporality: strings(batch, "aggregation_temporality")?,
            count: primitives::<UInt64Type>(batch, "count")?,
            sum: primitives::<Float64Type>(batch, "sum")?,
            times: timestamps(batch, "time")?,
            buckets: column("bucket_counts")?.as_list::<i32>(),
            bounds: column("explicit_bounds")?.as_list::<i32>(),
            quantiles: column("quantiles")?.as_list::<i32>(),
        })
    }

    /// Row `row`'s kind on `/metrics` and its value: `Ok(None)` for a number point
    /// without a number, `Err(kind)` for a kind the text format has no place for.
    fn point(&self, row: usize) -> Result<Option<(MetricType, Value)>, &'a str> {
        let kind = self.types.value(row);
        Ok(Some(match kind {
            "gauge" | "sum" => {
                let number = if self.value.is_valid(row) {
                    self.value.value(row)
                } else if self.value_int.is_valid(row) {
                    self.value_int.value(row) as f64
                } else {
                    return Ok(None);
                };
                let monotonic = self.monotonic.is_valid(row) && self.monotonic.value(row);
                let kind = if kind == "sum" && monotonic {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                };
                (kind, Value::Number(number))
            }
            "histogram" => (MetricType::HISTOGRAM, self.histogram(row)),
            "summary" => (MetricType::SUMMARY, self.summary(row)),
            _ => return Err(kind),
        }))
    }

    fn total(&self, row: usize) -> f64 {
        if self.sum.is_valid(row) {
            self.sum.value(row)
        } else {
            0.0
        }
    }

    fn histogram(&self, row: usize) -> Value {
        let list = |l: &arrow::array::ListArray| l.is_valid(row).then(|| l.value(row));
        let mut counts: Vec<u64> = list(self.buckets)
            .map(|c| c.as_primitive::<UInt64Type>().values().to_vec())
            .unwrap_or_default();
        let mut bounds: Vec<f64> = list(self.bounds)
            .map(|b| b.as_primitive::<Float64Type>().values().to_vec())
            .unwrap_or_default();
        if counts.len() != bounds.len() + 1 {
            // Without (consistent) buckets, everything is in +Inf.
            bounds.clear();
            counts = vec![self.count.value(row)];
        }
        Value::Histogram {
            counts,
            bounds,
            sum: self.total(row),
            count: self.count.value(row),
        }
    }

    fn summary(&self, row: usize) -> Value {
        let mut pairs = Vec::new();
        if self.quantiles.is_valid(row) {
            let list = self.quantiles.value(row);
            let list = list.as_struct();
            let q = list.column(0).as_primitive::<Float64Type>();
            let v = list.column(1).as_primitive::<Float64Type>();
            pairs = q
                .values()
                .iter()
                .copied()
                .zip(v.values().iter().copied())
                .collect();
        }
        Value::Summary {
            quantiles: pairs,
            sum: self.total(row),
            count: self.count.value(row),
        }
    }

    /// Row `row`'s labels: its attributes (and its resource's, with
    /// `resource_labels`), and its scope's name and version.
    fn labels(&self, row: usize, resource_labels: bool) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut add = |key: &str, value: &str| {
            labels
                .entry(label_name(key))
                .and_modify(|v: &mut String| {
                    // Two keys sanitised alike: both values, as the Collector does.
                    v.push(';');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        };
        self.attributes.scan(row, &mut add);
        if resource_labels {
            self.resource.scan(row, &mut add);
        }
        let scope = self.scope_name.value(row);
        if !scope.is_empty() {
            labels.insert("otel_scope_name".into(), scope.to_owned());
            let version = self.scope_version.value(row);
            if !version.is_empty() {
                labels.insert("otel_scope_version".into(), version.to_owned());
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::metrics_from_otlp;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Histogram as OtlpHistogram, HistogramDataPoint,
        Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn number(time: u64, value: number_data_point::Value, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: 1,
            time_unix_nano: time,
            value: Some(value),
            ..Default::default()
        }
    }

    fn metric(name: &str, unit: &str, data: Data) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            description: format!("{name} described"),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn batch(metrics: Vec<OtlpMetric>) -> RecordBatch {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "planner"),
                        kv("service.namespace", "swarm"),
                        kv("service.instance.id", "planner-1"),
                        kv("host.name", "node-7"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "agents".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        metrics_from_otlp(&request).unwrap().batch
    }

    fn text(t: &Translator) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&t.families())
            .unwrap()
    }

    fn sum(delta: bool, points: Vec<NumberDataPoint>) -> Data {
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: if delta {
                AggregationTemporality::Delta
            } else {
                AggregationTemporality::Cumulative
            } as i32,
            is_monotonic: true,
        })
    }

    #[test]
    fn counters_gauges_and_histograms_are_named_labelled_and_kept_latest() {
        use number_data_point::Value::{AsDouble, AsInt};
        let t = Translator::new(&PrometheusConfig::default());
        let tasks = |time, n| {
            metric(
                "agent.tasks",
                "{task}",
                sum(
                    false,
                    vec![number(time, AsInt(n), vec![kv("agent.role", "coder")])],
                ),
            )
        };
        let histogram = metric(
            "tool.call.duration",
            "s",
            Data::Histogram(OtlpHistogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kv("le", "spoofed"), kv("tool", "grep")],
                    time_unix_nano: 10,
                    count: 6,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 3, 2],
                    explicit_bounds: vec![0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        );
        let gauge = metric(
            "queue.utilization",
            "1",
            Data::Gauge(Gauge {
                data_points: vec![number(10, AsDouble(0.25), vec![])],
            }),
        );
        t.translate(&batch(vec![tasks(20, 7), histogram, gauge]))
            .unwrap();
        // A cumulative point older than the stored one does not replace it.
        t.translate(&batch(vec![tasks(15, 5)])).unwrap();
        let out = text(&t);
        let labels = "job=\"swarm/planner\",otel_scope_name=\"agents\",otel_scope_version=\"1.2\"";
        for line in [
            "# TYPE agent_tasks_total counter".to_owned(),
            format!("agent_tasks_total{{agent_role=\"coder\",instance=\"planner-1\",{labels}}} 7"),
            "# HELP tool_call_duration_seconds tool.call.duration described".to_owned(),
            format!("tool_call_duration_seconds_bucket{{instance=\"planner-1\",{labels},tool=\"grep\",le=\"0.5\"}} 1"),
            format!("tool_call_duration_seconds_bucket{{instance=\"planner-1\",{labels},tool=\"grep\",le=\"1\"}} 4"),
            format!("tool_call_duration_seconds_bucket{{instance=\"planner-1\",{labels},tool=\"grep\",le=\"+Inf\"}} 6"),
            format!("tool_call_duration_seconds_sum{{instance=\"planner-1\",{labels},tool=\"grep\"}} 4.5"),
            "# TYPE queue_utilization_ratio gauge".to_owned(),
            format!("queue_utilization_ratio{{instance=\"planner-1\",{labels}}} 0.25"),
            "target_info{host_name=\"node-7\",instance=\"planner-1\",job=\"swarm/planner\"} 1".to_owned(),
        ] {
            assert!(out.contains(&line), "{line}\nnot in\n{out}");
        }
        assert!(!out.contains("spoofed"), "{out}");
    }

    #[test]
    fn delta_sums_are_added_up_and_odd_points_dropped_and_counted() {
        use number_data_point::Value::AsInt;
        let t = Translator::new(&PrometheusConfig {
            max_series: 2,
            ..PrometheusConfig::default()
        });
        let tokens = |n, model| {
            metric(
                "gen_ai.client.token.usage",
                "{token}",
                sum(true, vec![number(5, AsInt(n), vec![kv("model", model)])]),
            )
        };
        t.translate(&batch(vec![tokens(10, "a")])).unwrap();
        t.translate(&batch(vec![tokens(32, "a"), tokens(1, "b")]))
            .unwrap();
        // A third series is past the cap; an exponential histogram has no text form;
        // a gauge cannot share the counter's name.
        let exponential = metric(
            "latency",
            "ms",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: 5,
                    count: 1,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        );
        let clash = metric(
            "gen_ai.client.token.usage.total",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(5, AsInt(1), vec![])],
            }),
        );
        t.translate(&batch(vec![tokens(1, "c"), exponential, clash]))
            .unwrap();
        let out = text(&t);
        assert!(out.contains("gen_ai_client_token_usage_total{instance=\"planner-1\",job=\"swarm/planner\",model=\"a\",otel_scope_name=\"agents\",otel_scope_version=\"1.2\"} 42"), "{out}");
        assert!(out.contains("model=\"b\""), "{out}");
        assert!(!out.contains("model=\"c\""), "{out}");
        let dropped = |reason: &str| t.dropped().with_label_values(&[reason]).get();
        assert_eq!(dropped("max_series"), 1);
        assert_eq!(dropped("exponential_histogram"), 1);
        assert_eq!(dropped("type_conflict"), 1);
    }

    #[test]
    fn series_not_updated_within_the_expiration_leave() {
        use number_data_point::Value::AsInt;
        let t = Translator::new(&PrometheusConfig {
            metric_expiration: "1ms".into(),
            ..PrometheusConfig::default()
        });
        t.translate(&batch(vec![metric(
            "agent.tasks",
            "",
            sum(false, vec![number(5, AsInt(3), vec![])]),
        )]))
        .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        assert!(t.families().is_empty());
        assert_eq!(t.state().series, 0);
    }
}
