//! Sharding a stream between loading workers: which stream positions each worker owns.

use ember_autograd::{Result, Tensor};

/// Which batches of a stream one loading worker builds (see [`crate::IterableDataset::iter_shard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// This worker's index, `0 <= worker < num_workers`.
    pub worker: usize,
    /// Number of workers sharing the stream.
    pub num_workers: usize,
    /// Samples per batch: the worker's items are positions `b*batch_size .. (b+1)*batch_size` of
    /// the stream for every batch `b` with `b % num_workers == worker`.
    pub batch_size: usize,
}

impl ShardInfo {
    /// Whether stream position `position` belongs to this worker.
    pub fn owns(&self, position: usize) -> bool {
        (position / self.batch_size.max(1)) % self.num_workers.max(1) == self.worker
    }
}

/// The items of `dataset`'s full stream that belong to `shard`, found by skipping the others
/// (what [`crate::IterableDataset::iter_shard`] does unless a dataset can seek).
pub fn skip_to_shard<'a>(
    items: Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + 'a>,
    shard: ShardInfo,
) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + 'a> {
    Box::new(items.enumerate().filter(move |(p, _)| shard.owns(*p)).map(|(_, item)| item))
}
