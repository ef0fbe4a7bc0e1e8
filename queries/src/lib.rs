//! SQL over swarmscope's history.
//!
//! A DataFusion session with one table per stored table ([`table::StoreTable`]); each
//! scan reads the Parquet files of the store together with the rows still in memory, so
//! a record is queryable as soon as it is acknowledged. [`QueryEngine::sql`] is the
//! read-only sandbox the API and the CLI use, and [`encode`] turns results into JSON,
//! CSV, Arrow IPC or a text table. [`group_by_view`] runs counts and exact percentiles
//! grouped by string columns (count by service, p95 by operation) in place of
//! DataFusion's partial hash aggregate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use swarmscope_queries::{QueryConfig, QueryEngine};
//! use swarmscope_sinks::store::ParquetStore;
//!
//! let store = ParquetStore::open_read_only("./swarmscope-data").await?;
//! let engine = QueryEngine::new(store, QueryConfig::default())?;
//! let result = engine.sql("SELECT service_name, count(*) FROM spans GROUP BY 1").await?;
//! println!("{}", swarmscope_queries::encode::table(&result)?);
//! # Ok(()) }
//! ```

mod config;
pub mod cooperative;
pub mod encode;
mod engine;
mod error;
pub mod genai;
pub mod group_by_view;
mod nested_views;
mod statistics;
pub mod table;

pub use config::{default_threads, QueryConfig};

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with each node `replace` returns a replacement for replaced, bottom up: the
/// walk the crate's physical optimizer rules share.
pub(crate) fn replace_nodes(
    plan: Arc<dyn ExecutionPlan>,
    replace: impl Fn(&Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match replace(&node) {
            Some(replacement) => Transformed::yes(replacement),
            None => Transformed::no(node),
        })
    })
    .data()
}
/// Writes `batch` to a new Parquet file at `path`, for the tests that read files.
#[cfg(test)]
pub(crate) fn write_parquet(
    path: &std::path::Path,
    batch: &datafusion::arrow::array::RecordBatch,
) -> std::path::PathBuf {
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    path.to_path_buf()
}

pub use engine::{QueryEngine, QueryMetrics, QueryResult, TableInfo};
pub use error::{Error, Result};
