//! DataLoader determinism, error surfacing, early drop; samplers; MNIST IDX validation.

use ember_autograd::{Error, Result, Tensor};
use ember_data::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn dataset(n: usize) -> TensorDataset {
    let x = Tensor::arange(n as i64 * 2).unwrap().reshape([n as isize, 2]).unwrap();
    TensorDataset::new(vec![x, Tensor::arange(n as i64).unwrap()]).unwrap()
}

fn labels(loader: &DataLoader<impl Dataset + 'static>, epoch: u64) -> Vec<Vec<i64>> {
    loader.iter(epoch).map(|b| b.unwrap()[1].to_vec::<i64>().unwrap()).collect()
}

#[test]
fn batch_order_is_identical_for_any_worker_count() {
    let base = LoaderOptions { batch_size: 7, shuffle: true, seed: 42, ..Default::default() };
    let reference = labels(&DataLoader::new(dataset(100), base.clone()), 3);
    assert_eq!(reference.len(), 15);
    assert_eq!(reference.iter().flatten().count(), 100);
    for w in [1, 2, 3, 8] {
        let l = DataLoader::new(dataset(100), LoaderOptions { num_workers: w, ..base.clone() });
        assert_eq!(labels(&l, 3), reference, "workers={w}");
    }
    let l = DataLoader::new(dataset(100), base.clone());
    assert_ne!(labels(&l, 4), reference, "epochs reshuffle");
    let mut sorted: Vec<i64> = reference.into_iter().flatten().collect();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    let dl = DataLoader::new(dataset(100), LoaderOptions { drop_last: true, ..base });
    assert_eq!(dl.len(), 14);
}

/// Fails on one index, counts calls.
struct Flaky {
    bad: usize,
    calls: Arc<AtomicUsize>,
}

impl Dataset for Flaky {
    fn len(&self) -> usize {
        1000
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if index == self.bad {
            return Err(Error::invalid("Flaky", format!("cannot read sample {index}")));
        }
        Ok(vec![Tensor::scalar(index as f32)])
    }
}

#[test]
fn worker_errors_surface_and_dropping_stops_workers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = DataLoader::new(
        Flaky { bad: 13, calls: calls.clone() },
        LoaderOptions { batch_size: 4, num_workers: 3, ..Default::default() },
    );
    let results: Vec<_> = l.iter(0).collect();
    assert_eq!(results.len(), 250, "no batch is lost");
    assert!(results[3].as_ref().unwrap_err().to_string().contains("cannot read sample 13"));
    assert!(results.iter().enumerate().all(|(i, r)| r.is_ok() == (i != 3)));

    calls.store(0, Ordering::SeqCst);
    {
        let mut it = l.iter(0);
        it.next().unwrap().unwrap();
    } // dropped mid-epoch: joins the workers
    let after_drop = calls.load(Ordering::SeqCst);
    assert!(after_drop < 1000, "workers kept loading after the drop ({after_drop} samples)");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(calls.load(Ordering::SeqCst), after_drop);
}

#[test]
fn samplers_shard_and_weight() {
    let shards: Vec<Vec<usize>> =
        (0..3).map(|r| DistributedSampler::new(10, 3, r, true, 7).unwrap().indices(0)).collect();
    assert!(shards.iter().all(|s| s.len() == 4));
    let mut all: Vec<usize> = shards.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10);
    assert!(DistributedSampler::new(10, 3, 3, true, 7).is_err());
    let w = WeightedRandomSampler::new(&[0.0, 1.0, 0.0, 3.0], 400, true, 1).unwrap();
    let idx = w.indices(0);
    assert!(idx.iter().all(|&i| i == 1 || i == 3));
    let threes = idx.iter().filter(|&&i| i == 3).count();
    assert!((250..350).contains(&threes), "{threes}");
    let nr = WeightedRandomSampler::new(&[1.0, 1.0, 5.0], 3, false, 1).unwrap().indices(2);
    let mut s = nr.clone();
    s.sort();
    assert_eq!(s, [0, 1, 2]);
    let parts = random_split(dataset(10), &[7, 3], 0).unwrap();
    assert_eq!((parts[0].len(), parts[1].len()), (7, 3));
    assert!(random_split(dataset(10), &[7, 4], 0).is_err());
}

fn idx_bytes(magic: u8, dims: &[u32], payload: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, payload));
    v
}

#[test]
fn idx_files_are_validated() {
    assert!(parse_idx_u8(&idx_bytes(3, &[2, 2, 2], 8), "ok", 3).is_ok());
    let e = parse_idx_u8(&idx_bytes(3, &[2, 2, 2], 7), "t", 3).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let mut bad = idx_bytes(3, &[2, 2, 2], 8);
    bad[2] = 0x0d;
    assert!(parse_idx_u8(&bad, "t", 3).unwrap_err().to_string().contains("magic"));
    assert!(parse_idx_u8(&idx_bytes(1, &[4], 4), "t", 3).is_err());
    assert!(parse_idx_u8(&[0, 0], "t", 1).is_err());

    let dir = std::env::temp_dir().join(format!("ember-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_bytes(3, &[3, 2, 2], 12)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(1, &[2], 2)).unwrap();
    let e = Mnist::load(&dir, true).err().unwrap().to_string();
    assert!(e.contains("3 images but 2 labels"), "{e}");
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(1, &[3], 3)).unwrap();
    let m = Mnist::load(&dir, true).unwrap();
    assert_eq!(m.images.shape(), &[3, 2, 2]);
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), b"\x1f\x8bgarbage").unwrap();
    assert!(Mnist::load(&dir, true).err().unwrap().to_string().contains("gzip"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundled_mnist_subset_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-5k");
    let train = Mnist::load(&dir, true).unwrap();
    let test = Mnist::load(&dir, false).unwrap();
    assert_eq!((train.len(), test.len()), (4000, 1000));
    let counts = test.labels.one_hot(10).unwrap().sum_dim([0], false).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(counts, vec![100; 10]);
}

#[test]
fn transforms_are_reproducible() {
    use rand::SeedableRng;
    use transforms::*;
    let img = Tensor::arange(16).unwrap().to_dtype(ember_autograd::DType::U8).unwrap().reshape([4, 4]).unwrap();
    let pipeline = Compose(vec![
        Box::new(ToTensor),
        Box::new(Normalize { mean: vec![0.5], std: vec![0.25] }),
        Box::new(RandomCrop { size: [4, 4], padding: 1 }),
        Box::new(RandomHorizontalFlip { p: 0.5 }),
    ]);
    let run =
        |seed| pipeline.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed)).unwrap().to_vec_f64().unwrap();
    assert_eq!(run(3), run(3));
    assert_eq!(pipeline.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap().shape(), &[1, 4, 4]);
}

/// Sample 3 panics; every other sample is its own index.
struct Panicky(usize);

impl Dataset for Panicky {
    fn len(&self) -> usize {
        self.0
    }
    fn get(&self, i: usize) -> Result<Vec<Tensor>> {
        if i == 3 {
            panic!("sample {i} is corrupt");
        }
        Ok(vec![Tensor::scalar(i as i64)])
    }
}

#[test]
fn a_panicking_get_is_that_batch_error_and_loading_continues_for_every_worker_count() {
    for workers in [0, 1, 3] {
        let loader =
            DataLoader::new(Panicky(8), LoaderOptions { batch_size: 2, num_workers: workers, ..Default::default() });
        let out: Vec<Result<Vec<Tensor>>> = loader.iter(0).collect();
        assert_eq!(out.len(), 4, "{workers} workers: every batch is delivered");
        for (b, r) in out.iter().enumerate() {
            match r {
                Ok(t) => assert_eq!(t[0].to_vec::<i64>().unwrap(), vec![2 * b as i64, 2 * b as i64 + 1]),
                Err(e) => {
                    assert_eq!(b, 1, "{workers} workers: only batch 1 holds sample 3");
                    assert!(e.to_string().contains("sample 3 is corrupt"), "{e}");
                }
            }
        }
        assert!(out[1].is_err());
    }
}

/// A dataset that claims 2^40 samples (it never loads one).
struct Huge;

impl Dataset for Huge {
    fn len(&self) -> usize {
        1 << 40
    }
    fn get(&self, _: usize) -> Result<Vec<Tensor>> {
        Err(Error::invalid("Huge", "not loadable"))
    }
}

#[test]
fn impossible_epochs_are_one_error_not_an_abort() {
    let loader = DataLoader::new(Huge, LoaderOptions { batch_size: 4, shuffle: true, ..Default::default() });
    assert_eq!(loader.len(), 1 << 38, "the batch count needs no index list");
    let out: Vec<_> = loader.iter(0).collect();
    assert_eq!(out.len(), 1);
    assert!(out[0].as_ref().unwrap_err().to_string().contains("out of memory"));
    let zero = DataLoader::new(dataset(4), LoaderOptions { batch_size: 0, ..Default::default() });
    assert_eq!(zero.len(), 0);
    let out: Vec<_> = zero.iter(0).collect();
    assert!(out.len() == 1 && out[0].as_ref().unwrap_err().to_string().contains("batch_size"));
    let empty = RandomSampler { n: 0, seed: 1, replacement: true, num_samples: Some(5) };
    assert!(empty.indices(0).is_empty(), "no index 0 of an empty dataset");
}
