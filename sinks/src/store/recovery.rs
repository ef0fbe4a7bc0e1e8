//! Recovery, when the store opens: replay what the checkpoint does not cover.
//!
//! In order: settle what a version of swarmscope from before the Delta logs left half
//! done (a flush's files still under `.tmp`, a merge's inputs beside its output), open
//! each table's Delta log (converting a directory of plain Parquet in place), quarantine
//! the table's files that cannot be read, delete the log segments the checkpoint covers,
//! and read the rest back into the tables' buffers, except the records of a table whose
//! Delta log already holds the flush of their segment (a crash came between that commit
//! and the log's truncation). A torn or corrupt record is reported and skipped; the
//! records before it are kept.

use std::collections::BTreeMap;
use std::path::Path;

use swarmscope_processors::schema::Table;

use super::delta::{DeltaLog, Retention};
use super::remote::Remote;
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
    /// Rows of the segments read that their table had already committed, so were not
    /// replayed (a crash came between the commit and the log's truncation).
    pub committed_rows: usize,
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
    pub logs: BTreeMap<Table, DeltaLog>,
    pub writer_id: String,
}

/// The file in the log directory that keeps the id this store's flushes commit under.
const WRITER_ID: &str = "writer-id";

/// The id this store's flushes commit under, made on first start. It lives beside the
/// segments whose numbers are its versions: a log directory made anew starts a new id.
fn writer_id(wal_dir: &std::path::Path) -> Result<String> {
    let path = wal_dir.join(WRITER_ID);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path)(e)),
    }
    let id = format!("swarmscope-{}", uuid::Uuid::new_v4());
    let tmp = wal_dir.join(format!("{WRITER_ID}.tmp"));
    std::fs::write(&tmp, &id).map_err(Error::io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(&tmp))?;
    writer::rename_into_place(&tmp, &path)?;
    Ok(id)
}

pub(super) async fn recover(
    config: &StorageConfig,
    remote: Option<&Remote>,
    tables_dir: &Path,
) -> Result<Recovered> {
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
    let writer_id = writer_id(&wal_dir)?;
    let mut tables = BTreeMap::new();
    let mut logs = BTreeMap::new();
    let mut committed = BTreeMap::new();
    let mut quarantined = 0;
    if remote.is_some() {
        // Staged files a crash left were uploaded (and so are the table's or
        // vacuum's), or never will be.
        match std::fs::remove_dir_all(tables_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(tables_dir)(e))
            }
            _ => {}
        }
    }
    let retention = Retention {
        log: config.delta_log_retention,
        deleted_files: config.vacuum_after,
    };
    for &table in Table::ALL {
        if remote.is_none() {
            // Files a crash left half-written were never committed.
            layout::scan_table(tables_dir, table, true)?;
        }
        let mut log = DeltaLog::open(tables_dir, remote, table, Some(retention))
            .await?
            .ok_or_else(|| Error::Delta(format!("{}: the table was not created", table.name())))?;
        let mut files = log.files().to_vec();
        // Found now, not by a user's query later. An object is whole or absent (a PUT
        // is atomic), so only local files are checked.
        let unreadable = match remote {
            Some(_) => Vec::new(),
            None => quarantine::take_unreadable(&mut files),
        };
        if !unreadable.is_empty() {
            let gone: Vec<_> = unreadable.iter().map(|(f, _)| f.clone()).collect();
            log.remove_unreadable(&gone).await?;
            for (file, reason) in &unreadable {
                quarantine::quarantine(tables_dir, &file.path, reason)?;
            }
            quarantined += unreadable.len();
        }
        if let Some(sequence) = log.committed_sequence(&writer_id).await? {
            committed.insert(table, sequence);
        }
        tables.insert(
            table,
            TableState {
                files: log.files().to_vec(),
                ..TableState::default()
            },
        );
        logs.insert(table, log);
    }

    // Replay what the checkpoint does not cover.
    wal::delete_covered(&wal_dir, checkpoint.covered_segment)?;
    let mut recovery = Recovery::default();
    let mut buffered_bytes = 0;
    // Segment numbers go on from the last one any table committed.
    let mut last_segment = committed
        .values()
        .copied()
        .fold(checkpoint.covered_segment, u64::max);
    for (segment, path) in wal::list_segments(&wal_dir)? {
        let (records, damage) = wal::read_segment(&path)?;
        if damage != Damage::default() {
            tracing::warn!(segment = %path.display(), corrupt_records = damage.corrupt_records, torn_tail = damage.torn_tail, "damaged write-ahead log segment; its good records are kept");
        }
        recovery.segments += 1;
        recovery.corrupt_records += damage.corrupt_records;
        recovery.torn_tails += usize::from(damage.torn_tail);
        for (table, batch) in records {
            if committed.get(&table).is_some_and(|c| segment <= *c) {
                recovery.committed_rows += batch.num_rows();
                continue;
            }
            recovery.batches += 1;
            recovery.rows += batch.num_rows();
            buffered_bytes += batch.get_array_memory_size();
            let Some(state) = tables.get_mut(&table) else {
                continue;
            };
            state.buffered_rows += batch.num_rows();
            state.buffered.push(batch);
        }
        last_segment = last_segment.max(segment);
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
        logs,
        writer_id,
    })
}
