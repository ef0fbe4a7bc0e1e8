//! Any bytes as an OTLP protobuf request of each signal: decoding (with UTF-8 repair)
//! and, when it decodes, conversion to Arrow must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use swarmscope_processors::convert;
use swarmscope_processors::otlp_proto::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode::<ExportTraceServiceRequest>(data) {
        let converted = convert::spans_from_otlp(&d.request).expect("conversion");
        assert!(converted.rejected >= 0);
    }
    if let Ok(d) = decode::<ExportMetricsServiceRequest>(data) {
        convert::metrics_from_otlp(&d.request).expect("conversion");
    }
    if let Ok(d) = decode::<ExportLogsServiceRequest>(data) {
        convert::logs_from_otlp(&d.request).expect("conversion");
    }
});
