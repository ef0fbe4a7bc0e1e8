//! The exact `percentile_cont` by string columns in one stage.
//!
//! In two stages, each group's values are copied three times between the partial and
//! the final aggregate (into the partial's list state, by the hash repartition's
//! `take`, into the final accumulator), and the final one selects twice over each
//! group to interpolate. [`GroupByViewSingleExec`] takes the place of the final
//! aggregate, the repartition and the [`GroupByViewExec`] under them:
//! - each input partition groups its rows as [`GroupByViewExec`] does, in a task of its
//!   own, as the repartition runs its inputs;
//! - their groups meet by their strings, and each group's values are handed on by
//!   move;
//! - each output partition takes the groups the repartition would have sent it
//!   (DataFusion's own hash partitioner decides, so the output partitioning the plan
//!   was built on still holds), and selects each percentile from the group's values
//!   where they lie (see [`Values::percentile`]).
//!
//! `count` and `sum` of a constant beside the percentile come along as counts. As in
//! DataFusion's final aggregate, every value of every group is held at once (8 bytes
//! each, see [`Values`]); the memory pool refuses past its limit, and the query fails
//! with the pool's error.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringViewArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, Time,
};
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;

use super::{GroupByViewExec, Groups, Kind, State, Values};

/// What one aggregate gives per group.
#[derive(Debug, Clone, Copy)]
enum Final {
    /// Rows counted, times `scale` (`count`, `sum` of a constant).
    Count { scale: i64 },
    /// `percentile_cont` at `p` of the ascending values (`1 - p` for a descending
    /// order).
    Percentile { p: f64 },
}

type Merging = Shared<BoxFuture<'static, std::result::Result<Arc<Merged>, Arc<DataFusionError>>>>;

/// A final aggregate, its hash repartition and the [`GroupByViewExec`] under them, in
/// one stage; see the module.
pub struct GroupByViewSingleExec {
    /// How the input partitions group their rows; its input is this exec's child.
    partial: GroupByViewExec,
    /// The repartition's hash expressions, over the partial aggregate's output.
    hash: Vec<Arc<dyn PhysicalExpr>>,
    /// Per aggregate: its result.
    finals: Vec<Final>,
    /// The replaced final aggregate's: output schema, partitioning, emission.
    properties: Arc<PlanProperties>,
    /// The grouping of every input partition, started by the first output partition
    /// executed and awaited by all.
    merging: Mutex<Option<Merging>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for GroupByViewSingleExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupByViewSingleExec")
            .field("partial", &self.partial)
            .field("hash", &self.hash)
            .field("finals", &self.finals)
            .finish_non_exhaustive()
    }
}

impl GroupByViewSingleExec {
    /// The exec for `agg`, a final aggregate over a hash repartition of a
    /// [`GroupByViewExec`], if it computes an exact percentile and otherwise only
    /// counts.
    pub(super) fn replacing(agg: &AggregateExec) -> Option<GroupByViewSingleExec> {
        if *agg.mode() != AggregateMode::FinalPartitioned
            || agg.filter_expr().iter().any(Option::is_some)
        {
            return None;
        }
        let repartition = agg.input().downcast_ref::<RepartitionExec>()?;
        let Partitioning::Hash(hash, _) = repartition.partitioning() else {
            return None;
        };
        if repartition.preserve_order() {
            return None;
        }
        let partial = repartition.input().downcast_ref::<GroupByViewExec>()?;
        let group_by = agg.group_expr();
        if !group_by.is_single() || group_by.expr().len() != partial.groups.len() {
            return None;
        }
        if agg.aggr_expr().len() != partial.aggregates.len() {
            return None;
        }
        let schema = agg.schema();
        let results = schema.fields().get(partial.groups.len()..)?;
        let mut finals = Vec::new();
        for ((a, (_, _, kind)), field) in
            agg.aggr_expr().iter().zip(&partial.aggregates).zip(results)
        {
            let result = match (kind, a.fun().name(), field.data_type()) {
                (Kind::Count { scale }, "count" | "sum", DataType::Int64) => {
                    Final::Count { scale: *scale }
                }
                (Kind::Values { .. }, "percentile_cont", DataType::Float64) => {
                    let p = match a.expressions().get(1)?.downcast_ref::<Literal>()?.value() {
                        ScalarValue::Float64(Some(p)) if (0.0..=1.0).contains(p) => *p,
                        _ => return None,
                    };
                    let descending = a
                        .order_bys()
                        .first()
                        .is_some_and(|sort| sort.options.descending);
                    Final::Percentile {
                        p: if descending { 1.0 - p } else { p },
                    }
                }
                _ => return None,
            };
            finals.push(result);
        }
        if results.len() != finals.len()
            || !finals.iter().any(|f| matches!(f, Final::Percentile { .. }))
        {
            return None;
        }
        Some(GroupByViewSingleExec {
            partial: partial.with_input(Arc::clone(partial.input())),
            hash: hash.clone(),
            finals,
            properties: Arc::clone(agg.properties()),
            merging: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The grouping of every input partition: started on the first call, shared by
    /// the later ones.
    fn merging(&self, context: &Arc<TaskContext>) -> Result<Merging> {
        let mut merging = self
            .merging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(m) = merging.as_ref() {
            return Ok(m.clone());
        }
        let input = self.partial.input();
        let mut inputs = Vec::new();
        for partition in 0..input.output_partitioning().partition_count() {
            let rows = input.execute(partition, Arc::clone(context))?;
            let grouper = self
                .partial
                .grouper(partition, context, false, &self.metrics);
            inputs.push((rows, grouper));
        }
        let outputs = self.properties.partitioning.partition_count();
        let hash = self.hash.clone();
        let key_fields = self.partial.schema().fields()[..self.partial.groups.len()].to_vec();
        let m = async move {
            // Spawned when first polled, as a repartition spawns its inputs: on the
            // runtime that runs the query.
            let tasks = inputs
                .into_iter()
                .map(|(mut rows, mut grouper)| {
                    SpawnedTask::spawn(async move {
                        while let Some(batch) = rows.next().await {
                            grouper.update(&batch?)?;
                        }
                        Ok::<_, DataFusionError>((grouper.held, grouper.reservation))
                    })
                })
                .collect::<Vec<_>>();
            let mut grouped = Vec::with_capacity(tasks.len());
            for task in tasks {
                let held = task
                    .join_unwind()
                    .await
                    .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
                grouped.push(held);
            }
            Merged::new(grouped, key_fields, hash, outputs).map(Arc::new)
        }
        .map(|r| r.map_err(Arc::new))
        .boxed()
        .shared();
        *merging = Some(m.clone());
        Ok(m)
    }
}

/// Every group's values, split by the output partition that computes them.
struct Merged {
    parts: Vec<Mutex<Option<Part>>>,
    /// The memory the values take, held until the last partition is done.
    _reservations: Vec<MemoryReservation>,
}

/// One output partition's groups: their key columns and each aggregate's state.
struct Part {
    keys: Vec<ArrayRef>,
    states: Vec<Merge>,
}

/// One aggregate's state per group, gathered from the input partitions.
enum Merge {
    Counts(Vec<i64>),
    /// Per group, the values every input partition held.
    Values(Vec<Values>),
}

impl Merge {
    fn push_empty(&mut self) {
        match self {
            Merge::Counts(counts) => counts.push(0),
            Merge::Values(values) => values.push(Values::default()),
        }
    }

    /// The states of the groups `indices`, in that order.
    fn take(&mut self, indices: &UInt32Array) -> Merge {
        let indices = indices.values().iter().map(|&i| i as usize);
        match self {
            Merge::Counts(counts) => Merge::Counts(indices.map(|i| counts[i]).collect()),
            Merge::Values(values) => {
                Merge::Values(indices.map(|i| std::mem::take(&mut values[i])).collect())
            }
        }
    }
}

impl Merged {
    /// The groups of each input partition, merged by their strings and split the way
    /// the hash repartition of `hash` into `outputs` partitions splits them.
    fn new(
        grouped: Vec<(Groups, MemoryReservation)>,
        key_fields: Vec<Arc<Field>>,
        hash: Vec<Arc<dyn PhysicalExpr>>,
        outputs: usize,
    ) -> Result<Merged> {
        let mut reservations = Vec::with_capacity(grouped.len());
        let mut index = std::collections::HashMap::<Box<[u8]>, usize>::new();
        let mut keys: Vec<Vec<Option<Box<str>>>> = vec![Vec::new(); key_fields.len()];
        let mut states: Option<Vec<Merge>> = None;
        for (groups, reservation) in grouped {
            reservations.push(reservation);
            let states = states.get_or_insert_with(|| {
                groups
                    .states
                    .iter()
                    .map(|s| match s {
                        State::Counts(_) => Merge::Counts(Vec::new()),
                        _ => Merge::Values(Vec::new()),
                    })
                    .collect()
            });
            let mut columns = groups.keys;
            let mut to_merged = vec![0; groups.index.len()];
            for (key, group) in groups.index {
                let next = index.len();
                let merged = *index.entry(key).or_insert(next);
                if merged == next {
                    for (column, strings) in keys.iter_mut().zip(&mut columns) {
                        column.push(strings[group].take());
                    }
                    states.iter_mut().for_each(Merge::push_empty);
                }
                to_merged[group] = merged;
            }
            for (state, merge) in groups.states.into_iter().zip(states.iter_mut()) {
                match (state, merge) {
                    (State::Counts(counts), Merge::Counts(merged)) => {
                        for (group, n) in counts.into_iter().enumerate() {
                            merged[to_merged[group]] += n;
                        }
                    }
                    (State::Values(values), Merge::Values(merged)) => {
                        for (group, values) in values.into_iter().enumerate() {
                            merged[to_merged[group]].append(values);
                        }
                    }
                    _ => {
                        return Err(DataFusionError::Internal(
                            "GroupByViewSingleExec: a state of the wrong kind".to_owned(),
                        ))
                    }
                }
            }
        }
        let mut parts: Vec<Option<Part>> = (0..outputs).map(|_| None).collect();
        if let Some(mut states) = states.filter(|_| !index.is_empty()) {
            // The merged groups' keys and numbers, split by DataFusion's partitioner.
            let groups = index.len() as u32;
            let mut fields = key_fields;
            fields.push(Arc::new(Field::new("group", DataType::UInt32, false)));
            let columns = keys
                .into_iter()
                .map(|column| Arc::new(StringViewArray::from_iter(column)) as ArrayRef)
                .chain([Arc::new(UInt32Array::from_iter_values(0..groups)) as ArrayRef])
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            let mut partitioner =
                BatchPartitioner::new_hash_partitioner(hash, outputs, Time::new())?;
            partitioner.partition(batch, |output, batch| {
                let (numbers, key_columns) = batch.columns().split_last().ok_or_else(|| {
                    DataFusionError::Internal("GroupByViewSingleExec: no columns".to_owned())
                })?;
                let numbers = numbers.as_primitive::<UInt32Type>();
                let part = Part {
                    keys: key_columns.to_vec(),
                    states: states.iter_mut().map(|s| s.take(numbers)).collect(),
                };
                match parts.get_mut(output) {
                    Some(slot @ None) => {
                        *slot = Some(part);
                        Ok(())
                    }
                    _ => Err(DataFusionError::Internal(format!(
                        "GroupByViewSingleExec: partition {output} given twice or out of range"
                    ))),
                }
            })?;
        }
        Ok(Merged {
            parts: parts.into_iter().map(Mutex::new).collect(),
            _reservations: reservations,
        })
    }
}

impl Part {
    /// The final aggregate's rows for these groups.
    fn finish(self, finals: &[Final], schema: Arc<Schema>) -> Result<RecordBatch> {
        let mut columns = self.keys;
        for (state, result) in self.states.into_iter().zip(finals) {
            let column: ArrayRef = match (state, result) {
                (Merge::Counts(counts), Final::Count { scale }) => Arc::new(
                    // `sum` wraps on overflow, as DataFusion's does.
                    Int64Array::from_iter_values(
                        counts.into_iter().map(|n| n.wrapping_mul(*scale)),
                    ),
                ),
                (Merge::Values(values), Final::Percentile { p }) => Arc::new(
                    Float64Array::from_iter(values.iter().map(|values| values.percentile(*p))),
                ),
                _ => {
                    return Err(DataFusionError::Internal(
                        "GroupByViewSingleExec: a state of the wrong kind".to_owned(),
                    ))
                }
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

impl DisplayAs for GroupByViewSingleExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.partial.describe(self.name(), f)
    }
}

impl ExecutionPlan for GroupByViewSingleExec {
    fn name(&self) -> &str {
        "GroupByViewSingleExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.partial.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.partial.apply_to_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return Err(DataFusionError::Internal(
                "GroupByViewSingleExec takes one child".to_owned(),
            ));
        };
        Ok(Arc::new(GroupByViewSingleExec {
            partial: self.partial.with_input(input),
            hash: self.hash.clone(),
            finals: self.finals.clone(),
            properties: Arc::clone(&self.properties),
            merging: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let merging = self.merging(&context)?;
        let schema = self.schema();
        let finals = self.finals.clone();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let batch_size = context.session_config().batch_size().max(1);
        let out_schema = Arc::clone(&schema);
        let batches = futures::stream::once(async move {
            let merged = merging.await.map_err(DataFusionError::Shared)?;
            let part = merged
                .parts
                .get(partition)
                .and_then(|p| p.lock().unwrap_or_else(|e| e.into_inner()).take());
            let Some(part) = part else {
                return Ok(Vec::new());
            };
            let batch = {
                let _timer = metrics.elapsed_compute().timer();
                part.finish(&finals, out_schema)?
            };
            metrics.record_output(batch.num_rows());
            Ok::<_, DataFusionError>(
                (0..batch.num_rows())
                    .step_by(batch_size)
                    .map(|at| batch.slice(at, batch_size.min(batch.num_rows() - at)))
                    .collect(),
            )
        })
        .flat_map(|batches| {
            futures::stream::iter(match batches {
                Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
