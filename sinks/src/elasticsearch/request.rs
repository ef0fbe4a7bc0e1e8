//! The request builder: documents as `create` items of `_bulk` requests (NDJSON), in
//! requests of at most about `bulk_max_bytes`.

use arrow::array::RecordBatch;
use swarmscope_processors::schema::Table;

use super::documents;
use crate::sink::SinkError;

/// A document ready to send: its NDJSON lines and where it came from.
pub(super) struct Item {
    pub(super) lines: Vec<u8>,
    pub(super) index: &'static str,
    pub(super) source_table: Table,
    /// Where the document starts in `lines` (after the action line).
    body_start: usize,
}

impl Item {
    pub(super) fn body(&self) -> String {
        let body = &self.lines[self.body_start..];
        String::from_utf8_lossy(body.strip_suffix(b"\n").unwrap_or(body)).into_owned()
    }
}

/// The items of `batches`, in order.
pub(super) fn items(batches: &[(Table, RecordBatch)]) -> Result<Vec<Item>, SinkError> {
    let mut items = Vec::new();
    // Documents of a batch go to one index: its action line is made once.
    let mut action = (String::new(), String::new());
    for (table, batch) in batches {
        for doc in documents(*table, batch).map_err(SinkError::Permanent)? {
            if action.0 != doc.index {
                action = (
                    doc.index.to_owned(),
                    serde_json::json!({ "create": { "_index": doc.index } }).to_string(),
                );
            }
            let action = &action.1;
            let mut lines = Vec::with_capacity(action.len() + doc.body.len() + 2);
            lines.extend_from_slice(action.as_bytes());
            lines.push(b'\n');
            let body_start = lines.len();
            lines.extend_from_slice(doc.body.as_bytes());
            lines.push(b'\n');
            items.push(Item {
                lines,
                index: doc.index,
                source_table: doc.source_table,
                body_start,
            });
        }
    }
    Ok(items)
}

/// `items` in requests of at most about `max_bytes` each (one item a request at least).
pub(super) fn chunks(items: &[Item], max_bytes: usize) -> Vec<Vec<&Item>> {
    let mut out: Vec<Vec<&Item>> = Vec::new();
    let mut size = 0;
    for item in items {
        match out.last_mut() {
            Some(chunk) if size + item.lines.len() <= max_bytes => chunk.push(item),
            _ => {
                out.push(vec![item]);
                size = 0;
            }
        }
        size += item.lines.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_split_into_requests_by_size() {
        let item = |n: usize| Item {
            lines: vec![b'x'; n],
            index: "alerts",
            source_table: Table::SPANS,
            body_start: 0,
        };
        let items = vec![item(40), item(40), item(40), item(200)];
        let sizes: Vec<usize> = chunks(&items, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
    }
}
