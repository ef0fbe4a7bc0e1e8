//! The Elasticsearch sink: `_bulk` requests of `create` actions into the OTel-native
//! data streams, behind the sink runtime's disk queue.
//!
//! It speaks HTTP through reqwest rather than the official `elasticsearch` crate: that
//! crate is only published as alphas and pins reqwest 0.12 (a second HTTP stack beside
//! the 0.13 the collector uses), and `_bulk` is one NDJSON endpoint whose per-item
//! answers the sink has to read itself anyway.
//!
//! One file per concern, as Vector's sinks: [`config`], [`documents`] (the encoder),
//! [`request`] (items of `_bulk` requests), [`service`] (one `_bulk` call and its
//! answer) and [`retry`] (each item's outcome as input to the runner's retry policy).
//!
//! Each item's answer decides its fate:
//! - 2xx, or 409 to a `create` (a retry of a document that did arrive): delivered;
//! - 429 and 5xx: sent again, alone, after the runner's backoff, until accepted;
//! - anything else (a 400 mapping error, say): kept in the `dead_letters` table with
//!   the status, error type and reason, and counted in
//!   `swarmscope_sink_dead_letters_total{sink}`.
//!
//! A request refused as a whole is treated like each of its items, except 401 and 403,
//! which are retried (a credential being fixed loses nothing).

mod config;
mod documents;
mod request;
mod retry;
mod service;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use prometheus::IntCounterVec;
use swarmscope_processors::schema::Table;
use swarmscope_processors::ConfigError;

pub use config::ElasticsearchConfig;
pub use documents::{documents, index_of, Document};

use crate::dead_letter::DeadLetters;
use crate::sink::{Delivery, Sink, SinkError};

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

impl ElasticsearchSink {
    pub fn new(
        name: &str,
        config: ElasticsearchConfig,
        dead_letters: Arc<dyn DeadLetters>,
        metrics: EsMetrics,
    ) -> Result<ElasticsearchSink, ConfigError> {
        let client = crate::tls::http_client(
            &format!("sinks.{name}"),
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )?;
        Ok(ElasticsearchSink {
            name: name.to_owned(),
            bulk_url: format!("{}/_bulk", config.endpoint.trim_end_matches('/')),
            config,
            client,
            dead_letters,
            metrics,
        })
    }
}

impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        index_of(table).is_some()
    }

    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
        Ok(Box::new(retry::Bulk {
            sink: self,
            pending: request::items(batches)?,
            letters: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            c.validate().unwrap_err().key(),
            "sinks.elasticsearch.username"
        );
        c.password = Some("changeme".into());
        assert!(c.validate().is_ok());
        c.api_key = Some("a2V5".into());
        assert_eq!(
            c.validate().unwrap_err().key(),
            "sinks.elasticsearch.api_key"
        );
        c.api_key = None;
        c.endpoint = "elasticsearch:9200".into();
        assert_eq!(
            c.validate().unwrap_err().key(),
            "sinks.elasticsearch.endpoint"
        );
    }
}
