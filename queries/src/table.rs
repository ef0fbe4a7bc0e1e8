//! [`StoreTable`]: a DataFusion table over one table of the [`ParquetStore`].
//!
//! A scan takes a [`Snapshot`](swarmscope_sinks::store::Snapshot) of the store (files
//! plus rows not yet flushed, consistent with each other), drops the files whose
//! `date=/hour=` partition cannot match the query's time predicates, and unions a
//! Parquet scan of the rest (with row-group pruning by statistics) with the in-memory
//! rows.

use std::sync::Arc;

use crate::nested_views::{viewed, StoreFormat};
use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions, TimestampNanosecondArray};
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::{ParquetStore, StoredFile};

/// One stored table, as DataFusion sees it: the stored schema
/// ([`Table::stored_schema`]: microsecond timestamps) with its strings as `Utf8View`,
/// DataFusion's default for Parquet strings, nested ones included but for map keys
/// (see [`crate::nested_views`]).
/// [`QueryEngine`](crate::QueryEngine) answers with plain `Utf8` again, so results
/// keep the stored types.
#[derive(Debug)]
pub struct StoreTable {
    store: StoreHandle,
    table: Table,
    schema: SchemaRef,
}

/// `ParquetStore` has no `Debug`; this wrapper gives `StoreTable` one.
#[derive(Clone)]
struct StoreHandle(ParquetStore);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParquetStore({})", self.0.data_dir().display())
    }
}

impl StoreTable {
    pub fn new(store: ParquetStore, table: Table) -> StoreTable {
        let stored = table.stored_schema();
        let fields = stored
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_data_type(viewed(f.data_type()))));
        let schema =
            Schema::new_with_metadata(fields.collect::<Fields>(), stored.metadata().clone());
        StoreTable {
            store: StoreHandle(store),
            table,
            schema: Arc::new(schema),
        }
    }
}

/// `batch` with its columns cast to the types of `schema`, which has as many columns.
pub(crate) fn cast_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for partition and row-group pruning; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self
            .store
            .0
            .snapshot(self.table)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let range = TimeRange::from_filters(self.table.time_column(), filters);
        let files: Vec<&StoredFile> = snapshot
            .files
            .iter()
            .filter(|f| range.overlaps(f.time_range()))
            .collect();
        let schema = self.schema();
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(&schema),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let urls = files
                .iter()
                .map(|f| ListingTableUrl::parse(self.store.0.file_url(self.table, f)))
                .collect::<Result<Vec<_>>>()?;
            let mut parquet = state.table_options().parquet.clone();
            // A filter evaluated while decoding selects rows for the other columns.
            // Left to choose, the reader decodes every row and drops the unselected
            // ones when they are scattered (which suits flat columns); for a map or a
            // list that decodes every row's entries and copies their strings, where
            // skipping a row only reads its levels.
            let projects_nested = projected.fields().iter().any(|f| f.data_type().is_nested());
            if projects_nested && !filters.is_empty() {
                parquet.global.force_filter_selections = true;
            }
            let format = ParquetFormat::default().with_options(parquet);
            let options =
                ListingOptions::new(Arc::new(StoreFormat(format))).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(Arc::clone(&schema));
            // Planning reads each file's statistics (for pruning and for answers such
            // as `count(*)`); the session's cache keeps them across queries, keyed by
            // path, size and modification time. Files are written once under unique
            // names, so an entry is never stale.
            let listing = ListingTable::try_new(config)?
                .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache());
            inputs.push(listing.scan(state, projection, filters, limit).await?);
        }
        // Buffered rows outside the query's time range are left out before they are
        // cast, as partitions are: a query for the last minute does not cast every
        // buffered row of an older backfill.
        let column = self.table.time_column();
        let buffered: Vec<&RecordBatch> = snapshot
            .batches
            .iter()
            .filter(|b| batch_time_range(b, column).is_none_or(|r| range.overlaps(r)))
            .collect();
        if !buffered.is_empty() {
            let batches = buffered
                .into_iter()
                .map(|b| {
                    let b = self
                        .table
                        .to_stored_projected(b, projection.map(Vec::as_slice))?;
                    cast_batch(&b, &projected)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let memory = MemTable::try_new(Arc::clone(&projected), vec![batches])?;
            inputs.push(memory.scan(state, None, filters, limit).await?);
        }
        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// The nanosecond range `[min, max + 1)` of `batch`'s time `column`; `None` if it has
/// no such column or no non-null time.
fn batch_time_range(batch: &RecordBatch, column: &str) -> Option<(i64, i64)> {
    let times = batch
        .column_by_name(column)?
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()?;
    Some((min(times)?, max(times)?.saturating_add(1)))
}

/// The nanosecond bounds the filters put on the time column: `[lo, hi]`, inclusive.
#[derive(Debug, PartialEq)]
struct TimeRange {
    lo: i64,
    hi: i64,
}

impl TimeRange {
    fn from_filters(column: &str, filters: &[Expr]) -> TimeRange {
        let mut range = TimeRange {
            lo: i64::MIN,
            hi: i64::MAX,
        };
        for f in filters {
            range.narrow(column, f);
        }
        range
    }

    fn narrow(&mut self, column: &str, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.narrow(column, left);
                    self.narrow(column, right);
                    return;
                }
                let (op, value) = match (is_column(left, column), is_column(right, column)) {
                    (true, false) => (*op, nanos_literal(right)),
                    (false, true) => (op.swap().unwrap_or(*op), nanos_literal(left)),
                    _ => return,
                };
                let Some(v) = value else { return };
                match op {
                    Operator::Eq => {
                        self.lo = self.lo.max(v);
                        self.hi = self.hi.min(v);
                    }
                    Operator::GtEq => self.lo = self.lo.max(v),
                    Operator::Gt => self.lo = self.lo.max(v.saturating_add(1)),
                    Operator::LtEq => self.hi = self.hi.min(v),
                    Operator::Lt => self.hi = self.hi.min(v.saturating_sub(1)),
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr, column) => {
                if let Some(lo) = nanos_literal(low) {
                    self.lo = self.lo.max(lo);
                }
                if let Some(hi) = nanos_literal(high) {
                    self.hi = self.hi.min(hi);
                }
            }
            _ => {}
        }
    }

    /// Whether a partition covering `[start, end)` can hold a matching row.
    fn overlaps(&self, (start, end): (i64, i64)) -> bool {
        self.lo < end && self.hi >= start
    }
}

fn is_column(expr: &Expr, name: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == name,
        Expr::Cast(c) => is_column(&c.expr, name),
        _ => false,
    }
}

/// A timestamp literal in nanoseconds.
fn nanos_literal(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_predicates_bound_the_range() {
        let filters = [
            col("start_time").gt_eq(ts(100)),
            ts(200).gt(col("start_time")),
        ];
        let r = TimeRange::from_filters("start_time", &filters);
        assert_eq!(r, TimeRange { lo: 100, hi: 199 });
        assert!(r.overlaps((0, 101)));
        assert!(!r.overlaps((0, 100)));
        // A partition starting exactly at an exclusive upper bound holds no match.
        assert!(!r.overlaps((200, 300)));
        assert!(r.overlaps((199, 300)));
        let inclusive = [
            col("start_time").lt_eq(ts(200)),
            col("start_time").gt(ts(99)),
        ];
        assert_eq!(
            TimeRange::from_filters("start_time", &inclusive),
            TimeRange { lo: 100, hi: 200 }
        );
    }

    #[test]
    fn other_columns_and_operators_do_not_prune() {
        let filters = [col("end_time").gt(ts(100)), col("start_time").not_eq(ts(5))];
        let r = TimeRange::from_filters("start_time", &filters);
        assert_eq!(
            r,
            TimeRange {
                lo: i64::MIN,
                hi: i64::MAX
            }
        );
        let between = [col("time").between(ts(10), ts(20))];
        assert_eq!(
            TimeRange::from_filters("time", &between),
            TimeRange { lo: 10, hi: 20 }
        );
    }
}
