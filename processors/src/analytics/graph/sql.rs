//! The call graph over any stored range, from `spans`, by the live graph's rules.

use super::GraphConfig;

/// A parent may have started up to this long before the range.
const PARENT_LOOKBACK_NS: i64 = 3_600_000_000_000;

/// The attributes a database call is known by.
pub(super) const DATABASE_SYSTEM: [&str; 2] = ["db.system.name", "db.system"];

/// `coalesce` of `alias`'s attributes `keys`, in order.
fn first_of(alias: &str, keys: &[String]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{alias}.attributes['{}']", k.replace('\'', "''")))
        .collect();
    match keys.len() {
        0 => "CAST(NULL AS VARCHAR)".to_owned(),
        _ => format!("coalesce({})", keys.join(", ")),
    }
}

/// Whether `alias` is a database call.
fn is_database(alias: &str) -> String {
    let keys: Vec<String> = DATABASE_SYSTEM.iter().map(|k| (*k).to_owned()).collect();
    format!(
        "({} IS NOT NULL AND {alias}.kind = 'CLIENT')",
        first_of(alias, &keys)
    )
}

/// `alias.start_time` in `[from, to)`.
fn started(alias: &str, from: i64, to: i64) -> String {
    format!(
        "{alias}.start_time >= to_timestamp_nanos({from}) AND {alias}.start_time < to_timestamp_nanos({to})"
    )
}

/// The aggregate columns of an edge whose requests are rows of `latency` (the server
/// side's span) and fail when `failed` holds.
fn tallies(failed: &str, latency: &str) -> String {
    format!(
        "count(*) AS calls, count(CASE WHEN {failed} THEN 1 END) AS errors, \
         percentile_cont({latency}.duration_ns / 1e6, 0.5) AS p50_ms, \
         percentile_cont({latency}.duration_ns / 1e6, 0.95) AS p95_ms"
    )
}

/// The edges of requests that started in `[start_ns, end_ns)` (the server side's start
/// for a pair): `kind` (`service` or `agent`), `source`, `target`, `connection_type`,
/// `virtual_node` (which side is uninstrumented: `client`, `server` or `""`), `calls`,
/// `errors` (either side failed), `p50_ms`, `p95_ms` (of the server side's duration,
/// or the one side there is).
///
/// One query per kind of edge (pairs, databases, virtual servers, `user`, agents): each
/// is a self-join of `spans`, and run one after another only one join's tables are held
/// at a time.
pub fn edge_queries(start_ns: i64, end_ns: i64, config: &GraphConfig) -> Vec<String> {
    let parents_from = start_ns.saturating_sub(PARENT_LOOKBACK_NS);
    let children_to = end_ns.saturating_add(PARENT_LOOKBACK_NS);
    let in_range = |alias: &str| started(alias, start_ns, end_ns);
    let peer = first_of("c", &config.virtual_node_peer_attributes);
    let database = first_of("c", &config.database_name_attributes);
    let paired = format!(
        "SELECT 'service' AS kind, c.service_name AS source, s.service_name AS target, \
         CASE WHEN c.kind = 'PRODUCER' OR s.kind = 'CONSUMER' THEN 'messaging_system' ELSE '' END AS connection_type, '' AS virtual_node, {} \
         FROM spans s JOIN spans c ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id \
         WHERE s.kind IN ('SERVER', 'CONSUMER') AND c.kind IN ('CLIENT', 'PRODUCER') AND NOT {} \
         AND {} AND {} GROUP BY 1, 2, 3, 4, 5",
        tallies("c.status_code = 'ERROR' OR s.status_code = 'ERROR'", "s"),
        is_database("c"),
        in_range("s"),
        started("c", parents_from, end_ns),
    );
    let databases = format!(
        "SELECT 'service' AS kind, c.service_name AS source, {database} AS target, \
         'database' AS connection_type, 'server' AS virtual_node, {} FROM spans c \
         WHERE {} AND {} GROUP BY 1, 2, 3, 4, 5",
        tallies("c.status_code = 'ERROR'", "c"),
        is_database("c"),
        in_range("c"),
    );
    let virtual_servers = format!(
        "SELECT 'service' AS kind, c.service_name AS source, {peer} AS target, \
         'virtual_node' AS connection_type, 'server' AS virtual_node, {} FROM spans c \
         WHERE c.kind IN ('CLIENT', 'PRODUCER') AND NOT {} AND {peer} IS NOT NULL AND {} \
         AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = c.trace_id \
         AND s.parent_span_id = c.span_id AND s.kind IN ('SERVER', 'CONSUMER') AND {}) \
         GROUP BY 1, 2, 3, 4, 5",
        tallies("c.status_code = 'ERROR'", "c"),
        is_database("c"),
        in_range("c"),
        started("s", parents_from, children_to),
    );
    let users = format!(
        "SELECT 'service' AS kind, 'user' AS source, s.service_name AS target, \
         'virtual_node' AS connection_type, 'client' AS virtual_node, {} FROM spans s \
         WHERE s.kind IN ('SERVER', 'CONSUMER') AND s.parent_span_id IS NULL AND {} \
         GROUP BY 1, 2, 3, 4, 5",
        tallies("s.status_code = 'ERROR'", "s"),
        in_range("s"),
    );
    let agents = format!(
        "SELECT 'agent' AS kind, p.agent_id AS source, s.agent_id AS target, \
         'agent' AS connection_type, '' AS virtual_node, {} \
         FROM spans s JOIN spans p ON s.trace_id = p.trace_id AND s.parent_span_id = p.span_id \
         WHERE p.agent_id IS NOT NULL AND s.agent_id IS NOT NULL AND p.agent_id <> s.agent_id \
         AND {} AND {} GROUP BY 1, 2, 3, 4, 5",
        tallies(
            "s.status_code = 'ERROR' OR (p.kind IN ('CLIENT', 'PRODUCER') AND p.status_code = 'ERROR')",
            "s"
        ),
        in_range("s"),
        started("p", parents_from, end_ns),
    );
    vec![paired, databases, virtual_servers, users, agents]
}

/// The same edges as one query, in the order `GET /api/v1/graph` lists them.
pub fn edges_sql(start_ns: i64, end_ns: i64, config: &GraphConfig) -> String {
    format!(
        "{} ORDER BY kind DESC, calls DESC, source, target, connection_type",
        edge_queries(start_ns, end_ns, config).join(" UNION ALL ")
    )
}
