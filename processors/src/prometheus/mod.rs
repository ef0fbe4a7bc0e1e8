//! Prometheus: received OTLP metrics translated onto `/metrics` ([`Translator`], a
//! processor observing the `metrics` table) by the OpenTelemetry → Prometheus rules
//! ([`names`]). Remote write, which sends `/metrics` on, is a sink of the sinks crate.

mod names;
mod translate;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durations::parse_duration;

pub use names::{label_name, metric_name};
pub use translate::{Translator, TranslatorCollector};

/// `[sinks.prometheus]`: how received OTLP metrics appear on `/metrics`; the
/// OpenTelemetry Collector's `prometheus` exporter has the same keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// A translated series not updated for this long leaves the exposition.
    pub metric_expiration: String,
    /// Translated series kept at most; points of further series are dropped and
    /// counted.
    pub max_series: usize,
    /// Every resource attribute as a label of every series, rather than only in
    /// `target_info`.
    pub resource_to_telemetry_conversion: bool,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            metric_expiration: "5m".into(),
            max_series: 10_000,
            resource_to_telemetry_conversion: false,
        }
    }
}

impl PrometheusConfig {
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        if parse_duration(&self.metric_expiration).is_none_or(|d| d.is_zero()) {
            return Err(crate::ConfigError::invalid(
                "sinks.prometheus.metric_expiration",
                "a duration such as \"5m\"",
                format!("{:?}", self.metric_expiration),
            ));
        }
        crate::config_error::positive("sinks.prometheus.max_series", self.max_series as u64)
    }

    /// `metric_expiration` (validated).
    pub fn expiration(&self) -> Duration {
        parse_duration(&self.metric_expiration).unwrap_or(Duration::from_secs(300))
    }
}
