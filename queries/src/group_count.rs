//! `count` grouped by one string column, counted by view before it is hashed as a string.
//!
//! The commonest dashboard query (`SELECT service_name, count(*) FROM spans GROUP BY
//! 1`) spends most of its time in DataFusion's hash table for string groups: every row
//! hashes its string and compares it with the group's. The Parquet reader decodes a
//! dictionary-encoded column into views that point into the page's dictionary, so
//! within one batch equal values have equal 16-byte views. [`GroupCountExec`] counts
//! each batch by view (one integer hash per row, none on a run of equal views) and
//! looks up only each distinct view's string. It stays correct for any input: views of
//! equal strings that differ (plain-encoded pages, rows cast from memory) become
//! separate local groups that meet again in the string map.
//!
//! [`GroupCountRule`] puts it in place of a partial [`AggregateExec`] that groups by
//! exactly one `Utf8View` expression and computes nothing but `count` (of `*` or of any
//! one expression, without `DISTINCT` or `FILTER`) and `sum` of an integer constant
//! (`sum(1)`, how BI tools count records: the rows counted times the constant) over
//! unordered input. Its output is the partial aggregate's (the group and each
//! aggregate's `Int64` state), so the final aggregate above it is unchanged. At most [`MAX_GROUPS`] groups are held: past that a
//! partial result is emitted and counting starts afresh, as a partial aggregate may.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringViewArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
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
use futures::StreamExt;

/// Groups held before a partial result is emitted.
pub const MAX_GROUPS: usize = 1 << 16;

/// Replaces eligible partial aggregates with [`GroupCountExec`]. Runs after
/// DataFusion's own rules, when distribution and ordering are settled.
#[derive(Debug, Default)]
pub struct GroupCountRule;

impl PhysicalOptimizerRule for GroupCountRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let replaced = node
                .downcast_ref::<AggregateExec>()
                .and_then(GroupCountExec::replacing);
            Ok(match replaced {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "group_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial `count` aggregate grouped by one string expression; see the module.
#[derive(Debug)]
pub struct GroupCountExec {
    input: Arc<dyn ExecutionPlan>,
    /// The group expression and its output name.
    group: (Arc<dyn PhysicalExpr>, String),
    /// Each count's argument and its name, in output order.
    counts: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// What each count is multiplied by: 1 for `count`, `k` for `sum(k)`.
    scales: Vec<i64>,
    /// The replaced aggregate's: output schema, partitioning, emission.
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl GroupCountExec {
    /// The exec that computes what `agg` does, if `agg` is one it can replace.
    fn replacing(agg: &AggregateExec) -> Option<GroupCountExec> {
        let group_by = agg.group_expr();
        let input_schema = agg.input_schema();
        let eligible = *agg.mode() == AggregateMode::Partial
            && *agg.input_order_mode() == InputOrderMode::Linear
            && group_by.is_single()
            && group_by.expr().len() == 1
            && agg.filter_expr().iter().all(Option::is_none);
        if !eligible {
            return None;
        }
        let scales = agg
            .aggr_expr()
            .iter()
            .map(|a| scale_of(a))
            .collect::<Option<Vec<i64>>>()?;
        let (group, name) = &group_by.expr()[0];
        if group.data_type(&input_schema).ok()? != DataType::Utf8View {
            return None;
        }
        // The partial output: the group, then one Int64 state per count.
        let schema = agg.schema();
        let states_are_counts = schema.fields().len() == 1 + agg.aggr_expr().len()
            && schema.fields()[1..]
                .iter()
                .all(|f| f.data_type() == &DataType::Int64);
        if !states_are_counts {
            return None;
        }
        let counts = agg
            .aggr_expr()
            .iter()
            .map(|a| (Arc::clone(&a.expressions()[0]), a.name().to_owned()))
            .collect();
        Some(GroupCountExec {
            input: Arc::clone(agg.input()),
            group: (Arc::clone(group), name.clone()),
            counts,
            scales,
            properties: Arc::clone(agg.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// What a count of rows is multiplied by to give aggregate `a`, if it is one: `count`
/// of anything (rows where its argument is not null), or `sum` of a constant integer.
fn scale_of(a: &AggregateFunctionExpr) -> Option<i64> {
    let [arg] = a.expressions().try_into().ok()?;
    if a.is_distinct() {
        return None;
    }
    match a.fun().name() {
        "count" => Some(1),
        "sum" => match arg.downcast_ref::<Literal>()?.value() {
            ScalarValue::Int64(Some(k)) => Some(*k),
            _ => None,
        },
        _ => None,
    }
}

impl DisplayAs for GroupCountExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let counts = self
            .counts
            .iter()
            .map(|(_, name)| name.as_str())
            .collect::<Vec<_>>();
        write!(
            f,
            "GroupCountExec: gby=[{} as {}], aggr=[{}]",
            self.group.0,
            self.group.1,
            counts.join(", ")
        )
    }
}

impl ExecutionPlan for GroupCountExec {
    fn name(&self) -> &str {
        "GroupCountExec"
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
        apply_expression_roots(
            std::iter::once(&self.group.0).chain(self.counts.iter().map(|(e, _)| e)),
            f,
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return Err(DataFusionError::Internal(
                "GroupCountExec takes one child".to_owned(),
            ));
        };
        Ok(Arc::new(GroupCountExec {
            input,
            group: self.group.clone(),
            counts: self.counts.clone(),
            scales: self.scales.clone(),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let state = Counter {
            group: Arc::clone(&self.group.0),
            counts: self.counts.iter().map(|(e, _)| Arc::clone(e)).collect(),
            scales: self.scales.clone(),
            schema: Arc::clone(&schema),
            metrics: BaselineMetrics::new(&self.metrics, partition),
            groups: Groups::new(self.counts.len()),
            batch: BatchGroups::default(),
        };
        let batches = futures::stream::unfold(Some((input, state)), |state| async move {
            let (mut input, mut counter) = state?;
            loop {
                match input.next().await {
                    Some(Ok(batch)) => {
                        if let Err(e) = counter.update(&batch) {
                            return Some((Err(e), None));
                        }
                        if counter.groups.len() >= MAX_GROUPS {
                            let out = counter.emit();
                            return Some((out, Some((input, counter))));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None if counter.groups.len() == 0 => return None,
                    None => return Some((counter.emit(), None)),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's counting.
struct Counter {
    group: Arc<dyn PhysicalExpr>,
    counts: Vec<Arc<dyn PhysicalExpr>>,
    scales: Vec<i64>,
    schema: SchemaRef,
    metrics: BaselineMetrics,
    groups: Groups,
    /// Scratch for one batch, kept for its allocations.
    batch: BatchGroups,
}

/// The groups of the rows counted so far: string → group number, and per count the
/// counts by group number.
struct Groups {
    index: HashMap<Box<str>, usize>,
    null: Option<usize>,
    keys: Vec<Option<Box<str>>>,
    /// `counts[c][g]`: count `c` of group `g`.
    counts: Vec<Vec<i64>>,
}

impl Groups {
    fn new(counts: usize) -> Groups {
        Groups {
            index: HashMap::new(),
            null: None,
            keys: Vec::new(),
            counts: vec![Vec::new(); counts],
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The group number of `key`, a new group if it has none yet.
    fn group_of(&mut self, key: Option<&str>) -> usize {
        let known = match key {
            Some(key) => self.index.get(key).copied(),
            None => self.null,
        };
        if let Some(group) = known {
            return group;
        }
        let group = self.keys.len();
        match key {
            Some(key) => {
                self.index.insert(key.into(), group);
            }
            None => self.null = Some(group),
        }
        self.keys.push(key.map(Box::from));
        for counts in &mut self.counts {
            counts.push(0);
        }
        group
    }
}

/// A view that no string has: its length field says 4 GiB - 1, more than a view's
/// buffer can hold. It stands for null in the per-batch map.
const NULL_VIEW: u128 = u128::MAX;

/// The groups of one batch, by view.
#[derive(Default)]
struct BatchGroups {
    by_view: HashMap<u128, u32, foldhash::fast::FixedState>,
    /// Per local group: the first row that has it.
    first_row: Vec<u32>,
    /// Per row: its local group.
    local: Vec<u32>,
    /// Per local group: rows counted (scratch for one count at a time).
    tally: Vec<i64>,
}

impl BatchGroups {
    fn assign(&mut self, keys: &StringViewArray) {
        self.by_view.clear();
        self.first_row.clear();
        self.local.clear();
        let nulls = keys.nulls().filter(|n| n.null_count() > 0);
        let mut previous: Option<(u128, u32)> = None;
        for (row, view) in keys.views().iter().enumerate() {
            let view = match nulls {
                Some(nulls) if nulls.is_null(row) => NULL_VIEW,
                _ => *view,
            };
            let local = match previous {
                Some((v, local)) if v == view => local,
                _ => {
                    let next = self.first_row.len() as u32;
                    let local = *self.by_view.entry(view).or_insert(next);
                    if local == next {
                        self.first_row.push(row as u32);
                    }
                    previous = Some((view, local));
                    local
                }
            };
            self.local.push(local);
        }
    }
}

impl Counter {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let _timer = self.metrics.elapsed_compute().timer();
        let rows = batch.num_rows();
        let keys = self.group.evaluate(batch)?.into_array(rows)?;
        let keys = keys.as_string_view_opt().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "GroupCountExec: group is {}, not Utf8View",
                keys.data_type()
            ))
        })?;
        self.batch.assign(keys);
        let globals = self
            .batch
            .first_row
            .iter()
            .map(|&row| {
                let row = row as usize;
                self.groups
                    .group_of(keys.is_valid(row).then(|| keys.value(row)))
            })
            .collect::<Vec<_>>();
        for (c, arg) in self.counts.iter().enumerate() {
            let tally = &mut self.batch.tally;
            tally.clear();
            tally.resize(globals.len(), 0);
            match arg.evaluate(batch)? {
                ColumnarValue::Scalar(value) if value.is_null() => continue,
                ColumnarValue::Scalar(_) => {
                    for &local in &self.batch.local {
                        tally[local as usize] += 1;
                    }
                }
                ColumnarValue::Array(values) => count_valid(&values, &self.batch.local, tally),
            }
            for (local, &global) in globals.iter().enumerate() {
                self.groups.counts[c][global] += tally[local];
            }
        }
        Ok(())
    }

    /// The groups counted so far as one partial-aggregate batch; counting restarts.
    fn emit(&mut self) -> Result<RecordBatch> {
        let groups = std::mem::replace(&mut self.groups, Groups::new(self.counts.len()));
        let keys: ArrayRef = Arc::new(StringViewArray::from_iter(groups.keys));
        let columns = std::iter::once(keys)
            .chain(groups.counts.into_iter().zip(&self.scales).map(|(c, &k)| {
                // `sum` wraps on overflow, as DataFusion's does.
                let values = c.into_iter().map(|n| n.wrapping_mul(k));
                Arc::new(Int64Array::from_iter_values(values)) as ArrayRef
            }))
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.metrics.record_output(batch.num_rows());
        Ok(batch)
    }
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
        _ => {
            for &l in local {
                tally[l as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    fn context(with_rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(4);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(GroupCountRule));
        }
        SessionContext::new_with_state(builder.build())
    }

    /// `rows` rows: `key` cycling through `keys` (None is null), `value` null on every
    /// third row, `n` a row number. Strings as `Utf8View` (how the store's tables scan
    /// them) or as `Utf8`.
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
        let value = (0..rows)
            .map(|r| (r % 3 != 0).then(|| format!("v{r}")))
            .collect();
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
            Field::new("value", string_type, true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(schema, vec![string(key), string(value), Arc::new(n)]).unwrap()
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

    const COUNTED: [&str; 7] = [
        "SELECT key, count(*) FROM t GROUP BY key",
        "SELECT key, count(value), count(1) AS ones, count(key) FROM t GROUP BY key",
        "SELECT upper(key) AS k, count(*) FROM t WHERE n % 2 = 0 GROUP BY upper(key)",
        "SELECT count(*) AS c FROM t GROUP BY key HAVING count(*) > 1",
        "SELECT key, count(NULL) FROM t GROUP BY key",
        "SELECT key, sum(1) FROM t GROUP BY key",
        "SELECT key, sum(-3) AS s, count(value), sum(9223372036854775807) FROM t GROUP BY key",
    ];
    /// Not counts or constant sums alone, or not one group: DataFusion's aggregate
    /// runs these.
    const NOT_REPLACED: [&str; 5] = [
        "SELECT key, sum(n) FROM t GROUP BY key",
        "SELECT key, sum(1.5) FROM t GROUP BY key",
        "SELECT key, count(*), min(n) FROM t GROUP BY key",
        "SELECT key, value, count(*) FROM t GROUP BY key, value",
        "SELECT sum(1) FROM t WHERE n < 0",
    ];
    /// DataFusion plans these as an aggregate over a group by (key, value), or key
    /// alone for a constant, which the exec may run; either way the answer must not
    /// change.
    const DISTINCT: [&str; 2] = [
        "SELECT key, count(DISTINCT value) FROM t GROUP BY key",
        "SELECT key, sum(DISTINCT 2) FROM t GROUP BY key",
    ];

    /// Every query answers as DataFusion's own aggregate does; the eligible ones run
    /// `GroupCountExec`, the others do not.
    async fn check_against_datafusion(register: impl Fn(&SessionContext)) {
        let (plain, counted) = (context(false), context(true));
        register(&plain);
        register(&counted);
        for sql in COUNTED {
            assert!(
                plan(&counted, sql).await.contains("GroupCountExec"),
                "{sql}"
            );
        }
        for sql in NOT_REPLACED {
            assert!(
                !plan(&counted, sql).await.contains("GroupCountExec"),
                "{sql}"
            );
        }
        for sql in COUNTED.iter().chain(&NOT_REPLACED).chain(&DISTINCT) {
            let expected = sorted_result(&plain, sql).await;
            // A table of groups, but for the sum over no rows: one NULL.
            let rows = if sql.contains("n < 0") { 5 } else { 10 };
            assert!(expected.len() >= rows, "{sql}: {expected:?}");
            assert_eq!(sorted_result(&counted, sql).await, expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn counts_views_built_row_by_row_as_datafusion_does() {
        let keys = keys(23);
        check_against_datafusion(|ctx| memory_table(ctx, partitions(&keys, true))).await;
    }

    /// Parquet's dictionary pages decode into views shared by equal values: the case
    /// the exec is fast for.
    #[tokio::test]
    async fn counts_dictionary_decoded_parquet_as_datafusion_does() {
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
        assert!(plan(&counted, sql).await.contains("GroupCountExec"));
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
    }

    #[tokio::test]
    async fn utf8_groups_are_left_to_datafusion() {
        let ctx = context(true);
        memory_table(&ctx, partitions(&keys(23), false));
        let sql = "SELECT key, count(*) FROM t GROUP BY key";
        assert!(!plan(&ctx, sql).await.contains("GroupCountExec"));
    }
}
