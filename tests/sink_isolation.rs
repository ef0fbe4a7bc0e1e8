//! One sink blackholed (its endpoint accepts connections and never answers) and one
//! refused (nothing listens): ingestion and the healthy sink carry on untouched, the
//! collector still stops promptly, and the dead sink's backlog, kept on disk across a
//! restart, is delivered once its endpoint comes up.

mod common;

use std::time::Duration;

use common::elasticsearch::Elasticsearch;
use common::otlp_receiver::Receiver;
use common::{blocking_get, eventually, numbered_spans, temp_data_dir, Options, Server};

/// A listener that accepts connections and never reads or answers them.
fn blackhole() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    address
}

/// The value of `name{sink="<sink>"}` on `/metrics`, 0 when absent.
fn sink_metric(server: &Server, name: &str, sink: &str) -> f64 {
    let (_, body) = blocking_get(&format!("{}/metrics", server.api)).expect("metrics");
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_blackholed_and_a_refused_sink_harm_nothing_and_the_backlog_survives_a_restart() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let es = Elasticsearch::start("elastic", "changeme");
    let blackholed = blackhole();
    // A port nothing listens on (yet): connections to it are refused.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let (_tmp, dir) = temp_data_dir();
    let options = || {
        Options {
        extra: format!(
            "[sinks.jaeger]\nendpoint = \"http://{blackholed}\"\ntimeout_ms = 500\n\
             [sinks.otlp]\nendpoint = \"http://{refused}\"\ntimeout_ms = 500\n\
             [sinks.elasticsearch]\nendpoint = \"{}\"\nusername = \"elastic\"\npassword = \"changeme\"\n",
            es.url
        ),
        ..Options::default()
    }
    };
    let server = Server::start_with(&dir, options());
    // Every request is acknowledged (send_spans asserts 200) and stored.
    for request in 0..10 {
        server.send_spans(
            "isolated-service",
            numbered_spans("isolated", request * 50, 50),
        );
    }
    assert_eq!(
        server.scalar("SELECT count(*) FROM spans").as_i64(),
        Some(500)
    );
    // The healthy sink gets everything, once.
    eventually("500 span documents in Elasticsearch", || {
        (es.span_documents() == 500).then_some(())
    });
    // The dead ones hold their backlog and keep trying.
    eventually("the refused sink retrying", || {
        (sink_metric(&server, "swarmscope_sink_retries_total", "otlp") >= 2.0).then_some(())
    });
    for sink in ["jaeger", "otlp"] {
        assert_eq!(
            sink_metric(&server, "swarmscope_sink_sent_total", sink),
            0.0
        );
        assert!(sink_metric(&server, "swarmscope_sink_queue_bytes", sink) > 0.0);
    }
    // A sink stuck in a send does not hold up the shutdown.
    let (status, took) = server.stop_within(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "stopped in {took:?}: {status:?}"
    );

    // The refused endpoint comes up; the backlog queued before the restart arrives.
    let receiver = Receiver::default();
    receiver.serve(&rt, &refused.to_string());
    let server = Server::start_with(&dir, options());
    let received = eventually("the 500 queued spans at the OTLP endpoint", || {
        let spans = receiver.received();
        (spans.len() == 500).then_some(spans)
    });
    assert!(
        received.values().all(|n| *n == 1),
        "duplicates after the restart"
    );
    // Elasticsearch's acknowledged queue is not sent again.
    assert_eq!(es.span_documents(), 500);
    assert!(server.stop().success());
}
