//! Aggregates grouped by string columns, grouped by view before they are hashed as
//! strings.
//!
//! The commonest dashboard queries (`SELECT service_name, count(*) FROM spans GROUP BY
//! 1`, a p95 by service and operation) spend much of their time in DataFusion's hash
//! table for string groups: every row hashes its strings and compares them with the
//! group's. The Parquet reader decodes a dictionary-encoded column into views that
//! point into the page's dictionary, so within one batch equal values have equal
//! 16-byte views. [`GroupByViewExec`] numbers each batch's rows by view, one integer
//! hash per row and column (none on a run of equal views), and looks up only each
//! distinct combination's strings. It stays correct for any input: views of equal
//! strings that differ (plain-encoded pages, rows cast from memory) become separate
//! local groups that meet again in the string map.
//!
//! [`GroupByViewRule`] puts it in place of a partial [`AggregateExec`] over unordered
//! input that groups by one or more `Utf8View` expressions (no grouping sets) and
//! computes only, without `DISTINCT` or `FILTER`:
//! - `count` of `*` or of any one expression, and `sum` of an integer constant
//!   (`sum(1)`, how BI tools count records: the rows counted times the constant), whose
//!   state is an `Int64`;
//! - `percentile_cont` of a `Float64` (exact; integers are cast to it), whose state is
//!   the list of the group's values, which the final aggregate selects from;
//! - `approx_percentile_cont` of a `Float64`, whose state is a t-digest: each group's
//!   values are gathered and sorted into its digest a few thousand at a time, where
//!   DataFusion's row-by-row accumulator takes out and sorts each group's rows batch by
//!   batch. The digest is DataFusion's own, so the final aggregate merges it; being an
//!   approximation, it depends on the order values arrive in, and may differ from
//!   DataFusion's in the last places as two runs over differently split files do.
//!
//! Its output is the partial aggregate's (the groups, then each aggregate's state), so
//! the final aggregate above it is unchanged. At most [`MAX_GROUPS`] groups are held,
//! and the values a percentile keeps are reserved from the query's memory pool: past
//! either, a partial result is emitted and grouping starts afresh, as a partial
//! aggregate may.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, RecordBatch, StringViewArray,
    UInt64Array,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, Float64Type, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    apply_expression_roots, DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion_functions_aggregate_common::tdigest::{TDigest, DEFAULT_MAX_SIZE};
use futures::StreamExt;

mod numbering;
mod single;
mod values;

use numbering::Numbering;
use values::Values;

pub use single::GroupByViewSingleExec;

/// Groups held before a partial result is emitted.
pub const MAX_GROUPS: usize = 1 << 16;

/// Replaces eligible partial aggregates with [`GroupByViewExec`]. Runs after
/// DataFusion's own rules, when distribution and ordering are settled.
#[derive(Debug, Default)]
pub struct GroupByViewRule;

impl PhysicalOptimizerRule for GroupByViewRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Bottom up: a final aggregate is looked at once the partial one under it is
        // replaced.
        crate::replace_nodes(plan, |node| {
            let agg = node.downcast_ref::<AggregateExec>()?;
            match GroupByViewSingleExec::replacing(agg) {
                Some(single) => Some(Arc::new(single) as Arc<dyn ExecutionPlan>),
                None => Some(Arc::new(GroupByViewExec::replacing(agg)?)),
            }
        })
    }

    fn name(&self) -> &str {
        "group_by_view"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one aggregate keeps per group.
#[derive(Debug, Clone)]
enum Kind {
    /// The rows whose argument is not null, times a constant: 1 for `count`, `k` for
    /// `sum(k)`.
    Count { scale: i64 },
    /// Every non-null value, `percentile_cont`'s state; `field` is its list's item.
    Values { field: FieldRef },
    /// A t-digest of `max_size` centroids, `approx_percentile_cont`'s state;
    /// `centroids` is the item of its centroids' list.
    Digest {
        max_size: usize,
        centroids: FieldRef,
    },
}

/// A partial aggregate grouped by string expressions; see the module.
#[derive(Debug)]
pub struct GroupByViewExec {
    input: Arc<dyn ExecutionPlan>,
    /// The group expressions and their output names.
    groups: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// Each aggregate's argument, name and kind, in output order.
    aggregates: Vec<(Arc<dyn PhysicalExpr>, String, Kind)>,
    /// The replaced aggregate's: output schema, partitioning, emission.
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl GroupByViewExec {
    /// The grouping of input `partition`. `emits_partials`: past the memory it may
    /// take or [`MAX_GROUPS`], it hands over what it holds (as a partial aggregate);
    /// otherwise it fails with the pool's error.
    fn grouper(
        &self,
        partition: usize,
        context: &TaskContext,
        emits_partials: bool,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Grouper {
        let kinds = self
            .aggregates
            .iter()
            .map(|(_, _, kind)| kind.clone())
            .collect::<Vec<_>>();
        Grouper {
            groups: self.groups.iter().map(|(e, _)| Arc::clone(e)).collect(),
            arguments: self
                .aggregates
                .iter()
                .map(|(e, _, _)| Arc::clone(e))
                .collect(),
            held: Groups::new(self.groups.len(), &kinds),
            kinds,
            schema: self.schema(),
            metrics: BaselineMetrics::new(metrics, partition),
            reservation: MemoryConsumer::new(format!("GroupByViewExec[{partition}]"))
                .register(context.memory_pool()),
            batch: BatchGroups::default(),
            emits_partials,
        }
    }

    fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// `name: gby=[...], aggr=[...]`, as `EXPLAIN` shows the exec.
    fn describe(&self, name: &str, f: &mut fmt::Formatter) -> fmt::Result {
        let groups = self
            .groups
            .iter()
            .map(|(e, name)| format!("{e} as {name}"))
            .collect::<Vec<_>>();
        let aggregates = self
            .aggregates
            .iter()
            .map(|(_, name, _)| name.as_str())
            .collect::<Vec<_>>();
        write!(
            f,
            "{name}: gby=[{}], aggr=[{}]",
            groups.join(", "),
            aggregates.join(", ")
        )
    }

    /// Applies `f` to the group expressions and the aggregates' arguments.
    fn apply_to_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(
            self.groups
                .iter()
                .map(|(e, _)| e)
                .chain(self.aggregates.iter().map(|(e, _, _)| e)),
            f,
        )
    }

    /// This exec over `input`.
    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> GroupByViewExec {
        GroupByViewExec {
            input,
            groups: self.groups.clone(),
            aggregates: self.aggregates.clone(),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The exec that computes what `agg` does, if `agg` is one it can replace.
    fn replacing(agg: &AggregateExec) -> Option<GroupByViewExec> {
        let group_by = agg.group_expr();
        let input_schema = agg.input_schema();
        let eligible = *agg.mode() == AggregateMode::Partial
            && *agg.input_order_mode() == InputOrderMode::Linear
            && group_by.is_single()
            && !group_by.expr().is_empty()
            && agg.filter_expr().iter().all(Option::is_none);
        if !eligible {
            return None;
        }
        for (group, _) in group_by.expr() {
            if group.data_type(&input_schema).ok()? != DataType::Utf8View {
                return None;
            }
        }
        // The partial output: the groups, then each aggregate's state fields.
        let schema = agg.schema();
        let mut next_state = group_by.expr().len();
        let mut aggregates = Vec::new();
        for a in agg.aggr_expr() {
            let states = a.state_fields().ok()?.len();
            let fields = schema.fields().get(next_state..next_state + states)?;
            next_state += states;
            let kind = kind_of(a, fields, &input_schema)?;
            aggregates.push((
                Arc::clone(a.expressions().first()?),
                a.name().to_owned(),
                kind,
            ));
        }
        if next_state != schema.fields().len() {
            return None;
        }
        Some(GroupByViewExec {
            input: Arc::clone(agg.input()),
            groups: group_by.expr().to_vec(),
            aggregates,
            properties: Arc::clone(agg.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// What aggregate `a`, whose partial state has the fields `states`, keeps per group,
/// if the exec computes it: `count` of anything (rows where its argument is not null),
/// `sum` of a constant integer, the exact `percentile_cont` or the t-digest of
/// `approx_percentile_cont` of a `Float64`.
fn kind_of(a: &AggregateFunctionExpr, states: &[FieldRef], input: &Schema) -> Option<Kind> {
    if a.is_distinct() {
        return None;
    }
    let args = a.expressions();
    let arg = args.first()?;
    let state_types = states.iter().map(|f| f.data_type()).collect::<Vec<_>>();
    let of_float = || arg.data_type(input).ok() == Some(DataType::Float64);
    match (a.fun().name(), state_types.as_slice()) {
        ("count", [DataType::Int64]) if args.len() == 1 => Some(Kind::Count { scale: 1 }),
        ("sum", [DataType::Int64]) if args.len() == 1 => {
            match arg.downcast_ref::<Literal>()?.value() {
                ScalarValue::Int64(Some(k)) => Some(Kind::Count { scale: *k }),
                _ => None,
            }
        }
        ("percentile_cont", [DataType::List(field)])
            if field.data_type() == &DataType::Float64 && of_float() =>
        {
            Some(Kind::Values {
                field: Arc::clone(field),
            })
        }
        (
            "approx_percentile_cont",
            [DataType::UInt64, DataType::Float64, DataType::Float64, DataType::Float64, DataType::Float64, DataType::List(centroids)],
        ) if centroids.data_type() == &DataType::Float64 && of_float() => {
            // The digest's size: the third argument, as DataFusion reads it, or its
            // default.
            let max_size = match args.get(2) {
                None => DEFAULT_MAX_SIZE,
                Some(size) => match size.downcast_ref::<Literal>()?.value() {
                    ScalarValue::Int64(Some(n)) if *n > 0 => usize::try_from(*n).ok()?,
                    ScalarValue::UInt64(Some(n)) if *n > 0 => usize::try_from(*n).ok()?,
                    _ => return None,
                },
            };
            Some(Kind::Digest {
                max_size,
                centroids: Arc::clone(centroids),
            })
        }
        _ => None,
    }
}

impl DisplayAs for GroupByViewExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.describe(self.name(), f)
    }
}

impl ExecutionPlan for GroupByViewExec {
    fn name(&self) -> &str {
        "GroupByViewExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.apply_to_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return Err(DataFusionError::Internal(
                "GroupByViewExec takes one child".to_owned(),
            ));
        };
        Ok(Arc::new(self.with_input(input)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = self.schema();
        let state = self.grouper(partition, &context, true, &self.metrics);
        let batches = futures::stream::unfold(Some((input, state)), |state| async move {
            let (mut input, mut grouper) = state?;
            loop {
                match input.next().await {
                    Some(Ok(batch)) => match grouper.update(&batch) {
                        Err(e) => return Some((Err(e), None)),
                        Ok(true) => return Some((grouper.emit(), Some((input, grouper)))),
                        Ok(false) => {}
                    },
                    Some(Err(e)) => return Some((Err(e), None)),
                    None if grouper.held.len() == 0 => return None,
                    None => return Some((grouper.emit(), None)),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's grouping.
struct Grouper {
    groups: Vec<Arc<dyn PhysicalExpr>>,
    arguments: Vec<Arc<dyn PhysicalExpr>>,
    kinds: Vec<Kind>,
    schema: SchemaRef,
    metrics: BaselineMetrics,
    /// The memory the held values take.
    reservation: MemoryReservation,
    held: Groups,
    /// Scratch for one batch, kept for its allocations.
    batch: BatchGroups,
    /// See [`GroupByViewExec::grouper`].
    emits_partials: bool,
}

/// One aggregate's state per group number.
enum State {
    Counts(Vec<i64>),
    Values(Vec<Values>),
    Digests(Vec<Digest>),
}

/// Values gathered into sorted runs before they are merged into a t-digest.
const DIGEST_RUN: usize = 4096;

/// One group's t-digest and the values not yet merged into it.
struct Digest {
    digest: TDigest,
    pending: Vec<f64>,
}

impl Digest {
    fn new(max_size: usize) -> Digest {
        Digest {
            digest: TDigest::new(max_size),
            pending: Vec::new(),
        }
    }

    /// Merges the pending values into the digest.
    fn settle(&mut self) {
        if !self.pending.is_empty() {
            self.pending.sort_unstable_by(f64::total_cmp);
            self.digest = self.digest.merge_sorted_f64(&self.pending);
            self.pending.clear();
        }
    }
}

/// The groups of the rows seen so far: their strings → group number, and each
/// aggregate's state by group number.
struct Groups {
    /// The encoded strings of each group's columns (see [`encode_key`]), looked up
    /// once per batch and group: with std's SipHash that lookup showed in profiles.
    index: HashMap<Box<[u8]>, usize, Fast>,
    /// `keys[c][g]`: column `c` of group `g`.
    keys: Vec<Vec<Option<Box<str>>>>,
    states: Vec<State>,
    /// Per state: the size of its t-digests (0 for the others).
    sizes: Vec<usize>,
    /// The bytes the lists of values have allocated, kept as they grow: summing them
    /// per batch would cost a pass over every group.
    list_bytes: usize,
}

impl Groups {
    fn new(columns: usize, kinds: &[Kind]) -> Groups {
        Groups {
            index: HashMap::default(),
            keys: vec![Vec::new(); columns],
            states: kinds
                .iter()
                .map(|kind| match kind {
                    Kind::Count { .. } => State::Counts(Vec::new()),
                    Kind::Values { .. } => State::Values(Vec::new()),
                    Kind::Digest { .. } => State::Digests(Vec::new()),
                })
                .collect(),
            sizes: kinds
                .iter()
                .map(|kind| match kind {
                    Kind::Digest { max_size, .. } => *max_size,
                    _ => 0,
                })
                .collect(),
            list_bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The group number of the strings `key` encodes, a new group if it has none yet.
    fn group_of(&mut self, key: &[u8], strings: impl Iterator<Item = Option<Box<str>>>) -> usize {
        if let Some(&group) = self.index.get(key) {
            return group;
        }
        let group = self.index.len();
        self.index.insert(key.into(), group);
        for (column, string) in self.keys.iter_mut().zip(strings) {
            column.push(string);
        }
        for (state, &size) in self.states.iter_mut().zip(&self.sizes) {
            match state {
                State::Counts(counts) => counts.push(0),
                State::Values(values) => values.push(Values::default()),
                State::Digests(digests) => digests.push(Digest::new(size)),
            }
        }
        group
    }

    /// The bytes the held values take.
    fn value_bytes(&self) -> usize {
        self.list_bytes
            + self
                .states
                .iter()
                .map(|state| match state {
                    State::Counts(_) | State::Values(_) => 0,
                    State::Digests(digests) => digests
                        .iter()
                        .map(|d| d.pending.capacity() * size_of::<f64>() + d.digest.size())
                        .sum::<usize>(),
                })
                .sum::<usize>()
    }
}

/// Appends to `key` one group column's string, so that distinct tuples of strings
/// encode distinctly: a null as `0`, a string as `1`, its length and its bytes.
fn encode_key(key: &mut Vec<u8>, string: Option<&str>) {
    match string {
        None => key.push(0),
        Some(s) => {
            key.push(1);
            key.extend_from_slice(&(s.len() as u64).to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
    }
}

/// A view that no string has: its length field says 4 GiB - 1, more than a view's
/// buffer can hold. It stands for null in the per-batch map.
const NULL_VIEW: u128 = u128::MAX;

/// The groups of one batch: each row's local group number, by view.
#[derive(Default)]
struct BatchGroups {
    by_view: Numbering<u128>,
    by_two_views: Numbering<(u128, u128)>,
    by_pair: Numbering<u64>,
    /// Per local group: the first row that has it.
    first_row: Vec<u32>,
    /// Per row: its local group.
    local: Vec<u32>,
    /// One column's numbering (scratch while columns are combined).
    column_first_row: Vec<u32>,
    column_local: Vec<u32>,
    /// Per row: (its number so far, its number in the next column), packed.
    pairs: Vec<u64>,
    /// Per local group: rows counted (scratch for one count at a time).
    tally: Vec<i64>,
    /// Per local group: where its values end in `sorted` (scratch).
    ends: Vec<usize>,
    /// The batch's values sorted by local group (scratch).
    sorted: Vec<f64>,
}

/// Numbers `keys` in order of first appearance into `local` (per key) and `first_row`
/// (per number), hashing only where a key differs from the one before it.
fn number<K: numbering::Key>(
    keys: impl Iterator<Item = K>,
    map: &mut Numbering<K>,
    local: &mut Vec<u32>,
    first_row: &mut Vec<u32>,
) {
    let mut numbers = begin_numbering(map, local, first_row, keys.size_hint().0);
    let mut previous: Option<(K, u32)> = None;
    for (row, key) in keys.enumerate() {
        let number = match previous {
            Some((k, number)) if k == key => number,
            _ => {
                let number = number_of(map, first_row, key, row);
                previous = Some((key, number));
                number
            }
        };
        numbers.push(number);
    }
    *local = numbers;
}

/// Empties `map` and `first_row` for a new batch of `rows`, and takes `local`'s vector
/// to push the rows' numbers to: a vector of the caller's own, whose pointer and length
/// its loop can keep in registers (through `local`, each row would load them again).
#[inline]
fn begin_numbering<K: numbering::Key>(
    map: &mut Numbering<K>,
    local: &mut Vec<u32>,
    first_row: &mut Vec<u32>,
    rows: usize,
) -> Vec<u32> {
    map.clear();
    first_row.clear();
    let mut numbers = std::mem::take(local);
    numbers.clear();
    numbers.reserve(rows);
    numbers
}

/// The number of `key`, first seen at `row` if it is new.
#[inline]
fn number_of<K: numbering::Key>(
    map: &mut Numbering<K>,
    first_row: &mut Vec<u32>,
    key: K,
    row: usize,
) -> u32 {
    let next = first_row.len() as u32;
    let number = map.number_of(key, next);
    if number == next {
        first_row.push(row as u32);
    }
    number
}

/// Each row's view ([`keyed_views`]), or [`NULL_VIEW`] for a null.
fn views<'a>(keys: &'a StringViewArray, keyed: &'a [u128]) -> impl Iterator<Item = u128> + 'a {
    let nulls = keys.nulls().filter(|n| n.null_count() > 0);
    keyed
        .iter()
        .enumerate()
        .map(move |(row, view)| match nulls {
            Some(nulls) if nulls.is_null(row) => NULL_VIEW,
            _ => *view,
        })
}

/// The views of `keys` as keys of the per-batch numbering: equal views are equal
/// strings, and equal strings in one buffer have equal views. A batch often holds one
/// buffer many times over: a filter's output coalesces the rows of a dozen or more
/// decoded batches, each of which lists the column chunk's dictionary as a buffer of
/// its own. Each string longer than a view's inline 12 bytes is then seen under as
/// many views, and as many groups of the batch, as the buffer has indices. Here each
/// such view names the first index of its buffer instead.
fn keyed_views(keys: &StringViewArray) -> Cow<'_, [u128]> {
    let buffers = keys.data_buffers();
    let mut first_index = HashMap::with_capacity_and_hasher(buffers.len(), Fast::default());
    let canonical: Vec<u32> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| *first_index.entry((b.as_ptr(), b.len())).or_insert(i as u32))
        .collect();
    if canonical.iter().enumerate().all(|(i, &c)| c == i as u32) {
        return Cow::Borrowed(keys.views());
    }
    const INDEX: u128 = (u32::MAX as u128) << 64;
    Cow::Owned(
        keys.views()
            .iter()
            .map(|&view| match canonical.get((view >> 64) as u32 as usize) {
                Some(&index) if view as u32 > INLINE_LEN => {
                    (view & !INDEX) | (u128::from(index) << 64)
                }
                _ => view,
            })
            .collect(),
    )
}

/// The longest string a view holds inline; longer ones name a buffer and an offset.
const INLINE_LEN: u32 = 12;

type Fast = foldhash::fast::RandomState;

/// [`number`] over one column's views: a column without nulls a run at a time
/// ([`number_runs`]), one with nulls row by row.
fn number_column(
    column: &StringViewArray,
    map: &mut Numbering<u128>,
    local: &mut Vec<u32>,
    first_row: &mut Vec<u32>,
) {
    let keyed = keyed_views(column);
    match column.null_count() {
        0 => number_runs(&keyed, map, local, first_row),
        _ => number(views(column, &keyed), map, local, first_row),
    }
}

/// [`number`] over a slice of keys, a run of equal keys at a time: the run's end is
/// found by comparing neighbours, and its number written for all of it at once.
fn number_runs<K: numbering::Key>(
    keys: &[K],
    map: &mut Numbering<K>,
    local: &mut Vec<u32>,
    first_row: &mut Vec<u32>,
) {
    let mut numbers = begin_numbering(map, local, first_row, keys.len());
    let mut row = 0;
    while let Some(&key) = keys.get(row) {
        let end = row + 1 + keys[row + 1..].iter().take_while(|&&k| k == key).count();
        numbers.resize(end, number_of(map, first_row, key, row));
        row = end;
    }
    *local = numbers;
}

impl BatchGroups {
    /// Numbers the rows by the combination of their views in `columns`: two columns by
    /// the pair of views; more by the first column's numbers, then each pair of
    /// (numbers so far, the next column's number) numbered again.
    fn assign(&mut self, columns: &[&StringViewArray]) {
        if let [first, second] = columns {
            // The commonest case (service and operation) in one hash per row.
            let (first_keyed, second_keyed) = (keyed_views(first), keyed_views(second));
            number(
                views(first, &first_keyed).zip(views(second, &second_keyed)),
                &mut self.by_two_views,
                &mut self.local,
                &mut self.first_row,
            );
            return;
        }
        let Some((first, rest)) = columns.split_first() else {
            return;
        };
        number_column(
            first,
            &mut self.by_view,
            &mut self.local,
            &mut self.first_row,
        );
        for column in rest {
            number_column(
                column,
                &mut self.by_view,
                &mut self.column_local,
                &mut self.column_first_row,
            );
            if self.column_first_row.len() == 1 {
                // One value in this column: the numbers so far stand.
                continue;
            }
            self.pairs.clear();
            self.pairs.extend(
                self.local
                    .iter()
                    .zip(&self.column_local)
                    .map(|(&a, &b)| (u64::from(a) << 32) | u64::from(b)),
            );
            number(
                self.pairs.iter().copied(),
                &mut self.by_pair,
                &mut self.local,
                &mut self.first_row,
            );
        }
    }
}

impl Grouper {
    /// Adds a batch; true when the held groups are to be emitted now.
    fn update(&mut self, batch: &RecordBatch) -> Result<bool> {
        let _timer = self.metrics.elapsed_compute().timer();
        let rows = batch.num_rows();
        let keys = self
            .groups
            .iter()
            .map(|group| group.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let keys = keys
            .iter()
            .map(|keys| {
                keys.as_string_view_opt().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "GroupByViewExec: group is {}, not Utf8View",
                        keys.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch.assign(&keys);
        let mut encoded = Vec::new();
        let globals = self
            .batch
            .first_row
            .iter()
            .map(|&row| {
                let row = row as usize;
                let string = |k: &StringViewArray| k.is_valid(row).then(|| k.value(row).to_owned());
                encoded.clear();
                for k in &keys {
                    encode_key(&mut encoded, k.is_valid(row).then(|| k.value(row)));
                }
                self.held
                    .group_of(&encoded, keys.iter().map(|k| string(k).map(Box::from)))
            })
            .collect::<Vec<_>>();
        let mut values_held = false;
        for ((arg, kind), state) in self
            .arguments
            .iter()
            .zip(&self.kinds)
            .zip(&mut self.held.states)
        {
            match (kind, state) {
                (Kind::Count { .. }, State::Counts(counts)) => {
                    let tally = &mut self.batch.tally;
                    tally.clear();
                    tally.resize(globals.len(), 0);
                    match arg.evaluate(batch)? {
                        ColumnarValue::Scalar(value) if value.is_null() => continue,
                        ColumnarValue::Scalar(_) => tally_runs(&self.batch.local, tally),
                        ColumnarValue::Array(values) => {
                            count_valid(&values, &self.batch.local, tally)
                        }
                    }
                    for (local, &global) in globals.iter().enumerate() {
                        counts[global] += tally[local];
                    }
                }
                (Kind::Values { .. }, State::Values(held)) => {
                    let values = float_argument(arg, batch)?;
                    self.held.list_bytes += append_by_group(
                        &values,
                        &self.batch.local,
                        &globals,
                        held,
                        &mut self.batch.ends,
                        &mut self.batch.sorted,
                    );
                    values_held = true;
                }
                (Kind::Digest { .. }, State::Digests(digests)) => {
                    let values = float_argument(arg, batch)?;
                    for_each_value(&values, &self.batch.local, &globals, |group, v| {
                        let group = &mut digests[group];
                        group.pending.push(v);
                        if group.pending.len() >= DIGEST_RUN {
                            group.settle();
                        }
                    });
                    values_held = true;
                }
                _ => {
                    return Err(DataFusionError::Internal(
                        "GroupByViewExec: a state of the wrong kind".to_owned(),
                    ))
                }
            }
        }
        // Past the memory the query may take, the values go on to the final aggregate.
        let over_memory = match values_held {
            false => false,
            true => match self.reservation.try_resize(self.held.value_bytes()) {
                Ok(()) => false,
                Err(e) if !self.emits_partials => return Err(e),
                Err(_) => true,
            },
        };
        Ok(self.emits_partials && (over_memory || self.held.len() >= MAX_GROUPS))
    }

    /// The groups held so far as one partial-aggregate batch; grouping restarts.
    fn emit(&mut self) -> Result<RecordBatch> {
        let held = std::mem::replace(&mut self.held, Groups::new(self.groups.len(), &self.kinds));
        let keys = held
            .keys
            .into_iter()
            .map(|column| Arc::new(StringViewArray::from_iter(column)) as ArrayRef);
        let states = held
            .states
            .into_iter()
            .zip(&self.kinds)
            .map(|(state, kind)| match (state, kind) {
                (State::Counts(counts), Kind::Count { scale }) => {
                    // `sum` wraps on overflow, as DataFusion's does.
                    let values = counts.into_iter().map(|n| n.wrapping_mul(*scale));
                    Ok(vec![
                        Arc::new(Int64Array::from_iter_values(values)) as ArrayRef
                    ])
                }
                (State::Values(values), Kind::Values { field }) => {
                    Ok(vec![values_list(values, field)?])
                }
                (State::Digests(digests), Kind::Digest { centroids, .. }) => {
                    digest_states(digests, centroids)
                }
                _ => Err(DataFusionError::Internal(
                    "GroupByViewExec: a state of the wrong kind".to_owned(),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let columns = keys.chain(states.into_iter().flatten()).collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.reservation.free();
        self.metrics.record_output(batch.num_rows());
        Ok(batch)
    }
}

/// A percentile's argument over `batch`, a `Float64` as the rule checked.
fn float_argument(arg: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Float64Array> {
    let values = arg.evaluate(batch)?.into_array(batch.num_rows())?;
    values
        .as_primitive_opt::<Float64Type>()
        .cloned()
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "GroupByViewExec: percentile of {}, not Float64",
                values.data_type()
            ))
        })
}

/// Calls `f` with each row's group and value, unless the value is null.
fn for_each_value(
    values: &Float64Array,
    local: &[u32],
    globals: &[usize],
    mut f: impl FnMut(usize, f64),
) {
    let nulls = values.nulls().filter(|n| n.null_count() > 0);
    for (row, (&l, &v)) in local.iter().zip(values.values()).enumerate() {
        if nulls.is_none_or(|n| n.is_valid(row)) {
            f(globals[l as usize], v);
        }
    }
}

/// Appends each valid value of `values` to its group's in `held`, a group's values of
/// the batch at a time: they are first sorted by local group (a counting sort into
/// `sorted`), so that each group's values are appended with one copy rather than one
/// value at a time into a group that is elsewhere in memory at every row. Returns the
/// bytes the groups allocated.
fn append_by_group(
    values: &Float64Array,
    local: &[u32],
    globals: &[usize],
    held: &mut [Values],
    ends: &mut Vec<usize>,
    sorted: &mut Vec<f64>,
) -> usize {
    let nulls = values.nulls().filter(|n| n.null_count() > 0);
    let valid = |row: usize| nulls.is_none_or(|n| n.is_valid(row));
    // First each group's count, then where it starts, then each value in its place,
    // which leaves `ends[g]` where group `g`'s values end.
    ends.clear();
    ends.resize(globals.len(), 0);
    for (row, &l) in local.iter().enumerate() {
        if valid(row) {
            ends[l as usize] += 1;
        }
    }
    let mut start = 0;
    for end in ends.iter_mut() {
        let count = *end;
        *end = start;
        start += count;
    }
    sorted.clear();
    sorted.resize(start, 0.0);
    for (row, (&l, &v)) in local.iter().zip(values.values()).enumerate() {
        if valid(row) {
            let at = &mut ends[l as usize];
            sorted[*at] = v;
            *at += 1;
        }
    }
    let mut bytes = 0;
    let mut start = 0;
    for (&end, &global) in ends.iter().zip(globals) {
        bytes += held[global].extend(&sorted[start..end]);
        start = end;
    }
    bytes
}

/// The groups' values as `percentile_cont`'s partial state: one list per group.
fn values_list(values: Vec<Values>, field: &FieldRef) -> Result<ArrayRef> {
    let offsets = OffsetBuffer::<i32>::from_lengths(values.iter().map(Values::len));
    let flat = values.iter().flat_map(Values::iter).collect::<Vec<_>>();
    let list = ListArray::try_new(
        Arc::clone(field),
        offsets,
        Arc::new(Float64Array::new(ScalarBuffer::from(flat), None)),
        None,
    )?;
    Ok(Arc::new(list))
}

/// The groups' t-digests as `approx_percentile_cont`'s partial state: the columns
/// [`TDigest::to_scalar_state`] gives one row of (size, sum, count, max, min, and the
/// centroids' means and weights in one list).
fn digest_states(digests: Vec<Digest>, centroids: &FieldRef) -> Result<Vec<ArrayRef>> {
    let digests = digests
        .into_iter()
        .map(|mut d| {
            d.settle();
            d.digest
        })
        .collect::<Vec<_>>();
    let column = |f: fn(&TDigest) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(digests.iter().map(f)))
    };
    let sizes = digests.iter().map(|d| d.max_size() as u64);
    let offsets =
        OffsetBuffer::<i32>::from_lengths(digests.iter().map(|d| 2 * d.centroids().len()));
    let means_and_weights = digests
        .iter()
        .flat_map(|d| d.centroids().iter().flat_map(|c| [c.mean(), c.weight()]))
        .collect::<Vec<_>>();
    let list = ListArray::try_new(
        Arc::clone(centroids),
        offsets,
        Arc::new(Float64Array::new(
            ScalarBuffer::from(means_and_weights),
            None,
        )),
        None,
    )?;
    Ok(vec![
        Arc::new(UInt64Array::from_iter_values(sizes)),
        column(TDigest::sum),
        column(TDigest::count),
        column(TDigest::max),
        column(TDigest::min),
        Arc::new(list),
    ])
}

/// Adds to `tally[local[row]]` each row whose value is not null.
fn count_valid(values: &ArrayRef, local: &[u32], tally: &mut [i64]) {
    match values.logical_nulls() {
        Some(nulls) if nulls.null_count() > 0 => {
            for (row, &l) in local.iter().enumerate() {
                if nulls.is_valid(row) {
                    tally[l as usize] += 1;
                }
            }
        }
        _ => tally_runs(local, tally),
    }
}

/// Adds each row to its local group's tally, a run of rows of one group at a time.
///
/// Rows of one group often come in runs (the spans of one resource, say, all share its
/// service name). Incrementing the same counter row by row makes each addition wait for
/// the one before it in memory, several times slower than adding a run's length held in
/// a register; where groups alternate, each row still costs one addition.
fn tally_runs(local: &[u32], tally: &mut [i64]) {
    let Some((&first, rest)) = local.split_first() else {
        return;
    };
    let (mut group, mut run) = (first, 1);
    for &l in rest {
        if l == group {
            run += 1;
        } else {
            tally[group as usize] += run;
            group = l;
            run = 1;
        }
    }
    tally[group as usize] += run;
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use std::collections::HashSet;

    fn context(with_rule: bool) -> SessionContext {
        // Joins partitioned by hash even over small tables, so that a join relies on
        // its inputs' partitioning.
        let config = SessionConfig::new()
            .with_target_partitions(4)
            .set_usize(
                "datafusion.optimizer.hash_join_single_partition_threshold",
                0,
            )
            .set_usize(
                "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                0,
            );
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(GroupByViewRule));
        }
        SessionContext::new_with_state(builder.build())
    }

    /// `rows` rows: `key` cycling through `keys` (None is null), `kind` through four
    /// (one null), `value` unique and null on every third row, `x` a float null on every
    /// fifth, `n` a row number. Strings as `Utf8View` (how the store's tables scan them)
    /// or as `Utf8`.
    fn batch(rows: usize, keys: &[Option<String>], offset: usize, views: bool) -> RecordBatch {
        let string = |values: Vec<Option<String>>| -> ArrayRef {
            if views {
                Arc::new(StringViewArray::from_iter(values))
            } else {
                Arc::new(StringArray::from_iter(values))
            }
        };
        let key = (0..rows)
            .map(|r| keys[(r * 7 + offset) % keys.len()].clone())
            .collect();
        let kinds = [
            Some("a"),
            None,
            Some("bb"),
            Some("a-kind-longer-than-twelve"),
        ];
        let kind = (0..rows)
            .map(|r| kinds[(r / 3 + offset) % kinds.len()].map(str::to_owned))
            .collect();
        let value = (0..rows)
            .map(|r| (r % 3 != 0).then(|| format!("v{r}")))
            .collect();
        let x = (0..rows)
            .map(|r| (r % 5 != 0).then(|| ((r * 37 + offset) % 101) as f64 * 0.25))
            .collect::<Float64Array>();
        let n = (0..rows as i64)
            .map(|r| r + offset as i64)
            .collect::<Int64Array>();
        let string_type = if views {
            DataType::Utf8View
        } else {
            DataType::Utf8
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", string_type.clone(), true),
            Field::new("kind", string_type.clone(), true),
            Field::new("value", string_type, true),
            Field::new("x", DataType::Float64, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let columns = vec![
            string(key),
            string(kind),
            string(value),
            Arc::new(x),
            Arc::new(n),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// `n` keys: every fifth null, the rest short (inline in the view) or long.
    fn keys(n: usize) -> Vec<Option<String>> {
        (0..n)
            .map(|i| match i % 5 {
                0 => None,
                1 => Some(format!("k{i}")),
                _ => Some(format!("a-much-longer-service-name-{i}")),
            })
            .collect()
    }

    /// Three partitions of four batches each.
    fn partitions(keys: &[Option<String>], views: bool) -> Vec<Vec<RecordBatch>> {
        (0..3)
            .map(|p| {
                (0..4)
                    .map(|b| batch(1000 + b * 37, keys, p * 11 + b, views))
                    .collect()
            })
            .collect()
    }

    fn memory_table(ctx: &SessionContext, partitions: Vec<Vec<RecordBatch>>) {
        let table = MemTable::try_new(partitions[0][0].schema(), partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
    }

    async fn sorted_result(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines = text.lines().map(str::to_owned).collect::<Vec<_>>();
        lines.sort();
        lines
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let explain = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap();
        let batches = explain.collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    const REPLACED: [&str; 19] = [
        "SELECT key, count(*) FROM t GROUP BY key",
        "SELECT key, count(value), count(1) AS ones, count(key) FROM t GROUP BY key",
        "SELECT upper(key) AS k, count(*) FROM t WHERE n % 2 = 0 GROUP BY upper(key)",
        "SELECT count(*) AS c FROM t GROUP BY key HAVING count(*) > 1",
        "SELECT key, count(NULL) FROM t GROUP BY key",
        "SELECT key, sum(1) FROM t GROUP BY key",
        "SELECT key, sum(-3) AS s, count(value), sum(9223372036854775807) FROM t GROUP BY key",
        "SELECT key, kind, count(*) FROM t GROUP BY key, kind",
        "SELECT kind, key, upper(kind) AS u, count(x) FROM t WHERE n % 3 = 1 GROUP BY kind, key, upper(kind)",
        "SELECT key, value, count(*) FROM t GROUP BY key, value",
        "SELECT key, percentile_cont(0.5) WITHIN GROUP (ORDER BY n) FROM t GROUP BY key",
        "SELECT key, kind, percentile_cont(0.95) WITHIN GROUP (ORDER BY x) AS p, count(x) FROM t GROUP BY key, kind",
        "SELECT kind, percentile_cont(0.9) WITHIN GROUP (ORDER BY x DESC) AS p, sum(2) FROM t WHERE n % 4 = 1 GROUP BY kind",
        "SELECT kind, percentile_cont(0.5) WITHIN GROUP (ORDER BY CASE WHEN kind = 'a' THEN x END) AS only_a FROM t GROUP BY kind",
        // A few values a group: every value is its own centroid, so the digest is the
        // same however the values were merged.
        "SELECT kind, key, approx_percentile_cont(x, 0.5) AS p FROM t WHERE n % 40 = 1 GROUP BY kind, key",
        "SELECT key, approx_percentile_cont(n, 0.9, 50) AS p, count(*) FROM t WHERE n % 50 = 7 GROUP BY key",
        "SELECT kind, percentile_cont(0.25) WITHIN GROUP (ORDER BY x), percentile_cont(0.75) WITHIN GROUP (ORDER BY n) FROM t GROUP BY kind",
        "SELECT key, kind, value, percentile_cont(0.01) WITHIN GROUP (ORDER BY x) AS lo, percentile_cont(0.99) WITHIN GROUP (ORDER BY x DESC) AS hi FROM t GROUP BY key, kind, value HAVING count(*) > 1",
        // The join takes each side as it is hash-partitioned by key (see `context`):
        // the one-stage percentile must send each group where the repartition would.
        "SELECT p.key, p.median, c.n FROM (SELECT key, percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS median FROM t GROUP BY key) p JOIN (SELECT key, count(*) AS n FROM t GROUP BY key) c ON p.key = c.key",
    ];
    /// Not only counts, constant sums and exact percentiles, or not grouped by strings
    /// alone: DataFusion's aggregate runs these.
    const NOT_REPLACED: [&str; 7] = [
        "SELECT key, sum(n) FROM t GROUP BY key",
        "SELECT key, sum(1.5) FROM t GROUP BY key",
        "SELECT key, count(*), min(n) FROM t GROUP BY key",
        "SELECT key, n, count(*) FROM t GROUP BY key, n",
        "SELECT key, count(*) FILTER (WHERE n > 3) FROM t GROUP BY key",
        "SELECT sum(1) FROM t WHERE n < 0",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t",
    ];
    /// DataFusion plans these as an aggregate over a group by (key, value), or key
    /// alone for a constant, which the exec may run; either way the answer must not
    /// change.
    const DISTINCT: [&str; 2] = [
        "SELECT key, count(DISTINCT value) FROM t GROUP BY key",
        "SELECT key, sum(DISTINCT 2) FROM t GROUP BY key",
    ];

    /// Every query answers as DataFusion's own aggregate does; the eligible ones run
    /// `GroupByViewExec`, the others do not.
    async fn check_against_datafusion(register: impl Fn(&SessionContext)) {
        let (plain, counted) = (context(false), context(true));
        register(&plain);
        register(&counted);
        for sql in REPLACED {
            // An exact percentile runs in one stage; the others as partial aggregates.
            let exec = match sql.contains("WITHIN GROUP") {
                true => "GroupByViewSingleExec",
                false => "GroupByViewExec",
            };
            assert!(plan(&counted, sql).await.contains(exec), "{sql}");
        }
        for sql in NOT_REPLACED {
            assert!(!plan(&counted, sql).await.contains("GroupByView"), "{sql}");
        }
        for sql in REPLACED.iter().chain(&NOT_REPLACED).chain(&DISTINCT) {
            let expected = sorted_result(&plain, sql).await;
            // A table of groups, but for the aggregates without GROUP BY: one row.
            let rows = if sql.contains("GROUP BY") { 8 } else { 5 };
            assert!(expected.len() >= rows, "{sql}: {expected:?}");
            assert_eq!(sorted_result(&counted, sql).await, expected, "{sql}");
        }
    }

    #[test]
    fn numbers_runs_as_row_by_row() {
        let cases: [&[u128]; 5] = [
            &[],
            &[7],
            &[1, 1, 1, 2, 2, 1, 3, 3, 3, 2],
            &[4, 5, 4, 5, 6, 4],
            &[9, 9, 9, 9],
        ];
        for keys in cases {
            let (mut map, mut local, mut first_row) = (Numbering::default(), vec![8], vec![8]);
            number(keys.iter().copied(), &mut map, &mut local, &mut first_row);
            let expected = (local.clone(), first_row.clone());
            // From what the batch before left.
            number_runs(&[3, 3, 1], &mut map, &mut local, &mut first_row);
            number_runs(keys, &mut map, &mut local, &mut first_row);
            assert_eq!((local, first_row), expected, "{keys:?}");
        }
    }

    #[test]
    fn a_buffer_listed_twice_numbers_its_strings_once() {
        use datafusion::arrow::array::{Array as _, StringViewBuilder};
        use datafusion::arrow::buffer::Buffer;
        // Two decoded batches of one dictionary, concatenated as a coalescing filter
        // does: the rows of the second name the same buffer under another index.
        let mut builder = StringViewBuilder::new();
        let dictionary = builder.append_block(Buffer::from(b"agent-service-07work.progress"));
        let again = builder.append_block(Buffer::from(b"agent-service-07work.progress"));
        for (block, offset, len) in [
            (dictionary, 0, 16),
            (dictionary, 16, 13),
            (dictionary, 0, 16),
            (again, 0, 16),
            (again, 16, 13),
        ] {
            builder.try_append_view(block, offset, len).unwrap();
        }
        let copied = builder.finish();
        // A copy of one buffer is not the same allocation: its strings are grouped by
        // their text, a batch later, so each still has a group of its own here.
        assert_eq!(keyed_views(&copied).iter().collect::<HashSet<_>>().len(), 4);

        let shared = Buffer::from(b"agent-service-07work.progress");
        let views = copied.views().clone();
        let listed_twice =
            StringViewArray::try_new(views, vec![shared.clone(), shared], copied.nulls().cloned())
                .unwrap();
        let keyed = keyed_views(&listed_twice);
        assert_eq!(keyed.iter().collect::<HashSet<_>>().len(), 2);
        let (mut map, mut local, mut first_row) = (Numbering::default(), vec![], vec![]);
        number_column(&listed_twice, &mut map, &mut local, &mut first_row);
        assert_eq!(local, [0, 1, 0, 0, 1]);
        assert_eq!(first_row, [0, 1]);
        // Short strings are their own views, whichever buffer a batch lists.
        let short = StringViewArray::from_iter_values(["ok", "error", "ok"]);
        assert_eq!(keyed_views(&short).as_ref(), short.views().as_ref());
    }

    #[test]
    fn tallies_runs_and_alternating_groups_as_row_by_row() {
        let cases: [&[u32]; 5] = [
            &[],
            &[2],
            &[0, 0, 0, 1, 1, 2, 0, 0, 3, 3, 3, 3],
            &[0, 1, 0, 1, 2, 0, 2, 1],
            &[3, 3, 3, 3, 3, 3, 3],
        ];
        for local in cases {
            let mut expected = vec![5i64; 4];
            for &l in local {
                expected[l as usize] += 1;
            }
            // Added to what the tally held before, as each count's tally is.
            let mut tally = vec![5i64; 4];
            tally_runs(local, &mut tally);
            assert_eq!(tally, expected, "{local:?}");
        }
    }

    #[tokio::test]
    async fn groups_views_built_row_by_row_as_datafusion_does() {
        let keys = keys(23);
        check_against_datafusion(|ctx| memory_table(ctx, partitions(&keys, true))).await;
    }

    /// Parquet's dictionary pages decode into views shared by equal values: the case
    /// the exec is fast for.
    #[tokio::test]
    async fn groups_dictionary_decoded_parquet_as_datafusion_does() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(23);
        for (p, batches) in partitions(&keys, false).into_iter().enumerate() {
            let file = std::fs::File::create(dir.path().join(format!("{p}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
            for b in &batches {
                writer.write(b).unwrap();
            }
            writer.close().unwrap();
        }
        let path = dir.path().to_str().unwrap().to_owned();
        check_against_datafusion(|ctx| {
            futures::executor::block_on(ctx.register_parquet(
                "t",
                &path,
                ParquetReadOptions::default(),
            ))
            .unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn more_groups_than_held_are_emitted_in_parts_and_merged() {
        let keys = (0..MAX_GROUPS + 5000)
            .map(|i| Some(format!("key-{i:08}")))
            .collect::<Vec<_>>();
        // Each partition has every key once.
        let batches: Vec<Vec<RecordBatch>> = (0..3)
            .map(|p| vec![batch(keys.len(), &keys, p, true)])
            .collect();
        let (plain, counted) = (context(false), context(true));
        for ctx in [&plain, &counted] {
            memory_table(ctx, batches.clone());
        }
        let sql = "SELECT count(*) AS groups, sum(c) AS rows, max(c) AS most \
                   FROM (SELECT key, count(*) AS c FROM t GROUP BY key)";
        assert!(plan(&counted, sql).await.contains("GroupByViewExec"));
        let expected = sorted_result(&plain, sql).await;
        assert_eq!(sorted_result(&counted, sql).await, expected);
        let batches = counted.sql(sql).await.unwrap().collect().await.unwrap();
        let row = batches[0]
            .columns()
            .iter()
            .map(|c| {
                c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(0)
            })
            .collect::<Vec<_>>();
        let keys = keys.len() as i64;
        assert_eq!(row, vec![keys, 3 * keys, 3]);

        // In one stage, an exact percentile holds every group, and answers in batches.
        let sql = "SELECT count(*) AS groups, sum(m) AS total, max(m) AS most \
                   FROM (SELECT key, percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS m \
                   FROM t GROUP BY key)";
        assert!(plan(&counted, sql).await.contains("GroupByViewSingleExec"));
        assert_eq!(
            sorted_result(&counted, sql).await,
            sorted_result(&plain, sql).await
        );
    }

    /// A context whose queries share a memory pool of `bytes`, over `partitions`
    /// partitions.
    fn pooled_context(bytes: usize, partitions: usize) -> SessionContext {
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(bytes, 1.0)
            .build_arc()
            .unwrap();
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(partitions))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(GroupByViewRule))
            .build();
        SessionContext::new_with_state(state)
    }

    /// Every value of every group is held at once, as in DataFusion's final aggregate:
    /// past the query's memory pool the query fails with the pool's error.
    #[tokio::test]
    async fn an_exact_percentile_past_the_memory_pool_fails_with_its_error() {
        let ctx = pooled_context(256 * 1024, 4);
        let keys = keys(5);
        memory_table(
            &ctx,
            (0..3)
                .map(|p| vec![batch(100_000, &keys, p, true)])
                .collect(),
        );
        let sql = "SELECT key, percentile_cont(0.5) WITHIN GROUP (ORDER BY n) FROM t GROUP BY key";
        assert!(plan(&ctx, sql).await.contains("GroupByViewSingleExec"));
        let error = ctx
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .expect_err("300,000 values in 256 KiB");
        assert!(error.to_string().contains("Resources exhausted"), "{error}");
    }

    /// The values are held at 8 bytes each with little slack: two partitions of one
    /// past a power of two values each, where doubling lists would reserve twice
    /// their values (4 MiB), fit in 3 MiB, and the percentile is the sorted one.
    #[tokio::test]
    async fn an_exact_percentile_takes_little_more_memory_than_its_values() {
        let ctx = pooled_context(3 << 20, 2);
        let rows = (1 << 17) + 1;
        let one_key = [Some("only".to_owned())];
        memory_table(
            &ctx,
            (0..2)
                .map(|p| vec![batch(rows, &one_key, p * 1000, true)])
                .collect(),
        );
        let sql =
            "SELECT key, percentile_cont(0.95) WITHIN GROUP (ORDER BY n) AS p FROM t GROUP BY key";
        assert!(plan(&ctx, sql).await.contains("GroupByViewSingleExec"));
        let mut values = (0..2)
            .flat_map(|p| (0..rows).map(move |r| (r + p * 1000) as f64))
            .collect::<Vec<_>>();
        values.sort_unstable_by(f64::total_cmp);
        let index = 0.95 * (values.len() - 1) as f64;
        let (low, high) = (
            values[index.floor() as usize],
            values[index.ceil() as usize],
        );
        let weight = (((index - index.floor()) * 1e6) as usize) as f64 / 1e6;
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let p = batches[0].column(1).as_primitive::<Float64Type>().value(0);
        assert_eq!(p, low + (high - low) * weight);
    }

    #[tokio::test]
    async fn utf8_groups_are_left_to_datafusion() {
        let ctx = context(true);
        memory_table(&ctx, partitions(&keys(23), false));
        let sql = "SELECT key, count(*) FROM t GROUP BY key";
        assert!(!plan(&ctx, sql).await.contains("GroupByViewExec"));
    }

    /// Over many values a group, a t-digest depends on the order values arrive in: the
    /// exec's approximate percentiles stay as close to the exact ones as DataFusion's.
    #[tokio::test]
    async fn approximate_percentiles_of_many_values_stay_near_the_exact_ones() {
        let keys = keys(7);
        let batches: Vec<Vec<RecordBatch>> = (0..2)
            .map(|p| {
                (0..6)
                    .map(|b| batch(5000, &keys, p * 3 + b, true))
                    .collect()
            })
            .collect();
        let (plain, grouped) = (context(false), context(true));
        for ctx in [&plain, &grouped] {
            memory_table(ctx, batches.clone());
        }
        let sql = "SELECT key, kind, approx_percentile_cont(x, 0.9) AS approx, \
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS exact, count(x) AS n \
                   FROM t GROUP BY key, kind ORDER BY key, kind";
        assert!(plan(&grouped, sql).await.contains("GroupByViewExec"));
        assert!(!plan(&plain, sql).await.contains("GroupByViewExec"));
        let rows = |batches: Vec<RecordBatch>| {
            let mut rows = Vec::new();
            for b in batches {
                let approx = b.column(2).as_primitive::<Float64Type>();
                let exact = b.column(3).as_primitive::<Float64Type>();
                let n = b
                    .column(4)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                for r in 0..b.num_rows() {
                    rows.push((approx.value(r), exact.value(r), n.value(r)));
                }
            }
            rows
        };
        let ours = rows(grouped.sql(sql).await.unwrap().collect().await.unwrap());
        let theirs = rows(plain.sql(sql).await.unwrap().collect().await.unwrap());
        assert_eq!(ours.len(), theirs.len());
        // 6 keys (one null) by 4 kinds (one null), hundreds of values each.
        assert_eq!(ours.len(), 24);
        for ((approx, exact, n), (their_approx, their_exact, their_n)) in ours.iter().zip(&theirs) {
            assert_eq!((exact, n), (their_exact, their_n));
            assert!(*n > 500, "{n}");
            // x runs over 0..25 in steps of 0.25.
            let (ours_off, theirs_off) = ((approx - exact).abs(), (their_approx - exact).abs());
            assert!(
                ours_off <= 0.5,
                "{approx} against {exact} (DataFusion {their_approx})"
            );
            assert!(
                theirs_off <= 0.5,
                "DataFusion {their_approx} against {exact}"
            );
        }
    }
}
