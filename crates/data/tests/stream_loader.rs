//! IterableDataLoader: stream order for any worker count, errors per batch, panics surface,
//! dropping stops the workers, seeking shards agree with the default.

use ember_autograd::{Error, Result, Tensor};
use ember_data::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts 0..n (None: forever); item `bad` is an error, item `panic_at` panics.
struct Stream {
    n: Option<usize>,
    bad: Option<usize>,
    panic_at: Option<usize>,
    produced: Arc<AtomicUsize>,
    seek: bool,
}

impl Stream {
    fn new(n: usize) -> Self {
        Stream { n: Some(n), bad: None, panic_at: None, produced: Arc::new(AtomicUsize::new(0)), seek: false }
    }

    fn item(&self, i: usize) -> Result<Vec<Tensor>> {
        self.produced.fetch_add(1, Ordering::SeqCst);
        if Some(i) == self.panic_at {
            panic!("stream item {i} panics");
        }
        if Some(i) == self.bad {
            return Err(Error::invalid("Stream", format!("cannot decode item {i}")));
        }
        Ok(vec![Tensor::scalar(i as i64), Tensor::scalar(2.0 * i as f32)])
    }
}

impl IterableDataset for Stream {
    fn iter(&self) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_> {
        Box::new((0..self.n.unwrap_or(usize::MAX)).map(|i| self.item(i)))
    }

    fn iter_shard(&self, shard: ShardInfo) -> Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send + '_> {
        if !self.seek {
            return skip_to_shard(self.iter(), shard);
        }
        // Jumps straight to the owned positions: skipped items are never produced.
        let end = self.n.unwrap_or(usize::MAX);
        Box::new((0..end).filter(move |&p| shard.owns(p)).map(|i| self.item(i)))
    }
}

fn firsts(loader: &IterableDataLoader<Stream>) -> Vec<std::result::Result<Vec<i64>, String>> {
    loader.iter().map(|b| b.map(|b| b[0].to_vec::<i64>().unwrap()).map_err(|e| e.to_string())).collect()
}

fn options(batch_size: usize, drop_last: bool, num_workers: usize) -> LoaderOptions {
    LoaderOptions { batch_size, drop_last, num_workers, ..Default::default() }
}

#[test]
fn stream_batches_are_identical_for_any_worker_count() {
    for (n, bs, drop_last) in
        [(23, 4, false), (23, 4, true), (24, 4, false), (3, 5, false), (3, 5, true), (0, 2, false)]
    {
        let reference = firsts(&IterableDataLoader::new(Stream::new(n), options(bs, drop_last, 0)).unwrap());
        let expected: Vec<_> = (0..n)
            .collect::<Vec<_>>()
            .chunks(bs)
            .filter(|c| !drop_last || c.len() == bs)
            .map(|c| Ok(c.iter().map(|&i| i as i64).collect::<Vec<_>>()))
            .collect();
        assert_eq!(reference, expected, "n={n} bs={bs} drop_last={drop_last}");
        for w in [1, 2, 3, 7] {
            for seek in [false, true] {
                let ds = Stream { seek, ..Stream::new(n) };
                let got = firsts(&IterableDataLoader::new(ds, options(bs, drop_last, w)).unwrap());
                assert_eq!(got, reference, "n={n} bs={bs} drop_last={drop_last} workers={w} seek={seek}");
            }
        }
    }
    let batch = IterableDataLoader::new(Stream::new(5), options(5, false, 2)).unwrap().iter().next().unwrap().unwrap();
    assert_eq!(batch[1].to_vec::<f32>().unwrap(), [0.0, 2.0, 4.0, 6.0, 8.0], "every field is collated");
}

#[test]
fn a_bad_item_fails_only_its_batch() {
    for w in [0, 1, 2, 3] {
        let ds = Stream { bad: Some(9), ..Stream::new(20) };
        let got = firsts(&IterableDataLoader::new(ds, options(4, false, w)).unwrap());
        assert_eq!(got.len(), 5, "workers={w}");
        assert!(got[2].as_ref().unwrap_err().contains("cannot decode item 9"), "workers={w}: {:?}", got[2]);
        assert_eq!(got[3], Ok(vec![12, 13, 14, 15]), "the stream goes on after the bad batch (workers={w})");
    }
}

#[test]
fn a_panicking_worker_is_an_error_not_a_hang() {
    let ds = Stream { panic_at: Some(6), ..Stream::new(40) };
    let got = firsts(&IterableDataLoader::new(ds, options(2, false, 2)).unwrap());
    assert_eq!(got[..3], [Ok(vec![0, 1]), Ok(vec![2, 3]), Ok(vec![4, 5])]);
    assert!(got[3].as_ref().unwrap_err().contains("panicked"), "{:?}", got[3]);
    assert_eq!(got.len(), 4, "the pass ends at the failed worker");
}

#[test]
fn dropping_an_endless_stream_stops_its_workers() {
    let ds = Stream { n: None, ..Stream::new(0) };
    let produced = ds.produced.clone();
    let loader = IterableDataLoader::new(ds, options(8, false, 3)).unwrap();
    {
        let mut it = loader.iter();
        for _ in 0..5 {
            it.next().unwrap().unwrap();
        }
    } // dropped: joins the workers, which would never stop on their own
    let after_drop = produced.load(Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(produced.load(Ordering::SeqCst), after_drop, "workers kept producing after the drop");
}

#[test]
fn shuffle_and_empty_batches_are_rejected() {
    let err = IterableDataLoader::new(Stream::new(4), LoaderOptions { shuffle: true, ..Default::default() });
    assert!(err.err().unwrap().to_string().contains("shuffle"));
    assert!(IterableDataLoader::new(Stream::new(4), options(0, false, 0)).is_err());
}

#[test]
fn iterable_batches_matches_the_loader() {
    let ds = Stream { bad: Some(1), ..Stream::new(7) };
    let got: Vec<_> = iterable_batches(&ds, 3, false).map(|b| b.is_ok()).collect();
    assert_eq!(got, [false, true, true]);
}
