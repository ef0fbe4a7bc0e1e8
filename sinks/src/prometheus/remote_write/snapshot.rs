//! A snapshot of the registry's families as rows of the `metrics` schema, for the
//! sink's disk queue.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use prometheus::proto::{MetricFamily, MetricType};

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
