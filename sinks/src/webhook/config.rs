//! `[[alerts.webhooks]]`: where alert notifications go.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `receiver` of the payload, the sink's name in metrics and its queue's folder
    /// (`webhook-<n>` by default, n from 0 in file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http://` or `https://` URL the Alertmanager-style payload is POSTed to.
    pub url: String,
    /// PEM certificates to trust for an `https://` URL, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// When set, every request carries `X-Swarmscope-Timestamp: <Unix seconds>` and
    /// `X-Swarmscope-Signature: sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>`
    /// with this key. An empty key (an unset `${VAR}`) is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// Whether resolved alerts are sent too.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// A request not answered within this long is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Alerts per notification at most (0: all); the rest are counted in
    /// `truncatedAlerts`, as Alertmanager's `max_alerts`.
    #[serde(default)]
    pub max_alerts: usize,
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl WebhookConfig {
    /// The name of the `i`th webhook.
    pub fn name(&self, i: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("webhook-{i}"))
    }

    pub fn validate(&self, i: usize) -> Result<(), String> {
        let key = |k: &str| format!("alerts.webhooks[{i}].{k}");
        reqwest::Url::parse(&self.url)
            .map_err(|e| format!("{} is not a URL ({:?}): {e}", key("url"), self.url))?;
        crate::tls::check_endpoint(&key("url"), &self.url, self.ca_file.as_deref())?;
        if self.timeout_ms == 0 {
            return Err(format!("{} must be > 0, got 0", key("timeout_ms")));
        }
        if self.hmac_secret.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "{} is empty (an unset environment variable?): set it, or remove the key to send unsigned notifications",
                key("hmac_secret")
            ));
        }
        if let Some(name) = &self.name {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{} must be letters, digits, - and _, got {name:?}",
                    key("name")
                ));
            }
        }
        Ok(())
    }
}
