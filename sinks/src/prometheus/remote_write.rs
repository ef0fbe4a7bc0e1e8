//! `[sinks.prometheus_remote_write]`: the series of `/metrics` pushed to a Prometheus
//! remote-write 1.0 endpoint (protobuf `WriteRequest`, snappy), as a Prometheus agent
//! scraping swarmscope would.
//!
//! Every `interval` the collector takes a snapshot of its registry (the same families
//! `/metrics` renders: self-telemetry, analytics, span metrics and translated OTLP
//! metrics), turns each sample into a row of the `metrics` schema ([`snapshot`]) and
//! queues it on the sink's disk queue; [`RemoteWriteSink`] sends queued snapshots in
//! order. Series without `job`/`instance` get swarmscope's own, as a scrape would give
//! them. 429 and 5xx are retried (honouring `Retry-After`), other 4xx are permanent, as
//! the remote-write specification asks.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::Float64Type;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use prometheus::proto::{MetricFamily, MetricType};
use prost::Message;
use serde::{Deserialize, Serialize};
use swarmscope_processors::columns::{primitives, strings, timestamps, MapColumn};
use swarmscope_processors::durations::parse_duration;
use swarmscope_processors::schema::Table;

use crate::sink::{Sink, SinkError};

/// `[sinks.prometheus_remote_write]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// PEM certificates to trust for an `https://` URL, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// How often a snapshot of the series is taken (a scrape interval).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The disk queue's cap; past it new snapshots are dropped and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: u64,
}

fn default_interval() -> String {
    "15s".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_queue_max_bytes() -> u64 {
    256 << 20
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), String> {
        let key = |k: &str| format!("sinks.prometheus_remote_write.{k}");
        crate::tls::check_endpoint(&key("url"), &self.url, self.ca_file.as_deref())?;
        if parse_duration(&self.interval).is_none_or(|d| d.is_zero()) {
            return Err(format!(
                "{} must be a duration such as \"15s\", got {:?}",
                key("interval"),
                self.interval
            ));
        }
        if self.timeout_ms == 0 {
            return Err(format!("{} must be > 0, got 0", key("timeout_ms")));
        }
        Ok(())
    }

    /// `interval` (validated).
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(15))
    }
}

/// The remote-write 1.0 messages (`prometheus/prompb/remote.proto`, `types.proto`).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The samples of `families` at `time_ns` as rows of the `metrics` schema (one gauge
/// point per sample: the series name, its labels as attributes), ready to queue.
/// `defaults` are added to every series that lacks them.
pub fn snapshot(
    families: &[MetricFamily],
    time_ns: u64,
    defaults: &[(&str, &str)],
) -> swarmscope_processors::Result<RecordBatch> {
    let mut metrics: BTreeMap<String, Vec<NumberDataPoint>> = BTreeMap::new();
    for family in families {
        let name = family.name();
        for m in family.get_metric() {
            let labels: Vec<(String, String)> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            let mut add = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                let mut attributes: Vec<KeyValue> = labels
                    .iter()
                    .map(|(k, v)| string(k, v))
                    .chain(extra.map(|(k, v)| string(k, &v)))
                    .collect();
                for (k, v) in defaults {
                    if !labels.iter().any(|(name, _)| name == k) {
                        attributes.push(string(k, v));
                    }
                }
                metrics
                    .entry(format!("{name}{suffix}"))
                    .or_default()
                    .push(NumberDataPoint {
                        attributes,
                        time_unix_nano: time_ns,
                        value: Some(number_data_point::Value::AsDouble(value)),
                        ..Default::default()
                    });
            };
            match family.get_field_type() {
                MetricType::COUNTER => add("", None, m.get_counter().get_value()),
                MetricType::GAUGE => add("", None, m.get_gauge().get_value()),
                // Nothing in the registry is untyped.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = b.upper_bound();
                        if le.is_finite() {
                            add(
                                "_bucket",
                                Some(("le", le.to_string())),
                                b.cumulative_count() as f64,
                            );
                        }
                    }
                    add(
                        "_bucket",
                        Some(("le", "+Inf".into())),
                        h.get_sample_count() as f64,
                    );
                    add("_sum", None, h.get_sample_sum());
                    add("_count", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        add("", Some(("quantile", q.quantile().to_string())), q.value());
                    }
                    add("_sum", None, s.sample_sum());
                    add("_count", None, s.sample_count() as f64);
                }
            }
        }
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: metrics
                    .into_iter()
                    .map(|(name, points)| Metric {
                        name,
                        data: Some(Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Ok(swarmscope_processors::convert::metrics_from_otlp(&request)?.batch)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The time series of queued snapshot rows, samples of each series in order.
pub fn write_request(
    batches: &[(Table, RecordBatch)],
) -> swarmscope_processors::Result<WriteRequest> {
    let mut series: BTreeMap<Vec<Label>, Vec<Sample>> = BTreeMap::new();
    for (_, batch) in batches {
        let names = strings(batch, "metric_name")?;
        let values = primitives::<Float64Type>(batch, "value")?;
        let times = timestamps(batch, "time")?;
        let attributes = MapColumn::of(batch, "attributes")?;
        for row in 0..batch.num_rows() {
            if values.is_null(row) {
                continue;
            }
            let mut labels = vec![Label {
                name: "__name__".into(),
                value: names.value(row).to_owned(),
            }];
            attributes.scan(row, |k, v| {
                labels.push(Label {
                    name: k.to_owned(),
                    value: v.to_owned(),
                })
            });
            labels.sort();
            series.entry(labels).or_default().push(Sample {
                value: values.value(row),
                timestamp: times.value(row) / 1_000_000,
            });
        }
    }
    Ok(WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, samples)| TimeSeries { labels, samples })
            .collect(),
    })
}

pub struct RemoteWriteSink {
    name: String,
    config: RemoteWriteConfig,
    client: reqwest::Client,
}

impl RemoteWriteSink {
    pub fn new(name: &str, config: RemoteWriteConfig) -> Result<RemoteWriteSink, String> {
        let client = crate::tls::http_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )
        .map_err(|e| format!("sinks.{name}: {e}"))?;
        Ok(RemoteWriteSink {
            name: name.to_owned(),
            config,
            client,
        })
    }
}

#[async_trait::async_trait]
impl Sink for RemoteWriteSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// The snapshots of `/metrics` the collector queues for it: rows of the `metrics`
    /// schema. (It is not one of the pipeline's sinks: received metrics reach it only
    /// as `/metrics` shows them.)
    fn accepts(&self, table: Table) -> bool {
        table == Table::METRICS
    }

    async fn send(&self, batches: &[(Table, RecordBatch)]) -> Result<(), SinkError> {
        let request = write_request(batches).map_err(|e| SinkError::Permanent(e.to_string()))?;
        if request.timeseries.is_empty() {
            return Ok(());
        }
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .map_err(|e| SinkError::Permanent(e.to_string()))?;
        let mut call = self
            .client
            .post(&self.config.url)
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header(
                "user-agent",
                concat!("swarmscope/", env!("CARGO_PKG_VERSION")),
            )
            .body(body);
        if let Some(token) = &self.config.bearer_token {
            call = call.bearer_auth(token);
        }
        let retryable = |message: String, after| SinkError::Retryable { message, after };
        let response = call
            .send()
            .await
            .map_err(|e| retryable(format!("{}: {e}", self.config.url), None))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = crate::sink::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let message = format!("{}: HTTP {status}: {}", self.config.url, text.trim());
        if status.as_u16() == 429 || status.is_server_error() {
            Err(retryable(message, after))
        } else {
            Err(SinkError::Permanent(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    #[test]
    fn a_snapshot_round_trips_into_sorted_series_with_every_histogram_sample() {
        let registry = Registry::new();
        let calls =
            IntCounterVec::new(Opts::new("calls_total", "Calls."), &["Zone", "job"]).unwrap();
        calls.with_label_values(&["eu", "planner"]).inc_by(3);
        let latency = HistogramVec::new(
            HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.5, 1.0]),
            &["tool"],
        )
        .unwrap();
        for v in [0.1, 0.7, 3.0] {
            latency.with_label_values(&["grep"]).observe(v);
        }
        registry.register(Box::new(calls)).unwrap();
        registry.register(Box::new(latency)).unwrap();
        let batch = snapshot(
            &registry.gather(),
            1_700_000_000_000_000_000,
            &[("job", "swarmscope"), ("instance", "host:8080")],
        )
        .unwrap();
        let request = write_request(&[(Table::METRICS, batch)]).unwrap();
        let find = |name: &str, extra: Option<(&str, &str)>| {
            request
                .timeseries
                .iter()
                .find(|s| {
                    s.labels
                        .iter()
                        .any(|l| l.name == "__name__" && l.value == name)
                        && extra.is_none_or(|(k, v)| {
                            s.labels.iter().any(|l| l.name == k && l.value == v)
                        })
                })
                .unwrap_or_else(|| panic!("{name} {extra:?} in {request:?}"))
        };
        let calls = find("calls_total", None);
        let names: Vec<&str> = calls.labels.iter().map(|l| l.name.as_str()).collect();
        // Sorted by name; the series' own job kept, the default instance added.
        assert_eq!(names, vec!["Zone", "__name__", "instance", "job"]);
        assert_eq!(calls.labels[3].value, "planner");
        assert_eq!(
            calls.samples,
            vec![Sample {
                value: 3.0,
                timestamp: 1_700_000_000_000
            }]
        );
        assert_eq!(
            find("latency_seconds_bucket", Some(("le", "0.5"))).samples[0].value,
            1.0
        );
        assert_eq!(
            find("latency_seconds_bucket", Some(("le", "1"))).samples[0].value,
            2.0
        );
        assert_eq!(
            find("latency_seconds_bucket", Some(("le", "+Inf"))).samples[0].value,
            3.0
        );
        assert_eq!(find("latency_seconds_count", None).samples[0].value, 3.0);
        assert!((find("latency_seconds_sum", None).samples[0].value - 3.8).abs() < 1e-9);
    }
}
