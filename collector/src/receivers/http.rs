//! The OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`.
//!
//! Per the OTLP specification: `application/x-protobuf` or `application/json` bodies,
//! answered in the request's content type; `Content-Encoding: gzip` or `zstd`;
//! the size limit applies to the body after decompression, and decompression stops
//! as soon as it is passed (a compression bomb costs at most `max_request_bytes`).
//! Failures are a `google.rpc.Status`: 400 undecodable, 401 bad token, 405 wrong
//! method, 413 too large, 415 unsupported content type or encoding, 503 storage
//! unavailable.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::json;
use swarmscope_processors::{otlp_json, otlp_proto};

use crate::pipeline::{ExportOutcome, ExportRequest, Pipeline, PipelineError};
use crate::telemetry::Transport;

#[derive(Clone)]
struct Receiver {
    pipeline: Pipeline,
    max_request_bytes: usize,
    auth_token: Option<String>,
}

/// The OTLP/HTTP routes.
pub fn router(pipeline: Pipeline, max_request_bytes: usize, auth_token: Option<String>) -> Router {
    let receiver = Receiver {
        pipeline,
        max_request_bytes,
        auth_token,
    };
    Router::new()
        .route("/v1/traces", post(|s, r| export(s, Signal::Traces, r)))
        .route("/v1/metrics", post(|s, r| export(s, Signal::Metrics, r)))
        .route("/v1/logs", post(|s, r| export(s, Signal::Logs, r)))
        .with_state(receiver)
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A refusal, rendered as a `google.rpc.Status` in the request's encoding.
struct Failure {
    status: StatusCode,
    message: String,
    encoding: Encoding,
}

impl Failure {
    fn new(status: StatusCode, encoding: Encoding, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            encoding,
        }
    }
}

/// The gRPC code a `google.rpc.Status` body carries for an HTTP status.
fn grpc_code(status: StatusCode) -> tonic::Code {
    match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = grpc_code(self.status) as i32;
        let body = match self.encoding {
            Encoding::Protobuf => tonic_types::Status {
                code,
                message: self.message,
                details: Vec::new(),
            }
            .encode_to_vec(),
            Encoding::Json => json!({"code": code, "message": self.message})
                .to_string()
                .into_bytes(),
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, self.encoding.content_type())],
            body,
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

async fn export(State(receiver): State<Receiver>, signal: Signal, request: Request) -> Response {
    match handle(&receiver, signal, request).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn handle(
    receiver: &Receiver,
    signal: Signal,
    request: Request,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let encoding = request_encoding(&parts.headers)?;
    if let Some(token) = &receiver.auth_token {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !super::bearer_matches(header, token) {
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                encoding,
                "missing or invalid bearer token in the Authorization header",
            ));
        }
    }
    // Refused before the body is read and decoded.
    receiver
        .pipeline
        .admission(Transport::Http)
        .map_err(|e| pipeline_failure(encoding, e))?;
    let limit = receiver.max_request_bytes;
    let raw = read_body(body, limit, encoding).await?;
    let bytes = decompress(&parts.headers, raw, limit, encoding)?;
    let (decoded, warning) = decode(signal, encoding, &bytes)
        .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, encoding, m))?;
    drop(bytes);
    let mut outcome = receiver
        .pipeline
        .export(decoded, Transport::Http)
        .await
        .map_err(|e| pipeline_failure(encoding, e))?;
    outcome.warn(warning);
    Ok(success(signal, encoding, outcome))
}

fn pipeline_failure(encoding: Encoding, e: PipelineError) -> Failure {
    match e {
        PipelineError::Overloaded(m) | PipelineError::Unavailable(m) => {
            Failure::new(StatusCode::SERVICE_UNAVAILABLE, encoding, m)
        }
        PipelineError::Invalid(m) => Failure::new(StatusCode::BAD_REQUEST, encoding, m),
        PipelineError::Internal(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, encoding, m),
    }
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, Failure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Json,
            format!(
                "unsupported content type {content_type:?}; use application/x-protobuf or application/json"
            ),
        )),
    }
}

async fn read_body(body: Body, limit: usize, encoding: Encoding) -> Result<Bytes, Failure> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<http_body_util::LengthLimitError>())
            .is_some();
        if too_large {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                encoding,
                format!("request body is larger than the limit of {limit} bytes"),
            )
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                encoding,
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

/// Undoes `Content-Encoding`, refusing as soon as the output passes `limit`.
fn decompress(
    headers: &HeaderMap,
    raw: Bytes,
    limit: usize,
    encoding: Encoding,
) -> Result<Bytes, Failure> {
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match content_encoding.as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                encoding,
                format!("invalid zstd body: {e}"),
            )
        })?),
        other => {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                encoding,
                format!("unsupported content encoding {other:?}; use gzip, zstd or identity"),
            ))
        }
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "exactly at the limit" from "over it".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                encoding,
                format!("invalid {content_encoding} body: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            encoding,
            format!("decompressed request is larger than the limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

/// The decoded request, and a warning for the client when invalid UTF-8 was repaired
/// (see [`otlp_proto`]; a JSON body gets the same `from_utf8_lossy` treatment).
fn decode(
    signal: Signal,
    encoding: Encoding,
    bytes: &Bytes,
) -> Result<(ExportRequest, Option<String>), String> {
    let protobuf_error = |e: prost::DecodeError| format!("invalid protobuf body: {e}");
    let json_error = |e: swarmscope_processors::Error| e.to_string();
    if encoding == Encoding::Json {
        let (text, warning) = match std::str::from_utf8(bytes) {
            Ok(_) => (std::borrow::Cow::Borrowed(&bytes[..]), None),
            Err(_) => (
                std::borrow::Cow::Owned(String::from_utf8_lossy(bytes).into_owned().into_bytes()),
                Some("the JSON body was not valid UTF-8; each invalid sequence was replaced with U+FFFD".to_owned()),
            ),
        };
        let request = match signal {
            Signal::Traces => {
                ExportRequest::Traces(otlp_json::decode_traces(&text).map_err(json_error)?)
            }
            Signal::Metrics => {
                ExportRequest::Metrics(otlp_json::decode_metrics(&text).map_err(json_error)?)
            }
            Signal::Logs => ExportRequest::Logs(otlp_json::decode_logs(&text).map_err(json_error)?),
        };
        return Ok((request, warning));
    }
    Ok(match signal {
        Signal::Traces => {
            ExportRequest::traces_from_protobuf(bytes.clone()).map_err(protobuf_error)?
        }
        Signal::Metrics => {
            let d =
                otlp_proto::decode::<ExportMetricsServiceRequest>(bytes).map_err(protobuf_error)?;
            let warning = d.warning();
            (ExportRequest::Metrics(d.request), warning)
        }
        Signal::Logs => {
            let d =
                otlp_proto::decode::<ExportLogsServiceRequest>(bytes).map_err(protobuf_error)?;
            let warning = d.warning();
            (ExportRequest::Logs(d.request), warning)
        }
    })
}

/// The export response; `partialSuccess` only when records were rejected or there is
/// a warning (then with `rejected` 0, as the OTLP specification allows).
fn success(signal: Signal, encoding: Encoding, outcome: ExportOutcome) -> Response {
    use super::grpc::Signal as _;
    let body = match encoding {
        // The same response message gRPC answers with.
        Encoding::Protobuf => match signal {
            Signal::Traces => super::grpc::Traces::response(outcome).encode_to_vec(),
            Signal::Metrics => super::grpc::Metrics::response(outcome).encode_to_vec(),
            Signal::Logs => super::grpc::Logs::response(outcome).encode_to_vec(),
        },
        Encoding::Json => {
            let rejected = outcome.rejected;
            let partial = outcome.has_partial_success();
            let message = outcome.error_message.unwrap_or_default();
            let field = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
                Signal::Logs => "rejectedLogRecords",
            };
            let document = if partial {
                // int64 is a string in proto3 JSON.
                json!({"partialSuccess": {field: rejected.to_string(), "errorMessage": message}})
            } else {
                json!({})
            };
            document.to_string().into_bytes()
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}
