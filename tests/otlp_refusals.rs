//! Every refusal of docs/receiving.md over HTTP and gRPC: the status a client sees, and that
//! what was stored before is still there and the next good request still works; and the
//! largest frames the gRPC receiver takes.

mod common;

use std::io::Write;

use common::{blocking_request, temp_data_dir, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn span(name: &str, trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
    Span {
        trace_id,
        span_id,
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("refusals".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn good(name: &str) -> Vec<u8> {
    request(vec![span(name, vec![7; 16], vec![1; 8])]).encode_to_vec()
}

fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    blocking_request("POST", &format!("{}{path}", server.http), &headers, body).expect("request")
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

fn span_count(server: &Server) -> i64 {
    server
        .scalar("SELECT count(*) FROM spans")
        .as_i64()
        .expect("count")
}

fn rpc_status(body: &[u8]) -> tonic_types::Status {
    tonic_types::Status::decode(body).expect("a google.rpc.Status body")
}

#[test]
fn http_refusals_have_the_right_status_and_lose_nothing() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            max_request_bytes: Some(64 * 1024),
            ..Default::default()
        },
    );
    assert_eq!(
        post(&server, "/v1/traces", &[PROTOBUF], &good("first")).0,
        200
    );
    assert_eq!(span_count(&server), 1);

    // 400: not protobuf, with a google.rpc.Status saying why.
    let (status, body) = post(&server, "/v1/traces", &[PROTOBUF], b"\xff\xff\xff garbage");
    assert_eq!(status, 400);
    let s = rpc_status(&body);
    assert_eq!(s.code, tonic::Code::InvalidArgument as i32);
    assert!(s.message.contains("invalid protobuf"), "{}", s.message);

    // 400 in JSON for a JSON request.
    let (status, body) = post(
        &server,
        "/v1/traces",
        &[("content-type", "application/json")],
        b"{\"resourceSpans\": 7}",
    );
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json status");
    assert_eq!(v["code"], 3);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("resourceSpans"),
        "{v}"
    );

    // 415: unknown content type, and unknown content encoding.
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[("content-type", "text/plain")],
            &good("x")
        )
        .0,
        415
    );
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("content-encoding", "br")],
            &good("x")
        )
        .0,
        415
    );

    // 405: wrong method.
    let (status, _) =
        blocking_request("GET", &format!("{}/v1/traces", server.http), &[], b"").expect("get");
    assert_eq!(status, 405);

    // 413: too large as sent.
    let big = request(
        (0..2000)
            .map(|i| span(&format!("s{i:0>60}"), vec![7; 16], vec![2; 8]))
            .collect(),
    )
    .encode_to_vec();
    assert!(big.len() > 64 * 1024);
    assert_eq!(post(&server, "/v1/traces", &[PROTOBUF], &big).0, 413);

    // 413: a gzip bomb, small on the wire, refused while decompressing.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 50 * 1024 * 1024]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 64 * 1024);
    let (status, body) = post(
        &server,
        "/v1/traces",
        &[PROTOBUF, ("content-encoding", "gzip")],
        &bomb,
    );
    assert_eq!(status, 413);
    assert_eq!(
        rpc_status(&body).code,
        tonic::Code::ResourceExhausted as i32
    );

    // The same with zstd.
    let zbomb = zstd::encode_all(&vec![0u8; 50 * 1024 * 1024][..], 19).expect("zstd");
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("content-encoding", "zstd")],
            &zbomb
        )
        .0,
        413
    );

    // Compressed good requests are accepted.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good("gzipped")).expect("gzip");
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("content-encoding", "gzip")],
            &gz.finish().expect("gz")
        )
        .0,
        200
    );
    let z = zstd::encode_all(&good("zstded")[..], 3).expect("zstd");
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("content-encoding", "zstd")],
            &z
        )
        .0,
        200
    );

    // Nothing refused was stored, nothing accepted was lost.
    assert_eq!(
        server.rows("SELECT name FROM spans ORDER BY name"),
        vec![
            vec![serde_json::json!("first")],
            vec![serde_json::json!("gzipped")],
            vec![serde_json::json!("zstded")]
        ]
    );
}

#[test]
fn http_partial_success_keeps_the_valid_spans() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let body = request(vec![
        span("ok-1", vec![7; 16], vec![1; 8]),
        span("short-trace-id", vec![7; 15], vec![2; 8]),
        span("ok-2", vec![7; 16], vec![3; 8]),
        span("zero-span-id", vec![7; 16], vec![0; 8]),
    ])
    .encode_to_vec();
    let (status, response) = post(&server, "/v1/traces", &[PROTOBUF], &body);
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(&response[..]).expect("response");
    let partial = response.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("trace_id must be 16 bytes, got 15"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        server.rows("SELECT name FROM spans ORDER BY name"),
        vec![
            vec![serde_json::json!("ok-1")],
            vec![serde_json::json!("ok-2")]
        ]
    );

    // The same through OTLP/JSON: the response is JSON, int64 as a string.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"json-ok"},
        {"traceId":"0102","spanId":"0102030405060708","name":"json-bad"}]}]}]}"#;
    let (status, response) = post(
        &server,
        "/v1/traces",
        &[("content-type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&response).expect("json");
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
    assert_eq!(span_count(&server), 3);
}

#[test]
fn http_requires_the_bearer_token_when_configured() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            otlp_token: Some("tok".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        post(&server, "/v1/traces", &[PROTOBUF], &good("anon")).0,
        401
    );
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("authorization", "Bearer nope")],
            &good("wrong")
        )
        .0,
        401
    );
    assert_eq!(
        post(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("authorization", "Bearer tok")],
            &good("right")
        )
        .0,
        200
    );
    assert_eq!(
        server.rows("SELECT name FROM spans"),
        vec![vec![serde_json::json!("right")]]
    );
}

#[test]
fn grpc_refusals_have_the_right_codes() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            max_request_bytes: Some(64 * 1024),
            otlp_token: Some("tok".into()),
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = TraceServiceClient::new(channel.clone());
        let authed = |r: ExportTraceServiceRequest| {
            let mut r = tonic::Request::new(r);
            r.metadata_mut()
                .insert("authorization", "Bearer tok".parse().expect("header"));
            r
        };

        let err = client
            .export(request(vec![span("anon", vec![7; 16], vec![1; 8])]))
            .await
            .expect_err("no token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        let ok = client
            .export(authed(request(vec![
                span("grpc-ok", vec![7; 16], vec![1; 8]),
                span("grpc-bad", vec![7; 16], vec![1; 7]),
            ])))
            .await
            .expect("export");
        assert_eq!(
            ok.into_inner()
                .partial_success
                .expect("partial")
                .rejected_spans,
            1
        );

        let big = request(
            (0..2000)
                .map(|i| span(&format!("s{i:0>60}"), vec![7; 16], vec![2; 8]))
                .collect(),
        );
        let err = client
            .export(authed(big.clone()))
            .await
            .expect_err("too large");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

        // Compressed and over the limit once decompressed.
        let mut gzip_client = TraceServiceClient::new(channel.clone())
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let err = gzip_client
            .export(authed(big))
            .await
            .expect_err("too large");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

        // Compressed and fine.
        gzip_client
            .export(authed(request(vec![span(
                "grpc-gzip",
                vec![7; 16],
                vec![4; 8],
            )])))
            .await
            .expect("gzip export");
    });
    assert_eq!(
        server.rows("SELECT name FROM spans ORDER BY name"),
        vec![
            vec![serde_json::json!("grpc-gzip")],
            vec![serde_json::json!("grpc-ok")]
        ]
    );
}

/// The gRPC receiver lets a client send an export in frames of up to 256 KiB: the
/// SETTINGS frame it opens the connection with says so (`SETTINGS_MAX_FRAME_SIZE`,
/// HTTP/2's default is 16 KiB), and an export of several frames that size from a
/// client that honours the setting (tonic's) is stored whole.
#[test]
fn grpc_receiver_takes_frames_of_256_kib() {
    use std::io::Read;
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let address = server.grpc.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(address).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // The client's preface, then its own (empty) SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    let settings = loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).expect("a frame's header");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).expect("a frame's payload");
        // SETTINGS (type 4) without the ACK flag: the server's own.
        if head[3] == 4 && head[4] & 1 == 0 {
            break payload;
        }
    };
    let max_frame_size = settings
        .chunks_exact(6)
        .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) == 5)
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
    assert_eq!(max_frame_size, Some(256 * 1024));

    let spans: Vec<Span> = (0..6000u32)
        .map(|i| {
            let mut id = vec![0; 8];
            id[..4].copy_from_slice(&(i + 1).to_be_bytes());
            span(&format!("large-frames-{i:0>80}"), vec![9; 16], id)
        })
        .collect();
    let export = request(spans);
    assert!(
        export.encoded_len() > 3 * 256 * 1024,
        "several frames' worth"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc.clone())
            .await
            .expect("connect");
        client.export(export).await.expect("export");
    });
    assert_eq!(span_count(&server), 6000);
}
