//! The per-batch table that numbers rows by their views.
//!
//! It is looked up once per row (where the key differs from the row before), so its
//! cost is the exec's: a general hash map hashes the 16- or 32-byte key with a
//! streaming hasher and probes by control bytes. Here the key is hashed with one or
//! two folded multiplies, probed linearly over a table kept at most half full, and
//! compared inline; the table is emptied between batches by clearing only the slots
//! that batch used.

/// A key of the per-batch numbering: a view, a pair of views, or a pair of numbers.
pub(super) trait Key: Copy + Eq + Default {
    fn hash(self) -> u64;
}

/// The high and low halves of the 128-bit product, xored: every input bit reaches
/// every output bit, the mixing step of foldhash and wyhash.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Arbitrary odd constants (the fractional digits of pi) that keep a zero half of a
/// key from zeroing the product.
const SEEDS: [u64; 3] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
];

impl Key for u128 {
    #[inline]
    fn hash(self) -> u64 {
        folded_multiply(self as u64 ^ SEEDS[0], (self >> 64) as u64 ^ SEEDS[1])
    }
}

impl Key for (u128, u128) {
    #[inline]
    fn hash(self) -> u64 {
        folded_multiply(
            self.0.hash() ^ (self.1 as u64),
            (self.1 >> 64) as u64 ^ SEEDS[2],
        )
    }
}

impl Key for u64 {
    #[inline]
    fn hash(self) -> u64 {
        folded_multiply(self ^ SEEDS[0], SEEDS[1])
    }
}

/// No number: the slot is free.
const FREE: u32 = u32::MAX;

/// Keys to their numbers, open addressing with linear probing.
#[derive(Default)]
pub(super) struct Numbering<K> {
    keys: Vec<K>,
    numbers: Vec<u32>,
    /// The slots in use, to free them in [`Numbering::clear`].
    used: Vec<u32>,
}

impl<K: Key> Numbering<K> {
    /// Forgets every key; the table keeps its size.
    pub(super) fn clear(&mut self) {
        for &slot in &self.used {
            self.numbers[slot as usize] = FREE;
        }
        self.used.clear();
    }

    /// The number of `key`: the one it was given, or `next` if it is new.
    #[inline]
    pub(super) fn number_of(&mut self, key: K, next: u32) -> u32 {
        if 2 * (self.used.len() + 1) > self.numbers.len() {
            self.grow();
        }
        let mask = self.numbers.len() - 1;
        let mut slot = key.hash() as usize & mask;
        loop {
            match self.numbers[slot] {
                FREE => {
                    self.keys[slot] = key;
                    self.numbers[slot] = next;
                    self.used.push(slot as u32);
                    return next;
                }
                number if self.keys[slot] == key => return number,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Doubles the table (64 slots at first) and puts the keys back.
    fn grow(&mut self) {
        let size = (2 * self.numbers.len()).max(64);
        let keys = std::mem::replace(&mut self.keys, vec![K::default(); size]);
        let numbers = std::mem::replace(&mut self.numbers, vec![FREE; size]);
        let used = std::mem::take(&mut self.used);
        for slot in used {
            let slot = slot as usize;
            self.number_of(keys[slot], numbers[slot]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keys_in_order_of_first_sight_across_growth_and_clears() {
        let mut table = Numbering::<(u128, u128)>::default();
        for round in 0..3u128 {
            table.clear();
            // Enough keys to grow the table several times; zero halves, equal halves
            // and keys that differ in one bit.
            let keys = (0..5000u128)
                .map(|i| ((i % 7) << 64 | (round + i / 7), i & 1))
                .collect::<Vec<_>>();
            let mut first_sight = std::collections::HashMap::new();
            for (i, &key) in keys.iter().enumerate() {
                let next = first_sight.len() as u32;
                let expected = *first_sight.entry(key).or_insert(next);
                assert_eq!(table.number_of(key, next), expected, "key {i}");
            }
            // Seen again, each key keeps its number.
            for key in keys {
                assert_eq!(table.number_of(key, u32::MAX - 1), first_sight[&key]);
            }
        }
    }
}
