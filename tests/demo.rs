//! `swarmscope demo` against the real collector: the injected anomaly on the tools
//! service fires an alert that reaches a webhook and the `alerts` table, and the
//! swarm's velocity, cost and health are there to query.

mod common;

use std::process::Command;

use common::{binary, blocking_get, eventually, temp_data_dir, Options, Server, WebhookReceiver};
use serde_json::Value;

#[test]
fn the_demos_anomaly_fires_an_alert_to_a_webhook_and_the_analytics_fill_up() {
    let receiver = WebhookReceiver::start(Vec::new());
    let (_tmp, dir) = temp_data_dir();
    // Evaluations every second over ten, so a 20-second run has a minute's worth of
    // history to learn from before its anomaly.
    let extra = format!(
        "[processors.health]\ninterval_seconds = 1\nwindow_seconds = 10\ngrace_ms = 300\n\
         [processors.anomaly]\nmin_samples = 4\n\
         [[alerts.webhooks]]\nurl = \"{}\"\ngroup_wait = \"200ms\"\ngroup_interval = \"1s\"\n",
        receiver.url
    );
    let server = Server::start_with(
        &dir,
        Options {
            extra,
            ..Default::default()
        },
    );
    let demo = Command::new(binary())
        .args([
            "demo",
            "--endpoint",
            &server.grpc,
            "--duration",
            "20",
            "--agents",
            "9",
            "--seed",
            "3",
        ])
        .output()
        .expect("run demo");
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(stdout.contains("items completed"), "{stdout}");

    let fired = eventually("the anomaly's alert at the webhook", || {
        receiver.requests().into_iter().find_map(|r| {
            let payload = r.json();
            let alerts = payload["alerts"].as_array()?.clone();
            alerts.into_iter().find(|a| {
                a["status"] == "firing"
                    && a["labels"]["service"] == "tools"
                    && a["labels"]["alertname"] == "ErrorRateAnomaly"
            })
        })
    });
    let fingerprint = fired["fingerprint"].as_str().expect("fingerprint");
    let stored = server.rows(&format!(
        "SELECT status FROM alerts WHERE fingerprint = '{fingerprint}' ORDER BY time"
    ));
    assert_eq!(stored.first(), Some(&vec![Value::from("firing")]));

    // The rest of the quick start: velocity, cost per agent, health.
    let completed = server.scalar("SELECT sum(completed_items) FROM velocity");
    assert!(completed.as_i64().unwrap_or(0) > 10, "{completed}");
    let agents_with_cost =
        server.scalar("SELECT count(DISTINCT agent_id) FROM genai_usage WHERE cost_usd > 0");
    assert!(
        agents_with_cost.as_i64().unwrap_or(0) >= 5,
        "{agents_with_cost}"
    );
    let conflicts = server.scalar("SELECT count(*) FROM coordination_events WHERE conflict");
    assert!(conflicts.as_i64().unwrap_or(0) >= 1, "{conflicts}");
    let (status, body) =
        blocking_get(&format!("{}/api/v1/health?scope=overall", server.api)).expect("health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_slice(&body).expect("JSON");
    let score = health["scores"][0]["score"]
        .as_f64()
        .expect("an overall score");
    assert!((0.0..=100.0).contains(&score));
    assert!(server.stop().success());
}
