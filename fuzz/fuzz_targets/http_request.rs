//! The OTLP/HTTP request path, end to end into a real store: the first bytes choose the
//! signal, content type and content encoding, the rest is the body. Every answer must
//! be one of the statuses the receiver documents, and nothing may panic.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use swarmscope_collector::pipeline::Pipeline;
use swarmscope_collector::receivers::http::router;
use swarmscope_sinks::store::{ParquetStore, StorageConfig, WalFsync};
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    store: ParquetStore,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = runtime.block_on(async {
            ParquetStore::open(StorageConfig {
                data_dir: dir.path().to_owned(),
                wal_fsync: WalFsync::Never,
                // Small, so that the store soon refuses and the run stays small.
                max_buffered_bytes: 16 * 1024 * 1024,
                ..StorageConfig::default()
            })
            .await
            .expect("store")
        });
        let app = router(Pipeline::new(store.clone()), 1024 * 1024, None);
        Harness {
            runtime,
            app,
            store,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [signal, content_type, encoding, body @ ..] = data else {
        return;
    };
    let path = ["/v1/traces", "/v1/metrics", "/v1/logs"][usize::from(*signal) % 3];
    let content_type = [
        "application/x-protobuf",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
    ][usize::from(*content_type) % 4];
    let mut request = http::Request::post(path).header("content-type", content_type);
    let body = match encoding % 4 {
        0 => body.to_vec(),
        1 => {
            request = request.header("content-encoding", "gzip");
            // Half of the gzip cases compress the input, so that decoding is reached.
            if encoding & 4 == 0 {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(body).expect("gzip");
                gz.finish().expect("gzip")
            } else {
                body.to_vec()
            }
        }
        2 => {
            request = request.header("content-encoding", "zstd");
            body.to_vec()
        }
        _ => {
            request = request.header("content-encoding", "br");
            body.to_vec()
        }
    };
    let request = request.body(Body::from(body)).expect("request");
    let h = harness();
    let response = h
        .runtime
        .block_on(h.app.clone().oneshot(request))
        .expect("infallible");
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 400 | 413 | 415 | 503),
        "unexpected status {status}"
    );
    // A full store refuses before decoding; flush, so that later inputs reach the decoders.
    if status == 503 {
        h.runtime.block_on(h.store.flush()).expect("flush");
    }
});
