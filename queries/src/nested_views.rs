//! Strings nested in maps, lists and structs scanned as `Utf8View`.
//!
//! DataFusion reads a Parquet file's top-level strings as views into the decoded
//! pages, but the strings inside `attributes`, `events` and `links` as `Utf8`: every
//! entry's key and value is copied out of its page's dictionary into a new buffer.
//! Read as views, the copy becomes a 16-byte view per value into the page (figures in
//! `benches/RESULTS.md`, session 8).
//!
//! The Parquet reader takes the Arrow types to decode into from the schema a file
//! embeds (`ARROW:schema`), and DataFusion changes only top-level fields of it. So
//! [`StoreFormat`] gives its scans a reader whose footer carries the embedded schema
//! with nested strings as views ([`viewed`]), and [`StoreTable`](crate::table) declares
//! the same types. The files on disk keep their plain strings, for every other reader.
//!
//! Map keys are views too. `attributes['key']` compares the keys with its literal,
//! and DataFusion's `get_field` neither coerces that literal nor compares a `Utf8`
//! with a `Utf8View`, so [`MapKeyLiterals`] gives the literal the keys' type when
//! the query is analysed.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::{FileFormat, FileMeta};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, FileSource, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::functions::core::getfield::GetFieldFunc;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::ARROW_SCHEMA_META_KEY;
use datafusion::parquet::arrow::{encode_arrow_schema, parquet_to_arrow_schema};
use datafusion::parquet::file::metadata::{
    FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataBuilder,
};
use datafusion::physical_expr_common::sort_expr::LexOrdering;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::{ObjectMeta, ObjectStore};

/// `data_type` as a scan of the store declares it: strings as `Utf8View`, at any depth.
pub(crate) fn viewed(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8 => DataType::Utf8View,
        DataType::List(item) => DataType::List(viewed_field(item)),
        DataType::LargeList(item) => DataType::LargeList(viewed_field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(viewed_field).collect()),
        DataType::Map(entries, sorted) => DataType::Map(viewed_field(entries), *sorted),
        other => other.clone(),
    }
}

/// Rewrites `get_field(map, 'key')` (what `map['key']` plans to) on a map with
/// `Utf8View` keys so that its key literal is a `Utf8View` as well. `get_field`
/// compares the map's keys with the literal as it is, and Arrow's comparison refuses
/// a `Utf8` literal against `Utf8View` keys. (`map_extract` and `element_at` coerce
/// their key themselves.)
#[derive(Debug)]
pub(crate) struct MapKeyLiterals;

impl FunctionRewrite for MapKeyLiterals {
    fn name(&self) -> &str {
        "map_key_literals"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let Expr::ScalarFunction(mut call) = expr else {
            return Ok(Transformed::no(expr));
        };
        let is_key_literal = call.func.inner().is::<GetFieldFunc>()
            && matches!(
                call.args.get(1),
                Some(Expr::Literal(ScalarValue::Utf8(_), _))
            );
        // A type that cannot be worked out here is left for the planner to report.
        let view_keys = is_key_literal
            && call.args[0]
                .get_type(schema)
                .is_ok_and(|t| map_key_type(&t) == Some(&DataType::Utf8View));
        if !view_keys {
            return Ok(Transformed::no(Expr::ScalarFunction(call)));
        }
        if let Expr::Literal(ScalarValue::Utf8(key), metadata) = &mut call.args[1] {
            call.args[1] = Expr::Literal(ScalarValue::Utf8View(key.take()), metadata.take());
        }
        Ok(Transformed::yes(Expr::ScalarFunction(call)))
    }
}

/// The key type of a map type.
fn map_key_type(data_type: &DataType) -> Option<&DataType> {
    match data_type {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => kv.first().map(|k| k.data_type()),
            _ => None,
        },
        _ => None,
    }
}

fn viewed_field(field: &FieldRef) -> FieldRef {
    let data_type = viewed(field.data_type());
    if &data_type == field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(field.as_ref().clone().with_data_type(data_type))
    }
}

/// Parquet, as [`ParquetFormat`] reads it, but with [`NestedViewReaders`] for its scans.
#[derive(Debug)]
pub(crate) struct StoreFormat(pub(crate) ParquetFormat);

#[async_trait]
impl FileFormat for StoreFormat {
    fn get_ext(&self) -> String {
        self.0.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        self.0.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.0.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        self.0.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        self.0.infer_stats(state, store, table_schema, object).await
    }

    async fn infer_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Option<LexOrdering>> {
        self.0
            .infer_ordering(state, store, table_schema, object)
            .await
    }

    async fn infer_stats_and_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<FileMeta> {
        self.0
            .infer_stats_and_ordering(state, store, table_schema, object)
            .await
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Rewriting a footer costs a little for every file a scan opens; a scan that
        // reads no map, list or struct has nothing to gain from it.
        let reads_nested = conf
            .projected_schema()?
            .fields()
            .iter()
            .any(|f| f.data_type().is_nested());
        let plan = self.0.create_physical_plan(state, conf).await?;
        if !reads_nested {
            return Ok(plan);
        }
        let Some((conf, source)) = plan
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.downcast_to_file_source::<ParquetSource>())
        else {
            return Ok(plan);
        };
        let Some(readers) = source.parquet_file_reader_factory() else {
            return Ok(plan);
        };
        let source = source
            .clone()
            .with_parquet_file_reader_factory(Arc::new(NestedViewReaders(Arc::clone(readers))));
        let conf = FileScanConfigBuilder::from(conf.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.0.file_source(table_schema)
    }
}

/// Readers whose metadata embeds the file's Arrow schema with nested strings as views.
#[derive(Debug)]
struct NestedViewReaders(Arc<dyn ParquetFileReaderFactory>);

impl ParquetFileReaderFactory for NestedViewReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let reader = self
            .0
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(NestedViewReader(reader)))
    }
}

struct NestedViewReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for NestedViewReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.0.get_metadata(options).await?;
            with_nested_views(metadata)
        }
        .boxed()
    }
}

/// `metadata` with its embedded Arrow schema's nested strings as views; itself when
/// the file has none.
fn with_nested_views(
    metadata: Arc<ParquetMetaData>,
) -> datafusion::parquet::errors::Result<Arc<ParquetMetaData>> {
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
    let fields: Fields = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            // Left to DataFusion, which reads them as views already.
            DataType::Utf8 => Arc::clone(f),
            _ => viewed_field(f),
        })
        .collect();
    if &fields == schema.fields() {
        return Ok(metadata);
    }
    let encoded = encode_arrow_schema(&Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    let mut pairs: Vec<KeyValue> = file
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|p| p.key != ARROW_SCHEMA_META_KEY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    pairs.push(KeyValue::new(ARROW_SCHEMA_META_KEY.to_string(), encoded));
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_owned),
        Some(pairs),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let rebuilt = ParquetMetaDataBuilder::new(file)
        .set_row_groups(metadata.row_groups().to_vec())
        .set_column_index(metadata.column_index().cloned())
        .set_offset_index(metadata.offset_index().cloned())
        .build();
    Ok(Arc::new(rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Array, AsArray, Int64Array, ListBuilder, MapBuilder, RecordBatch, StringBuilder,
        StructBuilder,
    };
    use datafusion::arrow::datatypes::Field;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
    use datafusion::execution::FunctionRegistry;
    use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
    use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path;

    /// A Parquet file of three rows: a string, a string map and a list of structs
    /// holding a string, as the store writes `name`, `attributes` and `events`.
    fn file(dir: &std::path::Path) -> std::path::PathBuf {
        let mut name = StringBuilder::new();
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        let event = Field::new("name", DataType::Utf8, true);
        let mut events = ListBuilder::new(StructBuilder::new(
            vec![Arc::new(event)],
            vec![Box::new(StringBuilder::new())],
        ));
        for i in 0..3 {
            name.append_value(format!("op{i}"));
            map.keys().append_value("gen_ai.request.model");
            map.values()
                .append_value(format!("a model with a long name {i}"));
            map.keys().append_value("k");
            map.values().append_value(format!("v{i}"));
            map.append(true).expect("map row");
            let item = events.values();
            item.field_builder::<StringBuilder>(0)
                .expect("name")
                .append_value(format!("event {i}"));
            item.append(true);
            events.append(true);
        }
        let batch = RecordBatch::try_from_iter([
            ("name", Arc::new(name.finish()) as _),
            ("attributes", Arc::new(map.finish()) as _),
            ("events", Arc::new(events.finish()) as _),
        ])
        .expect("batch");
        crate::write_parquet(&dir.join("f.parquet"), &batch)
    }

    /// A factory's reader, as a type the stream builder takes.
    struct Reader(Box<dyn AsyncFileReader + Send>);

    impl AsyncFileReader for Reader {
        fn get_bytes(
            &mut self,
            range: Range<u64>,
        ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
            self.0.get_bytes(range)
        }

        fn get_metadata<'a>(
            &'a mut self,
            options: Option<&'a ArrowReaderOptions>,
        ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
            self.0.get_metadata(options)
        }
    }

    /// The file decoded through a reader of `readers`, as DataFusion's scan opens it:
    /// the Arrow schema taken from the metadata the reader gives.
    async fn decode(readers: &dyn ParquetFileReaderFactory, path: &std::path::Path) -> RecordBatch {
        let location = Path::from_filesystem_path(path).expect("path");
        let size = std::fs::metadata(path).expect("size").len();
        let file = PartitionedFile::new(location.to_string(), size);
        let metrics = ExecutionPlanMetricsSet::new();
        let mut reader = Reader(
            readers
                .create_reader(0, file, None, &metrics)
                .expect("reader"),
        );
        let metadata = reader.get_metadata(None).await.expect("metadata");
        let metadata = ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new())
            .expect("arrow metadata");
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
                .build()
                .expect("stream")
                .try_collect()
                .await
                .expect("decode");
        assert_eq!(batches.len(), 1);
        batches.into_iter().next().expect("a batch")
    }

    #[tokio::test]
    async fn nested_strings_decode_as_views() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(dir.path());
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let default = DefaultParquetFileReaderFactory::new(Arc::clone(&store));
        let plain = decode(&default, &path).await;
        let ours = NestedViewReaders(Arc::new(DefaultParquetFileReaderFactory::new(store)));
        let views = decode(&ours, &path).await;

        // What DataFusion's own reader decodes: nested strings as `Utf8`.
        let map = plain.column(1).as_map();
        assert_eq!(map.values().data_type(), &DataType::Utf8);
        // Ours: the map's keys and values and the events' names as views, the
        // top-level string as it was (DataFusion makes that a view itself).
        let map = views.column(1).as_map();
        assert_eq!(map.keys().data_type(), &DataType::Utf8View);
        assert_eq!(map.values().data_type(), &DataType::Utf8View);
        let events = views.column(2).as_list::<i32>().values().as_struct();
        assert_eq!(events.column(0).data_type(), &DataType::Utf8View);
        assert_eq!(views.column(0).data_type(), &DataType::Utf8);
        // The same values either way.
        assert_eq!(map.keys().as_string_view().value(1), "k");
        assert_eq!(map.values().as_string_view().value(1), "v0");
        assert_eq!(
            map.values().as_string_view().value(4),
            "a model with a long name 2"
        );
        assert_eq!(events.column(0).as_string_view().value(1), "event 1");
        assert_eq!(
            plain
                .column(1)
                .as_map()
                .values()
                .as_string::<i32>()
                .value(1),
            "v0"
        );
    }

    #[tokio::test]
    async fn a_listing_table_in_the_store_format_filters_and_reads_nested_views() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(dir.path());
        let mut ctx = SessionContext::new();
        let url = ListingTableUrl::parse(path.to_str().expect("utf-8")).expect("url");
        let config = ListingTableConfig::new(url)
            .with_listing_options(ListingOptions::new(Arc::new(StoreFormat(
                ParquetFormat::default(),
            ))))
            .infer_schema(&ctx.state())
            .await
            .expect("schema");
        // As StoreTable declares it: the nested strings as views.
        let file_schema = config.file_schema.clone().expect("a schema");
        let fields: Fields = file_schema
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_data_type(viewed(f.data_type()))))
            .collect();
        let config = config.with_schema(Arc::new(Schema::new(fields)));
        let table = ListingTable::try_new(config).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let sql = "SELECT name, attributes['gen_ai.request.model'] AS model, \
                   arrow_typeof(attributes['k']) AS t FROM t WHERE attributes['k'] = 'v1'";
        // Without the rewrite, `get_field` compares the `Utf8View` keys with a
        // `Utf8` literal, which Arrow refuses.
        assert!(run(&ctx, sql).await.is_err());
        ctx.register_function_rewrite(Arc::new(MapKeyLiterals))
            .expect("rewrite");
        let batches = run(&ctx, sql).await.expect("run");
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let b = &batches[0];
        assert_eq!(b.schema().field(1).name(), "model");
        assert_eq!(b.column(0).as_string_view().value(0), "op1");
        assert_eq!(
            b.column(1).as_string_view().value(0),
            "a model with a long name 1"
        );
        assert_eq!(b.column(2).as_string::<i32>().value(0), "Utf8View");
        // Only the filter reads the map; the scan still decodes it for the filter.
        assert_eq!(
            count(&ctx, "SELECT count(*) FROM t WHERE attributes['k'] = 'v2'").await,
            1
        );
        assert_eq!(
            count(
                &ctx,
                "SELECT count(*) FROM t WHERE events[1]['name'] = 'event 2'"
            )
            .await,
            1
        );
        // The other ways to read a key, and maps whose keys are plain strings.
        for sql in [
            "SELECT count(*) FROM t WHERE get_field(attributes, 'k') = 'v1'",
            "SELECT count(*) FROM t WHERE element_at(attributes, 'k')[1] = 'v1'",
            "SELECT count(*) FROM t WHERE map_extract(attributes, 'k')[1] = 'v1'",
            "SELECT count(*) FROM t WHERE array_has(map_keys(attributes), 'k') AND name = 'op1'",
            "SELECT count(*) FROM t WHERE MAP {'k': name}['k'] = 'op1'",
        ] {
            assert_eq!(count(&ctx, sql).await, 1, "{sql}");
        }
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    async fn count(ctx: &SessionContext, sql: &str) -> i64 {
        let batches = run(ctx, sql).await.expect(sql);
        let column = batches[0].column(0).as_any().downcast_ref::<Int64Array>();
        column.expect("a count").value(0)
    }
}
