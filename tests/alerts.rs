//! Health scores and alerts against the real binary: a stored score agrees with the
//! the reference's SQL recomputation, and an error-rate jump fires an alert that reaches a
//! local webhook receiver (signed, retried after a 500), lands in `alerts`, and
//! resolves once errors stop.

mod common;

use std::time::{Duration, SystemTime};

use common::{
    blocking_get, eventually, int, temp_data_dir, text, Options, Server, WebhookReceiver,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use prost::Message;
use serde_json::Value;

const HEALTH_SQL: &str = include_str!("../docs/health-score.sql");

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A span of `service` that started `ago_ms` before now and lasted `ms`.
fn span(n: u64, ago_ms: u64, ms: u64, error: bool, attributes: Vec<KeyValue>) -> Span {
    let start = now_ns() - ago_ms * 1_000_000;
    Span {
        trace_id: [[9u8; 8], n.to_be_bytes()].concat(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: "call".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "failed".into(),
        }),
        attributes,
        ..Default::default()
    }
}

/// A server on `dir` with `extra` config.
fn server_with(dir: &std::path::Path, extra: impl Into<String>) -> Server {
    Server::start_with(
        dir,
        Options {
            extra: extra.into(),
            ..Default::default()
        },
    )
}

/// Groups notified 200 ms after their first alert, changes told a second apart.
const FAST_GROUPS: &str = "group_wait = \"200ms\"\ngroup_interval = \"1s\"\n";

/// Evaluated every second over the last ten.
const FAST_HEALTH: &str =
    "[processors.health]\ninterval_seconds = 1\nwindow_seconds = 10\ngrace_ms = 300\n";

#[test]
fn a_stored_health_score_matches_the_references_sql() {
    let reference = include_str!("../docs/analytics.md");
    assert!(
        reference.contains(HEALTH_SQL.trim()),
        "docs/analytics.md must show docs/health-score.sql as it is"
    );
    let (_tmp, dir) = temp_data_dir();
    let server = server_with(&dir, FAST_HEALTH);
    // 20 calls: 5 failed, 4 slow (tolerated), 2 very slow; 4 claims by three agents,
    // one of them conflicting, and a completion and a failure.
    let mut spans: Vec<Span> = (0..20)
        .map(|n| {
            let ms = match n {
                0..=3 => 2_500,
                4..=5 => 9_000,
                _ => 40,
            };
            span(
                n,
                1_500,
                ms,
                n % 4 == 1,
                vec![text("gen_ai.agent.id", &format!("agent-{}", n % 3))],
            )
        })
        .collect();
    let claim = |n: u64, agent: &str, item: &str, event: &str| {
        span(
            n,
            1_400,
            5,
            false,
            vec![
                text("gen_ai.agent.id", agent),
                text("coordination.work.id", item),
                text("coordination.work.event", event),
                int("coordination.work.story_points", 2),
            ],
        )
    };
    spans.extend([
        claim(100, "agent-0", "W1", "claim"),
        claim(101, "agent-1", "W1", "claim"),
        claim(102, "agent-1", "W2", "claim"),
        claim(103, "agent-2", "W3", "claim"),
        claim(104, "agent-0", "W1", "complete"),
        claim(105, "agent-1", "W2", "fail"),
    ]);
    server.send_spans("api", spans);

    let row = eventually("a health row that counts every call", || {
        let rows = server.rows(
            "SELECT score, CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), input_alerts_firing, \
             input_calls, input_claims, conflicts_score, liveness_score \
             FROM health WHERE scope = 'service' AND scope_name = 'api' AND input_calls = 26 \
             ORDER BY time LIMIT 1",
        );
        rows.into_iter().next()
    });
    let score = row[0].as_f64().expect("score");
    assert!((0.0..=100.0).contains(&score));
    assert!(
        score < 100.0,
        "errors and slow calls must cost something: {row:?}"
    );
    assert_eq!(row[5], 4, "claims: {row:?}");
    assert_eq!(
        row[6].as_f64(),
        Some(75.0),
        "one claim in four conflicted: {row:?}"
    );
    // Only agent-2 still holds work (W3), and it was seen in the window.
    assert_eq!(row[7].as_f64(), Some(100.0), "liveness: {row:?}");
    let sql = HEALTH_SQL
        .replace("$service", "api")
        .replace("$start", row[1].as_str().expect("start"))
        .replace("$end", row[2].as_str().expect("end"))
        .replace("$alerts", &row[3].to_string());
    let recomputed = server.scalar(&sql).as_f64().expect("recomputed score");
    assert!(
        (recomputed - score).abs() < 1e-9,
        "SQL says {recomputed}, the collector said {score}"
    );

    // The API has the breakdown.
    let (status, body) = blocking_get(&format!(
        "{}/api/v1/health?scope=service&name=api",
        server.api
    ))
    .expect("GET /api/v1/health");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    let api = &v["scores"][0];
    assert_eq!(api["name"], "api");
    assert!(api["components"]["errors"].as_f64().is_some(), "{v}");
    assert!(api["inputs"]["calls"].as_u64().is_some(), "{v}");
    assert!(server.stop().success());
}

/// Verifies `sha256=<hex>` against `<timestamp>.<body>` with the shared secret.
fn signature_verifies(secret: &str, timestamp: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = [timestamp.as_bytes(), b".", body].concat();
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

/// Steady traffic of `service`: 20 calls every 100 ms, ending now; while `phase` is 1,
/// four in five fail; at 3 it stops.
fn steady_traffic(
    http: String,
    service: &'static str,
    phase: std::sync::Arc<std::sync::atomic::AtomicU8>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        loop {
            let phase = phase.load(std::sync::atomic::Ordering::Relaxed);
            if phase == 3 {
                return;
            }
            let spans = (0..20)
                .map(|i| {
                    n += 1;
                    span(n, 30, 30, phase == 1 && i % 5 != 0, vec![])
                })
                .collect();
            let request = common::service_request(service, spans);
            let _ = common::blocking_request(
                "POST",
                &format!("{http}/v1/traces"),
                &[("content-type", "application/x-protobuf".into())],
                &request.encode_to_vec(),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn a_span_from_a_clock_a_day_ahead_blinds_neither_health_nor_alerting() {
    let (_tmp, dir) = temp_data_dir();
    let server = server_with(
        &dir,
        format!("{FAST_HEALTH}[processors.anomaly]\nmin_samples = 4\n"),
    );
    // One span from another service whose clock is a day ahead, before anything else.
    let mut ahead = span(1 << 40, 0, 30, false, vec![]);
    ahead.start_time_unix_nano += 86_400 * 1_000_000_000;
    ahead.end_time_unix_nano += 86_400 * 1_000_000_000;
    server.send_spans("skewed", vec![ahead]);
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let traffic = steady_traffic(
        server.http.clone(),
        "checkout",
        std::sync::Arc::clone(&phase),
    );
    let evaluated = |n: i64| {
        let sql =
            "SELECT count(*) FROM health WHERE scope = 'service' AND scope_name = 'checkout' \
                   AND input_calls > 0";
        eventually("fresh health rows for checkout", || {
            (server.scalar(sql).as_i64()? >= n).then_some(())
        });
    };
    evaluated(6);
    let (status, body) = blocking_get(&format!("{}/api/v1/health?scope=service", server.api))
        .expect("GET /api/v1/health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_slice(&body).expect("JSON");
    let names: Vec<&str> = health["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["checkout"], "{health}");
    // An error burst fires, as it does without the skewed span.
    phase.store(1, std::sync::atomic::Ordering::Relaxed);
    eventually("ErrorRateAnomaly for checkout", || {
        let sql = "SELECT count(*) FROM alerts WHERE alert_name = 'ErrorRateAnomaly' \
                   AND labels['service'] = 'checkout' AND status = 'firing'";
        (server.scalar(sql).as_i64()? >= 1).then_some(())
    });
    phase.store(3, std::sync::atomic::Ordering::Relaxed);
    traffic.join().expect("traffic");
    // The span is stored, counted as left out, and nothing else is.
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM spans WHERE service_name = 'skewed'")
            .as_i64(),
        Some(1)
    );
    let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
    let metrics = String::from_utf8(metrics).expect("UTF-8");
    let skipped = "swarmscope_analytics_skipped_total{processor=\"signals\",reason=\"future\"} 1";
    assert!(metrics.lines().any(|l| l == skipped), "{metrics}");
    assert!(server.stop().success());
}

#[test]
fn an_error_rate_jump_fires_a_signed_webhook_that_is_retried_stored_and_resolved() {
    // The receiver fails the first notification.
    let receiver = WebhookReceiver::start(vec![500]);
    let (_tmp, dir) = temp_data_dir();
    let config = format!(
        "{FAST_HEALTH}[processors.anomaly]\nmin_samples = 4\n\n\
         [[alerts.webhooks]]\nname = \"ops\"\nurl = \"{}\"\nhmac_secret = \"s3cret\"\n{FAST_GROUPS}",
        receiver.url
    );
    let server = server_with(&dir, config);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let traffic = steady_traffic(
        server.http.clone(),
        "checkout",
        std::sync::Arc::clone(&stop),
    );
    // Warm-up: the detectors have seen their minimum of normal intervals.
    eventually("six evaluated intervals", || {
        let n = server
            .scalar(
                "SELECT count(*) FROM health WHERE scope = 'service' AND scope_name = 'checkout'",
            )
            .as_i64()?;
        (n >= 6).then_some(())
    });
    stop.store(1, std::sync::atomic::Ordering::Relaxed);
    let firing = eventually("the alert at the webhook", || {
        receiver
            .requests()
            .into_iter()
            .filter(|r| r.json()["status"] == "firing")
            .nth(1)
    });
    stop.store(2, std::sync::atomic::Ordering::Relaxed);
    let payload = firing.json();
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["receiver"], "ops");
    let alert = &payload["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "ErrorRateAnomaly");
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(alert["status"], "firing");
    let fingerprint = alert["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    let signature = firing.header("x-swarmscope-signature").expect("signature");
    let timestamp = firing.header("x-swarmscope-timestamp").expect("timestamp");
    let sent: u64 = timestamp.parse().expect("Unix seconds");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(sent <= now && now - sent < 300, "{sent} against {now}");
    assert!(signature_verifies(
        "s3cret",
        timestamp,
        signature,
        &firing.body
    ));
    assert!(!signature_verifies(
        "other",
        timestamp,
        signature,
        &firing.body
    ));
    // A replay under another timestamp does not verify.
    let later = (sent + 1).to_string();
    assert!(!signature_verifies(
        "s3cret",
        &later,
        signature,
        &firing.body
    ));
    // The first attempt got a 500: the same notification came again.
    let attempts = receiver.requests();
    assert_eq!(attempts[0].body, firing.body);

    let resolved = eventually("the resolution at the webhook", || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.json()["status"] == "resolved")
    });
    stop.store(3, std::sync::atomic::Ordering::Relaxed);
    traffic.join().expect("traffic");
    assert_eq!(
        resolved.json()["alerts"][0]["fingerprint"],
        fingerprint.as_str()
    );
    let stored = server.rows(&format!(
        "SELECT status, alert_name, severity, labels['service'], detector FROM alerts \
         WHERE fingerprint = '{fingerprint}' ORDER BY time"
    ));
    assert_eq!(
        stored,
        vec![
            vec![
                "firing".into(),
                "ErrorRateAnomaly".into(),
                "critical".into(),
                "checkout".into(),
                "ewma_mad".into()
            ],
            vec![
                "resolved".into(),
                "ErrorRateAnomaly".into(),
                "critical".into(),
                "checkout".into(),
                "ewma_mad".into()
            ],
        ] as Vec<Vec<Value>>
    );
    let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
    let metrics = String::from_utf8(metrics).expect("UTF-8");
    assert!(
        metrics
            .lines()
            .any(|l| l == "swarmscope_alerts_firing{severity=\"critical\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("swarmscope_sink_retries_total{sink=\"ops\"}")),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn notifications_for_a_dead_webhook_wait_on_disk_through_a_restart() {
    // A port with nobody listening: connections are refused.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let (_tmp, dir) = temp_data_dir();
    // Evaluated every second over the last two minutes: the alert cannot resolve
    // before the stop, however slowly the machine runs the test.
    let config = format!(
        "[processors.health]\ninterval_seconds = 1\nwindow_seconds = 120\ngrace_ms = 300\n\
         [[alerts.rules]]\nname = \"Traffic\"\nmetric = \"request_rate\"\nop = \">\"\nthreshold = 0\n\n\
         [[alerts.webhooks]]\nurl = \"http://{address}/hook\"\n{FAST_GROUPS}"
    );
    let options = Options {
        extra: config,
        ..Default::default()
    };
    let server = Server::start_with(&dir, options.clone());
    server.send_spans(
        "api",
        (0..10).map(|n| span(n, 100, 5, false, vec![])).collect(),
    );
    eventually("the rule's alert", || {
        let n = server
            .scalar("SELECT count(*) FROM alerts WHERE alert_name = 'Traffic'")
            .as_i64()?;
        (n >= 1).then_some(())
    });
    // The dead webhook holds nothing up: ingestion and queries go on.
    server.send_spans(
        "api",
        (10..20).map(|n| span(n, 100, 5, false, vec![])).collect(),
    );
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").as_i64(),
        Some(20)
    );
    eventually("the notifier's retries", || {
        let (_, metrics) = blocking_get(&format!("{}/metrics", server.api)).ok()?;
        let metrics = String::from_utf8(metrics).ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("swarmscope_sink_retries_total{sink=\"webhook-0\"}"))
            .then_some(())
    });
    assert!(server.stop().success());

    let restarted_ms = now_ns() / 1_000_000;
    let server = std::sync::Arc::new(Server::start_with(&dir, options));
    // Traffic goes on, and the receiver comes back once two evaluations after the
    // restart have seen it: the alert fires then, whether the restored one went on or
    // the first evaluation (before any traffic) resolved it and the next fired it
    // again. A notification carries the group's present state (docs/analytics.md).
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = std::thread::spawn({
        let server = std::sync::Arc::clone(&server);
        let sending = std::sync::Arc::clone(&sending);
        move || {
            let mut n = 100;
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                server.send_spans("api", vec![span(n, 100, 5, false, vec![])]);
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    eventually("two evaluations of the traffic after the restart", || {
        let n = server
            .scalar(&format!(
                "SELECT count(*) FROM health WHERE scope_name = 'api' \
                 AND time >= to_timestamp_millis({restarted_ms})"
            ))
            .as_i64()?;
        (n >= 2).then_some(())
    });
    let receiver = WebhookReceiver::start_on(&address, Vec::new());
    let delivered = eventually("the queued notification", || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.json()["alerts"][0]["labels"]["alertname"] == "Traffic")
    });
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    sender.join().expect("sender");
    assert_eq!(delivered.json()["status"], "firing");
    let server = std::sync::Arc::into_inner(server).expect("the sender is done");
    assert!(server.stop().success());
}

#[test]
fn liveness_misses_agents_that_went_silent_holding_work_not_those_that_finished() {
    let (_tmp, dir) = temp_data_dir();
    let server = server_with(&dir, FAST_HEALTH);
    let work = |n: u64, agent: &str, item: &str, event: &str| {
        span(
            n,
            10,
            5,
            false,
            vec![
                text("gen_ai.agent.id", agent),
                text("coordination.team", "red"),
                text("coordination.work.id", item),
                text("coordination.work.event", event),
            ],
        )
    };
    // Ten short-lived agents claim an item each and complete it; `stuck` claims one and
    // falls silent; `worker` claims one and keeps working.
    let mut spans: Vec<Span> = (0..10)
        .flat_map(|i| {
            let (agent, item) = (format!("short-{i}"), format!("S{i}"));
            [
                work(2 * i, &agent, &item, "claim"),
                work(2 * i + 1, &agent, &item, "complete"),
            ]
        })
        .collect();
    spans.push(work(100, "stuck", "W1", "claim"));
    spans.push(work(101, "worker", "W2", "claim"));
    server.send_spans("agents", spans);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = {
        let stop = std::sync::Arc::clone(&stop);
        let http = server.http.clone();
        std::thread::spawn(move || {
            let mut n = 1_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let request = common::service_request(
                    "agents",
                    vec![span(
                        n,
                        10,
                        5,
                        false,
                        vec![text("gen_ai.agent.id", "worker")],
                    )],
                );
                let _ = common::blocking_request(
                    "POST",
                    &format!("{http}/v1/traces"),
                    &[("content-type", "application/x-protobuf".into())],
                    &request.encode_to_vec(),
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Once the window (10 s) has passed `stuck`'s last word: one of two holders missed.
    let row = eventually("a health row missing the silent holder", || {
        server
            .rows(
                "SELECT input_agents_live, input_agents_known, liveness_score FROM health \
                 WHERE scope = 'team' AND scope_name = 'red' AND input_agents_live = 1 \
                 AND input_agents_known = 2 LIMIT 1",
            )
            .into_iter()
            .next()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    heartbeat.join().expect("heartbeat");
    assert_eq!(row[2].as_f64(), Some(50.0), "{row:?}");
    // The agents that finished never counted.
    let most = server.scalar("SELECT max(input_agents_known) FROM health WHERE scope = 'overall'");
    assert_eq!(most.as_i64(), Some(2));
    assert!(server.stop().success());
}

#[test]
fn a_group_is_told_its_present_state_after_its_receiver_recovers_and_stays_firing_while_one_alert_resolves(
) {
    // The receiver answers 500 first, then 404 (a redeploy) until told otherwise.
    let receiver = WebhookReceiver::start(vec![500]);
    let (_tmp, dir) = temp_data_dir();
    let rule = |name: &str, metric: &str, threshold: f64| {
        format!(
            "[[alerts.rules]]\nname = \"{name}\"\nmetric = \"{metric}\"\nscope = \"service\"\nop = \">\"\nthreshold = {threshold}\n\n"
        )
    };
    let config = format!(
        "{FAST_HEALTH}[processors.anomaly]\nenabled = false\n\n{}{}\
         [[alerts.webhooks]]\nurl = \"{}\"\ngroup_by = [\"service\"]\n{FAST_GROUPS}",
        rule("Traffic", "request_rate", 0.0),
        rule("Errors", "error_rate", 0.2),
        receiver.url
    );
    let server = server_with(&dir, config);
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(1));
    let traffic = steady_traffic(
        server.http.clone(),
        "checkout",
        std::sync::Arc::clone(&phase),
    );
    let stored = |name: &str, status: &str| {
        let sql = format!(
            "SELECT count(*) FROM alerts WHERE alert_name = '{name}' AND status = '{status}'"
        );
        eventually(&format!("{name} {status} in alerts"), || {
            (server.scalar(&sql).as_i64()? >= 1).then_some(())
        });
    };
    stored("Traffic", "firing");
    stored("Errors", "firing");
    eventually("the first attempt", || {
        (!receiver.requests().is_empty()).then_some(())
    });
    receiver.answer(404);
    // The errors stop while the receiver is away; Errors resolves, Traffic fires on.
    phase.store(0, std::sync::atomic::Ordering::Relaxed);
    stored("Errors", "resolved");
    let failed = receiver.requests().len();
    assert!(failed >= 2, "retried while refused: {failed}");
    receiver.answer(0);
    let told = eventually("a delivered notification", || {
        receiver.requests().into_iter().find(|r| r.status == 200)
    });
    phase.store(3, std::sync::atomic::Ordering::Relaxed);
    traffic.join().expect("traffic");
    let payload = told.json();
    assert_eq!(
        payload["groupKey"], "{}:{service=\"checkout\"}",
        "{payload}"
    );
    assert_eq!(
        payload["groupLabels"],
        serde_json::json!({"service": "checkout"})
    );
    // The group's present: Traffic firing, Errors resolved (told once); the whole
    // notification is firing while one of its alerts is.
    assert_eq!(payload["status"], "firing", "{payload}");
    let alerts: Vec<(String, String)> = payload["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                a["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        alerts,
        [
            ("Traffic".to_owned(), "firing".to_owned()),
            ("Errors".to_owned(), "resolved".to_owned())
        ]
    );
    // Nothing stale follows: no later notification has Errors firing.
    let requests = receiver.requests();
    let after = requests.iter().skip_while(|r| r.status != 200);
    for r in after {
        let stale = r.json()["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == "Errors" && a["status"] == "firing");
        assert!(!stale, "{}", r.json());
    }
    assert!(server.stop().success());
}
