//! Flush: buffered rows become Parquet files, committed to their tables' Delta logs.
//!
//! The log writer hands over every buffer together with the segment it sealed
//! ([`Taken`](super::log::Taken)); the files are written under `.tmp` names. Then,
//! once the flush before has committed, each table's files are synced, renamed into
//! place and committed to its Delta log as one `WRITE` with the transaction `(writer
//! id, sealed segment)`, then swapped for the batches under the lock queries snapshot
//! under. Once every table has committed, the checkpoint records the segment as
//! covered and the log segments up to it are deleted. A table whose commit fails gets
//! its rows back in front of its buffer (they are still in the log); its written files
//! are deleted, or left for vacuum when even that fails.
//!
//! Flushes overlap by one: a flush writes its files while the one before it commits
//! (the commits' fsyncs were a third of a flush's time under load), and commits only
//! after it. A table the flush before could not commit is not committed by this one
//! either: its rows go back behind the earlier flush's, so that no commit's segment
//! claims rows a table lacks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use swarmscope_processors::schema::Table;
use tokio::sync::oneshot;

use super::log::Command;
use super::{lock_state, wal, writer, Inner, ParquetStore};
use crate::{Error, Result};

impl ParquetStore {
    /// Writes every buffered row to Parquet and retires the log segments it covered.
    /// Returns once this flush, and every flush before it, has committed.
    pub async fn flush(&self) -> Result<()> {
        match self.begin_flush().await {
            Ok(Some(committing)) => committing.await.map_err(|e| Error::Task {
                task: "flush",
                message: e.to_string(),
            })?,
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "flush failed; rows stay buffered and logged");
                Err(e)
            }
        }
    }

    /// A flush's first half, one flush at a time: seals the log's segment, takes the
    /// buffers and writes their files; then, once the flush before it has committed,
    /// hands the rest (the files synced and renamed into place, the Delta commits, the
    /// log's checkpoint) to a task of its own, returned. The next flush writes while
    /// this one commits, so the commit's waits on the disk do not hold up the writing
    /// of the rows that arrived meanwhile. `None`: nothing was buffered (once the
    /// commit under way, if any, has landed).
    pub(super) async fn begin_flush(&self) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
        let Some(log) = &self.inner.log else {
            return Ok(None);
        };
        let _writing = self.inner.flush_lock.lock().await;
        if Table::ALL
            .iter()
            .all(|t| self.state(*t).buffered.is_empty())
        {
            drop(self.inner.commits.lock().await);
            return Ok(None);
        }
        let (done, answer) = oneshot::channel();
        log.send(Command::Rotate { done })?;
        let taken = answer.await.map_err(|_| Error::Closed)??;
        let started = std::time::Instant::now();
        let sequence = taken.sealed_segment;
        let mut written = Vec::new();
        for (table, batches) in taken.tables {
            if batches.is_empty() {
                continue;
            }
            let files = write_files(&self.inner, table, &batches).await;
            written.push((table, batches, files));
        }
        // The flush before has committed (or failed) every table once this is held.
        let mut commits = Arc::clone(&self.inner.commits).lock_owned().await;
        let mut failure = None;
        let mut to_commit = Vec::with_capacity(written.len());
        for (table, batches, files) in written {
            // A table whose rows the flush before handed back to the buffer after this
            // flush took its own is held back too, and this flush's rows go back behind
            // them: a commit under this flush's segment would claim rows it lacks.
            let files = match commits.handed_back.get(&table) {
                Some(_) => files.and_then(|files| {
                    discard(&files);
                    Err(Error::HeldBack {
                        table: table.name(),
                    })
                }),
                None => files,
            };
            match files {
                Ok(files) => to_commit.push((table, batches, files)),
                Err(e) => {
                    let front = commits.handed_back.get(&table).copied().unwrap_or(0);
                    hand_back(&self.inner, table, sequence, batches, front);
                    failure.get_or_insert(e);
                }
            }
        }
        // Every row handed back is in the buffer again before the next flush takes it.
        commits.handed_back.clear();
        let inner = Arc::clone(&self.inner);
        Ok(Some(tokio::spawn(async move {
            let result = commit_flush(&inner, sequence, to_commit, failure, &mut commits).await;
            let metrics = &inner.metrics;
            metrics
                .flush_duration
                .observe(started.elapsed().as_secs_f64());
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics.flushes.with_label_values(&[outcome]).inc();
            if let Err(e) = &result {
                tracing::error!(error = %e, "flush failed; rows stay buffered and logged");
            }
            result
        })))
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
            let ticked = tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => true,
                _ = self.inner.full.notified() => false,
                _ = self.inner.memory.pressure() => false,
            };
            // Memory pressure counts the rows flushes have taken too; a flush is worth
            // starting early only for the rows none has taken.
            if !ticked && !self.worth_flushing(Table::ALL) {
                continue;
            }
            // Errors are logged by the flush; the rows stay buffered for the next try.
            // The loop goes on as soon as the files are written: the commit finishes
            // in its own task while the next rows are written.
            if let Err(e) = self.begin_flush().await {
                tracing::error!(error = %e, "flush failed; rows stay buffered and logged");
            }
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

/// Writes one table's taken rows to files under their `.tmp` names, not yet synced.
async fn write_files(
    inner: &Arc<Inner>,
    table: Table,
    batches: &[arrow::array::RecordBatch],
) -> Result<Vec<writer::PendingFile>> {
    let inner = Arc::clone(inner);
    let batches = batches.to_vec();
    tokio::task::spawn_blocking(move || {
        writer::write_partitioned(&inner.tables_dir, table, &batches, &inner.props)
    })
    .await
    .map_err(|e| Error::Task {
        task: "flush",
        message: e.to_string(),
    })?
}

/// Deletes files a flush wrote but will not commit.
fn discard(files: &[writer::PendingFile]) {
    for f in files {
        let _ = std::fs::remove_file(&f.tmp);
        let _ = std::fs::remove_file(&f.file.path);
    }
}

/// Puts the rows flush `sequence` took of `table` back into its buffer, `at` batches
/// from its front (behind rows an earlier flush handed back), for the next flush.
/// Answers how many batches went back.
fn hand_back(
    inner: &Inner,
    table: Table,
    sequence: u64,
    batches: Vec<arrow::array::RecordBatch>,
    at: usize,
) -> usize {
    let count = batches.len();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    inner.flushing_bytes.fetch_sub(bytes, Ordering::AcqRel);
    let mut state = lock_state(inner, table);
    state.flushing.retain(|(taken_by, _)| *taken_by != sequence);
    state.buffered_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    let at = at.min(state.buffered.len());
    state.buffered.splice(at..at, batches);
    count
}

/// What the flushes hand from one to the next, in order: the commit lock.
#[derive(Default)]
pub(super) struct Commits {
    /// Tables whose rows the last flush to commit handed back to the buffer, and how
    /// many batches it put at the buffer's front.
    handed_back: std::collections::BTreeMap<Table, usize>,
}

/// A flush's second half: syncs and commits each table's written files to its Delta
/// log. A table whose files cannot be committed gets its rows back in front of its
/// buffer (they are still in the log, which is kept until every table has committed
/// them); the others keep their commits. Once every table has committed, the log's
/// checkpoint records the segment as covered and the segments up to it are deleted.
async fn commit_flush(
    inner: &Arc<Inner>,
    sequence: u64,
    written: Vec<(
        Table,
        Vec<arrow::array::RecordBatch>,
        Vec<writer::PendingFile>,
    )>,
    mut failure: Option<Error>,
    commits: &mut Commits,
) -> Result<()> {
    for (table, batches, files) in written {
        // Each table commits alone: one that cannot be written holds back no other.
        if let Err(e) = commit_table(inner, table, &batches, files, sequence).await {
            let count = hand_back(inner, table, sequence, batches, 0);
            commits.handed_back.insert(table, count);
            failure.get_or_insert(e);
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

/// Syncs one table's written files and renames them into place, commits them as flush
/// `sequence`, and swaps the rows for the files in what queries read, before the next
/// commit to the table can change its files again.
async fn commit_table(
    inner: &Arc<Inner>,
    table: Table,
    batches: &[arrow::array::RecordBatch],
    pending: Vec<writer::PendingFile>,
    sequence: u64,
) -> Result<()> {
    #[cfg(test)]
    {
        let gate = {
            let mut failpoint = super::lock(&inner.fail_next_commit);
            match failpoint.take() {
                Some((failing, gate)) if failing == table => Some(gate),
                other => {
                    *failpoint = other;
                    None
                }
            }
        };
        if let Some(gate) = gate {
            let _ = gate.await;
            discard(&pending);
            return Err(Error::Wal("a commit failed on purpose".into()));
        }
    }
    let files = tokio::task::spawn_blocking(move || {
        let mut files = Vec::with_capacity(pending.len());
        for f in &pending {
            if let Err(e) = f.sync().and_then(|()| f.commit()) {
                discard(&pending);
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
    })??;
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
    // twice).
    let freed = batches
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum::<usize>();
    {
        let listed = log.files().to_vec();
        let mut state = lock_state(inner, table);
        state.files = listed;
        state.flushing.retain(|(taken_by, _)| *taken_by != sequence);
    }
    inner.flushing_bytes.fetch_sub(freed, Ordering::AcqRel);
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
