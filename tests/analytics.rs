//! Swarm analytics against the real binary: a scripted stream of coordination spans
//! (conflicting claims, a restart in the middle) read back exactly through SQL and the
//! API, and GenAI usage priced into `genai_usage`.

mod common;

use common::{blocking_get, int, temp_data_dir, text, Options, Server};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value};

/// 2026-01-01T10:00:00Z, in milliseconds.
const T0_MS: u64 = 1_767_261_600_000;

/// A span ending `at_s` seconds after T0, with `attributes`.
fn span(n: u64, at_s: u64, attributes: Vec<KeyValue>) -> Span {
    let end = (T0_MS + at_s * 1000) * 1_000_000;
    Span {
        trace_id: [[7u8; 8], n.to_be_bytes()].concat(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: "work".into(),
        start_time_unix_nano: end - 5_000_000,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

/// A coordination span: `agent` does `event` on `item` for team red.
fn work(n: u64, at_s: u64, agent: &str, item: &str, event: &str, more: Vec<KeyValue>) -> Span {
    let mut attributes = vec![
        text("gen_ai.agent.id", agent),
        text("coordination.team", "red"),
        text("coordination.work.id", item),
        text("coordination.work.event", event),
    ];
    attributes.extend(more);
    span(n, at_s, attributes)
}

fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = blocking_get(url).expect("GET");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn coordination_history_conflicts_and_velocity_are_exact_across_a_restart() {
    let (_tmp, dir) = temp_data_dir();
    let options = Options {
        extra: "[processors.coordination]\nlease_timeout_ms = 600000\n".into(),
        ..Default::default()
    };
    let server = Server::start_with(&dir, options.clone());
    server.send_spans(
        "agents",
        vec![
            work(
                1,
                0,
                "a",
                "W1",
                "claim",
                vec![int("coordination.work.story_points", 5)],
            ),
            work(2, 1, "b", "W1", "claim", vec![]),
            work(
                3,
                2,
                "b",
                "W2",
                "claim",
                vec![int("coordination.work.story_points", 3)],
            ),
        ],
    );
    server.send_spans("agents", vec![work(4, 61, "a", "W1", "complete", vec![])]);
    assert!(server.stop().success());

    // The claims held before the restart are still held after it.
    let server = Server::start_with(&dir, options);
    server.send_spans(
        "agents",
        vec![
            work(5, 70, "c", "W2", "claim", vec![]),
            work(6, 122, "b", "W2", "complete", vec![]),
            work(
                7,
                130,
                "c",
                "W3",
                "claim",
                vec![int("coordination.work.story_points", 8)],
            ),
            work(8, 200, "c", "W3", "fail", vec![]),
            // Past the lease of W9's claim, another agent may take it.
            work(9, 300, "d", "W9", "claim", vec![]),
            work(10, 901, "e", "W9", "claim", vec![]),
        ],
    );

    let rows = server.rows(
        "SELECT work_id, event, agent_id, conflict, held_by, cycle_time_ms, story_points, team \
         FROM coordination_events ORDER BY time",
    );
    let expected = json!([
        ["W1", "claim", "a", false, null, null, 5.0, "red"],
        ["W1", "claim", "b", true, "a", null, 5.0, "red"],
        ["W2", "claim", "b", false, null, null, 3.0, "red"],
        ["W1", "complete", "a", false, null, 61000, 5.0, "red"],
        ["W2", "claim", "c", true, "b", null, 3.0, "red"],
        ["W2", "complete", "b", false, null, 120000, 3.0, "red"],
        ["W3", "claim", "c", false, null, null, 8.0, "red"],
        ["W3", "fail", "c", false, null, 70000, 8.0, "red"],
        ["W9", "claim", "d", false, null, null, null, "red"],
        ["W9", "claim", "e", false, null, null, null, "red"],
    ]);
    assert_eq!(
        Value::Array(rows.into_iter().map(Value::Array).collect()),
        expected
    );

    // Velocity, through SQL and the API: two completions (5 + 3 points, cycle times
    // 61 s and 120 s) and one failure in the 10:00 window.
    let velocity = server.rows(
        "SELECT team, completed_items, failed_items, story_points, cycle_time_p50_ms, cycle_time_p95_ms \
         FROM velocity",
    );
    assert_eq!(
        velocity,
        vec![vec![
            json!("red"),
            json!(2),
            json!(1),
            json!(8.0),
            json!(90500.0),
            json!(117050.0)
        ]]
    );
    let (status, body) = get_json(&format!(
        "{}/api/v1/velocity?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z",
        server.api
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["window_seconds"], 3600);
    let window = &body["windows"][0];
    assert_eq!(window["team"], "red");
    assert_eq!(window["completed_items"], 2);
    assert_eq!(window["story_points"], 8.0);
    assert_eq!(window["window_start"], "2026-01-01T10:00:00Z");
    assert_eq!(body["windows"].as_array().map(Vec::len), Some(1));
    let (status, body) = get_json(&format!("{}/api/v1/velocity?team=blue&start=0", server.api));
    assert_eq!((status, body["windows"].clone()), (200, json!([])));
    let (status, body) = get_json(&format!("{}/api/v1/velocity?start=soon", server.api));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("start"),
        "{body}"
    );

    // The live counters saw the events since the restart.
    let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
    let metrics = String::from_utf8(metrics).expect("UTF-8");
    for line in [
        "swarmscope_work_items_total{event=\"claim\",team=\"red\"} 4",
        "swarmscope_coordination_conflicts_total{team=\"red\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    // The velocity gauge sums the wall clock's window: completions from January are
    // history, in `velocity`, not this hour's points.
    assert!(
        !metrics.contains("swarmscope_velocity_story_points{team=\"red\"}"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

/// A long history of many items: the claims are restored in a sliver of the query
/// memory that a single replay of the history needs, and a claim renewed for longer
/// than many leases keeps its holder and its claim time.
#[test]
fn claims_are_restored_from_a_long_history_in_little_query_memory() {
    let (_tmp, dir) = temp_data_dir();
    let options = Options {
        extra: "[processors.coordination]\nlease_timeout_ms = 600000\n".into(),
        query_extra: "memory_limit_mb = 2\n".into(),
        ..Default::default()
    };
    let server = Server::start_with(&dir, options.clone());
    // 2,000 items claimed and completed ten times each over 100 minutes, 40,000 rows;
    // L claimed by x at the start and renewed every five minutes; H claimed by y last.
    for round in 0..10 {
        let spans: Vec<Span> = (0..2_000u64)
            .flat_map(|i| {
                let (n, at) = (2 * (round * 2_000 + i), round * 600 + i % 500);
                let item = format!("W-{i}");
                [
                    work(n, at, "a", &item, "claim", vec![]),
                    work(n + 1, at + 30, "a", &item, "complete", vec![]),
                ]
            })
            .collect();
        server.send_spans("agents", spans);
    }
    let mut n = 100_000;
    let mut next = |at_s: u64, agent: &str, item: &str, event: &str| {
        n += 1;
        work(n, at_s, agent, item, event, vec![])
    };
    let mut renewals: Vec<Span> = (0..20u64)
        .map(|k| next(k * 300, "x", "L", if k == 0 { "claim" } else { "progress" }))
        .collect();
    renewals.push(next(5_990, "y", "H", "claim"));
    server.send_spans("agents", renewals);
    assert!(server.stop().success());

    let server = Server::start_with(&dir, options);
    server.send_spans(
        "agents",
        vec![
            next(6_100, "z", "L", "claim"),
            next(6_110, "z", "H", "claim"),
            next(6_120, "z", "W-5", "claim"),
            next(6_200, "x", "L", "complete"),
        ],
    );
    // No ORDER BY: a sort alone needs more than this query memory.
    let mut rows = server.rows(
        "SELECT work_id, event, agent_id, conflict, held_by, cycle_time_ms \
         FROM coordination_events WHERE agent_id = 'z' OR event = 'complete' AND work_id = 'L'",
    );
    rows.sort_by_key(|r| r.iter().map(Value::to_string).collect::<Vec<_>>());
    let expected = json!([
        ["H", "claim", "z", true, "y", null],
        ["L", "claim", "z", true, "x", null],
        ["L", "complete", "x", false, null, 6_200_000],
        ["W-5", "claim", "z", false, null, null],
    ]);
    assert_eq!(
        Value::Array(rows.into_iter().map(Value::Array).collect()),
        expected
    );
    assert!(server.stop().success());
}

#[test]
fn spans_naming_an_item_are_in_work_activity_and_only_events_are_stored_again() {
    use prost::Message;
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    // Team blue comes from the resource where a span does not say its own; the time is
    // the span's end (5 ms after its start), or its start when it has no end.
    let mut request = common::service_request(
        "agents",
        vec![
            work(1, 0, "a", "W1", "claim", vec![]),
            span(
                2,
                10,
                vec![
                    text("gen_ai.agent.id", "b"),
                    text("coordination.work.id", "W1"),
                    text("coordination.work.story_points", "2.5"),
                ],
            ),
            span(3, 20, vec![text("gen_ai.agent.id", "b")]),
            Span {
                end_time_unix_nano: 0,
                ..work(4, 30, "b", "W2", "progress", vec![])
            },
        ],
    );
    if let Some(resource) = request.resource_spans[0].resource.as_mut() {
        resource.attributes.push(text("coordination.team", "blue"));
    }
    let (status, answer) = server.post_traces(&request.encode_to_vec());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));

    assert_eq!(
        server.rows("SELECT work_id, event, agent_id, team FROM coordination_events ORDER BY time"),
        vec![
            json!(["W1", "claim", "a", "red"])
                .as_array()
                .cloned()
                .unwrap_or_default(),
            json!(["W2", "progress", "b", "red"])
                .as_array()
                .cloned()
                .unwrap_or_default()
        ]
    );
    let activity = server.rows(
        "SELECT work_id, event, agent_id, team, story_points, span_id, span_name, service_name, \
         time = start_time + INTERVAL '5 milliseconds', time = start_time \
         FROM work_activity ORDER BY time",
    );
    let expected = json!([
        [
            "W1",
            "claim",
            "a",
            "red",
            null,
            "0000000000000002",
            "work",
            "agents",
            true,
            false
        ],
        [
            "W1",
            null,
            "b",
            "blue",
            2.5,
            "0000000000000003",
            "work",
            "agents",
            true,
            false
        ],
        [
            "W2",
            "progress",
            "b",
            "red",
            null,
            "0000000000000005",
            "work",
            "agents",
            false,
            true
        ],
    ]);
    assert_eq!(
        Value::Array(activity.into_iter().map(Value::Array).collect()),
        expected
    );
    // The view's claim is the stored row's: the same time and span.
    assert_eq!(
        server.scalar(
            "SELECT count(*) FROM work_activity w JOIN coordination_events c \
             ON w.span_id = c.span_id AND w.time = c.time AND w.event = c.event"
        ),
        json!(2)
    );
    assert!(server.stop().success());
}

#[test]
fn genai_usage_is_priced_and_span_metrics_are_served() {
    let (_tmp, dir) = temp_data_dir();
    let options = Options {
        extra: "[[processors.genai.prices]]\nmodel = \"house-model\"\ninput = 2.0\noutput = 4.0\n"
            .into(),
        ..Default::default()
    };
    let server = Server::start_with(&dir, options);
    let call = |n: u64, agent: &str, model: &str, input: i64, output: i64| {
        span(
            n,
            n,
            vec![
                text("gen_ai.agent.id", agent),
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.provider.name", "house"),
                text("gen_ai.request.model", model),
                int("gen_ai.usage.input_tokens", input),
                int("gen_ai.usage.output_tokens", output),
            ],
        )
    };
    server.send_spans(
        "planner",
        vec![
            call(1, "a", "house-model-v2", 500_000, 250_000),
            call(2, "a", "house-model-v2", 500_000, 0),
            call(3, "b", "mystery", 10, 10),
            span(4, 4, vec![text("plain", "span")]),
        ],
    );
    let cost = server.rows(
        "SELECT agent_id, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd), max(price_model) \
         FROM genai_usage GROUP BY agent_id ORDER BY agent_id",
    );
    assert_eq!(
        cost,
        vec![
            vec![
                json!("a"),
                json!(2),
                json!(1_000_000),
                json!(250_000),
                json!(3.0),
                json!("house-model")
            ],
            vec![
                json!("b"),
                json!(1),
                json!(10),
                json!(10),
                Value::Null,
                Value::Null
            ],
        ]
    );

    let calls = "traces_span_metrics_calls_total{service_name=\"planner\",span_name=\"work\",span_kind=\"SPAN_KIND_UNSPECIFIED\",status_code=\"STATUS_CODE_UNSET\"} 4";
    let tokens = "gen_ai_client_token_usage_sum{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"house\",gen_ai_request_model=\"house-model-v2\",gen_ai_response_model=\"\",gen_ai_token_type=\"input\"} 1000000";
    let spend = "swarmscope_genai_cost_usd_sum{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"house\",gen_ai_request_model=\"house-model-v2\",gen_ai_response_model=\"\"} 3";
    // Metrics are kept off the acknowledgement path: wait for them.
    let metrics = common::eventually("the span and token metrics", || {
        let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).ok()?;
        let metrics = String::from_utf8(metrics).ok()?;
        [calls, tokens]
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line))
            .then_some(metrics)
    });
    for line in [calls, tokens, spend] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(server.stop().success());
}

/// `n`'s span in trace 42, under `parent`.
fn in_trace(n: u64, parent: Option<u64>, at_s: u64, attributes: Vec<KeyValue>) -> Span {
    let mut s = span(n, at_s, attributes);
    s.trace_id = [[4u8; 8], [2u8; 8]].concat();
    s.parent_span_id = parent
        .map(|p| (p + 1).to_be_bytes().to_vec())
        .unwrap_or_default();
    s
}

#[test]
fn model_calls_are_attributed_to_their_agent_along_the_trace_tree_and_counted_once() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    // An invoke_agent span (1) with a tool span (2) below it; model calls as three
    // instrumentations of the OpenAI SDK write them, none naming an agent: the
    // OpenTelemetry openai-v2 one below the tool, OpenInference's and OpenLLMetry's
    // right below the agent.
    let v2 = in_trace(
        3,
        Some(2),
        1,
        vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            text("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            int("gen_ai.usage.input_tokens", 1_000_000),
            int("gen_ai.usage.output_tokens", 0),
        ],
    );
    let openinference = in_trace(
        4,
        Some(1),
        2,
        vec![
            text("openinference.span.kind", "LLM"),
            text("llm.provider", "openai"),
            text("llm.model_name", "gpt-4o-mini-2024-07-18"),
            int("llm.token_count.prompt", 0),
            int("llm.token_count.completion", 1_000_000),
        ],
    );
    let openllmetry = in_trace(
        5,
        Some(1),
        3,
        vec![
            text("gen_ai.system", "openai"),
            text("llm.request.type", "chat"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.prompt_tokens", 2_000_000),
            int("gen_ai.usage.completion_tokens", 0),
        ],
    );
    let tool = in_trace(
        2,
        Some(1),
        4,
        vec![text("gen_ai.operation.name", "execute_tool")],
    );
    // The agent's span ends last, in a later export, with the total of its calls.
    let agent = in_trace(
        1,
        None,
        5,
        vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.id", "researcher-1"),
            text("gen_ai.agent.name", "researcher"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 3_000_000),
            int("gen_ai.usage.output_tokens", 1_000_000),
        ],
    );
    server.send_spans("agents", vec![v2, openinference, openllmetry, tool]);
    server.send_spans("agents", vec![agent]);
    let rows = server.rows(
        "SELECT agent_id, agent_name, count(*), sum(input_tokens), sum(output_tokens), \
         round(sum(cost_usd), 6) FROM genai_usage GROUP BY 1, 2",
    );
    // 3M input at 0.15 and 1M output at 0.60 per million: the agent's own total is
    // not counted again.
    assert_eq!(
        rows,
        vec![vec![
            json!("researcher-1"),
            json!("researcher"),
            json!(3),
            json!(3_000_000),
            json!(1_000_000),
            json!(1.05)
        ]]
    );
    // The request and response models, apart.
    let models = server.rows(
        "SELECT request_model, response_model, model FROM genai_usage WHERE span_id = '0000000000000004'",
    );
    assert_eq!(
        models,
        vec![vec![
            json!("gpt-4o-mini"),
            json!("gpt-4o-mini-2024-07-18"),
            json!("gpt-4o-mini-2024-07-18")
        ]]
    );
    // On /metrics the agent span's total is left out too. The GenAI observer sees
    // batches in order: once a later call is counted, the agent span was seen.
    let marker = span(
        9,
        9,
        vec![
            text("gen_ai.operation.name", "marker"),
            int("gen_ai.usage.input_tokens", 1),
        ],
    );
    server.send_spans("agents", vec![marker]);
    let metrics = common::eventually("the token metrics", || {
        let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).ok()?;
        let metrics = String::from_utf8(metrics).ok()?;
        metrics
            .contains("gen_ai_operation_name=\"marker\"")
            .then_some(metrics)
    });
    assert!(
        metrics.contains("gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gen_ai_operation_name=\"invoke_agent\""),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn the_call_graph_is_counted_live_and_computed_from_the_history() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            extra:
                "[processors.graph]\nwait_seconds = 1\n[processors.health]\ninterval_seconds = 1\n"
                    .into(),
            ..Options::default()
        },
    );
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let kind = |mut s: Span, kind: SpanKind| {
        s.kind = kind as i32;
        s
    };
    let child_of = |mut s: Span, parent: &Span| {
        s.trace_id.clone_from(&parent.trace_id);
        s.parent_span_id.clone_from(&parent.span_id);
        s
    };
    let fail = |mut s: Span| {
        s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: 2,
            message: "tool failed".into(),
        });
        s
    };
    // The gateway's root SERVER span (called by no instrumented client) holds an
    // agent's turn, which calls the tools service twice and a model API once.
    let planner = || vec![text("gen_ai.agent.id", "planner")];
    let root = kind(span(1, 10, vec![]), SpanKind::Server);
    let turn = child_of(fail(span(2, 10, planner())), &root);
    let calls: Vec<Span> = (3..5)
        .map(|n| child_of(kind(span(n, 10, planner()), SpanKind::Client), &turn))
        .collect();
    let model = child_of(
        kind(
            span(5, 10, vec![text("gen_ai.provider.name", "openai")]),
            SpanKind::Client,
        ),
        &turn,
    );
    let coder = || vec![text("gen_ai.agent.id", "coder")];
    let served = vec![
        child_of(kind(span(13, 10, coder()), SpanKind::Server), &calls[0]),
        child_of(
            fail(kind(span(14, 10, coder()), SpanKind::Server)),
            &calls[1],
        ),
    ];
    // Servers first: the live graph pairs them when their clients come.
    server.send_spans("tools", served);
    let mut gateway = vec![root, turn, model];
    gateway.extend(calls);
    server.send_spans("gateway", gateway);

    // The evaluation after the virtual node's wait writes its minute to `graph_edges`.
    let graph = format!(
        "{}/api/v1/graph?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z",
        server.api
    );
    let body = common::eventually("four edges in the API", || {
        let (status, body) = get_json(&graph);
        assert_eq!(status, 200, "{body}");
        (body["edges"].as_array().map(Vec::len) == Some(4)).then_some(body)
    });
    let edges: Vec<(String, String, String, String, i64, i64)> = body["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            let count = |k: &str| e[k].as_i64().unwrap_or(-1);
            let (kind, source, target) = (text("kind"), text("source"), text("target"));
            (
                kind,
                source,
                target,
                text("connection_type"),
                count("calls"),
                count("errors"),
            )
        })
        .collect();
    let edge = |kind: &str, source: &str, target: &str, connection: &str, calls, errors| {
        let text = |s: &str| s.to_owned();
        (
            text(kind),
            text(source),
            text(target),
            text(connection),
            calls,
            errors,
        )
    };
    assert_eq!(
        edges,
        vec![
            edge("service", "gateway", "tools", "", 2, 1),
            edge("service", "gateway", "openai", "virtual_node", 1, 0),
            edge("service", "user", "gateway", "virtual_node", 1, 0),
            edge("agent", "planner", "coder", "agent", 2, 1),
        ]
    );
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(6), "{body}");
    let virtual_nodes: Vec<&str> = body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["virtual"] == json!(true))
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(virtual_nodes, ["openai", "user"], "{body}");
    // Every span took 5 ms: within the 4-6 ms bucket.
    let p50 = body["edges"][0]["p50_ms"].as_f64().expect("p50_ms");
    assert!((4.0..=6.0).contains(&p50), "{body}");
    let stored = server.rows(
        "SELECT sum(calls), count(DISTINCT time) FROM graph_edges \
         WHERE time >= '2026-01-01T00:00:00Z' AND time < '2026-01-02T00:00:00Z'",
    );
    assert_eq!(stored, vec![vec![json!(6), json!(1)]]);

    // Live, the same edges, the virtual node's once its call has waited its second.
    let metrics = common::eventually("the live graph's virtual node", || {
        let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).ok()?;
        let metrics = String::from_utf8(metrics).ok()?;
        metrics
            .contains("traces_service_graph_request_total{client=\"gateway\",server=\"openai\",connection_type=\"virtual_node\",failed=\"false\"} 1")
            .then_some(metrics)
    });
    for line in [
        "traces_service_graph_request_total{client=\"gateway\",server=\"tools\",connection_type=\"\",failed=\"false\"} 1",
        "traces_service_graph_request_total{client=\"gateway\",server=\"tools\",connection_type=\"\",failed=\"true\"} 1",
        "traces_service_graph_request_failed_total{client=\"gateway\",server=\"tools\",connection_type=\"\",failed=\"true\"} 1",
        "traces_service_graph_request_total{client=\"user\",server=\"gateway\",connection_type=\"virtual_node\",failed=\"false\"} 1",
        "traces_service_graph_request_total{client=\"planner\",server=\"coder\",connection_type=\"agent\",failed=\"false\"} 1",
        "traces_service_graph_request_total{client=\"planner\",server=\"coder\",connection_type=\"agent\",failed=\"true\"} 1",
        "swarmscope_graph_unpaired_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
    let (status, _) = get_json(&format!("{}/api/v1/graph?start=later", server.api));
    assert_eq!(status, 400);
    // No parameters: the last hour, which holds none of these 2026-01-01 spans.
    let (status, body) = get_json(&format!("{}/api/v1/graph", server.api));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["edges"], json!([]), "{body}");
    assert!(server.stop().success());
}
