//! Retention: partitions whose hour ended more than `storage.retention_hours` ago
//! leave the history, and records already that old are not taken in the first place
//! (so nothing acknowledged is deleted by the next pass).

use std::path::PathBuf;
use std::time::SystemTime;

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
        let cutoff = self.retention_cutoff_hour(now);
        let hours = row_hours(table, &batch)?;
        let expired = hours.iter().filter(|h| **h < cutoff).count();
        if expired == 0 {
            return Ok((batch, 0));
        }
        let keep: BooleanArray = hours.iter().map(|h| Some(*h >= cutoff)).collect();
        Ok((filter_record_batch(&batch, &keep)?, expired))
    }

    /// Deletes the files of partitions whose hour ended more than `retention_hours`
    /// before `now`. They leave the snapshot first, so new queries no longer read them.
    /// Returns how many files were deleted.
    pub fn enforce_retention(&self, now: SystemTime) -> Result<usize> {
        if self.inner.read_only {
            return Ok(0);
        }
        let cutoff = self.retention_cutoff_hour(now);
        let mut deleted = 0;
        for table in Table::ALL {
            let expired: Vec<PathBuf> = {
                let mut state = self.state(*table);
                let (expired, kept) = std::mem::take(&mut state.files)
                    .into_iter()
                    .partition(|f| f.hour < cutoff);
                state.files = kept;
                expired.into_iter().map(|f| f.path).collect()
            };
            deleted += expired.len();
            if !expired.is_empty() {
                self.retire(expired, None);
            }
        }
        if deleted > 0 {
            tracing::info!(
                deleted,
                retention_hours = self.inner.config.retention_hours,
                "retention removed expired partitions"
            );
        }
        self.delete_retired()?;
        self.inner.metrics.retention_runs.inc();
        self.inner.metrics.retention_deleted.inc_by(deleted as u64);
        Ok(deleted)
    }
}
