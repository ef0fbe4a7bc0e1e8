//! The [`Sink`] trait and the runtime around every sink: a disk-backed queue, batching
//! and retries, as the OpenTelemetry Collector's exporterhelper wraps its exporters.
//!
//! The pipeline offers each acknowledged request to every sink that accepts one of its
//! tables by appending the request's write-ahead log record, as the log wrote it, to the
//! sink's [`DiskQueue`]; that never waits for the sink, and nothing is encoded twice. A
//! [`SinkRunner`] task per sink reads the queue in order, hands up to
//! `max_batch_records` records at a time to [`Sink::send`], and acknowledges them once
//! sent. A retryable failure is tried again with exponential backoff and jitter (or
//! after the `Retry-After` the sink reports), for as long as it takes: the backlog waits
//! on disk, capped by `queue_max_bytes`, past which new records are dropped and
//! counted. A permanent failure is counted, logged, and passed over.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use swarmscope_processors::schema::Table;

use crate::frame::Record;
use crate::queue::DiskQueue;

/// Why a send failed, and so what the runner does next.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again (a timeout, 429, 5xx, UNAVAILABLE), after `after` if the
    /// endpoint said so.
    #[error("{message}")]
    Retryable {
        message: String,
        after: Option<Duration>,
    },
    /// Will never succeed (a 400 for the payload, say): counted and passed over.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    /// An HTTP endpoint's refusal of a whole request, by the rule every sink follows
    /// (the remote-write specification's and Elasticsearch's): 429 and 5xx are worth
    /// trying again, after `Retry-After` when given; any other status will never pass.
    pub fn from_status(status: u16, message: String, after: Option<Duration>) -> SinkError {
        match status {
            429 | 500.. => SinkError::Retryable { message, after },
            _ => SinkError::Permanent(message),
        }
    }
}

/// Where acknowledged batches go besides the store: Jaeger, Prometheus remote write,
/// Elasticsearch, ... Implementations say what they take, how to encode it and how to
/// send it (a [`Delivery`]); queueing, batching and the one retry policy are the
/// [`SinkRunner`]'s.
pub trait Sink: Send + Sync + 'static {
    /// The sink's name in metrics, logs and its queue's folder.
    fn name(&self) -> &str;

    /// Whether batches of `table` go to this sink: what the pipeline hands it, and what
    /// it reads of its queue (a queued record holds every table of its request).
    fn accepts(&self, table: Table) -> bool;

    /// Encodes `batches` (in order) once into what the runner sends, and sends again
    /// after a retryable failure. An `Err` here is the payload's fault: permanent.
    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError>;
}

/// One encoded send, and what of it is left to deliver.
#[async_trait::async_trait]
pub trait Delivery: Send {
    /// Sends what is left. `Ok` means the endpoint has it all (or refused some of it for
    /// good, and the sink kept that); a retryable error leaves in the delivery only
    /// what still has to go, which the runner sends again after its backoff, so what
    /// was delivered is not sent twice.
    async fn send(&mut self) -> Result<(), SinkError>;
}

/// A delivery that hands its batches over in process, at once: for sinks whose
/// endpoint is inside the collector (the webhooks' alert groups).
pub struct InProcess<F>(Option<F>);

impl<F: FnOnce() -> Result<(), SinkError> + Send> InProcess<F> {
    pub fn new(hand_over: F) -> InProcess<F> {
        InProcess(Some(hand_over))
    }
}

#[async_trait::async_trait]
impl<F: FnOnce() -> Result<(), SinkError> + Send> Delivery for InProcess<F> {
    async fn send(&mut self) -> Result<(), SinkError> {
        self.0.take().map_or(Ok(()), |hand_over| hand_over())
    }
}

/// The backlog a sink keeps on disk by default (each sink's `queue_max_bytes`); past
/// it new records are dropped, counted.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 1 << 30;

/// How a runner batches and retries: the same for every sink, not configured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerTuning {
    /// Records (accepted requests) handed to one send at most.
    pub max_batch_records: usize,
    /// The first retry waits this long; each further one twice as long.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RunnerTuning {
    fn default() -> Self {
        RunnerTuning {
            // Requests of an SDK's default batch (512 spans) make sends of about 4,000
            // spans: a bulk body or an export of a few MiB, held briefly.
            max_batch_records: 8,
            initial_backoff_ms: 100,
            max_backoff_ms: 30_000,
        }
    }
}

/// The sinks' metrics, labelled by sink.
#[derive(Clone)]
pub struct SinkMetrics {
    sent: IntCounterVec,
    failed: IntCounterVec,
    retries: IntCounterVec,
    queue_bytes: IntGaugeVec,
    dropped: IntCounterVec,
}

impl SinkMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<SinkMetrics> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let queue_bytes = IntGaugeVec::new(
            Opts::new(
                "swarmscope_sink_queue_bytes",
                "Bytes waiting in a sink's disk queue.",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(queue_bytes.clone()))?;
        Ok(SinkMetrics {
            sent: counter(
                "swarmscope_sink_sent_total",
                "Records a sink delivered.",
                &["sink"],
            )?,
            failed: counter(
                "swarmscope_sink_failed_total",
                "Records a sink could not deliver and passed over.",
                &["sink"],
            )?,
            retries: counter(
                "swarmscope_sink_retries_total",
                "Sends a sink tried again.",
                &["sink"],
            )?,
            queue_bytes,
            dropped: counter(
                "swarmscope_sink_dropped_total",
                "Records not queued for a sink, by reason.",
                &["sink", "reason"],
            )?,
        })
    }

    /// Counts a delivery of `sink`'s that will be tried again.
    pub fn retried(&self, sink: &str) {
        self.retries.with_label_values(&[sink]).inc();
    }

    /// Metrics registered nowhere, for tests and tools.
    pub fn unregistered() -> SinkMetrics {
        SinkMetrics::register(&Registry::new())
            .unwrap_or_else(|_| unreachable!("a fresh registry has no names"))
    }
}

/// One sink with its queue, offered batches by the pipeline.
pub struct SinkHandle {
    pub sink: Arc<dyn Sink>,
    pub queue: Arc<DiskQueue>,
    metrics: SinkMetrics,
}

impl SinkHandle {
    pub fn new(sink: Arc<dyn Sink>, queue: Arc<DiskQueue>, metrics: SinkMetrics) -> SinkHandle {
        SinkHandle {
            sink,
            queue,
            metrics,
        }
    }

    /// Whether the sink takes rows of `table`.
    pub fn accepts(&self, table: Table) -> bool {
        self.sink.accepts(table)
    }

    /// Queues `record` (of batches of `tables`) when the sink accepts one of its
    /// tables; never waits for the sink. The sink reads only the tables it accepts. A
    /// failure to queue is counted and logged, not passed on: the batches are stored
    /// already.
    pub fn offer(&self, tables: &[Table], record: &Record) {
        if tables.iter().any(|t| self.accepts(*t)) {
            self.queued(self.queue.push_record(record));
        }
    }

    /// Queues `batches` whatever the sink accepts: for a sink whose records the
    /// collector makes itself (remote write's snapshots).
    pub fn enqueue(&self, batches: &[(Table, &RecordBatch)]) {
        self.queued(self.queue.push(batches));
    }

    /// Counts and logs what became of a record offered to the queue.
    fn queued(&self, pushed: crate::Result<bool>) {
        let name = self.sink.name();
        match pushed {
            Ok(true) => {}
            Ok(false) => {
                let dropped = self
                    .metrics
                    .dropped
                    .with_label_values(&[name, "queue_full"]);
                dropped.inc();
                // Logged on the first drop and every thousandth, not per request.
                if dropped.get() % 1000 == 1 {
                    tracing::warn!(
                        sink = name,
                        dropped = dropped.get(),
                        "sink queue full (queue_max_bytes); records dropped"
                    );
                }
            }
            Err(e) => {
                self.metrics
                    .dropped
                    .with_label_values(&[name, "queue_error"])
                    .inc();
                tracing::error!(sink = name, error = %e, "cannot queue a record for the sink");
            }
        }
        self.metrics
            .queue_bytes
            .with_label_values(&[name])
            .set(self.queue.backlog_bytes() as i64);
    }

    /// The task that delivers this sink's queue until `shutdown` resolves.
    pub fn runner(&self, config: RunnerTuning) -> SinkRunner {
        SinkRunner {
            sink: Arc::clone(&self.sink),
            queue: Arc::clone(&self.queue),
            metrics: self.metrics.clone(),
            config,
        }
    }
}

/// Delivers one sink's queue; see the module documentation.
pub struct SinkRunner {
    sink: Arc<dyn Sink>,
    queue: Arc<DiskQueue>,
    metrics: SinkMetrics,
    config: RunnerTuning,
}

/// How often an idle runner looks at its queue without being woken (a push it missed).
const IDLE_POLL: Duration = Duration::from_secs(1);

impl SinkRunner {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let name = self.sink.name().to_owned();
        let mut backoff = self.initial_backoff();
        loop {
            let reads = |table| self.sink.accepts(table);
            let entries = match self.queue.peek_where(self.config.max_batch_records, &reads) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "cannot read the sink queue");
                    Vec::new()
                }
            };
            self.metrics
                .queue_bytes
                .with_label_values(&[&name])
                .set(self.queue.backlog_bytes() as i64);
            let Some(end) = entries.last().map(|e| e.end) else {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.queue.pushed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            let batches: Vec<(Table, RecordBatch)> =
                entries.into_iter().flat_map(|e| e.batches).collect();
            let records = batches.len() as u64;
            // A delivery that completed is acknowledged even when the stop came at the
            // same time: its records would otherwise be sent again after a restart.
            let delivered = tokio::select! {
                biased;
                delivered = self.deliver(&name, &batches, &mut backoff) => delivered,
                _ = &mut shutdown => return,
            };
            match delivered {
                Ok(()) => self
                    .metrics
                    .sent
                    .with_label_values(&[&name])
                    .inc_by(records),
                Err(e) => {
                    self.metrics
                        .failed
                        .with_label_values(&[&name])
                        .inc_by(records);
                    tracing::error!(sink = %name, error = %e, "sink refused records for good; passed over");
                }
            }
            self.ack(&name, end);
        }
    }

    /// Encodes `batches` once and sends them until delivered, retrying with
    /// exponential backoff and jitter (or after the `Retry-After` the sink reports);
    /// `Err` when the sink refused them for good.
    async fn deliver(
        &self,
        name: &str,
        batches: &[(Table, RecordBatch)],
        backoff: &mut Duration,
    ) -> Result<(), SinkError> {
        // An encoding failure is the payload's: it will never pass.
        let mut delivery = self.sink.encode(batches)?;
        loop {
            match delivery.send().await {
                Ok(()) => {
                    *backoff = self.initial_backoff();
                    return Ok(());
                }
                Err(e @ SinkError::Permanent(_)) => {
                    *backoff = self.initial_backoff();
                    return Err(e);
                }
                Err(SinkError::Retryable { message, after }) => {
                    self.metrics.retries.with_label_values(&[name]).inc();
                    tracing::debug!(sink = %name, error = %message, "sink send failed; retrying");
                    let wait = after.unwrap_or_else(|| jitter(*backoff));
                    *backoff =
                        (*backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn ack(&self, name: &str, end: crate::queue::Position) {
        if let Err(e) = self.queue.ack(end) {
            tracing::error!(sink = %name, error = %e, "cannot move the sink queue's cursor");
        }
    }

    fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.config.initial_backoff_ms)
    }
}

/// How long an HTTP endpoint asked to wait, from `Retry-After` in seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `d` scaled by a factor in [0.5, 1.5), so that many clients retrying together
/// spread out.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    // The clock's nanoseconds are noise enough for spreading retries.
    let factor = 0.5 + f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, first as value};
    use std::sync::Mutex;

    /// Offers `batches` as the pipeline does: their log record, with their tables.
    fn offer(handle: &SinkHandle, batches: &[(Table, &RecordBatch)]) {
        let tables: Vec<Table> = batches.iter().map(|(t, _)| *t).collect();
        handle.offer(&tables, &Record::encode(batches).unwrap());
    }

    /// Takes spans only; refuses the first `fail` sends as retryable, and value 13 for
    /// good.
    struct Recording {
        received: Mutex<Vec<i64>>,
        fail: Mutex<usize>,
    }

    impl Sink for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn accepts(&self, table: Table) -> bool {
            table == Table::SPANS
        }
        fn encode<'a>(
            &'a self,
            batches: &[(Table, RecordBatch)],
        ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
            let values: Vec<i64> = batches.iter().map(|(_, b)| value(b)).collect();
            if values.contains(&13) {
                return Err(SinkError::Permanent("bad record".into()));
            }
            Ok(Box::new(RecordingDelivery { sink: self, values }))
        }
    }

    struct RecordingDelivery<'a> {
        sink: &'a Recording,
        values: Vec<i64>,
    }

    #[async_trait::async_trait]
    impl Delivery for RecordingDelivery<'_> {
        async fn send(&mut self) -> Result<(), SinkError> {
            {
                let mut fail = self.sink.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(SinkError::Retryable {
                        message: "unavailable".into(),
                        after: Some(Duration::from_millis(1)),
                    });
                }
            }
            self.sink
                .received
                .lock()
                .unwrap()
                .extend(std::mem::take(&mut self.values));
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_record_arrives_once_in_order_through_retries_and_only_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Recording {
            received: Mutex::default(),
            fail: Mutex::new(3),
        });
        let registry = Registry::new();
        let metrics = SinkMetrics::register(&registry).unwrap();
        let handle = SinkHandle::new(
            sink.clone(),
            Arc::new(DiskQueue::open(dir.path(), 1 << 20).unwrap()),
            metrics,
        );
        // One record a send: a permanent failure passes over the whole send.
        let config = RunnerTuning {
            max_batch_records: 1,
            ..RunnerTuning::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(handle.runner(config).run(async {
            let _ = stopped.await;
        }));
        for n in 0..6 {
            let (b, logs) = (batch(n), batch(100 + n));
            offer(&handle, &[(Table::SPANS, &b), (Table::LOGS, &logs)]);
        }
        let single = batch(13);
        offer(&handle, &[(Table::SPANS, &single)]);
        let last = batch(6);
        offer(&handle, &[(Table::SPANS, &last)]);
        tokio::time::timeout(Duration::from_secs(10), async {
            while sink.received.lock().unwrap().len() < 7 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("delivered");
        stop.send(()).unwrap();
        runner.await.unwrap();
        assert_eq!(*sink.received.lock().unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("swarmscope_sink_sent_total{sink=\"recording\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("swarmscope_sink_failed_total{sink=\"recording\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("swarmscope_sink_retries_total{sink=\"recording\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("swarmscope_sink_queue_bytes{sink=\"recording\"} 0"),
            "{text}"
        );
    }
}
