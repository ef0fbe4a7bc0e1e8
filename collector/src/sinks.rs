//! The sinks that stand on their own (beside the analytics' webhooks and exporters):
//! Elasticsearch, whose refused documents are stored through the pipeline in the
//! `dead_letters` table, and Prometheus remote write, fed snapshots of `/metrics`.

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use swarmscope_processors::processor::TableBatch;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::dead_letter::DeadLetters;
use swarmscope_sinks::elasticsearch::{ElasticsearchSink, EsMetrics};
use swarmscope_sinks::prometheus::remote_write::{snapshot, RemoteWriteSink};
use swarmscope_sinks::queue::DiskQueue;
use swarmscope_sinks::sink::{SinkHandle, SinkMetrics};

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::Error;

/// The pipeline as the store of the sinks' dead letters. The sinks are built before
/// the pipeline (which holds them), so it is set once built; a sink that refuses
/// records before then is told to wait.
#[derive(Clone, Default)]
pub struct PipelineDeadLetters(Arc<OnceLock<Pipeline>>);

impl PipelineDeadLetters {
    pub fn set(&self, pipeline: Pipeline) {
        let _ = self.0.set(pipeline);
    }
}

#[async_trait::async_trait]
impl DeadLetters for PipelineDeadLetters {
    async fn keep(&self, batch: RecordBatch) -> Result<(), String> {
        let pipeline = self.0.get().ok_or("the pipeline is not running yet")?;
        pipeline
            .record(vec![TableBatch::new(Table::DEAD_LETTERS, batch)])
            .await
            .map_err(|e| e.to_string())
    }
}

/// `[sinks.elasticsearch]`, with its disk queue under `DATA_DIR/_sinks/elasticsearch`;
/// its own counters are registered with `registry`.
pub fn elasticsearch(
    config: &Config,
    metrics: &SinkMetrics,
    registry: &prometheus::Registry,
    dead_letters: &PipelineDeadLetters,
) -> Result<Option<SinkHandle>, Error> {
    let Some(es) = &config.sinks.elasticsearch else {
        return Ok(None);
    };
    let name = "elasticsearch";
    let dir = config.storage.data_dir.join("_sinks").join(name);
    let queue = DiskQueue::open(&dir, es.queue_max_bytes)
        .map_err(|e| Error::Server("sink queue", format!("{}: {e}", dir.display())))?;
    let es_metrics = EsMetrics::new();
    for counter in [&es_metrics.dead_letters, &es_metrics.item_retries] {
        registry
            .register(Box::new(counter.clone()))
            .map_err(|e| Error::Server("metrics", e.to_string()))?;
    }
    let sink = ElasticsearchSink::new(name, es.clone(), Arc::new(dead_letters.clone()), es_metrics)
        .map_err(Error::Config)?;
    Ok(Some(SinkHandle::new(
        Arc::new(sink),
        Arc::new(queue),
        metrics.clone(),
    )))
}

/// `[sinks.prometheus_remote_write]`, with its disk queue under
/// `DATA_DIR/_sinks/prometheus_remote_write`.
pub fn remote_write(config: &Config, metrics: &SinkMetrics) -> Result<Option<SinkHandle>, Error> {
    let Some(rw) = &config.sinks.prometheus_remote_write else {
        return Ok(None);
    };
    let name = "prometheus_remote_write";
    let dir = config.storage.data_dir.join("_sinks").join(name);
    let queue = DiskQueue::open(&dir, rw.queue_max_bytes)
        .map_err(|e| Error::Server("sink queue", format!("{}: {e}", dir.display())))?;
    let sink = RemoteWriteSink::new(name, rw.clone()).map_err(Error::Config)?;
    Ok(Some(SinkHandle::new(
        Arc::new(sink),
        Arc::new(queue),
        metrics.clone(),
    )))
}

/// Queues a snapshot of every `/metrics` series for remote write each `interval`,
/// until `shutdown` resolves. Series without `job`/`instance` are labelled
/// `job="swarmscope"` and `instance` = the API's address, as a scrape would label them.
pub async fn snapshots(
    handle: SinkHandle,
    interval: std::time::Duration,
    telemetry: Arc<crate::telemetry::Telemetry>,
    pipeline: Pipeline,
    instance: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let families = telemetry.gather(&pipeline);
        match snapshot(
            &families,
            now,
            &[("job", "swarmscope"), ("instance", &instance)],
        ) {
            Ok(batch) => handle.enqueue(&[(Table::METRICS, &batch)]),
            Err(e) => tracing::error!(error = %e, "cannot take a snapshot for remote write"),
        }
    }
}
