//! Retention and vacuum. Partitions whose hour ended more than
//! `storage.retention_hours` ago leave the history by a commit, and records already
//! that old are not taken in the first place (so nothing acknowledged is deleted by the
//! next pass). Vacuum deletes the files no version of the last `storage.vacuum_after`
//! references: those retention and compaction removed, and those a crash left
//! uncommitted.

use std::time::{Duration, Instant, SystemTime};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use swarmscope_processors::schema::Table;

use super::writer::row_hours;
use super::ParquetStore;
use crate::Result;

impl ParquetStore {
    /// The first partition hour (hours since the epoch) retention keeps at `now`.
    pub fn retention_cutoff_hour(&self, now: SystemTime) -> i64 {
        let now_hour = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() / 3600) as i64);
        now_hour - self.inner.config.retention_hours as i64
    }

    /// `batch` without the rows retention would delete at `now`, and how many those
    /// were. A batch with none comes back as it is.
    pub fn without_expired(
        &self,
        table: Table,
        batch: RecordBatch,
        now: SystemTime,
    ) -> Result<(RecordBatch, usize)> {
        from_partition_hour(table, batch, self.retention_cutoff_hour(now))
    }

    /// Removes the files of partitions whose hour ended more than `retention_hours`
    /// before `now` from their tables, one commit per table; vacuum deletes them later.
    /// Returns how many files were removed.
    pub async fn enforce_retention(&self, now: SystemTime) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let cutoff = self.retention_cutoff_hour(now);
        let mut removed = 0;
        for table in Table::ALL {
            let mut log = self.inner.delta[table].lock().await;
            let Some(log) = log.as_mut() else {
                continue;
            };
            let expired: Vec<_> = {
                let state = self.state(*table);
                state
                    .files
                    .iter()
                    .filter(|f| f.hour < cutoff)
                    .cloned()
                    .collect()
            };
            if expired.is_empty() {
                continue;
            }
            log.expire(&expired, cutoff).await?;
            let files = log.files().to_vec();
            self.state(*table).files = files;
            removed += expired.len();
        }
        if removed > 0 {
            tracing::info!(
                removed,
                retention_hours = self.inner.config.retention_hours,
                "retention removed expired partitions"
            );
        }
        self.inner.metrics.retention_runs.inc();
        self.inner.metrics.retention_deleted.inc_by(removed as u64);
        Ok(removed)
    }

    /// Whether vacuum is due: it lists every table's directory, so it runs every
    /// `vacuum_after` (at most every ten minutes, at least every flush interval).
    pub(super) fn vacuum_due(&self) -> bool {
        let config = &self.inner.config;
        let every = config
            .vacuum_after
            .min(Duration::from_secs(600))
            .max(config.flush_interval());
        let mut last = super::lock(&self.inner.vacuumed);
        match *last {
            Some(at) if at.elapsed() < every => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Deletes, in every table, the files no version of the last
    /// `storage.vacuum_after` references. Returns how many files were deleted.
    pub async fn vacuum(&self) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        // No flush's files in flight while vacuum lists the tables: a flush's files are
        // in no version until its commit, and vacuum deletes what no version references
        // once `vacuum_after` has passed (at once with 0 s), which took the files of
        // the flush the flusher had just begun, then of each retry after it. Held in
        // `begin_flush`'s order: the writers' lock, then the commits'.
        let _writing = self.inner.flush_lock.lock().await;
        let _committed = self.inner.commits.lock().await;
        let mut deleted = 0;
        for table in Table::ALL {
            let mut log = self.inner.delta[table].lock().await;
            if let Some(log) = log.as_mut() {
                deleted += log.vacuum(self.inner.config.vacuum_after).await?;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "vacuum deleted files no version references");
        }
        self.inner.metrics.vacuumed.inc_by(deleted as u64);
        Ok(deleted)
    }
}

/// `batch` without the rows of partitions before hour `first_hour`, and how many those
/// were. A batch with none comes back as it is.
pub(crate) fn from_partition_hour(
    table: Table,
    batch: RecordBatch,
    first_hour: i64,
) -> Result<(RecordBatch, usize)> {
    let hours = row_hours(table, &batch)?;
    let expired = hours.iter().filter(|h| **h < first_hour).count();
    if expired == 0 {
        return Ok((batch, 0));
    }
    let keep: BooleanArray = hours.iter().map(|h| Some(*h >= first_hour)).collect();
    Ok((filter_record_batch(&batch, &keep)?, expired))
}
