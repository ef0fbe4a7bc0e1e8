//! The service: one `_bulk` request over HTTP, and each item's outcome as its answer
//! says.

use serde_json::Value;

use super::request::Item;
use super::ElasticsearchSink;
use crate::sink::{retry_after, SinkError};

/// What became of one item of a `_bulk` request.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Delivered,
    Retry,
    Refused {
        status: i32,
        error_type: String,
        reason: String,
    },
}

impl ElasticsearchSink {
    /// One `_bulk` request: each item's outcome, or the error of the whole request.
    pub(super) async fn bulk(&self, items: &[&Item]) -> Result<Vec<Outcome>, SinkError> {
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
            return self.refused(items.len(), status, &bytes, after);
        }
        let answer = serde_json::from_slice::<BulkAnswer>(&bytes).ok();
        answer
            .and_then(|a| outcomes(&a, items.len()))
            .ok_or_else(|| {
                retryable(
                    format!(
                        "{}: a _bulk answer without one item per action",
                        self.bulk_url
                    ),
                    None,
                )
            })
    }

    /// A request of `items` items refused as a whole: the rule every sink follows,
    /// but 401 and 403 are retried (a credential being fixed loses nothing), and a
    /// permanent refusal refuses each item (into dead letters).
    fn refused(
        &self,
        items: usize,
        status: u16,
        bytes: &[u8],
        after: Option<std::time::Duration>,
    ) -> Result<Vec<Outcome>, SinkError> {
        let answer: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let (error_type, reason) = error_of(&answer["error"]);
        let message = format!("{}: HTTP {status}: {error_type}: {reason}", self.bulk_url);
        if matches!(status, 401 | 403) {
            tracing::error!(sink = %self.name, %message, "Elasticsearch refused the sink's credentials; retrying");
            return Err(SinkError::Retryable { message, after });
        }
        match SinkError::from_status(status, message, after) {
            SinkError::Permanent(_) => Ok((0..items)
                .map(|_| Outcome::Refused {
                    status: i32::from(status),
                    error_type: error_type.clone(),
                    reason: reason.clone(),
                })
                .collect()),
            retryable => Err(retryable),
        }
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
}
