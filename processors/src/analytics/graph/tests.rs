use super::*;
use crate::analytics::clock::ManualTime;
use crate::analytics::testing::{batch, failed, kv, span, table_batch};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use proptest::prelude::*;

const S: i64 = 1_000_000_000;

fn graph() -> (ServiceGraph, ManualTime) {
    let (clock, time) = LiveClock::manual(1_000 * S, 600);
    (ServiceGraph::new(&GraphConfig::default(), clock), time)
}

fn kind(mut s: Span, kind: SpanKind) -> Span {
    s.kind = kind as i32;
    s
}

fn child_of(mut s: Span, parent: &Span) -> Span {
    s.trace_id.clone_from(&parent.trace_id);
    s.parent_span_id.clone_from(&parent.span_id);
    s
}

/// `spans` as the receiver hands them on: with their ids as numbers.
fn send(g: &ServiceGraph, service: &str, spans: Vec<Span>) {
    g.observe(&table_batch(service, spans));
}

/// The requests on an edge with `failed` as given: (calls, server seconds, client seconds).
fn series(g: &ServiceGraph, labels: [&str; 4]) -> Option<(u64, f64, f64)> {
    let server = g.requests.get(labels)?;
    let client = g.client.get(labels)?;
    Some((server.count(), server.sum(), client.sum()))
}

#[test]
fn an_internal_parent_calling_two_services_lends_neither_its_duration_or_status() {
    let (g, _) = graph();
    // An agent's turn (INTERNAL, failed, 10 s) makes two calls through client spans.
    let turn = failed(span(1, 20_000, 10_000, vec![]));
    let to_tools = child_of(kind(span(2, 11_000, 300, vec![]), SpanKind::Client), &turn);
    let to_search = child_of(kind(span(3, 12_000, 800, vec![]), SpanKind::Client), &turn);
    let tools = child_of(
        kind(span(4, 11_000, 200, vec![]), SpanKind::Server),
        &to_tools,
    );
    let search = child_of(
        failed(kind(span(5, 12_000, 700, vec![]), SpanKind::Server)),
        &to_search,
    );
    // The servers first, then the agent's service.
    send(&g, "tools", vec![tools]);
    send(&g, "search", vec![search]);
    send(&g, "agent", vec![turn, to_tools, to_search]);
    let ok = series(&g, ["agent", "tools", "", "false"]).expect("agent → tools");
    assert_eq!(ok.0, 1);
    assert!(
        (ok.1 - 0.2).abs() < 1e-9 && (ok.2 - 0.3).abs() < 1e-9,
        "{ok:?}"
    );
    let bad = series(&g, ["agent", "search", "", "true"]).expect("agent → search, failed");
    assert!(
        (bad.1 - 0.7).abs() < 1e-9 && (bad.2 - 0.8).abs() < 1e-9,
        "{bad:?}"
    );
    assert_eq!(g.edge("agent", "tools", ""), (1, 0));
    assert_eq!(g.edge("agent", "search", ""), (1, 1));
    assert_eq!(g.requests.series(), 2);
}

#[test]
fn a_client_and_its_server_exported_five_seconds_apart_pair() {
    let (g, time) = graph();
    let call = kind(span(1, 1_000, 50, vec![]), SpanKind::Client);
    let served = child_of(kind(span(2, 1_000, 40, vec![]), SpanKind::Server), &call);
    send(&g, "gateway", vec![call]);
    time.set(time.get() + 5 * S);
    send(&g, "other", vec![span(9, 1_000, 1, vec![])]);
    send(&g, "tools", vec![served]);
    assert_eq!(g.edge("gateway", "tools", ""), (1, 0));
    assert_eq!(g.unpaired.get(), 0);
}

#[test]
fn a_partner_later_than_the_wait_is_not_paired_and_is_counted() {
    let (g, time) = graph();
    let call = kind(span(1, 1_000, 50, vec![]), SpanKind::Client);
    let served = child_of(kind(span(2, 1_000, 40, vec![]), SpanKind::Server), &call);
    send(&g, "gateway", vec![call]);
    time.set(time.get() + 25 * S);
    send(&g, "tools", vec![served]);
    assert_eq!(g.edge("gateway", "tools", ""), (0, 0));
    assert_eq!(g.unpaired.get(), 1);
}

#[test]
fn unanswered_calls_to_named_peers_become_virtual_nodes_once_the_wait_is_over() {
    let (g, time) = graph();
    let model = kind(
        span(
            1,
            1_000,
            900,
            vec![
                kv("gen_ai.provider.name", "openai"),
                kv("server.address", "api.openai.com"),
            ],
        ),
        SpanKind::Client,
    );
    let payments = failed(kind(
        span(2, 1_000, 90, vec![kv("peer.service", "payments")]),
        SpanKind::Client,
    ));
    let anonymous = kind(span(3, 1_000, 10, vec![]), SpanKind::Client);
    send(&g, "agent", vec![model, payments, anonymous]);
    assert_eq!(g.edge("agent", "openai", "virtual_node"), (0, 0));
    time.set(time.get() + 20 * S);
    // A scrape expires them, with no more traffic.
    let g = Arc::new(g);
    let families = g.collectors()[0].collect();
    let total = families
        .iter()
        .find(|f| f.name() == "traces_service_graph_request_total")
        .expect("request total");
    assert_eq!(total.get_metric().len(), 2);
    assert_eq!(g.edge("agent", "openai", "virtual_node"), (1, 0));
    assert_eq!(g.edge("agent", "payments", "virtual_node"), (1, 1));
    let openai = series(&g, ["agent", "openai", "virtual_node", "false"]).expect("openai");
    assert!((openai.1 - 0.9).abs() < 1e-9, "{openai:?}");
    // The call that named nothing is unpaired.
    assert_eq!(g.unpaired.get(), 1);
}

#[test]
fn databases_messaging_and_uninstrumented_callers_have_their_connection_types() {
    let (g, _) = graph();
    let query = kind(
        span(
            1,
            1_000,
            5,
            vec![
                kv("db.system.name", "postgresql"),
                kv("db.namespace", "orders"),
            ],
        ),
        SpanKind::Client,
    );
    let legacy = kind(
        span(2, 1_000, 5, vec![kv("db.system", "redis")]),
        SpanKind::Client,
    );
    let root = kind(span(3, 1_000, 20, vec![]), SpanKind::Server);
    let publish = kind(span(4, 1_000, 2, vec![]), SpanKind::Producer);
    let consume = child_of(
        kind(span(5, 1_000, 30, vec![]), SpanKind::Consumer),
        &publish,
    );
    send(&g, "api", vec![query, legacy, root, publish]);
    send(&g, "worker", vec![consume]);
    assert_eq!(g.edge("api", "orders", "database"), (1, 0));
    assert_eq!(g.edge("api", "redis", "database"), (1, 0));
    assert_eq!(g.edge("user", "api", "virtual_node"), (1, 0));
    assert_eq!(g.edge("api", "worker", "messaging_system"), (1, 0));
    assert_eq!(g.requests.series(), 4);
}

#[test]
fn agents_hand_off_through_any_span_and_have_their_own_series_cap() {
    let (clock, _) = LiveClock::manual(1_000 * S, 600);
    let g = ServiceGraph::new(
        &GraphConfig {
            max_agent_series: 1,
            ..GraphConfig::default()
        },
        clock,
    );
    let planner = span(1, 1_000, 500, vec![kv("gen_ai.agent.id", "planner")]);
    let coder = child_of(
        span(2, 900, 200, vec![kv("gen_ai.agent.id", "coder")]),
        &planner,
    );
    let tester = child_of(
        span(3, 900, 100, vec![kv("gen_ai.agent.id", "tester")]),
        &planner,
    );
    let call = kind(
        span(4, 1_000, 10, vec![kv("peer.service", "x")]),
        SpanKind::Client,
    );
    let served = child_of(kind(span(5, 1_000, 5, vec![]), SpanKind::Server), &call);
    send(&g, "crew", vec![coder, tester]);
    send(&g, "crew", vec![planner, call]);
    send(&g, "x", vec![served]);
    // One agent edge has its series, the other is over the agents' cap (which of the
    // two comes first is the tally's order); the service edge is not.
    let kept = g.edge("planner", "coder", "agent").0 + g.edge("planner", "tester", "agent").0;
    assert_eq!(kept, 1);
    assert_eq!(g.requests.overflowed(), 1);
    assert_eq!(g.edge("crew", "x", ""), (1, 0));
}

#[test]
fn names_of_agents_long_gone_are_dropped() {
    let (clock, _) = LiveClock::manual(1_000 * S, 600);
    let g = ServiceGraph::new(
        &GraphConfig {
            max_agent_items: 100,
            ..GraphConfig::default()
        },
        clock,
    );
    // 30,000 agents, each one span, far more than the store keeps.
    for chunk in 0..300u64 {
        let spans = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                span(
                    n,
                    1_000,
                    5,
                    vec![kv("gen_ai.agent.id", &format!("agent-{n}"))],
                )
            })
            .collect();
        g.observe_spans(&TableBatch::new(Table::SPANS, batch("svc", spans)))
            .unwrap();
    }
    let state = g.lock();
    assert!(
        state.names.len() < 2 * names::MIN_NAMES,
        "{} names",
        state.names.len()
    );
}

/// The rows of `graph_edges` a take gives: (minute in seconds, failed, calls).
fn table_rows(rows: &PendingRows) -> Vec<(i64, bool, i64)> {
    use crate::columns::{booleans, primitives, timestamps};
    let batch = rows.batch().expect("rows");
    let time = timestamps(&batch, "time").expect("time");
    let failed = booleans(&batch, "failed").expect("failed");
    let calls = primitives::<arrow::datatypes::Int64Type>(&batch, "calls").expect("calls");
    let mut rows: Vec<(i64, bool, i64)> = (0..batch.num_rows())
        .map(|r| (time.value(r) / S, failed.value(r), calls.value(r)))
        .collect();
    rows.sort();
    rows
}

#[test]
fn requests_go_to_graph_edges_by_the_minute_they_started_once_each() {
    let (g, _) = graph();
    // Servers ending at 30 s, 40 s (failed) and 90 s: two in the first minute.
    let calls: Vec<Span> = [(1, 30_000), (2, 40_000), (3, 90_000)]
        .into_iter()
        .map(|(n, end)| kind(span(n, end, 20, vec![]), SpanKind::Client))
        .collect();
    let served: Vec<Span> = calls
        .iter()
        .zip([30_000, 40_000, 90_000])
        .enumerate()
        .map(|(i, (c, end))| {
            let s = child_of(
                kind(span(10 + i as u64, end, 15, vec![]), SpanKind::Server),
                c,
            );
            if i == 1 {
                failed(s)
            } else {
                s
            }
        })
        .collect();
    send(&g, "gateway", calls);
    send(&g, "tools", served);
    let taken = g.take_rows();
    let expected = vec![(0, false, 1), (0, true, 1), (60, false, 1)];
    assert_eq!(table_rows(&taken), expected);
    // Each request is taken once; rows that could not be stored come back.
    assert!(g.take_rows().is_empty());
    g.restore_rows(taken);
    assert_eq!(table_rows(&g.take_rows()), expected);
}

#[test]
fn graph_quantiles_interpolate_within_buckets_as_histogram_quantile() {
    let mut counts = vec![0u64; BUCKETS_S.len() + 1];
    assert_eq!(quantile_ms(&counts, 0.5), None);
    // Ten requests between 10 and 50 ms: the median halfway, p95 near the top.
    counts[5] = 10;
    let p50 = quantile_ms(&counts, 0.5).expect("p50");
    assert!((p50 - 30.0).abs() < 1e-9, "{p50}");
    let p95 = quantile_ms(&counts, 0.95).expect("p95");
    assert!((p95 - 48.0).abs() < 1e-9, "{p95}");
    // Beyond the last bound: the last bound, as Prometheus answers.
    counts[BUCKETS_S.len()] = 100;
    assert_eq!(quantile_ms(&counts, 0.95), Some(15_000.0));
}

/// A span of a generated swarm: its kind, its parent (an earlier span, by index), its
/// agent, failed or not, and the service whose batch carries it.
fn swarm() -> impl Strategy<Value = Vec<(i32, Option<prop::sample::Index>, u8, bool, u8)>> {
    let one = (
        1..=5i32,
        proptest::option::of(any::<prop::sample::Index>()),
        0..4u8,
        any::<bool>(),
        0..3u8,
    );
    proptest::collection::vec(one, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A batch with its ids as numbers (the receiver's) and the same rows without them
    /// (whose ids are read from their text) make the same graph: every series, count
    /// and duration alike.
    #[test]
    fn ids_as_numbers_and_as_text_make_the_same_graph(spans in swarm(), cut in 1..8usize) {
        let (with_ids, with_text) = (graph().0, graph().0);
        let mut made: Vec<Span> = Vec::new();
        for (n, (kind, parent, agent, fail, _)) in spans.iter().enumerate() {
            let mut attributes = Vec::new();
            if *agent > 0 {
                attributes.push(kv("gen_ai.agent.id", &format!("agent-{agent}")));
            }
            if *kind == SpanKind::Client as i32 && n % 3 == 0 {
                attributes.push(kv("peer.service", "payments"));
            }
            let mut s = span(n as u64, 1_000 + n as u64, 1 + n as u64 % 7, attributes);
            s.kind = *kind;
            if let Some(parent) = parent.filter(|_| n > 0) {
                s = child_of(s, &made[parent.index(n)]);
            }
            made.push(if *fail { failed(s) } else { s });
        }
        // Batches of up to `cut` spans of one service, in order.
        let mut at = 0;
        while at < made.len() {
            let service = format!("svc-{}", spans[at].4);
            let end = (at + cut).min(made.len());
            let batch_spans = made[at..end].to_vec();
            with_ids.observe(&table_batch(&service, batch_spans.clone()));
            with_text.observe(&TableBatch::new(Table::SPANS, batch(&service, batch_spans)));
            at = end;
        }
        let (a, b) = (Arc::new(with_ids), Arc::new(with_text));
        // `/metrics` as Prometheus reads it, line by line (series come in hash order).
        let collect = |g: &Arc<ServiceGraph>| {
            let families: Vec<_> = g.collectors().iter().flat_map(|c| c.collect()).collect();
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&families)
                .expect("text");
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        prop_assert_eq!(collect(&a), collect(&b));
        prop_assert_eq!(a.unpaired.get(), b.unpaired.get());
        prop_assert_eq!(table_rows(&a.take_rows()), table_rows(&b.take_rows()));
    }
}
