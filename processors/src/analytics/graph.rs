//! The call graph: an edge wherever a span's parent belongs to another service (or
//! another agent), with its calls, failures and latencies.
//!
//! Live, off the acknowledgement path, as the OpenTelemetry Collector's servicegraph
//! connector does it: each span waits in a bounded store until its parent or child
//! arrives (in either order), and each pair makes one request on the edge
//! `client → server` (the parent's service → the child's):
//! `traces_service_graph_request_total`, `traces_service_graph_request_failed_total`
//! (either side failed), and the histograms `traces_service_graph_request_server_seconds`
//! (the child's duration) and `traces_service_graph_request_client_seconds` (the
//! parent's), by `client`, `server` and `connection_type` (`""` between services,
//! `"agent"` between agents). The store keeps two generations of about `max_items / 2`
//! spans and waiting children each; when the newer one is full the older one is
//! dropped whole (no per-span eviction), so a span waits for its partner while between
//! `max_items / 2` and `max_items` newer ones arrive. Children still waiting when
//! dropped are counted in `swarmscope_graph_unpaired_total`.
//!
//! Over any stored range, [`edges_sql`] computes the same edges from `spans` with a
//! self-join; `GET /api/v1/graph` serves it.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use prometheus::core::{Collector, Desc};
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use super::attributes::{primitives, string_at, strings, Text};
use super::series::HistogramFamily;
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use crate::Result;

/// The servicegraph connector's default latency buckets, in seconds.
const BUCKETS_S: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// `[processors.graph]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    pub enabled: bool,
    /// Spans waiting for their partner at most.
    pub max_items: usize,
    /// Edges kept apart on `/metrics`.
    pub max_series: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            enabled: true,
            max_items: 100_000,
            max_series: 10_000,
        }
    }
}

/// A span as the store keeps it: its names interned.
#[derive(Clone, Copy)]
struct Node {
    service: u32,
    agent: Option<u32>,
    duration_ns: i64,
    failed: bool,
}

type Key = (u128, u64);

type Fast = foldhash::fast::RandomState;

/// What arrived while it was the store's newer generation.
#[derive(Default)]
struct Generation {
    /// Spans by (trace id, span id), for children to come.
    spans: HashMap<Key, Node, Fast>,
    /// Children by their parent's (trace id, span id), for parents to come.
    orphans: HashMap<Key, Vec<Node>, Fast>,
    /// Spans and waiting children it holds.
    len: usize,
}

impl Generation {
    /// Empties it, keeping its tables' room; answers the children that were waiting.
    fn clear(&mut self) -> usize {
        let waiting = self.orphans.values().map(Vec::len).sum();
        self.spans.clear();
        self.orphans.clear();
        self.len = 0;
        waiting
    }
}

#[derive(Default)]
struct Store {
    names: HashMap<String, u32, Fast>,
    by_id: Vec<String>,
    /// How many names the table may hold before the unused ones are dropped.
    compact_at: usize,
    newer: Generation,
    older: Generation,
}

/// The fewest names the table holds before it is compacted.
const MIN_NAMES: usize = 10_000;

impl Store {
    /// The span stored under `key`, if either generation has it.
    fn span(&self, key: &Key) -> Option<Node> {
        self.newer
            .spans
            .get(key)
            .or_else(|| self.older.spans.get(key))
            .copied()
    }

    /// The children waiting for the span `key`, taken from both generations.
    fn take_orphans(&mut self, key: &Key) -> Vec<Node> {
        let mut children = Vec::new();
        for generation in [&mut self.newer, &mut self.older] {
            if let Some(waiting) = generation.orphans.remove(key) {
                generation.len -= waiting.len();
                children.extend(waiting);
            }
        }
        children
    }

    /// Drops the older generation when the newer one holds `half` items; answers how
    /// many children were still waiting in what was dropped.
    fn rotate(&mut self, half: usize) -> usize {
        if self.newer.len < half {
            return 0;
        }
        let forgotten = self.older.clear();
        std::mem::swap(&mut self.newer, &mut self.older);
        forgotten
    }

    /// Drops the names no stored span uses any more, once the table has doubled since
    /// the last time: services and agents that churn cost no memory once gone.
    fn compact_names(&mut self) {
        if self.by_id.len() < self.compact_at.max(MIN_NAMES) {
            return;
        }
        let mut remap: HashMap<u32, u32, Fast> = HashMap::default();
        let mut by_id = Vec::new();
        let old = std::mem::take(&mut self.by_id);
        let mut renumber = |id: &mut u32| {
            let next = by_id.len() as u32;
            *id = *remap.entry(*id).or_insert_with(|| {
                by_id.push(old[*id as usize].clone());
                next
            });
        };
        for generation in [&mut self.newer, &mut self.older] {
            let nodes = generation
                .spans
                .values_mut()
                .chain(generation.orphans.values_mut().flatten());
            for node in nodes {
                renumber(&mut node.service);
                if let Some(agent) = node.agent.as_mut() {
                    renumber(agent);
                }
            }
        }
        self.names = by_id
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        self.compact_at = 2 * by_id.len();
        self.by_id = by_id;
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = self.by_id.len() as u32;
        self.by_id.push(name.to_owned());
        self.names.insert(name.to_owned(), id);
        id
    }
}

/// The value of `s` as hexadecimal digits, if it is exactly `digits` of them.
fn hex(s: &str, digits: usize) -> Option<u128> {
    if s.len() != digits {
        return None;
    }
    // Digits are OR-ed into the accumulator, and one that is not a digit into `bad`:
    // no branch per character.
    let (mut acc, mut bad) = (0u128, 0u8);
    for b in s.bytes() {
        let digit = HEX_DIGITS[b as usize];
        bad |= digit;
        acc = acc << 4 | u128::from(digit & 0x0f);
    }
    (bad & 0x80 == 0).then_some(acc)
}

/// Each byte's value as a hexadecimal digit, or 0x80 when it is not one.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

fn hex_u128(s: &str) -> Option<u128> {
    hex(s, 32)
}

fn hex_u64(s: &str) -> Option<u64> {
    hex(s, 16).map(|v| v as u64)
}

pub struct ServiceGraph {
    max_items: usize,
    store: Mutex<Store>,
    requests: HistogramFamily<3>,
    client: HistogramFamily<3>,
    failed: HistogramFamily<3>,
    unpaired: IntCounter,
}

const LABELS: [&str; 3] = ["client", "server", "connection_type"];

impl ServiceGraph {
    pub fn new(config: &GraphConfig) -> ServiceGraph {
        ServiceGraph {
            max_items: config.max_items,
            store: Mutex::new(Store::default()),
            requests: HistogramFamily::new(
                "traces_service_graph_request_server_seconds",
                "Duration of the server side (the child span) of each request on an edge (servicegraph).",
                LABELS,
                BUCKETS_S.to_vec(),
                config.max_series,
            )
            .with_calls(
                "traces_service_graph_request_total",
                "Requests on an edge between two services or agents (servicegraph).",
            ),
            client: HistogramFamily::new(
                "traces_service_graph_request_client_seconds",
                "Duration of the client side (the parent span) of each request on an edge (servicegraph).",
                LABELS,
                BUCKETS_S.to_vec(),
                config.max_series,
            ),
            failed: HistogramFamily::new(
                "swarmscope_graph_failed_request_seconds",
                "Failed requests on an edge, by server-side duration.",
                LABELS,
                Vec::new(),
                config.max_series,
            )
            .with_calls(
                "traces_service_graph_request_failed_total",
                "Requests on an edge where either side failed (servicegraph).",
            ),
            unpaired: IntCounter::new(
                "swarmscope_graph_unpaired_total",
                "Spans whose parent or child did not arrive before the graph store was full.",
            )
            .unwrap_or_else(|e| unreachable!("metric options are constant: {e}")),
        }
    }

    /// The requests on `client → server` so far: (calls, failed).
    pub fn edge(&self, client: &str, server: &str, connection_type: &str) -> (u64, u64) {
        let key = [client, server, connection_type];
        let calls = self.requests.get(key).map_or(0, |b| b.count());
        let failed = self.failed.get(key).map_or(0, |b| b.count());
        (calls, failed)
    }

    fn pair(
        &self,
        store: &Store,
        parent: &Node,
        child: &Node,
        tallies: &mut Vec<([String; 3], f64, f64, bool)>,
    ) {
        let name = |id: u32| store.by_id[id as usize].clone();
        let failed = parent.failed || child.failed;
        let server_s = child.duration_ns.max(0) as f64 / 1e9;
        let client_s = parent.duration_ns.max(0) as f64 / 1e9;
        if parent.service != child.service {
            tallies.push((
                [name(parent.service), name(child.service), String::new()],
                server_s,
                client_s,
                failed,
            ));
        }
        if let (Some(a), Some(b)) = (parent.agent, child.agent) {
            if a != b {
                tallies.push((
                    [name(a), name(b), "agent".into()],
                    server_s,
                    client_s,
                    failed,
                ));
            }
        }
    }

    fn observe_spans(&self, spans: &RecordBatch) -> Result<()> {
        let trace = strings(spans, "trace_id")?;
        let span = strings(spans, "span_id")?;
        let parent = strings(spans, "parent_span_id")?;
        let service = strings(spans, "service_name")?;
        let agent = strings(spans, "agent_id")?;
        let status = strings(spans, "status_code")?;
        let duration = primitives::<arrow::datatypes::Int64Type>(spans, "duration_ns")?;
        let mut pairs = Vec::new();
        {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            // Rows of a batch mostly share their service, and a trace's rows their agent:
            // each is interned once per run of rows.
            let mut last_service: Option<(Text, u32)> = None;
            let mut last_agent: Option<(Text, u32)> = None;
            // And a trace's rows their trace id: each is read once per run.
            let mut last_trace: Option<(Text, Option<u128>)> = None;
            for row in 0..spans.num_rows() {
                let trace_id = Text(trace.value(row));
                let t = match last_trace {
                    Some((last, t)) if last == trace_id => t,
                    _ => {
                        let t = hex_u128(trace_id.0);
                        last_trace = Some((trace_id, t));
                        t
                    }
                };
                let (Some(t), Some(s)) = (t, hex_u64(span.value(row))) else {
                    continue;
                };
                let name = Text(string_at(service, row).unwrap_or(""));
                let service_id = match last_service {
                    Some((last, id)) if last == name => id,
                    _ => {
                        let id = store.intern(name.0);
                        last_service = Some((name, id));
                        id
                    }
                };
                let agent_id = string_at(agent, row).map(Text).map(|a| match last_agent {
                    Some((last, id)) if last == a => id,
                    _ => {
                        let id = store.intern(a.0);
                        last_agent = Some((a, id));
                        id
                    }
                });
                let node = Node {
                    service: service_id,
                    agent: agent_id,
                    duration_ns: duration.value(row),
                    failed: Text(status.value(row)) == Text("ERROR"),
                };
                // Children that arrived first.
                for child in &store.take_orphans(&(t, s)) {
                    self.pair(&store, &node, child, &mut pairs);
                }
                let parent_key = string_at(parent, row).and_then(hex_u64).map(|p| (t, p));
                if let Some(pk) = parent_key {
                    if let Some(p) = store.span(&pk) {
                        self.pair(&store, &p, &node, &mut pairs);
                    } else {
                        store.newer.orphans.entry(pk).or_default().push(node);
                        store.newer.len += 1;
                    }
                }
                if store.newer.spans.insert((t, s), node).is_none() {
                    store.newer.len += 1;
                }
                let forgotten = store.rotate((self.max_items / 2).max(1));
                if forgotten > 0 {
                    self.unpaired.inc_by(forgotten as u64);
                }
            }
            store.compact_names();
        }
        if pairs.is_empty() {
            return Ok(());
        }
        let (mut requests, mut client, mut failed) = (
            self.requests.tally(),
            self.client.tally(),
            self.failed.tally(),
        );
        for (labels, server_s, client_s, fail) in &pairs {
            let key = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
            requests.observe(key, *server_s);
            client.observe(key, *client_s);
            if *fail {
                failed.observe(key, *server_s);
            }
        }
        self.requests.merge(requests);
        self.client.merge(client);
        self.failed.merge(failed);
        Ok(())
    }

    /// The collectors to register with the registry `/metrics` serves.
    pub fn collectors(self: &std::sync::Arc<Self>) -> Vec<Box<dyn Collector>> {
        (0..3)
            .map(|i| Box::new(Families(std::sync::Arc::clone(self), i)) as Box<dyn Collector>)
            .chain(std::iter::once(
                Box::new(self.unpaired.clone()) as Box<dyn Collector>
            ))
            .collect()
    }
}

struct Families(std::sync::Arc<ServiceGraph>, usize);

impl Collector for Families {
    fn desc(&self) -> Vec<&Desc> {
        match self.1 {
            0 => self.0.requests.desc(),
            1 => self.0.client.desc(),
            _ => self.0.failed.desc(),
        }
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match self.1 {
            0 => self.0.requests.collect(),
            1 => self.0.client.collect(),
            // Only the counter: the failed requests' histogram adds nothing.
            _ => self
                .0
                .failed
                .collect()
                .into_iter()
                .filter(|f| f.name() == "traces_service_graph_request_failed_total")
                .collect(),
        }
    }
}

impl Processor for ServiceGraph {
    fn name(&self) -> &'static str {
        "graph"
    }

    fn observes(&self, table: Table) -> bool {
        table == Table::SPANS
    }

    fn observe(&self, input: &TableBatch) {
        if input.table == Table::SPANS {
            if let Err(e) = self.observe_spans(&input.batch) {
                debug_assert!(false, "graph: {e}");
            }
        }
    }
}

/// The edges among spans that started in `[start_ns, end_ns)`: `kind` (`service` or
/// `agent`), `source`, `target`, `calls`, `errors` (either side failed), `p50_ms`,
/// `p95_ms` (of the child's duration). A parent may have started up to an hour before
/// the range.
pub fn edges_sql(start_ns: i64, end_ns: i64) -> String {
    let parent_from = start_ns.saturating_sub(3_600_000_000_000);
    let edge = |kind: &str, column: &str| {
        format!(
            "SELECT '{kind}' AS kind, p.{column} AS source, c.{column} AS target, count(*) AS calls, \
             count(CASE WHEN c.status_code = 'ERROR' OR p.status_code = 'ERROR' THEN 1 END) AS errors, \
             percentile_cont(c.duration_ns / 1e6, 0.5) AS p50_ms, \
             percentile_cont(c.duration_ns / 1e6, 0.95) AS p95_ms \
             FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
             WHERE c.start_time >= to_timestamp_nanos({start_ns}) AND c.start_time < to_timestamp_nanos({end_ns}) \
             AND p.start_time >= to_timestamp_nanos({parent_from}) AND p.start_time < to_timestamp_nanos({end_ns}) \
             AND p.{column} IS NOT NULL AND c.{column} IS NOT NULL AND p.{column} <> c.{column} \
             GROUP BY p.{column}, c.{column}"
        )
    };
    format!(
        "{} UNION ALL {} ORDER BY kind DESC, calls DESC, source, target",
        edge("service", "service_name"),
        edge("agent", "agent_id")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::testing::{batch, failed, kv, span};
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn child_of(mut s: Span, parent: &Span) -> Span {
        s.trace_id.clone_from(&parent.trace_id);
        s.parent_span_id.clone_from(&parent.span_id);
        s
    }

    #[test]
    fn parents_and_children_pair_in_either_order() {
        let g = ServiceGraph::new(&GraphConfig::default());
        let root = span(1, 1_000, 500, vec![kv("gen_ai.agent.id", "planner")]);
        let call = child_of(
            span(2, 900, 200, vec![kv("gen_ai.agent.id", "coder")]),
            &root,
        );
        let late = child_of(failed(span(3, 950, 300, vec![])), &root);
        // The child first, then its parent (with another child) from another service.
        g.observe(&TableBatch::new(Table::SPANS, batch("tools", vec![call])));
        g.observe(&TableBatch::new(Table::SPANS, batch("gateway", vec![root])));
        g.observe(&TableBatch::new(Table::SPANS, batch("db", vec![late])));
        assert_eq!(g.edge("gateway", "tools", ""), (1, 0));
        assert_eq!(g.edge("gateway", "db", ""), (1, 1));
        assert_eq!(g.edge("planner", "coder", "agent"), (1, 0));
        let server = g.requests.get(["gateway", "tools", ""]).unwrap();
        assert!((server.sum() - 0.2).abs() < 1e-9);
        let client = g.client.get(["gateway", "tools", ""]).unwrap();
        assert!((client.sum() - 0.5).abs() < 1e-9);
    }

    /// A graph whose store holds `max_items`.
    fn small(max_items: usize) -> ServiceGraph {
        ServiceGraph::new(&GraphConfig {
            max_items,
            ..GraphConfig::default()
        })
    }

    #[test]
    fn a_partner_in_the_older_generation_still_pairs() {
        let g = small(6);
        let root = span(100, 1_000, 10, vec![]);
        let child = child_of(span(1, 900, 1, vec![]), &root);
        g.observe(&TableBatch::new(Table::SPANS, batch("tools", vec![child])));
        // An unrelated span fills the newer generation (the child and its wait are
        // two items): the waiting child moves to the older one.
        let other = span(7, 0, 1, vec![]);
        g.observe(&TableBatch::new(Table::SPANS, batch("other", vec![other])));
        assert_eq!(g.store.lock().unwrap().older.len, 3);
        g.observe(&TableBatch::new(Table::SPANS, batch("gateway", vec![root])));
        assert_eq!(g.edge("gateway", "tools", ""), (1, 0));
        assert_eq!(g.unpaired.get(), 0);
    }

    #[test]
    fn ids_are_read_as_hexadecimal_of_their_length() {
        assert_eq!(hex_u64("00000000000000fF"), Some(255));
        assert_eq!(hex_u64("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(hex_u128(&"0".repeat(31)), None);
        assert_eq!(hex_u128(&format!("{}1", "0".repeat(31))), Some(1));
        assert_eq!(hex_u64("000000000000000g"), None);
        assert_eq!(hex_u64("+00000000000000f"), None);
        assert_eq!(hex_u64("0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
        assert_eq!(hex_u64("ABCDEF0123456789"), Some(0xabcd_ef01_2345_6789));
        // 16 bytes, one character of them two bytes long.
        assert_eq!(hex_u64("00000000000000\u{e9}"), None);
    }

    #[test]
    fn names_of_agents_long_gone_are_dropped() {
        let g = ServiceGraph::new(&GraphConfig {
            max_items: 100,
            ..GraphConfig::default()
        });
        // 30,000 agents, each one span, far more than the store keeps.
        for chunk in 0..300u64 {
            let spans = (0..100)
                .map(|i| {
                    let n = chunk * 100 + i;
                    span(
                        n,
                        1_000,
                        5,
                        vec![kv("gen_ai.agent.id", &format!("agent-{n}"))],
                    )
                })
                .collect();
            g.observe_spans(&batch("svc", spans)).unwrap();
        }
        let store = g.store.lock().unwrap();
        assert!(
            store.by_id.len() < 2 * MIN_NAMES,
            "{} names",
            store.by_id.len()
        );
        assert_eq!(store.names.len(), store.by_id.len());
        // What the stored spans name is still there, under its new number.
        for node in store.newer.spans.values() {
            let agent = node.agent.map(|a| store.by_id[a as usize].as_str());
            assert!(agent.is_some_and(|a| a.starts_with("agent-")));
            assert_eq!(store.by_id[node.service as usize], "svc");
        }
    }

    #[test]
    fn the_store_is_bounded_and_counts_what_it_forgets() {
        let g = small(4);
        let root = span(100, 1_000, 10, vec![]);
        let orphans: Vec<Span> = (0..6)
            .map(|i| child_of(span(i, 900, 1, vec![]), &root))
            .collect();
        g.observe(&TableBatch::new(Table::SPANS, batch("a", orphans)));
        assert!(g.unpaired.get() > 0);
        let store = g.store.lock().unwrap();
        assert!(store.newer.len + store.older.len <= 4);
    }
}
