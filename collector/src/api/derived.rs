//! The analytics endpoints. `GET /api/v1/velocity` reads the `velocity` view through
//! the SQL engine (the same answers a user's query gets) and returns its rows as
//! objects; `GET /api/v1/health` and `GET /api/v1/alerts` answer from the latest
//! evaluation (their history is in the `health` and `alerts` tables).
//!
//! Time ranges are `start` and `end` query parameters, RFC 3339 or Unix seconds as in
//! Prometheus's HTTP API; the default is the last 24 hours.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use swarmscope_processors::analytics::graph::{bucket_columns, edges_summary_sql, quantile_ms};
use swarmscope_processors::analytics::sql_literal;
use swarmscope_queries::encode;

use super::{error, query_error, ApiState};

const DEFAULT_RANGE_SECS: i64 = 24 * 3600;
/// The call graph's default range: the last hour.
const GRAPH_RANGE_SECS: i64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VelocityParams {
    team: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

/// A time range in nanoseconds since the epoch, from `start`/`end` parameters; without
/// `start`, the `default_secs` before `end`.
fn range(start: Option<&str>, end: Option<&str>, default_secs: i64) -> Result<(i64, i64), String> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let end = end
        .map(|e| parse_time("end", e))
        .transpose()?
        .unwrap_or(now);
    let start = start
        .map(|s| parse_time("start", s))
        .transpose()?
        .unwrap_or(end.saturating_sub(default_secs.saturating_mul(1_000_000_000)));
    if start > end {
        return Err("start must not be after end".into());
    }
    Ok((start, end))
}

fn parse_time(name: &str, value: &str) -> Result<i64, String> {
    let parsed = if let Ok(seconds) = value.parse::<f64>() {
        (seconds.is_finite() && seconds.abs() < 1e10).then_some((seconds * 1e9) as i64)
    } else {
        chrono::DateTime::parse_from_rfc3339(value)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
    };
    parsed.ok_or_else(|| format!("{name} must be an RFC 3339 time or Unix seconds, got {value:?}"))
}

/// Runs `sql` and answers with its rows as objects under `key`.
async fn rows(state: &ApiState, sql: &str, key: &str, mut extra: Map<String, Value>) -> Response {
    let result = match state.engine.sql(sql).await {
        Ok(r) => r,
        Err(e) => return query_error(e),
    };
    match objects(&result) {
        Ok(objects) => {
            extra.insert(key.to_owned(), Value::Array(objects));
            Json(Value::Object(extra)).into_response()
        }
        Err(response) => *response,
    }
}

/// A result's rows as objects, column name to value.
fn objects(result: &swarmscope_queries::QueryResult) -> Result<Vec<Value>, Box<Response>> {
    let table = match encode::json(result) {
        Ok(v) => v,
        Err(e) => {
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding: {e}"),
            )))
        }
    };
    let names: Vec<String> = table["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    Ok(table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let cells = row.as_array().into_iter().flatten().cloned();
            Value::Object(names.iter().cloned().zip(cells).collect())
        })
        .collect())
}

/// `GET /api/v1/velocity?team=&start=&end=`: the `velocity` windows that overlap the
/// range, newest first.
pub(super) async fn velocity(
    State(state): State<ApiState>,
    Query(params): Query<VelocityParams>,
) -> Response {
    let (start, end) = match range(
        params.start.as_deref(),
        params.end.as_deref(),
        DEFAULT_RANGE_SECS,
    ) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let team = params
        .team
        .as_deref()
        .map(|t| format!(" AND team = {}", sql_literal(t)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT * FROM velocity WHERE window_end > to_timestamp_nanos({start}) \
         AND window_start <= to_timestamp_nanos({end}){team} ORDER BY window_start DESC, team"
    );
    let window = state.analytics.config.velocity.window_seconds;
    let extra = json!({ "window_seconds": window });
    rows(
        &state,
        &sql,
        "windows",
        extra.as_object().cloned().unwrap_or_default(),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GraphParams {
    start: Option<String>,
    end: Option<String>,
}

/// `GET /api/v1/graph?start=&end=` (default: the last hour): the call graph's nodes
/// and edges, between services and between agents, summed from `graph_edges` (the
/// live graph's requests, by the minute they started).
pub(super) async fn graph(
    State(state): State<ApiState>,
    Query(params): Query<GraphParams>,
) -> Response {
    let (start, end) = match range(
        params.start.as_deref(),
        params.end.as_deref(),
        GRAPH_RANGE_SECS,
    ) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let result = match state.engine.sql(&edges_summary_sql(start, end)).await {
        Ok(r) => r,
        Err(e) => return query_error(e),
    };
    let mut edges = match objects(&result) {
        Ok(edges) => edges,
        Err(response) => return *response,
    };
    for edge in &mut edges {
        let Value::Object(fields) = edge else {
            continue;
        };
        let counts: Vec<u64> = bucket_columns()
            .map(|b| fields.remove(&b).and_then(|v| v.as_u64()).unwrap_or(0))
            .collect();
        for (name, q) in [("p50_ms", 0.5), ("p95_ms", 0.95)] {
            fields.insert(name.into(), json!(quantile_ms(&counts, q)));
        }
    }
    let text = |e: &Value, key: &str| e[key].as_str().unwrap_or_default().to_owned();
    edges.sort_by(|a, b| {
        let calls = |e: &Value| e["calls"].as_i64().unwrap_or(0);
        (
            text(b, "kind"),
            calls(b),
            text(a, "source"),
            text(a, "target"),
        )
            .cmp(&(
                text(a, "kind"),
                calls(a),
                text(b, "source"),
                text(b, "target"),
            ))
            .then_with(|| text(a, "connection_type").cmp(&text(b, "connection_type")))
    });
    let mut nodes: Vec<(String, String, bool)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in &edges {
        for (side, uninstrumented) in [("source", "client"), ("target", "server")] {
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
            let node = (
                text("kind"),
                text(side),
                text("virtual_node") == uninstrumented,
            );
            if seen.insert(node.clone()) {
                nodes.push(node);
            }
        }
    }
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|(kind, id, virtual_node)| json!({"id": id, "kind": kind, "virtual": virtual_node}))
        .collect();
    Json(json!({ "nodes": nodes, "edges": edges })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthParams {
    scope: Option<String>,
    name: Option<String>,
}

/// `GET /api/v1/health?scope=&name=`: the latest scores with their components and
/// inputs, overall first.
pub(super) async fn health(
    State(state): State<ApiState>,
    Query(params): Query<HealthParams>,
) -> Response {
    let evaluator = state.analytics.evaluator();
    let scores: Vec<Value> = evaluator
        .latest()
        .iter()
        .filter(|h| params.scope.as_deref().is_none_or(|s| s == h.scope))
        .filter(|h| params.name.as_deref().is_none_or(|n| n == h.name))
        .map(|h| h.to_json())
        .collect();
    let at = evaluator.latest().first().map(|h| h.window_end);
    let time = at.map(|ns| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    let config = &state.analytics.config.health;
    Json(json!({
        "time": time,
        "window_seconds": config.window_seconds,
        "weights": config.weights,
        "scores": scores,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsParams {
    fingerprint: Option<String>,
}

/// `GET /api/v1/alerts?fingerprint=`: the alerts firing now, oldest first.
pub(super) async fn alerts(
    State(state): State<ApiState>,
    Query(params): Query<AlertsParams>,
) -> Response {
    let firing = state.analytics.evaluator().firing();
    let rfc3339 = |ns: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let alerts: Vec<Value> = firing
        .iter()
        .filter(|a| {
            params
                .fingerprint
                .as_deref()
                .is_none_or(|f| f == a.fingerprint)
        })
        .map(|a| {
            json!({
                "fingerprint": a.fingerprint,
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "value": a.value,
                "baseline": a.baseline,
                "detector": a.detector,
            })
        })
        .collect();
    Json(json!({ "alerts": alerts })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("t", "1.5").ok(), Some(1_500_000_000));
        assert_eq!(
            parse_time("t", "1970-01-01T00:00:02Z").ok(),
            Some(2_000_000_000)
        );
        assert!(parse_time("t", "yesterday").is_err());
        assert!(range(Some("10"), Some("5"), 60).is_err());
        // Without a start, the default span before the end, in nanoseconds.
        assert_eq!(
            range(None, Some("100"), 60),
            Ok((40_000_000_000, 100_000_000_000))
        );
    }
}
