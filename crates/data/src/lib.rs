//! # ember-data
//!
//! PyTorch's `torch.utils.data` for Ember: [`Dataset`]s, samplers (sequential, random, weighted,
//! distributed shards), a [`DataLoader`] and an [`IterableDataLoader`] with background workers
//! whose batch order does not depend on the number of workers, image [`transforms`], and readers
//! for MNIST's IDX files (raw or gzip), CSV and `.npy`; torchvision's `make_grid`/`save_image`.
#![warn(missing_docs)]

mod dataset;
mod idx;
mod image;
mod loader;
pub mod sampler;
mod shard;
mod stream_loader;
mod tabular;
pub mod transforms;

pub use dataset::{random_split, ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset};
pub use idx::{parse_idx_u8, Mnist};
pub use image::{make_grid, save_image, save_image_with, GridOptions};
pub use loader::{default_collate, BatchIter, CollateFn, DataLoader, LoaderOptions};
pub use sampler::{BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler};
pub use shard::{skip_to_shard, ShardInfo};
pub use stream_loader::{iterable_batches, IterableDataLoader, StreamBatchIter};
pub use tabular::{csv_dataset, npy_dataset, read_csv};
