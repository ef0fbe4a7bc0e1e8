//! The OTLP exporter: spans sent over OTLP gRPC to a Jaeger v2 collector or any OTLP
//! endpoint, behind the sink runtime's disk queue (batching, backoff, restarts).
//!
//! Retries follow the OTLP specification: UNAVAILABLE, RESOURCE_EXHAUSTED (honouring
//! its `RetryInfo` delay), DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS and
//! CANCELLED are retried, as are transport failures; other codes are permanent. A
//! `partial_success` with rejected spans is logged and counted as refused; the rest
//! were accepted.

mod config;

use std::time::Duration;

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus::IntCounter;
use swarmscope_processors::convert::to_otlp::spans_to_otlp;
use swarmscope_processors::schema::Table;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

pub use config::OtlpSinkConfig;

use crate::sink::{Sink, SinkError};

pub struct OtlpSink {
    name: String,
    config: OtlpSinkConfig,
    client: TraceServiceClient<Channel>,
    /// Spans the endpoint refused through `partial_success`.
    pub rejected: IntCounter,
}

impl OtlpSink {
    /// A sink named `name` (its metrics' label and queue folder). Connects lazily: an
    /// endpoint that is down is retried, never an error here.
    pub fn new(name: &str, config: OtlpSinkConfig) -> Result<OtlpSink, String> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("sinks.{name}.endpoint: {e}"))?
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms));
        let mut client = TraceServiceClient::new(endpoint.connect_lazy());
        if config.compression == "gzip" {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpSink {
            name: name.to_owned(),
            config,
            client,
            rejected: IntCounter::new(
                format!("swarmscope_sink_{name}_rejected_spans_total"),
                "Spans the OTLP endpoint refused through partial_success.",
            )
            .map_err(|e| e.to_string())?,
        })
    }
}

/// Whether the OTLP specification says to retry `code`.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | ResourceExhausted
            | DeadlineExceeded
            | Aborted
            | OutOfRange
            | DataLoss
            | Cancelled
    )
}

#[async_trait::async_trait]
impl Sink for OtlpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        table == Table::SPANS
    }

    async fn send(&self, batches: &[(Table, RecordBatch)]) -> Result<(), SinkError> {
        let mut request = ExportTraceServiceRequest::default();
        for (_, batch) in batches {
            let part = spans_to_otlp(batch).map_err(|e| SinkError::Permanent(e.to_string()))?;
            request.resource_spans.extend(part.resource_spans);
        }
        if request.resource_spans.is_empty() {
            return Ok(());
        }
        let mut call = tonic::Request::new(request);
        if let Some(token) = &self.config.bearer_token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                SinkError::Permanent("the bearer token is not a valid header value".into())
            })?;
            call.metadata_mut().insert("authorization", value);
        }
        match self.client.clone().export(call).await {
            Ok(response) => {
                if let Some(partial) = response.into_inner().partial_success {
                    if partial.rejected_spans > 0 {
                        self.rejected.inc_by(partial.rejected_spans as u64);
                        tracing::warn!(
                            sink = %self.name,
                            rejected = partial.rejected_spans,
                            message = %partial.error_message,
                            "the OTLP endpoint refused some spans"
                        );
                    }
                }
                Ok(())
            }
            Err(status) if retryable(status.code()) => Err(SinkError::Retryable {
                after: retry_delay(&status),
                message: format!("{}: {}", self.config.endpoint, status.message()),
            }),
            Err(status) => Err(SinkError::Permanent(format!(
                "{}: {:?}: {}",
                self.config.endpoint,
                status.code(),
                status.message()
            ))),
        }
    }
}

/// The delay a RESOURCE_EXHAUSTED or UNAVAILABLE answer asks for (`RetryInfo`).
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_retryable_codes() {
        assert!(retryable(tonic::Code::Unavailable));
        assert!(retryable(tonic::Code::ResourceExhausted));
        assert!(!retryable(tonic::Code::InvalidArgument));
        assert!(!retryable(tonic::Code::Unauthenticated));
    }

    #[test]
    fn config_names_its_bad_keys() {
        let mut c = OtlpSinkConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            bearer_token: None,
            compression: "gzip".into(),
            timeout_ms: 1000,
            queue_max_bytes: 1 << 20,
        };
        assert!(c.validate("sinks.jaeger").is_ok());
        c.compression = "brotli".into();
        assert!(c
            .validate("sinks.jaeger")
            .unwrap_err()
            .starts_with("sinks.jaeger.compression"));
        c.compression = "none".into();
        c.endpoint = "jaeger:4317".into();
        assert!(c
            .validate("sinks.otlp")
            .unwrap_err()
            .starts_with("sinks.otlp.endpoint"));
    }
}
