//! The swarmscope collector: configuration, OTLP receivers, the pipeline that takes
//! what they decode to the store, and the admin/query API.
//!
//! ```text
//!  OTLP gRPC :4317 ─┐                        ┌─> ParquetStore (buffer → Parquet)
//!                   ├─> decode ─> Pipeline ──┤
//!  OTLP HTTP :4318 ─┘  (OTLP→Arrow)          └─> (sinks)
//!  API :8080 ── QueryEngine (DataFusion over the store)
//! ```
//!
//! [`service::run`] wires it all and runs until shutdown.

mod analytics;
pub mod api;
pub mod config;
pub mod demo;
mod error;
pub mod net;
pub mod pipeline;
pub mod receivers;
pub mod service;
mod sinks;
pub mod telemetry;

pub use config::Config;
pub use error::Error;
