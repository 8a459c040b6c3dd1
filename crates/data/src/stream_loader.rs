//! [`IterableDataLoader`]: batches of an [`IterableDataset`] (a stream), optionally loaded by
//! background workers, in the same order for any number of workers.
//!
//! A stream has no random access, so it is split by batch position: every item of the stream
//! (a sample or an error) takes one position, batch `b` is positions `b*B .. (b+1)*B`, and worker
//! `w` of `W` builds batches `w, w + W, w + 2W, ...` from the items its [`ShardInfo`] asks the
//! dataset for. The consumer reads the workers' queues round-robin, so the batches arrive in
//! stream order whatever `W` is. A batch with an erroneous item is that batch's `Err` (the stream
//! goes on after it); a panicking worker is an `Err` too; dropping the iterator stops the workers.

use crate::dataset::IterableDataset;
use crate::loader::{default_collate, CollateFn, LoaderOptions};
use crate::shard::ShardInfo;
use ember_autograd::{Error, Result, Tensor};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Loads batches of an [`IterableDataset`] (PyTorch's `DataLoader` over an `IterableDataset`).
///
/// ```
/// use ember_autograd::{Result, Tensor};
/// use ember_data::{IterableDataLoader, IterableDataset, LoaderOptions};
/// struct Count(i64);
/// impl IterableDataset for Count {
///     fn iter(&self) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_> {
///         Box::new((0..self.0).map(|i| Ok(vec![Tensor::scalar(i)])))
///     }
/// }
/// let opts = LoaderOptions { batch_size: 2, num_workers: 2, ..Default::default() };
/// let loader = IterableDataLoader::new(Count(5), opts).unwrap();
/// let firsts: Vec<i64> = loader.iter().map(|b| b.unwrap()[0].to_vec::<i64>().unwrap()[0]).collect();
/// assert_eq!(firsts, [0, 2, 4]);
/// ```
pub struct IterableDataLoader<D> {
    dataset: Arc<D>,
    options: LoaderOptions,
    collate: Arc<CollateFn>,
}

impl<D: IterableDataset + 'static> IterableDataLoader<D> {
    /// A loader over `dataset`. `shuffle` is an error, as in PyTorch: a stream has no order to
    /// permute (shuffle inside the dataset instead).
    pub fn new(dataset: D, options: LoaderOptions) -> Result<Self> {
        if options.shuffle {
            return Err(Error::invalid(
                "IterableDataLoader",
                "shuffle is not supported for an IterableDataset (a stream has no random access); shuffle inside the dataset",
            ));
        }
        if options.batch_size == 0 {
            return Err(Error::invalid("IterableDataLoader", "batch_size must be at least 1"));
        }
        Ok(IterableDataLoader { dataset: Arc::new(dataset), options, collate: Arc::new(default_collate) })
    }

    /// Uses a custom collate function.
    pub fn with_collate(mut self, f: impl Fn(Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Self {
        self.collate = Arc::new(f);
        self
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// One pass over the stream, in batches.
    pub fn iter(&self) -> StreamBatchIter<'_> {
        let batch_size = self.options.batch_size;
        let drop_last = self.options.drop_last;
        let workers = self.options.num_workers;
        if workers == 0 {
            let shard = ShardInfo { worker: 0, num_workers: 1, batch_size };
            let items = self.dataset.iter_shard(shard);
            let batches = shard_batches(items, batch_size, drop_last, self.collate.clone());
            return StreamBatchIter { next: 0, source: StreamSource::Inline(Box::new(batches)), handles: vec![] };
        }
        let mut queues = vec![];
        let mut handles = vec![];
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Vec<Tensor>>>(self.options.prefetch_factor.max(1));
            let ds = self.dataset.clone();
            let collate = self.collate.clone();
            let shard = ShardInfo { worker: w, num_workers: workers, batch_size };
            let spawned = std::thread::Builder::new().name(format!("ember-stream-worker-{w}")).spawn(move || {
                for batch in shard_batches(ds.iter_shard(shard), batch_size, drop_last, collate) {
                    if tx.send(batch).is_err() {
                        return; // the iterator was dropped
                    }
                }
            });
            match spawned {
                Ok(h) => handles.push(Some(h)),
                Err(e) => {
                    let err = Error::backend("IterableDataLoader", format!("could not start a worker thread: {e}"));
                    return StreamBatchIter { next: 0, source: StreamSource::Failed(Some(err)), handles: vec![] };
                }
            }
            queues.push(rx);
        }
        StreamBatchIter { next: 0, source: StreamSource::Workers(queues), handles }
    }
}

/// Batches of an [`IterableDataset`] in the consumer's thread, collated by stacking: the same
/// batches as an [`IterableDataLoader`] without workers.
///
/// ```
/// use ember_autograd::{Result, Tensor};
/// use ember_data::{iterable_batches, IterableDataset};
/// struct Count(i64);
/// impl IterableDataset for Count {
///     fn iter(&self) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_> {
///         Box::new((0..self.0).map(|i| Ok(vec![Tensor::scalar(i)])))
///     }
/// }
/// let sizes: Vec<usize> = iterable_batches(&Count(5), 2, false).map(|b| b.unwrap()[0].shape()[0]).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// ```
pub fn iterable_batches<'a>(
    dataset: &'a dyn IterableDataset,
    batch_size: usize,
    drop_last: bool,
) -> impl Iterator<Item = Result<Vec<Tensor>>> + 'a {
    let shard = ShardInfo { worker: 0, num_workers: 1, batch_size };
    shard_batches(dataset.iter_shard(shard), batch_size, drop_last, Arc::new(default_collate))
}

/// Groups one shard's items into batches: `batch_size` items each, an `Err` for a batch with an
/// erroneous item, the last partial batch kept unless `drop_last`.
fn shard_batches<'a>(
    mut items: Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + 'a>,
    batch_size: usize,
    drop_last: bool,
    collate: Arc<CollateFn>,
) -> impl Iterator<Item = Result<Vec<Tensor>>> + Send + 'a {
    let bs = batch_size.max(1);
    std::iter::from_fn(move || {
        let mut samples = Vec::with_capacity(bs);
        let mut error = None;
        let mut taken = 0;
        while taken < bs {
            match items.next() {
                Some(Ok(s)) => samples.push(s),
                Some(Err(e)) => {
                    error.get_or_insert(e);
                }
                None => break,
            }
            taken += 1;
        }
        if taken == 0 || (drop_last && taken < bs) {
            return None;
        }
        Some(match error {
            Some(e) => Err(e),
            None => collate(samples),
        })
    })
}

enum StreamSource<'a> {
    Inline(Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + 'a>),
    Workers(Vec<Receiver<Result<Vec<Tensor>>>>),
    Failed(Option<Error>),
    Done,
}

/// The batches of one pass over a stream (see [`IterableDataLoader::iter`]).
pub struct StreamBatchIter<'a> {
    next: usize,
    source: StreamSource<'a>,
    handles: Vec<Option<JoinHandle<()>>>,
}

impl Iterator for StreamBatchIter<'_> {
    type Item = Result<Vec<Tensor>>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.next;
        let mut last = false;
        let item = match &mut self.source {
            StreamSource::Inline(batches) => batches.next(),
            StreamSource::Workers(queues) => {
                let w = i % queues.len();
                match queues[w].recv() {
                    Ok(batch) => Some(batch),
                    // Worker `w` hung up: its shard ended (so the stream did, batches being
                    // dealt round-robin) or it panicked.
                    Err(_) => match self.handles[w].take().map(|h| h.join()) {
                        Some(Err(_)) => {
                            last = true;
                            Some(Err(Error::backend(
                                "IterableDataLoader",
                                format!("worker {w} stopped (panicked) before batch {i}; the pass ends here"),
                            )))
                        }
                        _ => None,
                    },
                }
            }
            StreamSource::Failed(e) => e.take().map(Err),
            StreamSource::Done => None,
        };
        match item {
            Some(b) => {
                self.next += 1;
                if last {
                    self.stop();
                }
                Some(b)
            }
            None => {
                self.stop();
                None
            }
        }
    }
}

impl StreamBatchIter<'_> {
    fn stop(&mut self) {
        // Closing the queues makes every blocked `send` fail, so workers return promptly.
        self.source = StreamSource::Done;
        for h in self.handles.drain(..).flatten() {
            let _ = h.join();
        }
    }
}

impl Drop for StreamBatchIter<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
