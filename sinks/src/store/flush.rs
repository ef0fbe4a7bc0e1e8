//! Flush: buffered rows become Parquet files, committed to their tables' Delta logs.
//!
//! The log writer hands over every buffer together with the segment it sealed
//! ([`Taken`]); the files are written (under `.tmp` names, then renamed into place),
//! and each table's files are committed to its Delta log as one `WRITE` with the
//! transaction `(writer id, sealed segment)`, then swapped for the batches under the
//! lock queries snapshot under. Once every table has committed, the checkpoint records
//! the segment as covered and the log segments up to it are deleted. A table whose
//! commit fails gets its rows back in front of its buffer (they are still in the log);
//! its written files are deleted, or left for vacuum when even that fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use swarmscope_processors::schema::Table;
use tokio::sync::oneshot;

use super::log::{Command, Taken};
use super::{lock_state, wal, writer, Inner, ParquetStore};
use crate::{Error, Result};

impl ParquetStore {
    /// Writes every buffered row to Parquet and retires the log segments it covered.
    pub async fn flush(&self) -> Result<()> {
        let Some(log) = &self.inner.log else {
            return Ok(());
        };
        let _guard = self.inner.flush_lock.lock().await;
        if Table::ALL
            .iter()
            .all(|t| self.state(*t).buffered.is_empty())
        {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        log.send(Command::Rotate { done })?;
        let taken = answer.await.map_err(|_| Error::Closed)??;
        let started = std::time::Instant::now();
        let result = commit_flush(&self.inner, taken).await;
        let metrics = &self.inner.metrics;
        metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics.flushes.with_label_values(&[outcome]).inc();
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush failed; rows stay buffered and logged");
        }
        result
    }

    /// Flushes every `flush_interval_ms`, and whenever a buffer fills, until
    /// `shutdown` resolves; then flushes what is left. Retention runs on every tick.
    /// Compaction runs beside it, as often, in its own task, so that a long merge
    /// never holds up a flush.
    pub async fn run_flusher(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = first_tick_after_one_period(self.inner.config.flush_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (stop_compactor, mut stopped) = tokio::sync::watch::channel(false);
        let compactor = tokio::spawn({
            let store = self.clone();
            let mut ticker = first_tick_after_one_period(self.inner.config.flush_interval());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            async move {
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    if let Err(e) = store.compact().await {
                        tracing::error!(error = %e, "compaction failed; the inputs stay");
                    }
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
                _ = self.inner.full.notified() => {}
                _ = self.inner.memory.pressure() => {}
            }
            // Errors are logged by `flush`; the rows stay buffered for the next try.
            let _ = self.flush().await;
            if let Err(e) = self.enforce_retention(std::time::SystemTime::now()).await {
                tracing::error!(error = %e, "retention failed");
            }
            if self.vacuum_due() {
                if let Err(e) = self.vacuum().await {
                    tracing::error!(error = %e, "vacuum failed");
                }
            }
        }
        // A merge under way is finished (its commit, or its output left for vacuum).
        let _ = stop_compactor.send(true);
        let _ = compactor.await;
        let _ = self.flush().await;
    }
}

/// A ticker whose first tick is one `period` out. `tokio::time::interval` ticks at
/// once, which made a flush (and a merge) race the first requests of a server just
/// started: whether they were still buffered depended on when the task was first
/// scheduled. Recovered rows wait for the first tick like any others.
fn first_tick_after_one_period(period: std::time::Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// Writes the taken buffers as Parquet and commits each table's files to its Delta
/// log. A table whose files cannot be written or committed gets its rows back in front
/// of its buffer (they are still in the log, which is kept until every table has
/// committed them); the others keep their commits.
async fn commit_flush(inner: &Arc<Inner>, taken: Taken) -> Result<()> {
    let sequence = taken.sealed_segment;
    let mut failure = None;
    for (table, batches) in taken.tables {
        if batches.is_empty() {
            continue;
        }
        // Each table commits alone: one that cannot be written holds back no other.
        if let Err(e) = write_and_commit(inner, table, &batches, sequence).await {
            let mut batches = batches;
            let mut state = lock_state(inner, table);
            state.flushing.clear();
            state.buffered_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
            batches.append(&mut state.buffered);
            state.buffered = batches;
            if failure.is_none() {
                failure = Some(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let wal_dir = inner.wal_dir.clone();
    tokio::task::spawn_blocking(move || {
        wal::Checkpoint {
            covered_segment: sequence,
            pending_files: Vec::new(),
        }
        .store(&wal_dir)?;
        wal::delete_covered(&wal_dir, sequence)
    })
    .await
    .map_err(|e| Error::Task {
        task: "flush",
        message: e.to_string(),
    })??;
    tracing::debug!(segment = sequence, "flushed and committed");
    Ok(())
}

/// Writes one table's taken rows, commits the files as flush `sequence`, and swaps the
/// rows for the files in what queries read, before the next commit to the table can
/// change its files again.
async fn write_and_commit(
    inner: &Arc<Inner>,
    table: swarmscope_processors::schema::Table,
    batches: &[arrow::array::RecordBatch],
    sequence: u64,
) -> Result<()> {
    let files = {
        let inner = Arc::clone(inner);
        let batches = batches.to_vec();
        tokio::task::spawn_blocking(move || {
            let pending =
                writer::write_partitioned(&inner.tables_dir, table, &batches, &inner.props)?;
            let mut files = Vec::with_capacity(pending.len());
            for f in &pending {
                if let Err(e) = f.commit() {
                    for f in &pending {
                        let _ = std::fs::remove_file(&f.tmp);
                        let _ = std::fs::remove_file(&f.file.path);
                    }
                    return Err(e);
                }
                files.push(f.file.clone());
            }
            Ok(files)
        })
        .await
        .map_err(|e| Error::Task {
            task: "flush",
            message: e.to_string(),
        })??
    };
    let mut log = inner.delta[&table].lock().await;
    let log = log.as_mut().ok_or(Error::ReadOnly)?;
    if let Some(remote) = &inner.remote {
        if let Err(e) = upload(remote, log, table, &files).await {
            delete_local(&files);
            return Err(e);
        }
    }
    let committed = log.append(&files, &inner.writer_id, sequence).await;
    if inner.remote.is_some() {
        // Uploaded: the staged copies have served (the commit read their footers).
        delete_local(&files);
    }
    if let Err(e) = committed {
        // A commit can fail after its version was written (the checkpoint that follows
        // it, say): the table's own record of the flush decides.
        let landed = match log.refresh().await {
            Ok(()) => log.committed_sequence(&inner.writer_id).await.ok(),
            Err(_) => None,
        };
        match landed {
            Some(committed) if committed >= Some(sequence) => {
                tracing::warn!(table = table.name(), error = %e, "the flush was committed; what failed after it is retried with the next commit");
            }
            Some(_) => {
                // Never referenced: delete now (vacuum would, once they are old enough).
                match &inner.remote {
                    Some(remote) => {
                        for f in &files {
                            remote.delete(table, &log.relative(f)).await;
                        }
                    }
                    None => delete_local(&files),
                }
                return Err(e);
            }
            // The table could not be read back: whether the commit landed is unknown,
            // so the files stay (vacuum deletes them if no version took them).
            None => return Err(e),
        }
    }
    // Committed: the rows leave the buffer whatever follows (they must not be written
    // twice). The snapshot holds the files it was just given, so listing them does not
    // fail short of a bug; the next commit would list them again.
    let freed = batches
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum::<usize>();
    {
        let listed = log.files();
        let mut state = lock_state(inner, table);
        match listed {
            Ok(listed) => state.files = listed,
            Err(e) => {
                tracing::error!(table = table.name(), error = %e, "committed files not listed for queries");
                state.files.extend(files);
            }
        }
        state.flushing.clear();
    }
    inner.buffered_bytes.fetch_sub(freed, Ordering::AcqRel);
    inner.memory.release(freed);
    Ok(())
}

/// Uploads a flush's or a merge's staged files to the table's object store.
pub(super) async fn upload(
    remote: &super::Remote,
    log: &super::delta::DeltaLog,
    table: Table,
    files: &[super::StoredFile],
) -> Result<()> {
    for f in files {
        remote.upload(table, &log.relative(f), &f.path).await?;
    }
    Ok(())
}

pub(super) fn delete_local(files: &[super::StoredFile]) {
    for f in files {
        let _ = std::fs::remove_file(&f.path);
    }
}
