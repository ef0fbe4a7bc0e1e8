//! The collector's configuration file (docs/configuration.md).
//!
//! TOML, every key optional. `${NAME}` (or `${env:NAME}`, as the OpenTelemetry
//! Collector writes it) is replaced by the environment variable, empty when unset. An
//! unknown key is an error naming the key. Each component's section is its own struct
//! beside the component (`StorageConfig` in the store, `QueryConfig` in the query
//! engine); this file assembles them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde::{Deserialize, Serialize};
use swarmscope_processors::analytics::alerts::AlertRule;
use swarmscope_processors::analytics::AnalyticsConfig;
use swarmscope_processors::config_error::positive;
use swarmscope_processors::prometheus::PrometheusConfig;
use swarmscope_queries::QueryConfig;
use swarmscope_sinks::elasticsearch::ElasticsearchConfig;
use swarmscope_sinks::otlp::OtlpSinkConfig;
use swarmscope_sinks::prometheus::remote_write::RemoteWriteConfig;
use swarmscope_sinks::store::StorageConfig;
use swarmscope_sinks::webhook::WebhookConfig;

use crate::net::{Listening, TlsConfig};
use crate::{ConfigError, Error};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: ReceiversConfig,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub query: QueryConfig,
    pub processors: AnalyticsConfig,
    pub alerts: AlertsConfig,
    pub sinks: SinksConfig,
}

/// `[sinks.*]`: where batches go besides the store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Spans over OTLP gRPC to a Jaeger v2 collector...
    pub jaeger: Option<OtlpSinkConfig>,
    /// ...or to any OTLP endpoint (the same exporter under another name).
    pub otlp: Option<OtlpSinkConfig>,
    /// Received OTLP metrics on `/metrics`.
    pub prometheus: PrometheusConfig,
    /// Spans, metrics, logs and alerts into Elasticsearch data streams.
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// The `/metrics` series pushed to a remote-write endpoint.
    pub prometheus_remote_write: Option<RemoteWriteConfig>,
}

impl SinksConfig {
    /// The OTLP exporters configured, by sink name.
    pub fn otlp_exporters(&self) -> Vec<(&'static str, &OtlpSinkConfig)> {
        [
            ("jaeger", self.jaeger.as_ref()),
            ("otlp", self.otlp.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, c)| c.map(|c| (name, c)))
        .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, c) in self.otlp_exporters() {
            c.validate(&format!("sinks.{name}"))?;
        }
        if let Some(es) = &self.elasticsearch {
            es.validate()?;
        }
        if let Some(rw) = &self.prometheus_remote_write {
            rw.validate()?;
        }
        self.prometheus.validate()
    }
}

/// `[alerts]`: threshold rules beside the anomaly detectors, and where alerts go.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub rules: Vec<AlertRule>,
    pub webhooks: Vec<WebhookConfig>,
    /// How receivers reach this collector's API, for the payloads' `externalURL` and
    /// `generatorURL` (by default `http://` and `api.address`).
    pub external_url: Option<String>,
}

impl AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(i)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            hook.validate(i)?;
            if !names.insert(hook.name(i)) {
                return Err(ConfigError::rule(
                    format!("alerts.webhooks[{i}].name"),
                    format!("{:?} is used twice", hook.name(i)),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    pub otlp: OtlpReceiverConfig,
}

/// `[receivers.otlp]`: the OTLP gRPC and HTTP receivers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    pub grpc_address: String,
    pub http_address: String,
    /// Largest request accepted, counted after decompression.
    pub max_request_bytes: usize,
    /// When set (and not empty), requests need `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// HTTP/1 request headers (and the TLS handshake) must arrive within this.
    pub read_header_timeout_ms: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// Serve both receivers over TLS.
    pub tls: Option<TlsConfig>,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc_address: "127.0.0.1:4317".into(),
            http_address: "127.0.0.1:4318".into(),
            max_request_bytes: 64 * 1024 * 1024,
            auth_token: None,
            read_header_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            tls: None,
        }
    }
}

/// `[api]`: the admin and query API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub address: String,
    /// When set (and not empty), `/api/*` needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// HTTP/1 request headers (and the TLS handshake) must arrive within this.
    pub read_header_timeout_ms: u64,
    /// A connection with no traffic for this long is closed; longer than
    /// `query.timeout_ms`, so a running query is never cut off.
    pub idle_timeout_ms: u64,
    /// Serve the API over TLS.
    pub tls: Option<TlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: "127.0.0.1:8080".into(),
            auth_token: None,
            read_header_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            tls: None,
        }
    }
}

/// ALPN for gRPC (HTTP/2 only) and for HTTP (either).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The timeouts and TLS of one listener; `section` names its keys in errors.
fn listening(
    section: &str,
    tls: Option<&TlsConfig>,
    alpn: &[&[u8]],
    read_header_timeout_ms: u64,
    idle_timeout_ms: u64,
) -> Result<Listening, Error> {
    for (key, value) in [
        ("read_header_timeout_ms", read_header_timeout_ms),
        ("idle_timeout_ms", idle_timeout_ms),
    ] {
        positive(format!("{section}.{key}"), value)?;
    }
    Ok(Listening {
        tls: tls
            .map(|t| t.acceptor(&format!("{section}.tls"), alpn))
            .transpose()?,
        read_header_timeout: std::time::Duration::from_millis(read_header_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(idle_timeout_ms),
    })
}

impl OtlpReceiverConfig {
    /// How the receivers' listeners treat connections (gRPC, then HTTP).
    pub fn listening(&self) -> Result<(Listening, Listening), Error> {
        let make = |alpn| {
            listening(
                "receivers.otlp",
                self.tls.as_ref(),
                alpn,
                self.read_header_timeout_ms,
                self.idle_timeout_ms,
            )
        };
        Ok((make(ALPN_GRPC)?, make(ALPN_HTTP)?))
    }
}

impl ApiConfig {
    pub fn listening(&self) -> Result<Listening, Error> {
        listening(
            "api",
            self.tls.as_ref(),
            ALPN_HTTP,
            self.read_header_timeout_ms,
            self.idle_timeout_ms,
        )
    }
}

impl Config {
    /// Reads, substitutes and parses a config file, then validates it.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let in_file = |reason: String| Error::ConfigFile {
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| in_file(format!("cannot read it: {e}")))?;
        Config::parse(&text).map_err(|e| match e {
            Error::Syntax(e) => in_file(e.to_string()),
            e => e,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let text = substitute_env(text);
        let mut config: Config = toml::from_str(&text)?;
        config.normalise();
        config.validate()?;
        Ok(config)
    }

    /// An empty token means no token (`auth_token = "${UNSET}"`).
    fn normalise(&mut self) {
        for token in [
            &mut self.receivers.otlp.auth_token,
            &mut self.api.auth_token,
        ] {
            if token.as_deref().is_some_and(str::is_empty) {
                *token = None;
            }
        }
    }

    /// Checks what serde cannot; every message names the key.
    pub fn validate(&self) -> Result<(), Error> {
        let otlp = &self.receivers.otlp;
        resolve("receivers.otlp.grpc_address", &otlp.grpc_address)?;
        resolve("receivers.otlp.http_address", &otlp.http_address)?;
        resolve("api.address", &self.api.address)?;
        positive(
            "receivers.otlp.max_request_bytes",
            otlp.max_request_bytes as u64,
        )?;
        self.storage.validate()?;
        self.query.validate()?;
        self.processors.validate()?;
        self.alerts.validate()?;
        self.sinks.validate()?;
        if self.api.idle_timeout_ms <= self.query.timeout_ms {
            return Err(ConfigError::invalid(
                "api.idle_timeout_ms",
                format!(
                    "longer than query.timeout_ms ({}), or a running query's connection could be closed",
                    self.query.timeout_ms
                ),
                self.api.idle_timeout_ms,
            )
            .into());
        }
        // Timeouts, and that the TLS certificates and keys load.
        otlp.listening()?;
        self.api.listening()?;
        Ok(())
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        let mut secrets = vec![
            &mut shown.receivers.otlp.auth_token,
            &mut shown.api.auth_token,
            &mut shown.storage.s3.secret_access_key,
            &mut shown.storage.s3.session_token,
        ];
        secrets.extend(shown.alerts.webhooks.iter_mut().map(|w| &mut w.hmac_secret));
        secrets.extend(
            [shown.sinks.jaeger.as_mut(), shown.sinks.otlp.as_mut()]
                .into_iter()
                .flatten()
                .map(|s| &mut s.bearer_token),
        );
        if let Some(es) = shown.sinks.elasticsearch.as_mut() {
            secrets.extend([&mut es.password, &mut es.api_key]);
        }
        if let Some(rw) = shown.sinks.prometheus_remote_write.as_mut() {
            secrets.push(&mut rw.bearer_token);
        }
        for token in secrets {
            if token.is_some() {
                *token = Some("<redacted>".into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `host:port` to a socket address; the error names the key.
pub fn resolve(key: &str, address: &str) -> Result<SocketAddr, Error> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            ConfigError::invalid(
                key,
                "host:port (e.g. \"127.0.0.1:4317\")",
                format!("{address:?}"),
            )
            .into()
        })
}

/// Replaces `${NAME}` and `${env:NAME}` with the environment variable's value.
fn substitute_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = after[..end].trim();
                let name = name.strip_prefix("env:").unwrap_or(name);
                out.push_str(&std::env::var(name).unwrap_or_default());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.receivers.otlp.grpc_address, "127.0.0.1:4317");
        assert_eq!(c.storage.flush_rows, 500_000);
    }

    /// The key `text`'s configuration error names.
    fn refused_key(text: &str) -> String {
        match Config::parse(text) {
            Err(Error::Config(e)) => e.key().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[receivers.otlp]\ngrpc_adress = \"x\"\n").unwrap_err();
        assert!(matches!(err, Error::Syntax(_)), "{err}");
        assert!(err.to_string().contains("grpc_adress"), "{err}");
        assert_eq!(
            refused_key("[storage]\nflush_rows = 0\n"),
            "storage.flush_rows"
        );
        assert_eq!(refused_key("[api]\naddress = \"nowhere\"\n"), "api.address");
    }

    #[test]
    fn storage_urls_are_file_or_s3_and_s3_secrets_are_redacted() {
        for bad in [
            "url = \"gs://bucket/x\"",
            "url = \"not a url\"",
            "url = \"s3:///no-bucket\"",
            "url = \"file:///elsewhere\"\ndata_dir = \"/var/lib/swarmscope\"",
        ] {
            assert_eq!(
                refused_key(&format!("[storage]\n{bad}\n")),
                "storage.url",
                "{bad}"
            );
        }
        let c = Config::parse(
            "[storage]\nurl = \"s3://bucket/prefix\"\n\
             s3 = { secret_access_key = \"s3cret-key\", session_token = \"s3cret-token\", allow_http = true }\n",
        )
        .unwrap();
        let shown = c.to_toml_redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("s3://bucket/prefix"), "{shown}");
        let local = Config::parse("[storage]\nurl = \"file:///var/lib/swarmscope\"\n").unwrap();
        assert_eq!(
            local.storage.location().unwrap(),
            swarmscope_sinks::store::Location::Local("/var/lib/swarmscope".into())
        );
    }

    #[test]
    fn env_vars_are_substituted_and_empty_tokens_dropped() {
        std::env::set_var("SWARMSCOPE_TEST_TOKEN_A", "s3cret");
        let c = Config::parse(
            "[receivers.otlp]\nauth_token = \"${SWARMSCOPE_TEST_TOKEN_A}\"\n\
             [api]\nauth_token = \"${env:SWARMSCOPE_TEST_UNSET_B}\"\n",
        )
        .unwrap();
        assert_eq!(c.receivers.otlp.auth_token.as_deref(), Some("s3cret"));
        assert_eq!(c.api.auth_token, None);
        assert!(!c.to_toml_redacted().contains("s3cret"));
    }

    #[test]
    fn webhook_and_exporter_secrets_are_redacted_and_bad_sinks_named() {
        let c = Config::parse(
            "[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nhmac_secret = \"hmac-key\"\n\
             [sinks.jaeger]\nendpoint = \"http://127.0.0.1:4317\"\nbearer_token = \"jaeger-token\"\n\
             [sinks.elasticsearch]\nendpoint = \"http://127.0.0.1:9200\"\nusername = \"elastic\"\npassword = \"es-password\"\n",
        )
        .unwrap();
        let shown = c.to_toml_redacted();
        assert!(
            !shown.contains("hmac-key")
                && !shown.contains("jaeger-token")
                && !shown.contains("es-password"),
            "{shown}"
        );
        for (text, key) in [
            (
                "[sinks.otlp]\nendpoint = \"grpc://x\"\n",
                "sinks.otlp.endpoint",
            ),
            (
                "[[alerts.rules]]\nname = \"x\"\nmetric = \"mood\"\nop = \"<\"\nthreshold = 1\n",
                "alerts.rules[0].metric",
            ),
            (
                "[processors.health]\nwindow_seconds = 25\n",
                "processors.health.window_seconds",
            ),
            (
                "[sinks.prometheus]\nmetric_expiration = \"soon\"\n",
                "sinks.prometheus.metric_expiration",
            ),
        ] {
            assert_eq!(refused_key(text), key);
        }
    }
}
