//! `GET /metrics` as Prometheus sees it: `promtool check metrics` passes on the
//! exposition, and the real Prometheus server (Debian package `prometheus`, installed by
//! `.ci/run`) scrapes it and answers the exact counts the test sent through its HTTP
//! query API.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{
    blocking_get, eventually, int, numbered_spans, temp_data_dir, text, trace_request, Server,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::Value;

fn metrics_text(server: &Server) -> String {
    let (status, body) = blocking_get(&format!("{}/metrics", server.api)).expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("UTF-8 exposition")
}

/// The value of the one sample of `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn binary(name: &str) -> String {
    let found = Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: install the Debian package prometheus (bash .ci/run does)"
    );
    name.to_owned()
}

/// A real Prometheus scraping `target` every second, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        Prometheus::start_with(
            dir,
            &format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: swarmscope\n    static_configs:\n      - targets: ['{target}']\n"
            ),
            &[],
        )
    }

    /// A Prometheus that scrapes nothing and takes remote writes at `/api/v1/write`.
    fn start_receiver(dir: &Path) -> Prometheus {
        Prometheus::start_with(
            dir,
            "global:\n  scrape_interval: 1m\n",
            &["--web.enable-remote-write-receiver"],
        )
    }

    fn start_with(dir: &Path, config_text: &str, args: &[&str]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text).expect("write prometheus.yml");
        // A free port, as the OS hands it out; Prometheus takes it right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The values of an instant query, as `(labels, value)`.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("{}/api/v1/query?query={}", self.url, percent_encode(promql));
        let Ok((200, body)) = blocking_get(&path) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| {
                        let value = r["value"][1].as_str()?.parse().ok()?;
                        Some((r["metric"].clone(), value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Prometheus {
    /// The `status` and `error` Prometheus answers to an instant query.
    fn check(&self, promql: &str) -> (String, String) {
        let path = format!("{}/api/v1/query?query={}", self.url, percent_encode(promql));
        let (_, body) = blocking_get(&path).expect("query Prometheus");
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        (
            v["status"].as_str().unwrap_or_default().to_owned(),
            v["error"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What `promtool check metrics` says of `exposition`, less the spanmetrics
/// connector's own name (see the callers).
fn promtool_problems(exposition: &str) -> Vec<String> {
    // promtool reads the exposition from standard input.
    let mut check = Command::new(binary("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin
            .write_all(exposition.as_bytes())
            .expect("write exposition");
    }
    let checked = check.wait_with_output().expect("promtool output");
    // Its exit status is not read: the one lint it always raises (above) fails it.
    String::from_utf8_lossy(&checked.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&checked.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            *l != "traces_span_metrics_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\""
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn prometheus_scrapes_the_exact_counts_and_promtool_accepts_the_exposition() {
    let (tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);

    // 17 spans over gRPC in three requests, 5 over HTTP.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc.clone())
            .await
            .expect("connect");
        for (n, first) in [(5, 0), (5, 5), (7, 10)] {
            client
                .export(trace_request(numbered_spans("scraped", first, n)))
                .await
                .expect("export");
        }
    });
    // The HTTP ones are an agent's claims and model calls, for the analytics series.
    let claims = numbered_spans("scraped", 100, 5)
        .into_iter()
        .enumerate()
        .map(|(i, mut span)| {
            span.attributes = vec![
                text("gen_ai.agent.id", "agent-1"),
                text("coordination.team", "red"),
                text("coordination.work.id", &format!("W{i}")),
                text("coordination.work.event", "claim"),
                text("gen_ai.request.model", "gpt-4o"),
                int("gen_ai.usage.input_tokens", 100),
            ];
            span
        })
        .collect();
    let (status, _) = server.post_traces(&trace_request(claims).encode_to_vec());
    assert_eq!(status, 200);
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").as_i64(),
        Some(22)
    );

    let text = metrics_text(&server);
    let accepted = |transport| {
        sample(
            &text,
            "swarmscope_receiver_accepted_spans_total",
            &[("receiver", "otlp"), ("transport", transport)],
        )
    };
    assert_eq!(accepted("grpc"), Some(17.0), "{text}");
    assert_eq!(accepted("http"), Some(5.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "swarmscope_store_buffered_rows",
            &[("table", "spans")]
        ),
        Some(22.0)
    );
    // The test's count, and the start's two reads of the history (claims, alerts).
    assert_eq!(
        sample(&text, "swarmscope_queries_total", &[("outcome", "ok")]),
        Some(3.0)
    );
    for family in [
        "swarmscope_receiver_request_duration_seconds",
        "swarmscope_wal_fsync_duration_seconds",
        "swarmscope_wal_group_commit_records",
        "swarmscope_store_flush_duration_seconds",
        "swarmscope_store_parquet_files",
        "swarmscope_store_compactions_total",
        "swarmscope_query_duration_seconds",
        "swarmscope_memory_used_bytes",
        "swarmscope_store_quarantined_files",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }

    // The one lint promtool raises is the spanmetrics connector's own name, which the
    // SPEC keeps so that dashboards built for the connector work unchanged.
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool check metrics: {problems:?}");

    // The real server scrapes it and answers the exact count.
    let target = server.api.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(tmp.path(), &target);
    let scraped = eventually("Prometheus to scrape swarmscope", || {
        let results =
            prometheus.query("swarmscope_receiver_accepted_spans_total{transport=\"grpc\"}");
        results
            .first()
            .map(|(labels, value)| (labels.clone(), *value))
    });
    assert_eq!(scraped.1, 17.0);
    assert_eq!(scraped.0["job"], "swarmscope");
    assert_eq!(scraped.0["receiver"], "otlp");
    let total = prometheus.query("sum(swarmscope_receiver_accepted_spans_total)");
    assert_eq!(total.first().map(|(_, v)| *v), Some(22.0));
    // Derived series: span metrics over every span, the claims per team, the tokens.
    let query = |promql: &str| prometheus.query(promql).first().map(|(_, v)| *v);
    assert_eq!(
        query("sum(traces_span_metrics_calls_total{span_name=\"scraped\"})"),
        Some(22.0)
    );
    assert_eq!(
        query("sum(traces_span_metrics_duration_milliseconds_count)"),
        Some(22.0)
    );
    assert_eq!(
        query("swarmscope_work_items_total{team=\"red\",event=\"claim\"}"),
        Some(5.0)
    );
    assert_eq!(
        query("sum(gen_ai_client_token_usage_sum{gen_ai_token_type=\"input\"})"),
        Some(500.0)
    );

    // Every panel of the Grafana dashboard is valid PromQL over these series.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/swarmscope.json"),
        )
        .expect("dashboards/swarmscope.json"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 15, "{} panel queries", exprs.len());
    for expr in exprs {
        // Grafana's `$__rate_interval` is at least four scrape intervals.
        let promql = expr.replace("$__rate_interval", "1m");
        let (status, error) = prometheus.check(&promql);
        assert_eq!(status, "success", "{promql}: {error}");
    }
}

/// A meter provider exporting to swarmscope over gRPC as service `planner` of namespace
/// `swarm`, with `temporality`.
fn meter_provider(
    server: &Server,
    temporality: opentelemetry_sdk::metrics::Temporality,
) -> opentelemetry_sdk::metrics::SdkMeterProvider {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(&server.grpc)
        .with_temporality(temporality)
        .build()
        .expect("metric exporter");
    let reader = PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("planner")
        .with_attributes([
            opentelemetry::KeyValue::new("service.namespace", "swarm"),
            opentelemetry::KeyValue::new("service.instance.id", "planner-1"),
            opentelemetry::KeyValue::new("host.name", "node-7"),
        ])
        .build();
    opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build()
}

#[test]
fn otlp_metrics_from_the_sdk_are_translated_and_scraped_by_prometheus() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::metrics::Temporality;

    let (tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Cumulative: a counter and a histogram in seconds.
    let provider = rt.block_on(async { meter_provider(&server, Temporality::Cumulative) });
    let meter = provider.meter("swarm-meter");
    let completed = meter
        .u64_counter("work.items.completed")
        .with_unit("{item}")
        .build();
    completed.add(2, &[KeyValue::new("team", "red")]);
    completed.add(3, &[KeyValue::new("team", "red")]);
    completed.add(7, &[KeyValue::new("team", "blue")]);
    let latency = meter
        .f64_histogram("tool.call.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 1.0])
        .build();
    for v in [0.05, 0.5, 0.6, 5.0] {
        latency.record(v, &[KeyValue::new("tool", "grep")]);
    }
    provider.shutdown().expect("shutdown");
    // Delta: two exports of a token counter, added up.
    let provider = rt.block_on(async { meter_provider(&server, Temporality::Delta) });
    let tokens = provider
        .meter("swarm-meter")
        .u64_counter("agent.tokens")
        .with_unit("{token}")
        .build();
    tokens.add(40, &[]);
    provider.force_flush().expect("flush");
    tokens.add(2, &[]);
    provider.shutdown().expect("shutdown");
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM metrics WHERE metric_name = 'agent.tokens'")
            .as_i64(),
        Some(2)
    );

    // The observer translates off the acknowledgement path: wait for its last point.
    let text = eventually("the delta counter on /metrics", || {
        let text = metrics_text(&server);
        (sample(&text, "agent_tokens_total", &[]) == Some(42.0)).then_some(text)
    });
    assert_eq!(
        sample(
            &text,
            "work_items_completed_total",
            &[
                ("team", "red"),
                ("job", "swarm/planner"),
                ("instance", "planner-1"),
                ("otel_scope_name", "swarm-meter")
            ]
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "target_info",
            &[("job", "swarm/planner"), ("host_name", "node-7")]
        ),
        Some(1.0),
        "{text}"
    );
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool check metrics: {problems:?}");

    let target = server.api.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(tmp.path(), &target);
    // Scraped series keep swarmscope's `job`/`instance` as `exported_job`/
    // `exported_instance`, as Prometheus does unless `honor_labels` is set.
    let query = |promql: &str| {
        eventually(&format!("Prometheus to answer {promql}"), || {
            prometheus.query(promql).first().map(|(_, v)| *v)
        })
    };
    assert_eq!(
        query("work_items_completed_total{team=\"red\",exported_job=\"swarm/planner\"}"),
        5.0
    );
    assert_eq!(query("sum(work_items_completed_total)"), 12.0);
    assert_eq!(query("agent_tokens_total"), 42.0);
    assert_eq!(
        query("tool_call_duration_seconds_bucket{tool=\"grep\",le=\"1\"}"),
        3.0
    );
    assert_eq!(query("tool_call_duration_seconds_count"), 4.0);
    assert_eq!(query("tool_call_duration_seconds_sum"), 6.15);
    assert_eq!(
        query("histogram_quantile(0.5, tool_call_duration_seconds_bucket)"),
        0.55
    );
    assert_eq!(
        query("count(target_info{exported_instance=\"planner-1\",host_name=\"node-7\"})"),
        1.0
    );
}

#[test]
fn remote_write_delivers_the_same_series_to_a_real_prometheus() {
    let (tmp, dir) = temp_data_dir();
    let prometheus = Prometheus::start_receiver(tmp.path());
    let server = common::Server::start_with(
        &dir,
        common::Options {
            extra: format!(
                "[sinks.prometheus_remote_write]\nurl = \"{}/api/v1/write\"\ninterval = \"1s\"\n",
                prometheus.url
            ),
            ..common::Options::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc.clone())
            .await
            .expect("connect");
        client
            .export(trace_request(numbered_spans("scraped", 0, 9)))
            .await
            .expect("export");
    });
    // A translated OTLP counter and histogram go the same way.
    let provider = rt.block_on(async {
        meter_provider(&server, opentelemetry_sdk::metrics::Temporality::Cumulative)
    });
    {
        use opentelemetry::metrics::MeterProvider as _;
        let meter = provider.meter("swarm-meter");
        let completed = meter.u64_counter("work.items.completed").build();
        completed.add(4, &[opentelemetry::KeyValue::new("team", "red")]);
        let latency = meter
            .f64_histogram("tool.call.duration")
            .with_unit("s")
            .with_boundaries(vec![1.0])
            .build();
        latency.record(0.5, &[]);
        latency.record(2.0, &[]);
    }
    provider.shutdown().expect("shutdown");

    let query = |promql: &str| {
        eventually(&format!("Prometheus to answer {promql}"), || {
            prometheus
                .query(promql)
                .first()
                .map(|(l, v)| (l.clone(), *v))
        })
    };
    let (labels, value) =
        query("swarmscope_receiver_accepted_spans_total{transport=\"grpc\"} == 9");
    assert_eq!(value, 9.0);
    assert_eq!(labels["job"], "swarmscope");
    assert_eq!(labels["instance"], server.api.trim_start_matches("http://"));
    assert_eq!(
        query("sum(traces_span_metrics_calls_total{span_name=\"scraped\"}) == 9").1,
        9.0
    );
    let (labels, value) = query("work_items_completed_total{team=\"red\"}");
    assert_eq!(value, 4.0);
    assert_eq!(labels["job"], "swarm/planner");
    assert_eq!(labels["instance"], "planner-1");
    assert_eq!(query("tool_call_duration_seconds_bucket{le=\"1\"}").1, 1.0);
    assert_eq!(query("tool_call_duration_seconds_count == 2").1, 2.0);
    assert_eq!(
        query("count(target_info{job=\"swarm/planner\",host_name=\"node-7\"})").1,
        1.0
    );
}
