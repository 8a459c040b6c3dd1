//! The generated CUDA kernels run on the CPU: each dtype's module is compiled as C++ under
//! `emulation/cuda_emulation.h` (the system `c++`, or `$CXX`), loaded, and every kernel is launched
//! over strided and broadcast operands with several blocks and a grid-stride loop; its output must
//! match the CPU backend's for the same op and views. This catches indexing and expression mistakes
//! before a GPU sees them. A missing C++ compiler skips with a message, unless
//! `EMBER_REQUIRE_NVRTC=1` (CI), where it fails.

use ember_ops_cpu::CpuBackend;
use ember_ops_cuda::kernels::dtype::{cuda_type, CUDA_TYPES};
use ember_ops_cuda::kernels::elementwise::{module_source, ElementwiseOp, KernelSpec};
use ember_ops_cuda::kernels::{movement, reduce};
use ember_ops_cuda::launch::{elementwise_args, reduce_view, OperandArg, ShapeArg};
use ember_storage::{Backend, BinaryOp, DType, HostData, Layout, ReduceOp};
use half::{bf16, f16};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles C++ source to a shared library; `None` (after saying so) without a compiler.
fn compile_cpp(dir: &Path, stem: &str, cpp: &str) -> Option<PathBuf> {
    let (cpp_path, lib) = (dir.join(format!("{stem}.cpp")), dir.join(format!("lib{stem}.so")));
    std::fs::write(&cpp_path, cpp).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let header_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulation");
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-fwrapv", "-pthread", "-shared", "-fPIC", "-w"])
        .arg(format!("-I{}", header_dir.display()))
        .arg("-o")
        .arg(&lib)
        .arg(&cpp_path)
        .output();
    match out {
        Err(e) => {
            println!("SKIPPED: no C++ compiler ({cxx}: {e})");
            assert!(std::env::var("EMBER_REQUIRE_NVRTC").is_err(), "CI needs a C++ compiler for this test");
            None
        }
        Ok(o) => {
            assert!(o.status.success(), "{stem}: {}", String::from_utf8_lossy(&o.stderr));
            Some(lib)
        }
    }
}

/// A launcher running every block and thread of `kernel` in turn (these kernels never sync).
fn launcher(kernel: &str, params: &str, args: &str) -> String {
    format!(
        "extern \"C\" void launch_{kernel}(unsigned grid, unsigned block, {params}) {{\n    gridDim = {{grid, 1, 1}}; blockDim = {{block, 1, 1}};\n    for (unsigned bi = 0; bi < grid; ++bi) for (unsigned ti = 0; ti < block; ++ti) {{\n        blockIdx = {{bi, 0, 0}}; threadIdx = {{ti, 0, 0}};\n        {kernel}({args});\n    }}\n}}\n"
    )
}

/// Builds the shared library of one dtype's module with its launchers; `None` without a compiler.
fn build_module(dir: &Path, dtype: DType) -> Option<(PathBuf, Vec<KernelSpec>)> {
    let (src, specs) = module_source(dtype);
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(&src);
    // one launcher per kernel: every block and thread in turn (elementwise kernels never sync)
    for s in &specs {
        let (params, args) = match s.op {
            ElementwiseOp::Unary(_) => {
                ("const void* in, void* out, const ember_shape* s, const ember_operand* a", "(const IN*)in, (OUT*)out, *s, *a")
            }
            ElementwiseOp::Binary(_) => (
                "const void* x, const void* y, void* out, const ember_shape* s, const ember_operand* a, const ember_operand* b",
                "(const IN*)x, (const IN*)y, (OUT*)out, *s, *a, *b",
            ),
        };
        let args = args.replace("IN", cuda_type(s.input).storage).replace("OUT", cuda_type(s.output).storage);
        cpp.push_str(&launcher(&s.name, params, &args));
    }
    let lib = compile_cpp(dir, &format!("ew_{}", cuda_type(dtype).suffix), &cpp)?;
    Some((lib, specs))
}

/// Test values of a dtype: ordinary ones in a small range and the special ones.
fn values(dtype: DType, n: usize, seed: u64, nonzero: bool) -> HostData {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-30, 30.0, -30.0];
    let floats: Vec<f64> = (0..n)
        .map(|i| {
            let v = if i % 4 == 3 {
                specials[(next() as usize) % specials.len()]
            } else {
                (next() % 7000) as f64 / 1000.0 - 3.5
            };
            if nonzero && v == 0.0 {
                1.5
            } else {
                v
            }
        })
        .collect();
    let ints: Vec<i64> = (0..n)
        .map(|i| {
            let v = match i % 9 {
                7 => i64::MAX,
                8 => i64::MIN,
                _ => (next() % 101) as i64 - 50,
            };
            if nonzero && v == 0 {
                3
            } else {
                v
            }
        })
        .collect();
    match dtype {
        DType::F32 => HostData::F32(floats.iter().map(|&v| v as f32).collect()),
        DType::F64 => HostData::F64(floats),
        DType::F16 => HostData::F16(floats.iter().map(|&v| f16::from_f64(v)).collect()),
        DType::BF16 => HostData::BF16(floats.iter().map(|&v| bf16::from_f64(v)).collect()),
        DType::I64 => HostData::I64(ints),
        DType::I32 => HostData::I32(ints.iter().map(|&v| v as i32).collect()),
        DType::U8 => HostData::U8(
            ints.iter().map(|&v| v as u8).filter(|&v| !nonzero || v != 0).chain(std::iter::repeat(1)).take(n).collect(),
        ),
        DType::Bool => HostData::Bool(ints.iter().map(|&v| v % 2 == 0).collect()),
    }
}

/// The host pointer of a `HostData`'s elements (layouts match the CUDA storage types).
fn ptr(d: &HostData) -> *const std::ffi::c_void {
    ember_storage::with_host_data!(d, v => v.as_ptr().cast())
}

fn zeroed(dtype: DType, n: usize) -> HostData {
    match dtype {
        DType::F32 => HostData::F32(vec![0.0; n]),
        DType::F64 => HostData::F64(vec![0.0; n]),
        DType::F16 => HostData::F16(vec![f16::ZERO; n]),
        DType::BF16 => HostData::BF16(vec![bf16::ZERO; n]),
        DType::I64 => HostData::I64(vec![0; n]),
        DType::I32 => HostData::I32(vec![0; n]),
        DType::U8 => HostData::U8(vec![0; n]),
        DType::Bool => HostData::Bool(vec![false; n]),
    }
}

/// As f64 for comparison.
fn as_f64(d: &HostData) -> Vec<f64> {
    match d {
        HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        HostData::F64(v) => v.clone(),
        HostData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        HostData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        HostData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        HostData::U8(v) => v.iter().map(|&x| x as f64).collect(),
        HostData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    }
}

/// Relative tolerance per output dtype: ops-cpu's vectorised exp/tanh and libm differ by an ulp
/// or so; f16/bf16 results round once from f32.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 3e-6,
        DType::F64 => 1e-13,
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        _ => 0.0,
    }
}

fn close(got: f64, want: f64, rtol: f64) -> bool {
    (got.is_nan() && want.is_nan()) || got == want || (got - want).abs() <= rtol * (1.0 + want.abs())
}

/// Up to three "[i] got vs CPU want" lines for the elements of `got` and `want` that differ.
fn differences(got: &HostData, want: &HostData, rtol: f64) -> Vec<String> {
    let (g, w) = (as_f64(got), as_f64(want));
    (0..g.len())
        .filter(|&i| !close(g[i], w[i], rtol))
        .map(|i| format!("[{i}] {} vs CPU {}", g[i], w[i]))
        .take(3)
        .collect()
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Unary =
    unsafe extern "C" fn(u32, u32, *const std::ffi::c_void, *mut std::ffi::c_void, *const ShapeArg, *const OperandArg);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Binary = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
);

#[test]
fn every_elementwise_kernel_matches_the_cpu_backend_under_emulation() {
    let dir = std::env::temp_dir().join(format!("ember-emulation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let built: Vec<_> = std::thread::scope(|scope| {
        let jobs: Vec<_> = CUDA_TYPES.iter().map(|t| (t.dtype, scope.spawn(|| build_module(&dir, t.dtype)))).collect();
        jobs.into_iter().map(|(d, j)| (d, j.join().expect("build thread"))).collect()
    });
    if built.iter().any(|(_, b)| b.is_none()) {
        return;
    }
    let cpu = CpuBackend::new();
    // a [5, 7] output; the first operand a transposed view of a [7, 5] buffer, the second a [5, 1]
    // column broadcast along dim 1 (unary kernels read the transposed one)
    let t_layout = Layout::contiguous(&[7, 5]).transpose(0, 1).unwrap();
    let b_layout = Layout::contiguous(&[5, 1]).expand(&[5, 7]).unwrap();
    let n = 35;
    let (mut checked, mut failures) = (0, vec![]);
    for (dtype, module) in built {
        let (lib_path, specs) = module.unwrap();
        // SAFETY: the library was just built from the generated sources; its launchers have the
        // signatures declared by `Unary` and `Binary`.
        let lib = unsafe { libloading::Library::new(&lib_path) }.expect("load the emulated module");
        for spec in &specs {
            let int_div = matches!(spec.op, ElementwiseOp::Binary(BinaryOp::Remainder | BinaryOp::FloorDivide))
                && !dtype.is_float();
            let a = values(dtype, n, 7, false);
            let b = values(dtype, 5, 11, int_div);
            let out = zeroed(spec.output, n);
            let expected = match spec.op {
                ElementwiseOp::Unary(op) => {
                    let (s, o) = elementwise_args("test", &[&t_layout]).unwrap();
                    // SAFETY: see above; buffers hold every element the layouts address.
                    unsafe {
                        let f: libloading::Symbol<Unary> = lib.get(format!("launch_{}", spec.name).as_bytes()).unwrap();
                        f(3, 4, ptr(&a), ptr(&out).cast_mut(), &s, &o[0]);
                    }
                    let buf = cpu.upload(a.clone()).unwrap();
                    cpu.unary(op, (&buf, &t_layout)).map(|r| cpu.download((&r, &Layout::contiguous(&[5, 7]))).unwrap())
                }
                ElementwiseOp::Binary(op) => {
                    let (s, o) = elementwise_args("test", &[&t_layout, &b_layout]).unwrap();
                    // SAFETY: as above.
                    unsafe {
                        let f: libloading::Symbol<Binary> =
                            lib.get(format!("launch_{}", spec.name).as_bytes()).unwrap();
                        f(3, 4, ptr(&a), ptr(&b), ptr(&out).cast_mut(), &s, &o[0], &o[1]);
                    }
                    let (ba, bb) = (cpu.upload(a.clone()).unwrap(), cpu.upload(b.clone()).unwrap());
                    cpu.binary(op, (&ba, &t_layout), (&bb, &b_layout))
                        .map(|r| cpu.download((&r, &Layout::contiguous(&[5, 7]))).unwrap())
                }
            };
            let expected = match expected {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{}: the CPU backend refuses: {e}", spec.name));
                    continue;
                }
            };
            assert_eq!(expected.dtype(), spec.output, "{}", spec.name);
            let bad = differences(&out, &expected, tolerance(spec.output));
            if !bad.is_empty() {
                failures.push(format!("{}: {}", spec.name, bad.join(", ")));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} kernels ran under emulation and matched the CPU backend");
    assert!(failures.is_empty(), "{} kernels differ:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 300, "{checked}");
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Cast =
    unsafe extern "C" fn(u32, u32, *const std::ffi::c_void, *mut std::ffi::c_void, *const ShapeArg, *const OperandArg);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Copy = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
);

/// Every cast kernel (64 dtype pairs) matches the CPU backend's `cast` on a transposed view, NaN,
/// infinities and out-of-range values included; every copy kernel writes a transposed view into a
/// strided destination as the CPU backend's `assign` does.
#[test]
fn cast_and_copy_kernels_match_the_cpu_backend_under_emulation() {
    let dir = std::env::temp_dir().join(format!("ember-emulation-mv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, _) = movement::module_source();
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(&src);
    for f in CUDA_TYPES {
        for t in CUDA_TYPES {
            let args = format!("(const {}*)in, ({}*)out, *s, *a", f.storage, t.storage);
            cpp.push_str(&launcher(
                &movement::cast_name(f.dtype, t.dtype),
                "const void* in, void* out, const ember_shape* s, const ember_operand* a",
                &args,
            ));
        }
        let args = format!("(const {0}*)in, ({0}*)out, *s, *a, *b", f.storage);
        cpp.push_str(&launcher(
            &movement::copy_name(f.dtype),
            "const void* in, void* out, const ember_shape* s, const ember_operand* a, const ember_operand* b",
            &args,
        ));
    }
    let Some(lib_path) = compile_cpp(&dir, "movement", &cpp) else { return };
    // SAFETY: built just above from the generated sources, with launchers of these signatures.
    let lib = unsafe { libloading::Library::new(&lib_path) }.expect("load the emulated module");
    let cpu = CpuBackend::new();
    let t_layout = Layout::contiguous(&[7, 5]).transpose(0, 1).unwrap();
    let dense = Layout::contiguous(&[5, 7]);
    let (n, mut failures, mut checked) = (35, vec![], 0);
    for f in CUDA_TYPES {
        let a = values(f.dtype, n, 5, false);
        let buf = cpu.upload(a.clone()).unwrap();
        for t in CUDA_TYPES {
            let out = zeroed(t.dtype, n);
            let (s, o) = elementwise_args("cast", &[&t_layout]).unwrap();
            // SAFETY: as above; the buffers hold every element the layouts address.
            unsafe {
                let k: libloading::Symbol<Cast> =
                    lib.get(format!("launch_{}", movement::cast_name(f.dtype, t.dtype)).as_bytes()).unwrap();
                k(2, 8, ptr(&a), ptr(&out).cast_mut(), &s, &o[0]);
            }
            let want = cpu.download((&cpu.cast((&buf, &t_layout), t.dtype).unwrap(), &dense)).unwrap();
            let bad = differences(&out, &want, tolerance(t.dtype));
            if !bad.is_empty() {
                failures.push(format!("{}: {}", movement::cast_name(f.dtype, t.dtype), bad.join(", ")));
            }
            checked += 1;
        }
        // copy: the transposed [5, 7] view into the transposed view of a zeroed [7, 5] destination
        let out = zeroed(f.dtype, n);
        let (s, o) = elementwise_args("copy_", &[&t_layout, &t_layout]).unwrap();
        // SAFETY: as above.
        unsafe {
            let k: libloading::Symbol<Copy> =
                lib.get(format!("launch_{}", movement::copy_name(f.dtype)).as_bytes()).unwrap();
            k(2, 8, ptr(&a), ptr(&out).cast_mut(), &s, &o[0], &o[1]);
        }
        let dst = cpu.upload(zeroed(f.dtype, n)).unwrap();
        cpu.assign((&dst, &t_layout), (&buf, &t_layout)).unwrap();
        let want = cpu.download((&dst, &Layout::contiguous(&[7, 5]))).unwrap();
        let (g, w) = (as_f64(&out), as_f64(&want));
        if (0..n).any(|i| !close(g[i], w[i], 0.0)) {
            failures.push(format!("{}: {g:?} vs CPU {w:?}", movement::copy_name(f.dtype)));
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} cast and copy kernels ran under emulation and matched the CPU backend");
    assert!(failures.is_empty(), "{} kernels differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Reduce = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    i64,
    i64,
);

/// Every reduction kernel (8 ops x 8 dtypes) over a transposed [4, 6, 5] view, reducing one middle
/// dim, the outer and inner dims together, and the last dim, with fewer blocks than rows and fewer
/// threads than elements per row (the grid-stride and block-stride loops and the shared-memory tree
/// all run, threads meeting at barriers), matches the CPU backend.
#[test]
fn reduction_kernels_match_the_cpu_backend_under_emulation() {
    let dir = std::env::temp_dir().join(format!("ember-emulation-rd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, kernels) = reduce::module_source();
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(&src);
    for (op, dtype, name) in &kernels {
        let (s, o) = (cuda_type(*dtype).storage, cuda_type(reduce::output_dtype(*op, *dtype)).storage);
        cpp.push_str(&format!(
            "extern \"C\" void launch_{name}(unsigned grid, unsigned block, const void* in, void* out, const ember_shape* s, const ember_operand* a, long long rows, long long k) {{\n    const ember_shape sv = *s; const ember_operand av = *a;\n    ember_launch_threaded(grid, block, [=] {{ {name}((const {s}*)in, ({o}*)out, sv, av, rows, k); }});\n}}\n"
        ));
    }
    let Some(lib_path) = compile_cpp(&dir, "reduce", &cpp) else { return };
    // SAFETY: built just above from the generated sources, with launchers of the `Reduce` signature.
    let lib = unsafe { libloading::Library::new(&lib_path) }.expect("load the emulated module");
    let cpu = CpuBackend::new();
    let view = Layout::contiguous(&[6, 4, 5]).transpose(0, 1).unwrap(); // [4, 6, 5], strided
    let n = 120;
    let (mut failures, mut checked) = (vec![], 0);
    for (op, dtype, name) in &kernels {
        let a = values(*dtype, n, 3, false);
        let buf = cpu.upload(a.clone()).unwrap();
        let dim_sets: &[&[usize]] = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => &[&[1], &[2]],
            _ => &[&[1], &[0, 2], &[2]],
        };
        for &dims in dim_sets {
            let (permuted, rows, k) = reduce_view("test", &view, dims).unwrap();
            let (s, o) = elementwise_args("test", &[&permuted]).unwrap();
            let out_dtype = reduce::output_dtype(*op, *dtype);
            let out = zeroed(out_dtype, rows);
            // SAFETY: as above; `out` holds `rows` elements, the view addresses the buffer only.
            unsafe {
                let f: libloading::Symbol<Reduce> = lib.get(format!("launch_{name}").as_bytes()).unwrap();
                f(3, 8, ptr(&a), ptr(&out).cast_mut(), &s, &o[0], rows as i64, k as i64);
            }
            let want = cpu.reduce(*op, (&buf, &view), dims).unwrap();
            let want = cpu.download((&want, &Layout::contiguous(&[rows]))).unwrap();
            assert_eq!(want.dtype(), out_dtype, "{name}");
            // float sums and products add in another order than the CPU's: a few ulps of the result
            let rtol = tolerance(out_dtype) * if matches!(op, ReduceOp::Sum | ReduceOp::Prod) { 4.0 } else { 1.0 };
            let bad = differences(&out, &want, rtol);
            if !bad.is_empty() {
                failures.push(format!("{name} over {dims:?}: {}", bad.join(", ")));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} reduction kernels ran {checked} reductions under emulation and matched the CPU backend",
        kernels.len()
    );
    assert!(failures.is_empty(), "{} reductions differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Softmax = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
    i32,
);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Where = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const std::ffi::c_void,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    *const OperandArg,
);

/// softmax and log_softmax (f16, bf16, f32, f64) along each dim of a transposed [4, 6, 5] view, and
/// `where` for every dtype over strided and broadcast operands, match the CPU backend.
#[test]
fn softmax_and_where_kernels_match_the_cpu_backend_under_emulation() {
    let dir = std::env::temp_dir().join(format!("ember-emulation-sm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, kernels) = reduce::softmax_source();
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(&src);
    for (dtype, name) in &kernels {
        let s = cuda_type(*dtype).storage;
        cpp.push_str(&format!(
            "extern \"C\" void launch_{name}(unsigned grid, unsigned block, const void* in, void* out, const ember_shape* s, const ember_operand* a, const ember_operand* o, long long rows, long long k, int lg) {{\n    const ember_shape sv = *s; const ember_operand av = *a, ov = *o;\n    ember_launch_threaded(grid, block, [=] {{ {name}((const {s}*)in, ({s}*)out, sv, av, ov, rows, k, lg); }});\n}}\n"
        ));
    }
    let (msrc, _) = movement::module_source();
    let mut mcpp = String::from("#include \"cuda_emulation.h\"\n");
    mcpp.push_str(&msrc);
    for t in CUDA_TYPES {
        let args = format!("(const bool*)c, (const {0}*)x, (const {0}*)y, ({0}*)out, *s, *oc, *ox, *oy", t.storage);
        mcpp.push_str(&launcher(&movement::where_name(t.dtype), "const void* c, const void* x, const void* y, void* out, const ember_shape* s, const ember_operand* oc, const ember_operand* ox, const ember_operand* oy", &args));
    }
    let (Some(lib_path), Some(mlib_path)) = (compile_cpp(&dir, "softmax", &cpp), compile_cpp(&dir, "where", &mcpp))
    else {
        return;
    };
    // SAFETY: built just above from the generated sources, with launchers of these signatures.
    let (lib, mlib) =
        unsafe { (libloading::Library::new(&lib_path).unwrap(), libloading::Library::new(&mlib_path).unwrap()) };
    let cpu = CpuBackend::new();
    let view = Layout::contiguous(&[6, 4, 5]).transpose(0, 1).unwrap();
    let n = 120;
    let mut failures = vec![];
    let mut checked = 0;
    for (dtype, name) in &kernels {
        let a = values(*dtype, n, 9, false);
        let buf = cpu.upload(a.clone()).unwrap();
        for dim in 0..3 {
            for log in [false, true] {
                let (permuted, rows, k) = reduce_view("test", &view, &[dim]).unwrap();
                let (dense_p, _, _) = reduce_view("test", &Layout::contiguous(&[4, 6, 5]), &[dim]).unwrap();
                let (s, o) = elementwise_args("test", &[&permuted, &dense_p]).unwrap();
                let out = zeroed(*dtype, n);
                // SAFETY: as above; `out` holds the n elements the dense layout addresses.
                unsafe {
                    let f: libloading::Symbol<Softmax> = lib.get(format!("launch_{name}").as_bytes()).unwrap();
                    f(3, 8, ptr(&a), ptr(&out).cast_mut(), &s, &o[0], &o[1], rows as i64, k as i64, i32::from(log));
                }
                let want = cpu.softmax((&buf, &view), dim, log).unwrap();
                let want = cpu.download((&want, &Layout::contiguous(&[4, 6, 5]))).unwrap();
                let bad = differences(&out, &want, tolerance(*dtype) * 4.0);
                if !bad.is_empty() {
                    failures.push(format!("{name} dim {dim} log {log}: {}", bad.join(", ")));
                }
                checked += 1;
            }
        }
    }
    let t_layout = Layout::contiguous(&[7, 5]).transpose(0, 1).unwrap();
    let col = Layout::contiguous(&[5, 1]).expand(&[5, 7]).unwrap();
    let cond = values(DType::Bool, 35, 13, false);
    let cbuf = cpu.upload(cond.clone()).unwrap();
    for t in CUDA_TYPES {
        let (x, y) = (values(t.dtype, 35, 2, false), values(t.dtype, 5, 4, false));
        let (s, o) = elementwise_args("where", &[&t_layout, &t_layout, &col]).unwrap();
        let out = zeroed(t.dtype, 35);
        // SAFETY: as above.
        unsafe {
            let f: libloading::Symbol<Where> =
                mlib.get(format!("launch_{}", movement::where_name(t.dtype)).as_bytes()).unwrap();
            f(2, 8, ptr(&cond), ptr(&x), ptr(&y), ptr(&out).cast_mut(), &s, &o[0], &o[1], &o[2]);
        }
        let (bx, by) = (cpu.upload(x).unwrap(), cpu.upload(y).unwrap());
        let want = cpu.where_cond((&cbuf, &t_layout), (&bx, &t_layout), (&by, &col)).unwrap();
        let want = cpu.download((&want, &Layout::contiguous(&[5, 7]))).unwrap();
        let (g, w) = (as_f64(&out), as_f64(&want));
        if (0..35).any(|i| !close(g[i], w[i], 0.0)) {
            failures.push(format!("{}: {g:?} vs CPU {w:?}", movement::where_name(t.dtype)));
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} softmax and where launches ran under emulation and matched the CPU backend");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Gather = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const i64,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
    *mut i64,
);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Scatter = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const i64,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
    *mut i64,
);

/// `d`'s bytes in 8-byte words: the scatter kernels' compare-and-swap reads the aligned 32-bit word
/// around a 1- or 2-byte element, so the test's buffers are aligned and padded as the backend's are.
fn aligned_words(d: &HostData) -> Vec<u64> {
    let bytes = d.len() * d.dtype().size_in_bytes();
    let mut words = vec![0u64; bytes.div_ceil(8)];
    // SAFETY: `words` holds at least `bytes` bytes; the source holds exactly that many.
    unsafe { std::ptr::copy_nonoverlapping(ptr(d).cast::<u8>(), words.as_mut_ptr().cast::<u8>(), bytes) };
    words
}

/// The first `n` elements of `dtype` in `words`.
fn from_words(words: &[u64], dtype: DType, n: usize) -> HostData {
    let out = zeroed(dtype, n);
    // SAFETY: `out` holds `n` elements of `dtype`; `words` at least as many bytes (built for them).
    unsafe {
        std::ptr::copy_nonoverlapping(
            words.as_ptr().cast::<u8>(),
            ptr(&out).cast_mut().cast(),
            n * dtype.size_in_bytes(),
        )
    };
    out
}

/// One indexing test: the op, the index values, the index's layout and the src shape.
type IndexCase = (ember_storage::IndexOp, Vec<i64>, Layout, Option<Vec<usize>>);

/// index_select, gather, scatter, scatter_add and index_add for every dtype, over a transposed
/// [4, 6, 5] input and strided indices (repeated ones for the adds), through the same host plan
/// the backend uses ([`ember_ops_cuda::indexing::plan`]), match the CPU backend; an index out of
/// range sets the error flag (and the CPU backend refuses it too).
#[test]
fn indexing_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::indexing::{plan, IndexKernel};
    use ember_ops_cuda::kernels::index;
    use ember_storage::IndexOp;
    let dir = std::env::temp_dir().join(format!("ember-emulation-ix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, _) = index::module_source();
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(&src);
    for t in CUDA_TYPES {
        let args = format!("(const {0}*)x, idx, ({0}*)out, *s, *a, *b, stride, size, err", t.storage);
        cpp.push_str(&launcher(&index::gather_name(t.dtype), "const void* x, const long long* idx, void* out, const ember_shape* s, const ember_operand* a, const ember_operand* b, long long stride, long long size, long long* err", &args));
        for add in [false, true] {
            let args = format!("(const {0}*)x, idx, ({0}*)out, *s, *a, *b, *c, stride, size, err", t.storage);
            cpp.push_str(&launcher(&index::scatter_name(t.dtype, add), "const void* x, const long long* idx, void* out, const ember_shape* s, const ember_operand* a, const ember_operand* b, const ember_operand* c, long long stride, long long size, long long* err", &args));
        }
    }
    let Some(lib_path) = compile_cpp(&dir, "index", &cpp) else { return };
    // SAFETY: built just above from the generated sources, with launchers of these signatures.
    let lib = unsafe { libloading::Library::new(&lib_path) }.expect("load the emulated module");
    let cpu = CpuBackend::new();
    let view = Layout::contiguous(&[6, 4, 5]).transpose(0, 1).unwrap(); // [4, 6, 5]
                                                                        // (op, index values, index layout, src shape): every second element of a longer index buffer
                                                                        // for index_select; a transposed index for gather; one permutation per line for scatter
    let perm: Vec<i64> = (0..2 * 6 * 5).map(|k| ((k / 5 + 2 * (k % 5) + k / 30) % 4) as i64).collect();
    let cases: Vec<IndexCase> = vec![
        (
            IndexOp::IndexSelect { dim: 1 },
            vec![5, 9, 0, 9, 3, 9, 3],
            Layout::contiguous(&[7]).slice(0, 0, 7, 2).unwrap(),
            None,
        ),
        (
            IndexOp::Gather { dim: 2 },
            (0..18).map(|k| (k * 7 % 5) as i64).collect(),
            Layout::contiguous(&[3, 6, 1]).transpose(0, 2).unwrap().expand(&[4, 6, 3]).unwrap(),
            None,
        ),
        (
            IndexOp::Gather { dim: 0 },
            (0..40).map(|k| (k % 4) as i64).collect(),
            Layout::contiguous(&[2, 4, 5]).transpose(0, 1).unwrap().narrow(1, 0, 1).unwrap(),
            None,
        ),
        (IndexOp::Scatter { dim: 0 }, perm.clone(), Layout::contiguous(&[2, 6, 5]), Some(vec![3, 6, 5])),
        (
            IndexOp::ScatterAdd { dim: 1 },
            (0..60).map(|k| (k * 5 % 6) as i64).collect(),
            Layout::contiguous(&[4, 3, 5]),
            Some(vec![4, 6, 5]),
        ),
        (IndexOp::IndexAdd { dim: 2 }, vec![2, 0, 2], Layout::contiguous(&[3]), Some(vec![4, 6, 3])),
        (IndexOp::Gather { dim: 1 }, vec![1, 6, 0], Layout::contiguous(&[1, 3, 1]), None), // 6 is out of range
    ];
    let (mut failures, mut checked) = (vec![], 0);
    for t in CUDA_TYPES {
        let x = values(t.dtype, 120, 21, false);
        let xbuf = cpu.upload(x.clone()).unwrap();
        let dense_x =
            cpu.download((&cpu.cast((&xbuf, &view), t.dtype).unwrap(), &Layout::contiguous(&[4, 6, 5]))).unwrap();
        for (op, idx, il, src_shape) in &cases {
            let src = src_shape.as_ref().map(|s| values(t.dtype, s.iter().product(), 17, false));
            let sl = src_shape.as_ref().map(|s| Layout::contiguous(s));
            let p = plan(*op, &view, il, sl.as_ref()).unwrap();
            let mut err = [0i64; 2];
            let out_n: usize = p.out_shape.iter().product();
            let mut words = match p.kernel {
                IndexKernel::Gather => aligned_words(&zeroed(t.dtype, out_n)),
                _ => aligned_words(&dense_x),
            };
            // SAFETY: as above; the plan's layouts address only the buffers' elements, the output
            // words hold `out_n` elements and are 8-byte aligned and padded.
            unsafe {
                if p.kernel == IndexKernel::Gather {
                    let (s, o) = elementwise_args("test", &[&p.read, &p.index]).unwrap();
                    let f: libloading::Symbol<Gather> =
                        lib.get(format!("launch_{}", index::gather_name(t.dtype)).as_bytes()).unwrap();
                    f(
                        3,
                        8,
                        ptr(&x),
                        idx.as_ptr(),
                        words.as_mut_ptr().cast(),
                        &s,
                        &o[0],
                        &o[1],
                        p.stride as i64,
                        p.size as i64,
                        err.as_mut_ptr(),
                    );
                } else {
                    let (s, o) = elementwise_args("test", &[&p.read, &p.index, &p.write]).unwrap();
                    let name = index::scatter_name(t.dtype, p.kernel == IndexKernel::ScatterAdd);
                    let f: libloading::Symbol<Scatter> = lib.get(format!("launch_{name}").as_bytes()).unwrap();
                    let sv = src.as_ref().unwrap();
                    f(
                        3,
                        8,
                        ptr(sv),
                        idx.as_ptr(),
                        words.as_mut_ptr().cast(),
                        &s,
                        &o[0],
                        &o[1],
                        &o[2],
                        p.stride as i64,
                        p.size as i64,
                        err.as_mut_ptr(),
                    );
                }
            }
            let ibuf = cpu.upload(HostData::I64(idx.clone())).unwrap();
            let sbuf = src.map(|s| cpu.upload(s).unwrap());
            let want = cpu.index(*op, (&xbuf, &view), (&ibuf, il), sbuf.as_ref().zip(sl.as_ref()));
            let label = format!("{:?} {}", op, t.suffix);
            match want {
                Err(_) => {
                    if err != [1, 6] {
                        failures.push(format!("{label}: the CPU refuses, the kernel's flag is {err:?}"));
                    }
                }
                Ok(w) => {
                    let w = cpu.download((&w, &Layout::contiguous(&p.out_shape))).unwrap();
                    let got = from_words(&words, t.dtype, out_n);
                    let bad = differences(&got, &w, tolerance(t.dtype) * 4.0);
                    if err[0] != 0 || !bad.is_empty() {
                        failures.push(format!("{label}: flag {err:?}; {}", bad.join(", ")));
                    }
                }
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} indexing launches ran under emulation and matched the CPU backend");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, 8 * 7);
}

/// Compiles `src` (a generated module) as C++ with launchers `launch_<name>(grid, block, params)`
/// that call each kernel of `names` with `args` (in which `S` is the kernel's storage type);
/// `None` (after saying so) without a compiler.
fn emulated_module(
    dir: &Path,
    stem: &str,
    src: &str,
    kernels: &[(String, DType)],
    params: &str,
    args: &str,
) -> Option<libloading::Library> {
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(src);
    for (name, dtype) in kernels {
        cpp.push_str(&launcher(name, params, &args.replace('S', cuda_type(*dtype).storage)));
    }
    let path = compile_cpp(dir, stem, &cpp)?;
    // SAFETY: built just above from the generated sources; callers use the launchers' signatures.
    Some(unsafe { libloading::Library::new(&path) }.expect("load the emulated module"))
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Random = unsafe extern "C" fn(u32, u32, *mut std::ffi::c_void, i64, u64, u64, i32, f64, f64);

/// The Philox stream: uniform, normal and Bernoulli draws for every floating dtype, from a nonzero
/// offset and a seed above 2^32, are bit-identical to the CPU backend's.
#[test]
fn rng_kernels_give_the_cpu_backends_bits_under_emulation() {
    use ember_ops_cuda::kernels::random;
    use ember_storage::{RngKey, RngOp};
    let dir = std::env::temp_dir().join(format!("ember-emulation-rng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, names) = random::module_source();
    let kernels: Vec<_> =
        CUDA_TYPES.iter().filter(|t| t.dtype.is_float()).map(|t| (random::random_name(t.dtype), t.dtype)).collect();
    assert_eq!(names.len(), kernels.len());
    let params =
        "void* out, long long n, unsigned long long seed, unsigned long long offset, int kind, double a, double b";
    let Some(lib) = emulated_module(&dir, "random", &src, &kernels, params, "(S*)out, n, seed, offset, kind, a, b")
    else {
        return;
    };
    let cpu = CpuBackend::new();
    let key = RngKey { seed: 0x1234_5678_9abc, offset: 77 };
    let n = 1000;
    let mut failures = vec![];
    for (name, dtype) in &kernels {
        for op in [
            RngOp::Uniform { low: -2.0, high: 3.0 },
            RngOp::Normal { mean: 0.5, std: 2.0 },
            RngOp::Bernoulli { p: 0.3, value: 1.0 / 0.7 },
        ] {
            let out = zeroed(*dtype, n);
            let (kind, a, b) = random::random_args(op);
            // SAFETY: `out` holds the `n` elements the kernel writes.
            unsafe {
                let f: libloading::Symbol<Random> = lib.get(format!("launch_{name}").as_bytes()).unwrap();
                f(3, 16, ptr(&out).cast_mut(), n as i64, key.seed, key.offset, kind, a, b);
            }
            let want = cpu.random(op, *dtype, n, key).unwrap();
            let want = cpu.download((&want, &Layout::contiguous(&[n]))).unwrap();
            let bad = differences(&out, &want, 0.0);
            if !bad.is_empty() {
                failures.push(format!("{name} {op:?}: {}", bad.join(", ")));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} RNG kernels x 3 distributions gave the CPU backend's values bit for bit", kernels.len());
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type ScanValues = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type ScanIndexed = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut i64,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
);

/// cumsum, cumprod, cummax and cummin (values and indices) for every dtype along each dim of a
/// transposed [4, 6, 5] view with NaN, infinities and integer extremes are identical to the CPU
/// backend's.
#[test]
fn scan_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::kernels::scan;
    let dir = std::env::temp_dir().join(format!("ember-emulation-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, all) = scan::module_source();
    let values_k: Vec<_> =
        all.iter().filter(|(op, _, _)| !scan::has_indices(*op)).map(|(_, d, n)| (n.clone(), *d)).collect();
    let indexed_k: Vec<_> =
        all.iter().filter(|(op, _, _)| scan::has_indices(*op)).map(|(_, d, n)| (n.clone(), *d)).collect();
    let common = "const ember_shape* s, const ember_operand* a, const ember_operand* o, long long rows, long long k";
    let (Some(vlib), Some(ilib)) = (
        emulated_module(
            &dir,
            "scan_v",
            &src,
            &values_k,
            &format!("const void* in, void* out, {common}"),
            "(const S*)in, (S*)out, *s, *a, *o, rows, k",
        ),
        emulated_module(
            &dir,
            "scan_i",
            &src,
            &indexed_k,
            &format!("const void* in, void* out, long long* idx, {common}"),
            "(const S*)in, (S*)out, idx, *s, *a, *o, rows, k",
        ),
    ) else {
        return;
    };
    let cpu = CpuBackend::new();
    let view = Layout::contiguous(&[6, 4, 5]).transpose(0, 1).unwrap();
    let dense = Layout::contiguous(&[4, 6, 5]);
    let (mut failures, mut checked) = (vec![], 0);
    for (op, dtype, name) in &all {
        let x = values(*dtype, 120, 29, false);
        let xbuf = cpu.upload(x.clone()).unwrap();
        for dim in 0..3 {
            let (permuted, rows, k) = reduce_view("test", &view, &[dim]).unwrap();
            let (dense_p, _, _) = reduce_view("test", &dense, &[dim]).unwrap();
            let (s, o) = elementwise_args("test", &[&permuted, &dense_p]).unwrap();
            let out = zeroed(*dtype, 120);
            let mut idx = vec![-1i64; 120];
            // SAFETY: `out` and `idx` hold the 120 elements the dense layout addresses.
            unsafe {
                if scan::has_indices(*op) {
                    let f: libloading::Symbol<ScanIndexed> = ilib.get(format!("launch_{name}").as_bytes()).unwrap();
                    f(2, 4, ptr(&x), ptr(&out).cast_mut(), idx.as_mut_ptr(), &s, &o[0], &o[1], rows as i64, k as i64);
                } else {
                    let f: libloading::Symbol<ScanValues> = vlib.get(format!("launch_{name}").as_bytes()).unwrap();
                    f(2, 4, ptr(&x), ptr(&out).cast_mut(), &s, &o[0], &o[1], rows as i64, k as i64);
                }
            }
            let (wv, wi) = cpu.scan(*op, (&xbuf, &view), dim).unwrap();
            let wv = cpu.download((&wv, &dense)).unwrap();
            let mut bad = differences(&out, &wv, 0.0);
            if let Some(wi) = wi {
                let wi = cpu.download((&wi, &dense)).unwrap();
                if HostData::I64(idx.clone()) != wi {
                    bad.push(format!("indices {idx:?} vs CPU {wi:?}"));
                }
            }
            if !bad.is_empty() {
                failures.push(format!("{name} dim {dim}: {}", bad.join(", ")));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} scan kernels ran {checked} scans under emulation, identical to the CPU backend", all.len());
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type SortInit = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut i64,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type SortMerge = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const i64,
    *mut std::ffi::c_void,
    *mut i64,
    *const ShapeArg,
    *const OperandArg,
    i64,
    i64,
    i64,
    i32,
);

/// The merge sort, driven pass by pass as the backend drives it, ascending and descending along
/// every dim of strided views (rows of 1 to 37 elements, with repeated keys, NaN and infinities),
/// gives the CPU backend's values and indices (both stable) for every dtype.
#[test]
fn sort_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::kernels::sort;
    let dir = std::env::temp_dir().join(format!("ember-emulation-sort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, _) = sort::module_source();
    let inits: Vec<_> = CUDA_TYPES.iter().map(|t| (sort::init_name(t.dtype), t.dtype)).collect();
    let merges: Vec<_> = CUDA_TYPES.iter().map(|t| (sort::merge_name(t.dtype), t.dtype)).collect();
    let (Some(ilib), Some(mlib)) = (
        emulated_module(&dir, "sort_i", &src, &inits, "const void* x, void* v, long long* idx, const ember_shape* s, const ember_operand* a, const ember_operand* o, long long k", "(const S*)x, (S*)v, idx, *s, *a, *o, k"),
        emulated_module(&dir, "sort_m", &src, &merges, "const void* iv, const long long* ii, void* ov, long long* oi, const ember_shape* s, const ember_operand* o, long long n, long long k, long long w, int desc", "(const S*)iv, ii, (S*)ov, oi, *s, *o, n, k, w, desc"),
    ) else {
        return;
    };
    let cpu = CpuBackend::new();
    let views = [
        (Layout::contiguous(&[6, 4, 5]).transpose(0, 1).unwrap(), 120),
        (Layout::contiguous(&[37, 2]).transpose(0, 1).unwrap(), 74),
        (Layout::contiguous(&[3, 1]), 3),
    ];
    let (mut failures, mut checked) = (vec![], 0);
    for t in CUDA_TYPES {
        for (view, n) in &views {
            let x = values(t.dtype, *n, 31, false);
            let xbuf = cpu.upload(x.clone()).unwrap();
            let dense = Layout::contiguous(view.shape());
            for dim in 0..view.ndim() {
                for descending in [false, true] {
                    let (permuted, _, k) = reduce_view("test", view, &[dim]).unwrap();
                    let (dense_p, _, _) = reduce_view("test", &dense, &[dim]).unwrap();
                    let rows_layout = Layout::contiguous(permuted.shape());
                    let widths = sort::merge_widths(k);
                    let (vals, idx) = (zeroed(t.dtype, *n), vec![0i64; *n]);
                    let mut scratch = [(zeroed(t.dtype, *n), vec![0i64; *n]), (zeroed(t.dtype, *n), vec![0i64; *n])];
                    // SAFETY: every buffer holds the `n` elements the layouts address.
                    unsafe {
                        let init: libloading::Symbol<SortInit> =
                            ilib.get(format!("launch_{}", sort::init_name(t.dtype)).as_bytes()).unwrap();
                        let merge: libloading::Symbol<SortMerge> =
                            mlib.get(format!("launch_{}", sort::merge_name(t.dtype)).as_bytes()).unwrap();
                        let target = if widths.is_empty() { &dense_p } else { &rows_layout };
                        let (s, o) = elementwise_args("test", &[&permuted, target]).unwrap();
                        let (v0, i0) = if widths.is_empty() {
                            (ptr(&vals).cast_mut(), idx.as_ptr().cast_mut())
                        } else {
                            (ptr(&scratch[0].0).cast_mut(), scratch[0].1.as_mut_ptr())
                        };
                        init(2, 8, ptr(&x), v0, i0, &s, &o[0], &o[1], k as i64);
                        for (pass, &w) in widths.iter().enumerate() {
                            let last = pass + 1 == widths.len();
                            let (s, o) =
                                elementwise_args("test", &[if last { &dense_p } else { &rows_layout }]).unwrap();
                            let (from, to) = (pass % 2, (pass + 1) % 2);
                            let (fv, fi) = (ptr(&scratch[from].0), scratch[from].1.as_ptr());
                            let (tv, ti) = if last {
                                (ptr(&vals).cast_mut(), idx.as_ptr().cast_mut())
                            } else {
                                (ptr(&scratch[to].0).cast_mut(), scratch[to].1.as_mut_ptr())
                            };
                            merge(
                                2,
                                8,
                                fv,
                                fi,
                                tv,
                                ti,
                                &s,
                                &o[0],
                                *n as i64,
                                k as i64,
                                w as i64,
                                i32::from(descending),
                            );
                        }
                    }
                    let (wv, wi) = cpu.sort((&xbuf, view), dim, descending, true).unwrap();
                    let (wv, wi) = (cpu.download((&wv, &dense)).unwrap(), cpu.download((&wi, &dense)).unwrap());
                    let mut bad = differences(&vals, &wv, 0.0);
                    if HostData::I64(idx.clone()) != wi {
                        bad.push(format!("indices {idx:?} vs CPU {wi:?}"));
                    }
                    if !bad.is_empty() {
                        failures.push(format!(
                            "{} {:?} dim {dim} desc {descending}: {}",
                            t.suffix,
                            view.shape(),
                            bad.join(", ")
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} sorts ran under emulation, identical to the CPU backend (values and indices)");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Im2col = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ember_ops_cuda::launch::WindowArg,
    *const OperandArg,
    f64,
);
/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type Col2im = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ember_ops_cuda::launch::WindowArg,
    *const OperandArg,
);

/// im2col (every dtype) and col2im (floats and i64) over 1-, 2- and 3-d windows with stride,
/// padding beyond small inputs and dilation, on strided inputs, match the CPU backend.
#[test]
fn window_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::kernels::window;
    use ember_ops_cuda::launch::{raw_operand, window_arg};
    use ember_storage::WindowGeometry;
    let dir = std::env::temp_dir().join(format!("ember-emulation-win-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, _) = window::module_source();
    let im: Vec<_> = CUDA_TYPES.iter().map(|t| (window::im2col_name(t.dtype), t.dtype)).collect();
    let col: Vec<_> = CUDA_TYPES
        .iter()
        .filter(|t| window::col2im_supported(t.dtype))
        .map(|t| (window::col2im_name(t.dtype), t.dtype))
        .collect();
    let (Some(ilib), Some(clib)) = (
        emulated_module(
            &dir,
            "im2col",
            &src,
            &im,
            "const void* x, void* out, const ember_window* w, const ember_operand* o, double pad",
            "(const S*)x, (S*)out, *w, *o, pad",
        ),
        emulated_module(
            &dir,
            "col2im",
            &src,
            &col,
            "const void* x, void* out, const ember_window* w, const ember_operand* o",
            "(const S*)x, (S*)out, *w, *o",
        ),
    ) else {
        return;
    };
    let geom =
        |input: &[usize], kernel: &[usize], stride: &[usize], padding: &[usize], dilation: &[usize]| WindowGeometry {
            batch: 2,
            channels: 3,
            input: input.to_vec(),
            kernel: kernel.to_vec(),
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            dilation: dilation.to_vec(),
        };
    let geoms = [
        geom(&[7], &[3], &[2], &[1], &[2]),
        geom(&[5, 6], &[2, 3], &[2, 1], &[1, 2], &[1, 2]),
        geom(&[1, 1], &[3, 2], &[1, 1], &[2, 2], &[2, 1]),
        geom(&[3, 4, 3], &[2, 2, 2], &[1, 2, 1], &[0, 1, 1], &[1, 1, 2]),
    ];
    let cpu = CpuBackend::new();
    let (mut failures, mut checked) = (vec![], 0);
    for g in &geoms {
        let w = window_arg("test", g).unwrap();
        // the input as a view with batch and channels swapped in memory
        let mut mem = vec![g.channels, g.batch];
        mem.extend(&g.input);
        let xl = Layout::contiguous(&mem).transpose(0, 1).unwrap();
        let (ncols, l) = (g.channels * g.kernel_numel(), w.out_numel as usize);
        let cl = Layout::contiguous(&[g.batch, l, ncols]).transpose(1, 2).unwrap(); // strided columns
        for t in CUDA_TYPES {
            let x = values(t.dtype, xl.numel(), 41, false);
            let xbuf = cpu.upload(x.clone()).unwrap();
            let out = zeroed(t.dtype, g.batch * ncols * l);
            // SAFETY: `out` holds the patch matrix; the operand addresses `x` only inside its shape.
            unsafe {
                let f: libloading::Symbol<Im2col> =
                    ilib.get(format!("launch_{}", window::im2col_name(t.dtype)).as_bytes()).unwrap();
                f(3, 8, ptr(&x), ptr(&out).cast_mut(), &w, &raw_operand("test", &xl).unwrap(), -0.5);
            }
            let want = cpu.im2col((&xbuf, &xl), g, -0.5).unwrap();
            let want = cpu.download((&want, &Layout::contiguous(&[out.len()]))).unwrap();
            let bad = differences(&out, &want, 0.0);
            if !bad.is_empty() {
                failures.push(format!("im2col {} {g:?}: {}", t.suffix, bad.join(", ")));
            }
            checked += 1;
            if !window::col2im_supported(t.dtype) {
                continue;
            }
            let c = values(t.dtype, cl.numel(), 43, false);
            let cbuf = cpu.upload(c.clone()).unwrap();
            let out = zeroed(t.dtype, xl.numel());
            // SAFETY: `out` holds [N, C, *input]; the operand addresses `c` only inside its shape.
            unsafe {
                let f: libloading::Symbol<Col2im> =
                    clib.get(format!("launch_{}", window::col2im_name(t.dtype)).as_bytes()).unwrap();
                f(3, 8, ptr(&c), ptr(&out).cast_mut(), &w, &raw_operand("test", &cl).unwrap());
            }
            let want = cpu.col2im((&cbuf, &cl), g).unwrap();
            let want = cpu.download((&want, &Layout::contiguous(&[out.len()]))).unwrap();
            let bad = differences(&out, &want, 0.0);
            if !bad.is_empty() {
                failures.push(format!("col2im {} {g:?}: {}", t.suffix, bad.join(", ")));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} im2col/col2im launches ran under emulation and matched the CPU backend exactly");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

/// A C launcher's signature (calling it is unsafe: the call sites say why each call is sound).
type MatmulInt = unsafe extern "C" fn(
    u32,
    u32,
    *const std::ffi::c_void,
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
    *const OperandArg,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Integer products (u8, i32, i64) of a transposed matrix by a batch-broadcast one, with i64
/// extremes (wrapping), are identical to the CPU backend's.
#[test]
fn integer_matmul_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::kernels::matmul_int::{matmul_int_name, module_source, INT_MATMUL_TYPES};
    use ember_ops_cuda::launch::matrix_batch;
    let dir = std::env::temp_dir().join(format!("ember-emulation-mm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, _) = module_source();
    let kernels: Vec<_> = INT_MATMUL_TYPES.iter().map(|&d| (matmul_int_name(d), d)).collect();
    let params = "const void* a, const void* b, void* out, const ember_shape* s, const ember_operand* oa, const ember_operand* ob, long long m, long long n, long long k, long long a_rs, long long a_cs, long long b_rs, long long b_cs";
    let args = "(const S*)a, (const S*)b, (S*)out, *s, *oa, *ob, m, n, k, a_rs, a_cs, b_rs, b_cs";
    let Some(lib) = emulated_module(&dir, "matmul_int", &src, &kernels, params, args) else { return };
    let cpu = CpuBackend::new();
    // a: [3, 4, 5] with each matrix transposed in memory; b: one [5, 2] matrix broadcast over 3
    let la = Layout::contiguous(&[3, 5, 4]).transpose(1, 2).unwrap();
    let lb = Layout::contiguous(&[1, 5, 2]).expand(&[3, 5, 2]).unwrap();
    let mut failures = vec![];
    for (name, dtype) in &kernels {
        let (a, b) = (values(*dtype, 60, 51, false), values(*dtype, 10, 53, false));
        let ((ba, a_rs, a_cs), (bb, b_rs, b_cs)) =
            (matrix_batch("test", &la).unwrap(), matrix_batch("test", &lb).unwrap());
        let (s, o) = elementwise_args("test", &[&ba, &bb]).unwrap();
        let out = zeroed(*dtype, 24);
        // SAFETY: `out` holds the 3 x 4 x 2 products; the operands address only `a` and `b`.
        unsafe {
            let f: libloading::Symbol<MatmulInt> = lib.get(format!("launch_{name}").as_bytes()).unwrap();
            f(2, 8, ptr(&a), ptr(&b), ptr(&out).cast_mut(), &s, &o[0], &o[1], 4, 2, 5, a_rs, a_cs, b_rs, b_cs);
        }
        let (ca, cb) = (cpu.upload(a).unwrap(), cpu.upload(b).unwrap());
        let want = cpu.matmul((&ca, &la), (&cb, &lb)).unwrap();
        let want = cpu.download((&want, &Layout::contiguous(&[24]))).unwrap();
        if out != want {
            failures.push(format!("{name}: {:?} vs CPU {:?}", as_f64(&out), as_f64(&want)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} integer matmul kernels matched the CPU backend exactly", kernels.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Like [`emulated_module`], but each launch runs a block's threads as OS threads meeting at
/// `__syncthreads` (for kernels with shared memory and block reductions).
fn threaded_module(
    dir: &Path,
    stem: &str,
    src: &str,
    kernels: &[(String, DType, &str, &str)],
) -> Option<libloading::Library> {
    let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
    cpp.push_str(src);
    for (name, dtype, params, args) in kernels {
        let args = args.replace('S', cuda_type(*dtype).storage);
        cpp.push_str(&format!(
            "extern \"C\" void launch_{name}(unsigned grid, unsigned block, {params}) {{\n    ember_launch_threaded(grid, block, [=] {{ {name}({args}); }});\n}}\n"
        ));
    }
    let path = compile_cpp(dir, stem, &cpp)?;
    // SAFETY: built just above from the generated sources; callers use the launchers' signatures.
    Some(unsafe { libloading::Library::new(&path) }.expect("load the emulated module"))
}

/// Smooth test values in [-2, 2) (no specials: sums over channels stay finite).
fn smooth(dtype: DType, n: usize, seed: u64) -> HostData {
    let v: Vec<f64> =
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed * 97) % 4000) as f64 / 1000.0 - 2.0).collect();
    match dtype {
        DType::F32 => HostData::F32(v.iter().map(|&x| x as f32).collect()),
        _ => HostData::F64(v),
    }
}

/// The fused kernels — max pooling (NaN rule and indices), batch norm's statistics, backward
/// reductions and affine step, layer and RMS norm with their input gradient, the LSTM cell over whole sequences both ways (the recurrent
/// products done on the host, as the backend does them with cuBLAS), and the SGD and Adam/AdamW
/// steps — match the CPU backend's fused kernels for f32 and f64 over strided views.
#[test]
fn fused_kernels_match_the_cpu_backends_under_emulation() {
    use ember_ops_cuda::kernels::fused::{module_source, FusedKernel};
    use ember_ops_cuda::launch::{raw_operand, window_arg, WindowArg};
    use ember_storage::{AdamStep, SgdStep, WindowGeometry};
    let dir = std::env::temp_dir().join(format!("ember-emulation-fused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, names) = module_source();
    let signature = |k: FusedKernel| -> (&'static str, &'static str) {
        match k {
            FusedKernel::MaxPool2d => (
                "const void* x, void* vals, long long* idx, const ember_window* w, const ember_operand* ox",
                "(const S*)x, (S*)vals, idx, *w, *ox",
            ),
            FusedKernel::BatchNormStats => (
                "const void* x, void* mean, void* var, const ember_shape* s, const ember_operand* ox, long long n, long long c, long long l",
                "(const S*)x, (S*)mean, (S*)var, *s, *ox, n, c, l",
            ),
            FusedKernel::BatchNormBackwardReduce => (
                "const void* g, const void* x, const void* mean, void* sg, void* sgx, const ember_shape* s, const ember_operand* og, const ember_operand* ox, long long mo, long long ms, long long n, long long c, long long l",
                "(const S*)g, (const S*)x, (const S*)mean, (S*)sg, (S*)sgx, *s, *og, *ox, mo, ms, n, c, l",
            ),
            FusedKernel::ChannelAffine => (
                "const void* x, const void* y, const void* a, const void* b, const void* k, void* out, const ember_shape* s, const ember_operand* ox, const ember_operand* oy, long long ao, long long as_, long long bo, long long bs, long long ko, long long ks, int has_y, long long c, long long l",
                "(const S*)x, (const S*)y, (const S*)a, (const S*)b, (const S*)k, (S*)out, *s, *ox, *oy, ao, as_, bo, bs, ko, ks, has_y, c, l",
            ),
            FusedKernel::LayerNorm => (
                "const void* x, const void* w, const void* b, void* y, void* mean, void* rstd, const ember_shape* s, const ember_operand* ox, long long wo, long long ws, long long bo, long long bs, int flags, long long rows, long long k, double eps",
                "(const S*)x, (const S*)w, (const S*)b, (S*)y, (S*)mean, (S*)rstd, *s, *ox, wo, ws, bo, bs, flags, rows, k, eps",
            ),
            FusedKernel::LayerNormBackward => (
                "const void* gy, const void* x, const void* mean, const void* rstd, const void* w, void* gx, const ember_shape* s, const ember_operand* og, const ember_operand* ox, long long mo, long long ms, long long ro, long long rs, long long wo, long long ws, int flags, long long rows, long long k",
                "(const S*)gy, (const S*)x, (const S*)mean, (const S*)rstd, (const S*)w, (S*)gx, *s, *og, *ox, mo, ms, ro, rs, wo, ws, flags, rows, k",
            ),
            FusedKernel::LstmCell => (
                "void* gates, const void* c0, void* y, long long t, long long prev, long long b, long long h, long long plane",
                "(S*)gates, (const S*)c0, (S*)y, t, prev, b, h, plane",
            ),
            FusedKernel::LstmCellBackward => (
                "const void* gates, const void* y, const void* c0, const void* gy, void* dpre, const void* dh, void* dc, long long t, long long prev, long long b, long long h, long long plane, int carry",
                "(const S*)gates, (const S*)y, (const S*)c0, (const S*)gy, (S*)dpre, (const S*)dh, (S*)dc, t, prev, b, h, plane, carry",
            ),
            FusedKernel::SgdStep => (
                "void* w, const void* g, void* buf, long long n, double lr, double wd, double mom, double damp, int flags",
                "(S*)w, (const S*)g, (S*)buf, n, lr, wd, mom, damp, flags",
            ),
            FusedKernel::AdamStep => (
                "void* w, const void* g, void* m, void* v, long long n, double ss, double bc2, double decay, double l2, double b1, double b2, double eps, int maximize",
                "(S*)w, (const S*)g, (S*)m, (S*)v, n, ss, bc2, decay, l2, b1, b2, eps, maximize",
            ),
        }
    };
    let kernels: Vec<_> = names
        .iter()
        .map(|(k, dt, n)| {
            let (p, a) = signature(*k);
            (n.clone(), *dt, p, a)
        })
        .collect();
    let Some(lib) = threaded_module(&dir, "fused", &src, &kernels) else {
        return;
    };
    let cpu = CpuBackend::new();
    let fused = cpu.fused().expect("the CPU backend has fused kernels");
    let vp = |d: &HostData| ptr(d).cast_mut();
    let (mut failures, mut checked) = (vec![], 0);
    let mut compare = |what: String, got: &HostData, want: &HostData, rtol: f64| {
        let bad = differences(got, want, rtol);
        if !bad.is_empty() {
            failures.push(format!("{what}: {}", bad.join(", ")));
        }
        checked += 1;
    };
    let down = |b: &ember_storage::Buffer, shape: &[usize]| cpu.download((b, &Layout::contiguous(shape))).unwrap();
    for dtype in [DType::F32, DType::F64] {
        let sym = |k: FusedKernel| k.name(dtype);
        let rtol = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
        // max pooling over a transposed [2, 3, 7, 6] view with NaN and infinities
        let xs = values(dtype, 2 * 3 * 6 * 7, 5, false);
        let xl = Layout::contiguous(&[2, 3, 6, 7]).transpose(2, 3).unwrap();
        let xb = cpu.upload(xs.clone()).unwrap();
        for (k, s, p, d) in [(3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 2), (2, 3, 1, 1)] {
            let g = WindowGeometry {
                batch: 2,
                channels: 3,
                input: vec![7, 6],
                kernel: vec![k, k],
                stride: vec![s, s],
                padding: vec![p, p],
                dilation: vec![d, d],
            };
            let out = g.output().unwrap();
            let numel = 6 * out[0] * out[1];
            let (vals, idx) = (zeroed(dtype, numel), zeroed(DType::I64, numel));
            let (w, ox) = (window_arg("test", &g).unwrap(), raw_operand("test", &xl).unwrap());
            // SAFETY (signature only): each call below says why it is sound.
            type Pool = unsafe extern "C" fn(
                u32,
                u32,
                *const std::ffi::c_void,
                *mut std::ffi::c_void,
                *mut std::ffi::c_void,
                *const WindowArg,
                *const OperandArg,
            );
            // SAFETY: the window is the view's shape; the outputs hold `numel` elements each.
            unsafe {
                let f: libloading::Symbol<Pool> =
                    lib.get(format!("launch_{}", sym(FusedKernel::MaxPool2d)).as_bytes()).unwrap();
                f(2, 8, ptr(&xs), vp(&vals), vp(&idx), &w, &ox);
            }
            let (wv, wi) = fused.max_pool2d((&xb, &xl), &g).unwrap();
            let shape = [2, 3, out[0], out[1]];
            compare(format!("max_pool2d {dtype} k{k} s{s} p{p} d{d}"), &vals, &down(&wv, &shape), 0.0);
            compare(format!("max_pool2d indices {dtype} k{k} s{s} p{p} d{d}"), &idx, &down(&wi, &shape), 0.0);
        }
        // batch norm over a permuted [3, 4, 5, 2] view: statistics, backward reductions, affine
        let (n, c, l) = (3usize, 4usize, 10usize);
        let xl = Layout::contiguous(&[4, 3, 2, 5]).permute(&[1, 0, 3, 2]).unwrap();
        let gl = Layout::contiguous(&[3, 4, 5, 2]);
        let (xs, gs) = (smooth(dtype, 120, 1), smooth(dtype, 120, 2));
        let (xb, gb) = (cpu.upload(xs.clone()).unwrap(), cpu.upload(gs.clone()).unwrap());
        let (mean, var) = (zeroed(dtype, c), zeroed(dtype, c));
        let (s, o) = elementwise_args("test", &[&xl]).unwrap();
        // SAFETY (signature only): each call below says why it is sound.
        type Stats = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *mut std::ffi::c_void,
            *const ShapeArg,
            *const OperandArg,
            i64,
            i64,
            i64,
        );
        // SAFETY: the view addresses the 120 elements of `xs`; the outputs hold `c` elements.
        unsafe {
            let f: libloading::Symbol<Stats> =
                lib.get(format!("launch_{}", sym(FusedKernel::BatchNormStats)).as_bytes()).unwrap();
            f(3, 16, ptr(&xs), vp(&mean), vp(&var), &s, &o[0], n as i64, c as i64, l as i64);
        }
        let (wm, wv) = fused.batch_norm_stats((&xb, &xl)).unwrap();
        compare(format!("bn_stats mean {dtype}"), &mean, &down(&wm, &[c]), rtol);
        compare(format!("bn_stats var {dtype}"), &var, &down(&wv, &[c]), rtol);
        // the mean as a strided [4] view (every other element of 8)
        let mean8 = smooth(dtype, 8, 3);
        let ml = Layout::contiguous(&[8]).slice(0, 0, 8, 2).unwrap();
        let mb = cpu.upload(mean8.clone()).unwrap();
        let (sg, sgx) = (zeroed(dtype, c), zeroed(dtype, c));
        let (s, o) = elementwise_args("test", &[&gl, &xl]).unwrap();
        // SAFETY (signature only): each call below says why it is sound.
        type Reduce2 = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *mut std::ffi::c_void,
            *const ShapeArg,
            *const OperandArg,
            *const OperandArg,
            i64,
            i64,
            i64,
            i64,
            i64,
        );
        // SAFETY: as above; the mean view addresses elements 0, 2, 4, 6 of its 8.
        unsafe {
            let f: libloading::Symbol<Reduce2> =
                lib.get(format!("launch_{}", sym(FusedKernel::BatchNormBackwardReduce)).as_bytes()).unwrap();
            f(
                2,
                16,
                ptr(&gs),
                ptr(&xs),
                ptr(&mean8),
                vp(&sg),
                vp(&sgx),
                &s,
                &o[0],
                &o[1],
                0,
                2,
                n as i64,
                c as i64,
                l as i64,
            );
        }
        let (wsg, wsgx) = fused.batch_norm_backward_reduce((&gb, &gl), (&xb, &xl), (&mb, &ml)).unwrap();
        compare(format!("bn_backward_reduce sum(g) {dtype}"), &sg, &down(&wsg, &[c]), rtol);
        compare(format!("bn_backward_reduce sum(g(x-m)) {dtype}"), &sgx, &down(&wsgx, &[c]), rtol);
        let cl = Layout::contiguous(&[c]);
        let (av, bv, kv) = (smooth(dtype, c, 4), smooth(dtype, c, 5), smooth(dtype, c, 6));
        let (ab, bb, kb) =
            (cpu.upload(av.clone()).unwrap(), cpu.upload(bv.clone()).unwrap(), cpu.upload(kv.clone()).unwrap());
        // SAFETY (signature only): each call below says why it is sound.
        type Affine = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *const ShapeArg,
            *const OperandArg,
            *const OperandArg,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i32,
            i64,
            i64,
        );
        for has_y in [false, true] {
            let out = zeroed(dtype, 120);
            let (s, o) = if has_y {
                elementwise_args("test", &[&xl, &gl]).unwrap()
            } else {
                elementwise_args("test", &[&xl]).unwrap()
            };
            let oy = *o.last().unwrap();
            // SAFETY: x and y views address their 120 elements; a, b, k hold `c`; out holds 120.
            unsafe {
                let f: libloading::Symbol<Affine> =
                    lib.get(format!("launch_{}", sym(FusedKernel::ChannelAffine)).as_bytes()).unwrap();
                f(
                    2,
                    16,
                    ptr(&xs),
                    ptr(&gs),
                    ptr(&av),
                    ptr(&bv),
                    ptr(&kv),
                    vp(&out),
                    &s,
                    &o[0],
                    &oy,
                    0,
                    1,
                    0,
                    1,
                    0,
                    1,
                    i32::from(has_y),
                    c as i64,
                    l as i64,
                );
            }
            let y = has_y.then_some(((&gb, &gl), (&bb, &cl)));
            let want = fused.channel_affine((&xb, &xl), (&ab, &cl), y, (&kb, &cl)).unwrap();
            compare(format!("channel_affine {dtype} y={has_y}"), &out, &down(&want, &[3, 4, 5, 2]), 0.0);
        }
        // layer and RMS norm over a transposed [5, 37] view, weight every other element of 74
        let (rows, k) = (5usize, 37usize);
        let xl = Layout::contiguous(&[k, rows]).transpose(0, 1).unwrap();
        let dl = Layout::contiguous(&[rows, k]);
        let wl = Layout::contiguous(&[2 * k]).slice(0, 0, 2 * k, 2).unwrap();
        let kl = Layout::contiguous(&[k]);
        let (xs, gys, ws, bs) =
            (smooth(dtype, rows * k, 21), smooth(dtype, rows * k, 22), smooth(dtype, 2 * k, 23), smooth(dtype, k, 24));
        let up = |d: &HostData| cpu.upload(d.clone()).unwrap();
        let (xb, gyb, wb, bb) = (up(&xs), up(&gys), up(&ws), up(&bs));
        // SAFETY (signature only): each call below says why it is sound.
        type Norm = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *mut std::ffi::c_void,
            *mut std::ffi::c_void,
            *const ShapeArg,
            *const OperandArg,
            i64,
            i64,
            i64,
            i64,
            i32,
            i64,
            i64,
            f64,
        );
        // SAFETY (signature only): each call below says why it is sound.
        type NormBack = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *const ShapeArg,
            *const OperandArg,
            *const OperandArg,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i32,
            i64,
            i64,
        );
        for rms in [false, true] {
            let (y, mean, rstd) = (zeroed(dtype, rows * k), zeroed(dtype, rows), zeroed(dtype, rows));
            let (s, o) = elementwise_args("test", &[&xl]).unwrap();
            let flags = 1 | (i32::from(!rms) << 1) | (i32::from(rms) << 2);
            // SAFETY: the view addresses the rows * k elements of `xs`; the weight view 0, 2, ..
            // of 2k; the outputs hold rows * k and rows elements.
            unsafe {
                let f: libloading::Symbol<Norm> =
                    lib.get(format!("launch_{}", sym(FusedKernel::LayerNorm)).as_bytes()).unwrap();
                f(
                    2,
                    16,
                    ptr(&xs),
                    ptr(&ws),
                    ptr(&bs),
                    vp(&y),
                    vp(&mean),
                    vp(&rstd),
                    &s,
                    &o[0],
                    0,
                    2,
                    0,
                    1,
                    flags,
                    rows as i64,
                    k as i64,
                    1e-5,
                );
            }
            let bias = (!rms).then_some((&bb, &kl));
            let (wy, wm, wr) = fused.layer_norm((&xb, &xl), Some((&wb, &wl)), bias, 1e-5, rms).unwrap();
            compare(format!("layer_norm y {dtype} rms={rms}"), &y, &down(&wy, &[rows, k]), rtol);
            compare(format!("layer_norm mean {dtype} rms={rms}"), &mean, &down(&wm, &[rows]), rtol);
            compare(format!("layer_norm rstd {dtype} rms={rms}"), &rstd, &down(&wr, &[rows]), rtol);
            let gx = zeroed(dtype, rows * k);
            let (s, o) = elementwise_args("test", &[&dl, &xl]).unwrap();
            // SAFETY: as above; mean and rstd hold `rows` elements.
            unsafe {
                let f: libloading::Symbol<NormBack> =
                    lib.get(format!("launch_{}", sym(FusedKernel::LayerNormBackward)).as_bytes()).unwrap();
                f(
                    2,
                    16,
                    ptr(&gys),
                    ptr(&xs),
                    ptr(&mean),
                    ptr(&rstd),
                    ptr(&ws),
                    vp(&gx),
                    &s,
                    &o[0],
                    &o[1],
                    0,
                    1,
                    0,
                    1,
                    0,
                    2,
                    1 | (i32::from(rms) << 2),
                    rows as i64,
                    k as i64,
                );
            }
            let rl = Layout::contiguous(&[rows]);
            let want = fused
                .layer_norm_backward((&gyb, &dl), (&xb, &xl), (&wm, &rl), (&wr, &rl), Some((&wb, &wl)), rms)
                .unwrap();
            compare(format!("layer_norm_backward {dtype} rms={rms}"), &gx, &down(&want, &[rows, k]), rtol * 10.0);
        }
        // LSTM: T=4, B=3, H=5, both directions, forward and backward
        let (t_n, b_n, h_n) = (4usize, 3usize, 5usize);
        let plane = t_n * b_n * h_n;
        let (gi, h0, c0, w) = (
            smooth(dtype, 4 * plane, 7),
            smooth(dtype, b_n * h_n, 8),
            smooth(dtype, b_n * h_n, 9),
            smooth(dtype, 4 * h_n * h_n, 10),
        );
        let gy = smooth(dtype, 2 * plane, 11);
        let f64s = |d: &HostData| as_f64(d);
        let from = |v: &[f64]| match dtype {
            DType::F32 => HostData::F32(v.iter().map(|&x| x as f32).collect()),
            _ => HostData::F64(v.to_vec()),
        };
        let wf = f64s(&w);
        // SAFETY (signature only): each call below says why it is sound.
        type Cell = unsafe extern "C" fn(
            u32,
            u32,
            *mut std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            i64,
            i64,
            i64,
            i64,
            i64,
        );
        // SAFETY (signature only): each call below says why it is sound.
        type CellBack = unsafe extern "C" fn(
            u32,
            u32,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            i64,
            i64,
            i64,
            i64,
            i64,
            i32,
        );
        for reverse in [false, true] {
            let time = |s: usize| if reverse { t_n - 1 - s } else { s };
            // forward: per step, gates[t] += h_prev W_hhᵀ on the host (the backend's cuBLAS call), then the cell kernel
            let gates = gi.clone();
            let y = zeroed(dtype, 2 * plane);
            for s in 0..t_n {
                let t = time(s);
                let prev = (s > 0).then(|| time(s - 1));
                let hp: Vec<f64> = match prev {
                    None => f64s(&h0),
                    Some(p) => f64s(&y)[p * b_n * h_n..(p + 1) * b_n * h_n].to_vec(),
                };
                let mut gv = f64s(&gates);
                for r in 0..b_n {
                    for j in 0..4 * h_n {
                        gv[(t * b_n + r) * 4 * h_n + j] +=
                            (0..h_n).map(|q| hp[r * h_n + q] * wf[j * h_n + q]).sum::<f64>();
                    }
                }
                let gates_now = from(&gv);
                // SAFETY: the buffers hold [T, B, 4H], [B, H] and [2, T, B, H] elements for t, prev < T.
                unsafe {
                    let f: libloading::Symbol<Cell> =
                        lib.get(format!("launch_{}", sym(FusedKernel::LstmCell)).as_bytes()).unwrap();
                    f(
                        2,
                        4,
                        vp(&gates_now),
                        ptr(&c0),
                        vp(&y),
                        t as i64,
                        prev.map_or(-1, |p| p as i64),
                        b_n as i64,
                        h_n as i64,
                        plane as i64,
                    );
                }
                ember_storage::with_host_data!(&gates_now, v => ember_storage::with_host_data!(&gates, g => {
                    // SAFETY: same dtype and length; the test owns both buffers
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr().cast::<u8>(), g.as_ptr().cast::<u8>().cast_mut(), std::mem::size_of_val(&v[..])) }
                }));
            }
            let up = |d: &HostData| cpu.upload(d.clone()).unwrap();
            let (gib, h0b, c0b, wb) = (up(&gi), up(&h0), up(&c0), up(&w));
            let (l3, l2, lw) = (
                Layout::contiguous(&[t_n, b_n, 4 * h_n]),
                Layout::contiguous(&[b_n, h_n]),
                Layout::contiguous(&[4 * h_n, h_n]),
            );
            let (wy, wg) = fused.lstm_sequence((&gib, &l3), (&h0b, &l2), (&c0b, &l2), (&wb, &lw), reverse).unwrap();
            let ly = Layout::contiguous(&[2, t_n, b_n, h_n]);
            compare(
                format!("lstm_cell states {dtype} reverse={reverse}"),
                &y,
                &down(&wy, &[2, t_n, b_n, h_n]),
                rtol * 10.0,
            );
            compare(
                format!("lstm_cell gates {dtype} reverse={reverse}"),
                &gates,
                &down(&wg, &[t_n, b_n, 4 * h_n]),
                rtol * 10.0,
            );
            // backward from the CPU's forward results (so both start from the same states)
            let (gates_c, y_c) = (down(&wg, &[t_n, b_n, 4 * h_n]), down(&wy, &[2, t_n, b_n, h_n]));
            let (dpre, dh, dc) = (zeroed(dtype, 4 * plane), zeroed(dtype, b_n * h_n), zeroed(dtype, b_n * h_n));
            for s in 0..t_n {
                let fwd = t_n - 1 - s;
                let t = time(fwd);
                let prev = (fwd > 0).then(|| time(fwd - 1));
                // SAFETY: as above; dh and dc hold [B, H].
                unsafe {
                    let f: libloading::Symbol<CellBack> =
                        lib.get(format!("launch_{}", sym(FusedKernel::LstmCellBackward)).as_bytes()).unwrap();
                    f(
                        2,
                        4,
                        ptr(&gates_c),
                        ptr(&y_c),
                        ptr(&c0),
                        ptr(&gy),
                        vp(&dpre),
                        ptr(&dh),
                        vp(&dc),
                        t as i64,
                        prev.map_or(-1, |p| p as i64),
                        b_n as i64,
                        h_n as i64,
                        plane as i64,
                        i32::from(s > 0),
                    );
                }
                // dh = dpre[t] W_hh on the host (the backend's cuBLAS call)
                let dp = f64s(&dpre);
                let mut dhv = vec![0.0; b_n * h_n];
                for r in 0..b_n {
                    for q in 0..h_n {
                        dhv[r * h_n + q] =
                            (0..4 * h_n).map(|j| dp[(t * b_n + r) * 4 * h_n + j] * wf[j * h_n + q]).sum();
                    }
                }
                let new = from(&dhv);
                ember_storage::with_host_data!(&new, v => ember_storage::with_host_data!(&dh, g => {
                    // SAFETY: same dtype and length; the test owns both buffers
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr().cast::<u8>(), g.as_ptr().cast::<u8>().cast_mut(), std::mem::size_of_val(&v[..])) }
                }));
            }
            let (gyb, gcb, ycb) = (up(&gy), up(&gates_c), up(&y_c));
            let (wd, wdh, wdc) = fused
                .lstm_sequence_backward((&gcb, &l3), (&ycb, &ly), (&c0b, &l2), (&wb, &lw), (&gyb, &ly), reverse)
                .unwrap();
            compare(
                format!("lstm_cell_backward gates {dtype} reverse={reverse}"),
                &dpre,
                &down(&wd, &[t_n, b_n, 4 * h_n]),
                rtol * 10.0,
            );
            compare(
                format!("lstm_cell_backward h0 {dtype} reverse={reverse}"),
                &dh,
                &down(&wdh, &[b_n, h_n]),
                rtol * 10.0,
            );
            compare(
                format!("lstm_cell_backward c0 {dtype} reverse={reverse}"),
                &dc,
                &down(&wdc, &[b_n, h_n]),
                rtol * 10.0,
            );
        }
        // optimizer steps in place, from offset views of larger buffers
        let nn = 37usize;
        let (w0, g0, b0, v0) =
            (smooth(dtype, nn + 3, 12), smooth(dtype, nn, 13), smooth(dtype, nn, 14), smooth(dtype, nn, 15));
        let v0 = from(&f64s(&v0).iter().map(|x| x.abs()).collect::<Vec<_>>());
        let wl = Layout::contiguous(&[nn + 3]).narrow(0, 3, nn).unwrap();
        let dl = Layout::contiguous(&[nn]);
        let at3 = |d: &HostData| {
            ptr(d).cast::<u8>().wrapping_add(3 * dtype.size_in_bytes()).cast::<std::ffi::c_void>().cast_mut()
        };
        // SAFETY (signature only): each call below says why it is sound.
        type Sgd = unsafe extern "C" fn(
            u32,
            u32,
            *mut std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            i64,
            f64,
            f64,
            f64,
            f64,
            i32,
        );
        for (momentum, nesterov, first, maximize) in [
            (0.0, false, false, false),
            (0.9, false, true, false),
            (0.9, true, false, true),
            (0.5, false, false, false),
        ] {
            let st = SgdStep { lr: 0.1, weight_decay: 0.01, momentum, dampening: 0.1, nesterov, maximize, first };
            let (w, b) = (w0.clone(), b0.clone());
            let flags = i32::from(maximize)
                | (i32::from(momentum != 0.0) << 1)
                | (i32::from(first) << 2)
                | (i32::from(nesterov) << 3);
            // SAFETY: w holds 3 + nn elements (the view starts at 3), g and b hold nn.
            unsafe {
                let f: libloading::Symbol<Sgd> =
                    lib.get(format!("launch_{}", sym(FusedKernel::SgdStep)).as_bytes()).unwrap();
                f(2, 8, at3(&w), ptr(&g0), vp(&b), nn as i64, st.lr, st.weight_decay, st.momentum, st.dampening, flags);
            }
            let (wb, gb, bb) =
                (cpu.upload(w0.clone()).unwrap(), cpu.upload(g0.clone()).unwrap(), cpu.upload(b0.clone()).unwrap());
            let buf = (momentum != 0.0).then_some((&bb, &dl));
            fused.sgd_step((&wb, &wl), (&gb, &dl), buf, &st).unwrap();
            compare(format!("sgd_step {dtype} {st:?}"), &w, &down(&wb, &[nn + 3]), 0.0);
            if momentum != 0.0 {
                compare(format!("sgd_step buffer {dtype} {st:?}"), &b, &down(&bb, &[nn]), 0.0);
            }
        }
        // SAFETY (signature only): each call below says why it is sound.
        type Adam = unsafe extern "C" fn(
            u32,
            u32,
            *mut std::ffi::c_void,
            *const std::ffi::c_void,
            *mut std::ffi::c_void,
            *mut std::ffi::c_void,
            i64,
            f64,
            f64,
            f64,
            f64,
            f64,
            f64,
            f64,
            i32,
        );
        for (decoupled, maximize, step) in [(false, false, 1u64), (true, false, 7), (false, true, 3)] {
            let st =
                AdamStep { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.05, decoupled, maximize, step };
            let (w, m, v) = (w0.clone(), b0.clone(), v0.clone());
            let t = step as f64;
            let ss = st.lr / (1.0 - st.betas.0.powf(t));
            let bc2 = (1.0 - st.betas.1.powf(t)).sqrt();
            let decay = if decoupled { 1.0 - st.lr * st.weight_decay } else { 1.0 };
            let l2 = if decoupled { 0.0 } else { st.weight_decay };
            // SAFETY: as above.
            unsafe {
                let f: libloading::Symbol<Adam> =
                    lib.get(format!("launch_{}", sym(FusedKernel::AdamStep)).as_bytes()).unwrap();
                f(
                    2,
                    8,
                    at3(&w),
                    ptr(&g0),
                    vp(&m),
                    vp(&v),
                    nn as i64,
                    ss,
                    bc2,
                    decay,
                    l2,
                    st.betas.0,
                    st.betas.1,
                    st.eps,
                    i32::from(maximize),
                );
            }
            let up = |d: &HostData| cpu.upload(d.clone()).unwrap();
            let (wb, gb, mb, vb) = (up(&w0), up(&g0), up(&b0), up(&v0));
            fused.adam_step((&wb, &wl), (&gb, &dl), (&mb, &dl), (&vb, &dl), &st).unwrap();
            compare(format!("adam_step {dtype} {st:?}"), &w, &down(&wb, &[nn + 3]), 0.0);
            compare(format!("adam_step exp_avg {dtype} {st:?}"), &m, &down(&mb, &[nn]), 0.0);
            compare(format!("adam_step exp_avg_sq {dtype} {st:?}"), &v, &down(&vb, &[nn]), 0.0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{checked} fused-kernel results (20 kernels) matched the CPU backend's fused kernels under emulation");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, 2 * (8 + 4 + 2 + 8 + 2 * 5 + 7 + 9));
}

/// A program like the lazy backend's groups: GELU's tanh form over a dense input, with a broadcast
/// scalar, a broadcast row and a transposed input, an intermediate returned too.
fn gelu_group(dtype: DType, shape: &[usize]) -> ember_storage::ElementwiseProgram {
    use ember_storage::{Step, UnaryOp};
    let steps = vec![
        Step::Input(0),                    // x
        Step::Input(1),                    // c (scalar)
        Step::Binary(BinaryOp::Mul, 0, 0), // x*x
        Step::Binary(BinaryOp::Mul, 2, 0), // x^3
        Step::Binary(BinaryOp::Mul, 3, 1), // c x^3
        Step::Binary(BinaryOp::Add, 0, 4), // x + c x^3
        Step::Unary(UnaryOp::Tanh, 5),
        Step::Input(2), // row
        Step::Binary(BinaryOp::Add, 6, 7),
        Step::Input(3), // transposed
        Step::Binary(BinaryOp::Mul, 8, 9),
        Step::Binary(BinaryOp::Sub, 1, 10), // scalar on the left
        Step::Unary(UnaryOp::Exp, 1),       // a step of the scalar alone
        Step::Binary(BinaryOp::Div, 11, 12),
    ];
    ember_storage::ElementwiseProgram { dtype, shape: shape.to_vec(), steps, outputs: vec![13, 5] }
}

/// A C launcher of a program kernel: inputs, outputs and operands as arrays.
// SAFETY: only a signature; the call site says why its call is sound.
type ProgramLaunch = unsafe extern "C" fn(
    u32,
    u32,
    *const *const std::ffi::c_void,
    *const *mut std::ffi::c_void,
    *const ShapeArg,
    *const OperandArg,
);

/// Generated program kernels (the lazy backend's fused groups on CUDA) run under emulation over
/// several blocks, with strided, broadcast and scalar inputs, and match the CPU backend's fused
/// programs, f32 and f64.
#[test]
fn generated_program_kernels_match_the_cpu_backend_under_emulation() {
    use ember_ops_cuda::kernels::program::program_kernel;
    let dir = std::env::temp_dir().join(format!("ember-emulation-program-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (r, c) = (5, 7);
    let shape = [r, c];
    let dense = Layout::contiguous(&shape);
    let scalar = Layout::contiguous(&[1]).expand(&shape).unwrap();
    let row = Layout::contiguous(&[c]).expand(&shape).unwrap();
    let transposed = Layout::contiguous(&[c, r]).transpose(0, 1).unwrap();
    let layouts = [&dense, &scalar, &row, &transposed];
    let cpu = CpuBackend::new();
    let mut checked = 0;
    for dtype in [DType::F32, DType::F64] {
        let program = gelu_group(dtype, &shape);
        let kernel = program_kernel(&program).unwrap();
        let ins = [
            values(dtype, r * c, 3, false),
            values(dtype, 1, 5, false),
            values(dtype, c, 7, false),
            values(dtype, r * c, 9, false),
        ];
        let outs: Vec<HostData> = (0..kernel.outputs).map(|_| zeroed(dtype, r * c)).collect();
        let t = cuda_type(dtype);
        let mut cpp = String::from("#include \"cuda_emulation.h\"\n");
        cpp.push_str(&kernel.source);
        let mut args: Vec<String> = (0..kernel.inputs).map(|i| format!("(const {}*)ins[{i}]", t.storage)).collect();
        args.extend((0..kernel.outputs).map(|j| format!("({}*)outs[{j}]", t.storage)));
        args.push("*s".into());
        args.extend((0..kernel.inputs).map(|i| format!("ops[{i}]")));
        cpp.push_str(&launcher(
            &kernel.name,
            "const void* const* ins, void* const* outs, const ember_shape* s, const ember_operand* ops",
            &args.join(", "),
        ));
        let Some(lib_path) = compile_cpp(&dir, &kernel.name, &cpp) else { return };
        let (s, o) = elementwise_args("test", &layouts).unwrap();
        let in_ptrs: Vec<_> = ins.iter().map(ptr).collect();
        let out_ptrs: Vec<_> = outs.iter().map(|d| ptr(d).cast_mut()).collect();
        // SAFETY: the library was just built from the generated source; its launcher has the
        // signature of `ProgramLaunch`; every buffer holds what its layout addresses (the outputs
        // `r * c` elements each), and the pointer arrays hold one entry per input and output.
        unsafe {
            let lib = libloading::Library::new(&lib_path).expect("load the emulated program");
            let f: libloading::Symbol<ProgramLaunch> = lib.get(format!("launch_{}", kernel.name).as_bytes()).unwrap();
            f(3, 4, in_ptrs.as_ptr(), out_ptrs.as_ptr(), &s, o.as_ptr());
        }
        let bufs: Vec<_> = ins.iter().map(|d| cpu.upload(d.clone()).unwrap()).collect();
        let views: Vec<(&ember_storage::Buffer, &Layout)> = bufs.iter().zip(layouts).collect();
        let fused = cpu.fused().expect("the CPU backend has fused kernels");
        let want = fused.elementwise(&program, &views).unwrap();
        for (j, (got, w)) in outs.iter().zip(&want).enumerate() {
            let w = cpu.download((w, &dense)).unwrap();
            let bad = differences(got, &w, tolerance(dtype));
            assert!(bad.is_empty(), "{} output {j}: {}", kernel.name, bad.join(", "));
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(checked, 4);
}
