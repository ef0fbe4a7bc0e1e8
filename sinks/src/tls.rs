//! TLS to the sinks' endpoints: an `https://` endpoint is verified against the system's
//! trust store, plus the PEM certificates of the sink's `ca_file` when set (a private
//! CA, or a self-signed Elasticsearch). rustls with the ring provider, as the listeners.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Makes ring the process's rustls provider, which reqwest's TLS uses; idempotent.
pub fn install_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// Checks an endpoint's scheme and its `ca_file`; every message names the key.
pub fn check_endpoint(key: &str, url: &str, ca_file: Option<&Path>) -> Result<(), String> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "{key} must be an http:// or https:// URL, got {url:?}"
        ));
    }
    if let Some(path) = ca_file {
        let ca_key = match key.rsplit_once('.') {
            Some((section, _)) => format!("{section}.ca_file"),
            None => "ca_file".to_owned(),
        };
        let pem = std::fs::read(path)
            .map_err(|e| format!("{ca_key}: cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{ca_key}: {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{ca_key}: {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    Ok(())
}

/// An HTTP client for a sink: `timeout` per request, trusting `ca_file` besides the
/// system's roots.
pub fn http_client(
    timeout: Duration,
    ca_file: Option<&PathBuf>,
) -> Result<reqwest::Client, String> {
    install_provider();
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// The gRPC TLS settings for an `https://` endpoint.
pub fn grpc_tls(ca_file: Option<&PathBuf>) -> Result<tonic::transport::ClientTlsConfig, String> {
    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    Ok(tls)
}
