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

use super::clock::{LiveClock, DEFAULT_FUTURE_TOLERANCE_SECONDS};
use super::series::{Buckets, HistogramFamily};
use crate::columns::{number, strings, MapColumn, Text};
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
/// The model that answered, then the one asked for: what a call is priced by.
const MODEL: [&str; 3] = [
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
];
const REQUEST_MODEL: [&str; 2] = ["gen_ai.request.model", "llm.model_name"];
const RESPONSE_MODEL: [&str; 1] = ["gen_ai.response.model"];
const PROVIDER: [&str; 4] = [
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
];
const OPERATION: [&str; 1] = ["gen_ai.operation.name"];
const TEAM: [&str; 1] = ["coordination.team"];
/// Every key that reports token usage, input or output.
const USAGE_KEYS: [&str; 6] = [
    INPUT[0], INPUT[1], INPUT[2], OUTPUT[0], OUTPUT[1], OUTPUT[2],
];
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
    let text_of_span = |keys: &[&str]| format!("arrow_cast({}, 'Utf8')", first(keys, false));
    let tokens =
        |keys: &[&str]| format!("CAST(try_cast({} AS DOUBLE) AS BIGINT)", first(keys, false));
    // A call without an agent of its own gets its agent span's (genai_attribution);
    // an agent span's own usage, the total of the calls below it, counts only when
    // none of them reported usage.
    format!(
        "SELECT u.time, u.trace_id, u.span_id, u.service_name, \
         coalesce(u.agent_id, a.agent_id) AS agent_id, \
         coalesce(u.agent_name, a.agent_name) AS agent_name, u.team, u.provider, u.model, \
         u.request_model, u.response_model, u.operation, \
         u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, \
         genai_cost(u.model, coalesce(u.input_tokens, 0), coalesce(u.output_tokens, 0), \
         coalesce(u.cache_read_tokens, 0), coalesce(u.cache_write_tokens, 0)) AS cost_usd, \
         genai_price_model(u.model) AS price_model \
         FROM (SELECT start_time AS time, trace_id, span_id, service_name, agent_id, \
         {agent_name} AS agent_name, \
         {team} AS team, {provider} AS provider, {model} AS model, \
         {request_model} AS request_model, {response_model} AS response_model, \
         {operation} AS operation, \
         {input} AS input_tokens, {output} AS output_tokens, {cache_read} AS cache_read_tokens, \
         {cache_write} AS cache_write_tokens FROM spans) u \
         LEFT JOIN (SELECT trace_id, span_id, max(agent_id) AS agent_id, \
         max(agent_name) AS agent_name FROM genai_attribution GROUP BY trace_id, span_id) a \
         ON a.trace_id = u.trace_id AND a.span_id = u.span_id \
         LEFT JOIN (SELECT DISTINCT trace_id, agent_span_id FROM genai_attribution) c \
         ON c.trace_id = u.trace_id AND c.agent_span_id = u.span_id \
         WHERE (u.input_tokens IS NOT NULL OR u.output_tokens IS NOT NULL) \
         AND c.agent_span_id IS NULL",
        agent_name = text_of_span(&["gen_ai.agent.name"]),
        team = text(&TEAM),
        provider = text(&PROVIDER),
        model = text(&MODEL),
        request_model = text(&REQUEST_MODEL),
        response_model = text(&RESPONSE_MODEL),
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
    /// The model name: it prices that model and its dated or versioned ids
    /// (`gpt-4o` prices `gpt-4o-2024-08-06`, not `gpt-4o-mini`); ending in `*`, every
    /// name that starts with what precedes it.
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
pub const DEFAULT_PRICES_AS_OF: &str = "2025-12-01";

/// The shipped price table: (model, input, output, cache read, cache write), US dollars
/// per million tokens. Anthropic's cache writes are its 5-minute writes; OpenAI and
/// Google bill no cache writes apart (the input price).
const DEFAULT_PRICES: &[(&str, f64, f64, f64, f64)] = &[
    ("gpt-5.1", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.0, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("gpt-5-pro", 15.0, 120.0, 15.0, 15.0),
    ("gpt-4.1", 2.0, 8.0, 0.50, 2.0),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-4o", 2.50, 10.0, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("o1", 15.0, 60.0, 7.50, 15.0),
    ("o3", 2.0, 8.0, 0.50, 2.0),
    ("o3-pro", 20.0, 80.0, 20.0, 20.0),
    ("o3-mini", 1.10, 4.40, 0.55, 1.10),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
    ("claude-opus-4-5", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75),
    ("claude-opus-4", 15.0, 75.0, 1.50, 18.75),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
    ("gemini-3-pro", 2.0, 12.0, 0.20, 2.0),
    ("gemini-2.5-pro", 1.25, 10.0, 0.31, 1.25),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075, 0.30),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025, 0.10),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025, 0.10),
];

/// What may qualify a model id before its name, as hosting platforms write them:
/// Bedrock's `[region.]provider.`, segments ending in `.`.
const QUALIFIERS: &[&str] = &[
    "us",
    "eu",
    "apac",
    "global",
    "anthropic",
    "openai",
    "meta",
    "amazon",
    "mistral",
    "cohere",
    "google",
    "ai21",
    "deepseek",
    "qwen",
];

/// The model name as the price table knows it: lowercase, without a path-like prefix
/// (`openai/gpt-4o`, `models/gemini-2.5-pro`) or Bedrock's qualifiers
/// (`us.anthropic.claude-sonnet-4-20250514-v1:0`).
fn canonical(model: &str) -> String {
    let mut name = model.rsplit('/').next().unwrap_or(model).to_lowercase();
    while let Some((head, tail)) = name.split_once('.') {
        if !QUALIFIERS.contains(&head) || tail.is_empty() {
            break;
        }
        name = tail.to_owned();
    }
    name
}

/// Whether `rest`, what follows a table entry in a model name, only dates or versions
/// the same model: `-2024-08-06`, `-20250514`, `@20240620`, `-001`, `-v1:0`, `-latest`,
/// `-preview-05-20`. Anything else names another model: `-mini`, `-pro`, `-lite`, `-5`.
fn same_model(rest: &str) -> bool {
    let mut rest = rest;
    while let Some(sep) = rest.chars().next() {
        if !matches!(sep, '-' | '@' | ':') {
            return false;
        }
        let token_end = rest[1..]
            .find(['-', '@', ':'])
            .map_or(rest.len(), |i| i + 1);
        let token = &rest[1..token_end];
        let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
        let version = token.len() > 1
            && token.starts_with('v')
            && token[1..].bytes().all(|b| b.is_ascii_digit());
        let ok = (digits && (token.len() >= 2 || sep == ':'))
            || version
            || matches!(token, "latest" | "preview" | "exp");
        if !ok {
            return false;
        }
        rest = &rest[token_end..];
    }
    true
}

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
    /// How long a model call waits for its agent span ancestor ([`attribution`]): as
    /// long as an agent may run.
    pub attribution_wait_seconds: u64,
    /// Model calls waiting for their agent span at most.
    pub max_pending_calls: usize,
}

impl Default for GenAiConfig {
    fn default() -> Self {
        GenAiConfig {
            default_prices: true,
            prices: Vec::new(),
            max_series: 10_000,
            attribution_wait_seconds: 3_600,
            max_pending_calls: 100_000,
        }
    }
}

impl GenAiConfig {
    pub fn validate(&self) -> std::result::Result<(), crate::ConfigError> {
        for (i, p) in self.prices.iter().enumerate() {
            let prices = [Some(p.input), Some(p.output), p.cache_read, p.cache_write];
            if p.model.is_empty() {
                return Err(crate::ConfigError::empty(format!(
                    "processors.genai.prices[{i}].model"
                )));
            }
            if prices
                .into_iter()
                .flatten()
                .any(|v| !v.is_finite() || v < 0.0)
            {
                return Err(crate::ConfigError::rule(
                    format!("processors.genai.prices[{i}]"),
                    format!("({}): prices must be finite and >= 0", p.model),
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
    /// The entry pricing `model`: the longest one that names it, less the provider's
    /// qualifiers and case ([`canonical`]), up to a date or version ([`same_model`]).
    pub fn find(&self, model: &str) -> Option<&ModelPrice> {
        let name = canonical(model);
        self.by_model
            .iter()
            .filter(|(entry, _)| match entry.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name.strip_prefix(entry.as_str()).is_some_and(same_model),
            })
            .max_by_key(|(entry, _)| entry.len())
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

/// Attributes calls to their agents ([`attribution`], on the acknowledgement path) and
/// keeps the token and cost metrics of the spans that report usage.
pub struct GenAiUsage {
    prices: PriceTable,
    attribution: Attribution,
    tokens: HistogramFamily<5>,
    cost: HistogramFamily<4>,
}

/// The conventions' advised buckets for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The usage attributes of one span, read in one pass over its entries: by field
/// (input, output, cache read, cache write, request model, provider, operation,
/// response model), the value of the first-ranked alias present, with its rank.
#[derive(Default)]
struct Found<'a> {
    values: [Option<&'a str>; 8],
    ranks: [usize; 8],
}

/// The aliases of each field, first ranked first, as [`Found::take`] matches them.
#[cfg(test)]
const FIELDS: [&[&str]; 8] = [
    &INPUT,
    &OUTPUT,
    &CACHE_READ,
    &CACHE_WRITE,
    &REQUEST_MODEL,
    &PROVIDER,
    &OPERATION,
    &RESPONSE_MODEL,
];

impl<'a> Found<'a> {
    /// Whether `key` may be one of the aliases: most keys are none of them, and one
    /// byte tells, before any comparison and before their values are read (the filter
    /// of [`MapColumn::scan_where`] that feeds [`Found::take`]).
    fn wanted(key: &str) -> bool {
        matches!(key.as_bytes().first(), Some(b'g' | b'l'))
    }

    fn take(&mut self, key: &str, value: &'a str) {
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
            "gen_ai.request.model" => (4, 0),
            "llm.model_name" => (4, 1),
            "gen_ai.response.model" => (7, 0),
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
    /// On the wall clock.
    pub fn new(config: &GenAiConfig) -> GenAiUsage {
        GenAiUsage::with_clock(config, LiveClock::wall(DEFAULT_FUTURE_TOLERANCE_SECONDS))
    }

    pub fn with_clock(config: &GenAiConfig, clock: LiveClock) -> GenAiUsage {
        GenAiUsage {
            prices: config.price_table(),
            attribution: Attribution::new(
                config.attribution_wait_seconds,
                config.max_pending_calls,
                clock,
            ),
            tokens: HistogramFamily::new(
                "gen_ai_client_token_usage",
                "Tokens per GenAI call, by operation, provider, requested and responding model and token type (input, output).",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_response_model",
                    "gen_ai_token_type",
                ],
                TOKEN_BUCKETS.to_vec(),
                config.max_series,
            ),
            // No buckets: `_sum` is the spend, `_count` the priced calls.
            cost: HistogramFamily::new(
                "swarmscope_genai_cost_usd",
                "Spend on GenAI calls in US dollars (_sum; _count: priced calls), by operation, provider, requested and responding model.",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_response_model",
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

    /// The `genai_attribution` rows a span batch completes.
    fn attribute(&self, input: &TableBatch) -> Result<Option<RecordBatch>> {
        let attributes = MapColumn::of(&input.batch, "attributes")?;
        let any_usage = attributes.mentions(&USAGE_PREFIXES);
        let has_usage = |row: usize| any_usage && attributes.has_any(row, &USAGE_KEYS);
        self.attribution.rows(input, &has_usage, any_usage)
    }

    fn observe_spans(&self, spans: &RecordBatch) -> Result<()> {
        let attributes = MapColumn::of(spans, "attributes")?;
        if !attributes.mentions(&USAGE_PREFIXES) {
            return Ok(());
        }
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let trace = strings(spans, "trace_id")?;
        let span = strings(spans, "span_id")?;
        let mut calls: std::collections::HashMap<[Text; 4], Calls, foldhash::fast::RandomState> =
            Default::default();
        for row in 0..spans.num_rows() {
            let mut found = Found::default();
            attributes.scan_where(row, Found::wanted, |k, v| found.take(k, v));
            if found.values[0].is_none() && found.values[1].is_none() {
                continue;
            }
            // An agent span's total of the calls below it, counted through them.
            if self
                .attribution
                .take_covered(trace.value(row), span.value(row))
            {
                continue;
            }
            let mut from_resource = Found::default();
            resource.scan_where(row, Found::wanted, |k, v| from_resource.take(k, v));
            let tokens = |i: usize| found.values[i].and_then(token_count);
            let text = |i: usize| found.values[i].or(from_resource.values[i]).unwrap_or("");
            let (input, output) = (tokens(0), tokens(1));
            let key = [Text(text(6)), Text(text(5)), Text(text(4)), Text(text(7))];
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
        for ([Text(op), Text(provider), Text(request), Text(response)], c) in &calls {
            tokens.add([op, provider, request, response, "input"], &c.input);
            tokens.add([op, provider, request, response, "output"], &c.output);
            // Priced by the model that answered, else the one asked for. Cost is linear
            // in each kind of token: the batch's sums price it.
            let model = if response.is_empty() {
                request
            } else {
                response
            };
            if let Some(price) = self.prices.find(model) {
                cost.add(
                    [op, provider, request, response],
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

    fn derive(&self, input: &TableBatch) -> Result<Vec<TableBatch>> {
        if input.table != Table::SPANS {
            return Ok(Vec::new());
        }
        Ok(self
            .attribute(input)?
            .map(|rows| vec![TableBatch::new(GENAI_ATTRIBUTION, rows)])
            .unwrap_or_default())
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

pub mod attribution;
#[cfg(test)]
mod tests;

use attribution::Attribution;
pub use attribution::GENAI_ATTRIBUTION;
