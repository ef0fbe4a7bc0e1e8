//! The call graph: requests between services (and the virtual nodes they call) and
//! between agents, with their calls, failures and latencies.
//!
//! Live, off the acknowledgement path, by the OpenTelemetry Collector's servicegraph
//! connector's rules ([`pairs`]): a CLIENT (or PRODUCER) span and its SERVER (or
//! CONSUMER) child make one request on the edge `client → server`, whichever of the two
//! arrives first waiting `wait_seconds` for the other. A client span that named its
//! peer (`virtual_node_peer_attributes`: `peer.service`, a model API's
//! `gen_ai.provider.name`, `server.address`) and was never answered is a request to
//! that virtual node (`connection_type="virtual_node"`); a root SERVER span is a
//! request from the virtual node `user`; a CLIENT span with `db.system.name` (or
//! `db.system`) is a request to its database (`connection_type="database"`), named by
//! `database_name_attributes`. Messaging pairs have `connection_type="messaging_system"`.
//!
//! Between agents ([`agents`]), a span whose parent belongs to another agent is a
//! request `parent's agent → child's agent` (`connection_type="agent"`), whatever the
//! spans' kinds.
//!
//! Each request counts in `traces_service_graph_request_total`,
//! `traces_service_graph_request_failed_total` (either side failed), and the histograms
//! `traces_service_graph_request_server_seconds` and `..._client_seconds`, by `client`,
//! `server`, `connection_type` and `failed`, as the connector labels them. Agent edges
//! and service edges have separate series caps.
//!
//! The same requests go to the `graph_edges` table ([`table`]), by the minute they
//! started, which `GET /api/v1/graph` sums over any range.

mod agents;
mod filter;
mod names;
mod pairs;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use prometheus::core::{Collector, Desc};
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use super::clock::LiveClock;
use super::ids::BatchIds;
use super::series::{Buckets, HistogramFamily};
use crate::columns::{primitives, string_at, strings, timestamps, MapColumn, Text};
use crate::processor::{Processor, TableBatch};
use crate::schema::Table;
use crate::Result;
use agents::{AgentSpan, Agents, Handoff};
use names::Names;
use pairs::{Arrival, Connection, Edge, Pairs, Side};
use table::BatchRows;
pub use table::{bucket_columns, edges_summary_sql, quantile_ms, PendingRows, GRAPH_EDGES};

/// The attributes a database call is known by.
const DATABASE_SYSTEM: [&str; 2] = ["db.system.name", "db.system"];

/// The servicegraph connector's default latency buckets, in seconds.
const BUCKETS_S: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// `[processors.graph]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    pub enabled: bool,
    /// How long a client or server span waits for its partner (at least; less than
    /// twice that).
    pub wait_seconds: u64,
    /// Client and server spans waiting for their partner at most.
    pub max_items: usize,
    /// Agents' spans kept for agent edges at most.
    pub max_agent_items: usize,
    /// Service edges kept apart on `/metrics`.
    pub max_series: usize,
    /// Agent edges kept apart on `/metrics`.
    pub max_agent_series: usize,
    /// What names the peer of an unanswered client span, first present wins.
    pub virtual_node_peer_attributes: Vec<String>,
    /// What names a database, first present wins.
    pub database_name_attributes: Vec<String>,
}

impl Default for GraphConfig {
    fn default() -> Self {
        let strings = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
        GraphConfig {
            enabled: true,
            wait_seconds: 10,
            max_items: 100_000,
            max_agent_items: 100_000,
            max_series: 10_000,
            max_agent_series: 10_000,
            virtual_node_peer_attributes: strings(&[
                "peer.service",
                "gen_ai.provider.name",
                "gen_ai.system",
                "server.address",
            ]),
            database_name_attributes: strings(&[
                "peer.service",
                "server.address",
                "db.namespace",
                "db.name",
                "db.system.name",
                "db.system",
            ]),
        }
    }
}

/// (trace id, span id), as three words: a `u128` would align every entry of the
/// pairing stores to 16 bytes, and those stores are the graph's memory traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    trace: [u64; 2],
    span: u64,
}

impl Key {
    fn new(trace: u128, span: u64) -> Key {
        Key {
            trace: [(trace >> 64) as u64, trace as u64],
            span,
        }
    }

    /// The span `span` of the same trace.
    fn with_span(self, span: u64) -> Key {
        Key { span, ..self }
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Three words, without the length an array's hash would add.
        state.write_u64(self.trace[0]);
        state.write_u64(self.trace[1]);
        state.write_u64(self.span);
    }
}

type Fast = foldhash::fast::RandomState;

/// The name of the virtual node that calls root SERVER spans, as the connector's.
const USER: &str = "user";

struct State {
    names: Names,
    pairs: Pairs,
    agents: Agents,
    /// What `graph_edges` has not been given yet.
    rows: PendingRows,
}

pub struct ServiceGraph {
    config: GraphConfig,
    /// The keys that name a database or a peer, searched for together.
    mentioned: Option<AhoCorasick>,
    clock: LiveClock,
    state: Mutex<State>,
    requests: HistogramFamily<4>,
    client: HistogramFamily<4>,
    failed: HistogramFamily<4>,
    unpaired: IntCounter,
    dropped: IntCounter,
    unwritten: IntCounter,
}

const LABELS: [&str; 4] = ["client", "server", "connection_type", "failed"];

/// The label `connection_type` has between agents.
const AGENT: &str = "agent";

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric options are constant: {e}"))
}

/// The columns of a span batch the graph reads.
struct Columns<'a> {
    ids: BatchIds<'a>,
    service: &'a arrow::array::StringArray,
    agent: &'a arrow::array::StringArray,
    kind: &'a arrow::array::StringArray,
    status: &'a arrow::array::StringArray,
    start: &'a arrow::array::TimestampNanosecondArray,
    duration: &'a arrow::array::Int64Array,
    attributes: MapColumn<'a>,
    /// Whether any span of the batch might name a database, or a peer: most batches
    /// name neither, and their spans are not searched for them.
    databases: bool,
    peers: bool,
}

impl<'a> Columns<'a> {
    fn of(
        input: &'a TableBatch,
        config: &GraphConfig,
        mentioned: Option<&AhoCorasick>,
    ) -> Result<Columns<'a>> {
        let spans = &input.batch;
        let attributes = MapColumn::of(spans, "attributes")?;
        // One pass over the batch's keys for all of them, where most batches name
        // none; then one for each set.
        let any = mentioned.is_none_or(|m| attributes.mentions_any(m));
        Ok(Columns {
            databases: any && attributes.mentions(&DATABASE_SYSTEM),
            peers: any && attributes.mentions(&config.virtual_node_peer_attributes),
            ids: BatchIds::of(input)?,
            service: strings(spans, "service_name")?,
            agent: strings(spans, "agent_id")?,
            kind: strings(spans, "kind")?,
            status: strings(spans, "status_code")?,
            start: timestamps(spans, "start_time")?,
            duration: primitives::<arrow::datatypes::Int64Type>(spans, "duration_ns")?,
            attributes,
        })
    }
}

/// A span's part in requests between services.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
    None,
}

fn role(kind: &str) -> (Role, bool) {
    match kind {
        "CLIENT" => (Role::Client, false),
        "PRODUCER" => (Role::Client, true),
        "SERVER" => (Role::Server, false),
        "CONSUMER" => (Role::Server, true),
        _ => (Role::None, false),
    }
}

/// A span of the batch being observed, as the stores see it.
struct Row {
    row: usize,
    key: Key,
    /// The parent's key, if the span has a parent.
    parent: Option<Key>,
    role: (Role, bool),
}

/// The names a batch interned last: a request's spans share their service, a trace's
/// its agent, and the name table is compacted only between batches.
#[derive(Default)]
struct Recent<'a> {
    service: Option<(&'a str, u32)>,
    agent: Option<(&'a str, u32)>,
}

/// What one batch came to: the requests it completed, and the spans it gave up on.
#[derive(Default)]
struct Outcome {
    edges: Vec<Edge>,
    handoffs: Vec<Handoff>,
    unpaired: u64,
    dropped: u64,
}

impl ServiceGraph {
    pub fn new(config: &GraphConfig, clock: LiveClock) -> ServiceGraph {
        let family = |name, help| {
            HistogramFamily::new(name, help, LABELS, BUCKETS_S.to_vec(), config.max_series)
                .with_separate_cap(2, AGENT, config.max_agent_series)
        };
        let wait_ns =
            i64::try_from(config.wait_seconds.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
        ServiceGraph {
            state: Mutex::new(State {
                names: Names::default(),
                pairs: Pairs::new(wait_ns, config.max_items, clock.now()),
                agents: Agents::new(config.max_agent_items),
                rows: PendingRows::new(config.max_series + config.max_agent_series),
            }),
            requests: family(
                "traces_service_graph_request_server_seconds",
                "Duration of the server side of each request on an edge (servicegraph).",
            )
            .with_calls(
                "traces_service_graph_request_total",
                "Requests on an edge between two services, a service and a virtual node, or two agents (servicegraph).",
            ),
            client: family(
                "traces_service_graph_request_client_seconds",
                "Duration of the client side of each request on an edge (servicegraph).",
            ),
            failed: HistogramFamily::new(
                "swarmscope_graph_failed_request_seconds",
                "Failed requests on an edge, by server-side duration.",
                LABELS,
                Vec::new(),
                config.max_series,
            )
            .with_separate_cap(2, AGENT, config.max_agent_series)
            .with_calls(
                "traces_service_graph_request_failed_total",
                "Requests on an edge where either side failed (servicegraph).",
            ),
            unpaired: counter(
                "swarmscope_graph_unpaired_total",
                "Client or server spans whose partner did not arrive within the wait, and agents' spans forgotten before their parent came.",
            ),
            dropped: counter(
                "swarmscope_graph_dropped_total",
                "Client or server spans whose wait was cut short to make room in a full pairing store (and a second consumer of one message).",
            ),
            unwritten: counter(
                "swarmscope_graph_unwritten_total",
                "Requests counted on /metrics but left out of graph_edges: more edge-minutes waited to be written than max_series + max_agent_series.",
            ),
            mentioned: AhoCorasick::new(
                DATABASE_SYSTEM
                    .iter()
                    .copied()
                    .chain(config.virtual_node_peer_attributes.iter().map(String::as_str)),
            )
            .ok(),
            config: config.clone(),
            clock,
        }
    }

    /// The requests on `client → server` so far: (calls, failed).
    pub fn edge(&self, client: &str, server: &str, connection_type: &str) -> (u64, u64) {
        let count = |family: &HistogramFamily<4>| {
            ["false", "true"]
                .iter()
                .filter_map(|f| family.get([client, server, connection_type, f]))
                .map(|b| b.count())
                .sum()
        };
        (count(&self.requests), count(&self.failed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The requests between services that `span` starts or completes.
    fn serve<'a>(
        &self,
        state: &mut State,
        c: &Columns<'a>,
        span: &Row,
        recent: &mut Recent<'a>,
        out: &mut Outcome,
    ) {
        let (role, messaging) = span.role;
        if role == Role::None {
            return;
        }
        let row = span.row;
        let State { names, pairs, .. } = state;
        let side = Side {
            service: names
                .intern_recent(&mut recent.service, string_at(c.service, row).unwrap_or("")),
            start_ns: c.start.value(row),
            duration_ns: c.duration.value(row),
            failed: Text(c.status.value(row)) == Text("ERROR"),
            messaging,
        };
        let arrival = match role {
            Role::Client
                if c.databases
                    && !messaging
                    && c.attributes.first(row, &DATABASE_SYSTEM).is_some() =>
            {
                let name = c
                    .attributes
                    .first(row, &self.config.database_name_attributes);
                let name = name.or_else(|| c.attributes.first(row, &DATABASE_SYSTEM));
                let database = names.intern(name.unwrap_or_default());
                Arrival::Paired(Edge::one_sided(
                    side.service,
                    database,
                    side,
                    Connection::Database,
                ))
            }
            Role::Client => {
                let peer = c
                    .peers
                    .then(|| {
                        c.attributes
                            .first(row, &self.config.virtual_node_peer_attributes)
                    })
                    .flatten()
                    .map(|p| names.intern(p));
                pairs.client(span.key, side, peer)
            }
            _ => match span.parent {
                Some(parent) => pairs.server(parent, side),
                None => {
                    let user = names.intern(USER);
                    Arrival::Paired(Edge::one_sided(
                        user,
                        side.service,
                        side,
                        Connection::Virtual,
                    ))
                }
            },
        };
        match arrival {
            Arrival::Paired(edge) => out.edges.push(edge),
            Arrival::Waiting => {}
            Arrival::Dropped => out.dropped += 1,
        }
    }

    fn observe_spans(&self, input: &TableBatch) -> Result<()> {
        let c = Columns::of(input, &self.config, self.mentioned.as_ref())?;
        let mut state = self.lock();
        // What waited its time goes first: a partner later than that is not paired.
        let mut out = Outcome::default();
        out.unpaired = state.pairs.expire(self.clock.now(), &mut out.edges);
        let mut recent = Recent::default();
        for row in 0..input.batch.num_rows() {
            let (Some(t), Some(s)) = (c.ids.trace(row), c.ids.span(row)) else {
                continue;
            };
            let key = Key::new(t, s);
            let span = Row {
                row,
                key,
                parent: c.ids.parent(row).map(|p| key.with_span(p)),
                role: role(c.kind.value(row)),
            };
            self.serve(&mut state, &c, &span, &mut recent, &mut out);
            if let Some(agent) = string_at(c.agent, row) {
                let agent_span = AgentSpan {
                    agent: state.names.intern_recent(&mut recent.agent, agent),
                    start_ns: c.start.value(row),
                    duration_ns: c.duration.value(row),
                    failed: Text(c.status.value(row)) == Text("ERROR"),
                    calls: span.role.0 == Role::Client,
                };
                out.unpaired +=
                    state
                        .agents
                        .arrive(key, span.parent, agent_span, &mut out.handoffs);
            }
        }
        self.settle(&mut state, out);
        Ok(())
    }

    /// Counts `out`, and compacts the name table.
    fn settle(&self, state: &mut State, mut out: Outcome) {
        out.unpaired += state.pairs.drain_early(&mut out.edges);
        out.dropped += state.pairs.take_cut_short();
        self.unpaired.inc_by(out.unpaired);
        self.dropped.inc_by(out.dropped);
        let refused = self.record(&state.names, &mut state.rows, &out);
        self.unwritten.inc_by(refused);
        if state.names.wants_compaction() {
            let State {
                names,
                pairs,
                agents,
                ..
            } = state;
            names.compact(pairs.names_mut().chain(agents.names_mut()));
        }
    }

    /// Counts `out`'s requests on `/metrics` and in `rows`; answers how many requests
    /// found no room in `rows`.
    fn record(&self, names: &Names, rows: &mut PendingRows, out: &Outcome) -> u64 {
        if out.edges.is_empty() && out.handoffs.is_empty() {
            return 0;
        }
        // The batch's requests by edge, its names still numbers: the metric families
        // hash label strings once per edge and batch, not once per request.
        let mut by_edge: HashMap<(u32, u32, Connection, bool), [Buckets; 2], Fast> =
            HashMap::default();
        let mut batch_rows = BatchRows::default();
        let edges = out.edges.iter().map(|e| {
            let ends = [e.client, e.server];
            (
                ends,
                e.connection,
                e.start_ns,
                e.server_ns,
                e.client_ns,
                e.failed,
            )
        });
        let handoffs = out.handoffs.iter().map(|h| {
            let ends = [h.from, h.to];
            let agent = Connection::Agent;
            (ends, agent, h.start_ns, h.server_ns, h.client_ns, h.failed)
        });
        for (ends, connection, start_ns, server_ns, client_ns, fail) in edges.chain(handoffs) {
            let server_s = server_ns.max(0) as f64 / 1e9;
            let client_s = client_ns.max(0) as f64 / 1e9;
            let [server, client] = by_edge
                .entry((ends[0], ends[1], connection, fail))
                .or_insert_with(|| [Buckets::new(BUCKETS_S.len()), Buckets::new(BUCKETS_S.len())]);
            server.observe(&BUCKETS_S, server_s);
            client.observe(&BUCKETS_S, client_s);
            batch_rows.observe(ends, connection, start_ns, (server_s, client_s), fail);
        }
        let (mut requests, mut client, mut failed) = (
            self.requests.tally(),
            self.client.tally(),
            self.failed.tally(),
        );
        for ((from, to, connection, fail), [server_side, client_side]) in &by_edge {
            let key = [
                names.name(*from),
                names.name(*to),
                connection.label(),
                if *fail { "true" } else { "false" },
            ];
            requests.add(key, server_side);
            client.add(key, client_side);
            if *fail {
                // The failed requests' family counts them, without buckets.
                failed.add(
                    key,
                    &Buckets::totals(server_side.count(), server_side.sum()),
                );
            }
        }
        self.requests.merge(requests);
        self.client.merge(client);
        self.failed.merge(failed);
        rows.add(batch_rows, |id| names.name(id))
    }

    /// The `graph_edges` rows counted since the last call (requests to virtual nodes
    /// whose wait is over included); [`ServiceGraph::restore_rows`] takes back what
    /// could not be stored.
    pub fn take_rows(&self) -> PendingRows {
        self.expire();
        let mut state = self.lock();
        let max_rows = self.config.max_series + self.config.max_agent_series;
        std::mem::replace(&mut state.rows, PendingRows::new(max_rows))
    }

    pub fn restore_rows(&self, rows: PendingRows) {
        let refused = self.lock().rows.restore(rows);
        self.unwritten.inc_by(refused);
    }

    /// Expires what waited its time with no span arriving: a scrape sees requests to
    /// virtual nodes without waiting for more traffic.
    fn expire(&self) {
        let mut state = self.lock();
        let mut out = Outcome::default();
        out.unpaired = state.pairs.expire(self.clock.now(), &mut out.edges);
        self.settle(&mut state, out);
    }

    /// The collectors to register with the registry `/metrics` serves.
    pub fn collectors(self: &Arc<Self>) -> Vec<Box<dyn Collector>> {
        (0..3)
            .map(|i| Box::new(Families(Arc::clone(self), i)) as Box<dyn Collector>)
            .chain([
                Box::new(self.unpaired.clone()) as Box<dyn Collector>,
                Box::new(self.dropped.clone()),
                Box::new(self.unwritten.clone()),
            ])
            .collect()
    }
}

struct Families(Arc<ServiceGraph>, usize);

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
            0 => {
                self.0.expire();
                self.0.requests.collect()
            }
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
            if let Err(e) = self.observe_spans(input) {
                debug_assert!(false, "graph: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
