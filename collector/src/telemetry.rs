//! The collector's own metrics, served as Prometheus text on `GET /metrics`.
//!
//! Names follow the OpenTelemetry Collector's self-telemetry with our prefix, so its
//! dashboards translate: `otelcol_receiver_accepted_spans` is
//! `swarmscope_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}` here, and
//! so on for metric points and log records, refusals with a `reason` label. Counters
//! and histograms are updated where things happen; gauges of state (buffered bytes,
//! files per table, queue depths) are read when `/metrics` is scraped.

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use swarmscope_processors::schema::Table;
use swarmscope_queries::QueryEngine;
use swarmscope_sinks::store::ParquetStore;

/// The receiver's transport, as the `transport` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

const RECEIVER: &str = "otlp";

/// Accepted and refused records of one signal.
#[derive(Clone)]
struct SignalCounters {
    accepted: IntCounterVec,
    refused: IntCounterVec,
}

/// The counters of one signal and transport, for one request.
pub struct RecordCounters<'a> {
    pub accepted: IntCounter,
    refused: &'a IntCounterVec,
    transport: Transport,
    /// How a client calls these records ("spans", "metric points", "log records").
    pub noun: &'static str,
    /// The OTLP signal ("traces", "metrics", "logs").
    pub signal: &'static str,
}

impl RecordCounters<'_> {
    pub fn refused(&self, reason: &str) -> IntCounter {
        self.refused
            .with_label_values(&[RECEIVER, self.transport.label(), reason])
    }
}

/// What the pipeline and the receivers count.
#[derive(Clone)]
pub struct PipelineMetrics {
    spans: SignalCounters,
    metric_points: SignalCounters,
    log_records: SignalCounters,
    /// Requests refused before they were decoded, by transport and reason.
    pub refused_requests: IntCounterVec,
    /// From conversion to acknowledgement, by transport and signal.
    pub request_duration: HistogramVec,
    /// Batches waiting for an observing processor.
    pub processor_queue: IntGaugeVec,
    /// Batches an observing processor did not see, by reason.
    pub processor_dropped: IntCounterVec,
}

fn unreachable_metric(e: prometheus::Error) -> ! {
    unreachable!("metric options are constant: {e}")
}

impl PipelineMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<PipelineMetrics> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let signal = |noun: &str| {
            Ok::<_, prometheus::Error>(SignalCounters {
                accepted: counter(
                    &format!("swarmscope_receiver_accepted_{noun}_total"),
                    &format!("{noun} stored: acknowledged to the client as durable."),
                    &["receiver", "transport"],
                )?,
                refused: counter(
                    &format!("swarmscope_receiver_refused_{noun}_total"),
                    &format!(
                        "{noun} decoded but not stored, by reason (invalid, retention, memory_limit, unavailable)."
                    ),
                    &["receiver", "transport", "reason"],
                )?,
            })
        };
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "swarmscope_receiver_request_duration_seconds",
                "How long an export took from conversion to acknowledgement.",
            )
            .buckets(exponential_buckets(0.000_1, 2.0, 16)?),
            &["transport", "signal"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let processor_queue = IntGaugeVec::new(
            Opts::new(
                "swarmscope_processor_queue_batches",
                "Batches waiting for an observing processor.",
            ),
            &["processor"],
        )?;
        registry.register(Box::new(processor_queue.clone()))?;
        Ok(PipelineMetrics {
            spans: signal("spans")?,
            metric_points: signal("metric_points")?,
            log_records: signal("log_records")?,
            refused_requests: counter(
                "swarmscope_receiver_refused_requests_total",
                "Requests refused before they were decoded, by reason.",
                &["receiver", "transport", "reason"],
            )?,
            request_duration,
            processor_queue,
            processor_dropped: counter(
                "swarmscope_processor_dropped_batches_total",
                "Batches an observing processor did not see (its queue was full), by reason.",
                &["processor", "reason"],
            )?,
        })
    }

    /// Metrics registered nowhere, for tests and tools.
    pub fn unregistered() -> PipelineMetrics {
        PipelineMetrics::register(&Registry::new()).unwrap_or_else(|e| unreachable_metric(e))
    }

    /// The counters for records of `table` (a receiver's signal) over `transport`.
    pub fn records(&self, table: Table, transport: Transport) -> RecordCounters<'_> {
        let (counters, noun, signal) = if table == Table::METRICS {
            (&self.metric_points, "metric points", "metrics")
        } else if table == Table::LOGS {
            (&self.log_records, "log records", "logs")
        } else {
            (&self.spans, "spans", "traces")
        };
        RecordCounters {
            accepted: counters
                .accepted
                .with_label_values(&[RECEIVER, transport.label()]),
            refused: &counters.refused,
            transport,
            noun,
            signal,
        }
    }

    /// The refusal counter of requests refused before decoding, with the `reason`.
    pub fn refused_request(&self, transport: Transport, reason: &str) -> IntCounter {
        self.refused_requests
            .with_label_values(&[RECEIVER, transport.label(), reason])
    }
}

/// The registry `/metrics` serves, and the gauges read at each scrape.
pub struct Telemetry {
    registry: Registry,
    memory_used: IntGauge,
    memory_limit: IntGauge,
    buffered_rows: IntGaugeVec,
    parquet_files: IntGaugeVec,
    parquet_bytes: IntGaugeVec,
    quarantined: IntGauge,
    /// Whose state the gauges read.
    store: ParquetStore,
}

impl Telemetry {
    /// A registry with the store's and the query engine's metrics and the state gauges.
    pub fn new(
        store: &ParquetStore,
        engine: &QueryEngine,
    ) -> prometheus::Result<(Telemetry, PipelineMetrics)> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let by_table = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["table"])?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let collectors: Vec<Box<dyn Collector>> = store
            .metrics()
            .collectors()
            .into_iter()
            .chain(engine.metrics().collectors())
            .collect();
        for c in collectors {
            registry.register(c)?;
        }
        let telemetry = Telemetry {
            memory_used: gauge(
                "swarmscope_memory_used_bytes",
                "Memory charged to the pipeline's budget: buffered rows and queued batches.",
            )?,
            memory_limit: gauge(
                "swarmscope_memory_limit_bytes",
                "The pipeline's memory budget (storage.max_buffered_bytes).",
            )?,
            buffered_rows: by_table(
                "swarmscope_store_buffered_rows",
                "Rows acknowledged but not yet in a Parquet file.",
            )?,
            parquet_files: by_table(
                "swarmscope_store_parquet_files",
                "Parquet files in the history.",
            )?,
            parquet_bytes: by_table(
                "swarmscope_store_parquet_bytes",
                "Bytes of the Parquet files in the history.",
            )?,
            quarantined: gauge(
                "swarmscope_store_quarantined_files",
                "Unreadable Parquet files moved to _quarantine/ since the start.",
            )?,
            registry,
            store: store.clone(),
        };
        let pipeline = PipelineMetrics::register(&telemetry.registry)?;
        Ok((telemetry, pipeline))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition, with state gauges read now.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on invalid metric data, which the typed
        // metrics above cannot produce.
        if let Err(e) = TextEncoder::new().encode(&self.gather(), &mut out) {
            tracing::error!(error = %e, "encoding /metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Every family `/metrics` shows (and remote write sends), state gauges read now.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let store = &self.store;
        let memory = store.memory();
        self.memory_used.set(memory.used() as i64);
        self.memory_limit.set(memory.limit() as i64);
        for &table in Table::ALL {
            let (files, bytes) = store.stored_files(table);
            self.buffered_rows
                .with_label_values(&[table.name()])
                .set(store.buffered_rows(table) as i64);
            self.parquet_files
                .with_label_values(&[table.name()])
                .set(files as i64);
            self.parquet_bytes
                .with_label_values(&[table.name()])
                .set(bytes as i64);
        }
        self.quarantined.set(store.quarantined_files() as i64);
        self.registry.gather()
    }
}
