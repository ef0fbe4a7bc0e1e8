//! Any bytes as an OTLP/JSON request of each signal: the hand-written decoder and, when
//! it decodes, conversion to Arrow must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmscope_processors::{convert, otlp_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = otlp_json::decode_traces(data) {
        convert::spans_from_otlp(&r).expect("conversion");
    }
    if let Ok(r) = otlp_json::decode_metrics(data) {
        convert::metrics_from_otlp(&r).expect("conversion");
    }
    if let Ok(r) = otlp_json::decode_logs(data) {
        convert::logs_from_otlp(&r).expect("conversion");
    }
});
