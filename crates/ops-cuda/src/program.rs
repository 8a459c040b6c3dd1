//! Elementwise programs ([`FusedKernels::elementwise`](ember_storage::FusedKernels::elementwise))
//! on CUDA: one generated kernel per program structure ([`crate::kernels::program`]), compiled by
//! NVRTC on first use and cached in memory and on disk; every step rounds as its eager kernel does,
//! so results are the eager kernels' bits. Programs too large for one kernel's parameters run step
//! by step with the backend's own kernels.

use crate::backend::driver_err;
use crate::kernels::program::{input_count, program_kernel, MAX_OPERANDS};
use crate::launch::elementwise_args;
use crate::CudaBackend;
use cudarc::driver::PushKernelArg;
use ember_storage::{Buffer, ElementwiseProgram, Error, Layout, Result, View};
use std::sync::Arc;

const OP: &str = "elementwise program";

/// Runs `program` as one generated kernel (or step by step when it has too many operands).
pub(crate) fn run(be: &CudaBackend, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
    program.check(inputs.len())?;
    if input_count(program) != inputs.len() || inputs.len() > MAX_OPERANDS || program.outputs.len() > MAX_OPERANDS {
        return program.run_stepwise(be, inputs);
    }
    let mut bufs = Vec::with_capacity(inputs.len());
    for v in inputs {
        be.check(*v, OP)?;
        let b = be.buffer(v.0, OP)?;
        if b.dtype != program.dtype || v.1.shape() != program.shape.as_slice() {
            return Err(Error::shape(
                OP,
                format!(
                    "input {:?} {} does not match the program's {:?} {}",
                    v.1.shape(),
                    b.dtype,
                    program.shape,
                    program.dtype
                ),
            ));
        }
        bufs.push(b);
    }
    let n = program.numel();
    let outs = program.outputs.iter().map(|_| be.alloc(program.dtype, n, OP)).collect::<Result<Vec<_>>>()?;
    if n > 0 {
        let kernel = program_kernel(program)?;
        let f = be.function(&kernel.name, || kernel.source.clone(), &kernel.name)?;
        let layouts: Vec<&Layout> = inputs.iter().map(|v| v.1).collect();
        let (s, o) = elementwise_args(OP, &layouts)?;
        let mut l = be.stream.launch_builder(&f);
        for b in &bufs {
            l.arg(&b.data);
        }
        for out in &outs {
            l.arg(&out.data);
        }
        l.arg(&s);
        for operand in &o {
            l.arg(operand);
        }
        // SAFETY: the kernel's parameters are the inputs, the outputs, the shape and one operand per
        // input, in that order (see `program_kernel`); it reads only the checked views and writes
        // `n` elements of each output, each allocated with `n` elements above.
        unsafe { l.launch(CudaBackend::config(n, be.max_blocks)) }.map_err(driver_err(OP))?;
    }
    Ok(outs.into_iter().map(|b| Arc::new(b) as Buffer).collect())
}
