//! TLS on the receivers and the API, with bearer tokens on top: clients that trust
//! the server's certificate get through, plain-text clients do not.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

fn fixture(name: &str) -> PathBuf {
    common::tls_fixture(name)
}

fn tls_table() -> String {
    format!(
        "tls = {{ cert_file = {:?}, key_file = {:?} }}\n",
        fixture("cert.pem").display().to_string(),
        fixture("key.pem").display().to_string()
    )
}

/// A client that trusts only the test certificate.
fn connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("cert.pem")).expect("cert file") {
        roots.add(cert.expect("cert")).expect("trust anchor");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn request(name: &str) -> ExportTraceServiceRequest {
    common::trace_request(vec![Span {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        ..Default::default()
    }])
}

/// One HTTP/1.1 request over TLS; the status and body.
async fn https(url: &str, method: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut tls = connector(&[b"http/1.1"])
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let head = common::request_head(method, "localhost", &path, &headers, body.len());
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write");
    let mut response = Vec::new();
    // A TLS peer may close without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut response).await;
    common::parse_response(&response).expect("an HTTP response")
}

#[test]
fn receivers_and_api_serve_tls_with_bearer_tokens() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            otlp_token: Some("otlp-secret".into()),
            api_token: Some("api-secret".into()),
            otlp_extra: tls_table(),
            api_extra: tls_table(),
            api_tls: true,
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The API is up (readiness over TLS).
        let (status, _) = https(&format!("{}/readyz", server.api), "GET", &[], b"").await;
        assert_eq!(status, 200);

        // OTLP/HTTP over TLS: the token is still required.
        let body = request("https-span").encode_to_vec();
        let protobuf = ("content-type", "application/x-protobuf");
        let (status, _) = https(
            &format!("{}/v1/traces", server.http),
            "POST",
            &[protobuf],
            &body,
        )
        .await;
        assert_eq!(status, 401);
        let auth = ("authorization", "Bearer otlp-secret");
        let (status, _) = https(
            &format!("{}/v1/traces", server.http),
            "POST",
            &[protobuf, auth],
            &body,
        )
        .await;
        assert_eq!(status, 200);

        // OTLP/gRPC over TLS (ALPN h2), through a connector that trusts the test CA.
        let address = server.grpc.trim_start_matches("http://").to_owned();
        let tls = connector(&[b"h2"]);
        let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let tls = tls.clone();
                let address = address.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    let stream = tls
                        .connect(ServerName::try_from("localhost").expect("name"), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("gRPC over TLS");
        let mut client = TraceServiceClient::new(channel);
        let mut call = tonic::Request::new(request("grpcs-span"));
        call.metadata_mut().insert(
            "authorization",
            "Bearer otlp-secret".parse().expect("header"),
        );
        client.export(call).await.expect("export over TLS");

        // The API over TLS, with its own token.
        let query = serde_json::json!({"sql": "SELECT name FROM spans ORDER BY name"}).to_string();
        let json = ("content-type", "application/json");
        let (status, _) = https(
            &format!("{}/api/v1/query", server.api),
            "POST",
            &[json],
            query.as_bytes(),
        )
        .await;
        assert_eq!(status, 401);
        let (status, body) = https(
            &format!("{}/api/v1/query", server.api),
            "POST",
            &[json, ("authorization", "Bearer api-secret")],
            query.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            answer["rows"],
            serde_json::json!([["grpcs-span"], ["https-span"]])
        );

        // Plain text to a TLS port gets no HTTP answer.
        let plain = common::blocking_request(
            "POST",
            &format!("{}/v1/traces", server.http),
            &[("content-type", "application/x-protobuf".into())],
            &body,
        );
        assert!(plain.is_err(), "{plain:?}");
    });
}

#[test]
fn a_missing_certificate_is_a_config_error_naming_the_key() {
    let (_tmp, dir) = temp_data_dir();
    let stderr = common::config_check_error(
        &dir,
        "[api]\ntls = { cert_file = \"/nonexistent/cert.pem\", key_file = \"/nonexistent/key.pem\" }\n",
    );
    assert!(stderr.contains("api.tls.cert_file"), "{stderr}");
}
