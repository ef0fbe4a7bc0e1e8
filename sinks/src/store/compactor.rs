//! Compaction orchestration: when to merge, and swapping a merged file for its
//! inputs in a table by an `OPTIMIZE` commit. How files merge is [`compact`]'s. The
//! inputs stay on disk until vacuum, so a reader of an older version still finds them.

use std::sync::Arc;

use swarmscope_processors::schema::Table;

use super::{compact, ParquetStore};
use crate::{Error, Result};

impl ParquetStore {
    /// Merges, per table, each group of small files of a partition into one file, and
    /// lays out each quiet partition for reading (see [`compact`]). Returns how many
    /// files were merged away or written again.
    pub async fn compact(&self) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let mut merged = 0;
        let config = &self.inner.config;
        let policy = compact::Policy {
            min_files: config.compaction_min_files,
            target_bytes: config.compaction_target_bytes,
            quiet_before_ms: super::layout::now_ms().saturating_sub(
                i64::try_from(config.compaction_quiet_after.as_millis()).unwrap_or(i64::MAX),
            ),
        };
        for &table in Table::ALL {
            let files = self.state(table).files.clone();
            // Every merge the plan finds: a merge while a partition is written copies
            // row groups (I/O, not CPU), and a quiet partition is laid out once, so a
            // backlog (a burst, a restart) is worked off in one tick.
            for merge in compact::plan(&files, policy) {
                let group = &merge.inputs;
                if let Some(remote) = &self.inner.remote {
                    // Merged on local disk: the inputs are fetched to their staging names.
                    let table_dir = self.inner.tables_dir.join(table.name());
                    for input in group {
                        let relative = super::delta::relative_path(&table_dir, input);
                        if let Err(e) = remote.download(table, &relative, &input.path).await {
                            super::flush::delete_local(group);
                            return Err(e);
                        }
                    }
                }
                let inner = Arc::clone(&self.inner);
                let job = merge.clone();
                let work = move || {
                    let pending = compact::merge(table, &job, &inner.props)?;
                    if let Err(e) = pending.commit() {
                        let _ = std::fs::remove_file(&pending.tmp);
                        return Err(e);
                    }
                    Ok(pending.file)
                };
                let merged_output = if merge.quiet {
                    at_low_priority(work).await
                } else {
                    tokio::task::spawn_blocking(work)
                        .await
                        .map_err(|e| Error::Task {
                            task: "compaction",
                            message: e.to_string(),
                        })
                        .and_then(|merged| merged)
                };
                let output = match merged_output {
                    Ok(output) => output,
                    Err(e) => {
                        if self.inner.remote.is_some() {
                            super::flush::delete_local(group);
                        }
                        return Err(e);
                    }
                };
                let mut log = self.inner.delta[&table].lock().await;
                let Some(log) = log.as_mut() else {
                    continue;
                };
                let staged = [output.clone()];
                let uploaded = match &self.inner.remote {
                    Some(remote) => {
                        let uploaded = super::flush::upload(remote, log, table, &staged).await;
                        super::flush::delete_local(group);
                        uploaded
                    }
                    None => Ok(()),
                };
                let replaced = match uploaded {
                    Ok(()) => {
                        log.replace(group, &output, config.compaction_target_bytes)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if self.inner.remote.is_some() {
                    super::flush::delete_local(&staged);
                }
                let replaced = match replaced {
                    // A commit can fail after its version was written: the table decides.
                    Err(e) => {
                        tracing::warn!(table = table.name(), error = %e, "a merge's commit failed; checking whether it landed");
                        log.refresh().await?;
                        if log.files().contains(&output) {
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
                    match &self.inner.remote {
                        Some(remote) => remote.delete(table, &log.relative(&output)).await,
                        None => {
                            let _ = std::fs::remove_file(&output.path);
                        }
                    }
                    replaced?;
                    continue;
                }
                let files = log.files().to_vec();
                self.state(table).files = files;
                tracing::info!(table = table.name(), inputs = group.len(), laid_out = merge.quiet, output = %output.path.display(), "compacted");
                merged += group.len();
                self.inner.metrics.compactions.inc();
            }
        }
        Ok(merged)
    }
}

/// Runs `work` on a thread of its own at the queries' priority
/// ([`QUERY_NICE`](crate::executor::QUERY_NICE)): laying out a quiet hour decodes and
/// encodes every row again, for readers, and can wait while ingestion needs the CPU.
/// Not on the blocking pool, whose threads also flush: a thread's nice value cannot be
/// raised back.
async fn at_low_priority<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let failed = |message: String| Error::Task {
        task: "compaction",
        message,
    };
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("swarmscope-layout".into())
        .spawn(move || {
            crate::executor::lower_priority(crate::executor::QUERY_NICE);
            let _ = done.send(work());
        })
        .map_err(|e| failed(e.to_string()))?;
    result
        .await
        .map_err(|_| failed("the layout thread panicked".into()))?
}
