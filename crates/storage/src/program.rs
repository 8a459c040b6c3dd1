//! Elementwise programs: a fused group of elementwise ops as data, run by a backend in one pass
//! ([`crate::FusedKernels::elementwise`]). The lazy backend (`ember-lazy`, DESIGN.md decision 13)
//! builds them from its pending graph; the CPU backend runs them tile by tile in cache, the CUDA
//! backend as one generated kernel.
//!
//! A program is a list of [`Step`]s in dependency order over one output shape and one floating
//! dtype: a step reads an input view or applies a unary or binary op from the op table to earlier
//! steps. Every step's value has the program's shape; inputs are views already broadcast to it.
//! Per element, a backend must compute each step exactly as its own `unary`/`binary` would, so a
//! fused result is bit-identical to the ops run one by one.
//!
//! ```
//! use ember_storage::{BinaryOp, DType, ElementwiseProgram, Step, UnaryOp};
//! // tanh(x * y) + x, keeping only the sum
//! let p = ElementwiseProgram {
//!     dtype: DType::F32,
//!     shape: vec![4],
//!     steps: vec![
//!         Step::Input(0),
//!         Step::Input(1),
//!         Step::Binary(BinaryOp::Mul, 0, 1),
//!         Step::Unary(UnaryOp::Tanh, 2),
//!         Step::Binary(BinaryOp::Add, 3, 0),
//!     ],
//!     outputs: vec![4],
//! };
//! assert!(p.check(2).is_ok());
//! assert_eq!(p.describe(), "f32 [4]: in0 in1 mul(0,1) tanh(2) add(3,0) -> [4]");
//! assert_eq!(p.structure(), "f32 in0 in1 mul(0,1) tanh(2) add(3,0) -> [4]");
//! ```

use crate::ops::{BinaryOp, UnaryOp};
use crate::{Backend, Buffer, DType, Error, Layout, Result, View};
use std::fmt::Write;

/// One step of an [`ElementwiseProgram`]; operands name earlier steps by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The program's input view number `i`.
    Input(usize),
    /// A non-predicate unary op of the op table applied to an earlier step.
    Unary(UnaryOp, usize),
    /// A non-comparison binary op of the op table applied to two earlier steps.
    Binary(BinaryOp, usize, usize),
}

/// A fused group of elementwise ops over one shape and one floating dtype (f32 or f64).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElementwiseProgram {
    /// The dtype of every input, step and output.
    pub dtype: DType,
    /// The shape of every step (inputs are views broadcast to it).
    pub shape: Vec<usize>,
    /// The steps, each after the steps it reads.
    pub steps: Vec<Step>,
    /// The steps whose values are returned, one dense row-major buffer each, in this order.
    pub outputs: Vec<usize>,
}

impl ElementwiseProgram {
    /// Number of elements of every step.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks the program against `inputs` input views: operands refer to earlier steps, inputs
    /// exist, ops are arithmetic (no predicates or comparisons), the dtype is f32 or f64.
    pub fn check(&self, inputs: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("elementwise program", msg));
        if !matches!(self.dtype, DType::F32 | DType::F64) {
            return bad(format!("dtype {} (programs are f32 or f64)", self.dtype));
        }
        for (k, s) in self.steps.iter().enumerate() {
            let ok = match *s {
                Step::Input(i) => i < inputs,
                Step::Unary(op, a) => a < k && !op.is_predicate(),
                Step::Binary(op, a, b) => a < k && b < k && !op.is_predicate(),
            };
            if !ok {
                return bad(format!("step {k} ({s:?}) reads a later step, a missing input or is a predicate"));
            }
        }
        if self.outputs.is_empty() || self.outputs.iter().any(|&o| o >= self.steps.len()) {
            return bad(format!("outputs {:?} of {} steps", self.outputs, self.steps.len()));
        }
        Ok(())
    }

    /// A one-line description of the program, for diagnostics (the lazy log).
    pub fn describe(&self) -> String {
        let structure = self.structure();
        let (dtype, rest) = structure.split_once(' ').unwrap_or((&structure, ""));
        format!("{dtype} {:?}: {rest}", self.shape)
    }

    /// What a compiled form of the program depends on: [`describe`](Self::describe) without the
    /// shape (`"f32 in0 in1 mul(0,1) -> [2]"`), so programs of one structure share one kernel.
    pub fn structure(&self) -> String {
        let mut s = format!("{}", self.dtype);
        for step in &self.steps {
            let _ = match *step {
                Step::Input(i) => write!(s, " in{i}"),
                Step::Unary(op, a) => write!(s, " {}({a})", op.name()),
                Step::Binary(op, a, b) => write!(s, " {}({a},{b})", op.name()),
            };
        }
        let _ = write!(s, " -> {:?}", self.outputs);
        s
    }

    /// Runs the program one step at a time with `be`'s own `unary`/`binary` (the reference a fused
    /// runner must match bit for bit, and the fallback of a backend without fused programs).
    /// An output that is an input is returned as a dense copy.
    pub fn run_stepwise(&self, be: &dyn Backend, inputs: &[View]) -> Result<Vec<Buffer>> {
        self.check(inputs.len())?;
        let dense = Layout::contiguous(&self.shape);
        let mut values: Vec<(Buffer, Layout)> = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            values.push(match *s {
                Step::Input(i) => (inputs[i].0.clone(), inputs[i].1.clone()),
                Step::Unary(op, a) => (be.unary(op, (&values[a].0, &values[a].1))?, dense.clone()),
                Step::Binary(op, a, b) => {
                    (be.binary(op, (&values[a].0, &values[a].1), (&values[b].0, &values[b].1))?, dense.clone())
                }
            });
        }
        self.outputs
            .iter()
            .map(|&o| {
                let (b, l) = &values[o];
                if matches!(self.steps[o], Step::Input(_)) {
                    be.cast((b, l), self.dtype)
                } else {
                    Ok(b.clone())
                }
            })
            .collect()
    }
}
