//! [`OpDescriptor`]: what Ember declares about one non-elementwise op, kept beside its
//! implementation (the role of an entry in PyTorch's `derivatives.yaml`, or of candle's `CustomOp`).
//!
//! Elementwise ops are declared once in the op table (`ember_storage::op_table`). Ops with their
//! own shape logic (convolution, pooling, norms, resampling, recurrent layers, attention) each have
//! a `const` descriptor in the file that implements them, next to the forward and, where it is
//! hand-written, the backward; typed shape-rule functions (such as [`super::conv_output_shape`])
//! live there too, and the forwards validate through them. [`crate::NN_OPS`] lists the descriptors of
//! this crate; `ember_nn::OPS` lists those of the layers built above it. The tests check
//! that every listed conformance name has PyTorch cases, that every PyTorch case of these families
//! is claimed by one descriptor, and that the shape rules agree with the forwards.

/// How an op's gradient is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpBackward {
    /// The forward is a composition of differentiable ops, which autograd records: the gradient and
    /// every higher order follow from theirs.
    Composed,
    /// The forward records one graph node with a hand-written backward, `formula` in words. When a
    /// backward pass itself records a graph (`create_graph`), the node differentiates the composed
    /// form instead, so higher orders stay available.
    Node {
        /// The backward, in words (the code beside the descriptor is the definition).
        formula: &'static str,
    },
    /// The output is not differentiable (indices, integer results).
    NotDifferentiable,
}

/// One non-elementwise op's declaration.
#[derive(Clone, Copy, Debug)]
pub struct OpDescriptor {
    /// PyTorch's name for the op (`torch.nn.functional.<name>` or `torch.<name>`), which Ember's
    /// errors use too.
    pub name: &'static str,
    /// The Rust entry point of the forward, e.g. `"Tensor::conv"`.
    pub forward: &'static str,
    /// The op names of the PyTorch conformance cases this forward answers.
    pub conformance: &'static [&'static str],
    /// The output shape as a function of the inputs' shapes and the options, as PyTorch documents
    /// it; where a typed function computes it, its name.
    pub shape_rule: &'static str,
    /// How the gradient is obtained.
    pub backward: OpBackward,
}
