//! One generated CUDA kernel per fused elementwise program (the lazy backend's groups): a
//! grid-stride loop over the output that loads each input through its strides, evaluates every
//! step with the op table's CUDA expression, and stores the program's outputs. Intermediates live
//! in registers; nothing between the loads and the stores touches memory.
//!
//! Each step's value passes through `ember_keep`, an opaque move, so the compiler cannot contract a
//! multiply of one step and an add of the next into an FMA: every step rounds as its own eager
//! kernel does, and a fused group gives the eager CUDA kernels' bits.
//!
//! The kernel's name is a hash of the program's structure (dtype, steps, outputs; not its shape,
//! which is an argument), so every program of one structure shares one compiled kernel, cached in
//! memory by the backend and on disk by [`crate::nvrtc::compile_cached`].

use super::dtype::cuda_type;
use ember_storage::{ElementwiseProgram, Error, Result, Step};
use std::fmt::Write;

/// Most inputs or outputs of a generated kernel (kernel parameters are passed by value, and each
/// operand's strides take 72 bytes); larger programs run step by step.
pub const MAX_OPERANDS: usize = 24;

/// A generated program kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramKernel {
    /// The `extern "C"` name (and module name): `program_<dtype>_<hash>`.
    pub name: String,
    /// The CUDA C source, prelude included.
    pub source: String,
    /// Inputs the kernel reads (pointers, then outputs, then the shape, then one operand each).
    pub inputs: usize,
    /// Outputs it writes.
    pub outputs: usize,
}

/// FNV-1a, 64 bits: a stable name for a structure (the same in every process and build).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The number of inputs `p` reads.
pub fn input_count(p: &ElementwiseProgram) -> usize {
    p.steps.iter().filter_map(|s| if let Step::Input(i) = *s { Some(i + 1) } else { None }).max().unwrap_or(0)
}

/// Generates the kernel of program `p`:
/// `program_..(const S* in0.., S* out0.., ember_shape s, ember_operand o0..)`.
pub fn program_kernel(p: &ElementwiseProgram) -> Result<ProgramKernel> {
    let inputs = input_count(p);
    p.check(inputs)?;
    if inputs > MAX_OPERANDS || p.outputs.len() > MAX_OPERANDS {
        return Err(Error::unsupported(
            "elementwise program",
            format!(
                "{inputs} inputs and {} outputs (a generated kernel takes at most {MAX_OPERANDS} of each)",
                p.outputs.len()
            ),
        ));
    }
    let t = cuda_type(p.dtype);
    let name = format!("program_{}_{:016x}", t.suffix, fnv1a(&p.structure()));
    let mut params = String::new();
    for i in 0..inputs {
        let _ = write!(params, "const {}* __restrict__ in{i}, ", t.storage);
    }
    for j in 0..p.outputs.len() {
        let _ = write!(params, "{}* __restrict__ out{j}, ", t.storage);
    }
    params.push_str("ember_shape s");
    for i in 0..inputs {
        let _ = write!(params, ", ember_operand o{i}");
    }
    let mut body = String::new();
    for (k, step) in p.steps.iter().enumerate() {
        let _ = match *step {
            Step::Input(i) => {
                writeln!(
                    body,
                    "        const T v{k} = (T)ember_load(in{i}[s.contiguous ? i : ember_offset(i, s, o{i})]);"
                )
            }
            Step::Unary(op, a) => writeln!(
                body,
                "        T v{k};\n        {{ const T x = v{a}; v{k} = ember_keep((T)({})); }}",
                op.cuda_expr()
            ),
            Step::Binary(op, a, b) => writeln!(
                body,
                "        T v{k};\n        {{ const T a = v{a}; const T b = v{b}; v{k} = ember_keep((T)({})); }}",
                op.cuda_expr()
            ),
        };
    }
    for (j, &o) in p.outputs.iter().enumerate() {
        let _ = writeln!(body, "        out{j}[i] = ember_store<{}>(v{o});", t.storage);
    }
    let mut source = String::from(super::PRELUDE);
    source.push_str(KEEP);
    let _ = write!(
        source,
        r#"
// {describe}
extern "C" __global__ void {name}({params}) {{
    typedef {c} T;
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
{body}    }}
}}
"#,
        describe = p.structure(),
        c = t.compute,
    );
    Ok(ProgramKernel { name, source, inputs, outputs: p.outputs.len() })
}

/// `ember_keep(v)`: `v`, through a move the compiler cannot see into (no FMA contraction across
/// steps). The C++ emulation has no contraction to prevent (x86-64 without `-mfma`): identity.
const KEEP: &str = r#"
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float ember_keep(float v) { float r; asm("mov.b32 %0, %1;" : "=f"(r) : "f"(v)); return r; }
__device__ __forceinline__ double ember_keep(double v) { double r; asm("mov.b64 %0, %1;" : "=d"(r) : "d"(v)); return r; }
#else
template <typename T> inline T ember_keep(T v) { return v; }
#endif
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use ember_storage::{BinaryOp, DType, UnaryOp};

    fn gelu_like(dtype: DType, shape: Vec<usize>) -> ElementwiseProgram {
        ElementwiseProgram {
            dtype,
            shape,
            steps: vec![
                Step::Input(0),
                Step::Input(1),
                Step::Binary(BinaryOp::Mul, 0, 1),
                Step::Unary(UnaryOp::Tanh, 2),
                Step::Binary(BinaryOp::Add, 3, 0),
            ],
            outputs: vec![4, 2],
        }
    }

    #[test]
    fn one_name_per_structure_whatever_the_shape() {
        let a = program_kernel(&gelu_like(DType::F32, vec![4])).unwrap();
        let b = program_kernel(&gelu_like(DType::F32, vec![2, 3])).unwrap();
        let c = program_kernel(&gelu_like(DType::F64, vec![4])).unwrap();
        assert_eq!(a.name, b.name);
        assert_eq!(a.source, b.source);
        assert_ne!(a.name, c.name);
        assert_eq!((a.inputs, a.outputs), (2, 2));
        assert!(a.source.contains(&format!("void {}(const float* __restrict__ in0", a.name)), "{}", a.source);
        assert!(a.source.contains("out1[i] = ember_store<float>(v2);"));
    }

    #[test]
    fn bad_programs_are_errors() {
        let mut p = gelu_like(DType::F32, vec![4]);
        p.steps.push(Step::Unary(UnaryOp::Exp, 9));
        assert!(program_kernel(&p).is_err());
        let p = gelu_like(DType::F16, vec![4]);
        assert!(program_kernel(&p).unwrap_err().to_string().contains("f32 or f64"));
    }
}
