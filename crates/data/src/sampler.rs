//! Samplers: the order in which a [`crate::DataLoader`] visits indices. All randomness comes from
//! a seed and the epoch number, so an order can be reproduced exactly (any number of workers).

use ember_autograd::{Error, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A reproducible random permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    v
}

/// Mixes a seed and an epoch into one seed.
pub(crate) fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// An order of dataset indices for each epoch.
pub trait Sampler: Send + Sync {
    /// The indices visited in `epoch`.
    fn indices(&self, epoch: u64) -> Vec<usize>;
}

/// `0, 1, ..., n-1`.
pub struct SequentialSampler {
    /// Dataset length.
    pub n: usize,
}

impl Sampler for SequentialSampler {
    fn indices(&self, _epoch: u64) -> Vec<usize> {
        (0..self.n).collect()
    }
}

/// A fresh permutation per epoch (or `num_samples` draws with replacement).
pub struct RandomSampler {
    /// Dataset length.
    pub n: usize,
    /// Seed of epoch 0.
    pub seed: u64,
    /// Draw with replacement.
    pub replacement: bool,
    /// Samples per epoch (default `n`).
    pub num_samples: Option<usize>,
}

impl Sampler for RandomSampler {
    fn indices(&self, epoch: u64) -> Vec<usize> {
        let seed = epoch_seed(self.seed, epoch);
        let count = self.num_samples.unwrap_or(self.n);
        if self.replacement {
            if self.n == 0 {
                return vec![]; // nothing to draw from (index 0 would be out of range)
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..count).map(|_| rng.random_range(0..self.n.max(1))).collect()
        } else {
            let mut v = permutation(self.n, seed);
            v.truncate(count);
            v
        }
    }
}

/// Draws indices with probabilities proportional to `weights`.
pub struct WeightedRandomSampler {
    cumulative: Vec<f64>,
    /// Draws per epoch.
    pub num_samples: usize,
    /// Draw with replacement (without: each index at most once).
    pub replacement: bool,
    /// Seed of epoch 0.
    pub seed: u64,
}

impl WeightedRandomSampler {
    /// Weights must be non-negative, finite and not all zero.
    pub fn new(weights: &[f64], num_samples: usize, replacement: bool, seed: u64) -> Result<Self> {
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(Error::invalid("WeightedRandomSampler", "weights must be finite, non-negative, not all zero"));
        }
        if !replacement && num_samples > weights.iter().filter(|w| **w > 0.0).count() {
            return Err(Error::invalid("WeightedRandomSampler", "too many samples to draw without replacement"));
        }
        let mut acc = 0.0;
        let cumulative = weights.iter().map(|w| {
            acc += w;
            acc
        });
        Ok(WeightedRandomSampler { cumulative: cumulative.collect(), num_samples, replacement, seed })
    }
}

impl Sampler for WeightedRandomSampler {
    fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(epoch_seed(self.seed, epoch));
        let mut cum = self.cumulative.clone();
        let mut out = Vec::with_capacity(self.num_samples);
        while out.len() < self.num_samples {
            let total = *cum.last().unwrap_or(&0.0);
            let u = rng.random::<f64>() * total;
            let i = cum.partition_point(|&c| c <= u).min(cum.len() - 1);
            out.push(i);
            if !self.replacement {
                // remove index i's weight from every later prefix sum
                let w = cum[i] - if i == 0 { 0.0 } else { cum[i - 1] };
                cum[i..].iter_mut().for_each(|c| *c -= w);
            }
        }
        out
    }
}

/// One shard of the indices for data-parallel training (`DistributedSampler`): replica `rank` of
/// `num_replicas` gets every `num_replicas`-th index of the (optionally shuffled) order, padded by
/// wrapping around so all replicas get the same count (or trimmed with `drop_last`).
pub struct DistributedSampler {
    /// Dataset length.
    pub n: usize,
    /// Number of replicas.
    pub num_replicas: usize,
    /// This replica.
    pub rank: usize,
    /// Shuffle per epoch.
    pub shuffle: bool,
    /// Seed shared by all replicas.
    pub seed: u64,
    /// Drop the tail instead of padding.
    pub drop_last: bool,
}

impl DistributedSampler {
    /// Checks `rank < num_replicas`.
    pub fn new(n: usize, num_replicas: usize, rank: usize, shuffle: bool, seed: u64) -> Result<Self> {
        if num_replicas == 0 || rank >= num_replicas {
            return Err(Error::invalid(
                "DistributedSampler",
                format!("rank {rank} out of range for {num_replicas} replicas"),
            ));
        }
        Ok(DistributedSampler { n, num_replicas, rank, shuffle, seed, drop_last: false })
    }
}

impl Sampler for DistributedSampler {
    fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order =
            if self.shuffle { permutation(self.n, epoch_seed(self.seed, epoch)) } else { (0..self.n).collect() };
        let per = if self.drop_last { self.n / self.num_replicas } else { self.n.div_ceil(self.num_replicas) };
        let total = per * self.num_replicas;
        if total > order.len() && !order.is_empty() {
            let extra: Vec<usize> = order.iter().cycle().take(total - order.len()).copied().collect();
            order.extend(extra);
        }
        order.truncate(total);
        order.into_iter().skip(self.rank).step_by(self.num_replicas).collect()
    }
}

/// Groups a sampler's indices into batches.
pub struct BatchSampler<S> {
    /// The index order.
    pub sampler: S,
    /// Indices per batch.
    pub batch_size: usize,
    /// Drop a last incomplete batch.
    pub drop_last: bool,
}

impl<S: Sampler> BatchSampler<S> {
    /// The batches of `epoch`.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let idx = self.sampler.indices(epoch);
        let bs = self.batch_size.max(1);
        idx.chunks(bs).filter(|c| !self.drop_last || c.len() == bs).map(|c| c.to_vec()).collect()
    }
}
