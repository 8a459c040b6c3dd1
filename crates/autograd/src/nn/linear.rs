//! `F.linear` and `F.bilinear`.

use crate::Tensor;
use ember_storage::Result;

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.linear`.
pub const LINEAR: OpDescriptor = OpDescriptor {
    name: "linear",
    forward: "Tensor::linear",
    conformance: &["linear"],
    shape_rule: "[..., in] x [out, in] -> [..., out]",
    backward: OpBackward::Composed,
};

/// `F.bilinear`.
pub const BILINEAR: OpDescriptor = OpDescriptor {
    name: "bilinear",
    forward: "Tensor::bilinear",
    conformance: &["bilinear"],
    shape_rule: "[..., in1] x [..., in2] x [out, in1, in2] -> [..., out]",
    backward: OpBackward::Composed,
};

impl Tensor {
    /// `x @ weight.T + bias`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if crate::autocast::is_autocast_enabled() {
            let mut ts = vec![self, weight];
            ts.extend(bias);
            if let Some(y) = crate::autocast::autocast_op("linear", &ts, |t| t[0].linear(&t[1], t.get(2)))? {
                return Ok(y);
            }
        }
        let y = self.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// `x1ᵀ W_o x2 + b_o` for each output feature o.
    pub fn bilinear(&self, x2: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = Tensor::einsum("...i,oij,...j->...o", &[self.clone(), weight.clone(), x2.clone()])?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}
