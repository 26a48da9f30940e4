//! The latency histogram every load records into.

use std::time::Duration;

/// Latencies in nanoseconds, in buckets 1/128 of a power of two wide: percentiles are
/// within 0.8% of the exact value, in constant memory.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

const SUB_BUCKET_BITS: u32 = 7;
/// Latencies are capped at 2^40 ns (about 18 minutes).
const MAX_EXPONENT: u32 = 40;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let buckets = ((MAX_EXPONENT - SUB_BUCKET_BITS + 1) << SUB_BUCKET_BITS) as usize;
        Self {
            counts: vec![0; buckets],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        let ns = ns.min((1 << MAX_EXPONENT) - 1);
        if ns < (1 << SUB_BUCKET_BITS) {
            return ns as usize;
        }
        let exponent = 63 - ns.leading_zeros();
        let shift = exponent - SUB_BUCKET_BITS;
        let mantissa = (ns >> shift) as usize - (1 << SUB_BUCKET_BITS);
        (((shift + 1) as usize) << SUB_BUCKET_BITS) + mantissa
    }

    /// The largest value that falls in bucket `index`.
    fn highest(index: usize) -> u64 {
        let octave = (index >> SUB_BUCKET_BITS) as u32;
        if octave == 0 {
            return index as u64;
        }
        let shift = octave - 1;
        let mantissa = (index as u64 & ((1 << SUB_BUCKET_BITS) - 1)) + (1 << SUB_BUCKET_BITS);
        ((mantissa + 1) << shift) - 1
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency `quantile` (0.0-1.0) of the recorded ones were at or under.
    pub fn percentile(&self, quantile: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(Self::highest(index).min(self.max_ns));
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        match self.total {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum_ns / u128::from(n)) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_continuous_and_tight() {
        let check = |ns: u64| {
            let index = LatencyHistogram::index(ns);
            let highest = LatencyHistogram::highest(index);
            assert!(highest >= ns, "{ns} -> {index} -> {highest}");
            assert!(
                highest as f64 <= ns as f64 * 1.008 + 1.0,
                "{ns} -> {highest}"
            );
            index
        };
        let mut previous = 0;
        for ns in 0..100_000u64 {
            let index = check(ns);
            assert!(
                index == previous || index == previous + 1,
                "{ns} -> {index}"
            );
            previous = index;
        }
        for exponent in 17..MAX_EXPONENT {
            for ns in [
                (1u64 << exponent) - 1,
                1 << exponent,
                (1 << exponent) + 12_345,
            ] {
                check(ns);
            }
        }
        let top = LatencyHistogram::index(u64::MAX);
        assert_eq!(top, LatencyHistogram::new().counts.len() - 1);
    }

    #[test]
    fn percentiles() {
        let mut histogram = LatencyHistogram::new();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let near = |d: Duration, micros: f64| {
            let got = d.as_secs_f64() * 1e6;
            (got - micros).abs() <= micros * 0.008 + 0.001
        };
        assert!(near(histogram.percentile(0.5), 500.0));
        assert!(near(histogram.percentile(0.99), 990.0));
        assert_eq!(histogram.max(), Duration::from_micros(1000));
        assert_eq!(histogram.count(), 1000);
        let mut other = LatencyHistogram::new();
        other.record(Duration::from_secs(2));
        histogram.merge(&other);
        assert_eq!(histogram.percentile(1.0), Duration::from_secs(2));
    }
}
