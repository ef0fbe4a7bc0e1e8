//! Flush and checkpoint: buffered rows become Parquet files, committed with the
//! checkpoint that retires the log segments they cover.
//!
//! The log writer hands over every buffer together with the segment it sealed
//! ([`Taken`]); the files are written under `.tmp` names, the checkpoint ("segments up
//! to N are these files") replaces the last one atomically, then the files are renamed
//! into place and swapped for the batches under the lock queries snapshot under. On
//! error the rows go back in front of their buffers: they are still in the log.

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
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || commit_flush(&inner, taken))
            .await
            .map_err(|e| Error::Task {
                task: "flush",
                message: e.to_string(),
            })?;
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
        let mut ticker = tokio::time::interval(self.inner.config.flush_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (stop_compactor, mut stopped) = tokio::sync::watch::channel(false);
        let compactor = tokio::spawn({
            let store = self.clone();
            let mut ticker = tokio::time::interval(self.inner.config.flush_interval());
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
            if let Err(e) = self.enforce_retention(std::time::SystemTime::now()) {
                tracing::error!(error = %e, "retention failed");
            }
        }
        // A merge under way is finished, so that the directory holds no merged file
        // beside its inputs once the process exits (recovery would resolve it, but
        // other readers of the directory meanwhile would count both).
        let _ = stop_compactor.send(true);
        let _ = compactor.await;
        let _ = self.flush().await;
        let _ = self.delete_retired();
    }
}

/// Writes the taken buffers as Parquet and commits them with the checkpoint. On error
/// the rows go back in front of their tables' buffers (they are still in the log).
fn commit_flush(inner: &Inner, taken: Taken) -> Result<()> {
    let mut pending = Vec::new();
    let mut failure = None;
    for (table, batches) in &taken.tables {
        if batches.is_empty() {
            continue;
        }
        match writer::write_partitioned(&inner.config.data_dir, *table, batches, &inner.props) {
            Ok(files) => pending.push((*table, files)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let committed = match failure {
        Some(e) => Err(e),
        None => {
            let checkpoint = wal::Checkpoint {
                covered_segment: taken.sealed_segment,
                pending_files: pending
                    .iter()
                    .flat_map(|(_, files)| files.iter().map(|f| f.file.path.clone()))
                    .collect(),
            };
            checkpoint.store(&inner.wal_dir).and_then(|()| {
                // From here the flush is decided; renames that fail are redone by
                // recovery from the checkpoint.
                for (_, files) in &pending {
                    for f in files {
                        f.commit()?;
                    }
                }
                Ok(())
            })
        }
    };
    match committed {
        Ok(()) => {
            let mut freed = 0;
            for (table, batches) in &taken.tables {
                let files = pending
                    .iter()
                    .find(|(t, _)| t == table)
                    .map(|(_, files)| files.iter().map(|f| f.file.clone()).collect::<Vec<_>>())
                    .unwrap_or_default();
                freed += batches
                    .iter()
                    .map(|b| b.get_array_memory_size())
                    .sum::<usize>();
                let mut state = lock_state(inner, *table);
                state.files.extend(files);
                state.flushing.clear();
            }
            inner.buffered_bytes.fetch_sub(freed, Ordering::AcqRel);
            inner.memory.release(freed);
            wal::delete_covered(&inner.wal_dir, taken.sealed_segment)?;
            tracing::debug!(segment = taken.sealed_segment, "flushed and checkpointed");
            Ok(())
        }
        Err(e) => {
            for (_, files) in &pending {
                for f in files {
                    let _ = std::fs::remove_file(&f.tmp);
                }
            }
            for (table, mut batches) in taken.tables {
                let mut state = lock_state(inner, table);
                state.flushing.clear();
                state.buffered_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                batches.append(&mut state.buffered);
                state.buffered = batches;
            }
            Err(e)
        }
    }
}
