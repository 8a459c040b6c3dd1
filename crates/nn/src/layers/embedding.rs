//! Embedding and EmbeddingBag.

use crate::Module;
use ember_autograd::{no_grad, Error, Result, Tensor};

/// A lookup table `[num_embeddings, dim]` (`nn.Embedding`), init N(0, 1), the `padding_idx` row
/// zero and never updated.
#[derive(crate::Module)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// Row that gets no gradient.
    pub padding_idx: Option<i64>,
}

impl Embedding {
    /// `nn.Embedding(num_embeddings, embedding_dim)`.
    pub fn new(num_embeddings: usize, dim: usize) -> Result<Self> {
        Self::with_padding_idx(num_embeddings, dim, None)
    }

    /// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`.
    pub fn with_padding_idx(num_embeddings: usize, dim: usize, padding_idx: Option<i64>) -> Result<Self> {
        let w = Tensor::randn([num_embeddings, dim])?;
        if let Some(p) = padding_idx {
            let p = if p < 0 { p + num_embeddings as i64 } else { p };
            no_grad(|| w.select(0, p as isize)?.fill_(0.0).map(|_| ()))?;
        }
        Ok(Embedding { weight: w.requires_grad_(true)?, padding_idx })
    }
}

impl Module for Embedding {
    fn forward(&self, indices: &Tensor) -> Result<Tensor> {
        if !indices.dtype().is_int() {
            return Err(Error::dtype(
                "Embedding",
                format!(
                    "expected integer indices (i64 or i32), got {} of shape {:?}",
                    indices.dtype(),
                    indices.shape()
                ),
            ));
        }
        let indices = indices.to_dtype(ember_autograd::DType::I64)?;
        self.weight.embedding_padded(&indices, self.padding_idx)
    }
}

/// Bags of embeddings reduced by sum, mean or max (`nn.EmbeddingBag`).
#[derive(crate::Module)]
pub struct EmbeddingBag {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// "sum", "mean" (default) or "max".
    pub mode: String,
}

impl EmbeddingBag {
    /// `nn.EmbeddingBag(num_embeddings, embedding_dim, mode)`.
    pub fn new(num_embeddings: usize, dim: usize, mode: &str) -> Result<Self> {
        Ok(EmbeddingBag { weight: Tensor::randn([num_embeddings, dim])?.requires_grad_(true)?, mode: mode.into() })
    }

    /// Bags given by `offsets` into a 1-d `input`, with optional per-sample weights.
    pub fn forward_bags(&self, input: &Tensor, offsets: Option<&Tensor>, weights: Option<&Tensor>) -> Result<Tensor> {
        self.weight.embedding_bag(input, offsets, &self.mode, weights)
    }
}

impl Module for EmbeddingBag {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.forward_bags(input, None, None)
    }
}
