//! Image transforms (`torchvision.transforms`-like) on `[C, H, W]` or `[N, C, H, W]` tensors.
//! Random transforms draw from the generator they are given, so a pipeline is reproducible.

use ember_autograd::{DType, Error, PadMode, Result, Tensor};
use rand::{Rng, RngCore};

/// A tensor-to-tensor transform.
pub trait Transform: Send + Sync {
    /// Applies the transform, drawing any randomness from `rng`.
    fn apply(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor>;
}

/// `u8` `[H, W]` / `[H, W, C]` (or `[N, H, W]` with `batched`) → f32 `[C, H, W]` in [0, 1].
pub struct ToTensor;

impl Transform for ToTensor {
    fn apply(&self, x: &Tensor, _rng: &mut dyn RngCore) -> Result<Tensor> {
        let f = x.to_dtype(DType::F32)?.div(255.0)?;
        match x.ndim() {
            2 => f.unsqueeze(0),
            3 => f.permute([2, 0, 1])?.contiguous(),
            _ => Err(Error::shape("ToTensor", format!("expects [H, W] or [H, W, C], got {:?}", x.shape()))),
        }
    }
}

/// `(x − mean[c]) / std[c]` per channel (dim −3).
pub struct Normalize {
    /// Per-channel means.
    pub mean: Vec<f64>,
    /// Per-channel standard deviations.
    pub std: Vec<f64>,
}

impl Transform for Normalize {
    fn apply(&self, x: &Tensor, _rng: &mut dyn RngCore) -> Result<Tensor> {
        if x.ndim() < 3 || self.mean.len() != self.std.len() || x.shape()[x.ndim() - 3] != self.mean.len() {
            return Err(Error::shape(
                "Normalize",
                format!("{} means for input {:?} (channels at dim -3)", self.mean.len(), x.shape()),
            ));
        }
        let c = self.mean.len();
        let m = Tensor::from_vec(self.mean.clone(), [c, 1, 1])?.to_dtype(x.dtype())?;
        let s = Tensor::from_vec(self.std.clone(), [c, 1, 1])?.to_dtype(x.dtype())?;
        x.sub(&m)?.div(&s)
    }
}

/// Pads by `padding` (zeros) and crops a random `size` window.
pub struct RandomCrop {
    /// Output `[h, w]`.
    pub size: [usize; 2],
    /// Zero padding on every side first.
    pub padding: usize,
}

impl Transform for RandomCrop {
    fn apply(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        if x.ndim() < 2 {
            return Err(Error::shape("RandomCrop", format!("expects [..., H, W], got {:?}", x.shape())));
        }
        let p = self.padding as isize;
        let x = if p > 0 { x.pad([p, p, p, p], PadMode::Constant, 0.0)? } else { x.clone() };
        let (h, w) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
        let [th, tw] = self.size;
        if th > h || tw > w {
            return Err(Error::shape("RandomCrop", format!("crop {:?} larger than padded input {h}x{w}", self.size)));
        }
        let top = rng.random_range(0..=h - th);
        let left = rng.random_range(0..=w - tw);
        x.narrow(-2, top as isize, th)?.narrow(-1, left as isize, tw)?.contiguous()
    }
}

/// Mirrors left-right with probability `p`.
pub struct RandomHorizontalFlip {
    /// Flip probability.
    pub p: f64,
}

impl Transform for RandomHorizontalFlip {
    fn apply(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        if rng.random::<f64>() < self.p {
            x.flip([-1])
        } else {
            Ok(x.clone())
        }
    }
}

/// Transforms applied in order.
pub struct Compose(pub Vec<Box<dyn Transform>>);

impl Transform for Compose {
    fn apply(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        let mut y = x.clone();
        for t in &self.0 {
            y = t.apply(&y, rng)?;
        }
        Ok(y)
    }
}

/// A dataset whose field `field` goes through a transform; the randomness of sample `i` in epoch
/// `e` comes from a generator seeded by (`seed`, `e`, `i`), so results do not depend on the
/// number of loader workers. Call [`Transformed::set_epoch`] at each epoch.
pub struct Transformed<D> {
    /// The underlying dataset.
    pub dataset: D,
    /// The transform.
    pub transform: Box<dyn Transform>,
    /// Which field of each sample it applies to.
    pub field: usize,
    /// Base seed.
    pub seed: u64,
    epoch: std::sync::atomic::AtomicU64,
}

impl<D> Transformed<D> {
    /// Wraps `dataset`.
    pub fn new(dataset: D, transform: Box<dyn Transform>, field: usize, seed: u64) -> Self {
        Transformed { dataset, transform, field, seed, epoch: 0.into() }
    }
    /// Sets the epoch that seeds the random transforms.
    pub fn set_epoch(&self, e: u64) {
        self.epoch.store(e, std::sync::atomic::Ordering::Relaxed)
    }
}

impl<D: crate::Dataset> crate::Dataset for Transformed<D> {
    fn len(&self) -> usize {
        self.dataset.len()
    }
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        use rand::SeedableRng;
        let mut s = self.dataset.get(index)?;
        let e = self.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let seed = crate::sampler::epoch_seed(self.seed, e) ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let f = s
            .get_mut(self.field)
            .ok_or_else(|| Error::invalid("Transformed", format!("sample has no field {}", self.field)))?;
        *f = self.transform.apply(f, &mut rng)?;
        Ok(s)
    }
}
