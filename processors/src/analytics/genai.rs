//! GenAI usage and cost: the `genai_usage` view, one row per span that reports token
//! usage, in the OpenTelemetry GenAI conventions or the OpenInference ones Phoenix
//! users send, priced from a per-model table ([`view_sql`]; the query engine provides
//! its `genai_cost` and `genai_price_model` functions from [`PriceTable`]); and, live
//! on `/metrics`, `gen_ai_client_token_usage` (the conventions' histogram) and
//! `swarmscope_genai_cost_usd` ([`GenAiUsage`], off the acknowledgement path).
//!
//! A view rather than a stored table: the usage is all in the spans already, so
//! storing it again would cost ingest for nothing a query cannot compute, and a
//! corrected price applies to the whole history.
//!
//! Which attribute says what, first found first (the span's attributes, then its
//! resource's):
//! - input tokens: `gen_ai.usage.input_tokens`, `llm.token_count.prompt`,
//!   `gen_ai.usage.prompt_tokens` (older conventions);
//! - output tokens: `gen_ai.usage.output_tokens`, `llm.token_count.completion`,
//!   `gen_ai.usage.completion_tokens`;
//! - cache reads: `gen_ai.usage.cache_read.input_tokens`,
//!   `llm.token_count.prompt_details.cache_read`; cache writes:
//!   `gen_ai.usage.cache_creation.input_tokens`,
//!   `llm.token_count.prompt_details.cache_write`;
//! - model: `gen_ai.response.model`, `gen_ai.request.model`, `llm.model_name`;
//!   provider: `gen_ai.provider.name`, `gen_ai.system`, `llm.provider`, `llm.system`;
//!   operation: `gen_ai.operation.name`.
//!
//! Input tokens include the cached ones (as the conventions ask), so the cost is
//! `(input − cache_read − cache_write) × input price + cache_read × cache-read price +
//! cache_write × cache-write price + output × output price`, prices per million
//! tokens. A model is priced by the longest entry of the table its name starts with
//! (`gpt-4o-mini-2024-07-18` by `gpt-4o-mini`), after any `provider/` prefix; an
//! unpriced model has a null cost, never a zero one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use prometheus::core::{Collector, Desc};
use serde::{Deserialize, Serialize};

use super::attributes::{number, MapColumn, Text};
use super::series::{Buckets, HistogramFamily};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use crate::Result;

const INPUT: [&str; 3] = [
    "gen_ai.usage.input_tokens",
    "llm.token_count.prompt",
    "gen_ai.usage.prompt_tokens",
];
const OUTPUT: [&str; 3] = [
    "gen_ai.usage.output_tokens",
    "llm.token_count.completion",
    "gen_ai.usage.completion_tokens",
];
const CACHE_READ: [&str; 2] = [
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
];
const CACHE_WRITE: [&str; 2] = [
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
];
const MODEL: [&str; 3] = [
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
];
const PROVIDER: [&str; 4] = [
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
];
const OPERATION: [&str; 1] = ["gen_ai.operation.name"];
const TEAM: [&str; 1] = ["coordination.team"];
/// What marks a batch worth reading: every usage key starts with one of these.
const USAGE_PREFIXES: [&str; 2] = ["gen_ai.usage.", "llm.token_count."];

/// The `genai_usage` view: spans with token usage, their attributes read as the
/// module documentation lists, and their cost.
pub fn view_sql() -> String {
    fn first(keys: &[&str], resource: bool) -> String {
        let mut all: Vec<String> = keys.iter().map(|k| format!("attributes['{k}']")).collect();
        if resource {
            all.extend(keys.iter().map(|k| format!("resource_attributes['{k}']")));
        }
        format!("coalesce({})", all.join(", "))
    }
    let text = |keys: &[&str]| format!("arrow_cast({}, 'Utf8')", first(keys, true));
    let tokens =
        |keys: &[&str]| format!("CAST(try_cast({} AS DOUBLE) AS BIGINT)", first(keys, false));
    format!(
        "SELECT time, trace_id, span_id, service_name, agent_id, team, provider, model, operation, \
         input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
         genai_cost(model, coalesce(input_tokens, 0), coalesce(output_tokens, 0), \
         coalesce(cache_read_tokens, 0), coalesce(cache_write_tokens, 0)) AS cost_usd, \
         genai_price_model(model) AS price_model \
         FROM (SELECT start_time AS time, trace_id, span_id, service_name, agent_id, \
         {team} AS team, {provider} AS provider, {model} AS model, {operation} AS operation, \
         {input} AS input_tokens, {output} AS output_tokens, {cache_read} AS cache_read_tokens, \
         {cache_write} AS cache_write_tokens FROM spans) \
         WHERE input_tokens IS NOT NULL OR output_tokens IS NOT NULL",
        team = text(&TEAM),
        provider = text(&PROVIDER),
        model = text(&MODEL),
        operation = text(&OPERATION),
        input = tokens(&INPUT),
        output = tokens(&OUTPUT),
        cache_read = tokens(&CACHE_READ),
        cache_write = tokens(&CACHE_WRITE),
    )
}

/// A model's list prices, in US dollars per million tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Matched as a prefix of the reported model name; the longest match wins.
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// Defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// When the shipped prices were read off the providers' price pages.
pub const DEFAULT_PRICES_AS_OF: &str = "2025-08-01";

/// The shipped price table: (model prefix, input, output, cache read, cache write).
const DEFAULT_PRICES: &[(&str, f64, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.0, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("gpt-4.1", 2.0, 8.0, 0.50, 2.0),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-4o", 2.50, 10.0, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("o3", 2.0, 8.0, 0.50, 2.0),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
    ("claude-opus-4", 15.0, 75.0, 1.50, 18.75),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
    ("gemini-2.5-pro", 1.25, 10.0, 0.31, 1.25),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075, 0.30),
];

/// `[processors.genai]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenAiConfig {
    /// Start from the shipped table ([`DEFAULT_PRICES_AS_OF`]); entries of `prices`
    /// replace the shipped entry of the same model.
    pub default_prices: bool,
    pub prices: Vec<ModelPrice>,
    /// Label sets of the token metrics kept apart.
    pub max_series: usize,
}

impl Default for GenAiConfig {
    fn default() -> Self {
        GenAiConfig {
            default_prices: true,
            prices: Vec::new(),
            max_series: 10_000,
        }
    }
}

impl GenAiConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, p) in self.prices.iter().enumerate() {
            let prices = [Some(p.input), Some(p.output), p.cache_read, p.cache_write];
            if p.model.is_empty() {
                return Err(format!(
                    "processors.genai.prices[{i}].model must not be empty"
                ));
            }
            if prices
                .into_iter()
                .flatten()
                .any(|v| !v.is_finite() || v < 0.0)
            {
                return Err(format!(
                    "processors.genai.prices[{i}] ({}): prices must be finite and >= 0",
                    p.model
                ));
            }
        }
        Ok(())
    }

    /// The effective table, by model prefix.
    pub fn price_table(&self) -> PriceTable {
        let mut by_model = BTreeMap::new();
        if self.default_prices {
            for &(model, input, output, cache_read, cache_write) in DEFAULT_PRICES {
                by_model.insert(
                    model.to_owned(),
                    ModelPrice {
                        model: model.to_owned(),
                        input,
                        output,
                        cache_read: Some(cache_read),
                        cache_write: Some(cache_write),
                    },
                );
            }
        }
        for p in &self.prices {
            by_model.insert(p.model.to_lowercase(), p.clone());
        }
        PriceTable { by_model }
    }
}

/// Token counts of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    by_model: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The entry pricing `model`: the longest one its name (less any `provider/`
    /// prefix, case aside) starts with.
    pub fn find(&self, model: &str) -> Option<&ModelPrice> {
        let name = model.rsplit('/').next().unwrap_or(model).to_lowercase();
        self.by_model
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| p)
    }

    /// The cost of `usage` in US dollars at `price`.
    pub fn cost(price: &ModelPrice, usage: Usage) -> f64 {
        let uncached = (usage.input - usage.cache_read - usage.cache_write).max(0);
        (uncached as f64 * price.input
            + usage.cache_read as f64 * price.cache_read.unwrap_or(price.input)
            + usage.cache_write as f64 * price.cache_write.unwrap_or(price.input)
            + usage.output as f64 * price.output)
            / 1e6
    }

    pub fn entries(&self) -> impl Iterator<Item = &ModelPrice> {
        self.by_model.values()
    }
}

/// Keeps the token and cost metrics of the spans that report usage.
pub struct GenAiUsage {
    prices: PriceTable,
    tokens: HistogramFamily<4>,
    cost: HistogramFamily<3>,
}

/// The conventions' advised buckets for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The usage attributes of one span, read in one pass over its entries: by field
/// (input, output, cache read, cache write, model, provider, operation), the value of
/// the first-ranked alias present, with its rank.
#[derive(Default)]
struct Found<'a> {
    values: [Option<&'a str>; 7],
    ranks: [usize; 7],
}

/// The aliases of each field, first ranked first, as [`Found::take`] matches them.
#[cfg(test)]
const FIELDS: [&[&str]; 7] = [
    &INPUT,
    &OUTPUT,
    &CACHE_READ,
    &CACHE_WRITE,
    &MODEL,
    &PROVIDER,
    &OPERATION,
];

impl<'a> Found<'a> {
    fn take(&mut self, key: &str, value: &'a str) {
        // Most keys are none of these: one byte tells, before any comparison.
        if !matches!(key.as_bytes().first(), Some(b'g' | b'l')) {
            return;
        }
        // (field, rank among its aliases), as FIELDS orders them.
        let (field, rank) = match key {
            "gen_ai.usage.input_tokens" => (0, 0),
            "llm.token_count.prompt" => (0, 1),
            "gen_ai.usage.prompt_tokens" => (0, 2),
            "gen_ai.usage.output_tokens" => (1, 0),
            "llm.token_count.completion" => (1, 1),
            "gen_ai.usage.completion_tokens" => (1, 2),
            "gen_ai.usage.cache_read.input_tokens" => (2, 0),
            "llm.token_count.prompt_details.cache_read" => (2, 1),
            "gen_ai.usage.cache_creation.input_tokens" => (3, 0),
            "llm.token_count.prompt_details.cache_write" => (3, 1),
            "gen_ai.response.model" => (4, 0),
            "gen_ai.request.model" => (4, 1),
            "llm.model_name" => (4, 2),
            "gen_ai.provider.name" => (5, 0),
            "gen_ai.system" => (5, 1),
            "llm.provider" => (5, 2),
            "llm.system" => (5, 3),
            "gen_ai.operation.name" => (6, 0),
            _ => return,
        };
        if self.values[field].is_none() || rank < self.ranks[field] {
            self.values[field] = Some(value);
            self.ranks[field] = rank;
        }
    }
}

/// A token count: an integer as SDKs send it, or a decimal [`number`].
fn token_count(value: &str) -> Option<i64> {
    value
        .parse::<i64>()
        .ok()
        .or_else(|| number(value).map(|v| v as i64))
}

/// One batch's calls of one operation, provider and model.
struct Calls {
    input: Buckets,
    output: Buckets,
    usage: Usage,
    calls: u64,
}

impl GenAiUsage {
    pub fn new(config: &GenAiConfig) -> GenAiUsage {
        GenAiUsage {
            prices: config.price_table(),
            tokens: HistogramFamily::new(
                "gen_ai_client_token_usage",
                "Tokens per GenAI call, by operation, provider, model and token type (input, output).",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_token_type",
                ],
                TOKEN_BUCKETS.to_vec(),
                config.max_series,
            ),
            // No buckets: `_sum` is the spend, `_count` the priced calls.
            cost: HistogramFamily::new(
                "swarmscope_genai_cost_usd",
                "Spend on GenAI calls in US dollars (_sum; _count: priced calls), by operation, provider and model.",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                ],
                Vec::new(),
                config.max_series,
            ),
        }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// The collectors to register with the registry `/metrics` serves.
    pub fn collectors(self: &Arc<Self>) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(Families(Arc::clone(self), 0)),
            Box::new(Families(Arc::clone(self), 1)),
        ]
    }

    fn observe_spans(&self, spans: &RecordBatch) -> Result<()> {
        let attributes = MapColumn::of(spans, "attributes")?;
        if !attributes.mentions(&USAGE_PREFIXES) {
            return Ok(());
        }
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let mut calls: std::collections::HashMap<[Text; 3], Calls, foldhash::fast::RandomState> =
            Default::default();
        for row in 0..spans.num_rows() {
            let mut found = Found::default();
            attributes.scan(row, |k, v| found.take(k, v));
            if found.values[0].is_none() && found.values[1].is_none() {
                continue;
            }
            let mut from_resource = Found::default();
            resource.scan(row, |k, v| from_resource.take(k, v));
            let tokens = |i: usize| found.values[i].and_then(token_count);
            let text = |i: usize| found.values[i].or(from_resource.values[i]).unwrap_or("");
            let (input, output) = (tokens(0), tokens(1));
            let key = [Text(text(6)), Text(text(5)), Text(text(4))];
            let entry = calls.entry(key).or_insert_with(|| Calls {
                input: Buckets::new(TOKEN_BUCKETS.len()),
                output: Buckets::new(TOKEN_BUCKETS.len()),
                usage: Usage::default(),
                calls: 0,
            });
            if let Some(v) = input {
                entry.input.observe(&TOKEN_BUCKETS, v as f64);
                entry.usage.input += v;
            }
            if let Some(v) = output {
                entry.output.observe(&TOKEN_BUCKETS, v as f64);
                entry.usage.output += v;
            }
            entry.usage.cache_read += tokens(2).unwrap_or(0);
            entry.usage.cache_write += tokens(3).unwrap_or(0);
            entry.calls += 1;
        }
        let (mut tokens, mut cost) = (self.tokens.tally(), self.cost.tally());
        for ([Text(op), Text(provider), Text(model)], c) in &calls {
            tokens.add([op, provider, model, "input"], &c.input);
            tokens.add([op, provider, model, "output"], &c.output);
            // Cost is linear in each kind of token: the batch's sums price it.
            if let Some(price) = self.prices.find(model) {
                cost.add(
                    [op, provider, model],
                    &Buckets::totals(c.calls, PriceTable::cost(price, c.usage)),
                );
            }
        }
        self.tokens.merge(tokens);
        self.cost.merge(cost);
        Ok(())
    }
}

/// One of [`GenAiUsage`]'s metric families, as a registrable collector.
struct Families(Arc<GenAiUsage>, usize);

impl Collector for Families {
    fn desc(&self) -> Vec<&Desc> {
        match self.1 {
            0 => self.0.tokens.desc(),
            _ => self.0.cost.desc(),
        }
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match self.1 {
            0 => self.0.tokens.collect(),
            _ => self.0.cost.collect(),
        }
    }
}

impl Processor for GenAiUsage {
    fn name(&self) -> &'static str {
        "genai"
    }

    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS
    }

    fn observe(&self, input: &TableBatch) {
        if input.table == Table::SPANS {
            if let Err(e) = self.observe_spans(&input.batch) {
                debug_assert!(false, "genai metrics: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
