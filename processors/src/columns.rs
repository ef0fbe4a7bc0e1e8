//! Reading attributes out of stored batches: the `Map<Utf8, Utf8>` columns of
//! [`crate::schema`], row by row, without copying them.
//!
//! The analytics look for a handful of keys in every span. Most spans carry none of
//! them, so [`MapColumn::mentions`] first checks whether a key occurs anywhere in the
//! batch's key bytes (one `memmem` pass), and a batch without it costs nothing more.

use arrow::array::{Array, AsArray, MapArray, StringArray};
use memchr::memmem;

use crate::{Error, Result};

/// A `Map<Utf8, Utf8>` column, readable row by row.
///
/// Rows of one batch usually list the same attributes in the same order (one SDK, one
/// instrumentation), so each key remembers where in its row it was found last, and
/// the next row is tried there first: a lookup is one comparison, not a scan.
pub struct MapColumn<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StringArray,
    /// (key address, key length, position in the row where it was last found).
    hints: std::cell::RefCell<Vec<(usize, usize, usize)>>,
}

impl<'a> MapColumn<'a> {
    pub fn new(array: &'a dyn Array) -> Result<MapColumn<'a>> {
        let map = array
            .as_map_opt()
            .ok_or_else(|| Error::Schema(format!("expected a map, got {}", array.data_type())))?;
        let strings = |a: &'a dyn Array| {
            a.as_string_opt::<i32>()
                .ok_or_else(|| Error::Schema(format!("expected Utf8, got {}", a.data_type())))
        };
        Ok(MapColumn {
            map,
            keys: strings(map.keys().as_ref())?,
            values: strings(map.values().as_ref())?,
            hints: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// The column named `name` of `batch`.
    pub fn of(batch: &'a arrow::record_batch::RecordBatch, name: &str) -> Result<MapColumn<'a>> {
        let array = batch
            .column_by_name(name)
            .ok_or_else(|| Error::Schema(format!("no column {name}")))?;
        MapColumn::new(array.as_ref())
    }

    /// Whether any row might have one of `values` as a value: false means none has.
    pub fn mentions_value(&self, values: &[&str]) -> bool {
        let bytes = self.values.values().as_slice();
        values
            .iter()
            .any(|v| memmem::find(bytes, v.as_bytes()).is_some())
    }

    /// Whether any row might have one of the keys `keys` looks for: false means none
    /// has.
    pub fn mentions_any(&self, keys: &aho_corasick::AhoCorasick) -> bool {
        keys.is_match(self.keys.values().as_slice())
    }

    /// Whether any row might have one of `keys`: false means none has.
    pub fn mentions<K: AsRef<str>>(&self, keys: &[K]) -> bool {
        let bytes = self.keys.values().as_slice();
        keys.iter()
            .any(|k| memmem::find(bytes, k.as_ref().as_bytes()).is_some())
    }

    /// The value of `key` in row `row`, if it is there and not null.
    pub fn get(&self, row: usize, key: &str) -> Option<&'a str> {
        if self.map.is_null(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let id = (key.as_ptr() as usize, key.len());
        let mut hints = self.hints.borrow_mut();
        let hint = hints.iter().position(|h| (h.0, h.1) == id);
        if let Some(h) = hint {
            let i = start + hints[h].2;
            if i < end && Text(self.keys.value(i)) == Text(key) {
                return self.value(i);
            }
        }
        let found = (start..end).find(|&i| Text(self.keys.value(i)) == Text(key))?;
        match hint {
            Some(h) => hints[h].2 = found - start,
            None if hints.len() < 32 => hints.push((id.0, id.1, found - start)),
            None => {}
        }
        self.value(found)
    }

    fn value(&self, i: usize) -> Option<&'a str> {
        (!self.values.is_null(i)).then(|| self.values.value(i))
    }

    /// Calls `f(key, value)` for every entry of row `row` with a value, in order: one
    /// pass, for a reader that wants many keys of every row.
    pub fn scan(&self, row: usize, f: impl FnMut(&'a str, &'a str)) {
        self.scan_where(row, |_| true, f);
    }

    /// Calls `f(key, value)` for every entry of row `row` with a value whose key
    /// `wanted` accepts, in order: the other entries' values are not read.
    pub fn scan_where(
        &self,
        row: usize,
        wanted: impl Fn(&str) -> bool,
        mut f: impl FnMut(&'a str, &'a str),
    ) {
        if self.map.is_null(row) {
            return;
        }
        let offsets = self.map.value_offsets();
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            let key = self.keys.value(i);
            if wanted(key) {
                if let Some(v) = self.value(i) {
                    f(key, v);
                }
            }
        }
    }

    /// Every entry of row `row` with a value, by key.
    pub fn entries(&self, row: usize) -> std::collections::BTreeMap<String, String> {
        if self.map.is_null(row) {
            return Default::default();
        }
        let offsets = self.map.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .filter(|&i| !self.values.is_null(i))
            .map(|i| {
                (
                    self.keys.value(i).to_owned(),
                    self.values.value(i).to_owned(),
                )
            })
            .collect()
    }

    /// Whether row `row` has any of `keys` with a value: one pass over its keys alone,
    /// ending at the first found. A key whose length no key of `keys` has is passed
    /// over with one test of a bit (most of a row's keys, for the GenAI usage keys).
    pub fn has_any(&self, row: usize, keys: &[&str]) -> bool {
        if self.map.is_null(row) {
            return false;
        }
        // Bit n set when a key of `keys` is n bytes long; lengths of 64 and more have
        // no bit, and a key that long is compared.
        let bit = |len: usize| u32::try_from(len).ok().and_then(|n| 1u64.checked_shl(n));
        let lengths = keys.iter().fold(0u64, |m, k| m | bit(k.len()).unwrap_or(0));
        let offsets = self.map.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize).any(|i| {
            let key = Text(self.keys.value(i));
            bit(key.0.len()).is_none_or(|b| lengths & b != 0)
                && keys.iter().any(|k| key == Text(k))
                && !self.values.is_null(i)
        })
    }

    /// The value of the first of `keys` that row `row` has.
    pub fn first<K: AsRef<str>>(&self, row: usize, keys: &[K]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.get(row, k.as_ref()))
    }
}

/// A borrowed string as a hash-map key, compared byte by byte inline. The observers
/// group every row by a few short label values, and `str`'s own `==` calls the C
/// library's `memcmp` for each of them: in the GenAI observer's profile those calls were
/// its largest cost per row.
#[derive(Clone, Copy, Debug, Eq)]
pub struct Text<'a>(pub &'a str);

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
    }
}

impl std::hash::Hash for Text<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A string column (`Utf8`), by name.
pub fn strings<'a>(
    batch: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::Schema(format!("no Utf8 column {name}")))
}

/// The value of row `row` of a nullable string column.
pub fn string_at(array: &StringArray, row: usize) -> Option<&str> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// A column of primitive type `T`, by name.
pub fn primitives<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| Error::Schema(format!("no {} column {name}", T::DATA_TYPE)))
}

/// A timestamp column (nanoseconds), by name.
pub fn timestamps<'a>(
    batch: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::TimestampNanosecondArray> {
    primitives::<arrow::datatypes::TimestampNanosecondType>(batch, name)
}

/// A Boolean column, by name.
pub fn booleans<'a>(
    batch: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::BooleanArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_boolean_opt())
        .ok_or_else(|| Error::Schema(format!("no Boolean column {name}")))
}

/// An attribute value as a number: integers and decimals as rendered by
/// [`crate::anyvalue`], surrounding blanks ignored.
pub fn number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::attribute_builder;

    fn column(rows: &[&[(&str, &str)]]) -> MapArray {
        let mut b = attribute_builder();
        for row in rows {
            for (k, v) in *row {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            b.append(true).unwrap();
        }
        b.finish()
    }

    #[test]
    fn finds_values_by_row_and_key() {
        let map = column(&[&[("a", "1"), ("b", "2")], &[], &[("b", "3")]]);
        let c = MapColumn::new(&map).unwrap();
        assert_eq!(c.get(0, "b"), Some("2"));
        assert_eq!(c.get(1, "b"), None);
        assert_eq!(c.get(2, "b"), Some("3"));
        assert_eq!(c.first(2, &["a", "b"]), Some("3"));
        assert!(c.mentions(&["x", "b"]));
        assert!(!c.mentions(&["zz"]));
        let keys = |k: &[&str]| aho_corasick::AhoCorasick::new(k).unwrap();
        assert!(c.mentions_any(&keys(&["x", "b"])));
        assert!(!c.mentions_any(&keys(&["zz", "c"])));
    }

    #[test]
    fn a_row_has_any_of_some_keys_only_with_a_value() {
        let mut b = attribute_builder();
        b.keys().append_value("a");
        b.values().append_value("1");
        b.keys().append_value("b");
        b.values().append_null();
        b.append(true).unwrap();
        b.append(false).unwrap();
        let map = b.finish();
        let c = MapColumn::new(&map).unwrap();
        assert!(c.has_any(0, &["x", "a"]));
        assert!(!c.has_any(0, &["b"]), "b has no value");
        assert!(!c.has_any(0, &["x", "aa", ""]));
        assert!(!c.has_any(1, &["a"]), "a null map has no keys");
        // Keys of 63, 64 and 70 bytes (past the lengths' bitmask), and keys of one
        // length that differ in their last byte.
        let long = |n: usize, last: char| format!("{}{last}", "k".repeat(n - 1));
        let mut b = attribute_builder();
        for (k, v) in [
            (long(63, 'a'), "1"),
            (long(64, 'a'), "2"),
            (long(70, 'a'), "3"),
        ] {
            b.keys().append_value(k);
            b.values().append_value(v);
            b.append(true).unwrap();
        }
        let long_keys = b.finish();
        let l = MapColumn::new(&long_keys).unwrap();
        for (row, n) in [(0, 63), (1, 64), (2, 70)] {
            let (same, other) = (long(n, 'a'), long(n, 'b'));
            let (longer, shorter) = (long(n + 1, 'a'), long(n - 1, 'k'));
            assert!(
                l.has_any(row, &[other.as_str(), same.as_str()]),
                "{n} bytes"
            );
            assert!(
                !l.has_any(row, &[other.as_str()]),
                "{n} bytes, the last one differs"
            );
            assert!(
                !l.has_any(row, &[longer.as_str(), shorter.as_str()]),
                "{n} bytes, other lengths"
            );
        }
        let mut seen = Vec::new();
        c.scan_where(0, |k| k != "x", |k, v| seen.push((k, v)));
        assert_eq!(seen, [("a", "1")], "b has no value");
        seen.clear();
        c.scan_where(0, |k| k == "b", |k, v| seen.push((k, v)));
        assert!(seen.is_empty());
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(number(" 42 "), Some(42.0));
        assert_eq!(number("1.5"), Some(1.5));
        assert_eq!(number("NaN"), None);
        assert_eq!(number("inf"), None);
        assert_eq!(number("lots"), None);
    }
}
