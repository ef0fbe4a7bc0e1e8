//! `[query]`: limits of the SQL sandbox.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled.
    pub timeout_ms: u64,
    /// Memory all running queries may hold for joins, sorts and aggregations.
    pub memory_limit_mb: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: 30_000,
            memory_limit_mb: 1024,
        }
    }
}

impl QueryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<()> {
        if self.timeout_ms == 0 {
            return Err(Error::Config("query.timeout_ms must be > 0, got 0".into()));
        }
        if self.memory_limit_mb == 0 {
            return Err(Error::Config(
                "query.memory_limit_mb must be > 0, got 0".into(),
            ));
        }
        Ok(())
    }
}
