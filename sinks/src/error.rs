use std::path::PathBuf;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A configuration value refused; it names the key.
    #[error(transparent)]
    Config(#[from] swarmscope_processors::ConfigError),
    #[error("the store is read-only")]
    ReadOnly,
    /// Buffered rows would pass `storage.max_buffered_bytes`; retry after a flush.
    #[error("over the memory budget: {buffered} bytes buffered, limit {limit}; retry shortly")]
    Backpressure { buffered: usize, limit: usize },
    /// The Delta log of a table refused a read or a commit.
    #[error("delta log: {0}")]
    Delta(String),
    /// The object store the tables live on refused a request (`storage.url`).
    #[error("object store: {0}")]
    ObjectStore(String),
    #[error("write-ahead log: {0}")]
    Wal(String),
    /// A flush did not commit a table because the flush before it could not; its rows
    /// wait in the buffer for the next flush.
    #[error("{table}: not committed, held back behind an earlier flush that could not commit it")]
    HeldBack { table: &'static str },
    /// A task of the store (flush, compaction, the log writer) failed outside its own
    /// error handling: it panicked or could not start.
    #[error("{task} task failed: {message}")]
    Task { task: &'static str, message: String },
    /// The store is shutting down or its log writer stopped.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
