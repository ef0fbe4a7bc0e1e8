//! Each item's outcome as input to the runner's one retry policy: a delivery keeps
//! only the items still to send and the refused documents still to store; a round
//! that leaves either is a retryable failure, so the runner's backoff (and its
//! `Retry-After`) paces the next round, as for every sink.

use super::request::{chunks, Item};
use super::service::Outcome;
use super::ElasticsearchSink;
use crate::dead_letter::{dead_letter_rows, DeadLetter};
use crate::sink::{Delivery, SinkError};
use swarmscope_processors::analytics::clock::wall_ns as now_ns;

/// What is left of one delivery.
pub(super) struct Bulk<'a> {
    pub(super) sink: &'a ElasticsearchSink,
    pub(super) pending: Vec<Item>,
    /// Documents the endpoint refused for good, not yet in `dead_letters`.
    pub(super) letters: Vec<DeadLetter>,
}

impl Bulk<'_> {
    /// One request per chunk of what is pending; the items to send again, and the
    /// failure of a whole request (if any) with its `Retry-After`.
    async fn round(&mut self) -> (Vec<Item>, Option<SinkError>) {
        let pending = std::mem::take(&mut self.pending);
        let mut failure = None;
        let mut answered = Vec::with_capacity(pending.len());
        for chunk in chunks(&pending, self.sink.config.bulk_max_bytes) {
            match self.sink.bulk(&chunk).await {
                Ok(outcomes) => answered.extend(outcomes),
                Err(e) => {
                    answered.extend(chunk.iter().map(|_| Outcome::Retry));
                    failure = Some(e);
                }
            }
        }
        let mut retry = Vec::new();
        for (item, outcome) in pending.into_iter().zip(answered) {
            match outcome {
                Outcome::Delivered => {}
                Outcome::Retry => retry.push(item),
                Outcome::Refused {
                    status,
                    error_type,
                    reason,
                } => self.letters.push(DeadLetter {
                    source_table: item.source_table,
                    destination: item.index.to_owned(),
                    document: item.body(),
                    status,
                    error_type,
                    reason,
                }),
            }
        }
        (retry, failure)
    }

    /// Stores the refused documents in `dead_letters`: until the store takes them the
    /// delivery is not done, so nothing is acknowledged that is not kept somewhere.
    async fn keep(&mut self) -> Result<(), SinkError> {
        if self.letters.is_empty() {
            return Ok(());
        }
        let sink = self.sink;
        let rows = dead_letter_rows(&sink.name, now_ns(), &self.letters)
            .map_err(|e| SinkError::Permanent(format!("dead-letter rows: {e}")))?;
        sink.dead_letters
            .keep(rows)
            .await
            .map_err(|e| SinkError::Retryable {
                message: format!("cannot store dead letters yet: {e}"),
                after: None,
            })?;
        let letters = std::mem::take(&mut self.letters);
        sink.metrics
            .dead_letters
            .with_label_values(&[&sink.name])
            .inc_by(letters.len() as u64);
        tracing::warn!(
            sink = %sink.name,
            documents = letters.len(),
            first_reason = %letters[0].reason,
            "Elasticsearch refused documents; kept in dead_letters"
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl Delivery for Bulk<'_> {
    async fn send(&mut self) -> Result<(), SinkError> {
        let mut failure = None;
        if !self.pending.is_empty() {
            let sent = self.pending.len();
            let (retry, failed) = self.round().await;
            // Items of a round that got anything through count as item retries; a
            // round where nothing got through is the runner's retry alone.
            let nothing_through = retry.len() == sent && failed.is_some();
            if !retry.is_empty() && !nothing_through {
                self.sink
                    .metrics
                    .item_retries
                    .with_label_values(&[&self.sink.name])
                    .inc_by(retry.len() as u64);
            }
            self.pending = retry;
            failure = failed;
        }
        self.keep().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(failure.unwrap_or_else(|| SinkError::Retryable {
            message: format!(
                "{}: {} documents answered 429 or 5xx",
                self.sink.bulk_url,
                self.pending.len()
            ),
            after: None,
        }))
    }
}
