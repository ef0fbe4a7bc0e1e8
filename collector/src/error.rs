use std::path::PathBuf;

pub use swarmscope_processors::ConfigError;

/// Errors of the collector. The binary turns [`Error::is_config`] errors into exit code
/// 2 and the rest into exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value refused; it names the key.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The config file cannot be read, or is not TOML of the config's shape (an
    /// unknown key is named).
    #[error("invalid config: {}: {reason}", path.display())]
    ConfigFile { path: PathBuf, reason: String },
    /// Config text that is not TOML of the config's shape.
    #[error("invalid config: {0}")]
    Syntax(#[from] toml::de::Error),
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
    /// The metrics registry refused a collector (a name registered twice).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A thread pool or task of the collector's could not start.
    #[error("cannot start the {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A server failed, or stopped on its own.
    #[error("{server} server failed: {failure}")]
    Server {
        server: &'static str,
        failure: ServerFailure,
    },
}

/// How a server ended that should not have.
#[derive(Debug, thiserror::Error)]
pub enum ServerFailure {
    /// It returned an error.
    #[error("{0}")]
    Failed(String),
    /// Its task panicked.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// It returned without being asked to stop.
    #[error("stopped unexpectedly")]
    Stopped,
}

impl Error {
    /// A mistake in the configuration (exit code 2), not a failure at run time.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Config(_) | Error::ConfigFile { .. } | Error::Syntax(_)
        )
    }
}
