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
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus::IntCounter;
use prost::Message;
use swarmscope_processors::convert::to_otlp::spans_to_otlp;
use swarmscope_processors::schema::Table;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

pub use config::{Compression, OtlpSinkConfig};

use crate::sink::{Delivery, Sink, SinkError};
use swarmscope_processors::ConfigError;

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
    pub fn new(name: &str, config: OtlpSinkConfig) -> Result<OtlpSink, ConfigError> {
        let section = format!("sinks.{name}");
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| {
                let expected = format!("a gRPC endpoint ({e})");
                ConfigError::invalid(format!("{section}.endpoint"), expected, &config.endpoint)
            })?
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms));
        if config.endpoint.starts_with("https://") {
            let tls = crate::tls::grpc_tls(&section, config.ca_file.as_ref())?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ConfigError::rule(format!("{section}.ca_file"), e.to_string()))?;
        }
        let mut client = TraceServiceClient::new(endpoint.connect_lazy());
        match config.compression {
            Compression::Gzip => client = client.send_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => client = client.send_compressed(CompressionEncoding::Zstd),
            Compression::None => {}
        }
        Ok(OtlpSink {
            name: name.to_owned(),
            config,
            client,
            rejected: IntCounter::new(
                format!("swarmscope_sink_{name}_rejected_spans_total"),
                "Spans the OTLP endpoint refused through partial_success.",
            )
            .map_err(|e| ConfigError::invalid(section, "a name fit for a metric name", e))?,
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

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        table == Table::SPANS
    }

    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
        let mut resource_spans = Vec::new();
        for (_, batch) in batches {
            let part = spans_to_otlp(batch).map_err(|e| SinkError::Permanent(e.to_string()))?;
            resource_spans.extend(part.resource_spans);
        }
        Ok(Box::new(Exports {
            sink: self,
            requests: requests(resource_spans, self.config.max_request_bytes).into(),
        }))
    }
}

/// The export requests of one delivery not yet answered, in order: a retry resumes at
/// the first that failed.
struct Exports<'a> {
    sink: &'a OtlpSink,
    requests: std::collections::VecDeque<ExportTraceServiceRequest>,
}

#[async_trait::async_trait]
impl Delivery for Exports<'_> {
    async fn send(&mut self) -> Result<(), SinkError> {
        while let Some(request) = self.requests.front() {
            self.sink.export(request.clone()).await?;
            self.requests.pop_front();
        }
        Ok(())
    }
}

/// `resource_spans` in requests of at most about `budget` encoded bytes (gRPC servers
/// refuse messages past 4 MiB by default); a resource too large alone is split by
/// spans.
fn requests(resource_spans: Vec<ResourceSpans>, budget: usize) -> Vec<ExportTraceServiceRequest> {
    let mut out = Vec::new();
    let mut current = ExportTraceServiceRequest::default();
    let mut size = 0;
    let mut push = |rs: ResourceSpans, out: &mut Vec<ExportTraceServiceRequest>| {
        let len = rs.encoded_len();
        if size + len > budget && !current.resource_spans.is_empty() {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.resource_spans.push(rs);
    };
    for rs in resource_spans {
        if rs.encoded_len() <= budget {
            push(rs, &mut out);
            continue;
        }
        for scope in &rs.scope_spans {
            let piece = |spans: Vec<Span>| ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: scope.scope.clone(),
                    spans,
                    schema_url: scope.schema_url.clone(),
                }],
                schema_url: rs.schema_url.clone(),
            };
            let overhead = piece(Vec::new()).encoded_len();
            let (mut spans, mut bytes) = (Vec::new(), overhead);
            for span in &scope.spans {
                let len = span.encoded_len() + 8;
                if bytes + len > budget && !spans.is_empty() {
                    push(piece(std::mem::take(&mut spans)), &mut out);
                    bytes = overhead;
                }
                bytes += len;
                spans.push(span.clone());
            }
            if !spans.is_empty() {
                push(piece(spans), &mut out);
            }
        }
    }
    if !current.resource_spans.is_empty() {
        out.push(current);
    }
    out
}

impl OtlpSink {
    async fn export(&self, request: ExportTraceServiceRequest) -> Result<(), SinkError> {
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
    fn exports_are_split_to_stay_under_the_request_budget() {
        let span = |i: u64| Span {
            trace_id: vec![1; 16],
            span_id: i.to_be_bytes().to_vec(),
            name: "x".repeat(100),
            ..Default::default()
        };
        let resource = |spans: Vec<Span>| ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        // Three small resources and one with 100 spans, under a 2,000-byte budget.
        let input = vec![
            resource(vec![span(0)]),
            resource(vec![span(1)]),
            resource((2..102).map(span).collect()),
            resource(vec![span(102)]),
        ];
        let out = requests(input, 2_000);
        assert!(out.len() > 5, "{} requests", out.len());
        assert!(out.iter().all(|r| r.encoded_len() <= 2_000));
        let ids: Vec<Vec<u8>> = out
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.span_id.clone())
            .collect();
        let expected: Vec<Vec<u8>> = (0..103u64).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(ids, expected, "every span once, in order");
    }

    #[test]
    fn config_names_its_bad_keys() {
        let mut c = OtlpSinkConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            ca_file: None,
            bearer_token: None,
            compression: Compression::Gzip,
            timeout_ms: 1000,
            max_request_bytes: 1 << 20,
            queue_max_bytes: 1 << 20,
        };
        assert!(c.validate("sinks.jaeger").is_ok());
        // An unknown compression is refused by the parser, naming the line.
        let refused = toml::from_str::<OtlpSinkConfig>(
            "endpoint = \"http://127.0.0.1:4317\"\ncompression = \"brotli\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("compression = \"brotli\""), "{refused}");
        assert!(
            refused.contains("expected one of `gzip`, `zstd`, `none`"),
            "{refused}"
        );
        c.compression = Compression::None;
        c.endpoint = "jaeger:4317".into();
        assert_eq!(
            c.validate("sinks.otlp").unwrap_err().key(),
            "sinks.otlp.endpoint"
        );
    }
}
