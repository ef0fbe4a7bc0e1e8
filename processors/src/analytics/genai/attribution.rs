//! Which agent a model call belongs to, following the trace tree: the
//! `genai_attribution` table.
//!
//! Multi-agent frameworks put `gen_ai.agent.id` / `gen_ai.agent.name` on an
//! `invoke_agent` span, and the model calls below it (`chat`, `execute_tool`, made by
//! the OpenAI SDK under its instrumentations) carry no agent of their own. Every span
//! that reports token usage is attributed to its nearest *agent span* ancestor: one whose
//! `gen_ai.operation.name` is `invoke_agent` (or whose `openinference.span.kind` is
//! `AGENT`). The `genai_usage` view then gives a call without an agent its ancestor's,
//! and counts an agent span's own `gen_ai.usage.*` (the conventions make it the total of
//! the calls below) only when no call below it reported usage: spend is counted once.
//!
//! Resolved on the acknowledgement path into a derived table rather than within one
//! batch: a span ends after its children, so an SDK exports an agent span with its last
//! calls or after them, usually in a later export when the agent runs longer than the
//! export interval. A call whose ancestor has not arrived yet *waits* for it (keyed by
//! the span id it waits for: its parent, then that span's parent, ...) up to
//! `attribution_wait_seconds`; when the agent span arrives, one row per waiting call is
//! written with it. Waiting calls are held in memory (a restart forgets them: those
//! calls keep no agent), at most `max_pending` of them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{RecordBatch, StringArray, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::super::clock::{LiveClock, Skip};
use super::super::ids::BatchIds;
use crate::columns::{string_at, strings, timestamps, MapColumn};
use crate::processor::TableBatch;
use crate::schema::{timestamp_type, Table, TableDef};
use crate::Result;

pub const GENAI_ATTRIBUTION: Table = Table::declare(&TableDef {
    name: "genai_attribution",
    code: 9,
    time_column: "time",
    fallback_time_column: None,
    exact_nanos: &[],
    cluster_column: None,
    schema: || SCHEMA.clone(),
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // The call's start, as its `genai_usage` row's time.
        Field::new("time", timestamp_type(), false),
        Field::new("trace_id", DataType::Utf8, false),
        // The call (a span reporting usage).
        Field::new("span_id", DataType::Utf8, false),
        // Its nearest agent span ancestor, and that span's agent.
        Field::new("agent_span_id", DataType::Utf8, false),
        Field::new("agent_id", DataType::Utf8, true),
        Field::new("agent_name", DataType::Utf8, true),
    ]))
});

const OPERATION: &str = "gen_ai.operation.name";
const AGENT_NAME: &str = "gen_ai.agent.name";
const OPENINFERENCE_KIND: &str = "openinference.span.kind";

/// A call waiting for its agent span ancestor.
#[derive(Clone, Debug)]
pub(super) struct Waiter {
    trace_id: String,
    span_id: String,
    time: i64,
    /// When it started waiting (wall clock), for expiry.
    since: i64,
}

/// The calls waiting, by the span id each waits for next (as a number: span ids are
/// random, a trace id check on a hit settles the rest).
#[derive(Default)]
struct Waiting {
    by_span: HashMap<u64, Vec<Waiter>, foldhash::fast::RandomState>,
    len: usize,
}

/// Attributes calls to agents; see the module documentation.
pub struct Attribution {
    waiting: Mutex<Waiting>,
    /// Agent spans a call below them reported usage for, whose own usage the metrics
    /// leave out (read once, by [`Attribution::take_covered`]).
    covered: Mutex<HashSet<(String, String)>>,
    wait_ns: i64,
    max_pending: usize,
    clock: LiveClock,
}

/// An agent span of a batch: (row, agent id, agent name).
type AgentSpan<'a> = (usize, Option<&'a str>, Option<&'a str>);

const NAME: &str = "genai_attribution";

/// One batch's spans as attribution reads them.
struct Tree<'a> {
    trace: &'a StringArray,
    span: &'a StringArray,
    /// By row: its span id as a number, its parent's.
    ids: BatchIds<'a>,
    /// Span id to row.
    rows: HashMap<u64, usize, foldhash::fast::RandomState>,
    /// By row, for a batch that has any: whether it is an agent span, with its agent.
    agents: Vec<Option<(Option<&'a str>, Option<&'a str>)>>,
}

/// Where a walk up the tree from a call ends.
enum Walk<'a> {
    /// At an agent span of the batch.
    Agent(AgentSpan<'a>),
    /// At a span not in the batch (yet): wait for it.
    Wait(u64),
    /// At a root that is no agent span, or nowhere sensible: no agent to find.
    None,
}

impl<'a> Tree<'a> {
    /// The first agent span above row `row` (itself excluded), as far as this batch
    /// tells.
    fn walk(&self, row: usize) -> Walk<'a> {
        let mut up = self.ids.parent(row);
        // Trees are shallow; the bound only stops a cycle a client made up.
        for _ in 0..64 {
            let Some(id) = up else {
                return Walk::None;
            };
            let Some(&r) = self.rows.get(&id) else {
                return Walk::Wait(id);
            };
            if !self.ids.same_trace(r, row) {
                return Walk::None;
            }
            if let Some(Some((agent_id, name))) = self.agents.get(r) {
                return Walk::Agent((r, *agent_id, *name));
            }
            up = self.ids.parent(r);
        }
        Walk::None
    }
}

impl Attribution {
    pub fn new(wait_seconds: u64, max_pending: usize, clock: LiveClock) -> Attribution {
        Attribution {
            waiting: Mutex::new(Waiting::default()),
            covered: Mutex::new(HashSet::new()),
            wait_ns: i64::try_from(wait_seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000),
            max_pending,
            clock,
        }
    }

    /// Calls waiting for their agent span now.
    pub fn pending(&self) -> usize {
        self.lock_waiting().len
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Each update leaves the map consistent: a panic mid-way loses at most a waiter.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_covered(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.covered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the usage of agent span (`trace_id`, `span_id`) is covered by the calls
    /// below it, forgetting it.
    pub fn take_covered(&self, trace_id: &str, span_id: &str) -> bool {
        let mut covered = self.lock_covered();
        if covered.is_empty() {
            return false;
        }
        covered.remove(&(trace_id.to_owned(), span_id.to_owned()))
    }

    /// The `genai_attribution` rows `spans` completes: its calls that find their agent
    /// span in the batch, and the waiting calls whose agent span it brings.
    /// `has_usage(row)` says whether a span reports token usage; `any_usage` whether
    /// any might.
    pub fn rows(
        &self,
        input: &TableBatch,
        has_usage: &dyn Fn(usize) -> bool,
        any_usage: bool,
    ) -> Result<Option<RecordBatch>> {
        let mut waiting = self.lock_waiting();
        if waiting.len == 0 && !any_usage {
            return Ok(None);
        }
        let now = self.clock.now();
        self.expire(&mut waiting, now);
        let spans = &input.batch;
        let tree = tree(input)?;
        let start = timestamps(spans, "start_time")?;
        // (call: trace id, span id, start; its agent span) for each call settled.
        let mut resolved: Vec<(Waiter, AgentSpan<'_>)> = Vec::new();
        let mut full = 0;
        let mut wait = |waiting: &mut Waiting, key: u64, w: Waiter| {
            if waiting.len >= self.max_pending {
                full += 1;
                return;
            }
            waiting.by_span.entry(key).or_default().push(w);
            waiting.len += 1;
        };
        // This batch's calls, up the tree as far as the batch goes.
        if any_usage {
            for row in 0..spans.num_rows() {
                if !has_usage(row) {
                    continue;
                }
                let call = || Waiter {
                    trace_id: tree.trace.value(row).to_owned(),
                    span_id: tree.span.value(row).to_owned(),
                    time: start.value(row),
                    since: now,
                };
                match tree.walk(row) {
                    Walk::Agent(agent) => resolved.push((call(), agent)),
                    Walk::Wait(key) => wait(&mut waiting, key, call()),
                    Walk::None => {}
                }
            }
        }
        // Earlier calls waiting for a span of this batch: on up from it.
        if waiting.len > 0 {
            for row in 0..spans.num_rows() {
                let Some(id) = tree.ids.span(row) else {
                    continue;
                };
                let Some(list) = waiting.by_span.remove(&id) else {
                    continue;
                };
                waiting.len -= list.len();
                let trace = tree.trace.value(row);
                let (here, elsewhere): (Vec<Waiter>, Vec<Waiter>) =
                    list.into_iter().partition(|w| w.trace_id == trace);
                if !elsewhere.is_empty() {
                    waiting.len += elsewhere.len();
                    waiting.by_span.insert(id, elsewhere);
                }
                let outcome = match tree.agents.get(row) {
                    Some(Some((agent_id, name))) => Walk::Agent((row, *agent_id, *name)),
                    _ => tree.walk(row),
                };
                for w in here {
                    match &outcome {
                        Walk::Agent(agent) => resolved.push((w, *agent)),
                        Walk::Wait(key) => wait(&mut waiting, *key, w),
                        Walk::None => {}
                    }
                }
            }
        }
        drop(waiting);
        self.clock.skip(NAME, Skip::Capacity, full);
        if resolved.is_empty() {
            return Ok(None);
        }
        // Agent spans reporting usage that calls below them reported too: their own
        // usage is left out of the metrics (taken as the metrics see the agent span; a
        // bound in case they never do, a shed batch).
        let mut covered = self.lock_covered();
        for (_, (row, _, _)) in &resolved {
            if any_usage && has_usage(*row) {
                if covered.len() >= self.max_pending {
                    covered.clear();
                }
                covered.insert((
                    tree.trace.value(*row).to_owned(),
                    tree.span.value(*row).to_owned(),
                ));
            }
        }
        drop(covered);
        build(&tree, &resolved).map(Some)
    }

    /// Forgets the calls that waited longer than the wait.
    fn expire(&self, waiting: &mut Waiting, now: i64) {
        if waiting.len == 0 {
            return;
        }
        let oldest = now.saturating_sub(self.wait_ns);
        let before = waiting.len;
        let mut len = 0;
        waiting.by_span.retain(|_, list| {
            list.retain(|w| w.since >= oldest);
            len += list.len();
            !list.is_empty()
        });
        waiting.len = len;
        self.clock
            .skip(NAME, Skip::Late, before.saturating_sub(len) as u64);
    }
}

/// A batch's tree: ids, parents, and (when the batch has any) its agent spans.
fn tree(input: &TableBatch) -> Result<Tree<'_>> {
    let spans = &input.batch;
    let trace = strings(spans, "trace_id")?;
    let span = strings(spans, "span_id")?;
    let agent_ids = strings(spans, "agent_id")?;
    let attributes = MapColumn::of(spans, "attributes")?;
    let n = spans.num_rows();
    let ids = BatchIds::of(input)?;
    let mut rows: HashMap<u64, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(n, Default::default());
    for row in 0..n {
        if let Some(id) = ids.span(row) {
            rows.insert(id, row);
        }
    }
    // Most batches hold no agent span: one pass over the values rules them out.
    let agents = if attributes.mentions_value(&["invoke_agent", "AGENT"]) {
        (0..n)
            .map(|row| {
                let (mut operation, mut kind, mut name) = (None, None, None);
                attributes.scan(row, |k, v| match k {
                    OPERATION => operation = Some(v),
                    OPENINFERENCE_KIND => kind = Some(v),
                    AGENT_NAME => name = Some(v),
                    _ => {}
                });
                let is_agent = operation == Some("invoke_agent") || kind == Some("AGENT");
                is_agent.then(|| (string_at(agent_ids, row), name))
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Tree {
        trace,
        span,
        ids,
        rows,
        agents,
    })
}

fn build(tree: &Tree<'_>, resolved: &[(Waiter, AgentSpan<'_>)]) -> Result<RecordBatch> {
    let n = resolved.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let text = || StringBuilder::with_capacity(n, n * 16);
    let (mut trace, mut span, mut agent_span) = (text(), text(), text());
    let (mut agent_id, mut agent_name) = (text(), text());
    for (w, (row, id, name)) in resolved {
        time.append_value(w.time);
        trace.append_value(&w.trace_id);
        span.append_value(&w.span_id);
        agent_span.append_value(tree.span.value(*row));
        // An agent span named but not numbered is known by its name.
        agent_id.append_option(id.or(*name));
        agent_name.append_option(*name);
    }
    Ok(RecordBatch::try_new(
        GENAI_ATTRIBUTION.schema(),
        vec![
            Arc::new(time.finish()),
            Arc::new(trace.finish()),
            Arc::new(span.finish()),
            Arc::new(agent_span.finish()),
            Arc::new(agent_id.finish()),
            Arc::new(agent_name.finish()),
        ],
    )?)
}
