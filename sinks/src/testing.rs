//! Batches for the unit tests of framing, the log and the queues: one `Int64` column
//! `n`, so that a test can tell its records apart by their first value.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

/// A batch whose column `n` holds `n` and `n + 1`.
pub(crate) fn batch(n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![n, n + 1]))])
        .unwrap_or_else(|e| unreachable!("{e}"))
}

/// The first value of column `n`.
pub(crate) fn first(batch: &RecordBatch) -> i64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map_or(i64::MIN, |a| a.value(0))
}
