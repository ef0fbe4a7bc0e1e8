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

pub mod api;
mod assembly;
pub mod config;
pub mod demo;
mod error;
mod evaluation;
pub mod net;
pub mod pipeline;
pub mod receivers;
pub mod service;
pub mod telemetry;

pub use config::Config;
pub use error::{ConfigError, Error, ServerFailure};
