//! Criterion micro-benchmarks of the ingest hot path, per 500-span request of the
//! standard workload: protobuf decode (prost, and with the UTF-8 repair fallback),
//! OTLP → Arrow conversion, Arrow IPC encoding for the write-ahead log, and Parquet
//! encoding with the store's writer settings.
//!
//! `cargo bench --bench hotpaths` (release profile); throughput is in spans.

mod workload;

use std::hint::black_box;

use arrow::compute::concat_batches;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parquet::arrow::ArrowWriter;
use prost::Message;
use swarmscope_processors::convert::spans_from_otlp;
use swarmscope_processors::otlp_proto;
use swarmscope_sinks::store::{writer_properties, StorageConfig};

fn hot_paths(c: &mut Criterion) {
    let workload = workload::Workload::default();
    let requests = workload.requests(20, 1_700_000_000_000_000_000);
    let request = &requests[0];
    let spans = workload.spans_per_request as u64;
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
    let batch = spans_from_otlp(request).expect("convert").batch;
    group.bench_function("arrow_ipc_encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(256 * 1024);
            let mut writer =
                arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).expect("ipc");
            writer.write(black_box(&batch)).expect("write");
            writer.finish().expect("finish");
            out.len()
        })
    });
    group.finish();

    // A flush-sized batch: 20 requests, 10,000 spans.
    let batches: Vec<_> = requests
        .iter()
        .map(|r| spans_from_otlp(r).expect("convert").batch)
        .collect();
    let flush = concat_batches(&batches[0].schema(), &batches).expect("concat");
    let props = writer_properties(&StorageConfig::default()).expect("properties");
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(flush.num_rows() as u64));
    group.sample_size(20);
    group.bench_function("parquet_encode_zstd3", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(1 << 20);
            let mut writer = ArrowWriter::try_new(&mut out, flush.schema(), Some(props.clone()))
                .expect("writer");
            writer.write(black_box(&flush)).expect("write");
            writer.close().expect("close");
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
