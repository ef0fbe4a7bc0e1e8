//! An in-process stand-in for Elasticsearch's `_bulk` API, faithful to what a client
//! sees: basic authentication (401 `security_exception` without it), the NDJSON
//! grammar (an action line, then a source line for `create`/`index`; the body ends with
//! a newline; a malformed line fails the whole request with 400), data streams
//! (`create` only, `@timestamp` required), and one answer per item with its `status`
//! and `error`, `errors: true` when any failed.
//!
//! Its script: a document whose `attributes` has `es.test = "mapping_error"` fails with
//! a 400 `document_parsing_exception`; every third document it has not seen before is
//! refused once with 429 `es_rejected_execution_exception`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::read_request;

/// What the stand-in holds and saw.
#[derive(Default)]
pub struct Cluster {
    /// Indexed documents: (index, source).
    pub documents: Vec<(String, Value)>,
    /// Whole requests refused (status, reason), which a correct client never causes.
    pub refused_requests: Vec<(u16, String)>,
    /// Requests refused for their credentials.
    pub unauthorized: usize,
    /// Items answered 429 and 400.
    pub rejected_items: usize,
    pub mapping_errors: usize,
    seen: HashSet<String>,
    new_documents: usize,
}

pub struct Elasticsearch {
    pub url: String,
    pub cluster: Arc<Mutex<Cluster>>,
}

impl Elasticsearch {
    /// A cluster requiring `user:password` over basic authentication.
    pub fn start(user: &str, password: &str) -> Elasticsearch {
        use base64::Engine;
        Elasticsearch::start_with_auth(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }

    /// A cluster requiring the API key `key` (`Authorization: ApiKey <key>`).
    pub fn start_with_api_key(key: &str) -> Elasticsearch {
        Elasticsearch::start_with_auth(format!("ApiKey {key}"))
    }

    fn start_with_auth(expected: String) -> Elasticsearch {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let state = Arc::clone(&cluster);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let (status, answer) = {
                    let mut cluster = state.lock().expect("cluster");
                    handle(&mut cluster, &expected, &request)
                };
                let body = answer.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = std::io::Write::write_all(&mut &stream, reply.as_bytes());
            }
        });
        Elasticsearch { url, cluster }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Cluster) -> T) -> T {
        f(&self.cluster.lock().expect("cluster"))
    }

    /// Span documents indexed so far.
    pub fn span_documents(&self) -> usize {
        self.with(|c| {
            c.documents
                .iter()
                .filter(|(index, _)| index == "traces-generic.otel-default")
                .count()
        })
    }
}

fn error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status
        }),
    )
}

fn handle(cluster: &mut Cluster, expected_auth: &str, request: &super::Received) -> (u16, Value) {
    let path = request
        .request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if request.header("authorization") != Some(expected_auth) {
        cluster.unauthorized += 1;
        return error(
            401,
            "security_exception",
            &format!("missing authentication credentials for REST request [{path}]"),
        );
    }
    if !request.request_line.starts_with("POST ") || !path.ends_with("/_bulk") {
        return error(
            400,
            "illegal_argument_exception",
            "no handler found for uri",
        );
    }
    let content_type = request.header("content-type").unwrap_or_default();
    if !["application/json", "application/x-ndjson"]
        .iter()
        .any(|t| content_type.starts_with(t))
    {
        let reason = format!("Content-Type header [{content_type}] is not supported");
        cluster.refused_requests.push((406, reason.clone()));
        return error(406, "illegal_argument_exception", &reason);
    }
    let refuse = |cluster: &mut Cluster, reason: String| {
        cluster.refused_requests.push((400, reason.clone()));
        error(400, "illegal_argument_exception", &reason)
    };
    if !request.body.ends_with(b"\n") {
        return refuse(
            cluster,
            "The bulk request must be terminated by a newline [\\n]".into(),
        );
    }
    let lines: Vec<&[u8]> = request.body.split(|b| *b == b'\n').collect();
    let lines = &lines[..lines.len() - 1];
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Ok(Value::Object(action)) = serde_json::from_slice::<Value>(lines[i]) else {
            return refuse(
                cluster,
                format!(
                    "Malformed action/metadata line [{}], expected START_OBJECT",
                    i + 1
                ),
            );
        };
        let Some((op, meta)) = action.iter().next().filter(|_| action.len() == 1) else {
            return refuse(
                cluster,
                format!("Malformed action/metadata line [{}]", i + 1),
            );
        };
        if !["create", "index", "update", "delete"].contains(&op.as_str()) {
            return refuse(
                cluster,
                format!("Malformed action/metadata line [{}], expected one of [create, delete, index, update] but found [{op}]", i + 1),
            );
        }
        let index = meta["_index"].as_str().unwrap_or_default().to_owned();
        if op == "delete" {
            i += 1;
            continue;
        }
        let Some(Ok(Value::Object(source))) =
            lines.get(i + 1).map(|l| serde_json::from_slice::<Value>(l))
        else {
            return refuse(
                cluster,
                format!(
                    "The bulk request's source line [{}] is not a JSON object",
                    i + 2
                ),
            );
        };
        i += 2;
        let data_stream = ["traces-", "metrics-", "logs-"]
            .iter()
            .any(|p| index.starts_with(p));
        let item_error = |status: u16, kind: &str, reason: &str| {
            json!({op.clone(): {"_index": index, "status": status,
                "error": {"type": kind, "reason": reason}}})
        };
        let source = Value::Object(source);
        if index.is_empty() {
            items.push(item_error(
                400,
                "action_request_validation_exception",
                "index is missing",
            ));
        } else if data_stream && op != "create" {
            items.push(item_error(
                400,
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams",
            ));
        } else if data_stream && source.get("@timestamp").is_none() {
            items.push(item_error(
                400,
                "document_parsing_exception",
                "data stream timestamp field [@timestamp] is missing",
            ));
        } else if source["attributes"]["es.test"] == "mapping_error" {
            cluster.mapping_errors += 1;
            items.push(item_error(
                400,
                "document_parsing_exception",
                "[1:42] failed to parse field [attributes.es.test] of type [long] in document",
            ));
        } else {
            if cluster.seen.insert(source.to_string()) {
                cluster.new_documents += 1;
                if cluster.new_documents.is_multiple_of(3) {
                    // Refused, but seen: its retry is indexed.
                    cluster.rejected_items += 1;
                    items.push(item_error(
                        429,
                        "es_rejected_execution_exception",
                        "rejected execution of coordinating operation",
                    ));
                    continue;
                }
            }
            let id = format!("doc-{}", cluster.documents.len());
            cluster.documents.push((index.clone(), source));
            items.push(
                json!({op.clone(): {"_index": index, "_id": id, "_version": 1,
                "result": "created", "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": cluster.documents.len() - 1, "_primary_term": 1, "status": 201}}),
            );
        }
    }
    let errors = items.iter().any(|item| {
        item.as_object()
            .and_then(|o| o.values().next())
            .is_some_and(|r| r.get("error").is_some())
    });
    (200, json!({"took": 3, "errors": errors, "items": items}))
}
