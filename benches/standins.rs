//! The sinks' endpoints for the sinks benchmark (`benches/sinks.sh`), in one process:
//! an OTLP gRPC trace receiver (what a Jaeger v2 collector takes), an Elasticsearch
//! `_bulk` endpoint and a Prometheus remote-write endpoint. Each counts what it took and
//! answers as the real server does when all is well; `GET /stats` returns the counts.
//!
//! ```sh
//! cargo bench --bench standins -- --otlp 127.0.0.1:24317 --http 127.0.0.1:29200
//! ```
//!
//! The OTLP receiver is also the decode-and-drop floor of `benches/e2e.sh`: a tonic
//! server that decodes each request with prost and keeps nothing but a count, the least
//! any OTLP receiver can do, given every core with `--worker-threads`.
//!
//! They do as little as the protocol allows (the `_bulk` stand-in counts lines rather
//! than parsing documents), since they share the machine with the server under test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use swarmscope_sinks::prometheus::remote_write::WriteRequest;
use tonic::codec::CompressionEncoding;

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    documents: AtomicU64,
    bulk_requests: AtomicU64,
    samples: AtomicU64,
    remote_writes: AtomicU64,
}

#[derive(Clone, Default)]
struct Otlp(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One `create` answer per action line (every other line of the body).
async fn bulk(State(counts): State<Arc<Counts>>, body: Bytes) -> impl IntoResponse {
    let lines = body.iter().filter(|b| **b == b'\n').count();
    let items = lines / 2;
    counts.documents.fetch_add(items as u64, Ordering::Relaxed);
    counts.bulk_requests.fetch_add(1, Ordering::Relaxed);
    let item =
        r#"{"create":{"_index":"x","_id":"1","_version":1,"result":"created","status":201}}"#;
    let mut answer = String::with_capacity(40 + items * (item.len() + 1));
    answer.push_str(r#"{"took":1,"errors":false,"items":["#);
    for i in 0..items {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str(item);
    }
    answer.push_str("]}");
    ([("content-type", "application/json")], answer)
}

async fn remote_write(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(request) = WriteRequest::decode(raw.as_slice()) else {
        return StatusCode::BAD_REQUEST;
    };
    let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
    counts.samples.fetch_add(samples as u64, Ordering::Relaxed);
    counts.remote_writes.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn stats(State(counts): State<Arc<Counts>>) -> impl IntoResponse {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    axum::Json(serde_json::json!({
        "spans": n(&counts.spans),
        "documents": n(&counts.documents),
        "bulk_requests": n(&counts.bulk_requests),
        "samples": n(&counts.samples),
        "remote_writes": n(&counts.remote_writes),
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut otlp_address = "127.0.0.1:24317".to_owned();
    let mut http_address = "127.0.0.1:29200".to_owned();
    // One by default: the stand-ins share the machine with the server under test.
    let mut worker_threads = 1;
    // HTTP/2's SETTINGS_MAX_FRAME_SIZE for the OTLP receiver; tonic's default (16 KiB)
    // unless given, to measure the floor as swarmscope's receiver is set up too.
    let mut max_frame_size: Option<u32> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--otlp" => otlp_address = args.next().ok_or("--otlp needs an address")?,
            "--http" => http_address = args.next().ok_or("--http needs an address")?,
            "--worker-threads" => {
                worker_threads = args
                    .next()
                    .ok_or("--worker-threads needs a number")?
                    .parse()?
            }
            "--max-frame-size" => {
                max_frame_size = Some(
                    args.next()
                        .ok_or("--max-frame-size needs a number of bytes")?
                        .parse()?,
                )
            }
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let counts = Arc::new(Counts::default());
        let otlp = TraceServiceServer::new(Otlp(Arc::clone(&counts)))
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(64 << 20);
        let grpc = tonic::transport::Server::builder()
            .max_frame_size(max_frame_size)
            .add_service(otlp)
            .serve(otlp_address.parse()?);
        let app = axum::Router::new()
            .route("/_bulk", post(bulk))
            .route("/api/v1/write", post(remote_write))
            .route("/stats", get(stats))
            .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
            .with_state(counts);
        let listener = tokio::net::TcpListener::bind(&http_address).await?;
        let http = axum::serve(listener, app);
        tokio::select! {
            r = grpc => r?,
            r = http => r?,
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
