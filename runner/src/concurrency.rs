//! Adaptive landing concurrency, as vector's adaptive request concurrency does it: add one
//! permit after a landing whose latency stayed near the baseline, cut the limit by a factor
//! on throttling, on a failure or on a latency spike. Consumer lag is the demand signal on
//! top: the limit may only grow up to a ceiling that rises with the lag.
//!
//! Everything here is a pure function of its inputs; the pipeline feeds it observations.

use crate::config::ConcurrencyConfig;
use std::time::Duration;

/// A landing is a spike when it takes this many times the baseline.
const SPIKE_FACTOR: f64 = 2.0;
/// The multiplicative decrease.
const DECREASE_FACTOR: f64 = 0.5;
/// Weight of a new sample in the latency baseline (exponentially weighted mean).
const EWMA_WEIGHT: f64 = 0.1;

/// What one landing looked like, for the limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// It committed in `latency` and the SDK retried nothing in the meantime.
    Ok(Duration),
    /// It committed, but the SDK retried requests (throttling or 5xx) along the way.
    Retried(Duration),
    /// It was throttled (S3 SlowDown, DynamoDB throughput exceeded) or failed.
    Throttled,
}

/// The adaptive limit.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    min: usize,
    max: usize,
    lag_per_permit: u64,
    limit: f64,
    ceiling: usize,
    baseline: Option<f64>,
}

impl AdaptiveLimit {
    /// Starts at `initial`, with no lag yet (ceiling = `max` until lag is known).
    pub fn new(config: &ConcurrencyConfig) -> Self {
        Self {
            min: config.min,
            max: config.max,
            lag_per_permit: config.lag_per_permit,
            limit: config.initial as f64,
            ceiling: config.max,
            baseline: None,
        }
    }

    /// Landings that may run at once now.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.min, self.ceiling.max(self.min))
    }

    /// The ceiling the lag allows.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// The latency baseline, if any landing has been observed.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// Sets the ceiling from the total lag (records behind the high watermarks): `min` plus
    /// one permit per `lag_per_permit` lagging records, at most `max`. A limit above a new,
    /// lower ceiling comes down with it.
    pub fn set_lag(&mut self, lag_records: u64) {
        let extra =
            usize::try_from(lag_records.div_ceil(self.lag_per_permit)).unwrap_or(usize::MAX);
        self.ceiling = self.min.saturating_add(extra).min(self.max);
        if self.limit > self.ceiling as f64 {
            self.limit = self.ceiling as f64;
        }
    }

    /// Feeds one landing's result.
    pub fn observe(&mut self, observation: Observation) {
        match observation {
            Observation::Ok(latency) => {
                let secs = latency.as_secs_f64();
                match self.baseline {
                    Some(base) if secs > base * SPIKE_FACTOR => self.decrease(),
                    _ => {
                        // Additive increase: one permit per `limit` good landings.
                        self.limit = (self.limit + 1.0 / self.limit.floor().max(1.0))
                            .min(self.ceiling.max(self.min) as f64);
                    }
                }
                self.baseline = Some(match self.baseline {
                    None => secs,
                    Some(base) => base + EWMA_WEIGHT * (secs - base),
                });
            }
            Observation::Retried(_) | Observation::Throttled => self.decrease(),
        }
    }

    fn decrease(&mut self) {
        self.limit = (self.limit * DECREASE_FACTOR).max(self.min as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: usize, max: usize, initial: usize) -> ConcurrencyConfig {
        ConcurrencyConfig {
            min,
            max,
            initial,
            lag_per_permit: 100,
            lag_ms_per_permit: 1_000,
        }
    }

    #[test]
    fn a_lag_in_milliseconds_counts_its_own_unit_per_permit() {
        let mut records = AdaptiveLimit::new(&config(1, 16, 1));
        // The floor plus one permit per 100 records or per 1,000 ms.
        let mut millis = AdaptiveLimit::new(&config(1, 16, 1).for_lag_in_millis());
        // 3,000 of either: 30 permits' worth of records (capped at 16), 3 of milliseconds.
        records.set_lag(3_000);
        millis.set_lag(3_000);
        assert_eq!(records.ceiling(), 16);
        assert_eq!(millis.ceiling(), 1 + 3);
        millis.set_lag(1_000);
        assert_eq!(millis.ceiling(), 1 + 1);
    }

    #[test]
    fn grows_one_permit_at_a_time_while_latency_is_normal() {
        let mut l = AdaptiveLimit::new(&config(1, 8, 2));
        assert_eq!(l.limit(), 2);
        // Two good landings at limit 2 add one permit.
        l.observe(Observation::Ok(Duration::from_millis(100)));
        assert_eq!(l.limit(), 2);
        l.observe(Observation::Ok(Duration::from_millis(100)));
        assert_eq!(l.limit(), 3);
        for _ in 0..100 {
            l.observe(Observation::Ok(Duration::from_millis(100)));
        }
        assert_eq!(l.limit(), 8, "never above max");
    }

    #[test]
    fn throttling_and_spikes_cut_by_half_down_to_min() {
        let mut l = AdaptiveLimit::new(&config(1, 16, 8));
        l.observe(Observation::Ok(Duration::from_millis(100)));
        let before = l.limit();
        l.observe(Observation::Throttled);
        assert_eq!(l.limit(), before / 2);
        l.observe(Observation::Ok(Duration::from_millis(100)));
        let before = l.limit();
        // 5x the baseline is a spike.
        l.observe(Observation::Ok(Duration::from_millis(500)));
        assert!(l.limit() < before);
        for _ in 0..10 {
            l.observe(Observation::Retried(Duration::from_millis(100)));
        }
        assert_eq!(l.limit(), 1, "never below min");
    }

    #[test]
    fn lag_raises_the_ceiling() {
        let mut l = AdaptiveLimit::new(&config(1, 10, 1));
        l.set_lag(0);
        assert_eq!(l.ceiling(), 1);
        for _ in 0..50 {
            l.observe(Observation::Ok(Duration::from_millis(10)));
        }
        assert_eq!(l.limit(), 1, "no lag, no growth");
        l.set_lag(250);
        assert_eq!(l.ceiling(), 4);
        for _ in 0..50 {
            l.observe(Observation::Ok(Duration::from_millis(10)));
        }
        assert_eq!(l.limit(), 4);
        l.set_lag(1_000_000);
        assert_eq!(l.ceiling(), 10);
        // Lag drains: the limit comes down with the ceiling.
        l.set_lag(50);
        assert_eq!(l.limit(), 2);
    }
}
