//! A configuration value refused, naming its key as the config file spells it
//! (`processors.health.window_seconds`, `alerts.rules[2].op`): every crate's settings
//! validate into it, and the binary turns it into exit code 2.

use std::fmt::Display;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A count, size or duration that must be positive is 0.
    #[error("{key} must be > 0, got 0")]
    Zero { key: String },
    #[error("{key} must not be empty")]
    Empty { key: String },
    /// A value outside what the key takes.
    #[error("{key} must be {expected}, got {got}")]
    Invalid {
        key: String,
        expected: String,
        got: String,
    },
    /// A rule between keys (two that go together, one a multiple of another).
    #[error("{key} {rule}")]
    Rule { key: String, rule: String },
    /// A file the key names that cannot be used.
    #[error("{key}: {}: {reason}", path.display())]
    File {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

impl ConfigError {
    pub fn zero(key: impl Into<String>) -> ConfigError {
        ConfigError::Zero { key: key.into() }
    }

    pub fn empty(key: impl Into<String>) -> ConfigError {
        ConfigError::Empty { key: key.into() }
    }

    /// `key` must be `expected`, and was `got` (shown as the config file's value).
    pub fn invalid(
        key: impl Into<String>,
        expected: impl Into<String>,
        got: impl Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    pub fn rule(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
        ConfigError::Rule {
            key: key.into(),
            rule: rule.into(),
        }
    }

    pub fn file(
        key: impl Into<String>,
        path: impl Into<PathBuf>,
        reason: impl Display,
    ) -> ConfigError {
        ConfigError::File {
            key: key.into(),
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// The key the error is about.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Zero { key }
            | ConfigError::Empty { key }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Rule { key, .. }
            | ConfigError::File { key, .. } => key,
        }
    }
}

/// `value` must not be 0: the check most keys need.
pub fn positive(key: impl Into<String>, value: u64) -> Result<(), ConfigError> {
    match value {
        0 => Err(ConfigError::zero(key)),
        _ => Ok(()),
    }
}
