//! `[sinks.prometheus_remote_write]`: the series of `/metrics` pushed to a Prometheus
//! remote-write 1.0 endpoint (protobuf `WriteRequest`, snappy), as a Prometheus agent
//! scraping swarmscope would.
//!
//! Every `interval` the collector takes a snapshot of its registry (the same families
//! `/metrics` renders: self-telemetry, analytics, span metrics and translated OTLP
//! metrics), turns each sample into a row of the `metrics` schema ([`snapshot`]) and
//! queues it on the sink's disk queue; [`RemoteWriteSink`] sends queued snapshots in
//! order. Series without `job`/`instance` get swarmscope's own, as a scrape would give
//! them. 429 and 5xx are retried (honouring `Retry-After`), other 4xx are permanent, as
//! the remote-write specification asks.

//!
//! One file per concern, as Vector's sinks: [`config`], [`snapshot`] (the registry as
//! rows), [`request`] (rows as a `WriteRequest` body) and the sink here, which posts a
//! body and reads the answer; retries are the sink runner's.

mod config;
mod request;
mod snapshot;

use std::time::Duration;

use arrow::array::RecordBatch;
use swarmscope_processors::schema::Table;
use swarmscope_processors::ConfigError;

pub use config::RemoteWriteConfig;
pub use request::{body, write_request, Label, Sample, TimeSeries, WriteRequest};
pub use snapshot::snapshot;

use crate::sink::{Delivery, Sink, SinkError};

pub struct RemoteWriteSink {
    name: String,
    config: RemoteWriteConfig,
    client: reqwest::Client,
}

impl RemoteWriteSink {
    pub fn new(name: &str, config: RemoteWriteConfig) -> Result<RemoteWriteSink, ConfigError> {
        let client = crate::tls::http_client(
            &format!("sinks.{name}"),
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )?;
        Ok(RemoteWriteSink {
            name: name.to_owned(),
            config,
            client,
        })
    }
}

impl RemoteWriteSink {
    /// One POST of `body`: the remote-write specification's answer rule (2xx
    /// delivered; 429 and 5xx retried, honouring `Retry-After`; other 4xx permanent).
    async fn post(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let mut call = self
            .client
            .post(&self.config.url)
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header(
                "user-agent",
                concat!("swarmscope/", env!("CARGO_PKG_VERSION")),
            )
            .body(body);
        if let Some(token) = &self.config.bearer_token {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.map_err(|e| SinkError::Retryable {
            message: format!("{}: {e}", self.config.url),
            after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = crate::sink::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let message = format!("{}: HTTP {status}: {}", self.config.url, text.trim());
        Err(SinkError::from_status(status.as_u16(), message, after))
    }
}

impl Sink for RemoteWriteSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// The snapshots of `/metrics` the collector queues for it: rows of the `metrics`
    /// schema. (It is not one of the pipeline's sinks: received metrics reach it only
    /// as `/metrics` shows them.)
    fn accepts(&self, table: Table) -> bool {
        table == Table::METRICS
    }

    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
        let request = write_request(batches).map_err(|e| SinkError::Permanent(e.to_string()))?;
        let body = match request.timeseries.is_empty() {
            true => None,
            false => Some(body(&request).map_err(|e| SinkError::Permanent(e.to_string()))?),
        };
        Ok(Box::new(Post { sink: self, body }))
    }
}

/// One encoded `WriteRequest`, posted until the endpoint has it.
struct Post<'a> {
    sink: &'a RemoteWriteSink,
    body: Option<Vec<u8>>,
}

#[async_trait::async_trait]
impl Delivery for Post<'_> {
    async fn send(&mut self) -> Result<(), SinkError> {
        match &self.body {
            Some(body) => self.sink.post(body.clone()).await,
            None => Ok(()),
        }
    }
}
