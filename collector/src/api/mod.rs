//! The admin and query API (docs/api.md), on 127.0.0.1:8080 by default.
//!
//! - `GET /healthz`: the process is up. `GET /readyz`: it accepts data.
//! - `GET /metrics`: the collector's own metrics, Prometheus text format
//!   ([`crate::telemetry`]).
//! - `POST /api/v1/query` with `{"sql": "..."}`: JSON by default, CSV for
//!   `Accept: text/csv`, Arrow IPC for `Accept: application/vnd.apache.arrow.stream`.
//! - `GET /api/v1/tables`: every table and view with its columns.
//! - `GET /api/v1/velocity`, `/api/v1/health`, `/api/v1/alerts`, `/api/v1/graph`: the analytics
//!   ([`derived`]).
//!
//! Errors are `{"error": "..."}`: 400 for SQL that is invalid or refused, 422 when a
//! query runs out of memory, 503 on timeout, when every query slot stays taken (with
//! `Retry-After`) and on shutdown, 500 otherwise. A client that hangs up cancels its
//! query. When `api.auth_token` is
//! set, `/api/*` requires `Authorization: Bearer <token>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use swarmscope_queries::{encode, QueryEngine};

use crate::pipeline::Pipeline;
use swarmscope_processors::analytics::Analytics;

mod derived;
use crate::telemetry::Telemetry;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
    pub pipeline: Pipeline,
    pub telemetry: Arc<Telemetry>,
    pub ready: Arc<AtomicBool>,
    pub auth_token: Option<String>,
    pub analytics: Arc<Analytics>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/tables", get(tables))
        .route("/api/v1/velocity", get(derived::velocity))
        .route("/api/v1/health", get(derived::health))
        .route("/api/v1/alerts", get(derived::alerts))
        .route("/api/v1/graph", get(derived::graph))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !crate::receivers::bearer_matches(header, token) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or invalid bearer token in the Authorization header",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    next.run(request).await
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.telemetry.render();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Csv,
    Arrow,
}

/// The first supported media type the `Accept` header names; JSON otherwise.
fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for media in accept.split(',') {
        match media.split(';').next().unwrap_or("").trim() {
            "application/json" => return Format::Json,
            "text/csv" => return Format::Csv,
            "application/vnd.apache.arrow.stream" => return Format::Arrow,
            _ => {}
        }
    }
    Format::Json
}

async fn query(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"sql\": \"...\"}}: {e}"),
            )
        }
    };
    // Dropping this future (the client hung up) cancels the query.
    let result = match state.engine.sql(&request.sql).await {
        Ok(r) => r,
        Err(e) => return query_error(e),
    };
    let encoded = match negotiate(&headers) {
        Format::Json => {
            encode::json(&result).map(|v| ("application/json", v.to_string().into_bytes()))
        }
        Format::Csv => encode::csv(&result).map(|b| ("text/csv; charset=utf-8", b)),
        Format::Arrow => {
            encode::arrow_ipc(&result).map(|b| ("application/vnd.apache.arrow.stream", b))
        }
    };
    match encoded {
        Ok((content_type, body)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the result: {e}"),
        ),
    }
}

/// The status a failed query is answered with; busy and shutting down tell the client
/// when to try again.
fn query_error(e: swarmscope_queries::Error) -> Response {
    use swarmscope_queries::Error;
    let status = match &e {
        Error::Refused(_) | Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::ResourcesExhausted(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Timeout(_) | Error::Busy { .. } | Error::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if !e.is_user_error() {
        tracing::warn!(error = %e, "query failed");
    }
    let retry = matches!(e, Error::Busy { .. });
    let mut response = error(status, e);
    if retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn tables(State(state): State<ApiState>) -> Response {
    let tables: Vec<_> = state
        .engine
        .tables()
        .into_iter()
        .map(|t| {
            let columns: Vec<_> = t
                .schema
                .fields()
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name(),
                        "type": f.data_type().to_string(),
                        "nullable": f.is_nullable(),
                    })
                })
                .collect();
            json!({"name": t.name, "columns": columns})
        })
        .collect();
    Json(json!({ "tables": tables })).into_response()
}
