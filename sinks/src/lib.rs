//! swarmscope's sinks: where batches go once they are converted.
//!
//! Today that is the [`store::ParquetStore`], the history every query reads. The
//! exporters (Jaeger, Prometheus, Elasticsearch, webhooks) join it here, each with its
//! own queue.

mod error;
pub mod store;

pub use error::{Error, Result};
