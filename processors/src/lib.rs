//! swarmscope's data model and the conversion of OTLP into it.
//!
//! This crate sits right after the receivers in the pipeline: a decoded OTLP export
//! request (protobuf, or OTLP/JSON through [`otlp_json`]) becomes one Arrow
//! [`RecordBatch`](arrow::record_batch::RecordBatch) per table ([`schema`]). From there on
//! Arrow is the currency: the store, the query engine and the sinks all take batches.
//! Trace requests in protobuf usually skip the decoded form altogether:
//! [`convert::spans_from_protobuf`] reads the wire format straight into Arrow.
//!
//! It does no I/O.
//!
//! ```
//! use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
//! use swarmscope_processors::convert::spans_from_otlp;
//!
//! let converted = spans_from_otlp(&ExportTraceServiceRequest::default()).unwrap();
//! assert_eq!(converted.batch.num_rows(), 0);
//! assert_eq!(converted.rejected, 0);
//! ```

pub mod analytics;
pub mod anyvalue;
mod catalogue;
pub mod columns;
pub mod config_error;
pub mod convert;
pub mod durations;
mod error;
pub mod otlp_json;
pub mod otlp_proto;
pub mod processor;
pub mod prometheus;
pub mod schema;
mod wire;

pub use config_error::ConfigError;
pub use error::{Error, Result};
