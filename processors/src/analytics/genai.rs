//! GenAI usage and cost: one `genai_usage` row per span that reports token usage, in
//! the OpenTelemetry GenAI conventions or the OpenInference ones Phoenix users send,
//! priced from a per-model table; and `gen_ai_client_token_usage` (the conventions'
//! `gen_ai.client.token.usage` histogram) with `swarmscope_genai_cost_usd_total` on
//! `/metrics`.
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
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use prometheus::core::{Collector, Desc};
use serde::{Deserialize, Serialize};

use super::attributes::{number, string_at, strings, timestamps, MapColumn};
use super::series::HistogramFamily;
use crate::processor::{Processor, TableBatch};
use crate::schema::{timestamp_type, Table, TableDef};
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

pub const GENAI_USAGE: Table = Table::declare(&TableDef {
    name: "genai_usage",
    code: 5,
    time_column: "time",
    fallback_time_column: None,
    schema: || SCHEMA.clone(),
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let tokens = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        text("service_name"),
        text("agent_id"),
        text("team"),
        text("provider"),
        text("model"),
        text("operation"),
        tokens("input_tokens"),
        tokens("output_tokens"),
        tokens("cache_read_tokens"),
        tokens("cache_write_tokens"),
        Field::new("cost_usd", DataType::Float64, true),
        text("price_model"),
    ]))
});

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

/// Derives `genai_usage` rows and keeps the token and cost metrics.
pub struct GenAiUsage {
    prices: PriceTable,
    tokens: HistogramFamily<5>,
    cost: HistogramFamily<3>,
}

/// The conventions' advised buckets for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

impl GenAiUsage {
    pub fn new(config: &GenAiConfig) -> GenAiUsage {
        GenAiUsage {
            prices: config.price_table(),
            tokens: HistogramFamily::new(
                "gen_ai_client_token_usage",
                "Tokens per GenAI call, by operation, provider, model, token type (input, output) and agent.",
                [
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_token_type",
                    "gen_ai_agent_id",
                ],
                TOKEN_BUCKETS.to_vec(),
                config.max_series,
            ),
            // The cost per call; its `_sum` is the spend.
            cost: HistogramFamily::new(
                "swarmscope_genai_call_cost_usd",
                "Cost per GenAI call in US dollars (priced calls only), by provider, model and agent; _sum is the spend.",
                ["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_agent_id"],
                vec![0.0001, 0.001, 0.01, 0.1, 1.0, 10.0],
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

    fn rows(&self, spans: &RecordBatch) -> Result<Option<RecordBatch>> {
        let attributes = MapColumn::of(spans, "attributes")?;
        if !attributes.mentions(&USAGE_PREFIXES) {
            return Ok(None);
        }
        let resource = MapColumn::of(spans, "resource_attributes")?;
        let start = timestamps(spans, "start_time")?;
        let trace = strings(spans, "trace_id")?;
        let span = strings(spans, "span_id")?;
        let service = strings(spans, "service_name")?;
        let agent = strings(spans, "agent_id")?;
        let mut b = UsageColumns::default();
        for row in 0..spans.num_rows() {
            let tokens = |keys: &[&str]| {
                attributes
                    .first(row, keys)
                    .and_then(number)
                    .map(|v| v.max(0.0) as i64)
            };
            let (input, output) = (tokens(&INPUT), tokens(&OUTPUT));
            if input.is_none() && output.is_none() {
                continue;
            }
            let (cache_read, cache_write) = (tokens(&CACHE_READ), tokens(&CACHE_WRITE));
            let text = |keys: &[&str]| {
                attributes
                    .first(row, keys)
                    .or_else(|| resource.first(row, keys))
            };
            let model = text(&MODEL);
            let usage = Usage {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
                cache_read: cache_read.unwrap_or(0),
                cache_write: cache_write.unwrap_or(0),
            };
            let price = model.and_then(|m| self.prices.find(m));
            b.time.append_value(start.value(row));
            b.trace.append_value(trace.value(row));
            b.span.append_value(span.value(row));
            b.service.append_option(string_at(service, row));
            b.agent.append_option(string_at(agent, row));
            b.team.append_option(text(&TEAM));
            b.provider.append_option(text(&PROVIDER));
            b.model.append_option(model);
            b.operation.append_option(text(&OPERATION));
            b.input.append_option(input);
            b.output.append_option(output);
            b.cache_read.append_option(cache_read);
            b.cache_write.append_option(cache_write);
            b.cost
                .append_option(price.map(|p| PriceTable::cost(p, usage)));
            b.price_model.append_option(price.map(|p| p.model.as_str()));
        }
        b.finish()
    }

    fn observe_usage(&self, rows: &RecordBatch) -> Result<()> {
        use arrow::array::{Array, AsArray};
        let text = |name: &str| strings(rows, name);
        let (operation, provider, model, agent) = (
            text("operation")?,
            text("provider")?,
            text("model")?,
            text("agent_id")?,
        );
        let ints = |name: &str| {
            rows.column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                .ok_or_else(|| crate::Error::Schema(format!("no Int64 column {name}")))
        };
        let (input, output) = (ints("input_tokens")?, ints("output_tokens")?);
        let cost = rows
            .column_by_name("cost_usd")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Float64Type>())
            .ok_or_else(|| crate::Error::Schema("no Float64 column cost_usd".into()))?;
        let mut tokens = self.tokens.tally();
        let mut costs = self.cost.tally();
        for row in 0..rows.num_rows() {
            let (op, prov, m, ag) = (
                string_at(operation, row).unwrap_or(""),
                string_at(provider, row).unwrap_or(""),
                string_at(model, row).unwrap_or(""),
                string_at(agent, row).unwrap_or(""),
            );
            for (kind, column) in [("input", input), ("output", output)] {
                if !column.is_null(row) {
                    tokens.observe([op, prov, m, kind, ag], column.value(row) as f64);
                }
            }
            if !cost.is_null(row) {
                costs.observe([prov, m, ag], cost.value(row));
            }
        }
        self.tokens.merge(tokens);
        self.cost.merge(costs);
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

#[derive(Default)]
struct UsageColumns {
    time: TimestampNanosecondBuilder,
    trace: StringBuilder,
    span: StringBuilder,
    service: StringBuilder,
    agent: StringBuilder,
    team: StringBuilder,
    provider: StringBuilder,
    model: StringBuilder,
    operation: StringBuilder,
    input: Int64Builder,
    output: Int64Builder,
    cache_read: Int64Builder,
    cache_write: Int64Builder,
    cost: Float64Builder,
    price_model: StringBuilder,
}

impl UsageColumns {
    fn finish(mut self) -> Result<Option<RecordBatch>> {
        let time = self.time.finish().with_timezone("UTC");
        if time.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(time),
            Arc::new(self.trace.finish()),
            Arc::new(self.span.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.agent.finish()),
            Arc::new(self.team.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.operation.finish()),
            Arc::new(self.input.finish()),
            Arc::new(self.output.finish()),
            Arc::new(self.cache_read.finish()),
            Arc::new(self.cache_write.finish()),
            Arc::new(self.cost.finish()),
            Arc::new(self.price_model.finish()),
        ];
        Ok(Some(RecordBatch::try_new(GENAI_USAGE.schema(), columns)?))
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
            .rows(&input.batch)?
            .map(|rows| vec![TableBatch::new(GENAI_USAGE, rows)])
            .unwrap_or_default())
    }

    fn observes(&self) -> bool {
        true
    }

    fn observe(&self, input: &TableBatch) {
        if input.table == GENAI_USAGE {
            if let Err(e) = self.observe_usage(&input.batch) {
                debug_assert!(false, "genai metrics: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
