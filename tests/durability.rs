//! Acknowledged means kept (docs/receiving.md): under `kill -9` at random moments, and under
//! overload, where the collector refuses instead of growing.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

const SPANS_PER_REQUEST: usize = 50;

/// Request `id`: `n` spans tagged with `request.id`, so each request can be counted.
fn request(id: u64, n: usize) -> ExportTraceServiceRequest {
    let tag = KeyValue {
        key: "request.id".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!("r{id}"))),
        }),
        ..Default::default()
    };
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: [id.to_be_bytes(), [0xab; 8]].concat(),
            span_id: (id * 1000 + i + 1).to_be_bytes().to_vec(),
            name: format!("op-{}", i % 5),
            start_time_unix_nano: 1_700_000_000_000_000_000 + id * 1_000_000 + i,
            end_time_unix_nano: 1_700_000_000_000_000_000 + id * 1_000_000 + i + 900,
            attributes: vec![
                tag.clone(),
                KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".repeat(200))),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .collect();
    common::trace_request(spans)
}

/// A load: `senders` clients push distinct requests (ids from `next`) until `stop_at`
/// is reached, `stop` is raised or the connection breaks; every request answered OK is
/// recorded in `acked`, every UNAVAILABLE counted in `refused` and retried.
///
/// A refused connection to a killed server is UNAVAILABLE too, so a sender retries
/// only until `stop` says the server is gone.
#[derive(Clone)]
struct Load {
    endpoint: String,
    senders: usize,
    next: Arc<AtomicU64>,
    stop_at: u64,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    spans_per_request: usize,
}

fn start_senders(rt: &tokio::runtime::Runtime, load: &Load) -> Vec<tokio::task::JoinHandle<()>> {
    let Load {
        endpoint,
        senders,
        next,
        stop_at,
        acked,
        refused,
        stop,
        spans_per_request,
    } = load.clone();
    (0..senders)
        .map(|_| {
            let endpoint = endpoint.clone();
            let next = next.clone();
            let acked = acked.clone();
            let refused = refused.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                // Bounded waits: after a kill, a request must fail rather than wait on
                // a reconnecting channel; a request that times out is not acknowledged.
                let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint)
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(20))
                    .connect()
                    .await
                else {
                    return;
                };
                let mut client = TraceServiceClient::new(channel);
                let mut id = next.fetch_add(1, Ordering::SeqCst);
                while id < stop_at && !stop.load(Ordering::SeqCst) {
                    match client.export(request(id, spans_per_request)).await {
                        Ok(_) => {
                            acked.lock().expect("lock").insert(id);
                            id = next.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            // Refused under load: the same request again, shortly.
                            refused.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // The server is gone (killed).
                        Err(s) => {
                            eprintln!("sender stops: {s}");
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

/// How many spans each request id has in the store.
fn stored_per_request(server: &Server) -> std::collections::BTreeMap<u64, i64> {
    server
        .rows("SELECT attributes['request.id'], count(*) FROM spans WHERE attributes['request.id'] IS NOT NULL GROUP BY 1")
        .into_iter()
        .map(|r| {
            let id = r[0].as_str().and_then(|s| s.strip_prefix('r')).and_then(|s| s.parse().ok()).expect("id");
            (id, r[1].as_i64().expect("count"))
        })
        .collect()
}

#[test]
fn acknowledged_spans_survive_kill_9_exactly_once() {
    kill_9_rounds(String::new());
}

/// The same with the tables on S3 (moto's S3 API): the write-ahead log stays local, the
/// kills land between uploads, commits and the log's truncation.
#[test]
fn on_s3_acknowledged_spans_survive_kill_9_exactly_once() {
    let Some(s3) = common::s3::S3::start("the kill -9 test on S3") else {
        return;
    };
    kill_9_rounds(s3.storage_lines(&s3.bucket()));
}

/// Three rounds of load, each ended by `kill -9`, then a check that every acknowledged
/// request is stored exactly once; `storage` is more `[storage]` lines.
fn kill_9_rounds(storage: String) {
    let (_tmp, dir) = temp_data_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    // Different kill points: after a few acks, mid-flush (small flush_rows), and later.
    for (round, (kill_after, flush_rows)) in [(7u64, 100_000usize), (40, 300), (120, 1_000)]
        .into_iter()
        .enumerate()
    {
        let server = Server::start_with(
            &dir,
            Options {
                flush_rows: Some(flush_rows),
                storage_extra: storage.clone(),
                ..Default::default()
            },
        );
        // What earlier rounds acknowledged is all there, once.
        check_exactly_once(
            &server,
            &acked.lock().expect("lock"),
            round,
            SPANS_PER_REQUEST,
        );
        let target = acked.lock().expect("lock").len() as u64 + kill_after;
        let load = Load {
            endpoint: server.grpc.clone(),
            senders: 4,
            next: next.clone(),
            stop_at: u64::MAX,
            acked: acked.clone(),
            refused: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            spans_per_request: SPANS_PER_REQUEST,
        };
        let senders = start_senders(&rt, &load);
        common::eventually("enough acknowledgements", || {
            (acked.lock().expect("lock").len() as u64 >= target).then_some(())
        });
        server.kill9();
        load.stop.store(true, Ordering::SeqCst);
        for s in senders {
            let _ = rt.block_on(s);
        }
    }
    let server = Server::start_with(
        &dir,
        Options {
            storage_extra: storage,
            ..Default::default()
        },
    );
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 167, "{}", acked.len());
    check_exactly_once(&server, &acked, 3, SPANS_PER_REQUEST);
}

fn check_exactly_once(server: &Server, acked: &BTreeSet<u64>, round: usize, per_request: usize) {
    let stored = stored_per_request(server);
    for id in acked {
        assert_eq!(
            stored.get(id).copied(),
            Some(per_request as i64),
            "round {round}: acknowledged request {id} lost or duplicated"
        );
    }
    // Requests in flight at the kill may be stored or not, but never in part or twice.
    for (id, count) in &stored {
        assert_eq!(
            *count, per_request as i64,
            "round {round}: request {id} stored {count} times over"
        );
    }
}

#[test]
fn overload_is_refused_memory_stays_bounded_and_nothing_acknowledged_is_lost() {
    let (_tmp, dir) = temp_data_dir();
    // One request of 500 spans takes a few hundred KiB as Arrow, so two or three in
    // flight at once pass the 512 KiB budget.
    let budget = 512 * 1024;
    let per_request = 500;
    let server = Server::start_with(
        &dir,
        Options {
            // A slow flush (zstd 19) so that the senders outrun it.
            storage_extra: format!("max_buffered_bytes = {budget}\nzstd_level = 19\n"),
            ..Default::default()
        },
    );
    let (baseline, _) = server.rss_kib();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(AtomicU64::new(0));
    // A real OTLP exporter (opentelemetry-otlp, batching, retrying on UNAVAILABLE as
    // the server's RetryInfo says) sends during the flood and must deliver everything.
    let sdk_spans = 5_000;
    let provider = rt.block_on(async {
        use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&server.grpc)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::default().with_max_retries(20))
            .build()
            .expect("exporter");
        let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(sdk_spans * 4)
            .with_max_export_batch_size(500)
            .build();
        let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(config)
        .build();
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build()
    });
    let total = 100;
    let load = Load {
        endpoint: server.grpc.clone(),
        senders: 8,
        next: Arc::new(AtomicU64::new(0)),
        stop_at: total,
        acked: acked.clone(),
        refused: refused.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        spans_per_request: per_request,
    };
    let senders = start_senders(&rt, &load);
    {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let _guard = rt.enter();
        let tracer = provider.tracer("sdk");
        for _ in 0..sdk_spans {
            tracer.in_span("sdk-span", |_| {});
        }
    }
    for s in senders {
        rt.block_on(s).expect("sender");
    }
    provider.shutdown().expect("the SDK delivered its spans");
    // Peak RSS of ingestion alone, before any query runs.
    let (_, peak) = server.rss_kib();
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name = 'sdk-span'"),
        sdk_spans as i64
    );
    let refusals = refused.load(Ordering::SeqCst);
    eprintln!("refused {refusals} times; peak RSS {peak} KiB over a baseline of {baseline} KiB");
    assert!(
        refusals > 0,
        "a sender faster than the flush was never refused"
    );
    assert_eq!(
        acked.lock().expect("lock").len() as u64,
        total,
        "retried requests end up accepted"
    );
    // 50,000 spans (tens of MiB as Arrow) went through a 512 KiB budget; the process
    // grew by what requests being decoded and Parquet encoding take, not by what an
    // unbounded buffer would hold.
    let grown_mib = (peak.saturating_sub(baseline)) / 1024;
    assert!(
        grown_mib < 32,
        "peak RSS grew by {grown_mib} MiB over a 512 KiB budget"
    );
    check_exactly_once(&server, &acked.lock().expect("lock"), 0, per_request);
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name <> 'sdk-span'"),
        total as i64 * per_request as i64
    );
}
