//! Any bytes as an OTLP protobuf request of each signal: decoding (with UTF-8 repair)
//! and, when it decodes, conversion to Arrow must not panic. For traces the wire path
//! (`spans_from_protobuf`) must agree with prost or step aside.

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use swarmscope_processors::convert;
use swarmscope_processors::otlp_proto::decode;

fuzz_target!(|data: &[u8]| {
    let wire = convert::spans_from_protobuf(data);
    match decode::<ExportTraceServiceRequest>(data) {
        Ok(d) => {
            let converted = convert::spans_from_otlp(&d.request).expect("conversion");
            assert!(converted.rejected >= 0);
            if let Some(wire) = wire {
                let wire = wire.expect("wire conversion");
                assert_eq!(
                    d.repaired_strings, 0,
                    "the wire path took a request needing repair"
                );
                assert_eq!(wire.batch, converted.batch);
                assert_eq!(wire.rejected, converted.rejected);
            }
        }
        Err(_) => assert!(wire.is_none(), "the wire path took what prost refuses"),
    }
    if let Ok(d) = decode::<ExportMetricsServiceRequest>(data) {
        convert::metrics_from_otlp(&d.request).expect("conversion");
    }
    if let Ok(d) = decode::<ExportLogsServiceRequest>(data) {
        convert::logs_from_otlp(&d.request).expect("conversion");
    }
});
