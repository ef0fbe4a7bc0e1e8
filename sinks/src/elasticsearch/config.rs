//! `[sinks.elasticsearch]`: where documents go and how the sink signs in.

use serde::{Deserialize, Serialize};
use swarmscope_processors::config_error::{positive, ConfigError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The cluster's URL, e.g. `https://elasticsearch:9200`.
    pub endpoint: String,
    /// PEM certificates to trust for an `https://` endpoint, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Basic authentication, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Sent as `Authorization: ApiKey <api_key>` (the base64 `id:key` Kibana shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// A `_bulk` request carries at most about this many bytes of NDJSON.
    #[serde(default = "default_bulk_max_bytes")]
    pub bulk_max_bytes: usize,
    /// A request not answered within this long is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The disk queue's cap; past it new records are dropped and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: u64,
}

fn default_bulk_max_bytes() -> usize {
    5 << 20
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_queue_max_bytes() -> u64 {
    crate::sink::DEFAULT_QUEUE_MAX_BYTES
}

impl ElasticsearchConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("sinks.elasticsearch.{k}");
        crate::tls::check_endpoint(&key("endpoint"), &self.endpoint, self.ca_file.as_deref())?;
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::rule(
                key("username"),
                format!("and {} go together", key("password")),
            ));
        }
        if self.api_key.is_some() && self.username.is_some() {
            return Err(ConfigError::rule(
                key("api_key"),
                format!("and {} are two ways to sign in: set one", key("username")),
            ));
        }
        positive(key("bulk_max_bytes"), self.bulk_max_bytes as u64)?;
        positive(key("timeout_ms"), self.timeout_ms)
    }
}
