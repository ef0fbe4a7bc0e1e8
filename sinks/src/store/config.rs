//! `[storage]`: where the history lives and when buffered rows become Parquet.

use std::path::PathBuf;
use std::time::Duration;
use swarmscope_processors::config_error::{positive, ConfigError};

use serde::{Deserialize, Serialize};

/// When the write-ahead log is synced to disk, and so what a success answer promises.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WalFsync {
    /// Before every answer (requests that arrive together share one sync): an
    /// acknowledged record survives a crash of the process and of the machine.
    Always,
    /// Every `wal_fsync_interval_ms`: survives a crash of the process; a power loss
    /// may lose the last interval.
    Interval,
    /// Left to the OS: survives a crash of the process, not of the machine.
    Never,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of the history: a Delta table per table at `<data_dir>/<table>/`, its files
    /// in `date=YYYY-MM-DD/hour=HH/` partitions, and the write-ahead log in `_wal/`.
    pub data_dir: PathBuf,
    /// Buffered rows are written out at least this often.
    pub flush_interval_ms: u64,
    /// A table's buffer is written out as soon as it holds this many rows.
    pub flush_rows: usize,
    /// Partitions whose hour ended longer ago than this are deleted.
    pub retention_hours: u64,
    /// zstd level of the Parquet files (1 fast .. 22 small). 1 by default: on the
    /// standard workload's data higher levels bought no smaller files for their CPU
    /// (`benches/RESULTS.md`, 2026-11-24).
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// When the write-ahead log is synced: `always`, `interval` or `never`.
    pub wal_fsync: WalFsync,
    /// The sync period of `wal_fsync = "interval"`.
    pub wal_fsync_interval_ms: u64,
    /// Memory that accepted, not yet flushed rows may take. Once the rows no flush has
    /// taken reach a third of it a flush starts; past all of it requests are refused
    /// with 503 / UNAVAILABLE until the flushes catch up. 96 MiB by default. Each flush
    /// commits to the Delta log, and delta-rs replays the table's files after every
    /// commit, so fewer, larger flushes cost less CPU per span. Under the standard load
    /// 96 MiB against 48 took 9% less CPU per span and refused next to nothing, for a
    /// peak RSS about 45 MiB higher (`benches/RESULTS.md`, session 19).
    pub max_buffered_bytes: usize,
    /// While a partition is being written, its files smaller than
    /// `compaction_target_bytes` are merged once there are at least this many of like
    /// size.
    pub compaction_min_files: usize,
    /// The size compaction merges small files up to; larger files are left alone.
    pub compaction_target_bytes: u64,
    /// A partition no file was written to for this long (`"1m"`) is quiet: its small
    /// files are merged whatever their number and size.
    #[serde(with = "duration_text")]
    pub compaction_quiet_after: Duration,
    /// Files that left a table (merged, expired) or that no commit took (a crash between
    /// an upload and its commit) are deleted once they are this old (`"1h"`, `"30m"`), so
    /// that a reader still scanning an older version of the table finds them.
    #[serde(with = "duration_text")]
    pub vacuum_after: Duration,
    /// How far back each table's Delta log reaches (`"10m"`): older commits and
    /// checkpoints are deleted once a newer checkpoint stands in for them, so time
    /// travel reaches back this far. Short by default: under load a table commits
    /// several times a second, and every commit lists its log, so a log kept for
    /// Delta's default of 30 days made each commit slower than the last.
    #[serde(with = "duration_text")]
    pub delta_log_retention: Duration,
    /// Where the tables live: `"file:///var/lib/swarmscope"` (the default: `data_dir`)
    /// or `"s3://bucket/prefix"`. The write-ahead log is always under `data_dir`, on
    /// local disk: an acknowledgement means synced there, and the commit follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `[storage.s3]`: how to reach an `s3://` URL. Unset keys come from the usual
    /// `AWS_*` environment variables.
    pub s3: S3Config,
}

/// `[storage.s3]`, for `storage.url = "s3://..."`. Every key falls back on its `AWS_*`
/// variable (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub region: Option<String>,
    /// An S3 API other than AWS's (MinIO, a local test server): `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allows an `http://` endpoint (local test servers); off by default.
    pub allow_http: bool,
}

/// Where the tables of a [`StorageConfig`] live.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and prefix; the Parquet files are staged in `data_dir` before
    /// their upload.
    S3(url::Url),
}

/// Durations as text (`"1h"`, `"90s"`), as Prometheus and the Collector write them.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"1h\" or \"30m\": {e}"
            ))
        })
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./swarmscope-data"),
            flush_interval_ms: 10_000,
            flush_rows: 500_000,
            retention_hours: 168,
            zstd_level: 1,
            row_group_rows: 256 * 1024,
            wal_fsync: WalFsync::Always,
            wal_fsync_interval_ms: 100,
            max_buffered_bytes: 96 * 1024 * 1024,
            compaction_min_files: 8,
            compaction_target_bytes: 256 * 1024 * 1024,
            compaction_quiet_after: Duration::from_secs(60),
            vacuum_after: Duration::from_secs(3600),
            delta_log_retention: Duration::from_secs(600),
            url: None,
            s3: S3Config::default(),
        }
    }
}

impl StorageConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Checks the values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("storage.{k}");
        positive(key("flush_interval_ms"), self.flush_interval_ms)?;
        positive(key("flush_rows"), self.flush_rows as u64)?;
        positive(key("retention_hours"), self.retention_hours)?;
        positive(key("row_group_rows"), self.row_group_rows as u64)?;
        positive(key("wal_fsync_interval_ms"), self.wal_fsync_interval_ms)?;
        positive(key("max_buffered_bytes"), self.max_buffered_bytes as u64)?;
        positive(key("compaction_target_bytes"), self.compaction_target_bytes)?;
        if self.compaction_min_files < 2 {
            return Err(ConfigError::invalid(
                key("compaction_min_files"),
                "at least 2",
                self.compaction_min_files,
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::invalid(
                key("zstd_level"),
                "within 1..=22",
                self.zstd_level,
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::empty(key("data_dir")));
        }
        self.location()?;
        Ok(())
    }

    /// Where the tables live, from `url` (or `data_dir` when it is unset). A `file://`
    /// URL and a `data_dir` that name different places are refused: the tables and
    /// the write-ahead log of a local store live together.
    pub fn location(&self) -> Result<Location, ConfigError> {
        let Some(text) = &self.url else {
            return Ok(Location::Local(self.data_dir.clone()));
        };
        let refuse = |why: &str| ConfigError::invalid("storage.url", why, text);
        let url = url::Url::parse(text).map_err(|_| refuse("a file:// or s3:// URL"))?;
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| refuse("a file:// URL of an absolute local path"))?;
                let default = StorageConfig::default().data_dir;
                if self.data_dir != default && self.data_dir != path {
                    return Err(refuse(&format!(
                        "the place storage.data_dir names ({}), or storage.data_dir left unset",
                        self.data_dir.display()
                    )));
                }
                Ok(Location::Local(path))
            }
            "s3" | "s3a" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(refuse("s3://bucket/prefix, with a bucket"));
                }
                Ok(Location::S3(url))
            }
            _ => Err(refuse("a file:// or s3:// URL")),
        }
    }
}
