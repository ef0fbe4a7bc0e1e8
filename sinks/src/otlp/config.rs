//! `[sinks.jaeger]` (alias `[sinks.otlp]`): where spans are exported.

use serde::{Deserialize, Serialize};
use swarmscope_processors::ConfigError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// An OTLP gRPC endpoint, e.g. a Jaeger v2 collector's `http://jaeger:4317`
    /// (`https://` for TLS).
    pub endpoint: String,
    /// PEM certificates to trust for an `https://` endpoint, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// `gzip` (default, what every OTLP receiver takes), `zstd` (Jaeger v2 and the
    /// OpenTelemetry Collector take it) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// An export not answered within this long is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// An export request carries at most about this many bytes of protobuf (gRPC
    /// servers, Jaeger's among them, refuse messages past 4 MiB by default).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// The disk queue's cap; past it new spans are dropped and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: u64,
}

/// How export requests are compressed: `compression = "gzip" | "zstd" | "none"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_request_bytes() -> usize {
    3 << 20
}

fn default_queue_max_bytes() -> u64 {
    crate::sink::DEFAULT_QUEUE_MAX_BYTES
}

impl OtlpSinkConfig {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        crate::tls::check_endpoint(&key("endpoint"), &self.endpoint, self.ca_file.as_deref())?;
        swarmscope_processors::config_error::positive(key("timeout_ms"), self.timeout_ms)?;
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::invalid(
                key("max_request_bytes"),
                "at least 1024",
                self.max_request_bytes,
            ));
        }
        Ok(())
    }
}
