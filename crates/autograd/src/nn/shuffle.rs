//! Rearrangements of channels and pixels: `pixel_shuffle`, `pixel_unshuffle`, `channel_shuffle`.

use crate::Tensor;
use ember_storage::{Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.pixel_shuffle`.
pub const PIXEL_SHUFFLE: OpDescriptor = OpDescriptor {
    name: "pixel_shuffle",
    forward: "Tensor::pixel_shuffle",
    conformance: &["pixel_shuffle"],
    shape_rule: "[..., C r², H, W] -> [..., C, H r, W r]",
    backward: OpBackward::Composed,
};

/// `F.pixel_unshuffle`.
pub const PIXEL_UNSHUFFLE: OpDescriptor = OpDescriptor {
    name: "pixel_unshuffle",
    forward: "Tensor::pixel_unshuffle",
    conformance: &["pixel_unshuffle"],
    shape_rule: "[..., C, H r, W r] -> [..., C r², H, W]",
    backward: OpBackward::Composed,
};

/// `F.channel_shuffle`.
pub const CHANNEL_SHUFFLE: OpDescriptor = OpDescriptor {
    name: "channel_shuffle",
    forward: "Tensor::channel_shuffle",
    conformance: &["channel_shuffle"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

impl Tensor {
    /// `[N, C*r², H, W]` to `[N, C, H*r, W*r]`.
    pub fn pixel_shuffle(&self, r: usize) -> Result<Tensor> {
        let s = self.shape();
        if self.ndim() < 3 || r == 0 || !s[s.len() - 3].is_multiple_of(r * r) {
            return Err(Error::shape("pixel_shuffle", format!("input {s:?} channels must be divisible by {}", r * r)));
        }
        let nd = s.len();
        let (c, h, w) = (s[nd - 3], s[nd - 2], s[nd - 1]);
        let lead: Vec<isize> = s[..nd - 3].iter().map(|&x| x as isize).collect();
        let mut a = lead.clone();
        a.extend([(c / (r * r)) as isize, r as isize, r as isize, h as isize, w as isize]);
        let b = lead.len() as isize;
        let mut perm: Vec<isize> = (0..b).collect();
        perm.extend([b, b + 3, b + 1, b + 4, b + 2]);
        let mut out = lead;
        out.extend([(c / (r * r)) as isize, (h * r) as isize, (w * r) as isize]);
        self.reshape(&a)?.permute(&perm)?.reshape(&out)
    }

    /// `[N, C, H*r, W*r]` to `[N, C*r², H, W]`.
    pub fn pixel_unshuffle(&self, r: usize) -> Result<Tensor> {
        let s = self.shape();
        let nd = s.len();
        if nd < 3 || r == 0 || !s[nd - 2].is_multiple_of(r) || !s[nd - 1].is_multiple_of(r) {
            return Err(Error::shape("pixel_unshuffle", format!("input {s:?} spatial dims must be divisible by {r}")));
        }
        let (c, h, w) = (s[nd - 3], s[nd - 2], s[nd - 1]);
        let lead: Vec<isize> = s[..nd - 3].iter().map(|&x| x as isize).collect();
        let mut a = lead.clone();
        a.extend([c as isize, (h / r) as isize, r as isize, (w / r) as isize, r as isize]);
        let b = lead.len() as isize;
        let mut perm: Vec<isize> = (0..b).collect();
        perm.extend([b, b + 2, b + 4, b + 1, b + 3]);
        let mut out = lead;
        out.extend([(c * r * r) as isize, (h / r) as isize, (w / r) as isize]);
        self.reshape(&a)?.permute(&perm)?.reshape(&out)
    }

    /// Shuffles channels in `groups` (`F.channel_shuffle`).
    pub fn channel_shuffle(&self, groups: usize) -> Result<Tensor> {
        let s = self.shape();
        if s.len() < 2 || groups == 0 || !s[1].is_multiple_of(groups) {
            return Err(Error::shape("channel_shuffle", format!("channels of {s:?} must be divisible by {groups}")));
        }
        let mut a: Vec<isize> = vec![s[0] as isize, groups as isize, (s[1] / groups) as isize];
        a.extend(s[2..].iter().map(|&x| x as isize));
        let out: Vec<isize> = s.iter().map(|&x| x as isize).collect();
        self.reshape(&a)?.transpose(1, 2)?.reshape(&out)
    }
}
