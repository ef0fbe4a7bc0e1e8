//! An in-process OTLP gRPC trace receiver (tonic, not swarmscope's pipeline), as a
//! Jaeger v2 collector or any OTLP endpoint would take an exporter's spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;

#[derive(Clone, Default)]
pub struct Receiver {
    /// Calls still to refuse with UNAVAILABLE.
    pub refuse: Arc<Mutex<u32>>,
    /// Span id → times received.
    pub spans: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
    /// (grpc-encoding, authorization) of every accepted call.
    pub headers: Arc<Mutex<Vec<(String, String)>>>,
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

impl Receiver {
    /// Serves on `address` (port 0: any) on `rt`, gzip accepted; the bound address.
    pub fn serve(&self, rt: &tokio::runtime::Runtime, address: &str) -> std::net::SocketAddr {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(address))
            .expect("bind the OTLP receiver");
        let bound = listener.local_addr().expect("address");
        let service = TraceServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming(listener)),
        );
        bound
    }

    /// Span id → times received.
    pub fn received(&self) -> HashMap<Vec<u8>, u32> {
        self.spans.lock().expect("lock").clone()
    }
}

/// The accepted connections of `listener`, as tonic serves them.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
