//! The pipeline: decoded OTLP in; the store, the processors and the sinks out.
//!
//! ```text
//!  receiver ─> admission (MemoryLimiter) ─> decode ─> convert (OTLP → Arrow)
//!     ─> retention filter ─> Processor::derive (each processor)
//!     ─> ParquetStore::append_all (source + derived rows, one log record)  = the ack
//!     ─> Processor::observe (each observing processor: own thread at nice 5, bounded queue)
//!     ─> Sink queues (each sink: own disk queue and task)
//! ```
//!
//! Receivers call [`Pipeline::export`] and answer their client by its result: `Ok`
//! means the valid records and every row derived from them are durable (in the store's
//! write-ahead log) and carries the partial-success count of the records not kept;
//! `Overloaded` means retry shortly. What follows the acknowledgement never waits: an
//! observer whose queue is full, or a sink whose disk queue is at its cap, sheds the
//! batch and counts it.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use swarmscope_processors::convert::{self, Converted};
use swarmscope_processors::otlp_proto;
use swarmscope_processors::processor::{Processor, TableBatch};
use swarmscope_processors::schema::Table;
use swarmscope_sinks::executor::lower_priority;
use swarmscope_sinks::frame::Record;
use swarmscope_sinks::memory::MemoryLimiter;
use swarmscope_sinks::sink::SinkHandle;
use swarmscope_sinks::store::ParquetStore;

use crate::telemetry::{PipelineMetrics, Transport};

/// One decoded export request of any signal.
pub enum ExportRequest {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    /// A trace request converted straight from protobuf ([`convert::spans_from_protobuf`]),
    /// and the request, which the write-ahead log keeps in place of the spans.
    Spans(Converted, Bytes),
}

impl ExportRequest {
    /// Decodes a protobuf `ExportTraceServiceRequest`: straight into Arrow when the
    /// request allows, otherwise through prost with invalid UTF-8 repaired
    /// ([`otlp_proto::decode`]). The second value is the warning for the client.
    pub fn traces_from_protobuf(
        bytes: Bytes,
    ) -> Result<(ExportRequest, Option<String>), prost::DecodeError> {
        // On a conversion error (a bug) the general path converts again, and
        // `export` reports the error it meets.
        if let Some(Ok(converted)) = convert::spans_from_protobuf(&bytes) {
            return Ok((ExportRequest::Spans(converted, bytes), None));
        }
        let decoded = otlp_proto::decode::<ExportTraceServiceRequest>(&bytes)?;
        let warning = decoded.warning();
        Ok((ExportRequest::Traces(decoded.request), warning))
    }
}

/// What became of an accepted request.
#[derive(Debug, Default, PartialEq)]
pub struct ExportOutcome {
    pub accepted: usize,
    pub rejected: i64,
    pub error_message: Option<String>,
}

impl ExportOutcome {
    /// Adds a warning for the client to the partial-success message.
    pub fn warn(&mut self, warning: Option<String>) {
        if let Some(w) = warning {
            self.error_message = Some(match self.error_message.take() {
                Some(m) => format!("{m}; {w}"),
                None => w,
            });
        }
    }

    /// Whether the answer carries `partial_success`: records were rejected, or there
    /// is a warning (then with a rejected count of 0, as OTLP allows).
    pub fn has_partial_success(&self) -> bool {
        self.rejected > 0 || self.error_message.is_some()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PipelineError {
    /// Over the memory budget: nothing was taken, the client should retry shortly.
    #[error("{0}")]
    Overloaded(String),
    /// The store could not take the batch; the client should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A request refused whole, for good: retrying it cannot succeed.
    #[error("{0}")]
    Invalid(String),
    /// A bug in conversion or in a processor; nothing was stored.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A processor that observes, with the bounded queue to its thread.
struct Observer {
    name: &'static str,
    /// The tables it observes: it is offered no other batch.
    tables: Vec<Table>,
    queue: SyncSender<Arc<Queued>>,
    /// `swarmscope_processor_queue_batches{processor}`, looked up once.
    depth: prometheus::IntGauge,
    /// Its thread, woken early when its queue fills while it gathers.
    thread: std::thread::Thread,
}

/// A batch queued for the observers, shared by all of them: its memory is charged once,
/// and given back when the last observer is done with it.
struct Queued {
    batch: TableBatch,
    memory: MemoryLimiter,
    size: usize,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.memory.release(self.size);
    }
}

struct Inner {
    store: ParquetStore,
    memory: MemoryLimiter,
    /// What batches queued for the observers may hold: a budget of their own, so that
    /// a store at its limit (as under a saturating load) does not cost the analytics
    /// batches, and an observer falling behind refuses no client.
    observer_memory: MemoryLimiter,
    processors: Vec<Arc<dyn Processor>>,
    observers: Vec<Observer>,
    sinks: Vec<SinkHandle>,
    metrics: PipelineMetrics,
}

impl Drop for Inner {
    /// Ends the observers' gathering: they find their queues closed once the senders
    /// are gone, and stop.
    fn drop(&mut self) {
        for observer in &self.observers {
            observer.thread.unpark();
        }
    }
}

/// Receivers → store, processors and sinks. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

/// Batches an observing processor may have waiting before new ones are shed.
pub const OBSERVER_QUEUE_BATCHES: usize = 256;

/// How long an observer's thread gathers batches after one has woken it. A batch sent
/// to a thread waiting on its queue wakes it: under load, a wake-up per request and
/// observer (a futex call on each side and, between cores, an interrupt, which a
/// hypervisor makes dear). Batches sent while the thread gathers wake nothing; the
/// analytics see them that much later, which is far inside the seconds their windows
/// span.
pub const OBSERVER_GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// Batches queued that end an observer's gathering at once: a burst (many agents'
/// exporters flushing together) is taken as it comes instead of filling the queue,
/// which would shed what does not fit.
pub const OBSERVER_WAKE_AT: usize = OBSERVER_QUEUE_BATCHES / 4;

/// The observers' threads yield to ingestion when both want the CPU (Linux nice value;
/// 5 weighs a thread about a third of a default one). What they do waits in a bounded
/// queue; a request cannot wait, and the flush that frees the store's memory for the
/// next ones runs beside them. They still weigh more than queries (10) and sinks (19).
pub const OBSERVER_NICE: i32 = 5;

/// Assembles a [`Pipeline`].
pub struct PipelineBuilder {
    store: ParquetStore,
    metrics: PipelineMetrics,
    processors: Vec<Arc<dyn Processor>>,
    sinks: Vec<SinkHandle>,
    gather: std::time::Duration,
}

impl PipelineBuilder {
    /// How long the observers gather batches once woken ([`OBSERVER_GATHER`] unless
    /// set).
    pub fn observer_gather(mut self, gather: std::time::Duration) -> Self {
        self.gather = gather;
        self
    }

    pub fn processor(mut self, processor: Arc<dyn Processor>) -> Self {
        self.processors.push(processor);
        self
    }

    pub fn sink(mut self, sink: SinkHandle) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Starts a thread per observing processor and returns the pipeline.
    pub fn build(self) -> std::io::Result<Pipeline> {
        let memory = self.store.memory().clone();
        let mut observers = Vec::new();
        for processor in &self.processors {
            let tables: Vec<Table> = Table::ALL
                .iter()
                .copied()
                .filter(|t| processor.observes(*t))
                .collect();
            if tables.is_empty() {
                continue;
            }
            let (queue, batches) = sync_channel::<Arc<Queued>>(OBSERVER_QUEUE_BATCHES);
            let name = processor.name();
            let processor = Arc::clone(processor);
            let depth = self
                .metrics
                .processor_queue
                .with_label_values(&[processor.name()]);
            let queued_depth = depth.clone();
            let gather = self.gather;
            let thread = std::thread::Builder::new()
                .name(format!("swarmscope-{name}"))
                .spawn(move || {
                    lower_priority(OBSERVER_NICE);
                    let observe = |queued: Arc<Queued>| {
                        queued_depth.dec();
                        processor.observe(&queued.batch);
                    };
                    // Ends when the pipeline (every sender) is gone. A batch that
                    // finds the thread waiting wakes it; then it gathers what arrives
                    // for `gather` (or until `OBSERVER_WAKE_AT` batches wait) before
                    // it looks again, and waits on the queue only once a look finds
                    // it empty.
                    while let Ok(queued) = batches.recv() {
                        observe(queued);
                        loop {
                            std::thread::park_timeout(gather);
                            let mut gathered = batches.try_iter().peekable();
                            if gathered.peek().is_none() {
                                break;
                            }
                            gathered.for_each(observe);
                        }
                    }
                })?
                .thread()
                .clone();
            observers.push(Observer {
                name,
                tables,
                queue,
                depth,
                thread,
            });
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                store: self.store,
                observer_memory: MemoryLimiter::new((memory.limit() / 2).max(1)),
                memory,
                processors: self.processors,
                observers,
                sinks: self.sinks,
                metrics: self.metrics,
            }),
        })
    }
}

impl Pipeline {
    /// A pipeline to `store` alone: no processors, no sinks.
    pub fn new(store: ParquetStore) -> Pipeline {
        Pipeline::builder(store, PipelineMetrics::unregistered())
            .build()
            .unwrap_or_else(|e| unreachable!("no observer threads to start: {e}"))
    }

    pub fn builder(store: ParquetStore, metrics: PipelineMetrics) -> PipelineBuilder {
        PipelineBuilder {
            store,
            metrics,
            processors: Vec::new(),
            sinks: Vec::new(),
            gather: OBSERVER_GATHER,
        }
    }

    pub fn store(&self) -> &ParquetStore {
        &self.inner.store
    }

    pub fn sinks(&self) -> &[SinkHandle] {
        &self.inner.sinks
    }

    /// The observers' memory budget: half of `storage.max_buffered_bytes`, apart from
    /// the store's.
    pub fn observer_memory(&self) -> &MemoryLimiter {
        &self.inner.observer_memory
    }

    /// Asked before a request is read and decoded: `Err(Overloaded)` while the memory
    /// budget has no room for another request like the last one.
    pub fn admission(&self, transport: Transport) -> Result<(), PipelineError> {
        self.inner.memory.admission().map_err(|e| {
            self.inner
                .metrics
                .refused_request(transport, "memory_limit")
                .inc();
            PipelineError::Overloaded(e.to_string())
        })
    }

    pub async fn export(
        &self,
        request: ExportRequest,
        transport: Transport,
    ) -> Result<ExportOutcome, PipelineError> {
        let started = Instant::now();
        let inner = &self.inner;
        // Each arm drops its decoded request once converted, before the batch is stored;
        // a request converted straight from protobuf keeps its bytes for the log.
        let (table, converted, request) = match request {
            ExportRequest::Traces(r) => (Table::SPANS, convert::spans_from_otlp(&r), None),
            ExportRequest::Metrics(r) => (Table::METRICS, convert::metrics_from_otlp(&r), None),
            ExportRequest::Logs(r) => (Table::LOGS, convert::logs_from_otlp(&r), None),
            ExportRequest::Spans(converted, bytes) => (Table::SPANS, Ok(converted), Some(bytes)),
        };
        let Converted {
            batch,
            rejected,
            error_message,
            ids,
        } = converted.map_err(|e| match e {
            swarmscope_processors::Error::TooLarge(m) => PipelineError::Invalid(m),
            e => PipelineError::Internal(e.to_string()),
        })?;
        let records = inner.metrics.records(table, transport);
        if rejected > 0 {
            tracing::warn!(
                table = table.name(),
                rejected,
                reason = error_message.as_deref().unwrap_or(""),
                "invalid records rejected"
            );
            records.refused("invalid").inc_by(rejected as u64);
        }
        let mut outcome = ExportOutcome {
            accepted: 0,
            rejected,
            error_message,
        };

        // What retention would delete at once is never acknowledged.
        let now = SystemTime::now();
        let (batch, expired) = inner
            .store
            .without_expired(table, batch, now)
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        if expired > 0 {
            records.refused("retention").inc_by(expired as u64);
            outcome.rejected += expired as i64;
            outcome.warn(Some(format!(
                "{expired} {} older than retention_hours = {} were not stored",
                records.noun,
                inner.store.config().retention_hours
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(outcome);
        }

        // The ids of a batch retention cut no longer match its rows: `with_ids` leaves
        // them out, and the observers read the ids' text.
        let source = TableBatch::new(table, batch).with_ids(ids);
        let mut batches = vec![source.clone()];
        for processor in &inner.processors {
            let derived = processor.derive(&source).map_err(|e| {
                PipelineError::Internal(format!("processor {}: {e}", processor.name()))
            })?;
            batches.extend(derived.into_iter().filter(|b| b.batch.num_rows() > 0));
        }
        let accepted = source.batch.num_rows();
        let entries = || batches.iter().map(|b| (b.table, b.batch.clone())).collect();
        let stored = match request {
            // The log keeps the request as received; the sinks' queues, when a sink
            // takes one of these tables, a record of the rows.
            Some(request) => {
                let for_sinks = self
                    .sinks_record(&batches)
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
                let first_hour = inner.store.retention_cutoff_hour(now);
                inner
                    .store
                    .append_request(request, first_hour, entries())
                    .await
                    .map(|()| for_sinks)
            }
            None => inner.store.append_record(entries()).await,
        };
        let record = match stored {
            Ok(record) => record,
            Err(e) => {
                let (reason, error) = match e {
                    swarmscope_sinks::Error::Backpressure { .. } => {
                        ("memory_limit", PipelineError::Overloaded(e.to_string()))
                    }
                    e => ("unavailable", PipelineError::Unavailable(e.to_string())),
                };
                records.refused(reason).inc_by(accepted as u64);
                return Err(error);
            }
        };
        records.accepted.inc_by(accepted as u64);
        outcome.accepted = accepted;
        inner
            .metrics
            .request_duration
            .with_label_values(&[transport.label(), records.signal])
            .observe(started.elapsed().as_secs_f64());

        // Acknowledged: from here on nothing waits and nothing fails the request.
        self.fan_out(&batches, record.as_ref());
        Ok(outcome)
    }

    /// Stores rows the collector derived on its own (health scores, alert
    /// transitions), then hands them to the sinks and observers as if received.
    pub async fn record(&self, batches: Vec<TableBatch>) -> Result<(), PipelineError> {
        let batches: Vec<TableBatch> = batches
            .into_iter()
            .filter(|b| b.batch.num_rows() > 0)
            .collect();
        if batches.is_empty() {
            return Ok(());
        }
        let record = self
            .inner
            .store
            .append_record(batches.iter().map(|b| (b.table, b.batch.clone())).collect())
            .await
            .map_err(|e| match e {
                swarmscope_sinks::Error::Backpressure { .. } => {
                    PipelineError::Overloaded(e.to_string())
                }
                e => PipelineError::Unavailable(e.to_string()),
            })?;
        self.fan_out(&batches, record.as_ref());
        Ok(())
    }

    /// The record of `batches` for the sinks' queues, if a sink takes one of their
    /// tables.
    fn sinks_record(&self, batches: &[TableBatch]) -> swarmscope_sinks::Result<Option<Record>> {
        let wanted = self
            .inner
            .sinks
            .iter()
            .any(|sink| batches.iter().any(|b| sink.accepts(b.table)));
        if !wanted {
            return Ok(None);
        }
        let entries: Vec<_> = batches.iter().map(|b| (b.table, &b.batch)).collect();
        Record::encode(&entries).map(Some)
    }

    /// Offers stored batches to every observing processor, and their record (the log's,
    /// or [`Pipeline::sinks_record`]'s) to every sink.
    fn fan_out(&self, batches: &[TableBatch], record: Option<&Record>) {
        let inner = &self.inner;
        if let Some(record) = record {
            let tables: Vec<Table> = batches.iter().map(|b| b.table).collect();
            for sink in &inner.sinks {
                sink.offer(&tables, record);
            }
        }
        for batch in batches {
            self.offer(batch);
        }
    }

    /// Queues `batch` for every observer of its table, or sheds it (counted) for an
    /// observer whose queue is full, and for all of them when their memory budget is.
    fn offer(&self, batch: &TableBatch) {
        let inner = &self.inner;
        let mut observers = inner
            .observers
            .iter()
            .filter(|o| o.tables.contains(&batch.table))
            .peekable();
        if observers.peek().is_none() {
            return;
        }
        let size = batch.batch.get_array_memory_size()
            + batch.ids.as_ref().map_or(0, |ids| ids.memory_size());
        if inner.observer_memory.try_charge(size).is_err() {
            return observers.for_each(|o| self.shed(o, "memory_limit"));
        }
        let queued = Arc::new(Queued {
            batch: batch.clone(),
            memory: inner.observer_memory.clone(),
            size,
        });
        for observer in observers {
            match observer.queue.try_send(Arc::clone(&queued)) {
                Ok(()) => {
                    observer.depth.inc();
                    if observer.depth.get() >= OBSERVER_WAKE_AT as i64 {
                        observer.thread.unpark();
                    }
                }
                Err(TrySendError::Full(_)) => self.shed(observer, "queue_full"),
                Err(TrySendError::Disconnected(_)) => self.shed(observer, "stopped"),
            }
        }
    }

    /// Counts a batch `observer` will not see.
    fn shed(&self, observer: &Observer, reason: &str) {
        let dropped = self
            .inner
            .metrics
            .processor_dropped
            .with_label_values(&[observer.name, reason]);
        dropped.inc();
        // Logged on the first drop and every thousandth, not per request.
        if dropped.get() % 1000 == 1 {
            tracing::warn!(
                processor = observer.name,
                reason,
                dropped = dropped.get(),
                "processor falling behind; batches shed"
            );
        }
    }
}

#[cfg(test)]
mod tests;
