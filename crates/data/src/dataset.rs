//! Datasets: the [`Dataset`] trait (map-style), [`IterableDataset`], [`TensorDataset`],
//! [`Subset`], [`ConcatDataset`] and [`random_split`].

use crate::sampler::permutation;
use ember_autograd::{Error, Result, Tensor};
use std::sync::Arc;

/// A map-style dataset: `len` samples, each a list of tensors (e.g. `[image, label]`).
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Sample `index` (`0 <= index < len`).
    fn get(&self, index: usize) -> Result<Vec<Tensor>>;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A whole batch at once, already stacked along a new dim 0, for datasets that can do it faster
    /// than one `get` per sample (e.g. [`TensorDataset`] with one `index_select` per tensor).
    /// `None` means: not supported, collate samples one by one.
    fn get_batch(&self, _indices: &[usize]) -> Option<Result<Vec<Tensor>>> {
        None
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        (**self).get(index)
    }
    fn get_batch(&self, indices: &[usize]) -> Option<Result<Vec<Tensor>>> {
        (**self).get_batch(indices)
    }
}

/// A stream of samples with no random access (`torch.utils.data.IterableDataset`).
pub trait IterableDataset: Send + Sync {
    /// A fresh pass over the samples.
    fn iter(&self) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_>;

    /// The items of a fresh pass that one loading worker needs: the stream positions `p` with
    /// `shard.owns(p)`, in order (PyTorch leaves sharding to the dataset via `get_worker_info`).
    /// The default runs the whole stream and skips the other workers' items; override it when
    /// the dataset can seek (e.g. to skip whole files), so skipped items cost nothing.
    fn iter_shard(&self, shard: crate::shard::ShardInfo) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_> {
        crate::shard::skip_to_shard(self.iter(), shard)
    }
}

fn check_index(op: &str, index: usize, len: usize) -> Result<()> {
    if index >= len {
        return Err(Error::invalid(op, format!("index {index} out of range for dataset of length {len}")));
    }
    Ok(())
}

/// Samples are rows (dim 0) of the given tensors, which must agree in their first dim.
#[derive(Clone)]
pub struct TensorDataset {
    tensors: Vec<Tensor>,
}

impl TensorDataset {
    /// Wraps tensors with equal first dims.
    pub fn new(tensors: Vec<Tensor>) -> Result<Self> {
        let n = tensors.first().map(|t| t.shape().first().copied().unwrap_or(0));
        if tensors.is_empty() || tensors.iter().any(|t| t.ndim() == 0 || Some(t.shape()[0]) != n) {
            let shapes: Vec<_> = tensors.iter().map(|t| t.shape().to_vec()).collect();
            return Err(Error::shape("TensorDataset", format!("tensors must share their first dim, got {shapes:?}")));
        }
        Ok(TensorDataset { tensors })
    }

    /// The wrapped tensors.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.tensors[0].shape()[0]
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        check_index("TensorDataset", index, self.len())?;
        self.tensors.iter().map(|t| t.select(0, index as isize)).collect()
    }
    fn get_batch(&self, indices: &[usize]) -> Option<Result<Vec<Tensor>>> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Some(check_index("TensorDataset", bad, n).map(|_| vec![]));
        }
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        Some(
            Tensor::from_vec(idx, [indices.len()])
                .and_then(|idx| self.tensors.iter().map(|t| t.index_select(0, &idx)).collect::<Result<Vec<_>>>()),
        )
    }
}

/// The samples of `dataset` at `indices`.
pub struct Subset<D> {
    /// The underlying dataset.
    pub dataset: D,
    /// Indices into it.
    pub indices: Vec<usize>,
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        check_index("Subset", index, self.len())?;
        self.dataset.get(self.indices[index])
    }
    fn get_batch(&self, indices: &[usize]) -> Option<Result<Vec<Tensor>>> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.indices.len()) {
            return Some(check_index("Subset", bad, self.indices.len()).map(|_| vec![]));
        }
        let mapped: Vec<usize> = indices.iter().map(|&i| self.indices[i]).collect();
        self.dataset.get_batch(&mapped)
    }
}

/// Datasets one after another.
pub struct ConcatDataset {
    parts: Vec<Box<dyn Dataset>>,
}

impl ConcatDataset {
    /// Concatenates the parts.
    pub fn new(parts: Vec<Box<dyn Dataset>>) -> Self {
        ConcatDataset { parts }
    }
}

impl Dataset for ConcatDataset {
    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
    fn get(&self, mut index: usize) -> Result<Vec<Tensor>> {
        check_index("ConcatDataset", index, self.len())?;
        for p in &self.parts {
            if index < p.len() {
                return p.get(index);
            }
            index -= p.len();
        }
        unreachable!("index checked against the total length")
    }
}

/// Splits `dataset` into random disjoint subsets of the given lengths (which must sum to its
/// length), reproducibly for a `seed`.
pub fn random_split<D: Dataset + Clone>(dataset: D, lengths: &[usize], seed: u64) -> Result<Vec<Subset<D>>> {
    let total: usize = lengths.iter().sum();
    if total != dataset.len() {
        return Err(Error::invalid(
            "random_split",
            format!("lengths {lengths:?} sum to {total}, the dataset has {}", dataset.len()),
        ));
    }
    let perm = permutation(total, seed);
    let mut start = 0;
    Ok(lengths
        .iter()
        .map(|&n| {
            let s = Subset { dataset: dataset.clone(), indices: perm[start..start + n].to_vec() };
            start += n;
            s
        })
        .collect())
}
