use arrow::array::{Array, AsArray};

use super::*;
use crate::analytics::testing::{batch, kv, kv_int, span};

fn usage_rows(
    p: &GenAiUsage,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> Option<RecordBatch> {
    let out = p
        .derive(&TableBatch::new(Table::SPANS, batch("agents", spans)))
        .unwrap();
    out.into_iter().next().map(|b| {
        assert_eq!(b.table, GENAI_USAGE);
        b.batch
    })
}

fn float(b: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let c = b
        .column_by_name(name)
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    (!c.is_null(row)).then(|| c.value(row))
}

fn int(b: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let c = b
        .column_by_name(name)
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    (!c.is_null(row)).then(|| c.value(row))
}

fn text<'a>(b: &'a RecordBatch, name: &str, row: usize) -> Option<&'a str> {
    string_at(strings(b, name).unwrap(), row)
}

#[test]
fn genai_conventions_priced_by_the_longest_prefix() {
    let p = GenAiUsage::new(&GenAiConfig::default());
    let rows = usage_rows(
        &p,
        vec![
            span(
                1,
                1_000,
                5,
                vec![
                    kv("gen_ai.agent.id", "planner"),
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.provider.name", "openai"),
                    kv("gen_ai.request.model", "gpt-4o"),
                    kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                    kv_int("gen_ai.usage.input_tokens", 1_000_000),
                    kv_int("gen_ai.usage.cache_read.input_tokens", 400_000),
                    kv_int("gen_ai.usage.output_tokens", 100_000),
                ],
            ),
            span(2, 1_000, 5, vec![kv("not", "genai")]),
        ],
    )
    .unwrap();
    assert_eq!(rows.num_rows(), 1);
    assert_eq!(text(&rows, "model", 0), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(text(&rows, "price_model", 0), Some("gpt-4o-mini"));
    assert_eq!(text(&rows, "agent_id", 0), Some("planner"));
    assert_eq!(int(&rows, "cache_read_tokens", 0), Some(400_000));
    // 600k uncached × 0.15 + 400k cached × 0.075 + 100k out × 0.60, per million.
    let cost = float(&rows, "cost_usd", 0).unwrap();
    assert!((cost - (0.09 + 0.03 + 0.06)).abs() < 1e-9, "{cost}");
}

#[test]
fn openinference_aliases_and_unpriced_models() {
    let config = GenAiConfig {
        default_prices: false,
        prices: vec![ModelPrice {
            model: "Local-Llama".into(),
            input: 1.0,
            output: 2.0,
            cache_read: None,
            cache_write: None,
        }],
        ..Default::default()
    };
    let p = GenAiUsage::new(&config);
    let rows = usage_rows(
        &p,
        vec![
            span(
                1,
                1_000,
                5,
                vec![
                    kv("llm.model_name", "acme/local-llama-3"),
                    kv("llm.system", "acme"),
                    kv_int("llm.token_count.prompt", 2_000_000),
                    kv_int("llm.token_count.completion", 1_000_000),
                ],
            ),
            span(
                2,
                1_000,
                5,
                vec![
                    kv("gen_ai.request.model", "gpt-4o"),
                    kv_int("gen_ai.usage.output_tokens", 7),
                ],
            ),
        ],
    )
    .unwrap();
    assert_eq!(rows.num_rows(), 2);
    assert_eq!(text(&rows, "provider", 0), Some("acme"));
    assert_eq!(float(&rows, "cost_usd", 0), Some(4.0));
    // Not in this table: no cost rather than a free call.
    assert_eq!(float(&rows, "cost_usd", 1), None);
    assert_eq!(int(&rows, "input_tokens", 1), None);
    assert_eq!(int(&rows, "output_tokens", 1), Some(7));
}

#[test]
fn metrics_count_tokens_and_spend() {
    let p = Arc::new(GenAiUsage::new(&GenAiConfig::default()));
    let spans = (0..3)
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
    let rows = usage_rows(&p, spans).unwrap();
    p.observe(&TableBatch::new(GENAI_USAGE, rows));
    let input = p
        .tokens
        .get([
            "chat",
            "anthropic",
            "claude-sonnet-4-20250514",
            "input",
            "a",
        ])
        .unwrap();
    assert_eq!((input.count(), input.sum()), (3, 3000.0));
    let spend = p
        .cost
        .get(["anthropic", "claude-sonnet-4-20250514", "a"])
        .unwrap();
    assert!((spend.sum() - 3.0 * (1000.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12);
    let names: Vec<String> = p
        .collectors()
        .iter()
        .flat_map(|c| c.collect())
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "gen_ai_client_token_usage",
            "swarmscope_genai_call_cost_usd"
        ]
    );
}

#[test]
fn bad_prices_are_refused_with_their_key() {
    let config = GenAiConfig {
        prices: vec![ModelPrice {
            model: "m".into(),
            input: -1.0,
            output: 0.0,
            cache_read: None,
            cache_write: None,
        }],
        ..Default::default()
    };
    let e = config.validate().unwrap_err();
    assert!(e.contains("processors.genai.prices[0]"), "{e}");
}
