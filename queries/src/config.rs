//! `[query]`: limits of the SQL sandbox.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use swarmscope_processors::config_error::{positive, ConfigError};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled (503).
    pub timeout_ms: u64,
    /// Memory all running queries may hold for joins, sorts and aggregations.
    pub memory_limit_mb: usize,
    /// Threads queries run on, apart from ingestion. By default every core the process
    /// may use: they run at a lower priority (nice 10), so an idle server gives a query
    /// the whole machine and a busy one gives ingestion the CPU first.
    pub threads: usize,
    /// Queries that run at once; more wait for a turn.
    pub max_concurrent: usize,
    /// How long a query waits for a turn before it is refused with 503 and
    /// `Retry-After`.
    pub queue_timeout_ms: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: 30_000,
            memory_limit_mb: 1024,
            threads: default_threads(),
            max_concurrent: 4,
            queue_timeout_ms: 5_000,
        }
    }
}

/// The cores this process may use (at least one).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl QueryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// Checks the values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("memory_limit_mb", self.memory_limit_mb as u64),
            ("threads", self.threads as u64),
            ("max_concurrent", self.max_concurrent as u64),
        ] {
            positive(format!("query.{key}"), value)?;
        }
        Ok(())
    }
}
