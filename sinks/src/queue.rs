//! [`DiskQueue`]: a sink's bounded backlog on disk, which survives a restart.
//!
//! Records (the [`frame`](crate::frame) the write-ahead log uses: length, checksum, one
//! or more table batches) are appended to segment files under the queue's folder
//! (`DATA_DIR/_queues/<sink>/q-<n>.log`); the sink reads them in order and acknowledges
//! what it delivered, which moves a cursor (`cursor.json`, replaced atomically) and
//! deletes the segments behind it. A record is delivered at least once: after a crash
//! the sink starts again from the last acknowledged position.
//!
//! The backlog is capped (`max_bytes`): a record that does not fit is dropped and
//! counted, never blocking the pipeline that offers it. Appends are not synced: the
//! store's write-ahead log is what acknowledgements rest on; a queue survives a crash of
//! the process (the OS has its bytes), and a power loss may cost a sink its last records.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use swarmscope_processors::schema::Table;
use tokio::sync::Notify;

use crate::{frame, Error, Result};

/// A segment is closed for appends past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
const CURSOR: &str = "cursor.json";

/// Where the reader stands: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One record read from the queue, and the position just after it.
pub struct Entry {
    pub batches: Vec<(Table, RecordBatch)>,
    pub end: Position,
}

/// A disk-backed, bounded FIFO of records. Shared by the pipeline (push) and one sink
/// (read, ack) behind an `Arc`.
pub struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Woken when a record is pushed.
    pushed: Notify,
}

struct State {
    write: File,
    write_segment: u64,
    write_len: u64,
    /// The next record to read.
    read: Position,
    /// Bytes between `read` and the end of the last segment.
    backlog: u64,
    dropped: u64,
}

impl DiskQueue {
    /// Opens the queue in `dir` (creating it), with the backlog a previous run left.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<DiskQueue> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let segments = list_segments(&dir)?;
        let cursor = load_cursor(&dir)?;
        let first = segments.first().map_or(1, |(n, _)| *n);
        let read = if cursor.segment < first {
            Position {
                segment: first,
                offset: 0,
            }
        } else {
            cursor
        };
        let mut backlog = 0;
        for (n, path) in &segments {
            let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
            if *n > read.segment {
                backlog += len;
            } else if *n == read.segment {
                backlog += len.saturating_sub(read.offset);
            }
        }
        // Appends go to a new segment: the last one may end in a torn record.
        let write_segment = segments.last().map_or(first, |(n, _)| n + 1);
        let write = open_append(&dir, write_segment)?;
        Ok(DiskQueue {
            dir,
            max_bytes,
            state: Mutex::new(State {
                write,
                write_segment,
                write_len: 0,
                read,
                backlog,
                dropped: 0,
            }),
            pushed: Notify::new(),
        })
    }

    /// Appends a record of `batches`. Returns `false` when the backlog is at its cap and
    /// the record was dropped (counted in [`DiskQueue::dropped`]).
    pub fn push(&self, batches: &[(Table, &RecordBatch)]) -> Result<bool> {
        self.push_record(&frame::Record::encode(batches)?)
    }

    /// Appends a record already framed (shared by the queues of several sinks).
    pub fn push_record(&self, record: &frame::Record) -> Result<bool> {
        let mut state = self.lock();
        if state.backlog + record.len() as u64 > self.max_bytes {
            state.dropped += 1;
            return Ok(false);
        }
        if state.write_len >= SEGMENT_BYTES {
            let next = state.write_segment + 1;
            state.write = open_append(&self.dir, next)?;
            state.write_segment = next;
            state.write_len = 0;
        }
        let path = segment_path(&self.dir, state.write_segment);
        for part in record.parts() {
            state.write.write_all(part).map_err(Error::io(&path))?;
        }
        state.write_len += record.len() as u64;
        state.backlog += record.len() as u64;
        drop(state);
        self.pushed.notify_one();
        Ok(true)
    }

    /// Up to `max` records from the read position on, without consuming them. Damaged
    /// records are skipped; an empty answer means the queue is drained.
    ///
    /// The files are read and decoded without the lock `push` takes: the one reader
    /// runs at a low priority, and ingestion must never wait for it.
    pub fn peek(&self, max: usize) -> Result<Vec<Entry>> {
        self.peek_where(max, &|_| true)
    }

    /// [`DiskQueue::peek`], with only the batches of the tables `keep` wants decoded (a
    /// record may hold tables its sink does not take).
    pub fn peek_where(&self, max: usize, keep: &dyn Fn(Table) -> bool) -> Result<Vec<Entry>> {
        let (mut at, write_segment) = {
            let state = self.lock();
            (state.read, state.write_segment)
        };
        let mut out = Vec::new();
        while out.len() < max {
            let path = segment_path(&self.dir, at.segment);
            let bytes = match read_from(&path, at.offset, max - out.len()) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if at.segment >= write_segment {
                        break;
                    }
                    at = Position {
                        segment: at.segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                Err(e) => return Err(Error::io(path)(e)),
            };
            // A record being appended to the write segment reads as a torn tail, and
            // stays unread until it is whole.
            let wanted = max - out.len();
            let (payloads, damage) = frame::payloads(&bytes);
            let frames = payloads.len() + damage.corrupt_records;
            for payload in payloads {
                // Offsets move over the frame, so that skipped damage is passed once.
                let offset = at.offset + frame_end(&bytes, payload);
                if let Some(batches) = frame::decode_where(payload, keep) {
                    out.push(Entry {
                        batches,
                        end: Position {
                            segment: at.segment,
                            offset,
                        },
                    });
                }
            }
            if frames == wanted && !damage.torn_tail {
                // Stopped at the count, not at the end: the segment may have more.
                at.offset += bytes.len() as u64;
                continue;
            }
            if at.segment >= write_segment {
                break;
            }
            // A finished segment (or its torn tail): on to the next one.
            at = Position {
                segment: at.segment + 1,
                offset: 0,
            };
            if out.is_empty() {
                // Nothing readable was left behind: the cursor may pass it.
                self.advance(at)?;
            }
        }
        Ok(out)
    }

    /// Acknowledges every record up to `end`: they are not read again, even after a
    /// restart, and the segments wholly behind it are deleted.
    pub fn ack(&self, end: Position) -> Result<()> {
        self.advance(end)
    }

    /// Moves the read position to `to`, persists it, and deletes the segments behind
    /// it; the lock is held only to move the position.
    fn advance(&self, to: Position) -> Result<()> {
        let from = self.lock().read;
        if to <= from {
            return Ok(());
        }
        let mut consumed = 0;
        for segment in from.segment..=to.segment {
            let path = segment_path(&self.dir, segment);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let start = if segment == from.segment {
                from.offset
            } else {
                0
            };
            let until = if segment == to.segment {
                to.offset
            } else {
                len
            };
            consumed += until.saturating_sub(start).min(len.saturating_sub(start));
        }
        {
            let mut state = self.lock();
            state.read = to;
            state.backlog = state.backlog.saturating_sub(consumed);
        }
        store_cursor(&self.dir, to)?;
        for (n, path) in list_segments(&self.dir)? {
            if n < to.segment {
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
            }
        }
        Ok(())
    }

    /// Waits until a record is pushed (or returns at once if one was pushed since the
    /// last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }

    /// Bytes waiting to be delivered.
    pub fn backlog_bytes(&self) -> u64 {
        self.lock().backlog
    }

    /// Records dropped because the backlog was at its cap, since the queue opened.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the frame holding `payload` (a slice of `bytes`) ends, counted from the
/// start of `bytes`.
fn frame_end(bytes: &[u8], payload: &[u8]) -> u64 {
    let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
    (start + payload.len()) as u64
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("q-{segment:020}.log"))
}

fn open_append(dir: &Path, segment: u64) -> Result<File> {
    let path = segment_path(dir, segment);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(Error::io(&path))
}

/// The bytes of up to `max` frames from `offset` on, as [`frame::payloads`] reads them:
/// a sink reads what it sends next, not the rest of the segment. A frame cut short (the
/// end of the file, or an append under way) is left out.
fn read_from(path: &Path, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut file = std::io::BufReader::new(file);
    let mut bytes = Vec::new();
    for _ in 0..max {
        let mut header = [0u8; 8];
        if file.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = bytes.len();
        bytes.extend_from_slice(&header);
        if len == 0 || len > frame::MAX_RECORD {
            // A damaged length: `payloads` reports it, and nothing after it is read.
            break;
        }
        bytes.resize(start + 8 + len, 0);
        if file.read_exact(&mut bytes[start + 8..]).is_err() {
            bytes.truncate(start);
            break;
        }
    }
    Ok(bytes)
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("q-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn load_cursor(dir: &Path) -> Result<Position> {
    let path = dir.join(CURSOR);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Wal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Position::default()),
        Err(e) => Err(Error::io(&path)(e)),
    }
}

fn store_cursor(dir: &Path, at: Position) -> Result<()> {
    let path = dir.join(CURSOR);
    let tmp = dir.join(format!("{CURSOR}.tmp"));
    let bytes = serde_json::to_vec(&at).map_err(|e| Error::Wal(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, first};

    fn values(entries: &[Entry]) -> Vec<i64> {
        entries
            .iter()
            .flat_map(|e| &e.batches)
            .map(|(_, b)| first(b))
            .collect()
    }

    fn push(q: &DiskQueue, n: i64) -> bool {
        q.push(&[(Table::SPANS, &batch(n))]).unwrap()
    }

    #[test]
    fn records_come_out_in_order_and_acknowledged_ones_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        for n in 0..5 {
            assert!(push(&q, n));
        }
        let first = q.peek(2).unwrap();
        assert_eq!(values(&first), vec![0, 1]);
        // Peeking again without an ack gives the same records.
        assert_eq!(values(&q.peek(2).unwrap()), vec![0, 1]);
        q.ack(first[1].end).unwrap();
        assert_eq!(values(&q.peek(10).unwrap()), vec![2, 3, 4]);
    }

    #[test]
    fn the_backlog_survives_a_restart_from_the_last_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
            for n in 0..4 {
                push(&q, n);
            }
            let read = q.peek(1).unwrap();
            q.ack(read[0].end).unwrap();
        }
        let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        assert!(q.backlog_bytes() > 0);
        push(&q, 9);
        let all = q.peek(10).unwrap();
        assert_eq!(values(&all), vec![1, 2, 3, 9]);
        q.ack(all[3].end).unwrap();
        assert_eq!(q.backlog_bytes(), 0);
        assert!(q.peek(10).unwrap().is_empty());
        // Segments wholly read are gone; only the one being written stays.
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn past_its_cap_a_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let one = frame::encode(&[(Table::SPANS, &batch(0))]).unwrap().len() as u64;
        let q = DiskQueue::open(dir.path(), one * 3).unwrap();
        let taken: Vec<bool> = (0..5).map(|n| push(&q, n)).collect();
        assert_eq!(taken, vec![true, true, true, false, false]);
        assert_eq!(q.dropped(), 2);
        let read = q.peek(10).unwrap();
        assert_eq!(values(&read), vec![0, 1, 2]);
        q.ack(read[2].end).unwrap();
        assert!(push(&q, 7), "room again once delivered");
    }

    #[test]
    fn a_torn_tail_left_by_a_crash_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
            push(&q, 0);
            push(&q, 1);
        }
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        push(&q, 2);
        let read = q.peek(10).unwrap();
        assert_eq!(values(&read), vec![0, 2]);
    }

    #[test]
    fn a_corrupt_record_is_skipped_without_losing_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
            for n in 0..6 {
                push(&q, n);
            }
        }
        // Damage record 1's payload (its checksum no longer matches).
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let one = frame::encode(&[(Table::SPANS, &batch(0))]).unwrap().len() as u64;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[one as usize + 20] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        // Two at a time: the read of records 0 and 1 yields one, and the next picks up
        // where it stopped, in the same segment.
        let mut seen = Vec::new();
        loop {
            let read = q.peek(2).unwrap();
            let Some(last) = read.last() else { break };
            seen.extend(values(&read));
            q.ack(last.end).unwrap();
        }
        assert_eq!(seen, vec![0, 2, 3, 4, 5]);
    }
}
