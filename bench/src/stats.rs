//! Latency histograms: log-linear buckets (64 per power of two, so any value
//! is known within 1.6 %), a fixed array, no allocation per record, and a
//! compact text form so the client processes can ship theirs to the
//! coordinator, which merges them. Values are nanoseconds.
//!
//! Owns nothing but numbers: no clocks, no I/O.

use serde::Serialize;

/// Values below this are their own bucket.
const LINEAR: u64 = 128;
/// Buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 6;
/// Enough buckets for any `u64`.
const BUCKETS: usize = ((63 - SUB_BITS as usize) << SUB_BITS) + 128;

/// See the module documentation.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    ((shift as usize) << SUB_BITS) + (v >> shift) as usize
}

/// The middle of bucket `i`.
fn value_of(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let m = ((i & ((1 << SUB_BITS) - 1)) as u64) | (1 << SUB_BITS);
    (m << shift) + ((1u64 << shift) >> 1)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        if v > self.max {
            self.max = v;
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }

    /// `idx:count,idx:count,...` of the non-empty buckets, then `;max`;
    /// `-` when empty.
    pub fn encode(&self) -> String {
        if self.total == 0 {
            return "-".into();
        }
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(&format!("{i}:{c}"));
            }
        }
        s.push_str(&format!(";{}", self.max));
        s
    }

    pub fn decode(s: &str) -> Option<Histogram> {
        let mut h = Histogram::new();
        if s == "-" {
            return Some(h);
        }
        let (pairs, max) = s.split_once(';')?;
        for p in pairs.split(',') {
            let (i, c) = p.split_once(':')?;
            let (i, c): (usize, u64) = (i.parse().ok()?, c.parse().ok()?);
            *h.counts.get_mut(i)? += c;
            h.total += c;
        }
        h.max = max.parse().ok()?;
        Some(h)
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |ns: u64| ns as f64 / 1e6;
        Summary {
            count: self.count(),
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
        }
    }
}

/// What a latency histogram is reported as.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            1 << 20,
            123_456_789,
            u64::MAX / 3,
        ] {
            let i = index(v);
            assert!(i >= prev);
            prev = i;
            let back = value_of(i);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.016, "{v} -> {back}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_and_round_trip() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02);
        let back = Histogram::decode(&h.encode()).unwrap();
        assert_eq!(back.count(), 1000);
        assert_eq!(back.quantile(0.99), h.quantile(0.99));
        assert_eq!(Histogram::decode("-").unwrap().count(), 0);
    }
}
