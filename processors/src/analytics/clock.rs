//! The live analytics' clock: the wall clock, never the newest record.
//!
//! Records are stored whatever their timestamps say, but the live analytics (health,
//! anomaly detection, the claim book, the velocity gauge) judge "now" by the wall
//! clock. A record dated further ahead of it than `processors.future_tolerance_seconds`
//! (default 10 minutes, as Loki's `creation_grace_period`) comes from a clock that is
//! wrong: it is kept out of the live analytics and counted in
//! `swarmscope_analytics_skipped_total{processor, reason="future"}`, so one agent with
//! a skewed clock cannot move everyone's window. Records too old for a live window are
//! counted with `reason="late"`, and those beyond a cap with `reason="capacity"`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::{IntCounterVec, Opts};

/// Why a record was left out of the live analytics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Dated beyond the tolerance ahead of the wall clock.
    Future,
    /// Older than the live window it would count in.
    Late,
    /// Beyond a cap on the keys a processor follows.
    Capacity,
}

impl Skip {
    fn label(self) -> &'static str {
        match self {
            Skip::Future => "future",
            Skip::Late => "late",
            Skip::Capacity => "capacity",
        }
    }
}

type Now = dyn Fn() -> i64 + Send + Sync;

/// The wall clock (or a test's clock), the tolerance for records ahead of it, and the
/// counter of what the live analytics left out. Cheap to clone: every processor holds
/// one, sharing the counter.
#[derive(Clone)]
pub struct LiveClock {
    now: Arc<Now>,
    tolerance_ns: i64,
    skipped: IntCounterVec,
}

/// The default `processors.future_tolerance_seconds`.
pub const DEFAULT_FUTURE_TOLERANCE_SECONDS: u64 = 600;

/// The wall clock, in Unix nanoseconds.
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl LiveClock {
    fn with(now: Arc<Now>, tolerance_seconds: u64) -> LiveClock {
        LiveClock {
            now,
            tolerance_ns: i64::try_from(tolerance_seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000),
            skipped: IntCounterVec::new(
                Opts::new(
                    "swarmscope_analytics_skipped_total",
                    "Records stored but left out of the live analytics, by processor and reason (future: dated beyond processors.future_tolerance_seconds ahead of the wall clock; late: older than the live window; capacity: beyond a cap).",
                ),
                &["processor", "reason"],
            )
            .unwrap_or_else(|e| unreachable!("metric options are constant: {e}")),
        }
    }

    /// The wall clock.
    pub fn wall(tolerance_seconds: u64) -> LiveClock {
        LiveClock::with(Arc::new(wall_ns), tolerance_seconds)
    }

    /// A clock that reads `now` (nanoseconds) until [`ManualTime::set`] moves it: for
    /// tests, and for replaying a history at its own pace.
    pub fn manual(now: i64, tolerance_seconds: u64) -> (LiveClock, ManualTime) {
        let time = ManualTime(Arc::new(AtomicI64::new(now)));
        let read = time.clone();
        let clock = LiveClock::with(Arc::new(move || read.get()), tolerance_seconds);
        (clock, time)
    }

    /// Now, in nanoseconds since the epoch.
    pub fn now(&self) -> i64 {
        (self.now)()
    }

    /// The latest record time the live analytics take, read once per batch.
    pub fn latest_accepted(&self) -> i64 {
        self.now().saturating_add(self.tolerance_ns)
    }

    /// Counts `n` records `processor` left out for `why`.
    pub fn skip(&self, processor: &str, why: Skip, n: u64) {
        if n > 0 {
            self.skipped
                .with_label_values(&[processor, why.label()])
                .inc_by(n);
        }
    }

    /// What `processor` left out for `why` so far.
    pub fn skipped(&self, processor: &str, why: Skip) -> u64 {
        self.skipped
            .get_metric_with_label_values(&[processor, why.label()])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// `swarmscope_analytics_skipped_total`, to register with `/metrics`' registry.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.skipped.clone())
    }
}

impl std::fmt::Debug for LiveClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveClock")
            .field("now", &self.now())
            .field("tolerance_ns", &self.tolerance_ns)
            .finish()
    }
}

/// The hand that moves a [`LiveClock::manual`] clock.
#[derive(Clone, Debug)]
pub struct ManualTime(Arc<AtomicI64>);

impl ManualTime {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_bounds_what_is_accepted_and_skips_are_counted() {
        let (clock, time) = LiveClock::manual(1_000, 2);
        assert_eq!(clock.latest_accepted(), 2_000_001_000);
        time.set(5);
        assert_eq!(clock.now(), 5);
        clock.skip("signals", Skip::Future, 3);
        clock.clone().skip("signals", Skip::Future, 1);
        assert_eq!(clock.skipped("signals", Skip::Future), 4);
        assert_eq!(clock.skipped("signals", Skip::Late), 0);
    }
}
