//! TLS to the sinks' endpoints: an `https://` endpoint is verified against the system's
//! trust store, plus the PEM certificates of the sink's `ca_file` when set (a private
//! CA, or a self-signed Elasticsearch). rustls with the ring provider, as the listeners,
//! configured here and handed to reqwest whole: what reqwest would choose depends on the
//! features other crates turn on (delta-rs's engine turns on its platform verifier and
//! aws-lc), and the sinks' trust should not.

use std::path::{Path, PathBuf};
use std::time::Duration;
use swarmscope_processors::ConfigError;

/// Makes ring the process's rustls provider, which reqwest's TLS uses; idempotent.
pub fn install_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// Checks an endpoint's scheme and its `ca_file`; every error names the key.
pub fn check_endpoint(key: &str, url: &str, ca_file: Option<&Path>) -> Result<(), ConfigError> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(ConfigError::invalid(
            key,
            "an http:// or https:// URL",
            format!("{url:?}"),
        ));
    }
    if let Some(path) = ca_file {
        let ca_key = ca_key(key);
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::file(&ca_key, path, format!("cannot read it: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ConfigError::file(&ca_key, path, e))?;
        if certs.is_empty() {
            return Err(ConfigError::file(ca_key, path, "holds no PEM certificate"));
        }
    }
    Ok(())
}

/// The `ca_file` key beside `key` (`sinks.otlp.endpoint` → `sinks.otlp.ca_file`).
fn ca_key(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, _)) => format!("{section}.ca_file"),
        None => "ca_file".to_owned(),
    }
}

/// An HTTP client for the sink configured at `section`: `timeout` per request,
/// trusting `ca_file` besides the system's roots.
pub fn http_client(
    section: &str,
    timeout: Duration,
    ca_file: Option<&PathBuf>,
) -> Result<reqwest::Client, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls;

    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    // Certificates of the system store that do not parse are skipped, as reqwest does.
    let (_, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let key = format!("{section}.ca_file");
        let pem = std::fs::read(path).map_err(|e| ConfigError::file(&key, path, e))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ConfigError::file(&key, path, e))?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::file(&key, path, e))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::rule(section, format!("cannot make a TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1, as reqwest offers with the features the sinks build it with.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| ConfigError::rule(section, format!("cannot make an HTTP client: {e}")))
}

/// The gRPC TLS settings for an `https://` endpoint.
pub fn grpc_tls(
    section: &str,
    ca_file: Option<&PathBuf>,
) -> Result<tonic::transport::ClientTlsConfig, ConfigError> {
    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::file(format!("{section}.ca_file"), path, e))?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    Ok(tls)
}
