//! Online anomaly detection, one [`Detector`] per series (a service's request rate,
//! error rate or p95 latency, a team's completions per interval), fed one value per
//! evaluation interval.
//!
//! A value is anomalous when it is far from the series' baseline by two measures at
//! once: the median of the last `window` normal values, and their exponentially
//! weighted mean. "Far" is `sensitivity` times the spread: the larger of 1.4826 × MAD
//! (median absolute deviation) and the exponentially weighted standard deviation, and
//! never below a floor (a share of the baseline, or an absolute one), so that a flat
//! series does not fire on its first wiggle. Until `min_samples` values are seen (warm-up) nothing fires.
//! Anomalous values do not enter the baseline, so a sustained shift keeps firing
//! (until it has lasted a whole window, when it becomes the new normal). A series
//! fires after `consecutive` anomalous values and resolves after `resolve_after`
//! normal ones.
//!
//! A detector of a series that is bursty by nature (a request rate: batch jobs, crons,
//! agents woken together) may tolerate recurrence: a value no more than half again as
//! far from the baseline, the same way, as an earlier burst in the last
//! `4 × window` intervals that came and went is a recurring burst: not an anomaly, and
//! kept out of the baseline (which stays the quiet level's, so an outage between
//! bursts still shows). Such a service pages on its first burst, then not on each one.
//! A sustained shift is one burst that has not gone: it keeps firing.
//!
//! A share of calls (an error rate) is also judged against its sampling noise: with
//! `n` calls at a baseline share `p` (at least 1/n), an interval's share wanders by √(p(1−p)/n)
//! by chance alone ([`binomial_spread`]), so a quiet service's one failure in ten calls
//! is no anomaly while a busy service going from 0.5% to 9% errors is.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// `[processors.anomaly]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// How many spreads from the baseline a value must be to count as anomalous.
    pub sensitivity: f64,
    /// Values kept for the median/MAD baseline.
    pub window: usize,
    /// Values seen before a series may fire (warm-up).
    pub min_samples: usize,
    /// Calls an interval needs for its error rate and latency to be judged.
    pub min_calls: u64,
    /// Anomalous intervals in a row before firing.
    pub consecutive: u32,
    /// Normal intervals in a row before resolving.
    pub resolve_after: u32,
    /// Weight of the newest value in the exponentially weighted mean and variance.
    pub ewma_alpha: f64,
    /// Series followed at once; beyond it new series are not watched.
    pub max_series: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            sensitivity: 5.0,
            window: 30,
            min_samples: 6,
            min_calls: 10,
            consecutive: 1,
            resolve_after: 2,
            ewma_alpha: 0.2,
            max_series: 10_000,
        }
    }
}

impl AnomalyConfig {
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::config_error::{positive, ConfigError};
        let key = |k: &str| format!("processors.anomaly.{k}");
        if !(self.sensitivity.is_finite() && self.sensitivity > 0.0) {
            return Err(ConfigError::invalid(
                key("sensitivity"),
                "> 0",
                self.sensitivity,
            ));
        }
        if self.window < 3 {
            return Err(ConfigError::invalid(key("window"), ">= 3", self.window));
        }
        if self.min_samples < 3 || self.min_samples > self.window {
            let expected = format!("between 3 and window ({})", self.window);
            return Err(ConfigError::invalid(
                key("min_samples"),
                expected,
                self.min_samples,
            ));
        }
        positive(key("consecutive"), self.consecutive as u64)?;
        positive(key("resolve_after"), self.resolve_after as u64)?;
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::invalid(
                key("ewma_alpha"),
                "in (0, 1]",
                self.ewma_alpha,
            ));
        }
        Ok(())
    }
}

/// Which way a series may go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

/// The smallest spread a series' baseline is judged with: `relative` × |baseline|,
/// and never below `absolute`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Floor {
    pub relative: f64,
    pub absolute: f64,
}

/// What a detector made of one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    pub value: f64,
    /// The median of the baseline window (None during warm-up).
    pub baseline: Option<f64>,
    /// Robust z-score of the value (None during warm-up).
    pub score: Option<f64>,
    pub anomalous: bool,
    /// Whether the series is firing after this value.
    pub firing: bool,
}

#[derive(Clone, Debug)]
pub struct Detector {
    direction: Direction,
    floor: Floor,
    window: VecDeque<f64>,
    mean: f64,
    var: f64,
    seen: usize,
    anomalous_run: u32,
    normal_run: u32,
    firing: bool,
    /// Whether recurring bursts are tolerated, and those seen: (when it ended, in
    /// values seen, and its peak's signed distance from the baseline then).
    recurrence: Option<VecDeque<(usize, f64)>>,
    /// The running burst's peak distance from the baseline.
    burst: Option<f64>,
    /// Values judged since warm-up, as a clock for the bursts remembered.
    judged: usize,
}

/// How far back, in windows, a burst that came and went is remembered.
const BURST_MEMORY_WINDOWS: usize = 4;
/// Bursts remembered at most.
const MAX_BURSTS: usize = 16;

/// The standard deviation of a share of `n` calls at baseline share `p`, by chance
/// alone. The baseline is taken as at least one call in `n`: never seeing an error in
/// `n` calls does not make one impossible, and the normal approximation understates
/// the tail of a small share.
pub fn binomial_spread(p: f64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = p.clamp(1.0 / n, (1.0 - 1.0 / n).max(1.0 / n));
    (p * (1.0 - p) / n).sqrt()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

impl Detector {
    pub fn new(direction: Direction, floor: Floor) -> Detector {
        Detector {
            direction,
            floor,
            window: VecDeque::new(),
            mean: 0.0,
            var: 0.0,
            seen: 0,
            anomalous_run: 0,
            normal_run: 0,
            firing: false,
            recurrence: None,
            burst: None,
            judged: 0,
        }
    }

    /// Tolerates recurring bursts (see the module's documentation).
    pub fn tolerating_recurrence(mut self) -> Detector {
        self.recurrence = Some(VecDeque::new());
        self
    }

    /// Whether `distance` from the baseline repeats a burst that came and went.
    fn recurs(&self, distance: f64, config: &AnomalyConfig) -> bool {
        let Some(bursts) = &self.recurrence else {
            return false;
        };
        let horizon = BURST_MEMORY_WINDOWS * config.window;
        bursts.iter().any(|&(ended, peak)| {
            self.judged.saturating_sub(ended) <= horizon
                && peak.signum() == distance.signum()
                && distance.abs() <= 1.5 * peak.abs()
        })
    }

    /// Follows bursts: the running one's peak, and its end.
    fn track_burst(&mut self, anomalous: bool, distance: f64) {
        let Some(bursts) = &mut self.recurrence else {
            return;
        };
        if anomalous {
            let peak = self.burst.get_or_insert(distance);
            if distance.abs() > peak.abs() {
                *peak = distance;
            }
        } else if let Some(peak) = self.burst.take() {
            if bursts.len() == MAX_BURSTS {
                bursts.pop_front();
            }
            bursts.push_back((self.judged, peak));
        }
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// A detector warmed up on `baseline` and firing: an alert restored after a restart
    /// is judged against the baseline it fired on, not against the anomalous values a
    /// fresh detector would warm up on.
    pub fn restored(
        direction: Direction,
        floor: Floor,
        baseline: f64,
        config: &AnomalyConfig,
    ) -> Detector {
        let mut d = Detector::new(direction, floor);
        for _ in 0..config.min_samples {
            d.learn(baseline, config);
        }
        d.firing = true;
        d
    }

    /// Whether the detector has seen enough to judge.
    pub fn warmed_up(&self, config: &AnomalyConfig) -> bool {
        self.seen >= config.min_samples
    }

    fn learn(&mut self, x: f64, config: &AnomalyConfig) {
        if self.window.len() == config.window {
            self.window.pop_front();
        }
        self.window.push_back(x);
        if self.seen == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let a = config.ewma_alpha;
            let d = x - self.mean;
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        self.seen += 1;
    }

    pub fn observe(&mut self, x: f64, config: &AnomalyConfig) -> Judgement {
        self.observe_share(x, None, config)
    }

    /// Observes `x`, a share of `calls` calls (an error rate): its spread is never
    /// below the sampling noise of that many calls at the baseline.
    pub fn observe_share(
        &mut self,
        x: f64,
        calls: Option<u64>,
        config: &AnomalyConfig,
    ) -> Judgement {
        if !x.is_finite() {
            return Judgement {
                value: x,
                baseline: None,
                score: None,
                anomalous: false,
                firing: self.firing,
            };
        }
        if !self.warmed_up(config) {
            self.learn(x, config);
            return Judgement {
                value: x,
                baseline: None,
                score: None,
                anomalous: false,
                firing: false,
            };
        }
        let mut sorted: Vec<f64> = self.window.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let med = median(&sorted);
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - med).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let floor = (self.floor.relative * med.abs())
            .max(self.floor.absolute)
            .max(calls.map_or(0.0, |n| binomial_spread(med, n)));
        // Either estimate of the spread may come out low on a short window; judging
        // by the larger one keeps an ordinary wiggle from looking extreme.
        let spread = (1.4826 * median(&deviations))
            .max(self.var.sqrt())
            .max(floor);
        let robust = (x - med) / spread;
        let ewma = (x - self.mean) / spread;
        let k = config.sensitivity;
        let beyond = |z: f64| match self.direction {
            Direction::Up => z > k,
            Direction::Down => z < -k,
            Direction::Both => z.abs() > k,
        };
        self.judged += 1;
        // A tolerated burst is remembered too, so a pattern stays known while it
        // recurs, but kept out of the baseline, which stays the quiet level's.
        let burst = beyond(robust) && beyond(ewma);
        let recurring = burst && self.recurs(x - med, config);
        let anomalous = burst && !recurring;
        self.track_burst(burst, x - med);
        if anomalous {
            self.anomalous_run += 1;
            self.normal_run = 0;
            // A shift that has lasted a whole window is the new normal.
            if self.anomalous_run as usize >= config.window {
                self.learn(x, config);
            }
        } else {
            self.normal_run += 1;
            self.anomalous_run = 0;
            if !recurring {
                self.learn(x, config);
            }
        }
        if !self.firing && self.anomalous_run >= config.consecutive {
            self.firing = true;
        } else if self.firing && self.normal_run >= config.resolve_after {
            self.firing = false;
        }
        Judgement {
            value: x,
            baseline: Some(med),
            score: Some(robust),
            anomalous,
            firing: self.firing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of normal noise (xorshift and Box-Muller).
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// The evaluator's floor for request rates.
    const RATE_FLOOR: Floor = Floor {
        relative: 0.1,
        absolute: 0.5,
    };
    const ERROR_FLOOR: Floor = Floor {
        relative: 0.0,
        absolute: 0.01,
    };

    #[test]
    fn stationary_noise_fires_nothing_over_an_hour_of_windows() {
        let config = AnomalyConfig::default();
        for seed in 1..=50u64 {
            let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut rate = Detector::new(Direction::Both, RATE_FLOOR);
            let mut errors = Detector::new(Direction::Up, ERROR_FLOOR);
            // An hour of 10-second windows: ~100 calls/s ± 10%, ~1% errors.
            for i in 0..360 {
                let r = rate.observe(100.0 + 10.0 * noise.normal(), &config);
                let calls = 1000.0;
                let failed = (10.0 + 3.0 * noise.normal()).max(0.0).round();
                let e = errors.observe_share(failed / calls, Some(1000), &config);
                assert!(
                    !r.firing && !e.firing,
                    "seed {seed}, window {i}: {r:?} {e:?}"
                );
            }
        }
    }

    #[test]
    fn a_step_fires_within_a_few_windows_and_recovery_resolves() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(42);
        let mut errors = Detector::new(Direction::Up, ERROR_FLOOR);
        // A minute of steady traffic at ~0.5% errors...
        for _ in 0..6 {
            let j = errors.observe((0.005 + 0.002 * noise.normal()).max(0.0), &config);
            assert!(!j.firing);
        }
        // ...then half the calls fail.
        let fired_at = (0..3).find(|_| errors.observe(0.5 + 0.02 * noise.normal(), &config).firing);
        assert_eq!(fired_at, Some(0));
        let j = errors.observe(0.55, &config);
        assert!(j.firing && j.anomalous);
        assert!(j.baseline.unwrap_or(1.0) < 0.02, "{j:?}");
        // Back to normal: resolved after `resolve_after` normal windows.
        assert!(errors.observe(0.004, &config).firing);
        assert!(!errors.observe(0.006, &config).firing);
    }

    #[test]
    fn a_busy_service_from_half_a_percent_to_nine_fires() {
        let config = AnomalyConfig::default();
        for seed in 1..=20u64 {
            let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut errors = Detector::new(Direction::Up, ERROR_FLOOR);
            // 400 calls an interval at ~0.5% errors, then 9%.
            let share = |p: f64, noise: &mut Noise| {
                let sd = binomial_spread(p, 400);
                ((p + sd * noise.normal()) * 400.0).round().max(0.0) / 400.0
            };
            for _ in 0..12 {
                let x = share(0.005, &mut noise);
                assert!(!errors.observe_share(x, Some(400), &config).firing);
            }
            let x = share(0.09, &mut noise);
            let j = errors.observe_share(x, Some(400), &config);
            assert!(j.firing, "seed {seed}: {j:?}");
        }
    }

    #[test]
    fn a_quiet_service_with_chance_failures_does_not_flap() {
        let config = AnomalyConfig::default();
        let mut episodes = 0;
        for seed in 1..=50u64 {
            let mut noise = Noise(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut errors = Detector::new(Direction::Up, ERROR_FLOOR);
            let mut in_hour = 0;
            let mut was_firing = false;
            // An hour of intervals of 10 to 30 calls, each failing 2% of the time: one
            // or two failures in an interval are common, and no anomaly.
            for _ in 0..360 {
                let calls = 10 + (noise.uniform() * 21.0) as u64;
                let failed = (0..calls).filter(|_| noise.uniform() < 0.02).count();
                let j = errors.observe_share(failed as f64 / calls as f64, Some(calls), &config);
                if j.firing && !was_firing {
                    in_hour += 1;
                }
                was_firing = j.firing;
            }
            assert!(in_hour <= 1, "seed {seed}: {in_hour} alerts in an hour");
            episodes += in_hour;
        }
        // Five failures in twenty-odd calls (a chance of about 1 in 5,000 an interval)
        // may fire: a few times in fifty hours, never a flapping alert.
        assert!(episodes <= 5, "{episodes} alerts in 50 hours");
    }

    #[test]
    fn warm_up_and_direction_are_respected() {
        let config = AnomalyConfig::default();
        let mut latency = Detector::new(
            Direction::Up,
            Floor {
                relative: 0.2,
                absolute: 1.0,
            },
        );
        for _ in 0..config.min_samples - 1 {
            latency.observe(100.0, &config);
        }
        // Still warming up: even a huge value does not fire (it takes a while to fade
        // from the weighted variance).
        assert!(!latency.observe(10_000.0, &config).firing);
        for _ in 0..config.window {
            latency.observe(100.0, &config);
        }
        // Faster is not an anomaly for latency...
        assert!(!latency.observe(1.0, &config).firing);
        // ...slower is.
        assert!(latency.observe(1_000.0, &config).firing);
    }

    #[test]
    fn a_long_shift_becomes_the_new_normal() {
        let config = AnomalyConfig::default();
        let mut rate = Detector::new(Direction::Both, RATE_FLOOR);
        for _ in 0..10 {
            rate.observe(100.0, &config);
        }
        let firing: Vec<bool> = (0..80)
            .map(|_| rate.observe(300.0, &config).firing)
            .collect();
        assert!(firing[0]);
        assert!(
            !firing[79],
            "still firing after a shift that lasted 80 windows"
        );
    }

    #[test]
    fn a_regular_bursty_service_pages_once_and_a_bigger_burst_or_an_outage_still_fires() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(7);
        let mut rate = Detector::new(Direction::Both, RATE_FLOOR).tolerating_recurrence();
        // A cron wakes the service every 2, 5 and then 10 minutes (10 s intervals),
        // for two hours each.
        for period in [12, 30, 60] {
            let mut plain = Detector::new(Direction::Both, RATE_FLOOR);
            let (mut pages, mut plain_pages) = (0, 0);
            let (mut was, mut plain_was) = (false, false);
            for i in 0..720 {
                let x = if i % period == period - 1 {
                    200.0
                } else {
                    20.0
                } + noise.normal();
                let j = rate.observe(x, &config);
                pages += usize::from(j.firing && !was);
                was = j.firing;
                let p = plain.observe(x, &config);
                plain_pages += usize::from(p.firing && !plain_was);
                plain_was = p.firing;
            }
            assert!(
                pages <= 1,
                "every {period}: {pages} pages for a regular burst"
            );
            assert!(
                plain_pages >= 720 / period - 1,
                "every {period}, without tolerance: {plain_pages} pages"
            );
        }
        // A burst five times the usual is new.
        for _ in 0..5 {
            rate.observe(20.0 + noise.normal(), &config);
        }
        assert!(rate.observe(1_000.0, &config).firing);
        for _ in 0..3 {
            rate.observe(20.0 + noise.normal(), &config);
        }
        assert!(!rate.firing());
        // The service stops: a drop the bursts never showed, and it keeps firing.
        let firing: Vec<bool> = (0..10).map(|_| rate.observe(0.0, &config).firing).collect();
        assert!(firing.iter().all(|f| *f), "{firing:?}");
    }
}
