//! TLS to the sinks' endpoints: `https://` endpoints verified against the sink's
//! `ca_file` (here the test certificate, which no system trusts). Each endpoint is a
//! plain stand-in behind a TLS-terminating proxy: Elasticsearch over HTTP/1.1, an OTLP
//! receiver over HTTP/2. An exporter without the `ca_file` gets nowhere.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::elasticsearch::Elasticsearch;
use common::otlp_receiver::Receiver;
use common::{eventually, numbered_spans, temp_data_dir, Options, Server};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn fixture(name: &str) -> PathBuf {
    common::tls_fixture(name)
}

/// Terminates TLS (the test certificate, ALPN `h2` and `http/1.1`) on a port of its
/// own and relays the bytes to `target`.
fn tls_proxy(rt: &tokio::runtime::Runtime, target: SocketAddr) -> SocketAddr {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(fixture("cert.pem"))
        .expect("cert file")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("key.pem")).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind proxy");
    let address = listener.local_addr().expect("address");
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    address
}

#[test]
fn sinks_reach_https_endpoints_they_trust_and_no_other() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let es = Elasticsearch::start("elastic", "changeme");
    let es_plain: SocketAddr = es
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("stand-in address");
    let es_tls = tls_proxy(&rt, es_plain);
    let receiver = Receiver::default();
    let otlp_tls = tls_proxy(&rt, receiver.serve(&rt, "127.0.0.1:0"));
    let ca = fixture("cert.pem").display().to_string();
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            extra: format!(
                "[sinks.elasticsearch]\nendpoint = \"https://127.0.0.1:{}\"\nca_file = {ca:?}\n\
                 username = \"elastic\"\npassword = \"changeme\"\n\
                 [sinks.jaeger]\nendpoint = \"https://127.0.0.1:{}\"\nca_file = {ca:?}\n\
                 [sinks.otlp]\nendpoint = \"https://127.0.0.1:{}\"\ntimeout_ms = 500\n",
                es_tls.port(),
                otlp_tls.port(),
                otlp_tls.port()
            ),
            ..Options::default()
        },
    );
    server.send_spans("tls-service", numbered_spans("over-tls", 0, 20));

    eventually("20 span documents over TLS", || {
        (es.span_documents() == 20).then_some(())
    });
    let spans = eventually("20 spans over OTLP/TLS", || {
        let spans = receiver.received();
        (spans.len() == 20).then_some(spans)
    });
    // The exporter without the CA fails the handshake and keeps its backlog.
    eventually("the untrusting exporter to retry", || {
        (server.metric("swarmscope_sink_retries_total{sink=\"otlp\"}") >= 2.0).then_some(())
    });
    assert_eq!(
        server.metric("swarmscope_sink_sent_total{sink=\"otlp\"}"),
        0.0
    );
    assert!(
        receiver.received().values().all(|n| *n == 1),
        "only the trusting exporter delivered: {spans:?}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_ca_file_that_is_not_pem_is_refused_at_start_naming_the_key() {
    let (_tmp, dir) = temp_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let stderr = common::config_check_error(
        &dir,
        &format!(
            "[sinks.elasticsearch]\nendpoint = \"https://127.0.0.1:9200\"\nca_file = {:?}\n",
            not_pem.display().to_string()
        ),
    );
    assert!(stderr.contains("sinks.elasticsearch.ca_file"), "{stderr}");
}
