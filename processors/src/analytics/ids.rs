//! A span batch's trace and span ids as numbers: the call graph's pairing stores key on
//! 24 bytes rather than two strings, and GenAI attribution walks a batch's tree by
//! number. The receiver hands them on with the batch ([`SpanIds`]); a batch without
//! them has its ids' text read back.

use arrow::array::{Array, StringArray};

use crate::columns::strings;
use crate::processor::{SpanIds, TableBatch};
use crate::Result;

/// A span batch's ids, read by row.
pub(crate) enum BatchIds<'a> {
    /// As the receiver read them off the wire.
    Numbers(&'a SpanIds),
    /// The stored text (`trace_id`, `span_id`, `parent_span_id`).
    Text {
        trace: &'a StringArray,
        span: &'a StringArray,
        parent: &'a StringArray,
    },
}

impl<'a> BatchIds<'a> {
    pub(crate) fn of(input: &'a TableBatch) -> Result<BatchIds<'a>> {
        Ok(match input.ids.as_deref() {
            Some(ids) if ids.len() == Some(input.batch.num_rows()) => BatchIds::Numbers(ids),
            _ => BatchIds::Text {
                trace: strings(&input.batch, "trace_id")?,
                span: strings(&input.batch, "span_id")?,
                parent: strings(&input.batch, "parent_span_id")?,
            },
        })
    }

    /// Row `row`'s trace id, if it is one (32 hex digits, as stored).
    #[inline]
    pub(crate) fn trace(&self, row: usize) -> Option<u128> {
        match self {
            BatchIds::Numbers(ids) => ids.trace.get(row).copied(),
            BatchIds::Text { trace, .. } => hex_u128(trace.value(row)),
        }
    }

    /// Row `row`'s span id, if it is one.
    #[inline]
    pub(crate) fn span(&self, row: usize) -> Option<u64> {
        match self {
            BatchIds::Numbers(ids) => ids.span.get(row).copied(),
            BatchIds::Text { span, .. } => hex_u64(span.value(row)),
        }
    }

    /// Row `row`'s parent span id; `None` for a root (or an id that is none).
    #[inline]
    pub(crate) fn parent(&self, row: usize) -> Option<u64> {
        match self {
            BatchIds::Numbers(ids) => ids.parent.get(row).copied().filter(|p| *p != 0),
            BatchIds::Text { parent, .. } => {
                (!parent.is_null(row)).then(|| hex_u64(parent.value(row)))?
            }
        }
    }

    /// Whether rows `a` and `b` are spans of one trace.
    pub(crate) fn same_trace(&self, a: usize, b: usize) -> bool {
        match self {
            BatchIds::Numbers(ids) => ids.trace.get(a) == ids.trace.get(b),
            BatchIds::Text { trace, .. } => trace.value(a) == trace.value(b),
        }
    }
}

/// The value of eight hexadecimal digits (either case), the first in the low byte of
/// `chars`, if they all are digits: eight at a time in one word's lanes, with no branch
/// or table lookup per character.
fn hex8(chars: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A lane's high bit set where its byte is in `lo..=hi` (bytes below 0x80: no lane
    // carries into the next).
    let within = |v: u64, lo: u8, hi: u8| {
        let above_lo = v + ONES * u64::from(0x80 - lo);
        let above_hi = v + ONES * u64::from(0x7f - hi);
        above_lo & !above_hi & HIGH
    };
    if chars & HIGH != 0 {
        return None;
    }
    let folded = chars | (ONES * 0x20);
    if within(chars, b'0', b'9') | within(folded, b'a', b'f') != HIGH {
        return None;
    }
    // '0'..'9' are 0x3_, 'a'..'f' 0x6_ with 1..6 below: a letter's low nibble plus 9.
    let letters = (folded & (ONES * 0x40)) >> 6;
    let nibbles = (folded & (ONES * 0x0f)) + letters * 9;
    // Pairs of nibbles into bytes, pairs of bytes into 16 bits, then into 32; the first
    // character is the most significant.
    let bytes = ((nibbles & 0x000f_000f_000f_000f) << 4) | ((nibbles >> 8) & 0x000f_000f_000f_000f);
    let words = ((bytes & 0x0000_00ff_0000_00ff) << 8) | ((bytes >> 16) & 0x0000_00ff_0000_00ff);
    Some((((words & 0xffff) << 16) | ((words >> 32) & 0xffff)) as u32)
}

/// The value of `s` as hexadecimal digits, if it is exactly `words * 8` of them.
fn hex(s: &str, words: usize) -> Option<u128> {
    let bytes = s.as_bytes();
    if bytes.len() != words * 8 {
        return None;
    }
    bytes.chunks_exact(8).try_fold(0u128, |acc, chunk| {
        let chars = u64::from_le_bytes(chunk.try_into().ok()?);
        Some((acc << 32) | u128::from(hex8(chars)?))
    })
}

pub(crate) fn hex_u128(s: &str) -> Option<u128> {
    hex(s, 4)
}

pub(crate) fn hex_u64(s: &str) -> Option<u64> {
    hex(s, 2).map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_hexadecimal_of_their_length() {
        assert_eq!(hex_u64("00000000000000fF"), Some(255));
        assert_eq!(hex_u64("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(hex_u128(&"0".repeat(31)), None);
        assert_eq!(hex_u128(&format!("{}1", "0".repeat(31))), Some(1));
        assert_eq!(hex_u64("000000000000000g"), None);
        assert_eq!(hex_u64("+00000000000000f"), None);
        assert_eq!(hex_u64("0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
        assert_eq!(hex_u64("ABCDEF0123456789"), Some(0xabcd_ef01_2345_6789));
        // 16 bytes, one character of them two bytes long.
        assert_eq!(hex_u64("00000000000000\u{e9}"), None);
    }

    /// Every byte in every position of a word: accepted exactly when it is a digit,
    /// and read as `from_str_radix` reads it.
    #[test]
    fn each_byte_in_each_position_reads_as_from_str_radix_does() {
        for at in 0..8 {
            for byte in 0..=255u8 {
                let mut chars = *b"0f9Aa5c3";
                chars[at] = byte;
                let expected = std::str::from_utf8(&chars)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|s| u32::from_str_radix(s, 16).ok());
                assert_eq!(hex8(u64::from_le_bytes(chars)), expected, "{chars:?}");
            }
        }
    }
}
