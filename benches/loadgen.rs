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
//!
//! `--unique` makes every cycle through the distinct requests new data (ids changed,
//! timestamps moved on by `--cycle-shift-secs`), re-encoding each request: for
//! building large datasets, not for measuring throughput. `--probe-api` measures the
//! time from a request's acknowledgement to its span being returned by SQL.

mod workload;

mod probe {
    //! Acknowledged → visible in SQL: one-span requests timestamped now, in a partition
    //! of their own when the load's timestamps are offset, found by trace id.

    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::trace::v1::{
        trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use rand::Rng;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    /// Probes until `until`; returns each probe's microseconds from ack to visible.
    pub async fn run(
        endpoint: String,
        api: String,
        token: Option<String>,
        every: Duration,
        until: Instant,
    ) -> Result<Vec<u32>, Error> {
        let mut client = TraceServiceClient::connect(endpoint).await?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/query", api.trim_end_matches('/'));
        let mut samples = Vec::new();
        while Instant::now() + every < until {
            tokio::time::sleep(every).await;
            let trace_id: [u8; 16] = rand::rng().random();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let start = now.as_nanos() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: trace_id.to_vec(),
                            span_id: vec![7; 8],
                            name: "probe".into(),
                            start_time_unix_nano: start,
                            end_time_unix_nano: start + 1_000,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let mut request = tonic::Request::new(request);
            if let Some(t) = &token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse()?);
            }
            if client.export(request).await.is_err() {
                // Refused under load: no acknowledgement, nothing to time.
                continue;
            }
            let acked = Instant::now();
            let sql = format!(
                "SELECT count(*) AS n FROM spans WHERE start_time >= to_timestamp_nanos({}) \
                 AND trace_id = '{}'",
                start - start % 1_000_000_000,
                hex::encode(trace_id)
            );
            loop {
                let mut query = http.post(&url).json(&serde_json::json!({ "sql": sql }));
                if let Some(t) = &token {
                    query = query.bearer_auth(t);
                }
                let answer: serde_json::Value =
                    query.send().await?.error_for_status()?.json().await?;
                if answer["rows"][0][0].as_i64() == Some(1) {
                    samples.push(acked.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    break;
                }
                if acked.elapsed() > Duration::from_secs(30) {
                    return Err(format!(
                        "probe span {} not visible after 30 s",
                        hex::encode(trace_id)
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(samples)
    }
}

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
    /// The share of spans carrying `coordination.work.id` (each a coordination event).
    #[arg(long, default_value_t = 1.0)]
    work_item_share: f64,
    /// The share of spans carrying `gen_ai.usage.*` token counts (each an LLM call).
    #[arg(long, default_value_t = 1.0)]
    token_usage_share: f64,
    /// The work.claim, work.progress and work.complete spans carry
    /// `coordination.work.event` (claim, progress, complete), so agents hold items.
    #[arg(long)]
    work_events: bool,
    /// Bearer token, when the endpoint requires one.
    #[arg(long)]
    token: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Timestamps start this many seconds before now.
    #[arg(long, default_value_t = 0)]
    start_offset_secs: u64,
    /// New ids and later timestamps for every cycle through the distinct requests.
    #[arg(long)]
    unique: bool,
    /// With --unique: how far each cycle's timestamps move on.
    #[arg(long, default_value_t = 3600)]
    cycle_shift_secs: u64,
    /// The swarmscope query API (http://host:8080): while the load runs, send a
    /// one-span probe request every --probe-interval-ms and time how long after its
    /// acknowledgement SQL returns it (gRPC only).
    #[arg(long)]
    probe_api: Option<String>,
    #[arg(long, default_value_t = 200)]
    probe_interval_ms: u64,
    /// A refused request (503 / UNAVAILABLE) is sent again after this many ms.
    #[arg(long, default_value_t = 20)]
    retry_ms: u64,
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
    // reqwest's TLS (the probe's client) has no built-in crypto provider.
    swarmscope_sinks::tls::install_provider();
    let args = Args::parse();
    let workload = workload::Workload {
        spans_per_request: args.spans_per_request,
        seed: args.seed,
        work_item_share: args.work_item_share.clamp(0.0, 1.0),
        token_usage_share: args.token_usage_share.clamp(0.0, 1.0),
        work_events: args.work_events,
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let start_nanos = now - args.start_offset_secs * 1_000_000_000;
    let requests = workload.requests(args.distinct_requests, start_nanos);
    let bodies: Vec<Bytes> = requests
        .iter()
        .map(|r| Bytes::from(r.encode_to_vec()))
        .collect();
    let requests = std::sync::Arc::new(if args.unique { requests } else { Vec::new() });
    let cycle_shift = args.cycle_shift_secs * 1_000_000_000;
    let bytes_per_span = bodies.iter().map(|b| b.len()).sum::<usize>() as f64
        / (bodies.len() * args.spans_per_request) as f64;
    let per_request = args.spans_per_request as u64;
    let total_requests = args.spans.map(|s| s.div_ceil(per_request));
    let deadline = Duration::from_secs(args.duration);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    let start = Instant::now();
    let probe = args.probe_api.clone().map(|api| {
        tokio::spawn(probe::run(
            args.endpoint.clone(),
            api,
            args.token.clone(),
            Duration::from_millis(args.probe_interval_ms),
            start + deadline,
        ))
    });
    let shared = Shared {
        bodies,
        requests,
        next,
        endpoint: args.endpoint.clone(),
        token: args.token.clone(),
        protocol: args.protocol,
        retry: Duration::from_millis(args.retry_ms),
        total_requests,
        per_request,
        cycle_shift,
        start,
        deadline,
    };
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(connection(shared.clone())))
        .collect();
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
    let mut visible_us = match probe {
        Some(probe) => probe.await?.map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    visible_us.sort_unstable();
    let visible = (
        percentile(&visible_us, 0.50),
        percentile(&visible_us, 0.99),
        percentile(&visible_us, 1.0),
    );
    let visible = (visible, visible_us.len());
    report(&args, &total, elapsed, bytes_per_span, visible);
    Ok(())
}

/// Prints what the run measured, as JSON with `--json`.
fn report(
    args: &Args,
    total: &Tally,
    elapsed: f64,
    bytes_per_span: f64,
    (visible, probes): ((f64, f64, f64), usize),
) {
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
                "probes": probes,
                "visible_p50_ms": visible.0,
                "visible_p99_ms": visible.1,
                "visible_max_ms": visible.2,
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
            "refusals           {} (503/UNAVAILABLE, each retried after --retry-ms)",
            total.refused_requests
        );
        println!("failed requests    {}", total.failed_requests);
        println!("latency p50 / p99  {p50:.2} ms / {p99:.2} ms");
        println!("OTLP bytes/span    {bytes_per_span:.1}");
        if probes > 0 {
            println!(
                "ack to visible     p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes)",
                visible.0, visible.1, visible.2, probes
            );
        }
    }
}

/// What every connection shares: the requests, the counter of those sent, and when to
/// stop.
#[derive(Clone)]
struct Shared {
    bodies: Vec<Bytes>,
    requests: std::sync::Arc<
        Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    >,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    endpoint: String,
    token: Option<String>,
    protocol: Protocol,
    retry: Duration,
    total_requests: Option<u64>,
    per_request: u64,
    cycle_shift: u64,
    start: Instant,
    deadline: Duration,
}

/// One connection's requests, until the count or the time is up.
async fn connection(s: Shared) -> Result<Tally, Box<dyn std::error::Error + Send + Sync>> {
    let mut tally = Tally::default();
    let mut grpc = None;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/traces", s.endpoint.trim_end_matches('/'));
    if s.protocol == Protocol::Grpc {
        let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone())?
            .connect()
            .await?;
        grpc = Some(tonic::client::Grpc::new(channel));
    }
    loop {
        let n = s.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match s.total_requests {
            Some(total) if n >= total => break,
            None if s.start.elapsed() >= s.deadline => break,
            _ => {}
        }
        let (index, cycle) = ((n as usize) % s.bodies.len(), n / s.bodies.len() as u64);
        let body = if s.requests.is_empty() || cycle == 0 {
            s.bodies[index].clone()
        } else {
            Bytes::from(
                workload::Workload::renewed(&s.requests[index], cycle, cycle * s.cycle_shift)
                    .encode_to_vec(),
            )
        };
        // A refused request is sent again after --retry-ms, as an OTLP exporter
        // retries, until it is taken or (with --duration) the time is up.
        let outcome = loop {
            let sent = Instant::now();
            let outcome = match grpc.as_mut() {
                Some(client) => send_grpc(client, body.clone(), s.token.as_deref()).await,
                None => send_http(&http, &url, body.clone(), s.token.as_deref()).await,
            };
            tally
                .latencies_us
                .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            if !matches!(outcome, Outcome::Refused) {
                break outcome;
            }
            tally.refused_requests += 1;
            if s.total_requests.is_none() && s.start.elapsed() >= s.deadline {
                break Outcome::Refused;
            }
            tokio::time::sleep(s.retry).await;
        };
        tally.count(outcome, s.per_request);
    }
    Ok(tally)
}

impl Tally {
    /// Counts a request's outcome.
    fn count(&mut self, outcome: Outcome, per_request: u64) {
        match outcome {
            Outcome::Accepted(response) => {
                let rejected = ExportTraceServiceResponse::decode(response)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                self.accepted_spans += per_request - rejected.min(per_request);
                self.rejected_spans += rejected;
            }
            Outcome::Refused => {}
            Outcome::Failed(e) => {
                if self.failed_requests == 0 {
                    eprintln!("loadgen: request failed: {e}");
                }
                self.failed_requests += 1;
            }
        }
    }
}
