//! Compaction orchestration: when to merge, and swapping a merged file for its
//! inputs in a table by an `OPTIMIZE` commit. How files merge is [`compact`]'s. The
//! inputs stay on disk until vacuum, so a reader of an older version still finds them.

use std::sync::Arc;

use swarmscope_processors::schema::Table;

use super::{compact, ParquetStore};
use crate::{Error, Result};

impl ParquetStore {
    /// Merges, per table, each group of small files of a partition into one file
    /// (see [`compact`]). Returns how many files were merged away.
    pub async fn compact(&self) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let mut merged = 0;
        for &table in Table::ALL {
            let files = self.state(table).files.clone();
            let config = &self.inner.config;
            // Every group the plan finds: merges that copy row groups cost I/O, not
            // CPU, so a backlog (a burst, a restart) is worked off in one tick.
            for group in compact::plan(
                &files,
                config.compaction_min_files,
                config.compaction_target_bytes,
            ) {
                let inner = Arc::clone(&self.inner);
                let inputs = group.clone();
                let output = tokio::task::spawn_blocking(move || {
                    let pending = compact::merge(table, &inputs, &inner.props)?;
                    if let Err(e) = pending.commit() {
                        let _ = std::fs::remove_file(&pending.tmp);
                        return Err(e);
                    }
                    Ok(pending.file)
                })
                .await
                .map_err(|e| Error::Task {
                    task: "compaction",
                    message: e.to_string(),
                })??;
                let mut log = self.inner.delta[&table].lock().await;
                let Some(log) = log.as_mut() else {
                    continue;
                };
                let replaced = match log
                    .replace(&group, &output, config.compaction_target_bytes)
                    .await
                {
                    // A commit can fail after its version was written: the table decides.
                    Err(e) => {
                        tracing::warn!(table = table.name(), error = %e, "a merge's commit failed; checking whether it landed");
                        log.refresh().await?;
                        if log.files()?.contains(&output) {
                            Ok(true)
                        } else {
                            Err(e)
                        }
                    }
                    replaced => replaced,
                };
                if !matches!(replaced, Ok(true)) {
                    // Retention took some inputs meanwhile (the merge is void), or the
                    // commit failed: the output was never part of the table.
                    let _ = std::fs::remove_file(&output.path);
                    replaced?;
                    continue;
                }
                let files = log.files()?;
                self.state(table).files = files;
                tracing::info!(table = table.name(), inputs = group.len(), output = %output.path.display(), "compacted");
                merged += group.len();
                self.inner.metrics.compactions.inc();
            }
        }
        Ok(merged)
    }
}
