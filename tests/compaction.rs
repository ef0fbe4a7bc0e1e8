//! Compaction under queries: small files are merged while queries run, and every
//! query sees every row exactly once (each reads one version of the table).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{blocking_request, parquet_files, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const FILES: u64 = 40;
const SPANS_PER_FILE: u64 = 50;

/// Request `r`: its spans all in the same partition hour as every other request's.
fn request(r: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_FILE)
        .map(|i| Span {
            trace_id: [r.to_be_bytes(), [1; 8]].concat(),
            span_id: (r * 1000 + i + 1).to_be_bytes().to_vec(),
            name: format!("op-{}", i % 7),
            start_time_unix_nano: 1_700_000_000_000_000_000 + r * 1_000_000 + i,
            end_time_unix_nano: 1_700_000_000_000_000_000 + r * 1_000_000 + i + 500,
            ..Default::default()
        })
        .collect();
    common::trace_request(spans).encode_to_vec()
}

#[test]
fn queries_during_compaction_see_every_row_exactly_once() {
    let (_tmp, dir) = temp_data_dir();
    // Phase one: FILES small files in one partition, compaction held off.
    let server = flushing_each_request(
        &dir,
        "compaction_min_files = 1000\ncompaction_quiet_after = \"1000h\"\n",
    );
    for r in 0..FILES {
        let (status, body) = blocking_request(
            "POST",
            &format!("{}/v1/traces", server.http),
            &[("content-type", "application/x-protobuf".into())],
            &request(r),
        )
        .expect("export");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        // One flush per request, so one file each.
        common::eventually("the request's file", || {
            (parquet_files(&dir.join("spans")).len() as u64 > r).then_some(())
        });
    }
    assert!(server.stop().success());
    let files = parquet_files(&dir.join("spans"));
    assert_eq!(files.len() as u64, FILES);
    let total_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("size").len())
        .sum();
    let expected = (FILES * SPANS_PER_FILE) as i64;

    // Phase two: merges of about three files at a time, one per flusher tick, and
    // then merges of the merged files, while two clients query without pause.
    let target = 3 * total_bytes / FILES + 1;
    let server = Arc::new(Server::start_with(
        &dir,
        Options {
            flush_interval_ms: Some(50),
            storage_extra: format!(
                "compaction_min_files = 2\ncompaction_target_bytes = {target}\n"
            ),
            ..Default::default()
        },
    ));
    let done = Arc::new(AtomicBool::new(false));
    let queriers: Vec<_> = (0..2)
        .map(|_| {
            let server = Arc::clone(&server);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let merges_before = server.metric(MERGES);
                    let count = server.scalar("SELECT count(*) FROM spans");
                    let distinct = server.scalar("SELECT count(DISTINCT span_id) FROM spans");
                    answers.push((merges_before, count, distinct));
                }
                answers
            })
        })
        .collect();
    // Compaction is done when no merge has been committed for a while.
    let mut last = 0.0;
    let mut stable_since = std::time::Instant::now();
    common::eventually("compaction to settle", || {
        let now = server.metric(MERGES);
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        }
        (now > 0.0 && stable_since.elapsed() > Duration::from_secs(2)).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    let answers: Vec<_> = queriers
        .into_iter()
        .flat_map(|q| q.join().expect("querier"))
        .collect();

    for (merges, count, distinct) in &answers {
        assert_eq!(count.as_i64(), Some(expected), "after {merges} merges");
        assert_eq!(distinct.as_i64(), Some(expected), "after {merges} merges");
    }
    let during = answers
        .iter()
        .filter(|(merges, _, _)| *merges > 0.0 && *merges < last)
        .count();
    assert!(
        during > 0,
        "no query ran while compaction was under way ({} queries)",
        answers.len()
    );
    eprintln!(
        "{} queries, {during} of them during compaction; {last} merges",
        answers.len()
    );
    // Merges of about three files each, then of the merged files.
    assert!(last >= (FILES / 4) as f64, "{last} merges of {FILES} files");
}

/// A server that flushes each request of [`request`] into a file of its own, with
/// `storage_extra` in its `[storage]` section.
fn flushing_each_request(dir: &std::path::Path, storage_extra: &str) -> Server {
    Server::start_with(
        dir,
        Options {
            flush_rows: Some(SPANS_PER_FILE as usize),
            flush_interval_ms: Some(50),
            storage_extra: storage_extra.into(),
            ..Default::default()
        },
    )
}

/// Merges committed since the server started.
const MERGES: &str = "swarmscope_store_compactions_total";

/// An hour no agent writes to any more is laid out for reading: its flushes' files end
/// as one file of full row groups, named as laid out; data coming late into it is laid
/// out in turn; and SQL counts every row once throughout.
#[test]
fn a_quiet_hour_is_laid_out_in_full_row_groups() {
    let (_tmp, dir) = temp_data_dir();
    // No merges while the hour is written; every row group under half of 4096 rows
    // is written again once the hour has been quiet for a second.
    let server = flushing_each_request(
        &dir,
        "row_group_rows = 4096\ncompaction_min_files = 1000\n\
         compaction_quiet_after = \"1s\"\nvacuum_after = \"0s\"\n",
    );
    const REQUESTS: u64 = 12;
    let send = |r| {
        let (status, body) = server.post_traces(&request(r));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    };
    for r in 0..REQUESTS {
        send(r);
    }
    // Every file on disk laid out (the inputs of merges vacuumed), holding `rows` rows
    // between them, and as many counted by SQL: each file's row groups.
    // A merge waits for the hour to be quiet and for the next compaction pass; with
    // the tests of a CI run sharing the cores, that can take longer than the 30 s of
    // `eventually` on a loaded machine.
    let laid_out = |rows: u64| {
        common::eventually_within("the hour laid out", Duration::from_secs(120), || {
            let files = parquet_files(&dir.join("spans"));
            if !files
                .iter()
                .all(|f| f.to_string_lossy().ends_with("-optimized.parquet"))
            {
                return None;
            }
            let row_groups = files
                .iter()
                .map(|f| row_group_rows(f))
                .collect::<Option<Vec<_>>>()?;
            let on_disk: u64 = row_groups.iter().flatten().sum();
            let counted = server.scalar("SELECT count(*) FROM spans").as_i64();
            (on_disk == rows && counted == Some(rows as i64)).then_some(row_groups)
        })
    };
    let row_groups = laid_out(REQUESTS * SPANS_PER_FILE);
    assert_eq!(row_groups, vec![vec![REQUESTS * SPANS_PER_FILE]]);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT span_id) FROM spans")
            .as_i64(),
        Some((REQUESTS * SPANS_PER_FILE) as i64)
    );

    // Spans from an agent whose clock is behind, into the laid-out hour.
    send(REQUESTS);
    laid_out((REQUESTS + 1) * SPANS_PER_FILE);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT span_id) FROM spans")
            .as_i64(),
        Some(((REQUESTS + 1) * SPANS_PER_FILE) as i64)
    );
}

/// The rows of each row group of the Parquet file at `path`, from its footer; `None`
/// once vacuum has deleted it.
fn row_group_rows(path: &std::path::Path) -> Option<Vec<u64>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).ok()?;
    let reader = SerializedFileReader::new(file).expect("a Parquet footer");
    Some(
        reader
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows() as u64)
            .collect(),
    )
}
