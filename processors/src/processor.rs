//! The [`Processor`] trait: what sees every accepted batch after the receivers.
//!
//! A processor has two hooks, for the two kinds of work the OpenTelemetry Collector's
//! processors and connectors do:
//! - [`Processor::derive`] turns an accepted batch into rows of derived tables
//!   (coordination events from spans, say). It runs on the acknowledgement path, and
//!   what it returns is logged in the same write-ahead log record as its source, so a
//!   derived table never misses a row whose source was acknowledged, crash or not. It
//!   must be cheap: a client waits for it.
//! - [`Processor::observe`] sees each batch once it is acknowledged, on a task of the
//!   processor's own behind a bounded queue (aggregates, metrics, detectors), at a lower
//!   priority than ingestion. A slow observer delays no client: when its queue is full,
//!   batches are shed and counted.
//!
//! ```
//! use swarmscope_processors::processor::{Processor, TableBatch};
//! use swarmscope_processors::schema::Table;
//! use swarmscope_processors::Result;
//!
//! /// Counts spans, off the acknowledgement path.
//! #[derive(Default)]
//! struct SpanCounter(std::sync::atomic::AtomicUsize);
//!
//! impl Processor for SpanCounter {
//!     fn name(&self) -> &'static str {
//!         "span_counter"
//!     }
//!     fn observes(&self, table: Table) -> bool {
//!         table == Table::SPANS
//!     }
//!     fn observe(&self, input: &TableBatch) {
//!         self.0.fetch_add(input.batch.num_rows(), std::sync::atomic::Ordering::Relaxed);
//!     }
//! }
//! ```

use arrow::record_batch::RecordBatch;

use crate::schema::Table;
use crate::Result;

/// Rows of one table: the currency between the pipeline's stages.
#[derive(Clone, Debug, PartialEq)]
pub struct TableBatch {
    pub table: Table,
    pub batch: RecordBatch,
}

impl TableBatch {
    pub fn new(table: Table, batch: RecordBatch) -> TableBatch {
        TableBatch { table, batch }
    }
}

/// A stage that sees every accepted batch; see the module documentation.
pub trait Processor: Send + Sync {
    /// The processor's name in metrics and logs (`swarmscope_processor_*{processor}`).
    fn name(&self) -> &'static str;

    /// Rows for derived tables from `input`, stored with it as one record. Called for
    /// every batch of every table, on the acknowledgement path. An error refuses the
    /// request (the client retries), so return one only when the input cannot be kept.
    fn derive(&self, input: &TableBatch) -> Result<Vec<TableBatch>> {
        let _ = input;
        Ok(Vec::new())
    }

    /// Whether [`Processor::observe`] should see the batches of `table`; a processor
    /// that observes no table (one that only derives) gets no queue and no task.
    fn observes(&self, table: Table) -> bool {
        let _ = table;
        false
    }

    /// Sees `input` (and, separately, every batch derived from it) once it is
    /// acknowledged, on the processor's own task: only batches of the tables it
    /// [observes](Processor::observes).
    fn observe(&self, input: &TableBatch) {
        let _ = input;
    }
}
