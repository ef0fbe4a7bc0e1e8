//! Every sink, assembled in one place: the alert webhooks, the OTLP (Jaeger)
//! exporters, Elasticsearch (whose refused documents are stored through the pipeline in
//! the `dead_letters` table) and Prometheus remote write (fed snapshots of `/metrics`),
//! each through one helper that gives it its disk queue.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use arrow::array::RecordBatch;
use swarmscope_processors::analytics::alerts::Alert;
use swarmscope_processors::processor::TableBatch;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::dead_letter::DeadLetters;
use swarmscope_sinks::elasticsearch::{ElasticsearchSink, EsMetrics};
use swarmscope_sinks::otlp::OtlpSink;
use swarmscope_sinks::prometheus::remote_write::{snapshot, RemoteWriteSink};
use swarmscope_sinks::queue::DiskQueue;
use swarmscope_sinks::sink::{Sink, SinkHandle, SinkMetrics, DEFAULT_QUEUE_MAX_BYTES};
use swarmscope_sinks::webhook::WebhookSink;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::Error;

/// A batch of dead letters, and where to say whether it was stored.
type Letter = (RecordBatch, oneshot::Sender<Result<(), String>>);

/// Where the sinks hand their dead letters: a channel the collector drains into the
/// pipeline ([`store_dead_letters`]), so a sink never reaches up to the pipeline that
/// holds it. A sink waits for the answer: its refused records are as durable as any
/// acknowledged row before it moves on.
#[derive(Clone)]
pub struct DeadLetterChannel(mpsc::Sender<Letter>);

impl DeadLetterChannel {
    pub fn new() -> (DeadLetterChannel, mpsc::Receiver<Letter>) {
        let (tx, rx) = mpsc::channel(16);
        (DeadLetterChannel(tx), rx)
    }
}

#[async_trait::async_trait]
impl DeadLetters for DeadLetterChannel {
    async fn keep(&self, batch: RecordBatch) -> Result<(), String> {
        let (answer, stored) = oneshot::channel();
        let stopping = || "the collector is stopping".to_owned();
        self.0.send((batch, answer)).await.map_err(|_| stopping())?;
        stored.await.map_err(|_| stopping())?
    }
}

/// Stores the dead letters of `letters` through `pipeline` until `shutdown` resolves.
pub async fn store_dead_letters(
    mut letters: mpsc::Receiver<Letter>,
    pipeline: Pipeline,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (batch, answer) = tokio::select! {
            _ = &mut shutdown => return,
            letter = letters.recv() => match letter {
                Some(letter) => letter,
                None => return,
            },
        };
        let stored = pipeline
            .record(vec![TableBatch::new(Table::DEAD_LETTERS, batch)])
            .await
            .map_err(|e| e.to_string());
        let _ = answer.send(stored);
    }
}

/// The sinks of a configuration: every one that delivers the pipeline's records, and
/// remote write, which the `/metrics` snapshots feed.
pub struct Sinks {
    pub delivering: Vec<SinkHandle>,
    pub remote_write: Option<SinkHandle>,
}

/// The alerts the webhooks start from: those restored as firing, and those resolved
/// shortly before the start (whose notification a stop may have cut short).
pub struct Restored<'a> {
    pub firing: &'a [Alert],
    pub resolved: &'a [Alert],
}

/// Every sink `config` asks for, each with its disk queue under
/// `DATA_DIR/_sinks/<name>`: the webhooks of `[[alerts.webhooks]]`, the OTLP exporters
/// of `[sinks.jaeger]` and `[sinks.otlp]`, `[sinks.elasticsearch]` and
/// `[sinks.prometheus_remote_write]`. Their own counters are registered with
/// `registry`. Built on the runtime their background tasks are to run on.
pub fn assemble(
    config: &Config,
    metrics: &SinkMetrics,
    registry: &prometheus::Registry,
    dead_letters: &DeadLetterChannel,
    restored: Restored<'_>,
) -> Result<Sinks, Error> {
    let register = |collector: Box<dyn prometheus::core::Collector>| registry.register(collector);
    let mut delivering = Vec::new();
    let external_url = config
        .alerts
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.api.address));
    for (i, hook) in config.alerts.webhooks.iter().enumerate() {
        let name = hook.name(i);
        let sink = WebhookSink::new(
            name.clone(),
            hook.clone(),
            external_url.clone(),
            metrics.clone(),
            &format!("alerts.webhooks[{i}]"),
        )?;
        sink.seed(restored.firing, restored.resolved);
        delivering.push(handle(
            config,
            &name,
            DEFAULT_QUEUE_MAX_BYTES,
            Arc::new(sink),
            metrics,
        )?);
    }
    for (name, exporter) in config.sinks.otlp_exporters() {
        let sink = OtlpSink::new(name, exporter.clone())?;
        register(Box::new(sink.rejected.clone()))?;
        delivering.push(handle(
            config,
            name,
            exporter.queue_max_bytes,
            Arc::new(sink),
            metrics,
        )?);
    }
    if let Some(es) = &config.sinks.elasticsearch {
        let name = "elasticsearch";
        let es_metrics = EsMetrics::new();
        register(Box::new(es_metrics.dead_letters.clone()))?;
        register(Box::new(es_metrics.item_retries.clone()))?;
        let sink =
            ElasticsearchSink::new(name, es.clone(), Arc::new(dead_letters.clone()), es_metrics)?;
        delivering.push(handle(
            config,
            name,
            es.queue_max_bytes,
            Arc::new(sink),
            metrics,
        )?);
    }
    let remote_write = match &config.sinks.prometheus_remote_write {
        Some(rw) => {
            let name = "prometheus_remote_write";
            let sink = RemoteWriteSink::new(name, rw.clone())?;
            Some(handle(
                config,
                name,
                rw.queue_max_bytes,
                Arc::new(sink),
                metrics,
            )?)
        }
        None => None,
    };
    Ok(Sinks {
        delivering,
        remote_write,
    })
}

/// `sink` with its disk queue, `DATA_DIR/_sinks/<name>`, of at most `queue_max_bytes`.
fn handle(
    config: &Config,
    name: &str,
    queue_max_bytes: u64,
    sink: Arc<dyn Sink>,
    metrics: &SinkMetrics,
) -> Result<SinkHandle, Error> {
    let dir = config.storage.data_dir.join("_sinks").join(name);
    let queue = DiskQueue::open(&dir, queue_max_bytes)?;
    Ok(SinkHandle::new(sink, Arc::new(queue), metrics.clone()))
}

/// Queues a snapshot of every `/metrics` series for remote write each `interval`,
/// until `shutdown` resolves. Series without `job`/`instance` are labelled
/// `job="swarmscope"` and `instance` = the API's address, as a scrape would label them.
pub async fn snapshots(
    handle: SinkHandle,
    interval: std::time::Duration,
    telemetry: Arc<crate::telemetry::Telemetry>,
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
        let families = telemetry.gather();
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
