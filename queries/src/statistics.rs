//! The query session's cache of each file's statistics, holding only what planning can
//! use.
//!
//! Every scan merges the statistics of the files it reads (for `count(*)` and for the
//! optimizer's estimates), comparing each column's minimum and maximum file by file.
//! Parquet gives a map or a list column no usable bounds, but DataFusion keeps them as
//! nested scalars, and comparing two of those runs Arrow's comparison kernels: a tenth of
//! the CPU of planning a group-by over ten files (`perf record` of the query threads), and
//! growing with the files a query reads. No filter can prune on such bounds, so they are
//! dropped as statistics enter the cache.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::stats::Precision;
use datafusion::common::{HashMap, ScalarValue, TableReference};
use datafusion::execution::cache::cache_manager::CachedFileMetadata;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheEntryInfo, TableScopedPath};

/// DataFusion's own cache of file statistics, storing each entry without the bounds of
/// its nested columns.
pub(crate) struct FlatStatistics(DefaultCache<TableScopedPath, CachedFileMetadata>);

impl FlatStatistics {
    pub(crate) fn new(memory_limit: usize) -> FlatStatistics {
        FlatStatistics(DefaultCache::new(memory_limit).with_name("FlatFileStatisticsCache"))
    }
}

/// `value` with the minimum and maximum of every nested column unknown.
fn flatten(value: CachedFileMetadata) -> CachedFileMetadata {
    let nested =
        |p: &Precision<ScalarValue>| p.get_value().is_some_and(|v| v.data_type().is_nested());
    let columns = &value.statistics.column_statistics;
    if !columns
        .iter()
        .any(|c| nested(&c.min_value) || nested(&c.max_value))
    {
        return value;
    }
    let mut statistics = (*value.statistics).clone();
    for column in &mut statistics.column_statistics {
        if nested(&column.min_value) {
            column.min_value = Precision::Absent;
        }
        if nested(&column.max_value) {
            column.max_value = Precision::Absent;
        }
    }
    CachedFileMetadata {
        statistics: Arc::new(statistics),
        ..value
    }
}

impl Cache<TableScopedPath, CachedFileMetadata> for FlatStatistics {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileMetadata> {
        self.0.get(key)
    }

    fn put(&self, key: &TableScopedPath, value: CachedFileMetadata) -> Option<CachedFileMetadata> {
        self.0.put(key, flatten(value))
    }

    fn remove(&self, key: &TableScopedPath) -> Option<CachedFileMetadata> {
        self.0.remove(key)
    }

    fn contains_key(&self, key: &TableScopedPath) -> bool {
        self.0.contains_key(key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&self) {
        self.0.clear()
    }

    fn name(&self) -> String {
        self.0.name()
    }

    fn cache_limit(&self) -> usize {
        self.0.cache_limit()
    }

    fn update_cache_limit(&self, limit: usize) {
        self.0.update_cache_limit(limit)
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.0.cache_ttl()
    }

    fn update_cache_ttl(&self, ttl: Option<Duration>) {
        self.0.update_cache_ttl(ttl)
    }

    fn drop_table_entries(&self, table: &TableReference) -> datafusion::common::Result<()> {
        self.0.drop_table_entries(table)
    }

    fn list_entries(&self) -> HashMap<TableScopedPath, CacheEntryInfo<CachedFileMetadata>> {
        self.0.list_entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, RecordBatch, StringBuilder};
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileStatisticsCache};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// A Parquet file of `rows` rows: an integer column and a string map column.
    fn file(dir: &std::path::Path, rows: i64) -> std::path::PathBuf {
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..rows {
            map.keys().append_value("k");
            map.values().append_value(format!("v{i}"));
            map.append(true).expect("map row");
        }
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from_iter_values(0..rows)) as _),
            ("m", Arc::new(map.finish()) as _),
        ])
        .expect("batch");
        crate::write_parquet(&dir.join(format!("f{rows}.parquet")), &batch)
    }

    /// Counts the rows of two files through a listing table whose session caches
    /// statistics in `cache`; returns the count and the cached bounds of each column,
    /// as (column index, has a minimum, has a maximum).
    async fn plan_with(cache: Arc<FileStatisticsCache>) -> (i64, Vec<(usize, bool, bool)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let urls = [file(dir.path(), 3), file(dir.path(), 5)]
            .iter()
            .map(|p| ListingTableUrl::parse(p.to_str().expect("utf-8")).expect("url"))
            .collect();
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(
                CacheManagerConfig::default().with_file_statistics_cache(Some(cache)),
            )
            .build_arc()
            .expect("runtime");
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await
            .expect("schema");
        let cache = ctx.runtime_env().cache_manager.get_file_statistic_cache();
        let table = ListingTable::try_new(config)
            .expect("table")
            .with_cache(cache.clone());
        ctx.register_table("t", Arc::new(table)).expect("register");
        // Twice: the second plan reads the statistics from the cache.
        for _ in 0..2 {
            ctx.sql("SELECT count(*), max(m['k']) FROM t")
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
        }
        let batches = ctx
            .sql("SELECT count(*) FROM t")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let count = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count")
            .value(0);
        let mut bounds: Vec<_> = cache
            .expect("a statistics cache")
            .list_entries()
            .into_values()
            .flat_map(|e| {
                e.value
                    .statistics
                    .column_statistics
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            i,
                            c.min_value.get_value().is_some(),
                            c.max_value.get_value().is_some(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        bounds.sort();
        bounds.dedup();
        (count, bounds)
    }

    #[tokio::test]
    async fn nested_columns_lose_their_bounds_and_flat_ones_keep_them() {
        let default: Arc<FileStatisticsCache> = Arc::new(DefaultCache::<
            TableScopedPath,
            CachedFileMetadata,
        >::new(1 << 20));
        let (count, bounds) = plan_with(default).await;
        assert_eq!(count, 8);
        // What DataFusion keeps on its own: bounds for the map column too.
        assert_eq!(bounds, vec![(0, true, true), (1, true, true)]);

        let (count, bounds) = plan_with(Arc::new(FlatStatistics::new(1 << 20))).await;
        assert_eq!(count, 8);
        assert_eq!(bounds, vec![(0, true, true), (1, false, false)]);
    }
}
