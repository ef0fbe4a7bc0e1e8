//! The read-only SQL sandbox.
//!
//! Every statement is planned, then checked before anything runs: DDL (`CREATE`,
//! `DROP`, `CREATE EXTERNAL TABLE`), DML (`INSERT`, `UPDATE`, `DELETE`, `COPY`) and
//! statements (`SET`, transactions) are refused. The session has no URL tables and no
//! file-reading table functions, so a query reads nothing but the stored tables.
//!
//! Queries run on their own threads ([`Executor`]), at most
//! `query.max_concurrent` at once (the rest wait up to `query.queue_timeout_ms` for a
//! turn), each under `query.timeout_ms`, all sharing `query.memory_limit_mb`. A query
//! whose caller stops waiting (timeout, hang-up, [`QueryEngine::close`]) is cancelled.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, DEFAULT_FILE_STATISTICS_MEMORY_LIMIT,
};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::ParquetStore;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::cooperative::CooperativeJoins;
use crate::group_by_view::GroupByViewRule;
use crate::nested_views::MapKeyLiterals;
use crate::statistics::FlatStatistics;
use crate::table::{cast_batch, StoreTable};
use crate::{Error, QueryConfig, Result};
use swarmscope_sinks::executor::{Executor, QUERY_NICE};

/// The outcome of a query: its schema (also when there are no rows) and its rows.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// A table and its schema, for `GET /api/v1/tables`.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: &'static str,
    pub schema: SchemaRef,
}

/// SQL over a [`ParquetStore`]. Cheap to share behind an `Arc`.
pub struct QueryEngine {
    store: ParquetStore,
    ctx: SessionContext,
    config: QueryConfig,
    options: SQLOptions,
    executor: Executor,
    /// The views registered over the tables, for [`QueryEngine::tables`].
    views: std::sync::Mutex<Vec<TableInfo>>,
    /// One permit per query allowed to run at once.
    slots: Arc<Semaphore>,
    /// `true` once [`QueryEngine::close`] was called.
    closing: watch::Sender<bool>,
    metrics: QueryMetrics,
}

/// Queries answered, by outcome, and how long they took.
#[derive(Clone)]
pub struct QueryMetrics {
    pub queries: prometheus::IntCounterVec,
    pub duration: prometheus::Histogram,
    /// Queries waiting for a turn or running now.
    pub running: prometheus::IntGauge,
}

impl QueryMetrics {
    fn new() -> QueryMetrics {
        QueryMetrics {
            queries: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "swarmscope_queries_total",
                    "SQL queries, by outcome (ok, invalid, refused, timeout, busy, error).",
                ),
                &["outcome"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            duration: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "swarmscope_query_duration_seconds",
                    "How long a SQL query took, its wait for a turn included.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 17).unwrap_or_default()),
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            running: prometheus::IntGauge::new(
                "swarmscope_queries_running",
                "SQL queries waiting for a turn or running now.",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
        }
    }

    /// Everything to register with a registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.queries.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.running.clone()),
        ]
    }
}

/// Counts a query as running while it lives, however it ends (a cancelled query's
/// future is dropped).
struct Running(prometheus::IntGauge);

impl Running {
    fn start(gauge: &prometheus::IntGauge) -> Running {
        gauge.inc();
        Running(gauge.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl QueryEngine {
    pub fn new(store: ParquetStore, config: QueryConfig) -> Result<QueryEngine> {
        config.validate()?;
        let caches = CacheManagerConfig::default().with_file_statistics_cache(Some(Arc::new(
            FlatStatistics::new(DEFAULT_FILE_STATISTICS_MEMORY_LIMIT),
        )));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_mb.saturating_mul(1024 * 1024), 1.0)
            .with_cache_manager(caches)
            .build_arc()
            .map_err(Error::from_datafusion)?;
        if let Some(remote) = store.remote() {
            // The scans of tables on object storage read `s3://bucket/...` URLs.
            runtime.register_object_store(&remote.bucket_url(), remote.store());
        }
        // Each scan chooses whether its filters are evaluated while Parquet is
        // decoded (late materialisation, see `table::late_materialization`): a query
        // for one trace decodes the other columns of its rows only. Where they are,
        // the cheapest filter runs first.
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("swarmscope", "public")
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let mut state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(GroupByViewRule))
            .with_physical_optimizer_rule(Arc::new(CooperativeJoins))
            .build();
        state
            .register_function_rewrite(Arc::new(MapKeyLiterals))
            .map_err(Error::from_datafusion)?;
        let ctx = SessionContext::new_with_state(state);
        for &table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(StoreTable::new(store.clone(), table)),
            )
            .map_err(Error::from_datafusion)?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let executor = Executor::new("query", config.threads, QUERY_NICE)
            .map_err(|e| Error::Internal(format!("cannot start the query threads: {e}")))?;
        Ok(QueryEngine {
            store,
            ctx,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            options,
            executor,
            views: std::sync::Mutex::new(Vec::new()),
            closing: watch::Sender::new(false),
            metrics: QueryMetrics::new(),
        })
    }

    /// Cancels the running queries and refuses new ones (on shutdown): their callers
    /// get [`Error::ShuttingDown`] at once, whatever their plans are doing.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.slots.close();
    }

    /// The stored tables and the views over them, with their schemas.
    pub fn tables(&self) -> Vec<TableInfo> {
        let mut all: Vec<TableInfo> = Table::ALL
            .iter()
            .map(|t| TableInfo {
                name: t.name(),
                schema: t.stored_schema(),
            })
            .collect();
        all.extend(
            self.views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    /// Adds what the analytics read at query time: the `genai_cost` and
    /// `genai_price_model` functions over their price table, then their views.
    pub async fn register_analytics(
        &self,
        analytics: &swarmscope_processors::analytics::Analytics,
    ) -> Result<()> {
        for udf in crate::genai::functions(analytics.genai.prices().clone()) {
            self.ctx.register_udf(udf);
        }
        for (name, sql) in analytics.views() {
            self.register_view(name, &sql)
                .await
                .map_err(|e| Error::Internal(format!("the {name} view does not plan: {e}")))?;
        }
        Ok(())
    }

    /// Adds the view `name`, defined by the query `sql` over the tables (the derived
    /// analytics that are best computed from the stored history at read time).
    pub async fn register_view(&self, name: &'static str, sql: &str) -> Result<()> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(Error::from_datafusion)?;
        let schema = plain_schema(plan.schema().inner());
        self.ctx
            .register_table(
                name,
                Arc::new(datafusion::datasource::ViewTable::new(
                    plan,
                    Some(sql.to_owned()),
                )),
            )
            .map_err(Error::from_datafusion)?;
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TableInfo { name, schema });
        Ok(())
    }

    /// Runs one read-only statement on the query threads: waits for a turn, then for
    /// the answer, under `query.timeout_ms`. Dropping the future cancels the query.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let started = std::time::Instant::now();
        let _running = Running::start(&self.metrics.running);
        let result = self.run_sql(sql).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Invalid(_)) => "invalid",
            Err(Error::Refused(_)) => "refused",
            Err(Error::Timeout(_)) => "timeout",
            Err(Error::Busy { .. }) => "busy",
            Err(_) => "error",
        };
        self.metrics.queries.with_label_values(&[outcome]).inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The query engine's metrics, to register with the registry `/metrics` serves.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    async fn run_sql(&self, sql: &str) -> Result<QueryResult> {
        let mut closing = self.closing.subscribe();
        let _slot = self.slot().await?;
        let query = self.executor.spawn(run(
            self.ctx.clone(),
            self.store.clone(),
            self.options,
            sql.to_owned(),
        ));
        tokio::select! {
            answer = tokio::time::timeout(self.config.timeout(), query) => match answer {
                Ok(Ok(result)) => result,
                Ok(Err(failed)) => Err(Error::Internal(failed.to_string())),
                Err(_elapsed) => Err(Error::Timeout(self.config.timeout_ms)),
            },
            _ = closing.wait_for(|closed| *closed) => Err(Error::ShuttingDown),
        }
    }

    /// A turn to run, waiting at most `query.queue_timeout_ms` for one.
    async fn slot(&self) -> Result<OwnedSemaphorePermit> {
        let wait = Arc::clone(&self.slots).acquire_owned();
        match tokio::time::timeout(self.config.queue_timeout(), wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // Closed: the engine is shutting down.
            Ok(Err(_closed)) => Err(Error::ShuttingDown),
            Err(_elapsed) => Err(Error::Busy {
                max_concurrent: self.config.max_concurrent,
                waited_ms: self.config.queue_timeout_ms,
            }),
        }
    }
}

/// Plans, checks and runs one statement (on the query threads). A query that fails
/// reading a file has the store quarantine what it cannot read, and runs once more
/// over the rest.
async fn run(
    ctx: SessionContext,
    store: ParquetStore,
    options: SQLOptions,
    sql: String,
) -> Result<QueryResult> {
    let plan = ctx
        .state()
        .create_logical_plan(&sql)
        .await
        .map_err(Error::from_datafusion)?;
    options.verify_plan(&plan).map_err(|e| {
        Error::Refused(
            e.strip_backtrace()
                .trim_start_matches("Error during planning: ")
                .to_owned(),
        )
    })?;
    let (schema, batches) = match execute(&ctx, &store, plan.clone()).await {
        Ok(answer) => answer,
        Err(e) if may_be_an_unreadable_file(&e) => {
            let moved = store.quarantine_unreadable().await.map_err(Error::Store)?;
            if moved.is_empty() {
                return Err(Error::from_datafusion(e));
            }
            execute(&ctx, &store, plan)
                .await
                .map_err(Error::from_datafusion)?
        }
        Err(e) => return Err(Error::from_datafusion(e)),
    };
    without_views(&schema, &batches).map_err(|e| Error::from_datafusion(e.into()))
}

async fn execute(
    ctx: &SessionContext,
    store: &ParquetStore,
    plan: LogicalPlan,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), DataFusionError> {
    // The files of this query's snapshot stay on disk for `storage.vacuum_after`,
    // whatever compaction or retention commit meanwhile.
    store
        .refresh()
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let frame = ctx.execute_logical_plan(plan).await?;
    let schema: SchemaRef = Arc::clone(frame.schema().inner());
    let batches = frame.collect().await?;
    Ok((schema, batches))
}

/// Errors a damaged file gives: a footer or page that does not decode, or a read past
/// the end of a truncated file.
fn may_be_an_unreadable_file(e: &DataFusionError) -> bool {
    matches!(
        e.find_root(),
        DataFusionError::ParquetError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
    )
}

/// The result with `Utf8View` and `BinaryView` (how [`StoreTable`] scans strings),
/// nested ones included, as `Utf8` and `Binary`: the types the tables store and
/// clients of the Arrow IPC format expect.
fn without_views(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<QueryResult, ArrowError> {
    let batches = batches
        .iter()
        .map(|b| cast_batch(b, &plain_schema(&b.schema())))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(QueryResult {
        schema: plain_schema(schema),
        batches,
    })
}

fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields = schema.fields().iter().map(plain_field).collect::<Fields>();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain_field(field: &FieldRef) -> FieldRef {
    let plain = match field.data_type() {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        _ => return Arc::clone(field),
    };
    Arc::new(field.as_ref().clone().with_data_type(plain))
}
