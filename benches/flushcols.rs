//! One flush of the spans table (86 requests, 43,000 spans, as the receivers convert
//! them), column by column: the levels of each nested column (Parquet's
//! `compute_leaves`), then each leaf column encoded alone with the store's writer
//! settings and the bytes it takes, best of ROUNDS; for both workloads of
//! `benches/e2e.sh`. Where a flush's time goes, which a profile of the server spreads
//! over threads and inlined frames. The whole file written by one `ArrowWriter` comes
//! first, for its size; the store encodes a row group column by column instead, on
//! several threads (`sinks/src/store/writer.rs`).
//!
//! `cargo bench --bench flushcols [-- ROUNDS]` (release profile). To profile some
//! columns alone, `FLUSH_COLUMNS='attributes[1],levels:events'` names leaves (a map's
//! keys are `[0]`, its values `[1]`) and top-level columns' levels; the rest is skipped.
//! `FLUSH_COLD=1` evicts the caches before each round ([`evict_caches`]).
//! `FLUSH_REQUESTS=N` makes the flush N requests of 500 spans instead of 86, to see
//! how a flush's cost a span moves with its size (a flush starts a column chunk's
//! dictionary empty, and the buffer's bytes a span set how many spans a flush holds);
//! up to 524 requests fit one row group of the store's. `FLUSH_EAGER=1` times instead
//! the whole row group's encoding as the store does it at a flush against encoding
//! each request as it is converted ([`eager`]). `FLUSH_PLAIN=attributes.entries.value`
//! writes the named columns (Parquet paths, comma separated) without a dictionary.

mod workload;

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowLeafColumn};
use parquet::arrow::ArrowWriter;
use prost::Message;
use swarmscope_processors::convert::spans_from_protobuf;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::{writer_properties, StorageConfig};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let requests: usize = std::env::var("FLUSH_REQUESTS")
        .ok()
        .map(|n| n.parse().expect("FLUSH_REQUESTS is a count of requests"))
        .unwrap_or(86);
    let second = workload::Workload {
        work_item_share: 0.1,
        token_usage_share: 0.1,
        ..workload::Workload::default()
    };
    for (name, workload) in [
        ("standard", workload::Workload::default()),
        ("second", second),
    ] {
        let encoded: Vec<Vec<u8>> = workload
            .requests(requests, 1_700_000_000_000_000_000)
            .iter()
            .map(|r| r.encode_to_vec())
            .collect();
        if std::env::var_os("FLUSH_EAGER").is_some() {
            eager(name, &encoded, rounds);
            continue;
        }
        let batches: Vec<RecordBatch> = encoded.iter().map(|r| convert(r)).collect();
        flush(name, &batches, rounds);
    }
}

/// A request as the receivers convert it and the store keeps it.
fn convert(request: &[u8]) -> RecordBatch {
    let converted = spans_from_protobuf(request)
        .expect("the wire path takes it")
        .expect("convert");
    Table::SPANS.to_stored(&converted.batch).expect("stored")
}

/// Every leaf column of `batch`, in schema order.
fn leaves_of(batch: &RecordBatch) -> Vec<ArrowLeafColumn> {
    let schema = batch.schema();
    let mut leaves = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        leaves.extend(compute_leaves(field, column).expect("leaves"));
    }
    leaves
}

/// `FLUSH_EAGER`: the whole row group's encoding (levels, every column, closing the
/// chunks) on one thread, timed four ways, best of `rounds`, without the conversion:
/// - at flush: every request converted, then the caches evicted (a flush meets rows
///   decoded up to a second before), then all encoded, column by column as the store
///   does (each column's writer meets all its pieces in turn), or batch by batch;
/// - as received, writers cold: each request converted and at once written into the
///   row group's open column writers, the caches evicted before each conversion (the
///   pessimistic end: as if the other stages run between two requests took them all);
/// - as received, warm: the same without evicting, the least it could cost.
fn eager(name: &str, requests: &[Vec<u8>], rounds: usize) {
    let props = store_properties();
    let schema = convert(&requests[0]).schema();
    let (_, factory) = ArrowWriter::try_new(Vec::new(), schema, Some(props))
        .and_then(|w| w.into_serialized_writer())
        .expect("writer");
    let close = |writers: Vec<parquet::arrow::arrow_writer::ArrowColumnWriter>| -> usize {
        writers
            .into_iter()
            .map(|w| w.close().expect("close").close().bytes_written as usize)
            .sum()
    };
    let by_batch = (0..rounds)
        .map(|_| {
            let batches: Vec<RecordBatch> = requests.iter().map(|r| convert(r)).collect();
            let mut writers = factory.create_column_writers(0).expect("writers");
            evict_caches(true);
            let t = Instant::now();
            for batch in &batches {
                for (writer, leaf) in writers.iter_mut().zip(leaves_of(batch)) {
                    writer.write(&leaf).expect("write");
                }
            }
            std::hint::black_box(close(writers));
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    // The store's order: every batch's levels, then column by column.
    let by_column = (0..rounds)
        .map(|_| {
            let batches: Vec<RecordBatch> = requests.iter().map(|r| convert(r)).collect();
            let writers = factory.create_column_writers(0).expect("writers");
            evict_caches(true);
            let t = Instant::now();
            let mut pieces: Vec<Vec<ArrowLeafColumn>> =
                writers.iter().map(|_| Vec::new()).collect();
            for batch in &batches {
                for (column, leaf) in pieces.iter_mut().zip(leaves_of(batch)) {
                    column.push(leaf);
                }
            }
            let mut bytes = 0;
            for (mut writer, column) in writers.into_iter().zip(pieces) {
                for leaf in &column {
                    writer.write(leaf).expect("write");
                }
                bytes += writer.close().expect("close").close().bytes_written as usize;
            }
            std::hint::black_box(bytes);
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    let as_received = |cold: bool| {
        (0..rounds)
            .map(|_| {
                let mut writers = factory.create_column_writers(0).expect("writers");
                let mut took = Duration::ZERO;
                for request in requests {
                    evict_caches(cold);
                    let batch = convert(request);
                    let t = Instant::now();
                    for (writer, leaf) in writers.iter_mut().zip(leaves_of(&batch)) {
                        writer.write(&leaf).expect("write");
                    }
                    took += t.elapsed();
                }
                let t = Instant::now();
                std::hint::black_box(close(writers));
                took + t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let spans = requests
        .iter()
        .map(|r| convert(r).num_rows())
        .sum::<usize>() as f64;
    for (how, took) in [
        ("at flush, column by column, rows cold", by_column),
        ("at flush, batch by batch, rows cold", by_batch),
        ("as received, writers cold", as_received(true)),
        ("as received, warm", as_received(false)),
    ] {
        println!(
            "{name}: {how}: {:.2} ms ({:.0} ns a span)",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e9 / spans
        );
    }
}

/// With `cold` (`FLUSH_COLD` set, for the column-by-column figures), writes a buffer
/// larger than the caches, so that the next round finds its rows and code in memory,
/// as a flush in the server does (it meets rows decoded up to a second before, with
/// every other stage run in between); without it, each round after the first finds
/// the rows the last one read in the cache. The buffer is allocated once: freeing and
/// allocating it each time would add page faults no flush has.
fn evict_caches(cold: bool) {
    static BUFFER: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    if !cold {
        return;
    }
    let mut buffer = BUFFER.lock().unwrap_or_else(|e| e.into_inner());
    if buffer.is_empty() {
        buffer.resize(96 << 20, 1);
    }
    for line in buffer.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(&*buffer);
}

/// The fastest of `rounds` runs of `f` on what `setup` makes for it (outside the
/// clock), and what the last run returned.
fn best<T>(
    rounds: usize,
    mut setup: impl FnMut() -> T,
    mut f: impl FnMut(T) -> usize,
) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..rounds {
        let input = setup();
        evict_caches(std::env::var_os("FLUSH_COLD").is_some());
        let t = Instant::now();
        bytes = f(input);
        best = best.min(t.elapsed());
    }
    (best, bytes)
}

/// The store's writer settings, with `FLUSH_PLAIN`'s columns (Parquet paths, comma
/// separated: `attributes.entries.value`) written without a dictionary.
fn store_properties() -> parquet::file::properties::WriterProperties {
    let props = writer_properties(&StorageConfig::default()).expect("properties");
    let Ok(plain) = std::env::var("FLUSH_PLAIN") else {
        return props;
    };
    plain
        .split(',')
        .fold(props.into_builder(), |builder, path| {
            let path = parquet::schema::types::ColumnPath::from(
                path.split('.').map(String::from).collect::<Vec<_>>(),
            );
            builder.set_column_dictionary_enabled(path, false)
        })
        .build()
}

fn flush(name: &str, batches: &[RecordBatch], rounds: usize) {
    let props = store_properties();
    let schema = batches[0].schema();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let only = std::env::var("FLUSH_COLUMNS").ok();
    let skipped = |name: &str| {
        only.as_ref()
            .is_some_and(|o| !o.split(',').any(|c| c == name))
    };
    let whole_rounds = if only.is_some() { 1 } else { rounds };
    let (whole, bytes) = best(
        whole_rounds,
        || (),
        |()| {
            let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone()))
                .expect("writer");
            for batch in batches {
                writer.write(batch).expect("write");
            }
            writer.into_inner().expect("close").len()
        },
    );
    println!(
        "{name}: {rows} spans, {:.2} ms, {bytes} bytes ({:.1} B/span)",
        whole.as_secs_f64() * 1e3,
        bytes as f64 / rows as f64
    );
    // The levels of each top-level column (what `compute_leaves` takes), best of N.
    let mut levels: Vec<(Duration, String)> = Vec::new();
    for (f, field) in schema.fields().iter().enumerate() {
        if skipped(&format!("levels:{}", field.name())) {
            continue;
        }
        let (took, _) = best(
            rounds,
            || (),
            |()| {
                batches
                    .iter()
                    .map(|b| compute_leaves(field, b.column(f)).expect("leaves").len())
                    .sum()
            },
        );
        levels.push((took, field.name().clone()));
    }
    let all: f64 = levels.iter().map(|l| l.0.as_secs_f64() * 1e3).sum();
    levels.sort_by_key(|l| std::cmp::Reverse(l.0));
    println!("  levels: {all:.3} ms in all");
    for (took, name) in levels.iter().take(8) {
        println!("  {:>8.3} ms levels of {name}", took.as_secs_f64() * 1e3);
    }
    // Each leaf's pieces, one per batch, and its path.
    let mut leaves: Vec<(String, Vec<ArrowLeafColumn>)> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let mut leaf = 0;
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let pieces = compute_leaves(field, column).expect("leaves");
            let count = pieces.len();
            for (k, piece) in pieces.into_iter().enumerate() {
                if b == 0 {
                    let path = if count == 1 {
                        field.name().clone()
                    } else {
                        format!("{}[{k}]", field.name())
                    };
                    leaves.push((path, Vec::new()));
                }
                leaves[leaf].1.push(piece);
                leaf += 1;
            }
        }
    }
    let (_, factory) = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone()))
        .and_then(|w| w.into_serialized_writer())
        .expect("writer");
    let mut sum = 0.0;
    let mut times = Vec::new();
    for (i, (path, pieces)) in leaves.iter().enumerate() {
        if skipped(path) {
            continue;
        }
        // A column's writer is made before its clock starts: making all of a row
        // group's writers (the bloom filter's bits among them) is not this column's.
        let writer = || {
            factory
                .create_column_writers(0)
                .expect("writers")
                .swap_remove(i)
        };
        let (took, bytes) = best(rounds, writer, |mut writer| {
            for piece in pieces {
                writer.write(piece).expect("write");
            }
            writer.close().expect("close").close().bytes_written as usize
        });
        sum += took.as_secs_f64() * 1e3;
        times.push((took, bytes, path));
    }
    times.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (took, bytes, path) in times {
        println!(
            "  {:>8.3} ms {bytes:>9} B  {path}",
            took.as_secs_f64() * 1e3
        );
    }
    println!(
        "  {sum:>8.3} ms in all, column by column ({:.0} ns a span)",
        sum * 1e6 / rows as f64
    );
}
