//! The pipeline's seams: derived rows committed with their source, observers off the
//! acknowledgement path, sinks fed after it, retention refusals reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus::Registry;
use swarmscope_processors::processor::{Processor, TableBatch};
use swarmscope_processors::schema::Table;
use swarmscope_sinks::queue::DiskQueue;
use swarmscope_sinks::sink::{
    Delivery, InProcess, RunnerTuning, Sink, SinkError, SinkHandle, SinkMetrics,
};
use swarmscope_sinks::store::{ParquetStore, StorageConfig};

use super::*;

const HOUR: u64 = 3_600_000_000_000;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn spans(names: &[&str], start: u64) -> ExportRequest {
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: (*name).into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            ..Default::default()
        })
        .collect();
    ExportRequest::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_owned(),
        ..StorageConfig::default()
    }
}

fn names(batch: &RecordBatch) -> Vec<String> {
    let column = batch
        .column_by_name("name")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .expect("name column");
    (0..column.len())
        .map(|i| column.value(i).to_owned())
        .collect()
}

fn stored_names(store: &ParquetStore, table: Table) -> Vec<String> {
    let snapshot = store.snapshot(table).unwrap();
    assert!(snapshot.files.is_empty(), "the tests never flush");
    snapshot.batches.iter().flat_map(names).collect()
}

/// Derives a span named `derived` from every span named `derive-me`: a stand-in for a
/// derived table that needs no schema of its own.
struct Echo;

impl Processor for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn derive(&self, input: &TableBatch) -> swarmscope_processors::Result<Vec<TableBatch>> {
        if input.table != Table::SPANS {
            return Ok(Vec::new());
        }
        let keep: arrow::array::BooleanArray = names(&input.batch)
            .iter()
            .map(|n| Some(n == "derive-me"))
            .collect();
        let picked = arrow::compute::filter_record_batch(&input.batch, &keep)?;
        let renamed = names(&picked)
            .iter()
            .map(|_| Some("derived"))
            .collect::<StringArray>();
        let index = picked.schema().index_of("name")?;
        let mut columns = picked.columns().to_vec();
        columns[index] = Arc::new(renamed);
        Ok(vec![TableBatch::new(
            Table::SPANS,
            RecordBatch::try_new(picked.schema(), columns)?,
        )])
    }
}

#[tokio::test]
async fn derived_rows_are_acknowledged_with_their_source_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::unregistered())
        .processor(Arc::new(Echo))
        .build()
        .unwrap();
    let outcome = pipeline
        .export(
            spans(&["a", "derive-me", "b"], now_nanos()),
            Transport::Http,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.accepted, 3,
        "derived rows are not the client's records"
    );
    let mut stored = stored_names(&store, Table::SPANS);
    stored.sort();
    assert_eq!(stored, ["a", "b", "derive-me", "derived"]);

    // A crash before any flush: the log replays source and derived rows together.
    store.close().unwrap();
    drop((pipeline, store));
    let reopened = ParquetStore::open(config(dir.path())).await.unwrap();
    let mut replayed = stored_names(&reopened, Table::SPANS);
    replayed.sort();
    assert_eq!(replayed, stored);
}

/// Observes by waiting for the test's permission for each batch.
struct Stuck {
    seen: AtomicUsize,
    permits: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Processor for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS
    }
    fn observe(&self, _input: &TableBatch) {
        let _ = self.permits.lock().unwrap().recv();
        self.seen.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_stuck_observer_delays_no_client_and_what_it_sheds_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let registry = Registry::new();
    let (permit, permits) = std::sync::mpsc::channel();
    let stuck = Arc::new(Stuck {
        seen: AtomicUsize::new(0),
        permits: Mutex::new(permits),
    });
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::register(&registry).unwrap())
        .processor(stuck.clone())
        .build()
        .unwrap();
    let exports = OBSERVER_QUEUE_BATCHES + 50;
    for _ in 0..exports {
        pipeline
            .export(spans(&["x"], now_nanos()), Transport::Grpc)
            .await
            .unwrap();
    }
    assert_eq!(store.buffered_rows(Table::SPANS), exports);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    // The observer holds one batch and its queue the next 256; the rest were shed.
    let shed = exports - OBSERVER_QUEUE_BATCHES - 1;
    assert!(
        text.contains(&format!(
            "swarmscope_processor_dropped_batches_total{{processor=\"stuck\",reason=\"queue_full\"}} {shed}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "swarmscope_receiver_accepted_spans_total{{receiver=\"otlp\",transport=\"grpc\"}} {exports}"
        )),
        "{text}"
    );
    // Let it go: it sees everything it was not made to shed.
    for _ in 0..exports {
        let _ = permit.send(());
    }
    until("the observer caught up", || {
        stuck.seen.load(Ordering::SeqCst) == OBSERVER_QUEUE_BATCHES + 1
    })
    .await;
    assert_eq!(
        stuck.seen.load(Ordering::SeqCst),
        OBSERVER_QUEUE_BATCHES + 1
    );
    // Queued batches were charged to the observers' memory budget and given back.
    until("the charge was given back", || {
        pipeline.observer_memory().used() == 0
    })
    .await;
}

/// Counts the batches it sees of the one table it observes.
struct Counting {
    table: Table,
    seen: AtomicUsize,
}

impl Processor for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn observes(&self, table: Table) -> bool {
        table == self.table
    }
    fn observe(&self, _input: &TableBatch) {
        self.seen.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_queue_filling_while_an_observer_gathers_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let counting = Arc::new(Counting {
        table: Table::SPANS,
        seen: AtomicUsize::new(0),
    });
    // A gathering far longer than the test waits: only the queue filling can end it.
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::unregistered())
        .processor(counting.clone())
        .observer_gather(Duration::from_secs(3600))
        .build()
        .unwrap();
    pipeline
        .export(spans(&["first"], now_nanos()), Transport::Grpc)
        .await
        .unwrap();
    until("the observer saw the first batch", || {
        counting.seen.load(Ordering::SeqCst) == 1
    })
    .await;
    // It now gathers: a burst of a quarter of its queue is taken without waiting it out.
    for _ in 0..OBSERVER_WAKE_AT {
        pipeline
            .export(spans(&["burst"], now_nanos()), Transport::Grpc)
            .await
            .unwrap();
    }
    until("the observer took the burst", || {
        counting.seen.load(Ordering::SeqCst) == 1 + OBSERVER_WAKE_AT
    })
    .await;
}

/// Waits (at most 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The nice value of the calling thread (Linux: field 19 of its `stat`).
#[cfg(target_os = "linux")]
fn thread_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields 3 onwards follow the command name, which ends at the last ')'.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(16).unwrap().parse().unwrap()
}

/// Records the nice value of the thread it observes on.
#[cfg(target_os = "linux")]
struct NiceProbe(Mutex<Option<i32>>);

#[cfg(target_os = "linux")]
impl Processor for NiceProbe {
    fn name(&self) -> &'static str {
        "nice_probe"
    }
    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS
    }
    fn observe(&self, _input: &TableBatch) {
        *self.0.lock().unwrap() = Some(thread_nice());
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn observers_yield_the_cpu_to_ingestion() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let probe = Arc::new(NiceProbe(Mutex::new(None)));
    let pipeline = Pipeline::builder(store, PipelineMetrics::unregistered())
        .processor(probe.clone())
        .build()
        .unwrap();
    pipeline
        .export(spans(&["x"], now_nanos()), Transport::Grpc)
        .await
        .unwrap();
    until("the probe observed", || probe.0.lock().unwrap().is_some()).await;
    let ingestion = thread_nice();
    let observed = *probe.0.lock().unwrap();
    // Only a privileged process may lower a nice value: run at a higher one than the
    // observers', this test has nothing to check.
    if ingestion <= OBSERVER_NICE {
        assert_eq!(
            observed,
            Some(OBSERVER_NICE),
            "ingestion runs at {ingestion}"
        );
    } else {
        eprintln!("skipped: the test runs at nice {ingestion} > {OBSERVER_NICE}");
    }
}

#[tokio::test]
async fn observers_get_only_their_tables_and_a_batch_is_charged_once_for_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let stuck = || {
        let (permit, permits) = std::sync::mpsc::channel::<()>();
        let stuck = Arc::new(Stuck {
            seen: AtomicUsize::new(0),
            permits: Mutex::new(permits),
        });
        (stuck, permit)
    };
    let ((first, let_first), (second, let_second)) = (stuck(), stuck());
    let metrics_only = Arc::new(Counting {
        table: Table::METRICS,
        seen: AtomicUsize::new(0),
    });
    let spans_only = Arc::new(Counting {
        table: Table::SPANS,
        seen: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::unregistered())
        .processor(first.clone())
        .processor(second.clone())
        .processor(metrics_only.clone())
        .processor(spans_only.clone())
        .build()
        .unwrap();
    let exports = 3;
    for _ in 0..exports {
        pipeline
            .export(spans(&["x", "y"], now_nanos()), Transport::Grpc)
            .await
            .unwrap();
    }
    until("the span counter saw every batch", || {
        spans_only.seen.load(Ordering::SeqCst) == exports
    })
    .await;
    assert_eq!(metrics_only.seen.load(Ordering::SeqCst), 0);
    let queued = pipeline.observer_memory().used();
    assert!(queued > 0, "the queued batches are charged");

    // One observer done with every batch: the other still holds them all, and with
    // them the whole charge.
    for _ in 0..exports {
        let_first.send(()).unwrap();
    }
    until("the first observer caught up", || {
        first.seen.load(Ordering::SeqCst) == exports
    })
    .await;
    assert_eq!(pipeline.observer_memory().used(), queued);

    for _ in 0..exports {
        let_second.send(()).unwrap();
    }
    until("the charge was given back", || {
        second.seen.load(Ordering::SeqCst) == exports && pipeline.observer_memory().used() == 0
    })
    .await;
}

#[tokio::test]
async fn a_store_at_its_memory_limit_costs_the_observers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A budget smaller than one request: the first is taken (nothing was buffered) and
    // fills it, as a saturating load keeps it full.
    let store = ParquetStore::open(StorageConfig {
        max_buffered_bytes: 1024,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let registry = Registry::new();
    let counting = Arc::new(Counting {
        table: Table::SPANS,
        seen: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::register(&registry).unwrap())
        .processor(counting.clone())
        .build()
        .unwrap();
    pipeline
        .export(spans(&["x", "y", "z"], now_nanos()), Transport::Grpc)
        .await
        .unwrap();
    assert!(store.memory().used() > store.memory().limit());
    until("the observer saw the batch", || {
        counting.seen.load(Ordering::SeqCst) == 1
    })
    .await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        !text.contains("swarmscope_processor_dropped_batches_total{"),
        "{text}"
    );
}

/// Keeps the names of every span it is sent.
#[derive(Default)]
struct Collecting(Mutex<Vec<String>>);

impl Sink for Collecting {
    fn name(&self) -> &str {
        "collecting"
    }
    fn accepts(&self, table: Table) -> bool {
        table == Table::SPANS
    }
    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
        let sent: Vec<String> = batches.iter().flat_map(|(_, b)| names(b)).collect();
        Ok(Box::new(InProcess::new(move || {
            self.0.lock().unwrap().extend(sent);
            Ok(())
        })))
    }
}

#[tokio::test]
async fn sinks_get_what_was_acknowledged_with_the_derived_rows_and_old_records_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetStore::open(config(dir.path())).await.unwrap();
    let sink = Arc::new(Collecting::default());
    let handle = SinkHandle::new(
        sink.clone(),
        Arc::new(DiskQueue::open(dir.path().join("_queues/collecting"), 1 << 20).unwrap()),
        SinkMetrics::unregistered(),
    );
    let runner = handle.runner(RunnerTuning::default());
    let pipeline = Pipeline::builder(store.clone(), PipelineMetrics::unregistered())
        .processor(Arc::new(Echo))
        .sink(handle)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));

    // Two spans older than the default 168 hours of retention, one fresh.
    let old = now_nanos() - 200 * HOUR;
    let outcome = pipeline
        .export(spans(&["old-1", "old-2"], old), Transport::Http)
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 0);
    assert_eq!(outcome.rejected, 2);
    assert_eq!(
        outcome.error_message.as_deref(),
        Some("2 spans older than retention_hours = 168 were not stored")
    );
    pipeline
        .export(spans(&["derive-me"], now_nanos()), Transport::Http)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.0.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "sink never got the batch"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(*sink.0.lock().unwrap(), ["derive-me", "derived"]);
    assert_eq!(stored_names(&store, Table::SPANS), ["derive-me", "derived"]);
}
