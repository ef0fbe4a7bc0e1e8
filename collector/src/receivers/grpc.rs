//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService`.
//!
//! tonic decodes and decompresses (gzip, zstd) under `max_request_bytes`; an oversized
//! message is answered RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE when the length
//! prefix alone is too large; [`oversize_is_resource_exhausted`] fixes that up, as the
//! OTLP specification and other collectors answer).

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::pipeline::{ExportOutcome, ExportRequest, Pipeline, PipelineError};

/// The three OTLP services over one pipeline.
#[derive(Clone)]
pub struct OtlpGrpc {
    pipeline: Pipeline,
}

/// How long a refused client is told to wait before retrying.
pub(crate) const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn to_status(e: PipelineError) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    match e {
        // UNAVAILABLE with RetryInfo: OTLP exporters retry after the hinted delay.
        PipelineError::Overloaded(m) | PipelineError::Unavailable(m) => Status::with_error_details(
            tonic::Code::Unavailable,
            m,
            ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
        ),
        PipelineError::Internal(m) => Status::internal(m),
    }
}

impl OtlpGrpc {
    async fn export(&self, request: ExportRequest) -> Result<ExportOutcome, Status> {
        self.pipeline.export(request).await.map_err(to_status)
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let outcome = OtlpGrpc::export(self, ExportRequest::Traces(request.into_inner())).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (outcome.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: outcome.rejected,
                error_message: outcome.error_message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let outcome = OtlpGrpc::export(self, ExportRequest::Metrics(request.into_inner())).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (outcome.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: outcome.rejected,
                error_message: outcome.error_message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let outcome = OtlpGrpc::export(self, ExportRequest::Logs(request.into_inner())).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (outcome.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: outcome.rejected,
                error_message: outcome.error_message.unwrap_or_default(),
            }),
        }))
    }
}

/// Refuses calls without the configured bearer token.
#[derive(Clone)]
pub struct BearerAuth(Option<String>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if super::bearer_matches(header, token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or invalid bearer token in the authorization header",
            ))
        }
    }
}

/// Rewrites tonic's OUT_OF_RANGE for an oversized request to RESOURCE_EXHAUSTED,
/// whether the status travels in the headers (trailers-only) or in the trailers.
fn fix_oversize_status(headers: &mut http::HeaderMap) {
    let is_oversize = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            // grpc-message is percent-encoded on the wire.
            .is_some_and(|m| {
                m.to_str()
                    .is_ok_and(|m| m.contains("too%20large") || m.contains("too large"))
            });
    if is_oversize {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

fn oversize_is_resource_exhausted<B>(
    response: http::Response<B>,
) -> http::Response<OversizeFix<B>> {
    let (mut parts, body) = response.into_parts();
    fix_oversize_status(&mut parts.headers);
    http::Response::from_parts(parts, OversizeFix(body))
}

/// A response body whose trailers get [`fix_oversize_status`].
pub struct OversizeFix<B>(B);

impl<B: http_body::Body + Unpin> http_body::Body for OversizeFix<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        fix_oversize_status(trailers);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Serves the OTLP gRPC services on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    pipeline: Pipeline,
    max_request_bytes: usize,
    auth_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = OtlpGrpc { pipeline };
    let auth = BearerAuth(auth_token);
    let traces = TraceServiceServer::new(service.clone())
        .max_decoding_message_size(max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(service.clone())
        .max_decoding_message_size(max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(service)
        .max_decoding_message_size(max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted,
        ))
        .add_service(InterceptedService::new(traces, auth.clone()))
        .add_service(InterceptedService::new(metrics, auth.clone()))
        .add_service(InterceptedService::new(logs, auth))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
