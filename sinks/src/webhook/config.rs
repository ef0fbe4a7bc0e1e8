//! `[[alerts.webhooks]]`: where alert notifications go.

use serde::{Deserialize, Serialize};
use swarmscope_processors::config_error::{positive, ConfigError};
use swarmscope_processors::durations::parse_duration;

use super::groups::Timing;

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
    /// The labels whose values make a group, as Alertmanager's route `group_by`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait")]
    pub group_wait: String,
    /// How long after a notification a group that changed is notified again.
    #[serde(default = "default_group_interval")]
    pub group_interval: String,
    /// How long after a notification a group still firing, unchanged, is notified again.
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: String,
}

fn default_group_by() -> Vec<String> {
    ["alertname", "service", "team"].map(String::from).to_vec()
}

fn default_group_wait() -> String {
    "30s".into()
}

fn default_group_interval() -> String {
    "5m".into()
}

fn default_repeat_interval() -> String {
    "4h".into()
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

    /// When groups are notified.
    pub fn timing(&self) -> Timing {
        let d = |v: &str| parse_duration(v).unwrap_or_default();
        Timing {
            group_wait: d(&self.group_wait),
            group_interval: d(&self.group_interval).max(std::time::Duration::from_millis(1)),
            repeat_interval: d(&self.repeat_interval).max(std::time::Duration::from_millis(1)),
        }
    }

    pub fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("alerts.webhooks[{i}].{k}");
        reqwest::Url::parse(&self.url).map_err(|e| {
            ConfigError::invalid(
                key("url"),
                format!("a URL ({e})"),
                format!("{:?}", self.url),
            )
        })?;
        crate::tls::check_endpoint(&key("url"), &self.url, self.ca_file.as_deref())?;
        positive(key("timeout_ms"), self.timeout_ms)?;
        if self.hmac_secret.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::rule(
                key("hmac_secret"),
                "is empty (an unset environment variable?): set it, or remove the key to send unsigned notifications",
            ));
        }
        for (k, v) in [
            ("group_wait", &self.group_wait),
            ("group_interval", &self.group_interval),
            ("repeat_interval", &self.repeat_interval),
        ] {
            if parse_duration(v).is_none() {
                return Err(ConfigError::invalid(
                    key(k),
                    "a duration such as 30s, 5m or 4h",
                    format!("{v:?}"),
                ));
            }
        }
        if let Some(name) = &self.name {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::invalid(
                    key("name"),
                    "letters, digits, - and _",
                    format!("{name:?}"),
                ));
            }
        }
        Ok(())
    }
}
