//! Histogram families for `/metrics` that the analytics fill batch by batch: a series
//! per set of label values, at most `max_series` of them. Beyond the cap, new label
//! sets are counted in one overflow series labelled `otel_metric_overflow="true"`, as
//! the OpenTelemetry Collector's connectors do, so totals stay right and memory stays
//! bounded whatever cardinality clients send.
//!
//! A batch is first aggregated by borrowed label values ([`Tally`]), then merged under
//! the family's lock once per distinct label set: rows cost a hash lookup, not an
//! allocation.
//!
//! A series not updated for [`DEFAULT_EXPIRY`] (15 minutes, as the connectors'
//! `metrics_expiration`) is dropped, so label values that churn (agent ids, models)
//! cost no memory once idle; Prometheus reads a series that comes back as a counter
//! reset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use crate::columns::Text;

/// Counts per bucket (`bounds.len() + 1`, the last one +Inf), sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    counts: Vec<u64>,
    sum: f64,
}

impl Buckets {
    pub fn new(bounds: usize) -> Buckets {
        Buckets {
            counts: vec![0; bounds + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        let i = bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
    }

    pub fn merge(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// `count` observations summing to `sum`, for a family without buckets.
    pub fn totals(count: u64, sum: f64) -> Buckets {
        Buckets {
            counts: vec![count],
            sum,
        }
    }

    /// Counts per bucket, the last one +Inf; not cumulative.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// One batch's observations, by borrowed label values.
pub struct Tally<'a, const N: usize> {
    bounds: &'a [f64],
    series: HashMap<[Text<'a>; N], Buckets, foldhash::fast::RandomState>,
}

impl<'a, const N: usize> Tally<'a, N> {
    /// Adds observations already counted into `buckets` (of the family's bounds).
    pub fn add(&mut self, labels: [&'a str; N], buckets: &Buckets) {
        let bounds = self.bounds;
        self.series
            .entry(labels.map(Text))
            .or_insert_with(|| Buckets::new(bounds.len()))
            .merge(buckets);
    }

    pub fn observe(&mut self, labels: [&'a str; N], value: f64) {
        let bounds = self.bounds;
        self.series
            .entry(labels.map(Text))
            .or_insert_with(|| Buckets::new(bounds.len()))
            .observe(bounds, value);
    }
}

/// A histogram family, with the `_total` counter of its observations optionally
/// exposed as a family of its own (spanmetrics' `calls_total`).
pub struct HistogramFamily<const N: usize> {
    name: &'static str,
    help: &'static str,
    calls: Option<(&'static str, &'static str)>,
    labels: [&'static str; N],
    bounds: Vec<f64>,
    max_series: usize,
    /// Series whose label `.0` is `.1` have a cap of their own, `.2`.
    apart: Option<(usize, &'static str, usize)>,
    expiry: Duration,
    series: Mutex<Series<N>>,
    overflowed: AtomicU64,
    descs: Vec<Desc>,
}

/// How long a series may go without an update before it is dropped.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);

struct Series<const N: usize> {
    /// Each series with when it was last updated.
    by_labels: HashMap<[String; N], (Buckets, Instant)>,
    overflow: Option<Buckets>,
    /// When idle series were last looked for.
    swept: Option<Instant>,
    /// How many of `by_labels` count against the separate cap.
    apart: usize,
}

impl<const N: usize> HistogramFamily<N> {
    /// `bounds` are the upper bounds of the buckets, ascending.
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
        bounds: Vec<f64>,
        max_series: usize,
    ) -> HistogramFamily<N> {
        let desc = |name: &str, help: &str| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
            .unwrap_or_else(|e| unreachable!("metric names are constant: {e}"))
        };
        HistogramFamily {
            descs: vec![desc(name, help)],
            name,
            help,
            calls: None,
            labels,
            bounds,
            max_series,
            apart: None,
            expiry: DEFAULT_EXPIRY,
            series: Mutex::new(Series {
                by_labels: HashMap::new(),
                overflow: None,
                swept: None,
                apart: 0,
            }),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Also exposes the observation count as the counter `name`.
    pub fn with_calls(mut self, name: &'static str, help: &'static str) -> Self {
        self.calls = Some((name, help));
        self.descs.push(
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                self.labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
            .unwrap_or_else(|e| unreachable!("metric names are constant: {e}")),
        );
        self
    }

    pub fn tally<'a>(&'a self) -> Tally<'a, N> {
        Tally {
            bounds: &self.bounds,
            series: HashMap::default(),
        }
    }

    /// Gives the series whose label `label` is `value` a cap of their own, `max_series`,
    /// so one kind of series cannot crowd out the others.
    pub fn with_separate_cap(
        mut self,
        label: usize,
        value: &'static str,
        max_series: usize,
    ) -> Self {
        self.apart = Some((label.min(N.saturating_sub(1)), value, max_series));
        self
    }

    fn is_apart(&self, labels: &[String; N]) -> bool {
        self.apart.is_some_and(|(i, v, _)| labels[i] == v)
    }

    /// Drops series idle for longer than `expiry` instead of the default.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// Adds a batch's tally.
    pub fn merge(&self, tally: Tally<'_, N>) {
        self.merge_at(tally, Instant::now());
    }

    fn merge_at(&self, tally: Tally<'_, N>, now: Instant) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let Series {
            by_labels,
            overflow,
            swept,
            apart,
        } = &mut *series;
        // Idle series are looked for a few times per expiry, not per batch.
        if swept.is_none_or(|at| now.duration_since(at) >= self.expiry / 4) {
            *swept = Some(now);
            by_labels.retain(|_, (_, at)| now.duration_since(*at) <= self.expiry);
            *apart = by_labels.keys().filter(|k| self.is_apart(k)).count();
        }
        for (labels, buckets) in tally.series {
            let key = labels.map(|Text(l)| l.to_owned());
            let is_apart = self.is_apart(&key);
            let room = match self.apart {
                Some((_, _, cap)) if is_apart => *apart < cap,
                _ => by_labels.len() - *apart < self.max_series,
            };
            if let Some((existing, at)) = by_labels.get_mut(&key) {
                existing.merge(&buckets);
                *at = now;
            } else if room {
                by_labels.insert(key, (buckets, now));
                *apart += usize::from(is_apart);
            } else {
                self.overflowed
                    .fetch_add(buckets.count(), Ordering::Relaxed);
                overflow
                    .get_or_insert_with(|| Buckets::new(self.bounds.len()))
                    .merge(&buckets);
            }
        }
    }

    /// Observations that went to the overflow series.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Label sets kept apart (the overflow series not counted).
    pub fn series(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_labels
            .len()
    }

    /// The buckets of the series with these label values, if it exists.
    pub fn get(&self, labels: [&str; N]) -> Option<Buckets> {
        let key = labels.map(str::to_owned);
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_labels
            .get(&key)
            .map(|(b, _)| b.clone())
    }

    fn families(&self) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(Vec<LabelPair>, &Buckets)> = series
            .by_labels
            .iter()
            .map(|(values, (b, _))| {
                let pairs = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| pair(name, value))
                    .collect();
                (pairs, b)
            })
            .collect();
        if let Some(b) = &series.overflow {
            rows.push((vec![pair("otel_metric_overflow", "true")], b));
        }
        let mut histograms = MetricFamily::default();
        histograms.set_name(self.name.to_owned());
        histograms.set_help(self.help.to_owned());
        histograms.set_field_type(MetricType::HISTOGRAM);
        let mut calls = MetricFamily::default();
        for (pairs, b) in &rows {
            let mut h = Histogram::default();
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(self.bounds.len());
            for (bound, count) in self.bounds.iter().zip(&b.counts) {
                cumulative += count;
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(cumulative);
                buckets.push(bucket);
            }
            h.set_bucket(buckets);
            h.set_sample_count(b.count());
            h.set_sample_sum(b.sum);
            let mut m = Metric::from_label(pairs.clone());
            m.set_histogram(h);
            histograms.mut_metric().push(m);
            if self.calls.is_some() {
                let mut c = Counter::default();
                c.set_value(b.count() as f64);
                let mut m = Metric::from_label(pairs.clone());
                m.set_counter(c);
                calls.mut_metric().push(m);
            }
        }
        let mut out = vec![histograms];
        if let Some((name, help)) = self.calls {
            calls.set_name(name.to_owned());
            calls.set_help(help.to_owned());
            calls.set_field_type(MetricType::COUNTER);
            out.push(calls);
        }
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_owned());
    p.set_value(value.to_owned());
    p
}

impl<const N: usize> Collector for HistogramFamily<N> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bound_inclusive_and_cumulative_on_output() {
        let f = HistogramFamily::new("h", "help", ["k"], vec![1.0, 10.0], 10)
            .with_calls("c_total", "help");
        let mut t = f.tally();
        for v in [0.5, 1.0, 5.0, 50.0] {
            t.observe(["a"], v);
        }
        f.merge(t);
        let b = f.get(["a"]).unwrap();
        assert_eq!(b.counts, [2, 1, 1]);
        assert_eq!(b.count(), 4);
        assert_eq!(b.sum(), 56.5);
        let families = f.collect();
        let h = families[0].get_metric()[0].get_histogram();
        let cumulative: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(cumulative, [2, 3]);
        assert_eq!(h.get_sample_count(), 4);
        assert_eq!(families[1].get_metric()[0].get_counter().get_value(), 4.0);
    }

    #[test]
    fn idle_series_expire_and_make_room() {
        let f = HistogramFamily::new("h", "help", ["k"], vec![1.0], 2)
            .with_expiry(Duration::from_secs(60));
        let t0 = Instant::now();
        let merge = |label: &str, at: Instant| {
            let mut t = f.tally();
            t.observe([label], 1.0);
            f.merge_at(t, at);
        };
        merge("old", t0);
        merge("busy", t0);
        merge("busy", t0 + Duration::from_secs(50));
        // A minute and a half on, "old" has been idle for longer than the expiry.
        merge("new", t0 + Duration::from_secs(90));
        assert_eq!(f.get(["old"]), None);
        assert_eq!(f.get(["busy"]).map(|b| b.count()), Some(2));
        assert_eq!(f.get(["new"]).map(|b| b.count()), Some(1));
        assert_eq!(f.overflowed(), 0);
    }

    #[test]
    fn series_kept_apart_have_a_cap_of_their_own() {
        let f = HistogramFamily::new("h", "help", ["k", "kind"], vec![1.0], 2)
            .with_separate_cap(1, "agent", 1);
        let mut t = f.tally();
        for n in ["a", "b", "c"] {
            t.observe([n, "agent"], 1.0);
            t.observe([n, ""], 1.0);
        }
        f.merge(t);
        // One agent series, two others: the agents' overflow took nothing from them.
        assert_eq!(f.series(), 3);
        assert_eq!(f.overflowed(), 3);
        assert_eq!(
            ["a", "b", "c"]
                .iter()
                .filter(|n| f.get([n, ""]).is_some())
                .count(),
            2
        );
    }

    #[test]
    fn series_beyond_the_cap_go_to_one_overflow_series() {
        let f = HistogramFamily::new("h", "help", ["k"], vec![1.0], 2);
        let names: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let mut t = f.tally();
        for n in &names {
            t.observe([n.as_str()], 1.0);
        }
        f.merge(t);
        assert_eq!(f.series(), 2);
        assert_eq!(f.overflowed(), 3);
        let family = &f.collect()[0];
        let total: u64 = family
            .get_metric()
            .iter()
            .map(|m| m.get_histogram().get_sample_count())
            .sum();
        assert_eq!(total, 5);
        assert!(family
            .get_metric()
            .iter()
            .any(|m| m.get_label()[0].name() == "otel_metric_overflow"));
    }
}
