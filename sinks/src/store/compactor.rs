//! Compaction orchestration: when to merge, and swapping a merged file for its
//! inputs in the history. How files merge is [`compact`]'s.

use std::path::PathBuf;
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
                // Retention must not delete the inputs while they are read.
                let reading = self.reading();
                let inner = Arc::clone(&self.inner);
                let inputs = group.clone();
                let output = tokio::task::spawn_blocking(move || {
                    let pending = compact::merge(table, &inputs, &inner.props)?;
                    let journal = compact::Journal {
                        output: pending.file.path.clone(),
                        inputs: inputs.iter().map(|f| f.path.clone()).collect(),
                    }
                    .store(&inner.config.data_dir)
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&pending.tmp);
                    })?;
                    if let Err(e) = pending.commit() {
                        let _ = std::fs::remove_file(&pending.tmp);
                        let _ = std::fs::remove_file(&journal);
                        return Err(e);
                    }
                    Ok((pending.file, journal))
                })
                .await
                .map_err(|e| Error::Task {
                    task: "compaction",
                    message: e.to_string(),
                })?;
                let (output, journal) = output?;
                let swapped = {
                    let mut state = self.state(table);
                    let position = state.files.iter().position(|f| *f == group[0]);
                    let all_there = group.iter().all(|g| state.files.contains(g));
                    match position {
                        Some(at) if all_there => {
                            state.files[at] = output.clone();
                            state.files.retain(|f| !group[1..].contains(f));
                            true
                        }
                        _ => false,
                    }
                };
                drop(reading);
                let inputs: Vec<PathBuf> = group.iter().map(|f| f.path.clone()).collect();
                if swapped {
                    tracing::info!(table = table.name(), inputs = inputs.len(), output = %output.path.display(), "compacted");
                    merged += inputs.len();
                    self.inner.metrics.compactions.inc();
                    self.retire(inputs, Some(journal));
                } else {
                    // Retention took some inputs meanwhile: the merge is void. Its output
                    // goes; its inputs stay where retention left them.
                    compact::delete_files(std::slice::from_ref(&output.path))?;
                    std::fs::remove_file(&journal).map_err(Error::io(&journal))?;
                }
            }
        }
        self.delete_retired()?;
        Ok(merged)
    }
}
