//! Soak load: steady OTLP traffic from agents that live briefly, for the long-life
//! benchmark (`benches/soak.sh`). `--concurrent` agents work at once, in turn; each
//! claims a work item, works on it in steps (a turn span, a model call to a provider
//! nobody instruments, a tool call paired with the tool service's server span) and
//! completes it after `--spans-per-agent` spans, when a new agent id takes its place. Timestamps are now. Every `--sample` seconds it
//! prints one Markdown row: the server's RSS, the health inputs `agents_known` and
//! `agents_live`, and the liveness component.
//!
//! ```sh
//! cargo bench --bench soak -- --endpoint http://127.0.0.1:14317 \
//!     --api http://127.0.0.1:18080 --pid "$pid" --rate 3000 --duration 1800
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:14317")]
    endpoint: String,
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    api: String,
    /// The server's process id, for its RSS.
    #[arg(long)]
    pid: u32,
    /// Spans per second.
    #[arg(long, default_value_t = 3000)]
    rate: u64,
    /// Spans each agent sends before a new agent id takes over.
    #[arg(long, default_value_t = 20)]
    spans_per_agent: u64,
    /// Agents working at once.
    #[arg(long, default_value_t = 200)]
    concurrent: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 1800)]
    duration: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60)]
    sample: u64,
    // `cargo bench` passes this to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

const TEAMS: [&str; 5] = ["red", "blue", "green", "gold", "grey"];
const STEP_SPANS: u64 = 4;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// The swarm: the agents working (their number and the steps each has done), whose
/// turn it is, and how many agents there have been.
struct Soak {
    steps_per_agent: u64,
    working: Vec<(u64, u64)>,
    turn: usize,
    agents: u64,
    next_id: u64,
}

impl Soak {
    fn id(&mut self) -> Vec<u8> {
        self.next_id += 1;
        self.next_id.to_be_bytes().to_vec()
    }

    /// One step of the current agent's work, ending at `now`: (agent's spans, tool's).
    fn step(&mut self, now: u64) -> (Vec<Span>, Span) {
        let slot = self.turn % self.working.len();
        self.turn = self.turn.wrapping_add(1);
        if self.working[slot].1 == self.steps_per_agent {
            self.working[slot] = (self.agents, 0);
            self.agents += 1;
        }
        let (agent, step) = self.working[slot];
        self.working[slot].1 += 1;
        let steps = self.steps_per_agent;
        let agent_id = format!("soak-agent-{agent}");
        let team = TEAMS[(agent % TEAMS.len() as u64) as usize];
        let event = match step {
            0 => "claim",
            s if s + 1 == steps => "complete",
            _ => "progress",
        };
        let trace = [self.id(), self.id()].concat();
        let (turn_id, model_id, call_id, served_id) = (self.id(), self.id(), self.id(), self.id());
        let span =
            |id: &[u8], parent: &[u8], name: &str, kind: SpanKind, ms: u64, attributes| Span {
                trace_id: trace.clone(),
                span_id: id.to_vec(),
                parent_span_id: parent.to_vec(),
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: now - ms * 1_000_000,
                end_time_unix_nano: now,
                attributes,
                ..Default::default()
            };
        let who = || {
            vec![
                text("gen_ai.agent.id", &agent_id),
                text("coordination.team", team),
            ]
        };
        let mut turn = who();
        turn.extend([
            text("coordination.work.id", &format!("item-{agent}")),
            text("coordination.work.event", event),
            int("coordination.work.story_points", 3),
        ]);
        let mut chat = who();
        chat.extend([
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 1_200),
            int("gen_ai.usage.output_tokens", 300),
        ]);
        let agent_spans = vec![
            span(&turn_id, &[], "agent turn", SpanKind::Internal, 900, turn),
            span(
                &model_id,
                &turn_id,
                "chat gpt-4o-mini",
                SpanKind::Client,
                600,
                chat,
            ),
            span(
                &call_id,
                &turn_id,
                "execute_tool",
                SpanKind::Client,
                40,
                who(),
            ),
        ];
        let served = span(
            &served_id,
            &call_id,
            "run tool",
            SpanKind::Server,
            30,
            vec![],
        );
        (agent_spans, served)
    }

    fn request(&mut self, spans: u64) -> ExportTraceServiceRequest {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let (mut agents, mut tools) = (Vec::new(), Vec::new());
        for _ in 0..spans.div_ceil(STEP_SPANS) {
            let (a, t) = self.step(now);
            agents.extend(a);
            tools.push(t);
        }
        let resource = |service: &str, spans| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![resource("crew", agents), resource("tools", tools)],
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The overall health score's liveness inputs and component.
async fn liveness(http: &reqwest::Client, api: &str) -> (String, String, String) {
    let url = format!("{}/api/v1/health?scope=overall", api.trim_end_matches('/'));
    let body: serde_json::Value = match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let score = &body["scores"][0];
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    (
        show(&score["inputs"]["agents_known"]),
        show(&score["inputs"]["agents_live"]),
        show(&score["components"]["liveness"]),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // reqwest's TLS has no built-in crypto provider.
    swarmscope_sinks::tls::install_provider();
    let args = Args::parse();
    let mut client = TraceServiceClient::connect(args.endpoint.clone()).await?;
    let http = reqwest::Client::new();
    let concurrent = args.concurrent.max(1);
    let steps_per_agent = (args.spans_per_agent / STEP_SPANS).max(1);
    let mut soak = Soak {
        steps_per_agent,
        // Staggered: the agents finish one after another, not all in one round.
        working: (0..concurrent as u64)
            .map(|a| (a, a % steps_per_agent))
            .collect(),
        turn: 0,
        agents: concurrent as u64,
        next_id: 0,
    };
    let tick = Duration::from_millis(100);
    let per_tick = (args.rate / 10).max(1);
    let started = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut refused = 0u64;
    println!("| minute | RSS MiB | agents ids so far | agents_known | agents_live | liveness | refused requests |");
    println!("|---|---|---|---|---|---|---|");
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < Duration::from_secs(args.duration) {
        ticker.tick().await;
        if started.elapsed() >= next_sample {
            let (known, live, component) = liveness(&http, &args.api).await;
            println!(
                "| {:.0} | {:.0} | {} | {known} | {live} | {component} | {refused} |",
                started.elapsed().as_secs_f64() / 60.0,
                rss_mib(args.pid),
                soak.agents,
            );
            next_sample += Duration::from_secs(args.sample);
        }
        if client.export(soak.request(per_tick)).await.is_err() {
            refused += 1;
        }
    }
    Ok(())
}
