//! The OTLP/Jaeger exporter against an in-process OTLP gRPC receiver (tonic, not
//! swarmscope's pipeline): every span arrives exactly once, gzip-compressed and with
//! the bearer token, including after the receiver answered UNAVAILABLE for a while.

mod common;

use std::sync::{Arc, Mutex};

use common::otlp_receiver::Receiver;
use common::{eventually, numbered_spans, temp_data_dir, Options, Server};

#[test]
fn every_span_reaches_the_otlp_endpoint_once_through_unavailable() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver {
        refuse: Arc::new(Mutex::new(3)),
        ..Receiver::default()
    };
    let address = receiver.serve(&rt, "127.0.0.1:0");

    let (_tmp, dir) = temp_data_dir();
    let server = exporting(
        &dir,
        format!("[sinks.jaeger]\nendpoint = \"http://{address}\"\nbearer_token = \"t0ken\"\n"),
    );
    for batch in 0..4 {
        server.send_spans(
            "exported-service",
            numbered_spans("exported", batch * 25, 25),
        );
    }
    let received = eventually("all 100 spans at the endpoint", || {
        let spans = receiver.spans.lock().expect("lock").clone();
        (spans.len() == 100).then_some(spans)
    });
    assert!(
        received.values().all(|n| *n == 1),
        "duplicates: {received:?}"
    );
    let headers = receiver.headers.lock().expect("lock").clone();
    assert!(!headers.is_empty());
    for (encoding, authorization) in headers {
        assert_eq!(encoding, "gzip");
        assert_eq!(authorization, "Bearer t0ken");
    }
    assert_eq!(
        *receiver.refuse.lock().expect("lock"),
        0,
        "UNAVAILABLE was answered"
    );
    assert!(server.stop().success());
}

#[test]
fn zstd_compression_is_offered_too() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver::default();
    let address = receiver.serve(&rt, "127.0.0.1:0");
    let (_tmp, dir) = temp_data_dir();
    let server = exporting(
        &dir,
        format!("[sinks.otlp]\nendpoint = \"http://{address}\"\ncompression = \"zstd\"\n"),
    );
    server.send_spans("zstd-service", numbered_spans("zstd", 0, 30));
    eventually("30 spans at the endpoint", || {
        (receiver.received().len() == 30).then_some(())
    });
    let headers = receiver.headers.lock().expect("lock").clone();
    assert!(
        headers.iter().all(|(encoding, _)| encoding == "zstd"),
        "{headers:?}"
    );
    assert!(server.stop().success());
}

/// A server whose config adds the exporter's `section`.
fn exporting(dir: &std::path::Path, section: String) -> Server {
    Server::start_with(
        dir,
        Options {
            extra: section,
            ..Default::default()
        },
    )
}
