//! `F.embedding_bag`: sums, means or maxima of bags of embedding rows.

use crate::Tensor;
use ember_storage::{Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.embedding_bag`.
pub const EMBEDDING_BAG: OpDescriptor = OpDescriptor {
    name: "embedding_bag",
    forward: "Tensor::embedding_bag",
    conformance: &["embedding_bag"],
    shape_rule: "[bags, embedding_dim]",
    backward: OpBackward::Composed,
};

impl Tensor {
    /// Bags of embeddings (`F.embedding_bag`): `self` is the weight; `input` 2-d (one bag per row) or
    /// 1-d with `offsets`; mode "sum", "mean" or "max"; optional per-sample weights (sum mode).
    pub fn embedding_bag(
        &self,
        input: &Tensor,
        offsets: Option<&Tensor>,
        mode: &str,
        per_sample_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (flat, starts): (Tensor, Vec<usize>) = match (input.ndim(), offsets) {
            (2, _) => {
                let (b, n) = (input.shape()[0], input.shape()[1]);
                (input.reshape([-1])?, (0..b).map(|i| i * n).collect())
            }
            (1, Some(o)) => (input.clone(), o.to_vec::<i64>()?.into_iter().map(|x| x as usize).collect()),
            _ => {
                return Err(Error::invalid(
                    "embedding_bag",
                    format!("input {:?} needs to be 2-d, or 1-d with offsets", input.shape()),
                ))
            }
        };
        let rows = self.embedding(&flat)?;
        let rows = match per_sample_weights {
            Some(w) => rows.mul(&w.reshape([-1, 1])?)?,
            None => rows,
        };
        let n = flat.numel();
        let mut bags = vec![];
        for (i, &s) in starts.iter().enumerate() {
            let e = starts.get(i + 1).copied().unwrap_or(n);
            if s > e || e > n {
                return Err(Error::invalid(
                    "embedding_bag",
                    format!("offsets {starts:?} are not increasing within {n}"),
                ));
            }
            let part = rows.narrow(0, s as isize, e - s)?;
            bags.push(if e == s {
                Tensor::zeros_with([self.shape()[1]], self.dtype(), self.device())?
            } else {
                match mode {
                    "sum" => part.sum_dim([0], false)?,
                    "mean" => part.mean_dim([0], false)?,
                    "max" => part.amax([0], false)?,
                    _ => return Err(Error::invalid("embedding_bag", format!("unknown mode {mode:?}"))),
                }
            });
        }
        Tensor::stack(&bags, 0)
    }
}
