//! swarmscope's sinks: where batches go once they are converted.
//!
//! First the [`store::ParquetStore`], the history every query reads, which takes every
//! batch synchronously: its acknowledgement is the client's. Then every [`sink::Sink`]
//! (Jaeger, Prometheus remote write, Elasticsearch, webhooks), each behind a
//! [`queue::DiskQueue`] of its own, so a slow or dead one harms nothing else. The
//! [`memory::MemoryLimiter`] is the budget they all charge what they hold to.

pub mod dead_letter;
pub mod elasticsearch;
mod error;
pub mod executor;
pub mod frame;
pub mod memory;
pub mod otlp;
pub mod prometheus;
pub mod queue;
pub mod sink;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod webhook;

pub use error::{Error, Result};
