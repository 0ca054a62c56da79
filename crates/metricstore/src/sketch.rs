//! Percentiles without keeping every value: a relative-error sketch (as
//! DDSketch): each value falls in a logarithmic bucket whose bounds are
//! within 1% of each other, and buckets only count. Two sketches merge by
//! adding counts, so per-second buckets roll up into minutes and hours
//! exactly as the counts, sums and extremes do.

use std::collections::BTreeMap;

/// The relative accuracy of an answered percentile.
const ALPHA: f64 = 0.01;

fn gamma_ln() -> f64 {
    ((1.0 + ALPHA) / (1.0 - ALPHA)).ln()
}

/// Counts of values by logarithmic bucket, for positive and negative
/// values apart, and of zeros.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    pub(crate) positive: BTreeMap<i16, f64>,
    pub(crate) negative: BTreeMap<i16, f64>,
    pub(crate) zero: f64,
}

fn index(magnitude: f64) -> i16 {
    // CloudWatch bounds values to ±2^360, so indexes stay within ±12,500.
    let i = (magnitude.ln() / gamma_ln()).ceil();
    i.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// The value a bucket stands for: the middle of its bounds, in relative
/// terms.
fn representative(i: i16) -> f64 {
    let g = gamma_ln();
    2.0 * (f64::from(i) * g).exp() / (1.0 + g.exp())
}

impl Sketch {
    /// `count` occurrences of `value`.
    pub fn add(&mut self, value: f64, count: f64) {
        if count <= 0.0 {
            return;
        }
        if value == 0.0 {
            self.zero += count;
        } else if value > 0.0 {
            *self.positive.entry(index(value)).or_default() += count;
        } else {
            *self.negative.entry(index(-value)).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (i, c) in &other.positive {
            *self.positive.entry(*i).or_default() += c;
        }
        for (i, c) in &other.negative {
            *self.negative.entry(*i).or_default() += c;
        }
        self.zero += other.zero;
    }

    pub fn count(&self) -> f64 {
        self.zero + self.positive.values().sum::<f64>() + self.negative.values().sum::<f64>()
    }

    /// The value below which `q` (0..=1) of the values fall, within 1%.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * (total - 1.0);
        let mut seen = 0.0;
        // From the most negative (largest magnitude) up.
        for (i, c) in self.negative.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-representative(*i));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in &self.positive {
            seen += c;
            if seen > rank {
                return Some(representative(*i));
            }
        }
        self.positive.keys().next_back().map(|i| representative(*i))
    }

    /// The count of values at or below `limit` (for PR(:limit)-style
    /// questions), within the sketch's accuracy.
    pub fn count_at_most(&self, limit: f64) -> f64 {
        let mut n = 0.0;
        for (i, c) in &self.negative {
            if -representative(*i) <= limit {
                n += c;
            }
        }
        if limit >= 0.0 {
            n += self.zero;
        }
        for (i, c) in &self.positive {
            if representative(*i) <= limit {
                n += c;
            }
        }
        n
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.zero.to_le_bytes());
        for part in [&self.positive, &self.negative] {
            out.extend_from_slice(&(part.len() as u16).to_le_bytes());
            for (i, c) in part {
                out.extend_from_slice(&i.to_le_bytes());
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
    }

    pub(crate) fn decode(r: &mut crate::codec::Reader<'_>) -> Option<Sketch> {
        let zero = r.f64()?;
        let mut parts = [BTreeMap::new(), BTreeMap::new()];
        for part in &mut parts {
            let n = r.u16()?;
            for _ in 0..n {
                let i = r.i16()?;
                let c = r.f64()?;
                part.insert(i, c);
            }
        }
        let [positive, negative] = parts;
        Some(Sketch {
            positive,
            negative,
            zero,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_and_survive_merging() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for v in 1..=500 {
            a.add(f64::from(v), 1.0);
        }
        for v in 501..=1000 {
            b.add(f64::from(v), 1.0);
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000.0);
        for (q, want) in [
            (0.5, 500.0),
            (0.9, 900.0),
            (0.99, 990.0),
            (0.0, 1.0),
            (1.0, 1000.0),
        ] {
            let got = a.quantile(q).expect("values");
            assert!(
                (got - want).abs() / want <= 0.011,
                "p{q}: {got} against {want}"
            );
        }
        let mut mixed = Sketch::default();
        mixed.add(-10.0, 1.0);
        mixed.add(0.0, 2.0);
        mixed.add(10.0, 1.0);
        assert!((mixed.quantile(0.0).expect("v") + 10.0).abs() < 0.2);
        assert_eq!(mixed.quantile(0.5), Some(0.0));
        assert!((mixed.quantile(1.0).expect("v") - 10.0).abs() < 0.2);
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}
