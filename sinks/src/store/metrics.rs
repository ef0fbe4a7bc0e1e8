//! The store's own metrics. The store creates them when it opens; the collector
//! registers them ([`StoreMetrics::collectors`]) with the registry `/metrics` serves.

use prometheus::core::Collector;
use prometheus::{exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

#[derive(Clone)]
pub struct StoreMetrics {
    /// How long a write-ahead log sync took.
    pub wal_fsync: Histogram,
    /// Records committed by one sync (group commit).
    pub group_commit: Histogram,
    /// How long a flush took, buffer to committed files.
    pub flush_duration: Histogram,
    /// Flushes, by result (`ok`, `error`).
    pub flushes: IntCounterVec,
    /// Merges compaction made.
    pub compactions: IntCounter,
    /// Retention passes, and the files they deleted.
    pub retention_runs: IntCounter,
    pub retention_deleted: IntCounter,
    pub vacuumed: IntCounter,
}

impl StoreMetrics {
    pub(crate) fn new() -> StoreMetrics {
        // Each metric is built from constant options; none can fail.
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .unwrap_or_else(|e| unreachable!("{name}: {e}"))
        };
        let seconds = exponential_buckets(0.000_05, 2.0, 18).unwrap_or_default();
        StoreMetrics {
            wal_fsync: histogram(
                "swarmscope_wal_fsync_duration_seconds",
                "How long a write-ahead log sync took.",
                seconds.clone(),
            ),
            group_commit: histogram(
                "swarmscope_wal_group_commit_records",
                "Records (accepted requests) made durable by one write-ahead log sync.",
                exponential_buckets(1.0, 2.0, 12).unwrap_or_default(),
            ),
            flush_duration: histogram(
                "swarmscope_store_flush_duration_seconds",
                "How long a flush of buffered rows to Parquet took.",
                seconds,
            ),
            flushes: IntCounterVec::new(
                Opts::new("swarmscope_store_flushes_total", "Flushes, by result."),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            compactions: IntCounter::new(
                "swarmscope_store_compactions_total",
                "Merges of small Parquet files compaction made.",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            retention_runs: IntCounter::new(
                "swarmscope_store_retention_runs_total",
                "Retention passes over the history.",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            retention_deleted: IntCounter::new(
                "swarmscope_store_retention_deleted_files_total",
                "Parquet files retention removed from their tables (vacuum deletes them).",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            vacuumed: IntCounter::new(
                "swarmscope_store_vacuumed_files_total",
                "Files vacuum deleted: out of every table version for storage.vacuum_after.",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
        }
    }

    /// Everything to register with a registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.wal_fsync.clone()),
            Box::new(self.group_commit.clone()),
            Box::new(self.flush_duration.clone()),
            Box::new(self.flushes.clone()),
            Box::new(self.compactions.clone()),
            Box::new(self.retention_runs.clone()),
            Box::new(self.retention_deleted.clone()),
            Box::new(self.vacuumed.clone()),
        ]
    }
}
