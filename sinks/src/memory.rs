//! [`MemoryLimiter`]: one memory budget for everything the pipeline holds.
//!
//! The store's buffer of rows not yet in Parquet and every queue between the pipeline
//! and its processors and sinks charge what they hold to one limiter and release it
//! when it leaves them (a flush, a dequeue). The pipeline asks [`MemoryLimiter::admission`]
//! before it reads and decodes a request, so an overloaded collector refuses requests
//! for the cost of their headers (503 / UNAVAILABLE, which OTLP exporters retry), as the
//! OpenTelemetry Collector's `memory_limiter` does first in a pipeline. Past half the
//! budget, holders that can free memory (the store's flusher) are woken.
//!
//! ```
//! use swarmscope_sinks::memory::MemoryLimiter;
//!
//! let limiter = MemoryLimiter::new(100);
//! limiter.try_charge(80).unwrap();
//! assert!(limiter.try_charge(30).is_err(), "over the budget");
//! limiter.release(80);
//! assert_eq!(limiter.used(), 0);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::{Error, Result};

/// A shared memory budget. Cheap to clone: clones share the budget.
#[derive(Clone)]
pub struct MemoryLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    /// The size of the last charge: what [`MemoryLimiter::admission`] expects the next
    /// request to take.
    last_charge: AtomicUsize,
    /// Woken past half the budget, and when a request is refused.
    pressure: Notify,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> MemoryLimiter {
        MemoryLimiter {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
                last_charge: AtomicUsize::new(0),
                pressure: Notify::new(),
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes charged now, by every holder.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Whether a request like the last one would fit now; asked before a request is
    /// decoded. `Err(Backpressure)` means: retry later.
    pub fn admission(&self) -> Result<()> {
        let used = self.used();
        let expected = self.inner.last_charge.load(Ordering::Relaxed);
        if used > 0 && used + expected > self.inner.limit {
            self.inner.pressure.notify_one();
            return Err(Error::Backpressure {
                buffered: used,
                limit: self.inner.limit,
            });
        }
        Ok(())
    }

    /// Charges `bytes`, or takes nothing and answers `Err(Backpressure)` when they would
    /// pass the budget. An empty budget admits any charge, or a request larger than the
    /// budget would be refused forever: the budget bounds what accumulates, not one
    /// request (which `max_request_bytes` bounds).
    pub fn try_charge(&self, bytes: usize) -> Result<()> {
        self.inner.last_charge.store(bytes, Ordering::Relaxed);
        let before = self.inner.used.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > self.inner.limit {
            self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
            self.inner.pressure.notify_one();
            return Err(Error::Backpressure {
                buffered: before,
                limit: self.inner.limit,
            });
        }
        if before + bytes >= self.inner.limit / 2 {
            self.inner.pressure.notify_one();
        }
        Ok(())
    }

    /// Charges `bytes` whatever the budget says: for what is already in memory (rows
    /// replayed from the log at start-up).
    pub fn force_charge(&self, bytes: usize) {
        self.inner.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back what a holder no longer holds.
    pub fn release(&self, bytes: usize) {
        self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Resolves when memory is short: past half the budget, or a request was refused.
    pub async fn pressure(&self) {
        self.inner.pressure.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_budget_admits_one_oversized_charge_then_refuses() {
        let limiter = MemoryLimiter::new(100);
        limiter.try_charge(500).unwrap();
        assert!(matches!(
            limiter.try_charge(1),
            Err(Error::Backpressure {
                buffered: 500,
                limit: 100
            })
        ));
        assert_eq!(limiter.used(), 500);
        // Admission expects the next request to be like the last charge.
        assert!(limiter.admission().is_err());
        limiter.release(500);
        assert!(limiter.admission().is_ok());
        limiter.try_charge(40).unwrap();
        assert!(limiter.admission().is_ok(), "another 40 fits in 100");
        assert!(limiter.try_charge(70).is_err());
        assert_eq!(limiter.used(), 40);
        assert!(limiter.admission().is_err(), "another 70 does not");
    }

    #[tokio::test]
    async fn passing_half_the_budget_wakes_a_holder() {
        let limiter = MemoryLimiter::new(100);
        let woken = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.pressure().await }
        });
        tokio::task::yield_now().await;
        limiter.try_charge(10).unwrap();
        limiter.try_charge(45).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), woken)
            .await
            .expect("woken past half the budget")
            .unwrap();
    }
}
