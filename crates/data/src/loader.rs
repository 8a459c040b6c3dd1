//! The [`DataLoader`]: batches from a dataset in a sampler's order, collated into tensors, loaded
//! by `num_workers` background threads with a bounded prefetch queue.
//!
//! Determinism: worker `w` loads batches `w, w + W, w + 2W, ...` and the consumer reads the
//! workers' queues round-robin, so batches arrive in sampler order for any number of workers.
//! A worker's error is delivered as that batch's `Err`. A `Dataset::get` (or collate) that panics
//! is caught: that batch is an `Err` carrying the panic message, and loading continues with the
//! next batch, the same for every `num_workers` (0 included). Dropping the iterator closes the
//! queues, and the workers stop at their next send. An epoch whose index lists cannot be
//! allocated (a dataset of length 2^40), or `batch_size: 0`, yields one `Err` and ends.

use crate::dataset::Dataset;
use crate::sampler::{BatchSampler, RandomSampler, Sampler, SequentialSampler};
use ember_autograd::{Error, Result, Tensor};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Collates samples (each a list of tensors) into one batch (a list of stacked tensors).
pub type CollateFn = dyn Fn(Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> + Send + Sync;

/// Stacks position `k` of every sample along a new dim 0 (PyTorch's default collate for tensors).
pub fn default_collate(samples: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> {
    let Some(first) = samples.first() else {
        return Err(Error::invalid("collate", "empty batch"));
    };
    let k = first.len();
    if samples.iter().any(|s| s.len() != k) {
        return Err(Error::invalid("collate", "samples have different numbers of fields"));
    }
    (0..k)
        .map(|j| {
            let col: Vec<Tensor> = samples.iter().map(|s| s[j].clone()).collect();
            Tensor::stack(&col, 0)
        })
        .collect()
}

/// Options of a [`DataLoader`] (PyTorch's defaults: batch 1, no shuffle, no workers).
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// A new random order each epoch.
    pub shuffle: bool,
    /// Drop a last incomplete batch.
    pub drop_last: bool,
    /// Background loading threads (0 = load in the consumer's thread).
    pub num_workers: usize,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch_factor: usize,
    /// Seed of the shuffle order (epoch `e` uses a seed derived from it and `e`).
    pub seed: u64,
}

impl LoaderOptions {
    /// `DataLoader(dataset, batch_size=, shuffle=)`: the other options at their defaults.
    pub fn new(batch_size: usize, shuffle: bool) -> Self {
        LoaderOptions { batch_size, shuffle, ..Default::default() }
    }
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions { batch_size: 1, shuffle: false, drop_last: false, num_workers: 0, prefetch_factor: 2, seed: 0 }
    }
}

/// Iterates over a dataset in batches.
///
/// ```
/// use ember_autograd::Tensor;
/// use ember_data::{DataLoader, LoaderOptions, TensorDataset};
/// let x = Tensor::arange(10).unwrap().reshape(&[5, 2]).unwrap();
/// let y = Tensor::arange(5).unwrap();
/// let ds = TensorDataset::new(vec![x, y]).unwrap();
/// let loader = DataLoader::new(ds, LoaderOptions { batch_size: 2, num_workers: 2, ..Default::default() });
/// let sizes: Vec<usize> = loader.iter(0).map(|b| b.unwrap()[0].shape()[0]).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// ```
pub struct DataLoader<D> {
    dataset: Arc<D>,
    /// The options.
    pub options: LoaderOptions,
    sampler: Option<Arc<dyn Sampler>>,
    collate: Arc<CollateFn>,
}

impl<D: Dataset + 'static> DataLoader<D> {
    /// A loader over `dataset`.
    pub fn new(dataset: D, options: LoaderOptions) -> Self {
        DataLoader { dataset: Arc::new(dataset), options, sampler: None, collate: Arc::new(default_collate) }
    }

    /// Uses `sampler` for the index order (instead of `shuffle`).
    pub fn with_sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.sampler = Some(Arc::new(sampler));
        self
    }

    /// Uses a custom collate function.
    pub fn with_collate(mut self, f: impl Fn(Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Self {
        self.collate = Arc::new(f);
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The batches (as index lists) of `epoch`.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let n = self.dataset.len();
        let sampler: Arc<dyn Sampler> = match &self.sampler {
            Some(s) => s.clone(),
            None if self.options.shuffle => {
                Arc::new(RandomSampler { n, seed: self.options.seed, replacement: false, num_samples: None })
            }
            None => Arc::new(SequentialSampler { n }),
        };
        BatchSampler {
            sampler: ArcSampler(sampler),
            batch_size: self.options.batch_size,
            drop_last: self.options.drop_last,
        }
        .batches(epoch)
    }

    /// Number of batches per epoch (0 when `batch_size` is 0; computed without listing the indices
    /// unless a custom sampler is set).
    pub fn len(&self) -> usize {
        let bs = self.options.batch_size;
        if bs == 0 {
            return 0;
        }
        match &self.sampler {
            Some(_) => self.batches(0).len(),
            None if self.options.drop_last => self.dataset.len() / bs,
            None => self.dataset.len().div_ceil(bs),
        }
    }

    /// Whether an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an epoch's index lists can be built: a positive batch size, and memory for one index
    /// per sample (checked fallibly, so a huge dataset is an error rather than an abort).
    fn check_epoch(&self) -> Result<()> {
        if self.options.batch_size == 0 {
            return Err(Error::invalid("DataLoader", "batch_size must be positive, got 0"));
        }
        let n = self.dataset.len();
        ember_autograd::alloc::try_with_capacity::<usize>("DataLoader", n.saturating_mul(2)).map(drop)
    }

    /// The batches of `epoch`, in order.
    pub fn iter(&self, epoch: u64) -> BatchIter {
        if let Err(e) = self.check_epoch() {
            return BatchIter { next: 0, total: 1, source: Source::Failed(Some(e)), handles: vec![] };
        }
        let batches = Arc::new(self.batches(epoch));
        let total = batches.len();
        let load = {
            let ds = self.dataset.clone();
            let collate = self.collate.clone();
            move |idx: &[usize]| -> Result<Vec<Tensor>> {
                catch_panic(idx, || match ds.get_batch(idx) {
                    Some(b) => b,
                    None => collate(idx.iter().map(|&i| ds.get(i)).collect::<Result<Vec<_>>>()?),
                })
            }
        };
        let workers = self.options.num_workers;
        if workers == 0 {
            return BatchIter { next: 0, total, source: Source::Inline(batches, Box::new(load)), handles: vec![] };
        }
        let mut queues = vec![];
        let mut handles = vec![];
        let load = Arc::new(load);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Vec<Tensor>>>(self.options.prefetch_factor.max(1));
            let batches = batches.clone();
            let load = load.clone();
            let h = std::thread::Builder::new().name(format!("ember-data-worker-{w}")).spawn(move || {
                for b in (w..batches.len()).step_by(workers) {
                    let r = load(&batches[b]);
                    if tx.send(r).is_err() {
                        return; // the loader was dropped
                    }
                }
            });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let err = Error::backend("DataLoader", format!("could not start a worker thread: {e}"));
                    return BatchIter { next: 0, total, source: Source::Failed(Some(err)), handles: vec![] };
                }
            }
            queues.push(rx);
        }
        BatchIter { next: 0, total, source: Source::Workers(queues), handles }
    }
}

/// Runs one batch's loading, turning a panic into that batch's error with the panic's message.
fn catch_panic(idx: &[usize], f: impl FnOnce() -> Result<Vec<Tensor>>) -> Result<Vec<Tensor>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".into());
        let first = idx.first().map_or(String::new(), |i| format!(" (first index {i})"));
        Err(Error::backend("DataLoader", format!("loading a batch of {} samples{first} panicked: {msg}", idx.len())))
    })
}

struct ArcSampler(Arc<dyn Sampler>);

impl Sampler for ArcSampler {
    fn indices(&self, epoch: u64) -> Vec<usize> {
        self.0.indices(epoch)
    }
}

type LoadFn = Box<dyn Fn(&[usize]) -> Result<Vec<Tensor>> + Send>;

enum Source {
    Inline(Arc<Vec<Vec<usize>>>, LoadFn),
    Workers(Vec<Receiver<Result<Vec<Tensor>>>>),
    Failed(Option<Error>),
}

/// The batches of one epoch (see [`DataLoader::iter`]).
pub struct BatchIter {
    next: usize,
    total: usize,
    source: Source,
    handles: Vec<JoinHandle<()>>,
}

impl BatchIter {
    /// Number of batches in this epoch.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for BatchIter {
    type Item = Result<Vec<Tensor>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some(match &mut self.source {
            Source::Inline(batches, load) => load(&batches[i]),
            Source::Workers(queues) => {
                let w = i % queues.len();
                queues[w].recv().unwrap_or_else(|_| {
                    Err(Error::backend("DataLoader", format!("worker {w} stopped (panicked) before batch {i}")))
                })
            }
            Source::Failed(e) => {
                self.next = self.total;
                Err(e.take().unwrap_or_else(|| Error::invalid("DataLoader", "workers failed to start")))
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        // Closing the queues makes every blocked `send` fail, so workers return promptly.
        self.source = Source::Failed(None);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
