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

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::schema::Table;
use crate::Result;

/// Rows of one table: the currency between the pipeline's stages.
#[derive(Clone, Debug, PartialEq)]
pub struct TableBatch {
    pub table: Table,
    pub batch: RecordBatch,
    /// The ids of a `spans` batch's rows as numbers, when the receiver gave them: what
    /// the call graph and GenAI attribution key on. Without them (a batch built
    /// elsewhere), they read the ids' text.
    pub ids: Option<Arc<SpanIds>>,
}

impl TableBatch {
    pub fn new(table: Table, batch: RecordBatch) -> TableBatch {
        TableBatch {
            table,
            batch,
            ids: None,
        }
    }

    /// The batch with its rows' ids as numbers; ignored unless there is one of each
    /// for every row.
    pub fn with_ids(mut self, ids: Option<SpanIds>) -> TableBatch {
        self.ids = ids
            .filter(|ids| ids.len() == Some(self.batch.num_rows()))
            .map(Arc::new);
        self
    }
}

/// A span batch's ids as the receiver read them off the wire, before they became hex
/// text: entry `i` of each is row `i`'s. Parsing the text back cost the call graph
/// and GenAI attribution more than copying the numbers aside costs the receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanIds {
    pub trace: Vec<u128>,
    pub span: Vec<u64>,
    /// 0 for a span without a parent: a valid span id is never all zeros.
    pub parent: Vec<u64>,
}

impl SpanIds {
    pub fn with_capacity(rows: usize) -> SpanIds {
        SpanIds {
            trace: Vec::with_capacity(rows),
            span: Vec::with_capacity(rows),
            parent: Vec::with_capacity(rows),
        }
    }

    /// Appends a span's ids, each as its bytes read big-endian (the order the hex
    /// text spells them); `parent` is empty for a root span.
    pub fn push(&mut self, trace: &[u8], span: &[u8], parent: &[u8]) {
        self.trace.push(big_endian(trace));
        self.span.push(big_endian(span) as u64);
        self.parent.push(big_endian(parent) as u64);
    }

    /// How many rows it holds ids for; `None` if its columns disagree.
    pub fn len(&self) -> Option<usize> {
        let n = self.trace.len();
        (self.span.len() == n && self.parent.len() == n).then_some(n)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The bytes it holds, for a memory budget.
    pub fn memory_size(&self) -> usize {
        self.trace.capacity() * 16 + (self.span.capacity() + self.parent.capacity()) * 8
    }
}

/// Up to 16 bytes as a big-endian number (ids are 16 or 8 bytes: one load each).
fn big_endian(bytes: &[u8]) -> u128 {
    if let Ok(trace) = <[u8; 16]>::try_from(bytes) {
        return u128::from_be_bytes(trace);
    }
    if let Ok(span) = <[u8; 8]>::try_from(bytes) {
        return u128::from(u64::from_be_bytes(span));
    }
    bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::testing::{batch, span};

    #[test]
    fn ids_are_kept_only_when_they_are_the_rows_ids() {
        let rows = batch(
            "svc",
            vec![span(1, 1_000, 5, vec![]), span(2, 1_000, 5, vec![])],
        );
        let mut ids = SpanIds::with_capacity(2);
        for n in [1u64, 2] {
            ids.push(
                &u128::from(n + 1).to_be_bytes(),
                &(n + 1).to_be_bytes(),
                &[],
            );
        }
        let kept = TableBatch::new(Table::SPANS, rows.clone()).with_ids(Some(ids.clone()));
        assert_eq!(kept.ids.as_deref(), Some(&ids));
        // Rows cut after the ids were read (retention): the ids no longer match them.
        let cut = TableBatch::new(Table::SPANS, rows.slice(0, 1)).with_ids(Some(ids));
        assert!(cut.ids.is_none());
    }
}
