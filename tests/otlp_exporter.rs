//! The OTLP/Jaeger exporter against an in-process OTLP gRPC receiver (tonic, not
//! swarmscope's pipeline): every span arrives exactly once, gzip-compressed and with
//! the bearer token, including after the receiver answered UNAVAILABLE for a while.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{eventually, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::codec::CompressionEncoding;

#[derive(Clone, Default)]
struct Receiver {
    /// Calls still to refuse with UNAVAILABLE.
    refuse: Arc<Mutex<u32>>,
    /// Span id → times received.
    spans: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
    /// (grpc-encoding, authorization) of every accepted call.
    headers: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        {
            let mut refuse = self.refuse.lock().expect("lock");
            if *refuse > 0 {
                *refuse -= 1;
                return Err(tonic::Status::unavailable("warming up"));
            }
        }
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let seen = (header("grpc-encoding"), header("authorization"));
        self.headers.lock().expect("lock").push(seen);
        let mut spans = self.spans.lock().expect("lock");
        for rs in &request.get_ref().resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    *spans.entry(span.span_id.clone()).or_default() += 1;
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn spans(first: u64, n: u64) -> Vec<Span> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    (first..first + n)
        .map(|i| Span {
            trace_id: [[5u8; 8], i.to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "exported".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000,
            ..Default::default()
        })
        .collect()
}

#[test]
fn every_span_reaches_the_otlp_endpoint_once_through_unavailable() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver {
        refuse: Arc::new(Mutex::new(3)),
        ..Receiver::default()
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let service =
        TraceServiceServer::new(receiver.clone()).accept_compressed(CompressionEncoding::Gzip);
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_from(listener)),
    );

    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            extra: format!(
                "[sinks.jaeger]\nendpoint = \"http://{address}\"\nbearer_token = \"t0ken\"\n"
            ),
            ..Default::default()
        },
    );
    for batch in 0..4 {
        server.send_spans("exported-service", spans(batch * 25, 25));
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

/// The accepted connections of `listener`, as tonic serves them.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
