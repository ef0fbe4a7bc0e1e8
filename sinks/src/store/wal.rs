//! The write-ahead log: what makes an acknowledgement durable.
//!
//! Layout: `<data_dir>/_wal/wal-<segment>.log` plus `checkpoint.json`. A record is a
//! [`frame`](crate::frame): one accepted batch and the rows processors derived from it,
//! checksummed, all or nothing. A segment is only appended to; a flush seals it and
//! opens the next. With `wal_fsync = "always"` a segment is written around the page
//! cache ([`Direct`]) and may end in the zero padding of its last block.
//!
//! The checkpoint is a two-phase commit between the log and the Parquet history. A
//! flush writes its Parquet files under `.tmp` names, then atomically replaces the
//! checkpoint with "segments up to N are covered by these files", then renames the
//! files into place and deletes the covered segments. Recovery finishes whatever the
//! checkpoint names (renames its `.tmp` files), drops covered segments and replays
//! the rest. A crash at any point therefore neither loses a record nor stores one
//! twice.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use swarmscope_processors::schema::Table;

use crate::frame::{self, Damage, Record};
use crate::{Error, Result};

const CHECKPOINT: &str = "checkpoint.json";

/// The good records of a segment, in order, and what was wrong with the rest.
pub(crate) fn read_segment(path: &Path) -> Result<(Vec<(Table, RecordBatch)>, Damage)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(Error::io(path))?;
    Ok(frame::records(&bytes))
}

fn segment_name(segment: u64) -> String {
    format!("wal-{segment:020}.log")
}

/// Every segment in `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// "Segments up to `covered_segment` are in Parquet, as the files `pending_files`."
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Checkpoint {
    pub covered_segment: u64,
    /// Final paths of the files the last flush wrote; any still under `.tmp` at
    /// recovery are renamed into place.
    pub pending_files: Vec<PathBuf>,
}

impl Checkpoint {
    pub(crate) fn load(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(CHECKPOINT);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Wal(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// Replaces the checkpoint atomically (write, sync, rename, sync the directory).
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT);
        let tmp = dir.join(format!("{CHECKPOINT}.tmp"));
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Wal(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(Error::io(&tmp))?;
        file.write_all(&bytes).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        sync_dir(dir)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// How often a run of failing writes (a full disk) is logged: once per interval with
/// a count, not once per request.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many buffers one `writev` hands to the kernel: Linux's `IOV_MAX`.
const SLICES_PER_WRITE: usize = 1024;

/// The block a segment written around the page cache is written in: its writes start
/// and end on this boundary, the last block padded with zeros
/// ([`frame::DIRECT_BLOCK`], which readers pass over).
const BLOCK: usize = frame::DIRECT_BLOCK;

/// A block of memory aligned as `O_DIRECT` wants it.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// The state of a segment written around the page cache (`O_DIRECT`).
///
/// With `wal_fsync = "always"` every group is synced before it is answered, so the
/// page cache only costs: the kernel copied every byte of every request into it,
/// allocated and accounted its pages, wrote them back on the sync, and dropped them
/// when the flush deleted the segment, none of which a reader ever used. Written
/// around it, a group is copied once into `blocks` and handed to the device as it is.
struct Direct {
    blocks: Vec<Block>,
    /// The committed bytes of the segment's last, partial block: each write starts at
    /// that block and writes them again, with the same bytes, before the new records.
    tail: Vec<u8>,
    /// What `tail` becomes once the group written last is committed.
    next_tail: Option<Vec<u8>>,
}

/// Groups larger than this leave their buffer behind; it shrinks back after them.
const DIRECT_BUFFER_KEPT: usize = 8 << 20;

impl Direct {
    fn new() -> Direct {
        Direct {
            blocks: Vec::new(),
            tail: Vec::new(),
            next_tail: None,
        }
    }

    /// Writes `records` after `committed_len` bytes of `file`, in whole blocks.
    fn write(
        &mut self,
        file: &File,
        committed_len: u64,
        records: &[Record],
    ) -> std::io::Result<()> {
        let len: usize = self.tail.len() + records.iter().map(Record::len).sum::<usize>();
        let blocks = len.div_ceil(BLOCK);
        // Grown, never shrunk but past DIRECT_BUFFER_KEPT: a group smaller than the
        // last uses the first blocks, and the next larger one does not zero them again.
        if self.blocks.len() < blocks {
            self.blocks.resize(blocks, Block([0; BLOCK]));
        }
        // SAFETY: `Block` is a plain array of bytes with no padding, so the first
        // `blocks` elements are `blocks * BLOCK` initialised bytes, borrowed mutably
        // here only.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), blocks * BLOCK)
        };
        let mut at = 0;
        for part in std::iter::once(&self.tail[..]).chain(
            records
                .iter()
                .flat_map(|r| r.parts().iter().map(|p| &p[..])),
        ) {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        bytes[at..].fill(0);
        let start = committed_len - self.tail.len() as u64;
        file.write_all_at(bytes, start)?;
        self.next_tail = Some(bytes[len - len % BLOCK..len].to_vec());
        if self.blocks.len() * BLOCK > DIRECT_BUFFER_KEPT {
            self.blocks.truncate(DIRECT_BUFFER_KEPT / BLOCK);
            self.blocks.shrink_to_fit();
        }
        Ok(())
    }
}

/// Opens the segment at `path` for appending: around the page cache when `direct` and
/// the file system allows it (tmpfs, for one, does not), through it otherwise.
fn open_segment(
    path: &Path,
    create: bool,
    direct: bool,
) -> std::io::Result<(File, Option<Direct>)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .create(create)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => return Ok((file, Some(Direct::new()))),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), "no O_DIRECT here; the write-ahead log goes through the page cache");
            }
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    let file = OpenOptions::new().create(create).append(true).open(path)?;
    Ok((file, None))
}

/// The segment being appended to.
pub(crate) struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
    /// Whether segments are to be written around the page cache (`wal_fsync =
    /// "always"`), and this one's state when it is.
    wants_direct: bool,
    direct: Option<Direct>,
    /// Records appended since the last sync, not yet handed to the OS. Through the
    /// page cache they are written where they are (the request's encoded record, shared
    /// with the sinks' queues) with one `writev` per group: a buffer in between would
    /// copy every byte of the log once more before the kernel copies it into the page
    /// cache. Around it ([`Direct`]) they are copied once, into aligned blocks.
    unwritten: Vec<Record>,
    /// Records appended since the last sync.
    unsynced: bool,
    /// The segment's length up to its last complete, answered record: what a failed
    /// write is cut back to.
    committed_len: u64,
    /// Bytes handed to `file` since `committed_len` was last moved on.
    pending_len: u64,
    /// A write or sync failed: the segment may end in a torn record, after which a
    /// reader cannot find the next one, so it is cut back before the next append.
    torn: bool,
    failures: FailureLog,
}

/// Counts failing writes and logs them at most once per [`FAILURE_LOG_INTERVAL`].
#[derive(Default)]
struct FailureLog {
    /// Failures since the last success.
    failing: u64,
    /// Failures not yet logged, and when the last line was written.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl FailureLog {
    fn failed(&mut self, error: &Error) {
        self.failing += 1;
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL)
        {
            tracing::warn!(
                error = %error,
                failures = self.unlogged,
                "write-ahead log writes are failing; requests are refused until they succeed"
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }

    fn succeeded(&mut self) {
        if self.failing > 0 {
            tracing::info!(
                failures = self.failing,
                "write-ahead log writes succeed again"
            );
            *self = FailureLog::default();
        }
    }
}

impl Wal {
    /// Opens a new segment `segment` in `dir`, written around the page cache if
    /// `direct` (see [`Direct`]; where the file system allows it).
    pub(crate) fn create(dir: &Path, segment: u64, direct: bool) -> Result<Wal> {
        let path = dir.join(segment_name(segment));
        let (file, direct_state) = open_segment(&path, true, direct).map_err(Error::io(&path))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_owned(),
            segment,
            file,
            wants_direct: direct,
            direct: direct_state,
            unwritten: Vec::new(),
            unsynced: false,
            committed_len: 0,
            pending_len: 0,
            torn: false,
            failures: FailureLog::default(),
        })
    }

    #[cfg(test)]
    pub(crate) fn segment(&self) -> u64 {
        self.segment
    }

    /// Whether this segment is written around the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(segment_name(self.segment))
    }

    /// Appends a record; the next [`Wal::sync`] writes it. After a failed write or sync
    /// the segment is first cut back to its last answered record ([`Wal::repair`]); if
    /// that fails, the append fails.
    pub(crate) fn write(&mut self, record: Record) -> Result<()> {
        if self.torn {
            self.repair().inspect_err(|e| self.failures.failed(e))?;
        }
        self.unsynced = true;
        self.pending_len += record.len() as u64;
        self.unwritten.push(record);
        Ok(())
    }

    /// Hands the unwritten records' parts to the OS, in order, a group at a time.
    fn write_unwritten(&mut self) -> std::io::Result<()> {
        if let Some(direct) = &mut self.direct {
            if !self.unwritten.is_empty() {
                direct.write(&self.file, self.committed_len, &self.unwritten)?;
            }
            self.unwritten.clear();
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = self
            .unwritten
            .iter()
            .flat_map(|r| r.parts().iter().map(|part| IoSlice::new(part)))
            .collect();
        for group in slices.chunks_mut(SLICES_PER_WRITE) {
            let mut rest = group;
            while !rest.is_empty() {
                match self.file.write_vectored(rest) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => IoSlice::advance_slices(&mut rest, n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        drop(slices);
        self.unwritten.clear();
        Ok(())
    }

    /// Hands the appended records to the OS, and with `durable` waits until they are on
    /// disk.
    /// On success every record written so far is committed: a later failure never
    /// cuts it away.
    pub(crate) fn sync(&mut self, durable: bool) -> Result<()> {
        match self.sync_inner(durable) {
            Ok(()) => {
                if !self.torn {
                    self.committed_len += std::mem::take(&mut self.pending_len);
                    // Only a write moves the tail: a sync with nothing new keeps it.
                    if let Some(direct) = &mut self.direct {
                        if let Some(tail) = direct.next_tail.take() {
                            direct.tail = tail;
                        }
                    }
                    self.failures.succeeded();
                }
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                self.failures.failed(&e);
                Err(e)
            }
        }
    }

    fn sync_inner(&mut self, durable: bool) -> Result<()> {
        if let Err(e) = self.write_unwritten() {
            // What was not written fails with this group; what was is cut away.
            self.unwritten.clear();
            return Err(Error::io(self.path())(e));
        }
        if durable && self.unsynced {
            self.file.sync_data().map_err(Error::io(self.path()))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// After a failed write or sync: drops the unwritten bytes and cuts the segment
    /// back to its last committed record, so appending goes on in the same segment
    /// (a full disk that refuses writes for a minute leaves one segment, not one per
    /// request). The records cut away were never acknowledged. If the cut fails, the
    /// segment is left as it is (recovery reads it up to the tear) and appending goes
    /// on in a new one.
    fn repair(&mut self) -> Result<()> {
        let path = self.path();
        let cut = open_segment(&path, false, self.direct.is_some())
            .and_then(|(file, direct)| {
                file.set_len(self.committed_len)?;
                file.sync_data()?;
                Ok((file, direct))
            })
            .map_err(Error::io(&path));
        match cut {
            Ok((file, direct)) => {
                self.file = file;
                // The committed tail stays what the next write starts with.
                if let (Some(old), Some(mut new)) = (self.direct.take(), direct) {
                    new.tail = old.tail;
                    self.direct = Some(new);
                }
                self.unwritten.clear();
                self.pending_len = 0;
                self.unsynced = false;
                self.torn = false;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot cut the write-ahead log segment back; starting a new one");
                self.abandon()
            }
        }
    }

    /// Leaves a segment whose write or sync failed and could not be cut back: what it
    /// holds up to the tear is replayed on recovery; appending goes on in a new segment.
    fn abandon(&mut self) -> Result<()> {
        let next = Wal::create(&self.dir, self.segment + 1, self.wants_direct)?;
        let failures = std::mem::take(&mut self.failures);
        // The records not written before the tear are not written after it.
        drop(std::mem::replace(self, next));
        self.failures = failures;
        Ok(())
    }

    /// Seals this segment and opens the next; returns the sealed segment's number.
    pub(crate) fn rotate(&mut self, durable: bool) -> Result<u64> {
        if self.torn {
            // What a failed write left goes before the segment is sealed.
            self.repair()?;
        }
        self.sync(durable)?;
        let sealed = self.segment;
        let failures = std::mem::take(&mut self.failures);
        *self = Wal::create(&self.dir, sealed + 1, self.wants_direct)?;
        self.failures = failures;
        Ok(sealed)
    }
}

/// Deletes the segments up to and including `covered`.
pub(crate) fn delete_covered(dir: &Path, covered: u64) -> Result<()> {
    for (n, path) in list_segments(dir)? {
        if n <= covered {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, first};

    fn segment_with(dir: &Path, records: &[Vec<u8>]) -> PathBuf {
        let mut wal = Wal::create(dir, 1, false).unwrap();
        for r in records {
            wal.write(record(r)).unwrap();
        }
        wal.sync(true).unwrap();
        wal.path()
    }

    fn record(bytes: &[u8]) -> Record {
        Record::from_bytes(bytes.to_vec())
    }

    fn values(records: &[(Table, RecordBatch)]) -> Vec<i64> {
        records.iter().map(|(_, b)| first(b)).collect()
    }

    #[test]
    fn records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| frame::encode(&[(Table::LOGS, &batch(i * 10))]).unwrap())
            .collect();
        let path = segment_with(dir.path(), &records);
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), vec![0, 10, 20]);
        assert!(read.iter().all(|(t, _)| *t == Table::LOGS));
        assert_eq!(damage, Damage::default());
    }

    #[test]
    fn a_group_larger_than_one_write_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = SLICES_PER_WRITE * 2 + 7;
        let records: Vec<_> = (0..n as i64)
            .map(|i| frame::encode(&[(Table::LOGS, &batch(i))]).unwrap())
            .collect();
        let path = segment_with(dir.path(), &records);
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), (0..n as i64).collect::<Vec<_>>());
        assert_eq!(damage, Damage::default());
        let total: usize = records.iter().map(Vec::len).sum();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), total as u64);
    }

    #[test]
    fn torn_tail_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| frame::encode(&[(Table::SPANS, &batch(i))]).unwrap())
            .collect();
        let path = segment_with(dir.path(), &records);
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half, as a crash during its write would.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - records[2].len() as u64 / 2).unwrap();
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), vec![0, 1]);
        assert!(damage.torn_tail);
        assert_eq!(damage.corrupt_records, 0);
    }

    #[test]
    fn after_a_failed_write_the_segment_is_cut_back_and_appending_goes_on_in_it() {
        for direct in [false, true] {
            after_a_failed_write(direct);
        }
    }

    fn after_a_failed_write(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| frame::encode(&[(Table::SPANS, &batch(i))]).unwrap())
            .collect();
        let mut wal = Wal::create(dir.path(), 1, direct).unwrap();
        wal.write(record(&records[0])).unwrap();
        wal.sync(true).unwrap();
        // A write that failed halfway (disk full, say): half a record, then the error.
        OpenOptions::new()
            .write(true)
            .open(wal.path())
            .unwrap()
            .write_all_at(&records[1][..records[1].len() / 2], records[0].len() as u64)
            .unwrap();
        wal.torn = true;
        // The next record is not written behind the tear, where a reader cannot find
        // it: the tear is cut away first, in the same segment (around the page cache,
        // the next write starts with the committed record's partial block).
        wal.write(record(&records[2])).unwrap();
        wal.sync(true).unwrap();
        assert_eq!(wal.segment(), 1);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 1);
        let (read, damage) = read_segment(&segments[0].1).unwrap();
        assert_eq!(values(&read), vec![0, 2]);
        assert_eq!(damage, Damage::default());
    }

    #[test]
    fn writes_that_keep_failing_stay_in_one_segment_and_lose_no_committed_record() {
        for direct in [false, true] {
            writes_that_keep_failing(direct);
        }
    }

    fn writes_that_keep_failing(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| frame::encode(&[(Table::LOGS, &batch(i))]).unwrap())
            .collect();
        let mut wal = Wal::create(dir.path(), 1, direct).unwrap();
        wal.write(record(&records[0])).unwrap();
        wal.sync(true).unwrap();
        let path = wal.path();
        for _ in 0..50 {
            // What `write` does first after a failure.
            if wal.torn {
                wal.repair().unwrap();
            }
            // The disk is full: the handle refuses what reaches it.
            let refusing = File::open(&path).unwrap();
            wal.file = refusing;
            wal.write(record(&records[1])).unwrap();
            assert!(wal.sync(true).is_err());
            assert!(wal.torn);
        }
        assert_eq!(wal.failures.failing, 50);
        wal.write(record(&records[2])).unwrap();
        wal.sync(true).unwrap();
        assert_eq!(wal.failures.failing, 0);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 1, "one segment however many writes failed");
        let (read, damage) = read_segment(&segments[0].1).unwrap();
        assert_eq!(values(&read), vec![0, 2]);
        assert_eq!(damage, Damage::default());
    }

    /// Groups of records of many sizes, written around the page cache, each synced:
    /// every record reads back in order, and the padding of the last block is the end,
    /// not damage.
    #[test]
    fn direct_writes_read_back_in_order_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, true).unwrap();
        let mut written = Vec::new();
        let mut total = 0;
        for group in 0..40i64 {
            // 1 to 5 records a group, some ending inside a block, one spanning blocks.
            for r in 0..(group % 5 + 1) {
                let value = group * 10 + r;
                let rows = 1 + (value * 37 % 300) as usize;
                let column = arrow::array::Int64Array::from(vec![value; rows]);
                let batch =
                    RecordBatch::try_new(batch(0).schema(), vec![std::sync::Arc::new(column)])
                        .unwrap();
                let bytes = frame::encode(&[(Table::LOGS, &batch)]).unwrap();
                total += bytes.len();
                wal.write(record(&bytes)).unwrap();
                written.push(value);
            }
            wal.sync(true).unwrap();
            // A sync with nothing new (a rotation's, say) leaves the next write's
            // start where it was.
            wal.sync(true).unwrap();
        }
        let path = wal.path();
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), written);
        assert_eq!(damage, Damage::default());
        let len = std::fs::metadata(&path).unwrap().len();
        if wal.is_direct() {
            assert_eq!(len, total.next_multiple_of(BLOCK) as u64);
        } else {
            eprintln!(
                "no O_DIRECT in {}: written through the page cache",
                dir.path().display()
            );
            assert_eq!(len, total as u64);
        }
    }

    /// Zeros after the last record: fewer than a block are padding; a block or more of
    /// them is not what a log writes, and counts as a torn tail.
    #[test]
    fn zeros_after_the_last_record_end_a_segment_only_within_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![frame::encode(&[(Table::LOGS, &batch(5))]).unwrap()];
        let path = segment_with(dir.path(), &records);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0; BLOCK - 1]).unwrap();
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!((values(&read), damage), (vec![5], Damage::default()));
        file.write_all(&[0; 1]).unwrap();
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), vec![5]);
        assert!(damage.torn_tail);
    }

    #[test]
    fn flipped_byte_in_the_middle_skips_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| frame::encode(&[(Table::METRICS, &batch(i))]).unwrap())
            .collect();
        let path = segment_with(dir.path(), &records);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = records[0].len() + records[1].len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (read, damage) = read_segment(&path).unwrap();
        assert_eq!(values(&read), vec![0, 2]);
        assert_eq!(damage.corrupt_records, 1);
        assert!(!damage.torn_tail);
    }

    #[test]
    fn empty_segment_has_no_records_and_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_with(dir.path(), &[]);
        assert_eq!(read_segment(&path).unwrap().0.len(), 0);
        assert_eq!(read_segment(&path).unwrap().1, Damage::default());
    }

    #[test]
    fn checkpoint_round_trips_and_defaults_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Checkpoint::default());
        let c = Checkpoint {
            covered_segment: 7,
            pending_files: vec![PathBuf::from("/x/a.parquet")],
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), c);
    }

    #[test]
    fn rotation_and_deletion_of_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 3, true).unwrap();
        assert_eq!(wal.rotate(true).unwrap(), 3);
        assert_eq!(wal.rotate(true).unwrap(), 4);
        assert_eq!(wal.segment(), 5);
        delete_covered(dir.path(), 4).unwrap();
        let left: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, vec![5]);
    }
}
