//! One group's values for an exact `percentile_cont`, and the percentile of them.
//!
//! The values are held in chunks that double up to [`CHUNK`] values and then stay that
//! size, so a large group wastes at most one chunk where a doubling `Vec` wastes up to
//! as many bytes as it holds: a week of durations in one group is 800 MB, not 1.6 GB.
//!
//! The percentile is selected without gathering a large group into one slice (which
//! would hold every value twice): each round samples the keys in the range that holds
//! the rank, counts the keys around two pivots from the sample, and narrows the range
//! to the side the rank lies on, until the range fits a [`BUFFER`] that is selected
//! from. With the sample's margin of four standard deviations, one round narrows to
//! about 3% of the values, so a group of up to some 60M values takes one round.

use std::mem::size_of;

/// The length a group's chunks grow to.
const CHUNK: usize = 1 << 14;

/// The most keys a selection gathers at once.
const BUFFER: usize = 1 << 21;

/// The keys each narrowing round samples.
const SAMPLE: usize = 1 << 16;

/// One group's values, in the order they arrived.
#[derive(Default)]
pub(super) struct Values {
    chunks: Vec<Vec<f64>>,
    len: usize,
}

impl Values {
    /// Adds `values`, returning the bytes this allocated.
    pub(super) fn extend(&mut self, mut values: &[f64]) -> usize {
        self.len += values.len();
        let mut bytes = 0;
        while !values.is_empty() {
            let chunk = match self.chunks.last_mut().filter(|c| c.len() < CHUNK) {
                Some(chunk) => chunk,
                None => {
                    // The first chunk doubles from a few values; the later ones start
                    // full-sized.
                    let capacity = if self.chunks.is_empty() { 4 } else { CHUNK };
                    bytes += capacity * size_of::<f64>();
                    self.chunks.push(Vec::with_capacity(capacity));
                    self.chunks.last_mut().expect("just pushed")
                }
            };
            let take = values.len().min(CHUNK - chunk.len());
            let needed = chunk.len() + take;
            if needed > chunk.capacity() {
                // Doubling, to at most a chunk (a plain `extend` may go past it).
                let capacity = needed.next_power_of_two().min(CHUNK);
                bytes += (capacity - chunk.capacity()) * size_of::<f64>();
                chunk.reserve_exact(capacity - chunk.len());
            }
            chunk.extend_from_slice(&values[..take]);
            values = &values[take..];
        }
        bytes
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Takes in `other`'s values by moving its chunks.
    pub(super) fn append(&mut self, other: Values) {
        self.len += other.len;
        self.chunks.extend(other.chunks);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// `percentile_cont` of the values at `p`, as DataFusion computes it: linear
    /// interpolation between the two closest ranks (by `f64::total_cmp`), its weight
    /// rounded down to a millionth.
    pub(super) fn percentile(&self, p: f64) -> Option<f64> {
        self.percentile_within(p, BUFFER)
    }

    fn percentile_within(&self, p: f64, buffer: usize) -> Option<f64> {
        const INTERPOLATION_PRECISION: f64 = 1_000_000.0;
        let keys = || self.iter().map(key);
        match self.len {
            0 => None,
            _ if p == 0.0 => keys().min().map(value),
            _ if p == 1.0 => keys().max().map(value),
            len => {
                let index = p * ((len - 1) as f64);
                let (lower, upper) = (index.floor() as usize, index.ceil() as usize);
                let (low, next) = self.select(lower, buffer);
                if lower == upper {
                    return Some(value(low));
                }
                let high = match next {
                    Some(next) => next,
                    None => self.key_after(low, lower)?,
                };
                let (low, high) = (value(low), value(high));
                let fraction = index - lower as f64;
                let weight = ((fraction * INTERPOLATION_PRECISION) as usize) as f64
                    / INTERPOLATION_PRECISION;
                Some(low + (high - low) * weight)
            }
        }
    }

    /// The key at `rank` (from 0, in key order), and the key at `rank + 1` when the
    /// selection saw it.
    fn select(&self, rank: usize, buffer: usize) -> (i64, Option<i64>) {
        // The keys in `lo..=hi` hold the rank: `below` keys lie under `lo`, `inside`
        // within.
        let (mut lo, mut hi, mut below, mut inside) = (i64::MIN, i64::MAX, 0, self.len);
        let keys = |lo: i64, hi: i64| self.iter().map(key).filter(move |k| (lo..=hi).contains(k));
        loop {
            if inside <= buffer.max(SAMPLE) {
                let mut held = self.gather(lo, hi, inside);
                let (_, &mut at, above) = held.select_nth_unstable(rank - below);
                return (at, above.iter().copied().min());
            }
            // Two pivots a margin either side of the rank's place in an even sample.
            let step = inside / SAMPLE;
            let mut sample = keys(lo, hi).step_by(step).collect::<Vec<_>>();
            sample.sort_unstable();
            let margin = 4 * sample.len().isqrt() + 1;
            let place = ((rank - below) as u128 * sample.len() as u128 / inside as u128) as usize;
            let low_pivot = place.checked_sub(margin).map_or(lo, |i| sample[i]);
            let high_pivot = sample.get(place + margin).copied().unwrap_or(hi);
            // The keys under, at and between the pivots, and at and over the high one.
            let mut counts = [0usize; 5];
            for k in keys(lo, hi) {
                let block = match k {
                    _ if k < low_pivot => 0,
                    _ if k == low_pivot => 1,
                    _ if k < high_pivot => 2,
                    _ if k == high_pivot => 3,
                    _ => 4,
                };
                counts[block] += 1;
            }
            // The range shrinks by a key that is there each round: a pivot from the
            // sample, which at most one of the bounds is not.
            let mut start = below;
            for (block, &count) in counts.iter().enumerate() {
                if rank < start + count {
                    match block {
                        0 => hi = low_pivot - 1,
                        1 => return (low_pivot, None),
                        2 => (lo, hi) = (low_pivot + 1, high_pivot - 1),
                        3 => return (high_pivot, None),
                        _ => lo = high_pivot + 1,
                    }
                    (below, inside) = (start, count);
                    break;
                }
                start += count;
            }
        }
    }

    /// The `inside` keys in `lo..=hi`, a chunk at a time: copied into a vector of
    /// their number at once, where collecting them through one iterator over every
    /// chunk grew the vector by doubling and took each key through the chain's `next`.
    fn gather(&self, lo: i64, hi: i64, inside: usize) -> Vec<i64> {
        let mut held = Vec::with_capacity(inside);
        for chunk in &self.chunks {
            let keys = chunk.iter().map(|&v| key(v));
            match (lo, hi) {
                (i64::MIN, i64::MAX) => held.extend(keys),
                _ => held.extend(keys.filter(|k| (lo..=hi).contains(k))),
            }
        }
        held
    }

    /// The key at `rank + 1`, given `at`, the key at `rank`.
    fn key_after(&self, at: i64, rank: usize) -> Option<i64> {
        let (mut not_above, mut least_above) = (0, None::<i64>);
        for k in self.iter().map(key) {
            if k <= at {
                not_above += 1;
            } else if least_above.is_none_or(|least| k < least) {
                least_above = Some(k);
            }
        }
        if not_above > rank + 1 {
            Some(at)
        } else {
            least_above
        }
    }
}

/// `value` as an integer in the order of `f64::total_cmp` (which computes the same).
fn key(value: f64) -> i64 {
    let bits = value.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// The value of a [`key`]: the mapping is its own inverse.
fn value(key: i64) -> f64 {
    f64::from_bits((key ^ ((((key >> 63) as u64) >> 1) as i64)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The percentile the plain way: sort, then interpolate.
    fn sorted_percentile(values: &[f64], p: f64) -> Option<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(f64::total_cmp);
        let index = p * (sorted.len().checked_sub(1)? as f64);
        let (lower, upper) = (index.floor() as usize, index.ceil() as usize);
        let weight = (((index - lower as f64) * 1_000_000.0) as usize) as f64 / 1_000_000.0;
        Some(sorted[lower] + (sorted[upper] - sorted[lower]) * weight)
    }

    fn held(values: &[f64]) -> Values {
        let mut held = Values::default();
        held.extend(values);
        held
    }

    /// A deterministic stream of pseudo-random numbers (xorshift).
    fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        std::iter::successors(Some(seed | 1), |&x| {
            let x = x ^ (x << 13);
            let x = x ^ (x >> 7);
            Some(x ^ (x << 17))
        })
    }

    #[test]
    fn the_key_order_is_total_cmp_order() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            2.5,
            f64::INFINITY,
            f64::NAN,
        ];
        for a in values {
            assert_eq!(value(key(a)).to_bits(), a.to_bits());
            for b in values {
                assert_eq!(key(a).cmp(&key(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn chunks_stop_doubling_and_count_the_bytes_they_take() {
        let all: Vec<f64> = (0..3 * CHUNK + 5).map(|i| i as f64).collect();
        // Appended in runs of every size, one value to more than a chunk.
        let mut values = Values::default();
        let mut bytes = 0;
        let mut rest = &all[..];
        for run in [1, 2, 3, 7, 100, CHUNK - 50, 3, CHUNK + 7]
            .into_iter()
            .cycle()
        {
            let (now, later) = rest.split_at(run.min(rest.len()));
            bytes += values.extend(now);
            assert!(values.chunks.iter().all(|c| c.capacity() <= CHUNK));
            assert_eq!(
                bytes,
                values.chunks.iter().map(|c| c.capacity()).sum::<usize>() * size_of::<f64>()
            );
            rest = later;
            if rest.is_empty() {
                break;
            }
        }
        assert_eq!(values.len(), 3 * CHUNK + 5);
        assert_eq!(bytes, 4 * CHUNK * size_of::<f64>());
        assert!(values.iter().map(|v| v as usize).eq(0..3 * CHUNK + 5));
    }

    #[test]
    fn narrowing_selects_what_sorting_does_on_every_shape_of_data() {
        let n = 300_000;
        let random = numbers(7)
            .take(n)
            .map(|x| (x % 1_000_000) as f64)
            .collect::<Vec<_>>();
        let shapes: Vec<(&str, Vec<f64>)> = vec![
            ("random", random.clone()),
            ("ascending", (0..n).map(|i| i as f64).collect()),
            (
                "descending",
                (0..n).rev().map(|i| i as f64 * -0.5).collect(),
            ),
            ("one value", vec![42.0; n]),
            ("two values", (0..n).map(|i| (i % 2) as f64).collect()),
            // Periodic with the sample's stride, so the sample sees one value only.
            (
                "periodic",
                (0..n)
                    .map(|i| ((i % (n / SAMPLE)) == 0) as u8 as f64)
                    .collect(),
            ),
            (
                "few distinct",
                random.iter().map(|v| (v % 7.0) - 3.0).collect(),
            ),
            (
                "heavy tail",
                random
                    .iter()
                    .map(|v| if *v > 990_000.0 { v * 1e9 } else { *v })
                    .collect(),
            ),
        ];
        for (shape, values) in &shapes {
            let held = held(values);
            for p in [0.0, 1e-6, 0.01, 0.25, 0.5, 0.95, 0.99, 0.999_999, 1.0] {
                // A buffer far smaller than the values, so every round runs.
                let narrowed = held.percentile_within(p, 1000);
                assert_eq!(narrowed, sorted_percentile(values, p), "{shape} at {p}");
                assert_eq!(held.percentile(p), narrowed, "{shape} at {p}");
            }
        }
    }

    #[test]
    fn appended_values_count_as_one_group() {
        let mut all = held(&[5.0, 1.0]);
        all.append(held(&[3.0]));
        all.append(Values::default());
        assert_eq!(all.len(), 3);
        assert_eq!(all.percentile(0.5), Some(3.0));
        assert_eq!(Values::default().percentile(0.5), None);
        assert_eq!(held(&[7.0]).percentile(0.3), Some(7.0));
    }
}
