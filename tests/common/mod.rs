//! Starts the real `swarmscope` binary for end-to-end tests.
//!
//! Every server listens on port 0 (the OS picks free ports) and reports the bound
//! addresses on stdout, which is how the tests find it; nothing races for a port.

#![allow(dead_code)]

pub mod elasticsearch;
pub mod otlp_receiver;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::Value;

/// Settings a test may change; everything else is the default config.
#[derive(Default, Clone)]
pub struct Options {
    pub otlp_token: Option<String>,
    pub api_token: Option<String>,
    pub max_request_bytes: Option<usize>,
    pub flush_rows: Option<usize>,
    pub flush_interval_ms: Option<u64>,
    /// More `[storage]` lines, e.g. `max_buffered_bytes = 1000`.
    pub storage_extra: String,
    /// More `[receivers.otlp]` lines.
    pub otlp_extra: String,
    /// More `[api]` lines. With TLS on the API, set `api_tls` so that readiness is
    /// not polled over plain HTTP.
    pub api_extra: String,
    pub api_tls: bool,
    /// `[query]` lines, e.g. `timeout_ms = 2000`.
    pub query_extra: String,
    /// `storage.retention_hours`; by default high enough to keep the tests' fixed
    /// timestamps.
    pub retention_hours: Option<u64>,
    /// Whole sections appended to the config, e.g. `[processors.velocity]` lines.
    pub extra: String,
}

pub struct Server {
    child: Option<Child>,
    pub grpc: String,
    pub http: String,
    pub api: String,
    pub data_dir: PathBuf,
    pub options: Options,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_swarmscope")
}

fn config_text(data_dir: &Path, o: &Options) -> String {
    let mut otlp = String::from("grpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n");
    if let Some(t) = &o.otlp_token {
        otlp += &format!("auth_token = \"{t}\"\n");
    }
    if let Some(n) = o.max_request_bytes {
        otlp += &format!("max_request_bytes = {n}\n");
    }
    otlp += &o.otlp_extra;
    let mut api = String::from("address = \"127.0.0.1:0\"\n");
    if let Some(t) = &o.api_token {
        api += &format!("auth_token = \"{t}\"\n");
    }
    api += &o.api_extra;
    let mut storage = format!("data_dir = {:?}\n", data_dir.display().to_string());
    if let Some(n) = o.flush_rows {
        storage += &format!("flush_rows = {n}\n");
    }
    // Long by default, so tests decide when data moves to Parquet.
    storage += &format!(
        "flush_interval_ms = {}\n",
        o.flush_interval_ms.unwrap_or(3_600_000)
    );
    // Test data carries fixed timestamps from 2018-2023; keep them.
    storage += &format!(
        "retention_hours = {}\n",
        o.retention_hours.unwrap_or(1_000_000)
    );
    storage += &o.storage_extra;
    format!(
        "[receivers.otlp]\n{otlp}\n[api]\n{api}\n[storage]\n{storage}\n[query]\n{}\n{}",
        o.query_extra, o.extra
    )
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, Options::default())
    }

    pub fn start_with(data_dir: &Path, options: Options) -> Server {
        let server = Server::announced(data_dir, options);
        server.wait_ready();
        server
    }

    /// Started, and returned as soon as it has printed its three addresses, without
    /// waiting for `/readyz`.
    pub fn announced(data_dir: &Path, options: Options) -> Server {
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config_text(data_dir, &options)).expect("write config");
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("SWARMSCOPE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start swarmscope");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut grpc, mut http, mut api) = (None, None, None);
        while grpc.is_none() || http.is_none() || api.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("swarmscope did not report its addresses");
            let addr = line.rsplit(' ').next().unwrap_or_default().to_owned();
            if line.contains("OTLP gRPC listening on") {
                grpc = Some(addr);
            } else if line.contains("OTLP HTTP listening on") {
                http = Some(addr);
            } else if line.contains("API listening on") {
                api = Some(addr);
            }
        }
        Server {
            child: Some(child),
            grpc: format!("http://{}", grpc.unwrap_or_default()),
            http: format!("http://{}", http.unwrap_or_default()),
            api: format!("http://{}", api.unwrap_or_default()),
            data_dir: data_dir.to_owned(),
            options,
        }
    }

    fn wait_ready(&self) {
        if self.options.api_tls {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = blocking_get(&format!("{}/readyz", self.api)).map(|(s, _)| s == 200);
            if matches!(ok, Ok(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        child.wait().expect("wait")
    }

    /// SIGTERM, then the exit status if the process ends within `limit` (it is killed
    /// otherwise), and how long it took.
    pub fn stop_within(mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        signal(child.id(), "TERM");
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait().expect("wait") {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        (None, started.elapsed())
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }

    /// `VmRSS` and `VmHWM` (peak) of the server process, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `POST /api/v1/query`, JSON; panics unless the answer is 200.
    /// Posts a protobuf trace export to the OTLP HTTP receiver: status and body.
    pub fn post_traces(&self, body: &[u8]) -> (u16, Vec<u8>) {
        blocking_request(
            "POST",
            &format!("{}/v1/traces", self.http),
            &[("content-type", "application/x-protobuf".into())],
            body,
        )
        .expect("POST /v1/traces")
    }

    /// Sends `spans` of `service` over OTLP/HTTP; they must be accepted.
    pub fn send_spans(&self, service: &str, spans: Vec<Span>) {
        use prost::Message;
        let body = service_request(service, spans).encode_to_vec();
        let (status, answer) = self.post_traces(&body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }

    pub fn sql(&self, sql: &str) -> Value {
        let (status, body) = self.query_raw(sql, "application/json");
        assert_eq!(
            status,
            200,
            "query {sql:?} failed: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("JSON answer")
    }

    /// The value of the first sample on `/metrics` whose line starts with `series`
    /// (a name, or a name and its labels); 0 when there is none.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = blocking_get(&format!("{}/metrics", self.api)).expect("metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The rows of a query.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let v = self.sql(sql);
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").clone())
            .collect()
    }

    /// The single value of a one-row, one-column query.
    pub fn scalar(&self, sql: &str) -> Value {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone()
    }

    pub fn query_raw(&self, sql: &str, accept: &str) -> (u16, Vec<u8>) {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("accept", accept.to_owned()),
        ];
        if let Some(t) = &self.options.api_token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        blocking_request(
            "POST",
            &format!("{}/api/v1/query", self.api),
            &headers,
            body.as_bytes(),
        )
        .expect("query request")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `kill -<name>` to `pid`.
pub fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{name} {pid}");
}

/// CPU time (user + system) process `pid` has used so far, from `/proc`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on every Linux the tests run on.
    Duration::from_millis(ticks * 10)
}

/// How many cores `pid` keeps busy over `window`.
pub fn cores_busy(pid: u32, window: Duration) -> f64 {
    let before = cpu_time(pid);
    std::thread::sleep(window);
    (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64()
}

/// A one-shot HTTP/1.1 request over a plain socket, so helpers need no runtime.
pub fn blocking_request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request_head(method, host, &path, headers, body.len()).as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// The head of a one-shot HTTP/1.1 request (`connection: close`).
pub fn request_head(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, String)],
    body_len: usize,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {body_len}\r\n"
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head + "\r\n"
}

/// Status and body (de-chunked) of a raw HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = || std::io::Error::other("malformed HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&rest[..line_end])
                .map_err(|_| bad())?
                .trim(),
            16,
        )
        .map_err(|_| bad())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

pub fn blocking_get(url: &str) -> std::io::Result<(u16, Vec<u8>)> {
    blocking_request("GET", url, &[], b"")
}

/// A string attribute.
pub fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A trace export request: `spans` of `service` under one scope.
pub fn service_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut request = trace_request(spans);
    request.resource_spans[0].resource = Some(Resource {
        attributes: vec![text("service.name", service)],
        ..Default::default()
    });
    request
}

/// A trace export request: `spans` under one resource and one scope.
/// `swarmscope config check` of `config_text`: asserts it exits 2 and returns what it
/// printed on standard error.
pub fn config_check_error(dir: &Path, config_text: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("check.toml");
    std::fs::write(&config, config_text).expect("config");
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A file of `tests/fixtures/tls` (a certificate for localhost and 127.0.0.1).
pub fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Spans `first..first + n` named `name`, ending now: span id `i + 1`, each its own
/// trace.
pub fn numbered_spans(name: &str, first: u64, n: u64) -> Vec<Span> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    (first..first + n)
        .map(|i| Span {
            trace_id: [[7u8; 8], (i + 1).to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: name.to_owned(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000,
            ..Default::default()
        })
        .collect()
}

pub fn trace_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Every Parquet file below `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The interpreter of the tests' Python venv (the pins of `tests/genai/` and
/// `tests/lakehouse/`): `SWARMSCOPE_PYTHON`, else where `.ci/run` makes it. `needed_by`
/// names the tests in the message when it is missing.
pub fn python(needed_by: &str) -> PathBuf {
    let path = venv_python();
    assert!(
        path.exists(),
        "{} not found: {needed_by} need the tests' Python venv (bash .ci/run makes it)",
        path.display()
    );
    path
}

/// `SWARMSCOPE_PYTHON`, else the interpreter of the venv `.ci/run` makes.
pub fn venv_python() -> PathBuf {
    std::env::var_os("SWARMSCOPE_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/swarmscope-venv/bin/python")
        },
        PathBuf::from,
    )
}

/// A data directory inside a fresh temp dir (the config file sits beside it).
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    (tmp, dir)
}

/// Polls `f` until it returns `Some`, for conditions that become true asynchronously.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, Duration::from_secs(30), f)
}

/// [`eventually`] with its own deadline, for conditions whose every check is slow.
pub fn eventually_within<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One request a [`WebhookReceiver`] took.
#[derive(Clone, Debug)]
pub struct Received {
    /// `METHOD /path HTTP/1.1`.
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A local HTTP/1.1 server that records every request and answers each with the next
/// status of its script (200 once the script is used up), unless told to answer
/// otherwise for a while ([`WebhookReceiver::answer`]).
pub struct WebhookReceiver {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answer: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl WebhookReceiver {
    pub fn start(script: Vec<u16>) -> WebhookReceiver {
        WebhookReceiver::start_on("127.0.0.1:0", script)
    }

    /// A receiver on `address` (a port a test kept free, say).
    pub fn start_on(address: &str, script: Vec<u16>) -> WebhookReceiver {
        let listener = std::net::TcpListener::bind(address).expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&received);
        let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let told = std::sync::Arc::clone(&answer);
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming().map_while(Result::ok) {
                let Some(mut request) = read_request(&stream) else {
                    continue;
                };
                let status = match told.load(std::sync::atomic::Ordering::SeqCst) {
                    0 => script.next().unwrap_or(200),
                    status => status,
                };
                request.status = status;
                log.lock().expect("log").push(request);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = std::io::Write::write_all(&mut &stream, answer.as_bytes());
            }
        });
        WebhookReceiver {
            url,
            received,
            answer,
        }
    }

    /// Answers every request with `status` from now on (0: back to the script).
    pub fn answer(&self, status: u16) {
        self.answer
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

pub(crate) fn read_request(stream: &std::net::TcpStream) -> Option<Received> {
    use std::io::Read;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let request_line = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        request_line,
        headers,
        body,
        status: 0,
    })
}
