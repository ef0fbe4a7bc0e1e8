//! The request builder: queued snapshot rows as a remote-write 1.0 `WriteRequest`
//! (`prometheus/prompb/remote.proto`, `types.proto`), protobuf and snappy.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::Float64Type;
use prost::Message;
use swarmscope_processors::columns::{primitives, strings, timestamps, MapColumn};
use swarmscope_processors::schema::Table;

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

/// The body of a POST: `request` encoded, snappy-compressed as the specification asks.
pub fn body(request: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::remote_write::snapshot;
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
