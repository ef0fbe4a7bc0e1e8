//! Compaction under queries: small files are merged while queries run, and every
//! query sees every row exactly once (each reads one version of the table).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    let server = Server::start_with(
        &dir,
        Options {
            flush_rows: Some(SPANS_PER_FILE as usize),
            flush_interval_ms: Some(50),
            storage_extra: "compaction_min_files = 1000\ncompaction_quiet_after = \"1000h\"\n"
                .into(),
            ..Default::default()
        },
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
        (now > 0.0 && stable_since.elapsed() > std::time::Duration::from_secs(2)).then_some(())
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

/// Merges committed since the server started.
const MERGES: &str = "swarmscope_store_compactions_total";
