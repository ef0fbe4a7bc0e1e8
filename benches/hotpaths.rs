//! Criterion micro-benchmarks of the ingest hot path, per 500-span request of the
//! standard workload: protobuf decode (prost, and with the UTF-8 repair fallback),
//! OTLP → Arrow conversion, the wire path that does both at once (what the receivers
//! run), Arrow IPC encoding for the write-ahead log, and Parquet encoding with the
//! store's writer settings; then the same for the `coordination_events` rows the
//! coordination processor derives on the acknowledgement path; GenAI attribution; and
//! the call graph pairing client and server spans, and observing the standard workload;
//! and the zstd contexts Parquet makes
//! for every column chunk it reads or writes.
//!
//! `cargo bench --bench hotpaths` (release profile); throughput is in spans.

mod workload;

use std::hint::black_box;

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use prost::Message;
use swarmscope_processors::analytics::clock::LiveClock;
use swarmscope_processors::analytics::coordination::{CoordinationConfig, CoordinationEvents};
use swarmscope_processors::analytics::genai::{GenAiConfig, GenAiUsage};
use swarmscope_processors::analytics::graph::{GraphConfig, ServiceGraph};
use swarmscope_processors::convert::{spans_from_otlp, spans_from_protobuf};
use swarmscope_processors::otlp_proto;
use swarmscope_processors::processor::{Processor, TableBatch};
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::{writer_properties, StorageConfig, RANDOM_ID_COLUMNS};

fn hot_paths(c: &mut Criterion) {
    let workload = workload::Workload::default();
    // 86 requests, 43,000 spans: what a flush holds under the standard load.
    let requests = workload.requests(86, 1_700_000_000_000_000_000);
    let spans = workload.spans_per_request as u64;
    request(c, &requests[0], spans);
    // A flush, written batch by batch as the store does.
    let batches: Vec<_> = requests
        .iter()
        .map(|r| spans_from_otlp(r).expect("convert").batch)
        .collect();
    let props = writer_properties(&StorageConfig::default()).expect("properties");
    flush(c, &batches, &props);
    // The coordination processor stores only spans that say what happened to an item:
    // the same requests with the work spans' events.
    let with_events: Vec<_> = workload::Workload {
        work_events: true,
        ..workload::Workload::default()
    }
    .requests(20, 1_700_000_000_000_000_000)
    .iter()
    .map(|r| spans_from_otlp(r).expect("convert").batch)
    .collect();
    coordination(c, &with_events, &props, spans);
    genai(c, &received(&requests[0]), spans);
    graph(c, &workload);
    zstd_contexts(c);
}

/// What Parquet pays for every column chunk it reads or writes before any work: a zstd
/// compression and a decompression context. zstd as published probes the CPU's
/// features for each (three `cpuid`s, a VM exit each under a hypervisor); the vendored
/// copy probes once per process (vendor/zstd-sys/PATCHED.md).
fn zstd_contexts(c: &mut Criterion) {
    c.bench_function("zstd/contexts of one column chunk", |b| {
        b.iter(|| {
            let compressor = zstd::bulk::Compressor::new(1).expect("compressor");
            let decompressor = zstd::bulk::Decompressor::new().expect("decompressor");
            black_box((compressor, decompressor))
        })
    });
}

/// A request: decoded, converted, encoded for the log.
fn request(c: &mut Criterion, request: &ExportTraceServiceRequest, spans: u64) {
    let bytes = request.encode_to_vec();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("decode_prost", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())))
    });
    group.bench_function("decode_with_utf8_repair", |b| {
        b.iter(|| otlp_proto::decode::<ExportTraceServiceRequest>(black_box(&bytes)))
    });
    group.bench_function("otlp_to_arrow", |b| {
        b.iter(|| spans_from_otlp(black_box(request)))
    });
    group.bench_function("prost_decode_then_arrow", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(black_box(bytes.as_slice()));
            spans_from_otlp(&request.expect("decode"))
        })
    });
    group.bench_function("wire_to_arrow", |b| {
        b.iter(|| spans_from_protobuf(black_box(&bytes)).expect("the wire path takes it"))
    });
    let batch = spans_from_otlp(request).expect("convert").batch;
    // What a request costs the store's memory budget (`storage.max_buffered_bytes`).
    let wire = spans_from_protobuf(&bytes)
        .expect("the wire path takes it")
        .expect("convert")
        .batch;
    eprintln!(
        "buffered Arrow bytes per span: prost path {}, wire path {}; \
         its write-ahead log record (Arrow IPC) {} bytes per span, {} in all over the buffers",
        batch.get_array_memory_size() as u64 / spans,
        wire.get_array_memory_size() as u64 / spans,
        ipc(&wire) as u64 / spans,
        ipc(&wire) as i64 - wire.get_array_memory_size() as i64,
    );
    group.bench_function("arrow_ipc_encode", |b| b.iter(|| ipc(&batch)));
    // What a flush does to each buffered batch before encoding it: the stored schema's
    // microsecond times, exact nanoseconds and signed counts.
    group.bench_function("to_stored", |b| {
        b.iter(|| Table::SPANS.to_stored(black_box(&wire)).expect("stored"))
    });
    group.finish();
}

/// A flush with the store's settings, then alternatives measured against them.
fn flush(c: &mut Criterion, batches: &[RecordBatch], props: &WriterProperties) {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(20);
    let encode = |props: &WriterProperties| parquet(batches, props);
    // The store's settings, then alternatives measured against them: min/max
    // statistics on the top-level strings too (what the store wrote before), on every
    // column (nested ones and random ids included), dictionaries for the random ids
    // too, none for attribute values, zstd level 3, and row groups of 16,384 and 8,192
    // rows (smaller string dictionaries, which stay in a core's cache). The printed
    // sizes are bytes per span.
    let string_statistics = batches[0]
        .schema()
        .fields()
        .iter()
        .filter(|f| f.data_type() == &arrow::datatypes::DataType::Utf8)
        .filter(|f| !RANDOM_ID_COLUMNS.contains(&f.name().as_str()))
        .fold(props.clone().into_builder(), |b, f| {
            b.set_column_statistics_enabled(
                ColumnPath::from(f.name().as_str()),
                EnabledStatistics::Page,
            )
        })
        .build();
    let all_statistics = props
        .clone()
        .into_builder()
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let ids_dictionary = RANDOM_ID_COLUMNS
        .into_iter()
        .fold(props.clone().into_builder(), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(c), true)
        })
        .build();
    let zstd3 = writer_properties(&StorageConfig {
        zstd_level: 3,
        ..StorageConfig::default()
    })
    .expect("properties");
    let attribute_values =
        ColumnPath::new(vec!["attributes".into(), "entries".into(), "value".into()]);
    let no_values_dictionary = props
        .clone()
        .into_builder()
        .set_column_dictionary_enabled(attribute_values, false)
        .build();
    let row_groups_16k = props
        .clone()
        .into_builder()
        .set_max_row_group_row_count(Some(16 * 1024))
        .build();
    let row_groups_8k = props
        .clone()
        .into_builder()
        .set_max_row_group_row_count(Some(8 * 1024))
        .build();
    for (name, props) in [
        ("parquet_encode", props),
        ("parquet_encode_string_statistics", &string_statistics),
        ("parquet_encode_all_statistics", &all_statistics),
        ("parquet_encode_ids_dictionary", &ids_dictionary),
        ("parquet_encode_no_values_dictionary", &no_values_dictionary),
        ("parquet_encode_zstd3", &zstd3),
        ("parquet_encode_row_groups_16k", &row_groups_16k),
        ("parquet_encode_row_groups_8k", &row_groups_8k),
    ] {
        eprintln!(
            "{name}: {:.1} bytes/span",
            encode(props) as f64 / rows as f64
        );
        group.bench_function(name, |b| b.iter(|| encode(props)));
    }
    group.finish();
}

/// The coordination processor's rows.
fn coordination(c: &mut Criterion, batches: &[RecordBatch], props: &WriterProperties, spans: u64) {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    // The coordination processor on the acknowledgement path: its rows derived from a
    // request's spans (every span of the workload names a work item, the work spans
    // with an event), encoded for the log, and a flush of 20 requests' rows.
    let coordination = CoordinationEvents::new(&CoordinationConfig::default());
    let source = TableBatch::new(Table::SPANS, batches[0].clone());
    let derive = |spans: &TableBatch| {
        coordination
            .derive(spans)
            .expect("derive")
            .pop()
            .expect("rows")
            .batch
    };
    let derived = derive(&source);
    let mut group = c.benchmark_group("coordination");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("derive", |b| b.iter(|| derive(&source)));
    group.bench_function("arrow_ipc_encode", |b| b.iter(|| ipc(&derived)));
    let all_derived: Vec<_> = batches
        .iter()
        .map(|b| derive(&TableBatch::new(Table::SPANS, b.clone())))
        .collect();
    let encode = || parquet(&all_derived, props);
    eprintln!(
        "coordination parquet_encode: {:.1} bytes/span ({} rows of {rows} spans)",
        encode() as f64 / rows as f64,
        all_derived.iter().map(|b| b.num_rows()).sum::<usize>()
    );
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(20);
    group.bench_function("parquet_encode", |b| b.iter(encode));
    group.finish();
}

/// The spans of `request` as the receiver hands them to processors: with their ids as
/// numbers.
fn received(request: &ExportTraceServiceRequest) -> TableBatch {
    let converted = spans_from_otlp(request).expect("convert");
    TableBatch::new(Table::SPANS, converted.batch).with_ids(converted.ids)
}

/// GenAI attribution.
fn genai(c: &mut Criterion, source: &TableBatch, spans: u64) {
    // GenAI attribution on the acknowledgement path: every span of the workload reports
    // usage and sits under a root of its request, none of them an agent span, so each
    // call walks up to its root and settles with no agent (no row, nothing waiting).
    let genai = GenAiUsage::new(&GenAiConfig::default());
    let mut group = c.benchmark_group("genai");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("attribution_derive", |b| {
        b.iter(|| genai.derive(source).expect("derive"))
    });
    // The observer's metrics of the same request: every span's usage and model read,
    // tallied by operation, provider and model.
    group.bench_function("observe", |b| b.iter(|| genai.observe(source)));
    group.finish();
}

/// The call graph.
fn graph(c: &mut Criterion, workload: &workload::Workload) {
    // The standard workload's spans, one request at a time: every span an agent's (its
    // parent looked up, itself kept for children to come), a root SERVER span and nine
    // CLIENT children a trace, the clients waiting for servers that never come. The
    // requests cycle through more spans than the stores keep, so every id is new to
    // them, as under load.
    let config = GraphConfig::default();
    let cycle =
        (config.max_items.max(config.max_agent_items) * 6 / 5).div_ceil(workload.spans_per_request);
    let standard: Vec<_> = workload
        .requests(cycle, 1_700_000_000_000_000_000)
        .iter()
        .map(received)
        .collect();
    let observed = ServiceGraph::new(&config, LiveClock::wall(600));
    let mut next = standard.iter().cycle();
    let mut group = c.benchmark_group("graph");
    group.throughput(Throughput::Elements(workload.spans_per_request as u64));
    group.bench_function("standard_observe", |b| {
        b.iter(|| observed.observe(next.next().expect("a cycle never ends")))
    });

    // The call graph off the acknowledgement path: a request of 250 client spans, then
    // the other service's request of their 250 server spans, which pair them all.
    let graph = ServiceGraph::new(&GraphConfig::default(), LiveClock::wall(600));
    let (clients, servers) = client_server_batches(250);
    group.throughput(Throughput::Elements(500));
    group.bench_function("pair_observe", |b| {
        b.iter(|| {
            graph.observe(&clients);
            graph.observe(&servers);
        })
    });
    group.finish();
}

/// `pairs` client spans of service `caller` and their server spans of service `callee`.
fn client_server_batches(pairs: u64) -> (TableBatch, TableBatch) {
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
    let span = |trace: u64, id: u64, parent: Option<u64>, kind: SpanKind| Span {
        trace_id: [[9u8; 8], trace.to_be_bytes()].concat(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "call".into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_020_000_000,
        ..Default::default()
    };
    let request = |service: &str, spans: Vec<Span>| {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                        key: "service.name".into(),
                        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                            value: Some(
                                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                    service.into(),
                                ),
                            ),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        received(&request)
    };
    let clients = (0..pairs).map(|t| span(t, 2 * t + 1, None, SpanKind::Client));
    let servers = (0..pairs).map(|t| span(t, 2 * t + 2, Some(2 * t + 1), SpanKind::Server));
    (
        request("caller", clients.collect()),
        request("callee", servers.collect()),
    )
}

/// Parquet bytes of `batches` written one by one into one file, as a flush does.
fn parquet(batches: &[arrow::array::RecordBatch], props: &WriterProperties) -> usize {
    let mut out = Vec::with_capacity(1 << 20);
    let mut writer =
        ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props.clone())).expect("writer");
    for batch in batches {
        writer.write(black_box(batch)).expect("write");
    }
    writer.close().expect("close");
    out.len()
}

/// Arrow IPC stream bytes of `batch`, as the write-ahead log encodes a record.
fn ipc(batch: &arrow::array::RecordBatch) -> usize {
    let mut out = Vec::with_capacity(256 * 1024);
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).expect("ipc");
    writer.write(black_box(batch)).expect("write");
    writer.finish().expect("finish");
    out.len()
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
