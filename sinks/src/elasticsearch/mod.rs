//! The Elasticsearch sink: `_bulk` requests of `create` actions into the OTel-native
//! data streams, behind the sink runtime's disk queue.
//!
//! It speaks HTTP through reqwest rather than the official `elasticsearch` crate: that
//! crate is only published as alphas and pins reqwest 0.12 (a second HTTP stack beside
//! the 0.13 the collector uses), and `_bulk` is one NDJSON endpoint whose per-item
//! answers the sink has to read itself anyway.
//!
//! Each item's answer decides its fate:
//! - 2xx, or 409 to a `create` (a retry of a document that did arrive): delivered;
//! - 429 and 5xx: sent again, alone, with exponential backoff, until accepted;
//! - anything else (a 400 mapping error, say): kept in the `dead_letters` table with
//!   the status, error type and reason, and counted in
//!   `swarmscope_sink_dead_letters_total{sink}`.
//!
//! A request refused as a whole is treated like each of its items, except 401 and 403,
//! which are retried (a credential being fixed loses nothing).

mod config;
mod documents;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use prometheus::IntCounterVec;
use serde_json::Value;
use swarmscope_processors::schema::Table;

pub use config::ElasticsearchConfig;
pub use documents::{documents, index_of, Document};

use crate::dead_letter::{dead_letter_rows, DeadLetter, DeadLetters};
use crate::sink::{jitter, retry_after, Sink, SinkError};

pub struct ElasticsearchSink {
    name: String,
    config: ElasticsearchConfig,
    client: reqwest::Client,
    bulk_url: String,
    dead_letters: Arc<dyn DeadLetters>,
    metrics: EsMetrics,
}

/// Counters beyond the runner's, labelled by sink.
#[derive(Clone)]
pub struct EsMetrics {
    pub dead_letters: IntCounterVec,
    pub item_retries: IntCounterVec,
}

impl EsMetrics {
    pub fn new() -> EsMetrics {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(prometheus::Opts::new(name, help), &["sink"])
                .unwrap_or_else(|e| unreachable!("metric options are constant: {e}"))
        };
        EsMetrics {
            dead_letters: counter(
                "swarmscope_sink_dead_letters_total",
                "Documents an endpoint refused for good, kept in the dead_letters table.",
            ),
            item_retries: counter(
                "swarmscope_sink_item_retries_total",
                "Documents sent again after an endpoint answered 429 or 5xx for them.",
            ),
        }
    }
}

impl Default for EsMetrics {
    fn default() -> Self {
        EsMetrics::new()
    }
}

/// What became of one item of a `_bulk` request.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered,
    Retry,
    Refused {
        status: i32,
        error_type: String,
        reason: String,
    },
}

/// A document ready to send: its NDJSON lines and where it came from.
struct Item {
    lines: Vec<u8>,
    index: &'static str,
    source_table: Table,
    /// Where the document starts in `lines` (after the action line).
    body_start: usize,
}

impl Item {
    fn body(&self) -> String {
        let body = &self.lines[self.body_start..];
        String::from_utf8_lossy(body.strip_suffix(b"\n").unwrap_or(body)).into_owned()
    }
}

const MAX_ITEM_BACKOFF: Duration = Duration::from_secs(30);

impl ElasticsearchSink {
    pub fn new(
        name: &str,
        config: ElasticsearchConfig,
        dead_letters: Arc<dyn DeadLetters>,
        metrics: EsMetrics,
    ) -> Result<ElasticsearchSink, String> {
        let client = crate::tls::http_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )
        .map_err(|e| format!("sinks.{name}: {e}"))?;
        Ok(ElasticsearchSink {
            name: name.to_owned(),
            bulk_url: format!("{}/_bulk", config.endpoint.trim_end_matches('/')),
            config,
            client,
            dead_letters,
            metrics,
        })
    }

    /// One `_bulk` request: each item's outcome, or the error of the whole request.
    async fn bulk(&self, items: &[&Item]) -> Result<Vec<Outcome>, SinkError> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.lines.len()).sum());
        for item in items {
            body.extend_from_slice(&item.lines);
        }
        let mut request = self
            .client
            .post(&self.bulk_url)
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", format!("ApiKey {key}"));
        }
        let retryable = |message: String, after| SinkError::Retryable { message, after };
        let response = request
            .send()
            .await
            .map_err(|e| retryable(format!("{}: {e}", self.bulk_url), None))?;
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| retryable(format!("{}: {e}", self.bulk_url), None))?;
        if status != 200 {
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (error_type, reason) = error_of(&answer["error"]);
            let message = format!("{}: HTTP {status}: {error_type}: {reason}", self.bulk_url);
            return match status {
                401 | 403 => {
                    tracing::error!(sink = %self.name, %message, "Elasticsearch refused the sink's credentials; retrying");
                    Err(retryable(message, after))
                }
                429 | 500.. => Err(retryable(message, after)),
                _ => Ok(items
                    .iter()
                    .map(|_| Outcome::Refused {
                        status: i32::from(status),
                        error_type: error_type.clone(),
                        reason: reason.clone(),
                    })
                    .collect()),
            };
        }
        let answer = serde_json::from_slice::<BulkAnswer>(&bytes).ok();
        let outcomes = answer
            .and_then(|a| outcomes(&a, items.len()))
            .ok_or_else(|| {
                retryable(
                    format!(
                        "{}: a _bulk answer without one item per action",
                        self.bulk_url
                    ),
                    None,
                )
            })?;
        Ok(outcomes)
    }

    /// Keeps `letters` in `dead_letters`, trying until the store takes them: the queue
    /// waits meanwhile, so nothing is acknowledged that is not kept somewhere.
    async fn keep(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        let rows = match dead_letter_rows(&self.name, now_ns(), &letters) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot build dead-letter rows");
                return;
            }
        };
        let mut wait = Duration::from_millis(100);
        while let Err(e) = self.dead_letters.keep(rows.clone()).await {
            tracing::warn!(sink = %self.name, error = %e, "cannot store dead letters yet; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_ITEM_BACKOFF);
        }
        self.metrics
            .dead_letters
            .with_label_values(&[&self.name])
            .inc_by(letters.len() as u64);
        tracing::warn!(
            sink = %self.name,
            documents = letters.len(),
            first_reason = %letters[0].reason,
            "Elasticsearch refused documents; kept in dead_letters"
        );
    }
}

/// A `_bulk` answer, read for what the sink needs of it: each item's action, status
/// and error (the rest of a document's answer is skipped, not built).
#[derive(serde::Deserialize)]
struct BulkAnswer {
    items: Vec<std::collections::BTreeMap<String, ItemAnswer>>,
}

#[derive(serde::Deserialize)]
struct ItemAnswer {
    status: i64,
    #[serde(default)]
    error: Value,
}

/// `items[i]` of a `_bulk` answer as an outcome; `None` when the answer does not list
/// exactly `expected` items.
fn outcomes(answer: &BulkAnswer, expected: usize) -> Option<Vec<Outcome>> {
    if answer.items.len() != expected {
        return None;
    }
    answer
        .items
        .iter()
        .map(|item| {
            let (action, result) = item.iter().next()?;
            let status = result.status;
            Some(match status {
                200..=299 => Outcome::Delivered,
                409 if action == "create" => Outcome::Delivered,
                429 | 500.. => Outcome::Retry,
                _ => {
                    let (error_type, reason) = error_of(&result.error);
                    Outcome::Refused {
                        status: i32::try_from(status).unwrap_or(i32::MAX),
                        error_type,
                        reason,
                    }
                }
            })
        })
        .collect()
}

/// The `type` and `reason` (with its `caused_by`) of an answer's `error`.
fn error_of(error: &Value) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut reason = text(&error["reason"]);
    if let Some(cause) = error["caused_by"]["reason"].as_str() {
        reason = format!("{reason}: {cause}");
    }
    match error {
        Value::String(s) => ("error".into(), s.clone()),
        _ => (text(&error["type"]), reason),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `items` in requests of at most about `max_bytes` each (one item a request at least).
fn chunks(items: &[Item], max_bytes: usize) -> Vec<Vec<&Item>> {
    let mut out: Vec<Vec<&Item>> = Vec::new();
    let mut size = 0;
    for item in items {
        match out.last_mut() {
            Some(chunk) if size + item.lines.len() <= max_bytes => chunk.push(item),
            _ => {
                out.push(vec![item]);
                size = 0;
            }
        }
        size += item.lines.len();
    }
    out
}

#[async_trait::async_trait]
impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        index_of(table).is_some()
    }

    async fn send(&self, batches: &[(Table, RecordBatch)]) -> Result<(), SinkError> {
        let mut pending = Vec::new();
        // Documents of a batch go to one index: its action line is made once.
        let mut action = (String::new(), String::new());
        for (table, batch) in batches {
            for doc in documents(*table, batch).map_err(SinkError::Permanent)? {
                if action.0 != doc.index {
                    action = (
                        doc.index.to_owned(),
                        serde_json::json!({ "create": { "_index": doc.index } }).to_string(),
                    );
                }
                let action = &action.1;
                let mut lines = Vec::with_capacity(action.len() + doc.body.len() + 2);
                lines.extend_from_slice(action.as_bytes());
                lines.push(b'\n');
                let body_start = lines.len();
                lines.extend_from_slice(doc.body.as_bytes());
                lines.push(b'\n');
                pending.push(Item {
                    lines,
                    index: doc.index,
                    source_table: doc.source_table,
                    body_start,
                });
            }
        }
        let total = pending.len();
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            let mut retry = Vec::new();
            let mut letters = Vec::new();
            let mut failure = None;
            let mut answered = Vec::with_capacity(pending.len());
            for chunk in chunks(&pending, self.config.bulk_max_bytes) {
                let results = match self.bulk(&chunk).await {
                    Ok(outcomes) => outcomes,
                    Err(e) => {
                        failure = Some(e);
                        chunk.iter().map(|_| Outcome::Retry).collect()
                    }
                };
                answered.extend(results);
            }
            for (item, outcome) in pending.into_iter().zip(answered) {
                match outcome {
                    Outcome::Delivered => {}
                    Outcome::Retry => retry.push(item),
                    Outcome::Refused {
                        status,
                        error_type,
                        reason,
                    } => letters.push(DeadLetter {
                        source_table: item.source_table,
                        destination: item.index.to_owned(),
                        status,
                        error_type,
                        reason,
                        document: item.body(),
                    }),
                }
            }
            // Nothing got through at all: the runner's backoff, and its retry count.
            if retry.len() == total {
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            self.keep(letters).await;
            if retry.is_empty() {
                break;
            }
            self.metrics
                .item_retries
                .with_label_values(&[&self.name])
                .inc_by(retry.len() as u64);
            let after = match &failure {
                Some(SinkError::Retryable { after, .. }) => *after,
                _ => None,
            };
            tokio::time::sleep(after.unwrap_or_else(|| jitter(backoff))).await;
            backoff = (backoff * 2).min(MAX_ITEM_BACKOFF);
            pending = retry;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_items_are_delivered_retried_or_refused_by_status() {
        let answer = serde_json::json!({
            "took": 3,
            "errors": true,
            "items": [
                {"create": {"_index": "traces-generic.otel-default", "status": 201, "result": "created"}},
                {"create": {"_index": "traces-generic.otel-default", "status": 409,
                    "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}}},
                {"create": {"_index": "traces-generic.otel-default", "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}},
                {"create": {"_index": "traces-generic.otel-default", "status": 503,
                    "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}},
                {"create": {"_index": "traces-generic.otel-default", "status": 400,
                    "error": {"type": "document_parsing_exception", "reason": "failed to parse field [attributes.n]",
                              "caused_by": {"type": "number_format_exception", "reason": "For input string: \"x\""}}}}
            ]
        });
        let answer: BulkAnswer = serde_json::from_value(answer).unwrap();
        let got = outcomes(&answer, 5).unwrap();
        assert_eq!(got[0], Outcome::Delivered);
        assert_eq!(got[1], Outcome::Delivered);
        assert_eq!(got[2], Outcome::Retry);
        assert_eq!(got[3], Outcome::Retry);
        assert_eq!(
            got[4],
            Outcome::Refused {
                status: 400,
                error_type: "document_parsing_exception".into(),
                reason: "failed to parse field [attributes.n]: For input string: \"x\"".into(),
            }
        );
        assert!(outcomes(&answer, 4).is_none());
    }

    #[test]
    fn items_are_split_into_requests_by_size() {
        let item = |n: usize| Item {
            lines: vec![b'x'; n],
            index: "alerts",
            source_table: Table::SPANS,
            body_start: 0,
        };
        let items = vec![item(40), item(40), item(40), item(200)];
        let sizes: Vec<usize> = chunks(&items, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
    }

    #[test]
    fn config_names_its_bad_keys() {
        let mut c = ElasticsearchConfig {
            endpoint: "http://127.0.0.1:9200".into(),
            ca_file: None,
            username: Some("elastic".into()),
            password: None,
            api_key: None,
            bulk_max_bytes: 1 << 20,
            timeout_ms: 1000,
            queue_max_bytes: 1 << 20,
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("sinks.elasticsearch.username"));
        c.password = Some("changeme".into());
        assert!(c.validate().is_ok());
        c.api_key = Some("a2V5".into());
        assert!(c
            .validate()
            .unwrap_err()
            .contains("sinks.elasticsearch.api_key"));
        c.api_key = None;
        c.endpoint = "elasticsearch:9200".into();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("sinks.elasticsearch.endpoint"));
    }
}
