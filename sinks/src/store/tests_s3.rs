//! The store with its tables on a real S3 API: moto's server (`moto[server]`, pinned in
//! `tests/lakehouse/requirements.txt`, single-threaded by `tests/lakehouse/s3_server.py`),
//! the one `.ci/run` starts (`SWARMSCOPE_S3_ENDPOINT`) or one started here. The same
//! behaviour as on local disk: round trip, both crash points, compaction and vacuum, the
//! log's cleanup; and a store that ignores conditional writes is refused at start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::tests::{
    crash_between_the_commit_and_the_logs_truncation, crash_between_the_upload_and_the_commit,
    spans_at, stored_rows, HOUR,
};
use super::*;

/// A moto S3 server for one test (or the shared one `.ci/run` started).
struct Moto {
    child: Option<Child>,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Moto {
    /// The server, or `None` (with a loud message) where it cannot start: no venv.
    fn start() -> Option<Moto> {
        if let Ok(endpoint) = std::env::var("SWARMSCOPE_S3_ENDPOINT") {
            return Some(Moto {
                child: None,
                endpoint,
            });
        }
        let python = std::env::var_os("SWARMSCOPE_PYTHON").map_or_else(
            || {
                let home = std::env::var_os("HOME").unwrap_or_default();
                PathBuf::from(home).join(".cache/swarmscope-venv/bin/python")
            },
            PathBuf::from,
        );
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/lakehouse/s3_server.py"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let skipped = |why: String| {
            eprintln!("\n*** SKIPPED: {why}; the S3 tests need the tests' venv (bash .ci/run makes it) ***\n");
        };
        let child = match Command::new(&python)
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                skipped(format!("{}: {e}", python.display()));
                return None;
            }
        };
        let mut moto = Moto {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                skipped(format!("the S3 API ({script}) exited with {status}"));
                return None;
            }
            assert!(Instant::now() < deadline, "the S3 API did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    /// A new bucket, and the store's config for a prefix in it.
    async fn config(&self, data_dir: &Path) -> StorageConfig {
        let bucket = format!("swarmscope-{}", uuid::Uuid::new_v4().simple());
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        StorageConfig {
            data_dir: data_dir.to_owned(),
            url: Some(format!("s3://{bucket}/tables")),
            s3: S3Config {
                region: Some("us-east-1".into()),
                endpoint: Some(self.endpoint.clone()),
                access_key_id: Some("test".into()),
                secret_access_key: Some("test".into()),
                session_token: None,
                allow_http: true,
            },
            ..StorageConfig::default()
        }
    }
}

/// The objects under `relative` (a path from `table`'s root) in the bucket, in order.
async fn listed(store: &ParquetStore, table: Table, relative: &str) -> Vec<ObjectPath> {
    use futures::TryStreamExt;
    let remote = store.remote().unwrap();
    let prefix = remote.object(table, relative);
    let mut listed: Vec<ObjectPath> = remote
        .store()
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    listed.sort();
    listed
}

/// The objects of `table`'s data files in the bucket.
async fn objects(store: &ParquetStore, table: Table) -> Vec<ObjectPath> {
    let mut listed = listed(store, table, "").await;
    listed.retain(|p| p.as_ref().ends_with(".parquet") && !p.as_ref().contains("_delta_log"));
    listed
}

macro_rules! moto_or_skip {
    () => {
        match Moto::start() {
            Some(moto) => moto,
            None => return,
        }
    };
}

#[tokio::test]
async fn rows_round_trip_through_the_bucket() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = moto.config(dir.path()).await;
    let s = ParquetStore::open(config.clone()).await.unwrap();
    s.append(Table::SPANS, spans_at(&[HOUR, HOUR + 1, 2 * HOUR]))
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.buffered_rows(Table::SPANS), 0);
    assert_eq!(objects(&s, Table::SPANS).await.len(), 2, "one per hour");
    assert_eq!(stored_rows(&s, Table::SPANS).await, 3);
    // Nothing is left staged on local disk once committed.
    assert!(layout::scan_table(&s.inner.tables_dir, Table::SPANS, false)
        .unwrap()
        .is_empty());
    assert_eq!(s.stored_files(Table::SPANS).0, 2);
    assert!(s.stored_files(Table::SPANS).1 > 0);
    drop(s);

    let reopened = ParquetStore::open(config).await.unwrap();
    assert_eq!(reopened.recovery().rows, 0);
    assert_eq!(reopened.snapshot(Table::SPANS).unwrap().files.len(), 2);
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 3);
}

#[tokio::test]
async fn on_s3_a_crash_between_the_upload_and_the_commit_loses_and_doubles_nothing() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = moto.config(dir.path()).await;
    crash_between_the_upload_and_the_commit(config.clone()).await;
    // What was staged on local disk is gone; the bucket holds the flush's file only.
    let s = ParquetStore::open(config).await.unwrap();
    assert!(layout::scan_table(&s.inner.tables_dir, Table::SPANS, false)
        .unwrap()
        .is_empty());
    assert_eq!(objects(&s, Table::SPANS).await.len(), 1);
}

#[tokio::test]
async fn on_s3_a_crash_between_the_commit_and_the_logs_truncation_doubles_nothing() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    crash_between_the_commit_and_the_logs_truncation(moto.config(dir.path()).await).await;
}

#[tokio::test]
async fn on_s3_merges_commit_and_vacuum_deletes_their_inputs() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        compaction_min_files: 4,
        ..moto.config(dir.path()).await
    };
    let s = ParquetStore::open(config.clone()).await.unwrap();
    for f in 0..5u64 {
        let starts: Vec<u64> = (0..2).map(|i| HOUR + f * 1000 + i).collect();
        s.append(Table::SPANS, spans_at(&starts)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.compact().await.unwrap(), 5);
    assert_eq!(s.snapshot(Table::SPANS).unwrap().files.len(), 1);
    assert_eq!(stored_rows(&s, Table::SPANS).await, 10);
    // The inputs stay for readers of older versions until vacuum_after has passed.
    assert_eq!(objects(&s, Table::SPANS).await.len(), 6);
    assert_eq!(s.vacuum().await.unwrap(), 0);
    assert!(layout::scan_table(&s.inner.tables_dir, Table::SPANS, false)
        .unwrap()
        .is_empty());
    drop(s);

    let s = ParquetStore::open(StorageConfig {
        vacuum_after: Duration::ZERO,
        ..config
    })
    .await
    .unwrap();
    assert_eq!(s.vacuum().await.unwrap(), 5);
    assert_eq!(objects(&s, Table::SPANS).await.len(), 1);
    assert_eq!(stored_rows(&s, Table::SPANS).await, 10);
}

/// A quiet partition of a table on S3 is laid out like a local one: its files fetched,
/// merged into full row groups and the output uploaded under its laid-out name.
#[tokio::test]
async fn on_s3_a_quiet_partition_is_laid_out() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        compaction_quiet_after: Duration::ZERO,
        ..moto.config(dir.path()).await
    };
    let s = ParquetStore::open(config).await.unwrap();
    for f in 0..3u64 {
        let starts: Vec<u64> = (0..2).map(|i| HOUR + f * 1000 + i).collect();
        s.append(Table::SPANS, spans_at(&starts)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.compact().await.unwrap(), 3);
    let files = s.snapshot(Table::SPANS).unwrap().files;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].is_laid_out(), "{files:?}");
    let laid_out: Vec<ObjectPath> = objects(&s, Table::SPANS)
        .await
        .into_iter()
        .filter(|o| o.as_ref().ends_with("-optimized.parquet"))
        .collect();
    assert_eq!(laid_out.len(), 1, "{laid_out:?}");
    assert_eq!(stored_rows(&s, Table::SPANS).await, 6);
    // Laid out: nothing more to do.
    assert_eq!(s.compact().await.unwrap(), 0);
}

/// An S3 API that takes every write, `If-None-Match: *` or not (as some older
/// S3-compatible stores do), and answers every other request as empty.
async fn store_ignoring_conditional_writes() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    // One response per request head; the probe's bodies are small and
                    // arrive with their heads.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                        let body = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() < end + 4 + body {
                            break;
                        }
                        seen.drain(..end + 4 + body);
                        let status = if head.starts_with("delete") {
                            "204 No Content"
                        } else {
                            "200 OK"
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nETag: \"0\"\r\nContent-Length: 0\r\n\r\n"
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_store_that_ignores_conditional_writes_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = store_ignoring_conditional_writes().await;
    let config = StorageConfig {
        data_dir: dir.path().to_owned(),
        url: Some("s3://careless/tables".into()),
        s3: S3Config {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            session_token: None,
            allow_http: true,
        },
        ..StorageConfig::default()
    };
    let error = match ParquetStore::open(config).await {
        Ok(_) => panic!("a store without conditional writes was taken"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("s3://careless/tables/") && error.contains("ignores conditional writes"),
        "{error}"
    );
    assert!(
        !dir.path().join("_wal").exists(),
        "nothing was written: {error}"
    );
}

/// The versions of the commits (`NNN.json`) in `table`'s `_delta_log/` in the bucket.
async fn commit_versions(store: &ParquetStore, table: Table) -> Vec<u64> {
    let mut versions: Vec<u64> = listed(store, table, "_delta_log")
        .await
        .iter()
        .filter_map(|p| p.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn on_s3_the_log_before_a_checkpoint_is_deleted_past_its_retention() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        delta_log_retention: Duration::ZERO,
        ..moto.config(dir.path()).await
    };
    let s = ParquetStore::open(config.clone()).await.unwrap();
    for i in 0..55u64 {
        s.append(Table::SPANS, spans_at(&[HOUR + i])).await.unwrap();
        s.flush().await.unwrap();
    }
    // Version 49 wrote the checkpoint; the commits before it are gone.
    assert_eq!(
        commit_versions(&s, Table::SPANS).await,
        (49..=55).collect::<Vec<_>>()
    );
    assert_eq!(stored_rows(&s, Table::SPANS).await, 55);
    drop(s);
    let reopened = ParquetStore::open(config).await.unwrap();
    assert_eq!(reopened.recovery().rows, 0);
    assert_eq!(stored_rows(&reopened, Table::SPANS).await, 55);
}
