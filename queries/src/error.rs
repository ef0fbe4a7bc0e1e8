use datafusion::error::DataFusionError;

/// Errors of the query layer. [`Error::is_user_error`] tells the API which are the
/// caller's (4xx) and which are the server's (5xx).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is valid SQL but not allowed in the read-only sandbox.
    #[error("refused: {0}; only read-only queries are allowed")]
    Refused(String),
    /// The SQL does not parse or plan (unknown table or column, type error, ...).
    #[error("{0}")]
    Invalid(DataFusionError),
    #[error("query timed out after {0} ms (query.timeout_ms) and was cancelled")]
    Timeout(u64),
    /// Every query slot stayed taken for `query.queue_timeout_ms`; retry shortly.
    #[error("too many queries running: none of the {max_concurrent} slots (query.max_concurrent) freed up within {waited_ms} ms; retry shortly")]
    Busy {
        max_concurrent: usize,
        waited_ms: u64,
    },
    /// The server is shutting down; running queries are cancelled.
    #[error("query cancelled: the server is shutting down")]
    ShuttingDown,
    /// The query task failed outside DataFusion (a panic).
    #[error("query failed: {0}")]
    Internal(String),
    /// The query needed more memory than `query.memory_limit_mb`.
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(DataFusionError),
    #[error("query failed: {0}")]
    Execution(DataFusionError),
    #[error(transparent)]
    Config(#[from] swarmscope_processors::ConfigError),
    #[error(transparent)]
    Store(#[from] swarmscope_sinks::Error),
    #[error("encoding the result: {0}")]
    Encode(#[from] arrow::error::ArrowError),
}

impl Error {
    /// Sorts a DataFusion error into the caller's fault or the server's.
    pub(crate) fn from_datafusion(e: DataFusionError) -> Error {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Error::Invalid(e),
            DataFusionError::ResourcesExhausted(_) => Error::ResourcesExhausted(e),
            _ => Error::Execution(e),
        }
    }

    /// Whether the caller can fix this by changing the query.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::Invalid(_) | Error::ResourcesExhausted(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
