//! The record framing the write-ahead log and the sinks' disk queues share:
//! `[len: u32 LE][crc32: u32 LE][payload]`, where `len` counts the payload's bytes and
//! the crc covers them. A reader finds every intact record of a file, skips a record
//! whose checksum is wrong, and stops at a tail cut short by a crash.
//!
//! A payload is one or more table batches: `([table: u8][ipc_len: u32 LE][Arrow IPC
//! stream of one batch])+`, so that a batch and the rows derived from it are committed
//! in one record, all or nothing.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use swarmscope_processors::schema::Table;

use crate::{Error, Result};

/// What an IPC stream of one batch adds to its buffers, about: the schema and batch
/// messages, and the padding of each buffer to 8 bytes.
const IPC_OVERHEAD: usize = 4096;

/// A record longer than this is corruption, not data (requests are far smaller).
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// What reading a file of records found besides its good records.
#[derive(Debug, Default, PartialEq)]
pub struct Damage {
    /// Records whose checksum (or content) was wrong; skipped.
    pub corrupt_records: usize,
    /// The file ended inside a record (a write cut short by a crash).
    pub torn_tail: bool,
}

/// A framed record, shared: the write-ahead log appends it, and so does the disk queue
/// of every sink that takes one of its tables, so a request is encoded once.
#[derive(Clone, Debug)]
pub struct Record(std::sync::Arc<Vec<u8>>);

impl Record {
    pub fn encode(entries: &[(Table, &RecordBatch)]) -> Result<Record> {
        encode(entries).map(|bytes| Record(std::sync::Arc::new(bytes)))
    }

    /// Bytes taken as a framed record as they are, whatever they hold.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Record {
        Record(std::sync::Arc::new(bytes))
    }

    /// The frame: header and payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One framed record of `entries`, ready to append.
pub(crate) fn encode(entries: &[(Table, &RecordBatch)]) -> Result<Vec<u8>> {
    // About the batches' buffers plus the IPC framing, allocated once: growing the
    // vector by doubling would copy a request's record several times over.
    let expected = entries
        .iter()
        .map(|(_, batch)| batch.get_array_memory_size() + IPC_OVERHEAD)
        .sum::<usize>();
    let mut out = Vec::with_capacity(8 + expected);
    out.resize(8, 0);
    for (table, batch) in entries {
        out.push(table.code());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        {
            let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let ipc_len = u32::try_from(out.len() - at - 4)
            .map_err(|_| Error::Wal(format!("batch of {} bytes is too large", out.len())))?;
        out[at..at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    let len = u32::try_from(out.len() - 8)
        .map_err(|_| Error::Wal(format!("record of {} bytes is too large", out.len())))?;
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
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

fn read_ipc(ipc: &[u8]) -> Option<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(ipc, None).ok()?;
    reader.collect::<std::result::Result<Vec<_>, _>>().ok()
}

/// Splits `bytes` into the payloads of its intact records, in order.
pub(crate) fn payloads(bytes: &[u8]) -> (Vec<&[u8]>, Damage) {
    let mut out = Vec::new();
    let mut damage = Damage::default();
    let mut at = 0;
    while at < bytes.len() {
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
    use crate::testing::batch;

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
