//! Hostile input: slow and idle connections, deep nesting, huge values, invalid
//! UTF-8. Each case checks what the client sees and that the next good request is
//! served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use common::{blocking_request, temp_data_dir, trace_request as request, Options, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Stands in for bytes the test makes invalid UTF-8 on the wire (same length).
const MARK: &str = "\u{1}\u{2}\u{3}";

fn span(name: &str, id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes,
        ..Default::default()
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// `MARK` replaced by a lone continuation byte and a truncated sequence.
fn corrupt(mut bytes: Vec<u8>) -> Vec<u8> {
    let mark = MARK.as_bytes();
    for i in 0..bytes.len().saturating_sub(mark.len() - 1) {
        if &bytes[i..i + mark.len()] == mark {
            bytes[i..i + mark.len()].copy_from_slice(&[0x80, 0xe2, 0x82]);
        }
    }
    bytes
}

fn post(server: &Server, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    blocking_request(
        "POST",
        &format!("{}/v1/traces", server.http),
        &[("content-type", content_type.to_owned())],
        body,
    )
    .expect("request")
}

fn post_protobuf(server: &Server, body: &[u8]) -> (u16, Vec<u8>) {
    post(server, "application/x-protobuf", body)
}

/// A good request named `name`, which must be stored.
fn served(server: &Server, name: &str) {
    let (status, body) = post_protobuf(
        server,
        &request(vec![span(name, 1, vec![])]).encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        server.scalar(&format!("SELECT count(*) FROM spans WHERE name = '{name}'")),
        1
    );
}

/// Reads until the server closes the connection; how long that took.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("connection still open after {limit:?}: {e}"),
        }
    }
}

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start_with(
        &dir,
        Options {
            otlp_extra: "read_header_timeout_ms = 500\nidle_timeout_ms = 1000\n".into(),
            ..Default::default()
        },
    );

    // Slow-loris: headers trickle in, a byte every 100 ms, never finishing.
    let mut loris = TcpStream::connect(host(&server.http)).expect("connect");
    loris
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n")
        .expect("write");
    let mut writer = loris.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let cut_off = time_until_closed(&mut loris, Duration::from_secs(8));
    assert!(
        cut_off < Duration::from_secs(4),
        "cut off after {cut_off:?}"
    );
    drop(loris);
    trickle.join().expect("trickle");

    // A client that connects to either port and says nothing.
    for port in [&server.http, &server.grpc] {
        let mut idle = TcpStream::connect(host(port)).expect("connect");
        let closed_after = time_until_closed(&mut idle, Duration::from_secs(10));
        assert!(
            closed_after >= Duration::from_millis(400),
            "closed too early: {closed_after:?}"
        );
    }

    // A kept-alive HTTP connection that falls silent after a request.
    let mut keep = TcpStream::connect(host(&server.http)).expect("connect");
    let body = request(vec![span("kept-alive", 2, vec![])]).encode_to_vec();
    write!(
        keep,
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .expect("head");
    keep.write_all(&body).expect("body");
    time_until_closed(&mut keep, Duration::from_secs(10));
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name = 'kept-alive'"),
        1
    );

    served(&server, "after-slow-clients");
    // gRPC still answers too.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc.clone())
            .await
            .expect("connect");
        client
            .export(request(vec![span("grpc-after-idle", 3, vec![])]))
            .await
            .expect("export");
    });
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name = 'grpc-after-idle'"),
        1
    );
}

/// An `AnyValue` nested `depth` levels deep (arrays and key-value lists in turn).
fn nested(depth: usize) -> any_value::Value {
    let mut value = any_value::Value::StringValue("bottom".into());
    for level in 0..depth {
        let inner = AnyValue { value: Some(value) };
        value = if level % 2 == 0 {
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![inner],
            })
        } else {
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(inner),
                    ..Default::default()
                }],
            })
        };
    }
    value
}

#[test]
fn nesting_and_size_of_attribute_values_are_bounded() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);

    // Moderate nesting is kept, as JSON text.
    let ok = request(vec![span(
        "nested-20",
        1,
        vec![attribute("deep", nested(20))],
    )]);
    let (status, body) = post_protobuf(&server, &ok.encode_to_vec());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let stored = server.scalar("SELECT attributes['deep'] FROM spans WHERE name = 'nested-20'");
    assert_eq!(stored.as_str().expect("text").matches("bottom").count(), 1);

    // Past the decoders' recursion limit (100 for protobuf, 128 for JSON), the
    // request is refused whole, before any of it is converted.
    let deep = request(vec![span(
        "nested-300",
        2,
        vec![attribute("deep", nested(300))],
    )]);
    let (status, body) = post_protobuf(&server, &deep.encode_to_vec());
    assert_eq!(status, 400);
    let message = tonic_types::Status::decode(body.as_slice())
        .expect("a google.rpc.Status")
        .message;
    assert!(message.contains("recursion limit"), "{message}");

    let mut json = String::from("\"bottom\"");
    for _ in 0..300 {
        json = format!("{{\"arrayValue\":{{\"values\":[{json}]}}}}");
    }
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"09090909090909090909090909090909","spanId":"0303030303030303","name":"json-deep","startTimeUnixNano":"1700000000000000000","attributes":[{{"key":"deep","value":{json}}}]}}]}}]}}]}}"#
    );
    let (status, body) = post(&server, "application/json", json.as_bytes());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A large value within max_request_bytes is stored whole, not cut.
    let big = "v".repeat(4 * 1024 * 1024);
    let large = request(vec![span(
        "large-value",
        4,
        vec![attribute("big", any_value::Value::StringValue(big.clone()))],
    )]);
    let (status, _) = post_protobuf(&server, &large.encode_to_vec());
    assert_eq!(status, 200);
    assert_eq!(
        server.scalar("SELECT length(attributes['big']) FROM spans WHERE name = 'large-value'"),
        big.len() as i64
    );

    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name LIKE 'nested%' OR name = 'json-deep'"),
        1,
        "only the moderate nesting was stored"
    );
    served(&server, "after-deep-values");
}

/// A codec that sends pre-encoded bytes as they are and decodes the OTLP response.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn grpc_raw(
    endpoint: &str,
    body: Vec<u8>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn invalid_utf8_is_replaced_not_refused() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    let bad = |name: &str, id: u8| {
        corrupt(
            request(vec![
                span(
                    &format!("{name}{MARK}"),
                    id,
                    vec![attribute(
                        "note",
                        any_value::Value::StringValue(format!("x{MARK}y")),
                    )],
                ),
                span(&format!("{name}-clean"), id + 1, vec![]),
            ])
            .encode_to_vec(),
        )
    };

    // HTTP/protobuf: 200, every span kept, a warning with rejected = 0.
    let (status, body) = post_protobuf(&server, &bad("http", 1));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let partial = ExportTraceServiceResponse::decode(body.as_slice())
        .expect("response")
        .partial_success
        .expect("a warning");
    assert_eq!(partial.rejected_spans, 0);
    assert!(
        partial.error_message.contains("U+FFFD"),
        "{}",
        partial.error_message
    );

    // gRPC: the same.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let response = rt
        .block_on(grpc_raw(&server.grpc, bad("grpc", 3)))
        .expect("export");
    let partial = response.partial_success.expect("a warning");
    assert_eq!(partial.rejected_spans, 0);
    assert!(
        partial.error_message.contains("2 string field(s)"),
        "{}",
        partial.error_message
    );

    // Malformed protobuf is still refused: INVALID_ARGUMENT, not retried.
    let err = rt
        .block_on(grpc_raw(&server.grpc, vec![0x0a, 0xff, 0xff, 0xff]))
        .expect_err("malformed");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // OTLP/JSON that is not UTF-8.
    let mut json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"09090909090909090909090909090909","spanId":"0505050505050505","name":"json"#.to_vec();
    json.extend_from_slice(&[0xc3, 0x28]);
    json.extend_from_slice(br#"","startTimeUnixNano":"1700000000000000000"}]}]}]}"#);
    let (status, body) = post(&server, "application/json", &json);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "0");

    assert_eq!(
        server.rows("SELECT name, attributes['note'] FROM spans ORDER BY name"),
        // Byte order: '-' sorts before U+FFFD.
        vec![
            vec![serde_json::json!("grpc-clean"), serde_json::Value::Null],
            vec![
                serde_json::json!("grpc\u{fffd}\u{fffd}"),
                serde_json::json!("x\u{fffd}\u{fffd}y")
            ],
            vec![serde_json::json!("http-clean"), serde_json::Value::Null],
            vec![
                serde_json::json!("http\u{fffd}\u{fffd}"),
                serde_json::json!("x\u{fffd}\u{fffd}y")
            ],
            vec![serde_json::json!("json\u{fffd}("), serde_json::Value::Null],
        ]
    );
    served(&server, "after-invalid-utf8");
}

#[test]
fn resource_attributes_cannot_multiply_a_request_past_its_bound() {
    let (_tmp, dir) = temp_data_dir();
    let server = Server::start(&dir);
    // 1 MiB of resource attributes over 100 spans: 100 MiB of rows from a request of
    // about 1 MiB, past what a request may expand to.
    let amplified = |first_id: u8| {
        let mut r = request(
            (0..100)
                .map(|i| span("amplified", first_id.wrapping_add(i), vec![]))
                .collect(),
        );
        r.resource_spans[0].resource = Some(opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: vec![attribute(
                "blob",
                any_value::Value::StringValue("r".repeat(1024 * 1024)),
            )],
            ..Default::default()
        });
        r.encode_to_vec()
    };

    // HTTP/protobuf: 400, with the reason, and nothing stored.
    let (status, body) = post_protobuf(&server, &amplified(1));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let message = tonic_types::Status::decode(body.as_slice())
        .expect("a google.rpc.Status")
        .message;
    assert!(message.contains("a request may expand to"), "{message}");

    // gRPC: INVALID_ARGUMENT, which exporters do not retry.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = rt
        .block_on(grpc_raw(&server.grpc, amplified(101)))
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("resources' and scopes' attributes"),
        "{err:?}"
    );

    assert_eq!(
        server.scalar("SELECT count(*) FROM spans WHERE name = 'amplified'"),
        0
    );
    // The same attributes over a few spans are stored whole.
    let mut few = request(vec![span("few", 1, vec![]), span("few", 2, vec![])]);
    few.resource_spans[0].resource = Some(opentelemetry_proto::tonic::resource::v1::Resource {
        attributes: vec![attribute(
            "blob",
            any_value::Value::StringValue("r".repeat(1024 * 1024)),
        )],
        ..Default::default()
    });
    let (status, body) = post_protobuf(&server, &few.encode_to_vec());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        server.scalar(
            "SELECT count(*) FROM spans WHERE length(resource_attributes['blob']) = 1048576"
        ),
        2
    );
    served(&server, "after-amplified");
}
