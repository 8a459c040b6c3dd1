//! Elementwise programs ([`FusedKernels::elementwise`](ember_storage::FusedKernels::elementwise))
//! on CUDA: for now each step is launched as the backend's own unary/binary kernel, so results are
//! the eager kernels' bits; one generated kernel per program is the planned fast path.

use crate::CudaBackend;
use ember_storage::{Backend, Buffer, ElementwiseProgram, Layout, Result, Step, View};

/// Runs `program` step by step with the backend's elementwise kernels.
pub(crate) fn run_stepwise(be: &CudaBackend, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
    program.check(inputs.len())?;
    let dense = Layout::contiguous(&program.shape);
    // each step's value: an input view, or a dense buffer of the program's shape
    let mut values: Vec<(Buffer, Layout)> = Vec::with_capacity(program.steps.len());
    for s in &program.steps {
        let v = match *s {
            Step::Input(i) => (inputs[i].0.clone(), inputs[i].1.clone()),
            Step::Unary(op, a) => (be.unary(op, (&values[a].0, &values[a].1))?, dense.clone()),
            Step::Binary(op, a, b) => {
                (be.binary(op, (&values[a].0, &values[a].1), (&values[b].0, &values[b].1))?, dense.clone())
            }
        };
        values.push(v);
    }
    program
        .outputs
        .iter()
        .map(|&o| {
            let (b, l) = &values[o];
            if matches!(program.steps[o], Step::Input(_)) {
                be.cast((b, l), program.dtype)
            } else {
                Ok(b.clone())
            }
        })
        .collect()
}
