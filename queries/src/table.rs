//! [`StoreTable`]: a DataFusion table over one table of the [`ParquetStore`].
//!
//! A scan takes a [`Snapshot`](swarmscope_sinks::store::Snapshot) of the store (files
//! plus rows not yet flushed, consistent with each other), drops the files whose
//! `date=/hour=` partition cannot match the query's time predicates, and unions a
//! Parquet scan of the rest (with row-group pruning by statistics) with the in-memory
//! rows.

use std::collections::HashSet;
use std::sync::Arc;

use crate::nested_views::{viewed, StoreFormat};
use async_trait::async_trait;
use chrono::DateTime;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions, TimestampNanosecondArray};
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::ScalarValue;
use datafusion::common::Statistics;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CachedFileMetadata;
use datafusion::execution::cache::{SchemaFingerprint, TableScopedPath};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_datasource::compute_all_files_statistics;
use futures::{stream, StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::{ParquetStore, StoredFile, RANDOM_ID_COLUMNS};

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
    /// The key of the schema the cached statistics of the files were read with.
    fingerprint: Arc<SchemaFingerprint>,
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
            fingerprint: Arc::new(SchemaFingerprint::from_schema(&schema)),
            schema: Arc::new(schema),
        }
    }

    /// The scan of `files` before projection and limit, planned from what the snapshot
    /// knows of each (where it is, its size, when it was written) instead of listing
    /// them, as a `ListingTable` does with a `head` of every file on every query (a
    /// request each on object storage). With `stop_after` rows (a limit without
    /// filters), files stop being added once their statistics hold as many.
    async fn file_scan(
        &self,
        state: &dyn Session,
        files: &[&StoredFile],
        format: &StoreFormat,
        stop_after: Option<usize>,
    ) -> Result<FileScanConfig> {
        let mut objects = Vec::with_capacity(files.len());
        let mut store_url = None;
        for file in files {
            let url = ListingTableUrl::parse(self.store.0.file_url(self.table, file))?;
            store_url.get_or_insert_with(|| url.object_store());
            objects.push(ObjectMeta {
                location: url.prefix().clone(),
                last_modified: DateTime::from_timestamp_millis(file.modified_ms)
                    .unwrap_or_default(),
                size: file.size,
                e_tag: None,
                version: None,
            });
        }
        let store_url = store_url.unwrap_or_else(ObjectStoreUrl::local_filesystem);
        let store = state.runtime_env().object_store(&store_url)?;
        let collect = state.config().collect_statistics();
        let concurrency = state
            .config_options()
            .execution
            .meta_fetch_concurrency
            .get();
        let mut statistics = stream::iter(objects.into_iter().map(|object| {
            let store = &store;
            async move {
                let statistics = if collect {
                    self.file_statistics(state, store, format, &object).await?
                } else {
                    Arc::new(Statistics::new_unknown(&self.schema))
                };
                Ok::<_, DataFusionError>(PartitionedFile::from(object).with_statistics(statistics))
            }
        }))
        .buffered(concurrency);
        let mut scanned = Vec::with_capacity(files.len());
        let mut rows = 0usize;
        while let Some(file) = statistics.try_next().await? {
            if let Some(Precision::Exact(n)) = file.statistics.as_ref().map(|s| s.num_rows) {
                rows = rows.saturating_add(n);
            }
            scanned.push(file);
            if stop_after.is_some_and(|limit| rows >= limit) {
                break;
            }
        }
        let left_out = scanned.len() < files.len();
        let groups = FileGroup::new(scanned).split_files(state.config().target_partitions());
        let (groups, statistics) =
            compute_all_files_statistics(groups, Arc::clone(&self.schema), collect, left_out)?;
        let source = format.file_source(TableSchema::from(Arc::clone(&self.schema)));
        Ok(FileScanConfigBuilder::new(store_url, source)
            .with_file_groups(groups)
            .with_statistics(statistics)
            .build())
    }

    /// A file's statistics, from the session's cache (see [`crate::statistics`]) or its
    /// footer. Files are written once under unique names, so an entry is never stale.
    async fn file_statistics(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        format: &StoreFormat,
        object: &ObjectMeta,
    ) -> Result<Arc<Statistics>> {
        let cache = state.runtime_env().cache_manager.get_file_statistic_cache();
        let key = TableScopedPath {
            table: None,
            path: object.location.clone(),
        };
        if let Some(cached) = cache.as_ref().and_then(|c| c.get(&key)) {
            if cached.is_valid_for(object, &self.fingerprint) {
                return Ok(cached.statistics);
            }
        }
        let statistics = Arc::new(
            format
                .infer_stats(state, store, Arc::clone(&self.schema), object)
                .await?,
        );
        if let Some(cache) = cache {
            cache.put(
                &key,
                CachedFileMetadata::new(
                    object.clone(),
                    Arc::clone(&self.fingerprint),
                    Arc::clone(&statistics),
                    None,
                ),
            );
        }
        Ok(statistics)
    }
}

/// Whether a scan evaluates `filters` while it decodes (late materialisation: the
/// columns only the output needs are decoded for the rows the filters keep) rather
/// than decoding every column of the rows its pruning kept and filtering after.
///
/// Selecting rows costs the reader per batch (a selection built from the filters'
/// result, a mask or skips in every other column), which pays where it spares
/// decoding a costly column: a map or list (every entry's levels and strings) or a
/// random id (a plain-encoded string of 16-32 bytes a row), or where a filter
/// compares a random id (looking one trace up keeps a handful of rows of a row group).
/// Filters on the cheap columns (times, durations, the dictionary-encoded names and
/// statuses) over cheap columns run faster decoded whole and filtered after (the top
/// error operations of the last hour in `benches/e2e.sh`).
fn late_materialization(projected: &Schema, filters: &[Expr]) -> bool {
    if filters.is_empty() {
        return false;
    }
    let costly = |name: &str| RANDOM_ID_COLUMNS.contains(&name);
    let mut filtered = HashSet::new();
    for filter in filters {
        filtered.extend(filter.column_refs().into_iter().map(|c| c.name.as_str()));
    }
    filtered.iter().any(|name| costly(name))
        || projected.fields().iter().any(|f| {
            !filtered.contains(f.name().as_str()) && (f.data_type().is_nested() || costly(f.name()))
        })
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
            let mut parquet = state.table_options().parquet.clone();
            parquet.global.pushdown_filters |= late_materialization(&projected, filters);
            // A filter evaluated while decoding selects rows for the other columns.
            // Left to choose, the reader decodes every row and drops the unselected
            // ones when they are scattered (which suits flat columns); for a map or a
            // list that decodes every row's entries and copies their strings, where
            // skipping a row only reads its levels.
            let projects_nested = projected.fields().iter().any(|f| f.data_type().is_nested());
            if projects_nested && !filters.is_empty() {
                parquet.global.force_filter_selections = true;
            }
            let format = StoreFormat(ParquetFormat::default().with_options(parquet));
            let stop_after = if filters.is_empty() { limit } else { None };
            let scan = self.file_scan(state, &files, &format, stop_after).await?;
            let scan = FileScanConfigBuilder::from(scan)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(format.create_physical_plan(state, scan).await?);
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
    use datafusion::arrow::array::Int64Array;
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::SessionContext;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, PutMultipartOptions,
        PutOptions, PutPayload, PutResult,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use swarmscope_processors::{convert, otlp_json};
    use swarmscope_sinks::store::StorageConfig;

    /// The local file system, counting the lookups of objects' metadata (a `head`, or
    /// a listing) that a scan asks of it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: LocalFileSystem,
        lookups: AtomicUsize,
        reads: AtomicUsize,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            let counter = if options.head {
                &self.lookups
            } else {
                &self.reads
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    async fn count(ctx: &SessionContext, sql: &str) -> i64 {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        let column = batches[0].column(0).as_any().downcast_ref::<Int64Array>();
        column.expect("a count").value(0)
    }

    #[tokio::test]
    async fn scans_take_the_files_from_the_log_without_looking_them_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ParquetStore::open(StorageConfig {
            data_dir: dir.path().to_owned(),
            // The example's spans are from 2018.
            retention_hours: 1_000_000,
            ..StorageConfig::default()
        })
        .await
        .expect("store");
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/otlp-json/trace.json"
        );
        let request =
            otlp_json::decode_traces(&std::fs::read(example).expect("example")).expect("decode");
        let mut spans = 0;
        let mut per_file = 0;
        for _ in 0..3 {
            let batch = convert::spans_from_otlp(&request).expect("convert").batch;
            per_file = batch.num_rows();
            spans += per_file;
            store.append(Table::SPANS, batch).await.expect("append");
            store.flush().await.expect("flush");
        }
        assert_eq!(
            store.snapshot(Table::SPANS).expect("snapshot").files.len(),
            3
        );

        let ctx = SessionContext::new();
        let files = Arc::new(Counting::default());
        ctx.register_object_store(ObjectStoreUrl::local_filesystem().as_ref(), files.clone());
        ctx.register_table(
            "spans",
            Arc::new(StoreTable::new(store.clone(), Table::SPANS)),
        )
        .expect("register");
        assert_eq!(
            count(&ctx, "SELECT count(*) FROM spans").await,
            spans as i64
        );
        assert_eq!(
            count(&ctx, "SELECT count(*) FROM spans WHERE duration_ns >= 0").await,
            spans as i64
        );
        // The files were read (their footers, then their pages), never looked up.
        assert!(files.reads.load(Ordering::Relaxed) > 0);
        assert_eq!(files.lookups.load(Ordering::Relaxed), 0);

        // A limit without filters stops adding files once their rows are enough.
        let plan = ctx
            .sql(&format!("SELECT * FROM spans LIMIT {per_file}"))
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert_eq!(shown.matches(".parquet").count(), 1, "{shown}");
        let rows = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .expect("run");
        assert_eq!(
            rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
            per_file
        );
        let more = format!(
            "SELECT count(*) FROM (SELECT * FROM spans LIMIT {})",
            per_file + 1
        );
        assert_eq!(count(&ctx, &more).await, per_file as i64 + 1);
    }

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
