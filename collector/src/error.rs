/// Errors of the collector. The binary turns [`Error::Config`] into exit code 2 and
/// the rest into exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration; the message names the key.
    #[error("invalid config: {0}")]
    Config(String),
    #[error("cannot listen on {address} ({key}): {source}")]
    Bind {
        key: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] swarmscope_sinks::Error),
    #[error(transparent)]
    Query(#[from] swarmscope_queries::Error),
    #[error("{0} server failed: {1}")]
    Server(&'static str, String),
}
