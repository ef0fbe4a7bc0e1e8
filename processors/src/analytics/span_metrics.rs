//! Span metrics, as the OpenTelemetry Collector's spanmetrics connector emits them and
//! its Prometheus exporter names them: `traces_span_metrics_calls_total` and
//! `traces_span_metrics_duration_milliseconds` (a histogram with the connector's
//! default buckets), by `service_name`, `span_name`, `span_kind` and `status_code`
//! (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`: the connector's values). Dashboards built
//! for the connector work unchanged.
//!
//! Computed off the acknowledgement path ([`Processor::observe`]).

use serde::{Deserialize, Serialize};

use super::series::HistogramFamily;
use crate::columns::{primitives, string_at, strings};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;

/// The spanmetrics connector's default duration buckets, in milliseconds.
pub const DURATION_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// `[processors.span_metrics]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    pub enabled: bool,
    /// Label sets kept apart; beyond it spans are counted in one overflow series.
    pub max_series: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            enabled: true,
            max_series: 10_000,
        }
    }
}

pub struct SpanMetrics {
    family: HistogramFamily<4>,
}

impl SpanMetrics {
    pub fn new(config: &SpanMetricsConfig) -> SpanMetrics {
        SpanMetrics {
            family: HistogramFamily::new(
                "traces_span_metrics_duration_milliseconds",
                "Span durations, by service, span name, kind and status (spanmetrics).",
                ["service_name", "span_name", "span_kind", "status_code"],
                DURATION_BUCKETS_MS.to_vec(),
                config.max_series,
            )
            .with_calls(
                "traces_span_metrics_calls_total",
                "Spans received, by service, span name, kind and status (spanmetrics).",
            ),
        }
    }

    /// The collector to register with the registry `/metrics` serves.
    pub fn family(&self) -> &HistogramFamily<4> {
        &self.family
    }

    fn tally(&self, spans: &arrow::record_batch::RecordBatch) -> crate::Result<()> {
        let service = strings(spans, "service_name")?;
        let name = strings(spans, "name")?;
        let kind = strings(spans, "kind")?;
        let status = strings(spans, "status_code")?;
        let duration = primitives::<arrow::datatypes::Int64Type>(spans, "duration_ns")?;
        let mut tally = self.family.tally();
        for row in 0..spans.num_rows() {
            tally.observe(
                [
                    string_at(service, row).unwrap_or(""),
                    name.value(row),
                    connector_kind(kind.value(row)),
                    connector_status(status.value(row)),
                ],
                duration.value(row).max(0) as f64 / 1e6,
            );
        }
        self.family.merge(tally);
        Ok(())
    }
}

/// The connector's `span.kind` value for the kind `spans.kind` stores.
fn connector_kind(kind: &str) -> &'static str {
    match kind {
        "SERVER" => "SPAN_KIND_SERVER",
        "CLIENT" => "SPAN_KIND_CLIENT",
        "INTERNAL" => "SPAN_KIND_INTERNAL",
        "PRODUCER" => "SPAN_KIND_PRODUCER",
        "CONSUMER" => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn connector_status(status: &str) -> &'static str {
    match status {
        "OK" => "STATUS_CODE_OK",
        "ERROR" => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

impl Processor for SpanMetrics {
    fn name(&self) -> &'static str {
        "span_metrics"
    }

    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS
    }

    fn observe(&self, input: &TableBatch) {
        if input.table != Table::SPANS {
            return;
        }
        if let Err(e) = self.tally(&input.batch) {
            debug_assert!(false, "span metrics: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::testing::{batch, failed, span};

    #[test]
    fn spans_are_counted_and_timed_per_service_name_kind_and_status() {
        let m = SpanMetrics::new(&SpanMetricsConfig::default());
        let mut spans = vec![span(1, 1_000, 3, vec![]), span(1, 2_000, 70, vec![])];
        spans.push(failed(span(1, 30_000, 20_000, vec![])));
        m.observe(&TableBatch::new(Table::SPANS, batch("api", spans)));
        let ok = m
            .family()
            .get(["api", "op 1", "SPAN_KIND_INTERNAL", "STATUS_CODE_UNSET"])
            .unwrap();
        assert_eq!(ok.count(), 2);
        assert_eq!(ok.sum(), 73.0);
        let errors = m
            .family()
            .get(["api", "op 1", "SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR"])
            .unwrap();
        assert_eq!(errors.count(), 1);
        m.observe(&TableBatch::new(
            Table::LOGS,
            arrow::record_batch::RecordBatch::new_empty(Table::LOGS.schema()),
        ));
        assert_eq!(m.family().series(), 2);
    }
}
