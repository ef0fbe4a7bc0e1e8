//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService`.
//!
//! tonic decodes and decompresses (gzip, zstd) under `max_request_bytes`; an oversized
//! message is answered RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE when the length
//! prefix alone is too large; [`oversize_is_resource_exhausted`] fixes that up, as the
//! OTLP specification and other collectors answer). Invalid UTF-8 in a request is
//! repaired, not refused ([`OtlpService`]).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use swarmscope_processors::otlp_proto::{self, OtlpRequest};
use tokio::net::TcpListener;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::BoxFuture;
use tonic::server::{NamedService, UnaryService};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::pipeline::{ExportOutcome, ExportRequest, Pipeline, PipelineError};
use crate::telemetry::Transport;

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
        PipelineError::Invalid(m) => Status::invalid_argument(m),
        PipelineError::Internal(m) => Status::internal(m),
    }
}

/// One OTLP signal as a gRPC service: its names, its messages, and how its outcome
/// becomes a response.
pub trait Signal: Send + Sync + 'static {
    const SERVICE: &'static str;
    const EXPORT_PATH: &'static str;
    type Request: OtlpRequest + Send + 'static;
    type Response: prost::Message + Default + Send + 'static;
    fn export_request(request: Self::Request) -> ExportRequest;
    fn response(outcome: ExportOutcome) -> Self::Response;

    /// Decodes a protobuf request, with the warning for the client when invalid
    /// UTF-8 was repaired ([`otlp_proto::decode`]).
    fn decode(bytes: Bytes) -> Result<(ExportRequest, Option<String>), prost::DecodeError> {
        let decoded = otlp_proto::decode::<Self::Request>(&bytes)?;
        let warning = decoded.warning();
        Ok((Self::export_request(decoded.request), warning))
    }
}

pub enum Traces {}
pub enum Metrics {}
pub enum Logs {}

impl Signal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn export_request(request: Self::Request) -> ExportRequest {
        ExportRequest::Traces(request)
    }
    fn decode(bytes: Bytes) -> Result<(ExportRequest, Option<String>), prost::DecodeError> {
        ExportRequest::traces_from_protobuf(bytes)
    }
    fn response(outcome: ExportOutcome) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: outcome
                .has_partial_success()
                .then(|| ExportTracePartialSuccess {
                    rejected_spans: outcome.rejected,
                    error_message: outcome.error_message.unwrap_or_default(),
                }),
        }
    }
}

impl Signal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const EXPORT_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    fn export_request(request: Self::Request) -> ExportRequest {
        ExportRequest::Metrics(request)
    }
    fn response(outcome: ExportOutcome) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: outcome
                .has_partial_success()
                .then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: outcome.rejected,
                    error_message: outcome.error_message.unwrap_or_default(),
                }),
        }
    }
}

impl Signal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn export_request(request: Self::Request) -> ExportRequest {
        ExportRequest::Logs(request)
    }
    fn response(outcome: ExportOutcome) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: outcome
                .has_partial_success()
                .then(|| ExportLogsPartialSuccess {
                    rejected_log_records: outcome.rejected,
                    error_message: outcome.error_message.unwrap_or_default(),
                }),
        }
    }
}

/// The OTLP gRPC service of signal `S`. It does what tonic's generated server does,
/// with one difference: requests are decoded by [`otlp_proto::decode`], so invalid
/// UTF-8 is repaired (and reported in `partial_success`) rather than failing the call.
pub struct OtlpService<S> {
    pipeline: Pipeline,
    max_request_bytes: usize,
    signal: PhantomData<fn() -> S>,
}

impl<S> Clone for OtlpService<S> {
    fn clone(&self) -> Self {
        OtlpService {
            pipeline: self.pipeline.clone(),
            max_request_bytes: self.max_request_bytes,
            signal: PhantomData,
        }
    }
}

impl<S: Signal> OtlpService<S> {
    pub fn new(pipeline: Pipeline, max_request_bytes: usize) -> Self {
        OtlpService {
            pipeline,
            max_request_bytes,
            signal: PhantomData,
        }
    }
}

impl<S: Signal> NamedService for OtlpService<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S: Signal, B> tower::Service<http::Request<B>> for OtlpService<S>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if request.uri().path() != S::EXPORT_PATH {
                return Ok(Status::unimplemented(format!(
                    "{} has no method {}",
                    S::SERVICE,
                    request.uri().path()
                ))
                .into_http());
            }
            // Refused before the body is read and decoded.
            if let Err(e) = this.pipeline.admission(Transport::Grpc) {
                return Ok(to_status(e).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(LenientCodec::<S>(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max_request_bytes);
            Ok(grpc.unary(Export(this), request).await)
        })
    }
}

/// The `Export` method.
struct Export<S>(OtlpService<S>);

impl<S: Signal> UnaryService<(ExportRequest, Option<String>)> for Export<S> {
    type Response = S::Response;
    type Future = BoxFuture<Response<S::Response>, Status>;

    fn call(&mut self, request: Request<(ExportRequest, Option<String>)>) -> Self::Future {
        let pipeline = self.0.pipeline.clone();
        Box::pin(async move {
            let (request, warning) = request.into_inner();
            let mut outcome = pipeline
                .export(request, Transport::Grpc)
                .await
                .map_err(to_status)?;
            outcome.warn(warning);
            Ok(Response::new(S::response(outcome)))
        })
    }
}

/// prost for responses; [`Signal::decode`] for requests.
struct LenientCodec<S>(PhantomData<fn() -> S>);

impl<S: Signal> Codec for LenientCodec<S> {
    type Encode = S::Response;
    type Decode = (ExportRequest, Option<String>);
    type Encoder = tonic_prost::ProstEncoder<S::Response>;
    type Decoder = LenientDecoder<S>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder(PhantomData)
    }
}

struct LenientDecoder<S>(PhantomData<fn() -> S>);

/// The buffer a request's message is gathered in: twice the largest frame. Once a
/// message's header is read, tonic reserves room for the whole message on top of what
/// the buffer holds already; with the message in one frame (see [`MAX_FRAME_BYTES`])
/// that is its length twice over, and a buffer of its default 8 KiB was reallocated
/// with every byte of the message copied. This size takes a message of up to one
/// frame without growing; only the bytes the frames bring are written.
const MESSAGE_BUFFER_BYTES: usize = 2 * MAX_FRAME_BYTES as usize;

impl<S: Signal> Decoder for LenientDecoder<S> {
    type Item = (ExportRequest, Option<String>);
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        // tonic's default threshold for yielding while encoding (responses are small).
        BufferSettings::new(MESSAGE_BUFFER_BYTES, 32 * 1024)
    }

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        S::decode(bytes)
            .map(Some)
            // A malformed message is the client's fault and not worth a retry.
            .map_err(|e| Status::invalid_argument(format!("invalid protobuf message: {e}")))
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

/// The largest HTTP/2 frame a client may send (`SETTINGS_MAX_FRAME_SIZE`; HTTP/2's
/// default, and hyper's, is 16 KiB). An export of a few hundred spans is a few hundred
/// KiB: clients that honour the setting send it in one DATA frame or two instead of a
/// dozen, each of which the connection decodes, accounts for and hands on separately.
const MAX_FRAME_BYTES: u32 = 256 * 1024;

/// Serves the OTLP gRPC services on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    listening: crate::net::Listening,
    pipeline: Pipeline,
    max_request_bytes: usize,
    auth_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let auth = BearerAuth(auth_token);
    let traces = OtlpService::<Traces>::new(pipeline.clone(), max_request_bytes);
    let metrics = OtlpService::<Metrics>::new(pipeline.clone(), max_request_bytes);
    let logs = OtlpService::<Logs>::new(pipeline, max_request_bytes);
    tonic::transport::Server::builder()
        .max_frame_size(MAX_FRAME_BYTES)
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted,
        ))
        .add_service(InterceptedService::new(traces, auth.clone()))
        .add_service(InterceptedService::new(metrics, auth.clone()))
        .add_service(InterceptedService::new(logs, auth))
        .serve_with_incoming_shutdown(listening.incoming(listener), shutdown)
        .await
}
