//! The pipeline: decoded OTLP in, Arrow batches to the store.
//!
//! Receivers call [`Pipeline::export`] and answer their client by its result: `Ok` means
//! the valid records are durable (in the store's write-ahead log) and carries the
//! partial-success count of the invalid ones; `Overloaded` means retry shortly.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use swarmscope_processors::convert::{self, Converted};
use swarmscope_processors::otlp_proto;
use swarmscope_processors::schema::Table;
use swarmscope_sinks::store::ParquetStore;

/// One decoded export request of any signal.
pub enum ExportRequest {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    /// A trace request converted straight from protobuf ([`convert::spans_from_protobuf`]).
    Spans(Converted),
}

impl ExportRequest {
    /// Decodes a protobuf `ExportTraceServiceRequest`: straight into Arrow when the
    /// request allows, otherwise through prost with invalid UTF-8 repaired
    /// ([`otlp_proto::decode`]). The second value is the warning for the client.
    pub fn traces_from_protobuf(
        bytes: &[u8],
    ) -> Result<(ExportRequest, Option<String>), prost::DecodeError> {
        // On a conversion error (a bug) the general path converts again, and
        // `export` reports the error it meets.
        if let Some(Ok(converted)) = convert::spans_from_protobuf(bytes) {
            return Ok((ExportRequest::Spans(converted), None));
        }
        let decoded = otlp_proto::decode::<ExportTraceServiceRequest>(bytes)?;
        let warning = decoded.warning();
        Ok((ExportRequest::Traces(decoded.request), warning))
    }
}

/// What became of an accepted request.
#[derive(Debug, Default, PartialEq)]
pub struct ExportOutcome {
    pub accepted: usize,
    pub rejected: i64,
    pub error_message: Option<String>,
}

impl ExportOutcome {
    /// Adds a warning for the client to the partial-success message.
    pub fn warn(&mut self, warning: Option<String>) {
        if let Some(w) = warning {
            self.error_message = Some(match self.error_message.take() {
                Some(m) => format!("{m}; {w}"),
                None => w,
            });
        }
    }

    /// Whether the answer carries `partial_success`: records were rejected, or there
    /// is a warning (then with a rejected count of 0, as OTLP allows).
    pub fn has_partial_success(&self) -> bool {
        self.rejected > 0 || self.error_message.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Over the memory budget: nothing was taken, the client should retry shortly.
    #[error("{0}")]
    Overloaded(String),
    /// The store could not take the batch; the client should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug in conversion; nothing was stored.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Clone)]
pub struct Pipeline {
    store: ParquetStore,
}

impl Pipeline {
    pub fn new(store: ParquetStore) -> Pipeline {
        Pipeline { store }
    }

    pub fn store(&self) -> &ParquetStore {
        &self.store
    }

    /// Asked before a request is read and decoded: `Err(Overloaded)` while the store's
    /// memory budget has no room for another request ([`ParquetStore::admission`]).
    pub fn admission(&self) -> Result<(), PipelineError> {
        self.store.admission().map_err(store_error)
    }

    pub async fn export(&self, request: ExportRequest) -> Result<ExportOutcome, PipelineError> {
        // Each arm drops its request once converted, before the batch is stored.
        let (table, converted) = match request {
            ExportRequest::Traces(r) => (Table::Spans, convert::spans_from_otlp(&r)),
            ExportRequest::Metrics(r) => (Table::Metrics, convert::metrics_from_otlp(&r)),
            ExportRequest::Logs(r) => (Table::Logs, convert::logs_from_otlp(&r)),
            ExportRequest::Spans(converted) => (Table::Spans, Ok(converted)),
        };
        let Converted {
            batch,
            rejected,
            error_message,
        } = converted.map_err(|e| PipelineError::Internal(e.to_string()))?;
        if rejected > 0 {
            tracing::warn!(
                table = table.name(),
                rejected,
                reason = error_message.as_deref().unwrap_or(""),
                "invalid records rejected"
            );
        }
        let accepted = batch.num_rows();
        self.store.append(table, batch).await.map_err(store_error)?;
        Ok(ExportOutcome {
            accepted,
            rejected,
            error_message,
        })
    }
}

fn store_error(e: swarmscope_sinks::Error) -> PipelineError {
    match e {
        swarmscope_sinks::Error::Backpressure { .. } => PipelineError::Overloaded(e.to_string()),
        e => PipelineError::Unavailable(e.to_string()),
    }
}
