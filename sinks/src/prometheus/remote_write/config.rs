//! `[sinks.prometheus_remote_write]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarmscope_processors::config_error::{positive, ConfigError};
use swarmscope_processors::durations::parse_duration;

/// `[sinks.prometheus_remote_write]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// PEM certificates to trust for an `https://` URL, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// How often a snapshot of the series is taken (a scrape interval).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The disk queue's cap; past it new snapshots are dropped and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: u64,
}

fn default_interval() -> String {
    "15s".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_queue_max_bytes() -> u64 {
    256 << 20
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("sinks.prometheus_remote_write.{k}");
        crate::tls::check_endpoint(&key("url"), &self.url, self.ca_file.as_deref())?;
        if parse_duration(&self.interval).is_none_or(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                key("interval"),
                "a duration such as \"15s\"",
                format!("{:?}", self.interval),
            ));
        }
        positive(key("timeout_ms"), self.timeout_ms)
    }

    /// `interval` (validated).
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(15))
    }
}
