//! The receivers over a store whose flusher does not run, so that the memory budget
//! stays exactly as full as the test makes it.

use axum::body::Body;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::{ParquetStore, StorageConfig};
use tower::ServiceExt;

use super::grpc::{OtlpService, Traces};
use super::http::router;
use crate::pipeline::Pipeline;

const LIMIT: usize = 1024 * 1024;

fn one_span() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "op".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_000_001_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn http_post(pipeline: &Pipeline, body: Vec<u8>) -> (StatusCode, Option<String>) {
    let request = Request::post("/v1/traces")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Body::from(body))
        .expect("request");
    let response = router(pipeline.clone(), LIMIT, None)
        .oneshot(request)
        .await
        .expect("infallible");
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status(), retry_after)
}

/// The `grpc-status` of a unary export whose answer carries no message (an error).
async fn grpc_export_status(pipeline: &Pipeline, message: &[u8]) -> Option<String> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let request = Request::post("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .expect("request");
    let response = OtlpService::<Traces>::new(pipeline.clone(), LIMIT)
        .oneshot(request)
        .await
        .expect("infallible");
    let headers = response.headers().clone();
    let trailers = response
        .into_body()
        .collect()
        .await
        .ok()
        .and_then(|b| b.trailers().cloned());
    headers
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_full_store_refuses_requests_before_decoding_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ParquetStore::open(StorageConfig {
        data_dir: dir.path().to_owned(),
        // Smaller than one request: an empty buffer admits one, then the budget is full.
        max_buffered_bytes: 1,
        // The span is from 2023; keep it.
        retention_hours: 1_000_000,
        ..StorageConfig::default()
    })
    .await
    .expect("store");
    let pipeline = Pipeline::new(store.clone());

    // While there is room, garbage is decoded and refused as such.
    assert_eq!(
        http_post(&pipeline, b"\xff\xff\xff".to_vec()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        grpc_export_status(&pipeline, b"\xff\xff\xff")
            .await
            .as_deref(),
        Some("3"),
        "INVALID_ARGUMENT"
    );
    assert_eq!(http_post(&pipeline, one_span()).await.0, StatusCode::OK);
    assert_eq!(store.buffered_rows(Table::SPANS), 1);

    // Full: the same garbage is now refused as overload, which it could only be if it
    // was never decoded; so is a valid request, and nothing more is buffered.
    assert_eq!(
        http_post(&pipeline, b"\xff\xff\xff".to_vec()).await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("1".to_owned()))
    );
    assert_eq!(
        http_post(&pipeline, one_span()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        grpc_export_status(&pipeline, b"\xff\xff\xff")
            .await
            .as_deref(),
        Some("14"),
        "UNAVAILABLE"
    );
    assert_eq!(store.buffered_rows(Table::SPANS), 1);

    // A flush makes room again.
    store.flush().await.expect("flush");
    assert_eq!(
        http_post(&pipeline, b"\xff\xff\xff".to_vec()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(http_post(&pipeline, one_span()).await.0, StatusCode::OK);
}
