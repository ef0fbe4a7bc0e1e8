use super::*;
use crate::analytics::testing::{batch, kv, kv_int, span};

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
    assert_eq!(table.find("acme/local-llama-3").map(|p| p.input), Some(1.0));
    assert!(table.find("gpt-4o").is_none());
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
        .get(["chat", "anthropic", "claude-sonnet-4-20250514", "input"])
        .unwrap();
    assert_eq!((input.count(), input.sum()), (3, 3000.0));
    let spend = p
        .cost
        .get(["chat", "anthropic", "claude-sonnet-4-20250514"])
        .unwrap();
    assert_eq!(spend.count(), 3);
    assert!((spend.sum() - 3.0 * (1000.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12);
    let openinference = p.cost.get(["", "openai", "gpt-4o"]).unwrap();
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
    for key in INPUT.iter().chain(&OUTPUT).chain(&MODEL).chain(&PROVIDER) {
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
    assert!(e.contains("processors.genai.prices[0]"), "{e}");
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
