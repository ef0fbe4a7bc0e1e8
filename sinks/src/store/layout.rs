//! The on-disk layout: `<data_dir>/<table>/date=YYYY-MM-DD/hour=HH/<file>.parquet`.
//!
//! Hive-style partitions in UTC, so DuckDB, Spark or pyarrow read the directory as is.
//! Files are written under a `.tmp` name and renamed, so a reader never sees a partial
//! file; a `.tmp` left by a crash is removed when the store opens.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use swarmscope_processors::schema::Table;

use crate::{Error, Result};

pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One Parquet file of the history.
#[derive(Clone, Debug)]
pub struct StoredFile {
    /// The file on local disk; for tables on object storage, its local staging name
    /// (`<data_dir>/<table>/<partition>/<file>`), the object being the same path under
    /// `storage.url`.
    pub path: PathBuf,
    /// The partition's hour, counted in hours since the Unix epoch.
    pub hour: i64,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, in milliseconds since the Unix epoch (its `add` action's
    /// `modificationTime`): compaction leaves a partition written to recently to its
    /// size tiers and merges a quiet one whole.
    pub modified_ms: i64,
}

/// The same file: where it is (its size follows).
impl PartialEq for StoredFile {
    fn eq(&self, other: &StoredFile) -> bool {
        self.path == other.path && self.hour == other.hour
    }
}

impl Eq for StoredFile {}

/// How the name of a file a quiet partition's merge wrote ends (see
/// [`StoredFile::is_laid_out`]).
pub(crate) const LAID_OUT_SUFFIX: &str = "-optimized.parquet";

impl StoredFile {
    /// Whether a quiet partition's merge wrote this file, in full row groups, rather
    /// than a flush or a merge while its partition was written (row groups as small as
    /// a flush under load writes). The name says so, wherever the table lives, and
    /// stays true for the file's life: a file is never changed once written.
    pub fn is_laid_out(&self) -> bool {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(LAID_OUT_SUFFIX))
    }

    /// The nanosecond range `[start, end)` of the partition this file belongs to.
    pub fn time_range(&self) -> (i64, i64) {
        let start = self.hour.saturating_mul(NANOS_PER_HOUR);
        (start, start.saturating_add(NANOS_PER_HOUR))
    }
}

/// A file's modification time in milliseconds since the epoch; now if the file system
/// has none.
pub(crate) fn modified_ms(metadata: &std::fs::Metadata) -> i64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_ms, |d| d.as_millis() as i64)
}

/// The wall clock in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub(crate) fn partition_dir(table_dir: &Path, hour: i64) -> PathBuf {
    let t = DateTime::<Utc>::from_timestamp(hour.saturating_mul(3600), 0).unwrap_or_default();
    table_dir
        .join(format!("date={}", t.format("%Y-%m-%d")))
        .join(format!("hour={}", t.format("%H")))
}

/// The values of the `date` and `hour` partition columns of an hour since the epoch.
pub(crate) fn partition_values(hour: i64) -> (String, u32) {
    let t = DateTime::<Utc>::from_timestamp(hour.saturating_mul(3600), 0).unwrap_or_default();
    (t.format("%Y-%m-%d").to_string(), t.hour())
}

/// The partition hour of a path relative to the table's root
/// (`date=YYYY-MM-DD/hour=HH/<file>`).
pub(crate) fn hour_of_relative_path(path: &str) -> Option<i64> {
    let mut parts = path.split('/');
    let (date, hour) = (parts.next()?, parts.next()?);
    parse_partition(date, hour)
}

/// Parses `date=YYYY-MM-DD` and `hour=HH` back into hours since the epoch.
fn parse_partition(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(date_dir.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: i64 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    if !(0..24).contains(&hour) {
        return None;
    }
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    Some(midnight / 3600 + hour)
}

fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A stray file where a partition directory would be holds no partition.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(out)
        }
        Err(e) => return Err(Error::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every Parquet file of `table` under `data_dir`, oldest partition first. With
/// `remove_temp`, unfinished `.tmp` files (left by a crash) are deleted.
pub(crate) fn scan_table(
    data_dir: &Path,
    table: Table,
    remove_temp: bool,
) -> Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    for (date_name, date_path) in read_dir(&data_dir.join(table.name()))? {
        for (hour_name, hour_path) in read_dir(&date_path)? {
            let Some(hour) = parse_partition(&date_name, &hour_name) else {
                continue;
            };
            for (name, path) in read_dir(&hour_path)? {
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    let metadata = std::fs::metadata(&path).map_err(Error::io(&path))?;
                    files.push(StoredFile {
                        path,
                        hour,
                        size: metadata.len(),
                        modified_ms: modified_ms(&metadata),
                    });
                } else if remove_temp && name.ends_with(".tmp") {
                    tracing::warn!(path = %path.display(), "removing unfinished file");
                    std::fs::remove_file(&path).map_err(Error::io(&path))?;
                }
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let hour = 1_700_000_000 / 3600;
        let dir = partition_dir(Path::new("/d/spans"), hour);
        assert_eq!(dir, Path::new("/d/spans/date=2023-11-14/hour=22"));
        assert_eq!(parse_partition("date=2023-11-14", "hour=22"), Some(hour));
        assert_eq!(parse_partition("date=2023-11-14", "hour=24"), None);
        assert_eq!(parse_partition("other", "hour=1"), None);
    }
}
