//! The simulated swarm: teams of agents claiming, progressing, completing and failing
//! work items with story points, calling models (with token usage) and tools, now and
//! then claiming an item another agent holds; and, between `anomaly_from` and
//! `anomaly_until` of the run, a `tools` service that fails most calls and answers
//! eight times slower.
//!
//! Deterministic: for a seed, every tick produces the same spans (ids, attributes,
//! durations); only their timestamps follow the clock.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// splitmix64: small, fast and good enough for a simulation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

pub const TEAMS: [&str; 3] = ["red", "blue", "green"];
const ROLES: [&str; 3] = ["planner", "coder", "reviewer"];
const MODELS: [(&str, &str); 3] = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-20250514"),
    ("openai", "gpt-4.1"),
];
const WORK_TYPES: [&str; 3] = ["feature", "bug", "chore"];
const POINTS: [i64; 5] = [1, 2, 3, 5, 8];
/// The service whose calls go wrong during the anomaly.
pub const ANOMALOUS_SERVICE: &str = "tools";

struct Agent {
    id: String,
    team: &'static str,
    role: &'static str,
    /// The item held, with the ticks of work it still needs.
    work: Option<(String, u32)>,
}

pub struct Swarm {
    rng: Rng,
    agents: Vec<Agent>,
    next_item: u64,
    next_id: u64,
    /// Counters for the progress line.
    pub spans: u64,
    pub completed: u64,
    pub failed: u64,
    pub conflicts: u64,
}

/// Whether this tick of the run falls in the injected anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Normal,
    Anomaly,
}

fn kv(key: &str, value: impl Into<any_value::Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(value.into()),
        }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// One agent's step of a tick: what its spans share.
struct Turn {
    trace: u128,
    root_id: u64,
    start: u64,
    agent_id: String,
    team: &'static str,
    role: &'static str,
}

impl Swarm {
    pub fn new(agents: usize, seed: u64) -> Swarm {
        let agents = (0..agents.max(1))
            .map(|i| Agent {
                id: format!("agent-{i:02}"),
                team: TEAMS[i % TEAMS.len()],
                role: ROLES[(i / TEAMS.len()) % ROLES.len()],
                work: None,
            })
            .collect();
        Swarm {
            rng: Rng::new(seed),
            agents,
            next_item: 1,
            next_id: 1,
            spans: 0,
            completed: 0,
            failed: 0,
            conflicts: 0,
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id ^ (self.rng.next() & 0xFFFF_0000_0000_0000)
    }

    /// One tick of every agent's work at `now_ns`: the spans, by service.
    pub fn tick(&mut self, now_ns: u64, phase: Phase) -> ExportTraceServiceRequest {
        let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
        let mut emit =
            |service: &str, span: Span| match by_service.iter_mut().find(|(s, _)| s == service) {
                Some((_, spans)) => spans.push(span),
                None => by_service.push((service.to_owned(), vec![span])),
            };
        for a in 0..self.agents.len() {
            let (turn, root) = self.turn(a, now_ns);
            emit(turn.role, root);
            // A model call on most steps.
            if let Some(call) = self.model_call(&turn) {
                emit(turn.role, call);
            }
            if let Some((call, served)) = self.tool_call(&turn, phase) {
                emit(turn.role, call);
                emit(ANOMALOUS_SERVICE, served);
            }
        }
        let resource_spans = by_service
            .into_iter()
            .map(|(service, spans)| {
                self.spans += spans.len() as u64;
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            text("service.name", &service),
                            text("service.namespace", "swarm-demo"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// Agent `a`'s step of this tick, ending at `now_ns`, and its root span.
    fn turn(&mut self, a: usize, now_ns: u64) -> (Turn, Span) {
        let trace = (u128::from(self.rng.next()) << 64) | u128::from(self.id());
        let root_id = self.id();
        let (event, item, points) = self.step(a);
        let agent = &self.agents[a];
        let (agent_id, team, role) = (agent.id.clone(), agent.team, agent.role);
        let step_ms = self.rng.between(20, 120);
        let start = now_ns - step_ms * 1_000_000;
        let mut attributes = vec![
            text("gen_ai.agent.id", &agent_id),
            text("coordination.team", team),
            text("coordination.work.id", &item),
            text("coordination.work.event", event),
        ];
        if event == "claim" {
            attributes.push(text(
                "coordination.work.type",
                WORK_TYPES[self.rng.below(3) as usize],
            ));
            attributes.push(int("coordination.work.story_points", points));
        }
        let root = Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: root_id.to_be_bytes().to_vec(),
            name: format!("{role} {event}"),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: now_ns,
            attributes,
            ..Default::default()
        };
        let turn = Turn {
            trace,
            root_id,
            start,
            agent_id,
            team,
            role,
        };
        (turn, root)
    }

    /// A model call under `turn`'s root, on most steps.
    fn model_call(&mut self, turn: &Turn) -> Option<Span> {
        if !self.rng.chance(0.7) {
            return None;
        }
        let (provider, model) = MODELS[self.rng.below(MODELS.len() as u64) as usize];
        let input = self.rng.between(300, 6_000) as i64;
        let output = self.rng.between(50, 1_200) as i64;
        let cached = if self.rng.chance(0.4) { input / 2 } else { 0 };
        let ms = self.rng.between(200, 900);
        Some(Span {
            trace_id: turn.trace.to_be_bytes().to_vec(),
            span_id: self.id().to_be_bytes().to_vec(),
            parent_span_id: turn.root_id.to_be_bytes().to_vec(),
            name: format!("chat {model}"),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: turn.start,
            end_time_unix_nano: turn.start + ms * 1_000_000,
            attributes: vec![
                text("gen_ai.agent.id", &turn.agent_id),
                text("coordination.team", turn.team),
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.provider.name", provider),
                text("gen_ai.request.model", model),
                int("gen_ai.usage.input_tokens", input),
                int("gen_ai.usage.output_tokens", output),
                int("gen_ai.usage.cache_read.input_tokens", cached),
            ],
            ..Default::default()
        })
    }

    /// A tool call on most steps: a client span in the agent's service and the tool
    /// service's server span under it, so the call graph has an edge (failed with the
    /// tool). In the anomaly the tool fails most calls and answers eight times slower.
    fn tool_call(&mut self, turn: &Turn, phase: Phase) -> Option<(Span, Span)> {
        if !self.rng.chance(0.8) {
            return None;
        }
        let anomalous = phase == Phase::Anomaly;
        let ms = self.rng.between(15, 60) * if anomalous { 8 } else { 1 };
        let fails = self.rng.chance(if anomalous { 0.6 } else { 0.005 });
        let status = fails.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "tool failed".into(),
        });
        let call_id = self.id();
        let call = Span {
            trace_id: turn.trace.to_be_bytes().to_vec(),
            span_id: call_id.to_be_bytes().to_vec(),
            parent_span_id: turn.root_id.to_be_bytes().to_vec(),
            name: "execute_tool".into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: turn.start,
            end_time_unix_nano: turn.start + (ms + 2) * 1_000_000,
            // The tool's failure is the tool service's: the agents' own error rates
            // stay as they were.
            attributes: vec![text("gen_ai.agent.id", &turn.agent_id)],
            ..Default::default()
        };
        let served = Span {
            trace_id: turn.trace.to_be_bytes().to_vec(),
            span_id: self.id().to_be_bytes().to_vec(),
            parent_span_id: call_id.to_be_bytes().to_vec(),
            name: "run tool".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: turn.start + 1_000_000,
            end_time_unix_nano: turn.start + (ms + 1) * 1_000_000,
            status,
            attributes: vec![text(
                "gen_ai.agent.id",
                &format!("{ANOMALOUS_SERVICE}-runner"),
            )],
            ..Default::default()
        };
        Some((call, served))
    }

    /// What agent `a` does this tick: (event, item, story points).
    fn step(&mut self, a: usize) -> (&'static str, String, i64) {
        let held = self.agents[a].work.take();
        match held {
            None => {
                // Now and then an agent grabs an item someone else holds.
                let taken: Vec<String> = self
                    .agents
                    .iter()
                    .filter_map(|o| o.work.as_ref().map(|(w, _)| w.clone()))
                    .collect();
                if !taken.is_empty() && self.rng.chance(0.05) {
                    let item = taken[self.rng.below(taken.len() as u64) as usize].clone();
                    self.conflicts += 1;
                    return ("claim", item, 0);
                }
                let item = format!("WI-{:05}", self.next_item);
                self.next_item += 1;
                let points = POINTS[self.rng.below(POINTS.len() as u64) as usize];
                let ticks = self.rng.between(3, 12) as u32;
                self.agents[a].work = Some((item.clone(), ticks));
                ("claim", item, points)
            }
            Some((item, 0)) => {
                if self.rng.chance(0.9) {
                    self.completed += 1;
                    ("complete", item, 0)
                } else {
                    self.failed += 1;
                    ("fail", item, 0)
                }
            }
            Some((item, left)) => {
                self.agents[a].work = Some((item.clone(), left - 1));
                ("progress", item, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_same_seed_gives_the_same_swarm() {
        let run = |seed| {
            let mut s = Swarm::new(9, seed);
            (0..50)
                .map(|i| {
                    s.tick(1_000_000_000 + i * 200_000_000, Phase::Normal)
                        .encode_to_vec()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn agents_claim_complete_fail_and_conflict() {
        let mut s = Swarm::new(12, 1);
        for i in 0..400 {
            s.tick(1_000_000_000 + i * 200_000_000, Phase::Normal);
        }
        assert!(s.completed > 100, "{}", s.completed);
        assert!(s.failed > 5, "{}", s.failed);
        assert!(s.conflicts > 0);
    }
}
