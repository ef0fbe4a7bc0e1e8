//! Derived analytics: what swarmscope computes from the telemetry it stores (SPEC §8).
//!
//! Each concern is a [`Processor`](crate::processor::Processor) in a file of its own:
//! - [`coordination`]: `coordination_events` rows, with conflicts and cycle times, from
//!   spans carrying `coordination.work.id` (on the acknowledgement path);
//! - [`genai`]: `genai_usage` rows with their cost, and token metrics;
//! - [`span_metrics`]: the spanmetrics connector's calls and duration series;
//! - [`velocity`]: the `velocity` view over `coordination_events`.

pub mod attributes;
pub mod coordination;
pub mod genai;
pub mod series;
pub mod span_metrics;
pub mod velocity;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use prometheus::core::Collector;
use serde::{Deserialize, Serialize};

use crate::processor::Processor;
use coordination::{CoordinationConfig, CoordinationEvents};
use genai::{GenAiConfig, GenAiUsage};
use span_metrics::{SpanMetrics, SpanMetricsConfig};
use velocity::{VelocityConfig, WorkMetrics};

/// `[processors]`: every analytics processor's section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    pub coordination: CoordinationConfig,
    pub genai: GenAiConfig,
    pub span_metrics: SpanMetricsConfig,
    pub velocity: VelocityConfig,
}

impl AnalyticsConfig {
    /// Checks what serde cannot; every message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.coordination.validate()?;
        self.genai.validate()?;
        self.velocity.validate()
    }
}

/// The analytics processors of one collector, built from their config.
pub struct Analytics {
    pub config: AnalyticsConfig,
    pub coordination: Arc<CoordinationEvents>,
    pub genai: Arc<GenAiUsage>,
    pub span_metrics: Option<Arc<SpanMetrics>>,
    pub work: Arc<WorkMetrics>,
}

impl Analytics {
    pub fn new(config: &AnalyticsConfig) -> Analytics {
        Analytics {
            config: config.clone(),
            coordination: Arc::new(CoordinationEvents::new(&config.coordination)),
            genai: Arc::new(GenAiUsage::new(&config.genai)),
            span_metrics: config
                .span_metrics
                .enabled
                .then(|| Arc::new(SpanMetrics::new(&config.span_metrics))),
            work: Arc::new(WorkMetrics::new(&config.velocity)),
        }
    }

    /// The processors, in the order the pipeline runs them.
    pub fn processors(&self) -> Vec<Arc<dyn Processor>> {
        let mut all: Vec<Arc<dyn Processor>> = vec![
            self.coordination.clone(),
            self.genai.clone(),
            self.work.clone(),
        ];
        if let Some(m) = &self.span_metrics {
            all.push(m.clone());
        }
        all
    }

    /// Everything they expose on `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let mut all = self.genai.collectors();
        all.extend(self.work.collectors());
        if let Some(m) = &self.span_metrics {
            all.push(Box::new(SpanMetricsCollector(m.clone())));
        }
        all
    }

    /// The SQL views over the stored tables: (name, definition).
    pub fn views(&self) -> Vec<(&'static str, String)> {
        vec![("velocity", velocity::view_sql(&self.config.velocity))]
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
