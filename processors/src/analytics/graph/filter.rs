//! Which keys a generation of a pairing store may hold, one bit per key: most spans
//! have no partner waiting, and a clear bit answers so without probing the
//! generation's table, whose entries are megabytes away from the cache.

use super::Key;

/// Bits per span a generation holds: about one probe in 16 of a missing key still
/// goes to the table.
const BITS_PER_ITEM: usize = 16;

/// A filter's bits at most (8 MiB): a store configured for tens of millions of spans
/// gets a filter that answers "maybe" more often, not one allocated at that size.
const MAX_BITS: usize = 1 << 26;

pub(super) struct KeyFilter {
    words: Vec<u64>,
    /// `64 - log2(bits)`: the top bits of a key's mixed hash pick its bit.
    shift: u32,
}

impl KeyFilter {
    /// A filter for a generation of up to `items` keys.
    pub(super) fn new(items: usize) -> KeyFilter {
        let bits = items
            .max(1)
            .saturating_mul(BITS_PER_ITEM)
            .min(MAX_BITS)
            .next_power_of_two()
            .max(64);
        KeyFilter {
            words: vec![0; bits / 64],
            shift: 64 - bits.trailing_zeros(),
        }
    }

    fn bit(&self, key: &Key) -> usize {
        // Ids are random in practice but need not be (tests, hand-made spans): mixed,
        // then the top bits taken, as a Fibonacci hash does.
        let mixed = (key.span ^ key.trace[0].rotate_left(21) ^ key.trace[1].rotate_left(42))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> self.shift) as usize
    }

    pub(super) fn insert(&mut self, key: &Key) {
        let bit = self.bit(key);
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    /// False when the generation surely does not hold `key`.
    pub(super) fn may_hold(&self, key: &Key) -> bool {
        let bit = self.bit(key);
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    pub(super) fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_inserted_is_always_held_and_most_others_are_not() {
        let mut filter = KeyFilter::new(1000);
        // Sequential ids, as tests and hand-made spans have them.
        let keys: Vec<Key> = (0..1000u64).map(|i| Key::new(7, i)).collect();
        for key in &keys {
            filter.insert(key);
        }
        assert!(keys.iter().all(|k| filter.may_hold(k)));
        let others = (1000..11_000u64)
            .filter(|&i| filter.may_hold(&Key::new(7, i)))
            .count();
        // About 1 in 16 by design; well under 1 in 8.
        assert!(others < 1250, "{others} of 10000 absent keys may be held");
        filter.clear();
        assert!(!keys.iter().any(|k| filter.may_hold(k)));
        // However many items a store allows, its filter stays within its bound.
        assert_eq!(KeyFilter::new(usize::MAX).words.len() * 64, MAX_BITS);
        assert_eq!(KeyFilter::new(0).words.len(), 1);
    }
}
