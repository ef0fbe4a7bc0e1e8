//! A real S3 API for the tests that keep their tables on S3: moto's server
//! (`moto[server]`, pinned in `tests/lakehouse/requirements.txt`, run single-threaded by
//! `tests/lakehouse/s3_server.py`). `.ci/run` starts one and names it in
//! `SWARMSCOPE_S3_ENDPOINT`; without it, each test starts its own from the tests' venv,
//! and where even that cannot start, the test is skipped with a loud message.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3 {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl S3 {
    /// The server, or `None` after a loud message when it cannot start.
    pub fn start(needed_by: &str) -> Option<S3> {
        if let Ok(endpoint) = std::env::var("SWARMSCOPE_S3_ENDPOINT") {
            return Some(S3 {
                child: None,
                endpoint,
            });
        }
        let python = super::venv_python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lakehouse/s3_server.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&python)
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!(
                "\n*** SKIPPED {needed_by}: {} cannot run; the S3 tests need the tests' venv (bash .ci/run makes it) ***\n",
                python.display()
            );
            return None;
        };
        let mut s3 = S3 {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while super::blocking_get(&s3.endpoint).is_err() {
            let exited = s3.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                eprintln!(
                    "\n*** SKIPPED {needed_by}: the S3 API (moto, {script}) exited with {status}; the S3 tests need the tests' venv (bash .ci/run makes it) ***\n"
                );
                return None;
            }
            assert!(Instant::now() < deadline, "the S3 API did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s3)
    }

    /// `host:port`, as DuckDB's S3 secret takes it.
    pub fn host_port(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    /// A new, empty bucket.
    pub fn bucket(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bucket = format!("swarmscope-{}-{n}", std::process::id());
        let (status, body) =
            super::blocking_request("PUT", &format!("{}/{bucket}", self.endpoint), &[], b"")
                .expect("create a bucket");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        bucket
    }

    /// `[storage]` lines keeping the tables under `s3://<bucket>/tables`.
    pub fn storage_lines(&self, bucket: &str) -> String {
        format!(
            "url = \"s3://{bucket}/tables\"\n\
             s3 = {{ endpoint = \"{}\", region = \"us-east-1\", access_key_id = \"test\", \
             secret_access_key = \"test\", allow_http = true }}\n",
            self.endpoint
        )
    }

    /// The keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let url = format!(
                "{}/{bucket}?list-type=2&prefix={prefix}{token}",
                self.endpoint
            );
            let (status, body) = super::blocking_get(&url).expect("list the bucket");
            assert_eq!(status, 200);
            let body = String::from_utf8_lossy(&body).into_owned();
            keys.extend(
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split("</Key>").next())
                    .map(str::to_owned),
            );
            match body
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|s| s.split("</NextContinuationToken>").next())
            {
                Some(next) => token = format!("&continuation-token={next}"),
                None => return keys,
            }
        }
    }
}
