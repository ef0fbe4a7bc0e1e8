//! OTLP trace load generator: drives any OTLP endpoint (swarmscope or another
//! collector) over gRPC or HTTP with the standard workload and reports accepted spans/s,
//! request latency and refusals.
//!
//! ```sh
//! cargo bench --bench loadgen -- --endpoint http://127.0.0.1:4317 --protocol grpc \
//!     --concurrency 4 --duration 20
//! ```
//!
//! Requests are encoded to protobuf before the clock starts and sent as raw bytes, so
//! the generator spends almost nothing per span.

mod workload;

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Protocol {
    Grpc,
    Http,
}

#[derive(Parser, Debug)]
#[command(about = "OTLP trace load generator (the standard workload)")]
struct Args {
    /// gRPC: http://host:4317; HTTP: http://host:4318 (/v1/traces is appended).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Concurrent connections, each sending one request at a time.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds to send for (ignored when --spans is given).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Stop after this many spans instead of after --duration.
    #[arg(long)]
    spans: Option<u64>,
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Distinct requests built up front and cycled through.
    #[arg(long, default_value_t = 200)]
    distinct_requests: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Bearer token, when the endpoint requires one.
    #[arg(long)]
    token: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    // `cargo bench` passes --bench; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A codec that sends pre-encoded protobuf bytes as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[derive(Default)]
struct Tally {
    accepted_spans: u64,
    rejected_spans: u64,
    refused_requests: u64,
    failed_requests: u64,
    latencies_us: Vec<u32>,
}

enum Outcome {
    Accepted(Bytes),
    Refused,
    Failed(String),
}

async fn send_grpc(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    body: Bytes,
    token: Option<&str>,
) -> Outcome {
    if let Err(e) = client.ready().await {
        return Outcome::Failed(e.to_string());
    }
    let mut request = tonic::Request::new(body);
    if let Some(t) = token {
        if let Ok(v) = format!("Bearer {t}").parse() {
            request.metadata_mut().insert("authorization", v);
        }
    }
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    match client.unary(request, path, RawCodec).await {
        Ok(r) => Outcome::Accepted(r.into_inner()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
            ) =>
        {
            Outcome::Refused
        }
        Err(s) => Outcome::Failed(s.to_string()),
    }
}

async fn send_http(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    token: Option<&str>,
) -> Outcome {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => Outcome::Accepted(b),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Ok(r) if r.status() == 503 || r.status() == 429 => Outcome::Refused,
        Ok(r) => Outcome::Failed(format!("HTTP {}", r.status())),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let workload = workload::Workload {
        spans_per_request: args.spans_per_request,
        seed: args.seed,
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let bodies: Vec<Bytes> = workload
        .requests(args.distinct_requests, now)
        .iter()
        .map(|r| Bytes::from(r.encode_to_vec()))
        .collect();
    let bytes_per_span = bodies.iter().map(|b| b.len()).sum::<usize>() as f64
        / (bodies.len() * args.spans_per_request) as f64;
    let per_request = args.spans_per_request as u64;
    let total_requests = args.spans.map(|s| s.div_ceil(per_request));
    let deadline = Duration::from_secs(args.duration);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let bodies = bodies.clone();
        let next = next.clone();
        let args_endpoint = args.endpoint.clone();
        let token = args.token.clone();
        let protocol = args.protocol;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut grpc = None;
            let http = reqwest::Client::new();
            let url = format!("{}/v1/traces", args_endpoint.trim_end_matches('/'));
            if protocol == Protocol::Grpc {
                let channel = tonic::transport::Endpoint::from_shared(args_endpoint)?
                    .connect()
                    .await?;
                grpc = Some(tonic::client::Grpc::new(channel));
            }
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match total_requests {
                    Some(total) if n >= total => break,
                    None if start.elapsed() >= deadline => break,
                    _ => {}
                }
                let body = bodies[(n as usize) % bodies.len()].clone();
                let sent = Instant::now();
                let outcome = match grpc.as_mut() {
                    Some(client) => send_grpc(client, body, token.as_deref()).await,
                    None => send_http(&http, &url, body, token.as_deref()).await,
                };
                tally
                    .latencies_us
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match outcome {
                    Outcome::Accepted(response) => {
                        let rejected = ExportTraceServiceResponse::decode(response)
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_spans.max(0) as u64);
                        tally.accepted_spans += per_request - rejected.min(per_request);
                        tally.rejected_spans += rejected;
                    }
                    Outcome::Refused => tally.refused_requests += 1,
                    Outcome::Failed(e) => {
                        if tally.failed_requests == 0 {
                            eprintln!("loadgen: request failed: {e}");
                        }
                        tally.failed_requests += 1;
                    }
                }
            }
            Ok::<Tally, Box<dyn std::error::Error + Send + Sync>>(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?.map_err(|e| e.to_string())?;
        total.accepted_spans += t.accepted_spans;
        total.rejected_spans += t.rejected_spans;
        total.refused_requests += t.refused_requests;
        total.failed_requests += t.failed_requests;
        total.latencies_us.extend(t.latencies_us);
    }
    let elapsed = start.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let spans_per_sec = total.accepted_spans as f64 / elapsed;
    let (p50, p99) = (
        percentile(&total.latencies_us, 0.50),
        percentile(&total.latencies_us, 0.99),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "protocol": format!("{:?}", args.protocol).to_lowercase(),
                "concurrency": args.concurrency,
                "seconds": elapsed,
                "requests": total.latencies_us.len(),
                "accepted_spans": total.accepted_spans,
                "rejected_spans": total.rejected_spans,
                "refused_requests": total.refused_requests,
                "failed_requests": total.failed_requests,
                "spans_per_sec": spans_per_sec,
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
                "otlp_bytes_per_span": bytes_per_span,
            })
        );
    } else {
        println!(
            "protocol           {:?} x{}",
            args.protocol, args.concurrency
        );
        println!("elapsed            {elapsed:.2} s");
        println!("requests           {}", total.latencies_us.len());
        println!(
            "accepted spans     {} ({spans_per_sec:.0} spans/s)",
            total.accepted_spans
        );
        println!("rejected spans     {}", total.rejected_spans);
        println!(
            "refused requests   {} (503/UNAVAILABLE)",
            total.refused_requests
        );
        println!("failed requests    {}", total.failed_requests);
        println!("latency p50 / p99  {p50:.2} ms / {p99:.2} ms");
        println!("OTLP bytes/span    {bytes_per_span:.1}");
    }
    Ok(())
}
