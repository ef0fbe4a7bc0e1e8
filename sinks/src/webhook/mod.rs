//! Alert webhooks: the `alerts` rows (alerts firing or resolved) are grouped as
//! Alertmanager groups them ([`groups`]: `group_by`, `group_wait`, `group_interval`,
//! `repeat_interval`) and each group's current state is POSTed to each
//! `[[alerts.webhooks]]` entry as an Alertmanager webhook payload ([`payload`]), signed
//! with HMAC-SHA256 when a secret is set. As Stripe and Slack do, the signed content is
//! `<timestamp>.<body>`, the timestamp (Unix seconds) sent beside it in
//! `X-Swarmscope-Timestamp`: a receiver that refuses old timestamps cannot be replayed
//! a captured request.
//!
//! The rows reach the sink through its disk queue like any sink's; taken, they update
//! the groups, and a notifier task of the sink's own sends what is due. A receiver that
//! fails (a timeout, a refused connection, any status but 2xx, a 4xx during a redeploy
//! or a key rotation included) is tried again with the group's state at that time,
//! never with a backlog of stale notifications. On start the groups are seeded with the
//! alerts restored as firing ([`WebhookSink::seed`]).

mod config;
mod groups;
mod payload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use swarmscope_processors::analytics::alerts::{alerts_from_rows, Alert, ALERTS};
use swarmscope_processors::schema::Table;

pub use config::WebhookConfig;
pub use groups::{Groups, Notification, Timing};
pub use payload::payload;

use crate::sink::{Delivery, InProcess, Sink, SinkError, SinkMetrics};
use swarmscope_processors::ConfigError;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Swarmscope-Signature";
/// The header carrying the signed timestamp, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Swarmscope-Timestamp";

/// `sha256=<hex>` of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha256={}", hex::encode(context.sign().as_ref()))
}

pub struct WebhookSink {
    name: String,
    groups: Arc<Mutex<Groups>>,
}

/// What the notifier task needs to send.
struct Notifier {
    name: String,
    config: WebhookConfig,
    external_url: String,
    client: reqwest::Client,
    groups: Arc<Mutex<Groups>>,
    metrics: SinkMetrics,
}

fn lock(groups: &Mutex<Groups>) -> std::sync::MutexGuard<'_, Groups> {
    // Every update leaves the groups consistent: a panic mid-way loses nothing.
    groups.lock().unwrap_or_else(|e| e.into_inner())
}

impl WebhookSink {
    /// The sink, with its notifier task spawned on the current Tokio runtime.
    pub fn new(
        name: String,
        config: WebhookConfig,
        external_url: String,
        metrics: SinkMetrics,
        section: &str,
    ) -> Result<WebhookSink, ConfigError> {
        let client = crate::tls::http_client(
            section,
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )?;
        let groups = Arc::new(Mutex::new(Groups::new(
            config.group_by.clone(),
            config.send_resolved,
            config.timing(),
        )));
        let notifier = Notifier {
            name: name.clone(),
            config,
            external_url,
            client,
            groups: Arc::clone(&groups),
            metrics,
        };
        tokio::spawn(notifier.run());
        Ok(WebhookSink { name, groups })
    }

    /// Takes the alerts firing at start (restored from `alerts`), and those resolved
    /// shortly before it (whose notification a stop may have cut short): their groups
    /// are notified after `group_wait`, as after any restart of Alertmanager. A
    /// receiver may hear a resolution twice, never not at all.
    pub fn seed(&self, firing: &[Alert], resolved: &[Alert]) {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        for alert in firing {
            groups.apply(alert.clone(), now);
        }
        for alert in resolved {
            let mut was = alert.clone();
            was.status = "firing".into();
            groups.apply(was, now);
            groups.apply(alert.clone(), now);
        }
    }
}

impl Notifier {
    /// Sends what is due, a few times per `group_wait`, until the runtime stops.
    async fn run(self) {
        let t = self.config.timing();
        let tick = (t.group_wait.min(t.group_interval) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            let due = lock(&self.groups).due(Instant::now());
            for n in due {
                match self.post(&n).await {
                    Ok(()) => lock(&self.groups).delivered(&n, Instant::now()),
                    Err((message, retry_after)) => {
                        tracing::warn!(sink = %self.name, group = %n.key, error = %message, "webhook notification failed; trying again");
                        self.metrics.retried(&self.name);
                        lock(&self.groups).failed(&n, Instant::now(), retry_after);
                    }
                }
            }
        }
    }

    /// Posts `n`; a failure says why, and how long the receiver asked to wait.
    async fn post(&self, n: &Notification) -> Result<(), (String, Option<Duration>)> {
        let body = payload(&self.name, &self.external_url, n, self.config.max_alerts).to_string();
        let mut request = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.hmac_secret {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request
                .header(TIMESTAMP_HEADER, now)
                .header(SIGNATURE_HEADER, signature(secret, now, body.as_bytes()));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| (format!("POST {}: {e}", self.config.url), None))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let after = crate::sink::retry_after(response.headers());
            Err((format!("POST {}: {status}", self.config.url), after))
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        table == ALERTS
    }

    /// Takes the transitions into the groups; the notifier sends them.
    fn encode<'a>(
        &'a self,
        batches: &[(Table, RecordBatch)],
    ) -> Result<Box<dyn Delivery + 'a>, SinkError> {
        let mut alerts = Vec::new();
        for (_, batch) in batches {
            let rows = alerts_from_rows(batch).map_err(|e| SinkError::Permanent(e.to_string()))?;
            alerts.extend(rows);
        }
        Ok(Box::new(InProcess::new(move || {
            let now = Instant::now();
            let mut groups = lock(&self.groups);
            for alert in alerts {
                groups.apply(alert, now);
            }
            Ok(())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_timestamp_and_body_in_hex() {
        // The timestamp and a dot are signed before the body, as one message.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let whole = ring::hmac::sign(&key, b"1700000000.what do ya want for nothing?");
        assert_eq!(
            signature("Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            format!("sha256={}", hex::encode(whole.as_ref()))
        );
        assert_ne!(
            signature("Jefe", 1_700_000_001, b"what do ya want for nothing?"),
            signature("Jefe", 1_700_000_000, b"what do ya want for nothing?")
        );
    }

    #[test]
    fn only_http_and_https_urls_with_a_timeout_are_accepted() {
        let mut c = WebhookConfig {
            name: None,
            url: "http://127.0.0.1:9/hook".into(),
            ca_file: None,
            hmac_secret: None,
            send_resolved: true,
            timeout_ms: 10,
            max_alerts: 0,
            group_by: vec!["alertname".into()],
            group_wait: "30s".into(),
            group_interval: "5m".into(),
            repeat_interval: "4h".into(),
        };
        assert!(c.validate(0).is_ok());
        assert_eq!(c.name(2), "webhook-2");
        c.url = "not a url".into();
        assert_eq!(c.validate(1).unwrap_err().key(), "alerts.webhooks[1].url");
        c.url = "https://example.com/hook".into();
        assert!(c.validate(1).is_ok());
        c.url = "ftp://example.com/hook".into();
        assert_eq!(c.validate(1).unwrap_err().key(), "alerts.webhooks[1].url");
        c.url = "https://example.com/hook".into();
        c.hmac_secret = Some(String::new());
        assert_eq!(
            c.validate(1).unwrap_err().key(),
            "alerts.webhooks[1].hmac_secret"
        );
        c.hmac_secret = None;
        c.group_interval = "soon".into();
        assert_eq!(
            c.validate(1).unwrap_err().key(),
            "alerts.webhooks[1].group_interval"
        );
        c.group_interval = "5m".into();
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(
            c.validate(1).unwrap_err().key(),
            "alerts.webhooks[1].ca_file"
        );
    }
}
