//! Where sinks keep the records their endpoint refused for good: the `dead_letters`
//! table, queryable like any other, rather than a log line or nothing.

use std::sync::Arc;

use arrow::array::{Int32Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use swarmscope_processors::schema::Table;

/// One refused record.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub source_table: Table,
    pub destination: String,
    pub status: i32,
    pub error_type: String,
    pub reason: String,
    pub document: String,
}

/// Stores dead letters (the collector's pipeline, into `dead_letters`).
#[async_trait::async_trait]
pub trait DeadLetters: Send + Sync {
    /// `Ok` once the rows are as durable as any acknowledged row.
    async fn keep(&self, batch: RecordBatch) -> Result<(), String>;
}

/// The `dead_letters` rows of `letters`, refused by sink `sink` at `time_ns`.
pub fn dead_letter_rows(
    sink: &str,
    time_ns: i64,
    letters: &[DeadLetter],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut strings: [StringBuilder; 6] = Default::default();
    let mut status = Int32Builder::new();
    for letter in letters {
        time.append_value(time_ns);
        for (builder, value) in strings.iter_mut().zip([
            sink,
            letter.source_table.name(),
            &letter.destination,
            &letter.error_type,
            &letter.reason,
            &letter.document,
        ]) {
            builder.append_value(value);
        }
        status.append_value(letter.status);
    }
    let [mut sink, mut source, mut destination, mut error_type, mut reason, mut document] = strings;
    RecordBatch::try_new(
        Table::DEAD_LETTERS.schema(),
        vec![
            Arc::new(time.finish()),
            Arc::new(sink.finish()),
            Arc::new(source.finish()),
            Arc::new(destination.finish()),
            Arc::new(status.finish()),
            Arc::new(error_type.finish()),
            Arc::new(reason.finish()),
            Arc::new(document.finish()),
        ],
    )
}
