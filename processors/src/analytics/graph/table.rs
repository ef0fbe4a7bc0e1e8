//! The `graph_edges` table: the live graph's requests, by the minute they started.
//!
//! Every request the live graph counts on `/metrics` is also added to a row of its
//! edge and of the minute its server side started (or the one side there is), and the
//! collector writes the rows at each analytics evaluation. `GET /api/v1/graph` sums
//! them over any range: the API and `/metrics` count the same requests, and a range of
//! a day reads a few rows an edge a minute instead of joining a day of spans.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::super::series::Buckets;
use super::pairs::Connection;
use super::{AGENT, BUCKETS_S, USER};
use crate::schema::{list_of, timestamp_type, Table, TableDef};
use crate::Result;

pub const GRAPH_EDGES: Table = Table::declare(&TableDef {
    name: "graph_edges",
    code: 10,
    time_column: "time",
    fallback_time_column: None,
    exact_nanos: &[],
    cluster_column: None,
    schema: || SCHEMA.clone(),
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // The minute the requests started in.
        Field::new("time", timestamp_type(), false),
        // `service` or `agent`.
        Field::new("kind", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("connection_type", DataType::Utf8, false),
        // Which side is uninstrumented: `client`, `server` or "".
        Field::new("virtual_node", DataType::Utf8, false),
        // Either side failed.
        Field::new("failed", DataType::Boolean, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("server_seconds_sum", DataType::Float64, false),
        Field::new("client_seconds_sum", DataType::Float64, false),
        // The server side's durations, per bucket of `explicit_bounds` (seconds) and
        // +Inf, not cumulative (as OTLP's histograms).
        Field::new("server_bucket_counts", list_of(DataType::UInt64), false),
        Field::new("explicit_bounds", list_of(DataType::Float64), false),
    ]))
});

const MINUTE_NS: i64 = 60_000_000_000;

/// A row's key: the minute, source, target, `connection_type` and `failed`.
type RowKey<S> = (i64, S, S, &'static str, bool);

/// One row's requests: the server side's durations and the client side's total.
#[derive(Clone, Default)]
struct Requests {
    server: Buckets,
    client_sum: f64,
}

impl Requests {
    fn merge(&mut self, other: &Requests) {
        self.server.merge(&other.server);
        self.client_sum += other.client_sum;
    }
}

/// One batch's requests, by interned names: a row costs a hash of numbers, not of
/// names, until the batch's few distinct rows are added to [`PendingRows`].
#[derive(Default)]
pub(super) struct BatchRows {
    rows: HashMap<(i64, u32, u32, Connection, bool), Requests, foldhash::fast::RandomState>,
}

impl BatchRows {
    pub(super) fn observe(
        &mut self,
        [source, target]: [u32; 2],
        connection: Connection,
        start_ns: i64,
        (server_s, client_s): (f64, f64),
        failed: bool,
    ) {
        let minute = start_ns.div_euclid(MINUTE_NS) * MINUTE_NS;
        let requests = self
            .rows
            .entry((minute, source, target, connection, failed))
            .or_insert_with(|| Requests {
                server: Buckets::new(BUCKETS_S.len()),
                client_sum: 0.0,
            });
        requests.server.observe(&BUCKETS_S, server_s);
        requests.client_sum += client_s;
    }
}

/// The rows not yet written, at most `max_rows` of them.
pub struct PendingRows {
    rows: HashMap<RowKey<String>, Requests, foldhash::fast::RandomState>,
    max_rows: usize,
}

impl PendingRows {
    pub(super) fn new(max_rows: usize) -> PendingRows {
        PendingRows {
            rows: HashMap::default(),
            max_rows,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a batch's rows, its names given by `name`; answers how many requests found
    /// no room.
    pub(super) fn add<'n>(&mut self, batch: BatchRows, name: impl Fn(u32) -> &'n str) -> u64 {
        let mut refused = 0;
        for ((minute, source, target, connection, failed), requests) in batch.rows {
            let key = (
                minute,
                name(source),
                name(target),
                connection.label(),
                failed,
            );
            self.merge_owned(key, requests, &mut refused);
        }
        refused
    }

    fn merge_owned(&mut self, key: RowKey<&str>, requests: Requests, refused: &mut u64) {
        let (minute, source, target, connection, failed) = key;
        let owned = (
            minute,
            source.to_owned(),
            target.to_owned(),
            connection,
            failed,
        );
        let room = self.rows.len() < self.max_rows;
        match self.rows.get_mut(&owned) {
            Some(row) => row.merge(&requests),
            None if room => {
                self.rows.insert(owned, requests);
            }
            None => *refused += requests.server.count(),
        }
    }

    /// Takes back rows that could not be written.
    pub(super) fn restore(&mut self, other: PendingRows) -> u64 {
        let mut refused = 0;
        for ((minute, source, target, connection, failed), requests) in other.rows {
            self.merge_owned(
                (minute, &source, &target, connection, failed),
                requests,
                &mut refused,
            );
        }
        refused
    }

    /// The rows as a `graph_edges` batch.
    pub fn batch(&self) -> Result<RecordBatch> {
        let n = self.rows.len();
        let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
        let text = || StringBuilder::with_capacity(n, n * 16);
        let (mut kind, mut source, mut target) = (text(), text(), text());
        let (mut connection_type, mut virtual_node) = (text(), text());
        let mut failed = BooleanBuilder::with_capacity(n);
        let mut calls = Int64Builder::with_capacity(n);
        let (mut server_sum, mut client_sum) = (
            Float64Builder::with_capacity(n),
            Float64Builder::with_capacity(n),
        );
        let mut buckets = ListBuilder::new(UInt64Builder::new());
        let mut bounds = ListBuilder::new(Float64Builder::new());
        for ((minute, from, to, connection, fail), requests) in &self.rows {
            time.append_value(*minute);
            kind.append_value(if *connection == AGENT {
                "agent"
            } else {
                "service"
            });
            source.append_value(from);
            target.append_value(to);
            connection_type.append_value(connection);
            virtual_node.append_value(match *connection {
                "virtual_node" if from == USER => "client",
                "virtual_node" | "database" => "server",
                _ => "",
            });
            failed.append_value(*fail);
            calls.append_value(i64::try_from(requests.server.count()).unwrap_or(i64::MAX));
            server_sum.append_value(requests.server.sum());
            client_sum.append_value(requests.client_sum);
            buckets.values().append_slice(requests.server.counts());
            buckets.append(true);
            bounds.values().append_slice(&BUCKETS_S);
            bounds.append(true);
        }
        Ok(RecordBatch::try_new(
            GRAPH_EDGES.schema(),
            vec![
                Arc::new(time.finish()),
                Arc::new(kind.finish()),
                Arc::new(source.finish()),
                Arc::new(target.finish()),
                Arc::new(connection_type.finish()),
                Arc::new(virtual_node.finish()),
                Arc::new(failed.finish()),
                Arc::new(calls.finish()),
                Arc::new(server_sum.finish()),
                Arc::new(client_sum.finish()),
                Arc::new(buckets.finish()),
                Arc::new(bounds.finish()),
            ],
        )?)
    }
}

/// The SQL that sums `graph_edges` over requests that started in `[start_ns, end_ns)`
/// by edge: `kind`, `source`, `target`, `connection_type`, `virtual_node`, `calls`,
/// `errors`, and `b0`… the server side's count per bucket, for [`quantile_ms`].
pub fn edges_summary_sql(start_ns: i64, end_ns: i64) -> String {
    let from = start_ns.div_euclid(MINUTE_NS) * MINUTE_NS;
    let buckets: Vec<String> = (0..=BUCKETS_S.len())
        .map(|i| format!("sum(server_bucket_counts[{}]) AS b{i}", i + 1))
        .collect();
    format!(
        "SELECT kind, source, target, connection_type, virtual_node, sum(calls) AS calls, \
         sum(CASE WHEN failed THEN calls ELSE 0 END) AS errors, {} FROM graph_edges \
         WHERE time >= to_timestamp_nanos({from}) AND time < to_timestamp_nanos({end_ns}) \
         GROUP BY 1, 2, 3, 4, 5",
        buckets.join(", ")
    )
}

/// The columns of [`edges_summary_sql`] that hold bucket counts, in order.
pub fn bucket_columns() -> impl Iterator<Item = String> {
    (0..=BUCKETS_S.len()).map(|i| format!("b{i}"))
}

/// The `q` quantile, in milliseconds, of durations counted per bucket (of the graph's
/// bounds, then +Inf), interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` when nothing was counted.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = BUCKETS_S.get(i) else {
                // The +Inf bucket: the highest finite bound, as Prometheus answers.
                return BUCKETS_S.last().map(|b| b * 1e3);
            };
            let lower = if i == 0 { 0.0 } else { BUCKETS_S[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some((lower + (upper - lower) * within) * 1e3);
        }
        below += count;
    }
    BUCKETS_S.last().map(|b| b * 1e3)
}
