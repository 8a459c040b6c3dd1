//! Philox-4x32-10, a counter-based generator: value `i` depends only on (seed, offset + i), never on threads.

use crate::threading::pool;
use ember_storage::{RngKey, RngOp};
use rayon::prelude::*;

const M0: u64 = 0xD251_1F53;
const M1: u64 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Four 32-bit random words for one counter value.
#[inline]
pub fn philox(seed: u64, counter: u64) -> [u32; 4] {
    let mut c = [counter as u32, (counter >> 32) as u32, 0, 0];
    let mut k = [seed as u32, (seed >> 32) as u32];
    for _ in 0..10 {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// A uniform in [0, 1) with 53 random bits.
#[inline]
fn unit(hi: u32, lo: u32) -> f64 {
    (((hi as u64) << 21) ^ (lo as u64 >> 11)) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n` values of the distribution, each computed in f64 and converted by `to` into a pooled vector
/// (no f64 intermediate the size of the output).
pub(crate) fn sample_as<T: Copy + Default + Send + 'static>(
    op: RngOp,
    n: usize,
    key: RngKey,
    to: impl Fn(f64) -> T + Sync,
) -> Vec<T> {
    let mut out: Vec<T> = crate::pool::take(n);
    let f = |(i, o): (usize, &mut T)| {
        let w = philox(key.seed, key.offset.wrapping_add(i as u64));
        *o = to(match op {
            RngOp::Uniform { low, high } => low + (high - low) * unit(w[0], w[1]),
            RngOp::Normal { mean, std } => {
                let u1 = 1.0 - unit(w[0], w[1]); // (0, 1]
                let u2 = unit(w[2], w[3]);
                mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            }
            RngOp::Bernoulli { p, value } => {
                if unit(w[0], w[1]) < p {
                    value
                } else {
                    0.0
                }
            }
        });
    };
    if n >= 1 << 14 {
        pool().install(|| out.par_iter_mut().enumerate().for_each(f));
    } else {
        out.iter_mut().enumerate().for_each(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(op: RngOp, n: usize, key: RngKey) -> Vec<f64> {
        sample_as(op, n, key, |v| v)
    }

    #[test]
    fn philox_known_answer() {
        // Random123's known-answer test for philox4x32-10 with zero counter and key.
        let w = philox(0, 0);
        assert_eq!(w, [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
    }

    #[test]
    fn moments_are_right() {
        let u = sample(RngOp::Uniform { low: 0.0, high: 1.0 }, 100_000, RngKey { seed: 7, offset: 0 });
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.01 && u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let z = sample(RngOp::Normal { mean: 0.0, std: 1.0 }, 100_000, RngKey { seed: 7, offset: 0 });
        let m = z.iter().sum::<f64>() / z.len() as f64;
        let v = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / z.len() as f64;
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.02, "{m} {v}");
    }

    /// Bernoulli draws are `value` exactly where the uniform draws of the same key fall below `p`.
    #[test]
    fn bernoulli_follows_the_uniform_draws() {
        let key = RngKey { seed: 11, offset: 5 };
        let u = sample(RngOp::Uniform { low: 0.0, high: 1.0 }, 50_000, key);
        let b = sample(RngOp::Bernoulli { p: 0.7, value: 2.5 }, 50_000, key);
        assert!(u.iter().zip(&b).all(|(&u, &b)| b == if u < 0.7 { 2.5 } else { 0.0 }));
        let kept = b.iter().filter(|&&v| v != 0.0).count() as f64 / b.len() as f64;
        assert!((kept - 0.7).abs() < 0.01, "{kept}");
    }
}
