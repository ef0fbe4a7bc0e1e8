//! The standard workload: realistic OTLP trace requests of an agent swarm.
//!
//! Requests of `spans_per_request` spans from one of `services` services (5 resource
//! attributes each); traces of 10 spans (a root and 9 children); 10 attributes per
//! span typed as SDKs send them, two of them high-cardinality (a work-item id and a
//! user id), the rest low-cardinality (`http.request.method`, `http.route`,
//! `http.response.status_code`, `gen_ai.agent.id` over `agents` agents,
//! `gen_ai.request.model`, `gen_ai.usage.input_tokens`/`output_tokens`,
//! `coordination.team`); 5% of spans with status ERROR; a span event on 10% of spans;
//! random ids. Built before any clock starts. Every span carries a work-item id (and
//! so is a coordination event) and token usage unless `work_item_share` and
//! `token_usage_share` say otherwise; none says what happens to its item (claim,
//! progress, complete) unless `work_events` does.

#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Workload {
    pub spans_per_request: usize,
    pub services: usize,
    pub agents: usize,
    pub seed: u64,
    /// The share of spans carrying `coordination.work.id`, in [0, 1].
    pub work_item_share: f64,
    /// The share of spans carrying `gen_ai.usage.input_tokens` and `output_tokens`
    /// (each an LLM call), in [0, 1].
    pub token_usage_share: f64,
    /// The `work.claim`, `work.progress` and `work.complete` spans that carry a work
    /// item say so in `coordination.work.event`, so that agents hold items.
    pub work_events: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            spans_per_request: 500,
            services: 20,
            agents: 200,
            seed: 42,
            work_item_share: 1.0,
            token_usage_share: 1.0,
            work_events: false,
        }
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const ROUTES: [&str; 8] = [
    "/v1/work/{id}/claim",
    "/v1/work/{id}/progress",
    "/v1/work/{id}/complete",
    "/v1/plan",
    "/v1/chat/completions",
    "/v1/tools/search",
    "/v1/tools/code",
    "/v1/memory",
];
const MODELS: [&str; 4] = [
    "gpt-4o",
    "claude-sonnet-4",
    "llama-3.1-70b",
    "gemini-2.0-flash",
];
const TEAMS: [&str; 6] = ["red", "blue", "green", "gold", "ops", "research"];
const SPAN_NAMES: [&str; 10] = [
    "agent.run",
    "work.claim",
    "work.progress",
    "work.complete",
    "chat",
    "tool.search",
    "tool.code",
    "memory.read",
    "memory.write",
    "plan",
];

impl Workload {
    pub fn resource(&self, service: usize) -> Resource {
        Resource {
            attributes: vec![
                kv("service.name", s(format!("agent-service-{service:02}"))),
                kv("service.version", s("1.4.2")),
                kv("deployment.environment.name", s("production")),
                kv("host.name", s(format!("node-{}", service % 7))),
                kv("telemetry.sdk.language", s("python")),
            ],
            ..Default::default()
        }
    }

    /// `request` as new data: every id XORed with `cycle` (so parent links still
    /// match) and every timestamp moved on by `shift_nanos`.
    pub fn renewed(
        request: &ExportTraceServiceRequest,
        cycle: u64,
        shift_nanos: u64,
    ) -> ExportTraceServiceRequest {
        let mark = |id: &mut Vec<u8>| {
            for (b, c) in id.iter_mut().zip(cycle.to_le_bytes()) {
                *b ^= c;
            }
        };
        let mut request = request.clone();
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    mark(&mut span.trace_id);
                    mark(&mut span.span_id);
                    mark(&mut span.parent_span_id);
                    span.start_time_unix_nano += shift_nanos;
                    span.end_time_unix_nano += shift_nanos;
                    for event in &mut span.events {
                        event.time_unix_nano += shift_nanos;
                    }
                }
            }
        }
        request
    }

    /// `n` requests, deterministic for the seed; timestamps start at `start_nanos`.
    pub fn requests(&self, n: usize, start_nanos: u64) -> Vec<ExportTraceServiceRequest> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        (0..n)
            .map(|i| self.request(&mut rng, i, start_nanos + i as u64 * 1_000_000))
            .collect()
    }

    /// A span's 10 attributes (the work item's by `work_item_share`), drawn in order.
    fn attributes(
        &self,
        rng: &mut SmallRng,
        agent: usize,
        team: &str,
        error: bool,
    ) -> Vec<KeyValue> {
        let model = MODELS[rng.random_range(0..MODELS.len())];
        let mut attributes = vec![
            kv(
                "http.request.method",
                s(METHODS[rng.random_range(0..METHODS.len())]),
            ),
            kv("http.route", s(ROUTES[rng.random_range(0..ROUTES.len())])),
            kv(
                "http.response.status_code",
                Value::IntValue(if error { 500 } else { 200 }),
            ),
            kv("gen_ai.agent.id", s(format!("agent-{agent:03}"))),
            kv("gen_ai.request.model", s(model)),
            kv(
                "gen_ai.usage.input_tokens",
                Value::IntValue(rng.random_range(10..4000)),
            ),
            kv(
                "gen_ai.usage.output_tokens",
                Value::IntValue(rng.random_range(1..1500)),
            ),
            kv("coordination.team", s(team)),
            kv(
                "coordination.work.id",
                s(format!("W-{}", rng.random_range(0..1_000_000u32))),
            ),
            kv(
                "enduser.id",
                s(format!("user-{}", rng.random_range(0..100_000u32))),
            ),
        ];
        // With the default shares, no draw: the standard workload is unchanged.
        if self.work_item_share < 1.0 && !rng.random_bool(self.work_item_share) {
            attributes.retain(|a| a.key != "coordination.work.id");
        }
        if self.token_usage_share < 1.0 && !rng.random_bool(self.token_usage_share) {
            attributes.retain(|a| !a.key.starts_with("gen_ai.usage."));
        }
        attributes
    }

    fn request(&self, rng: &mut SmallRng, index: usize, t0: u64) -> ExportTraceServiceRequest {
        let service = index % self.services;
        let mut spans = Vec::with_capacity(self.spans_per_request);
        while spans.len() < self.spans_per_request {
            let trace_id: [u8; 16] = rng.random();
            let root_id: [u8; 8] = rng.random();
            let trace_start = t0 + rng.random_range(0..1_000_000u64);
            let agent = rng.random_range(0..self.agents);
            let team = TEAMS[agent % TEAMS.len()];
            for (child, name) in SPAN_NAMES.iter().enumerate() {
                if spans.len() == self.spans_per_request {
                    break;
                }
                let span_id: [u8; 8] = if child == 0 { root_id } else { rng.random() };
                let start = trace_start + child as u64 * 2_000_000;
                let duration = rng.random_range(50_000..50_000_000u64);
                let error = rng.random_bool(0.05);
                let mut attributes = self.attributes(rng, agent, team, error);
                let event = name.strip_prefix("work.").filter(|_| self.work_events);
                if let Some(event) = event {
                    if attributes.iter().any(|a| a.key == "coordination.work.id") {
                        attributes.push(kv("coordination.work.event", s(event)));
                    }
                }
                let events = if rng.random_bool(0.10) {
                    vec![span::Event {
                        time_unix_nano: start + duration / 2,
                        name: "gen_ai.content.completion".into(),
                        attributes: vec![kv("gen_ai.response.finish_reason", s("stop"))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                };
                spans.push(Span {
                    trace_id: trace_id.to_vec(),
                    span_id: span_id.to_vec(),
                    parent_span_id: if child == 0 {
                        Vec::new()
                    } else {
                        root_id.to_vec()
                    },
                    name: (*name).into(),
                    kind: if child == 0 { 2 } else { 3 },
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + duration,
                    attributes,
                    events,
                    status: Some(Status {
                        message: if error {
                            "upstream failed".into()
                        } else {
                            String::new()
                        },
                        code: if error {
                            status::StatusCode::Error as i32
                        } else {
                            0
                        },
                    }),
                    ..Default::default()
                });
            }
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "swarm.agents".into(),
                        version: "0.9.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}
