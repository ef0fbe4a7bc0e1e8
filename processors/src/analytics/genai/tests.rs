use super::*;
use crate::analytics::testing::{batch, kv, kv_int, span, table_batch};
use arrow::array::{Array, AsArray};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use proptest::prelude::*;

fn price(model: &str, input: f64, output: f64) -> ModelPrice {
    ModelPrice {
        model: model.into(),
        input,
        output,
        cache_read: None,
        cache_write: None,
    }
}

#[test]
fn models_are_priced_by_the_longest_prefix() {
    let table = GenAiConfig::default().price_table();
    assert_eq!(
        table
            .find("gpt-4o-mini-2024-07-18")
            .map(|p| p.model.as_str()),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        table.find("gpt-4o-2024-08-06").map(|p| p.model.as_str()),
        Some("gpt-4o")
    );
    assert_eq!(
        table.find("openai/GPT-4o").map(|p| p.model.as_str()),
        Some("gpt-4o")
    );
    assert_eq!(
        table
            .find("claude-sonnet-4-20250514")
            .map(|p| p.model.as_str()),
        Some("claude-sonnet-4")
    );
    assert!(table.find("mystery-model").is_none());
}

#[test]
fn cached_input_is_priced_apart() {
    let table = GenAiConfig::default().price_table();
    let mini = table.find("gpt-4o-mini").unwrap();
    let usage = Usage {
        input: 1_000_000,
        output: 100_000,
        cache_read: 400_000,
        cache_write: 0,
    };
    // 600k uncached × 0.15 + 400k cached × 0.075 + 100k out × 0.60, per million.
    let cost = PriceTable::cost(mini, usage);
    assert!((cost - (0.09 + 0.03 + 0.06)).abs() < 1e-12, "{cost}");
    // Without a cache price, cached tokens cost the input price.
    let plain = price("m", 1.0, 2.0);
    assert_eq!(PriceTable::cost(&plain, usage), 1.0 + 0.2);
}

#[test]
fn configured_prices_replace_the_shipped_ones() {
    let config = GenAiConfig {
        default_prices: false,
        prices: vec![price("Local-Llama", 1.0, 2.0)],
        ..Default::default()
    };
    let table = config.price_table();
    assert_eq!(table.entries().count(), 1);
    assert_eq!(table.find("acme/local-llama").map(|p| p.input), Some(1.0));
    assert_eq!(
        table.find("local-llama-20250101").map(|p| p.input),
        Some(1.0)
    );
    assert!(table.find("local-llama-3").is_none());
    assert!(table.find("gpt-4o").is_none());
    // A trailing `*` prices every name it starts.
    let config = GenAiConfig {
        default_prices: false,
        prices: vec![price("local-*", 3.0, 4.0)],
        ..Default::default()
    };
    assert_eq!(
        config.price_table().find("local-llama-3").map(|p| p.input),
        Some(3.0)
    );
}

#[test]
fn prices_match_on_a_name_boundary() {
    let table = GenAiConfig::default().price_table();
    let priced = |model: &str| table.find(model).map(|p| p.model.clone());
    for (model, entry) in [
        ("o3", Some("o3")),
        ("o3-2025-04-16", Some("o3")),
        ("o3-pro", Some("o3-pro")),
        ("o3-mini", Some("o3-mini")),
        ("gemini-2.5-flash", Some("gemini-2.5-flash")),
        ("gemini-2.5-flash-lite", Some("gemini-2.5-flash-lite")),
        ("gemini-2.5-flash-preview-05-20", Some("gemini-2.5-flash")),
        ("models/gemini-2.5-pro", Some("gemini-2.5-pro")),
        ("claude-opus-4", Some("claude-opus-4")),
        ("claude-opus-4-20250514", Some("claude-opus-4")),
        ("claude-opus-4-5", Some("claude-opus-4-5")),
        ("claude-opus-4-5-20251101", Some("claude-opus-4-5")),
        (
            "anthropic.claude-sonnet-4-20250514-v1:0",
            Some("claude-sonnet-4"),
        ),
        (
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            Some("claude-3-5-haiku"),
        ),
        ("claude-3-5-sonnet@20240620", Some("claude-3-5-sonnet")),
        ("openai/gpt-4.1-mini", Some("gpt-4.1-mini")),
        ("gpt-4.1", Some("gpt-4.1")),
        ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini")),
        ("gpt-5-chat", None),
        ("o3x", None),
        ("claude-opus-4-6", None),
        ("mystery-model", None),
    ] {
        assert_eq!(priced(model).as_deref(), entry, "{model}");
    }
}

#[test]
fn metrics_count_tokens_and_spend_from_either_convention() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    let mut spans: Vec<_> = (0..3)
        .map(|i| {
            span(
                i,
                1_000,
                5,
                vec![
                    kv("gen_ai.agent.id", "a"),
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.system", "anthropic"),
                    kv("gen_ai.request.model", "claude-sonnet-4-20250514"),
                    kv_int("gen_ai.usage.input_tokens", 1000),
                    kv_int("gen_ai.usage.output_tokens", 100),
                ],
            )
        })
        .collect();
    spans.push(span(
        9,
        1_000,
        5,
        vec![
            kv("llm.model_name", "gpt-4o"),
            kv("llm.provider", "openai"),
            kv_int("llm.token_count.prompt", 2_000_000),
            kv_int("llm.token_count.completion", 1),
        ],
    ));
    spans.push(span(10, 1_000, 5, vec![kv("unrelated", "x")]));
    p.observe(&TableBatch::new(Table::SPANS, batch("agents", spans)));
    let input = p
        .tokens
        .get(["chat", "anthropic", "claude-sonnet-4-20250514", "", "input"])
        .unwrap();
    assert_eq!((input.count(), input.sum()), (3, 3000.0));
    let spend = p
        .cost
        .get(["chat", "anthropic", "claude-sonnet-4-20250514", ""])
        .unwrap();
    assert_eq!(spend.count(), 3);
    assert!((spend.sum() - 3.0 * (1000.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12);
    let openinference = p.cost.get(["", "openai", "gpt-4o", ""]).unwrap();
    assert!((openinference.sum() - (2.0 * 2.5 + 10.0 / 1e6)).abs() < 1e-9);
    let names: Vec<String> = Arc::new(p)
        .collectors()
        .iter()
        .flat_map(|c| c.collect())
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        names,
        ["gen_ai_client_token_usage", "swarmscope_genai_cost_usd"]
    );
}

#[test]
fn the_view_reads_every_alias() {
    let sql = view_sql();
    for key in INPUT
        .iter()
        .chain(&OUTPUT)
        .chain(&MODEL)
        .chain(&PROVIDER)
        .chain(&REQUEST_MODEL)
        .chain(&RESPONSE_MODEL)
    {
        assert!(sql.contains(&format!("attributes['{key}']")), "{key}");
    }
}

#[test]
fn bad_prices_are_refused_with_their_key() {
    let config = GenAiConfig {
        prices: vec![price("m", -1.0, 0.0)],
        ..Default::default()
    };
    let e = config.validate().unwrap_err();
    assert_eq!(e.key(), "processors.genai.prices[0]", "{e}");
}

#[test]
fn every_alias_is_read_at_its_rank() {
    for (field, aliases) in FIELDS.iter().enumerate() {
        for (rank, alias) in aliases.iter().enumerate() {
            let mut found = Found::default();
            found.take(alias, "v");
            assert_eq!(
                (found.values[field], found.ranks[field]),
                (Some("v"), rank),
                "{alias}"
            );
        }
    }
}

#[test]
fn the_request_and_the_response_model_have_labels_of_their_own() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    let call = span(
        1,
        1_000,
        5,
        vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.response.model", "gpt-4o-2024-08-06"),
            kv_int("gen_ai.usage.input_tokens", 1_000_000),
            kv_int("gen_ai.usage.output_tokens", 0),
        ],
    );
    p.observe(&TableBatch::new(Table::SPANS, batch("agents", vec![call])));
    let labels = ["chat", "openai", "gpt-4o", "gpt-4o-2024-08-06"];
    assert_eq!(p.cost.get(labels).map(|c| c.sum()), Some(2.5));
    let [op, provider, request, response] = labels;
    let input = p.tokens.get([op, provider, request, response, "input"]);
    assert_eq!(input.map(|h| h.count()), Some(1));
}

/// A span of trace 1 with id `id`, under `parent`, ending at `end_ms`.
fn in_trace(id: u64, parent: Option<u64>, end_ms: u64, attributes: Vec<KeyValue>) -> Span {
    let mut s = span(id, end_ms, 5, attributes);
    s.trace_id = 1u128.to_be_bytes().to_vec();
    s.span_id = id.to_be_bytes().to_vec();
    s.parent_span_id = parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default();
    s
}

fn chat(id: u64, parent: u64, end_ms: u64, tokens: i64) -> Span {
    in_trace(
        id,
        Some(parent),
        end_ms,
        vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv_int("gen_ai.usage.input_tokens", tokens),
            kv_int("gen_ai.usage.output_tokens", tokens),
        ],
    )
}

fn invoke_agent(id: u64, end_ms: u64, total: Option<i64>) -> Span {
    let mut attributes = vec![
        kv("gen_ai.operation.name", "invoke_agent"),
        kv("gen_ai.agent.id", "planner-7"),
        kv("gen_ai.agent.name", "planner"),
    ];
    if let Some(t) = total {
        attributes.push(kv_int("gen_ai.usage.input_tokens", t));
        attributes.push(kv_int("gen_ai.usage.output_tokens", t));
    }
    in_trace(id, None, end_ms, attributes)
}

/// The `genai_attribution` rows of `spans`, handed on as the receiver does (their ids
/// as numbers): (call, agent span, agent).
fn derive(p: &GenAiUsage, spans: Vec<Span>) -> Vec<(String, String, Option<String>)> {
    let out = p.derive(&table_batch("agents", spans)).unwrap();
    let mut rows = Vec::new();
    for t in out {
        assert_eq!(t.table, GENAI_ATTRIBUTION);
        let b = &t.batch;
        let col = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (span, agent_span, agent) = (col("span_id"), col("agent_span_id"), col("agent_id"));
        for r in 0..b.num_rows() {
            rows.push((
                span.value(r).to_owned(),
                agent_span.value(r).to_owned(),
                (!agent.is_null(r)).then(|| agent.value(r).to_owned()),
            ));
        }
    }
    rows
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

#[test]
fn calls_wait_for_their_agent_span_through_plain_spans_and_exports() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    // Export 1: a chat under a tool span, both under the agent (not yet ended).
    let tool = in_trace(
        20,
        Some(10),
        2_000,
        vec![kv("gen_ai.operation.name", "execute_tool")],
    );
    assert!(derive(&p, vec![chat(30, 20, 1_500, 7), tool]).is_empty());
    assert_eq!(p.attribution.pending(), 1);
    // Export 2: a chat right under the agent, then the agent span itself.
    let rows = derive(
        &p,
        vec![chat(31, 10, 2_500, 5), invoke_agent(10, 3_000, Some(12))],
    );
    let agent = Some("planner-7".to_owned());
    let mut want = vec![
        (hex(30), hex(10), agent.clone()),
        (hex(31), hex(10), agent.clone()),
    ];
    let mut rows = rows;
    rows.sort();
    want.sort();
    assert_eq!(rows, want);
    assert_eq!(p.attribution.pending(), 0);
}

#[test]
fn an_agent_spans_total_counts_once_in_the_metrics() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    // The calls and the agent's total of them (12 = 7 + 5), in one export.
    let spans = vec![
        chat(30, 10, 1_500, 7),
        chat(31, 10, 2_500, 5),
        invoke_agent(10, 3_000, Some(12)),
    ];
    let input = TableBatch::new(Table::SPANS, batch("agents", spans));
    assert_eq!(p.derive(&input).unwrap().len(), 1);
    p.observe(&input);
    let calls = p
        .tokens
        .get(["chat", "", "gpt-4o-mini", "", "input"])
        .unwrap();
    assert_eq!((calls.count(), calls.sum()), (2, 12.0));
    assert!(p
        .tokens
        .get(["invoke_agent", "", "", "", "input"])
        .is_none());
    // An agent whose calls report nothing: its own usage is the spend.
    let alone = TableBatch::new(
        Table::SPANS,
        batch("agents", vec![invoke_agent(11, 4_000, Some(3))]),
    );
    assert!(p.derive(&alone).unwrap().is_empty());
    p.observe(&alone);
    let total = p.tokens.get(["invoke_agent", "", "", "", "input"]).unwrap();
    assert_eq!((total.count(), total.sum()), (1, 3.0));
}

#[test]
fn calls_that_wait_too_long_or_too_many_are_let_go_and_counted() {
    let (clock, time) = LiveClock::manual(0, 600);
    let config = GenAiConfig {
        attribution_wait_seconds: 10,
        max_pending_calls: 2,
        ..Default::default()
    };
    let p = GenAiUsage::with_clock(&config, clock.clone());
    derive(
        &p,
        vec![chat(30, 10, 1, 1), chat(31, 10, 2, 1), chat(32, 10, 3, 1)],
    );
    assert_eq!(p.attribution.pending(), 2);
    assert_eq!(
        clock.skipped("genai_attribution", super::super::clock::Skip::Capacity),
        1
    );
    time.set(11_000_000_000);
    assert!(derive(&p, vec![invoke_agent(10, 11_000, None)]).is_empty());
    assert_eq!(p.attribution.pending(), 0);
    assert_eq!(
        clock.skipped("genai_attribution", super::super::clock::Skip::Late),
        2
    );
}

#[test]
fn a_call_finds_its_agent_span_however_far_in_the_batch() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    let of_trace = |trace: u128, mut s: Span| {
        s.trace_id = trace.to_be_bytes().to_vec();
        s
    };
    // The agent span first, then forty more spans of its trace, a call, another trace's
    // spans, and a call under the last of the forty.
    let mut spans = vec![invoke_agent(10, 3_000, None)];
    spans.extend((0..40).map(|i| in_trace(100 + i, Some(10), 1_000, Vec::new())));
    spans.push(chat(30, 10, 1_500, 7));
    spans.extend((0..3).map(|i| of_trace(2, in_trace(200 + i, None, 1_000, Vec::new()))));
    spans.push(chat(31, 139, 2_500, 5));
    let mut rows = derive(&p, spans);
    rows.sort();
    let agent = Some("planner-7".to_owned());
    assert_eq!(
        rows,
        vec![
            (hex(30), hex(10), agent.clone()),
            (hex(31), hex(10), agent.clone()),
        ]
    );
    assert_eq!(p.attribution.pending(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batches with their ids as numbers (the receiver's) and the same rows without
    /// them (ids read from their text) attribute alike: the same rows, the same calls
    /// left waiting. Ids repeat across two traces, which only the trace tells apart.
    #[test]
    fn ids_as_numbers_and_as_text_attribute_alike(
        spans in proptest::collection::vec(
            (1..=2u128, 1..24u64, proptest::option::of(1..24u64), 0..4u8),
            1..50,
        ),
        cut in 1..10usize,
    ) {
        let (numbers, text) = (
            GenAiUsage::new(&GenAiConfig::default()),
            GenAiUsage::new(&GenAiConfig::default()),
        );
        let made: Vec<Span> = spans
            .iter()
            .map(|(trace, id, parent, what)| {
                let mut s = match what {
                    0 => chat(*id, parent.unwrap_or(0), 1_000, 3),
                    1 => invoke_agent(*id, 2_000, (*id % 2 == 0).then_some(4)),
                    _ => in_trace(*id, *parent, 1_500, Vec::new()),
                };
                if *what == 0 && parent.is_none() {
                    s.parent_span_id.clear();
                }
                s.trace_id = trace.to_be_bytes().to_vec();
                s
            })
            .collect();
        for chunk in made.chunks(cut) {
            let with_ids = numbers.derive(&table_batch("agents", chunk.to_vec())).unwrap();
            let without = TableBatch::new(Table::SPANS, batch("agents", chunk.to_vec()));
            prop_assert_eq!(with_ids, text.derive(&without).unwrap());
        }
        prop_assert_eq!(numbers.attribution.pending(), text.attribution.pending());
    }
}
