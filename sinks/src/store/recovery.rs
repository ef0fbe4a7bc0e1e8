//! Recovery, when the store opens: replay what the checkpoint does not cover.
//!
//! In order: finish the last flush the checkpoint names (rename its `.tmp` files into
//! place), resolve an interrupted merge ([`compact::recover`]), list each table's files
//! and quarantine those that cannot be read, delete the log segments the checkpoint
//! covers, and read the rest back into the tables' buffers. A torn or corrupt record is
//! reported and skipped; the records before it are kept.

use std::collections::BTreeMap;

use swarmscope_processors::schema::Table;

use super::{compact, layout, quarantine, wal, writer, StorageConfig, TableState};
use crate::frame::Damage;
use crate::{Error, Result};

/// What recovery found in the write-ahead log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub segments: usize,
    pub batches: usize,
    pub rows: usize,
    pub corrupt_records: usize,
    pub torn_tails: usize,
}

/// The state a store opens with.
pub(super) struct Recovered {
    pub tables: BTreeMap<Table, TableState>,
    pub recovery: Recovery,
    /// Memory the replayed rows take.
    pub buffered_bytes: usize,
    /// The last log segment on disk (or covered by the checkpoint).
    pub last_segment: u64,
    pub quarantined: usize,
}

pub(super) fn recover(config: &StorageConfig) -> Result<Recovered> {
    std::fs::create_dir_all(&config.data_dir).map_err(Error::io(&config.data_dir))?;
    let wal_dir = config.data_dir.join("_wal");
    std::fs::create_dir_all(&wal_dir).map_err(Error::io(&wal_dir))?;

    // Phase two of an interrupted flush: its files are named by the checkpoint.
    let checkpoint = wal::Checkpoint::load(&wal_dir)?;
    for path in &checkpoint.pending_files {
        let tmp = writer::tmp_path(path);
        if tmp.exists() && !path.exists() {
            writer::rename_into_place(&tmp, path)?;
        }
    }
    compact::recover(&config.data_dir)?;
    let mut tables = BTreeMap::new();
    let mut quarantined = 0;
    for &table in Table::ALL {
        let mut files = layout::scan_table(&config.data_dir, table, true)?;
        // Found now, not by a user's query later.
        let unreadable = quarantine::take_unreadable(&mut files);
        for (file, reason) in &unreadable {
            quarantine::quarantine(&config.data_dir, &file.path, reason)?;
        }
        quarantined += unreadable.len();
        tables.insert(
            table,
            TableState {
                files,
                ..TableState::default()
            },
        );
    }

    // Replay what the checkpoint does not cover.
    wal::delete_covered(&wal_dir, checkpoint.covered_segment)?;
    let mut recovery = Recovery::default();
    let mut buffered_bytes = 0;
    let mut last_segment = checkpoint.covered_segment;
    for (segment, path) in wal::list_segments(&wal_dir)? {
        let (records, damage) = wal::read_segment(&path)?;
        if damage != Damage::default() {
            tracing::warn!(segment = %path.display(), corrupt_records = damage.corrupt_records, torn_tail = damage.torn_tail, "damaged write-ahead log segment; its good records are kept");
        }
        recovery.segments += 1;
        recovery.corrupt_records += damage.corrupt_records;
        recovery.torn_tails += usize::from(damage.torn_tail);
        for (table, batch) in records {
            recovery.batches += 1;
            recovery.rows += batch.num_rows();
            buffered_bytes += batch.get_array_memory_size();
            let Some(state) = tables.get_mut(&table) else {
                continue;
            };
            state.buffered_rows += batch.num_rows();
            state.buffered.push(batch);
        }
        last_segment = segment;
    }
    if recovery.segments > 0 {
        tracing::info!(
            segments = recovery.segments,
            rows = recovery.rows,
            "replayed the write-ahead log"
        );
    }
    Ok(Recovered {
        tables,
        recovery,
        buffered_bytes,
        last_segment,
        quarantined,
    })
}
