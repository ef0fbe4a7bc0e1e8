use arrow::error::ArrowError;

/// Errors of the data model and conversion layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OTLP/JSON body that does not follow the OTLP/JSON encoding.
    #[error("invalid OTLP/JSON: {0}")]
    Json(String),
    /// A batch without a column a processor reads, or with one of another type: a bug
    /// in the caller, never bad input.
    #[error("unexpected batch: {0}")]
    Schema(String),
    /// A request whose rows would repeat more of their resources' and scopes'
    /// attributes than a request may expand to ([`crate::convert::MAX_REPEATED_BYTES`]):
    /// refused whole, before it is converted.
    #[error("{0}")]
    TooLarge(String),
    /// Building Arrow arrays failed; this is a bug in the conversion, not bad input.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
