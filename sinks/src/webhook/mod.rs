//! Alert webhooks: every `alerts` row (an alert firing or resolved) is POSTed to each
//! `[[alerts.webhooks]]` entry as an Alertmanager webhook payload ([`payload`]),
//! signed with HMAC-SHA256 when a secret is set. As Stripe and Slack do, the signed
//! content is `<timestamp>.<body>`, the timestamp (Unix seconds) sent beside it in
//! `X-Swarmscope-Timestamp`: a receiver that refuses old timestamps cannot be replayed
//! a captured request.
//!
//! Each webhook is a [`Sink`] behind its own disk queue, so a receiver that is down
//! delays nothing else and its pending notifications survive a restart. A timeout, a
//! connection failure, 429 or 5xx is retried with backoff (honouring `Retry-After`);
//! another 4xx is a permanent refusal, counted and logged.

mod config;
mod payload;

use std::time::Duration;

use arrow::array::RecordBatch;
use swarmscope_processors::analytics::alerts::{alerts_from_rows, ALERTS};
use swarmscope_processors::schema::Table;

pub use config::WebhookConfig;
pub use payload::payload;

use crate::sink::{Sink, SinkError};

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
    config: WebhookConfig,
    external_url: String,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(
        name: String,
        config: WebhookConfig,
        external_url: String,
    ) -> Result<WebhookSink, String> {
        let client = crate::tls::http_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_ref(),
        )
        .map_err(|e| format!("webhook {name}: {e}"))?;
        Ok(WebhookSink {
            name,
            config,
            external_url,
            client,
        })
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, table: Table) -> bool {
        table == ALERTS
    }

    async fn send(&self, batches: &[(Table, RecordBatch)]) -> Result<(), SinkError> {
        let mut alerts = Vec::new();
        for (_, batch) in batches {
            let rows = alerts_from_rows(batch).map_err(|e| SinkError::Permanent(e.to_string()))?;
            alerts.extend(rows);
        }
        if !self.config.send_resolved {
            alerts.retain(|a| a.status == "firing");
        }
        if alerts.is_empty() {
            return Ok(());
        }
        let body = payload(
            &self.name,
            &self.external_url,
            &alerts,
            self.config.max_alerts,
        )
        .to_string();
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
            .map_err(|e| SinkError::Retryable {
                message: format!("POST {}: {e}", self.config.url),
                after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {}: {status}", self.config.url);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(SinkError::Retryable {
                after: crate::sink::retry_after(response.headers()),
                message,
            })
        } else {
            Err(SinkError::Permanent(message))
        }
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
        };
        assert!(c.validate(0).is_ok());
        assert_eq!(c.name(2), "webhook-2");
        c.url = "not a url".into();
        assert!(c
            .validate(1)
            .unwrap_err()
            .starts_with("alerts.webhooks[1].url"));
        c.url = "https://example.com/hook".into();
        assert!(c.validate(1).is_ok());
        c.url = "ftp://example.com/hook".into();
        assert!(c
            .validate(1)
            .unwrap_err()
            .starts_with("alerts.webhooks[1].url"));
        c.url = "https://example.com/hook".into();
        c.hmac_secret = Some(String::new());
        assert!(c
            .validate(1)
            .unwrap_err()
            .starts_with("alerts.webhooks[1].hmac_secret"));
        c.hmac_secret = None;
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(c
            .validate(1)
            .unwrap_err()
            .starts_with("alerts.webhooks[1].ca_file"));
    }
}
