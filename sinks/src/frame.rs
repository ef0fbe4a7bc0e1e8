//! The record framing the write-ahead log and the sinks' disk queues share:
//! `[len: u32 LE][crc32: u32 LE][payload]`, where `len` counts the payload's bytes and
//! the crc covers them. A reader finds every intact record of a file, skips a record
//! whose checksum is wrong, and stops at a tail cut short by a crash.
//!
//! A payload is one or more entries, so that a batch and the rows derived from it are
//! committed in one record, all or nothing. An entry is either a table's batch,
//! `[table: u8][ipc_len: u32 LE][Arrow IPC stream of one batch]`, or, in the
//! write-ahead log only, a trace export request as it was received,
//! `[0x80][len: u32 LE][first_hour: i64 LE][OTLP protobuf]`: the spans converted from
//! it ([`spans_from_protobuf`]) less those in partitions before `first_hour`, which
//! retention refused at receipt. The request is about half the bytes of its spans in
//! Arrow and needs no encoding; a reader converts it again.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use swarmscope_processors::convert::spans_from_protobuf;
use swarmscope_processors::schema::Table;

use crate::{Error, Result};

/// What an IPC stream of one batch adds to its buffers, about: the schema and batch
/// messages, and the padding of each buffer to 8 bytes.
const IPC_OVERHEAD: usize = 4096;

/// A record longer than this is corruption, not data (requests are far smaller).
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// The block the write-ahead log writes in when it writes around the page cache: such
/// a segment may end in fewer than this many zero bytes after its last record, the
/// padding of its last block, which a reader passes over as the end. (No record starts
/// with a zero length.)
pub(crate) const DIRECT_BLOCK: usize = 4096;

/// The code of an entry holding a trace export request (no table's code has the high
/// bit).
const OTLP_TRACES: u8 = 0x80;

/// What reading a file of records found besides its good records.
#[derive(Debug, Default, PartialEq)]
pub struct Damage {
    /// Records whose checksum (or content) was wrong; skipped.
    pub corrupt_records: usize,
    /// The file ended inside a record (a write cut short by a crash).
    pub torn_tail: bool,
}

/// A framed record, shared: a record of table batches is appended by the write-ahead log
/// and by the disk queue of every sink that takes one of its tables, so its rows are
/// encoded once. A trace request logged as received ([`Record::with_request`]) goes to
/// the log only. A record's bytes are in parts, so that such a request is not copied
/// into it.
#[derive(Clone, Debug)]
pub struct Record(Arc<[Bytes]>);

impl Record {
    pub fn encode(entries: &[(Table, &RecordBatch)]) -> Result<Record> {
        encode(entries).map(|bytes| Record(Arc::new([Bytes::from(bytes)])))
    }

    /// The write-ahead log's record of a trace export `request` (protobuf) whose spans
    /// were kept from partition hour `first_hour` on, and of the rows `derived` from
    /// them: read back, it holds those spans and rows (see the module).
    pub fn with_request(
        request: Bytes,
        first_hour: i64,
        derived: &[(Table, &RecordBatch)],
    ) -> Result<Record> {
        let mut head = Vec::with_capacity(8 + 1 + 4 + 8);
        head.extend_from_slice(&[0; 8]);
        head.push(OTLP_TRACES);
        let entry_len = u32::try_from(8 + request.len())
            .map_err(|_| Error::Wal(format!("request of {} bytes is too large", request.len())))?;
        head.extend_from_slice(&entry_len.to_le_bytes());
        head.extend_from_slice(&first_hour.to_le_bytes());
        let mut tail = Vec::new();
        encode_entries(&mut tail, derived)?;
        let len = head.len() - 8 + request.len() + tail.len();
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l as usize <= MAX_RECORD)
            .ok_or_else(|| Error::Wal(format!("record of {len} bytes is too large")))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[8..]);
        crc.update(&request);
        crc.update(&tail);
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        let mut parts = vec![Bytes::from(head), request];
        if !tail.is_empty() {
            parts.push(Bytes::from(tail));
        }
        Ok(Record(parts.into()))
    }

    /// Bytes taken as a framed record as they are, whatever they hold.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Record {
        Record(Arc::new([Bytes::from(bytes)]))
    }

    /// The frame, header and payload, in the order its parts are written.
    pub fn parts(&self) -> &[Bytes] {
        &self.0
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One framed record of `entries`, ready to append.
pub(crate) fn encode(entries: &[(Table, &RecordBatch)]) -> Result<Vec<u8>> {
    let mut out = vec![0; 8];
    encode_entries(&mut out, entries)?;
    let len = u32::try_from(out.len() - 8)
        .map_err(|_| Error::Wal(format!("record of {} bytes is too large", out.len())))?;
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Appends the table entries of `entries` to `out`.
fn encode_entries(out: &mut Vec<u8>, entries: &[(Table, &RecordBatch)]) -> Result<()> {
    // About the batches' buffers plus the IPC framing, allocated once: growing the
    // vector by doubling would copy a request's record several times over.
    let expected = entries
        .iter()
        .map(|(_, batch)| batch.get_array_memory_size() + IPC_OVERHEAD)
        .sum::<usize>();
    out.reserve(expected);
    for (table, batch) in entries {
        out.push(table.code());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        {
            let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let ipc_len = u32::try_from(out.len() - at - 4)
            .map_err(|_| Error::Wal(format!("batch of {} bytes is too large", out.len())))?;
        out[at..at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    Ok(())
}

/// The batches of one payload, or `None` when it does not decode.
pub(crate) fn decode(payload: &[u8]) -> Option<Vec<(Table, RecordBatch)>> {
    decode_where(payload, &|_| true)
}

/// The batches of one payload whose table `keep` wants; the others are skipped
/// undecoded. `None` when the payload does not decode.
pub(crate) fn decode_where(
    payload: &[u8],
    keep: &dyn Fn(Table) -> bool,
) -> Option<Vec<(Table, RecordBatch)>> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some((&code, after)) = rest.split_first() {
        if code == OTLP_TRACES {
            let len = u32::from_le_bytes(after.get(..4)?.try_into().ok()?) as usize;
            let entry = after.get(4..4 + len)?;
            if keep(Table::SPANS) {
                out.push((Table::SPANS, request_spans(entry)?));
            }
            rest = &after[4 + len..];
            continue;
        }
        let table = Table::from_code(code)?;
        // Written before derived tables existed: one table code, then the IPC stream,
        // which starts with the continuation marker no length reaches.
        if after.get(..4) == Some(&[0xff; 4]) {
            if keep(table) {
                out.extend(read_ipc(after)?.into_iter().map(|b| (table, b)));
            }
            return Some(out);
        }
        let len = u32::from_le_bytes(after.get(..4)?.try_into().ok()?) as usize;
        let ipc = after.get(4..4 + len)?;
        if keep(table) {
            out.extend(read_ipc(ipc)?.into_iter().map(|b| (table, b)));
        }
        rest = &after[4 + len..];
    }
    Some(out)
}

/// The spans a trace request entry holds (see the module), or `None` when it does not
/// convert as it did when it was logged.
fn request_spans(entry: &[u8]) -> Option<RecordBatch> {
    let first_hour = i64::from_le_bytes(entry.get(..8)?.try_into().ok()?);
    let converted = spans_from_protobuf(&entry[8..])?.ok()?;
    let (spans, _) =
        crate::store::from_partition_hour(Table::SPANS, converted.batch, first_hour).ok()?;
    (spans.num_rows() > 0).then_some(spans)
}

fn read_ipc(ipc: &[u8]) -> Option<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(ipc, None).ok()?;
    reader.collect::<std::result::Result<Vec<_>, _>>().ok()
}

/// Splits `bytes` into the payloads of its intact records, in order. Zeros after the
/// last record, fewer than [`DIRECT_BLOCK`], are the padding of a log's last block: the
/// end, not damage.
pub(crate) fn payloads(bytes: &[u8]) -> (Vec<&[u8]>, Damage) {
    let mut out = Vec::new();
    let mut damage = Damage::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < DIRECT_BLOCK && rest.iter().all(|b| *b == 0) {
            break;
        }
        if bytes.len() - at < 8 {
            damage.torn_tail = true;
            break;
        }
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + 8 + len;
        if len == 0 || len > MAX_RECORD || end > bytes.len() {
            // Either the tail was cut short or the length itself is damaged; in both
            // cases nothing after this point can be framed.
            damage.torn_tail = true;
            break;
        }
        let payload = &bytes[at + 8..end];
        if crc32fast::hash(payload) == crc {
            out.push(payload);
        } else {
            damage.corrupt_records += 1;
        }
        at = end;
    }
    (out, damage)
}

/// The batches of every intact record of `bytes`; a record whose payload does not
/// decode counts as corrupt.
pub(crate) fn records(bytes: &[u8]) -> (Vec<(Table, RecordBatch)>, Damage) {
    let (payloads, mut damage) = payloads(bytes);
    let mut out = Vec::new();
    for payload in payloads {
        match decode(payload) {
            Some(batches) => out.extend(batches),
            None => damage.corrupt_records += 1,
        }
    }
    (out, damage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, trace_request};

    const HOUR: u64 = 3_600_000_000_000;

    /// A record's bytes as the log writes them.
    fn bytes_of(record: &Record) -> Vec<u8> {
        record.parts().concat()
    }

    #[test]
    fn a_logged_request_reads_back_as_the_spans_kept_from_its_first_hour() {
        let request = trace_request(&[5 * HOUR + 1, 6 * HOUR + 2, 7 * HOUR + 3]);
        let converted = spans_from_protobuf(&request).unwrap().unwrap().batch;
        // Retention kept hours 6 and later at receipt: the replay keeps the same.
        let (kept, expired) =
            crate::store::from_partition_hour(Table::SPANS, converted.clone(), 6).unwrap();
        assert_eq!((kept.num_rows(), expired), (2, 1));
        let derived = batch(3);
        let record = Record::with_request(request.clone(), 6, &[(Table::LOGS, &derived)]).unwrap();
        // The request is not copied into the record.
        assert!(record
            .parts()
            .iter()
            .any(|p| p.as_ptr() == request.as_ptr() && p.len() == request.len()));
        let (read, damage) = records(&bytes_of(&record));
        assert_eq!(damage, Damage::default());
        assert_eq!(read, vec![(Table::SPANS, kept), (Table::LOGS, derived)]);
        // Kept whole from an earlier hour; a reader of other tables skips it.
        let whole = Record::with_request(request, 0, &[]).unwrap();
        let bytes = bytes_of(&whole);
        assert_eq!(records(&bytes).0, vec![(Table::SPANS, converted)]);
        assert_eq!(
            decode_where(&bytes[8..], &|t| t == Table::LOGS),
            Some(vec![])
        );
    }

    #[test]
    fn a_logged_request_that_does_not_convert_or_keeps_no_span_is_corrupt() {
        let request = trace_request(&[5 * HOUR]);
        // Every span before the first hour: nothing of it was acknowledged.
        let none_kept = Record::with_request(request.clone(), 6, &[]).unwrap();
        let (read, damage) = records(&bytes_of(&none_kept));
        assert!(read.is_empty());
        assert_eq!(damage.corrupt_records, 1);
        // Not protobuf, with a good checksum: counted, and the next record still reads.
        let garbage = Record::with_request(Bytes::from_static(&[0xff; 40]), 0, &[]).unwrap();
        let good = Record::encode(&[(Table::LOGS, &batch(9))]).unwrap();
        let mut bytes = bytes_of(&garbage);
        bytes.extend(bytes_of(&good));
        let (read, damage) = records(&bytes);
        assert_eq!(damage.corrupt_records, 1);
        assert_eq!(read, vec![(Table::LOGS, batch(9))]);
        // A request entry cut short inside its record.
        let whole = bytes_of(&Record::with_request(request, 0, &[]).unwrap());
        assert_eq!(decode(&whole[8..whole.len() - 1]), None);
    }

    #[test]
    fn several_batches_of_several_tables_in_one_record() {
        let (a, b) = (batch(1), batch(2));
        let record = encode(&[(Table::SPANS, &a), (Table::LOGS, &b)]).unwrap();
        let (read, damage) = records(&record);
        assert_eq!(damage, Damage::default());
        assert_eq!(read, vec![(Table::SPANS, a), (Table::LOGS, b)]);
    }

    #[test]
    fn a_record_of_the_single_batch_layout_still_reads() {
        let b = batch(7);
        let mut payload = vec![Table::METRICS.code()];
        {
            let mut writer = StreamWriter::try_new(&mut payload, &b.schema()).unwrap();
            writer.write(&b).unwrap();
            writer.finish().unwrap();
        }
        assert_eq!(decode(&payload), Some(vec![(Table::METRICS, b)]));
    }

    #[test]
    fn an_unknown_table_or_a_short_batch_is_corrupt() {
        let record = encode(&[(Table::SPANS, &batch(1))]).unwrap();
        let mut payload = record[8..].to_vec();
        assert!(decode(&payload).is_some());
        payload[0] = 250;
        assert_eq!(decode(&payload), None);
        assert_eq!(decode(&record[8..record.len() - 3]), None);
    }
}
