//! How each Ember dtype appears in CUDA C: its storage type, the type ops compute in, and the
//! suffix of kernel names.

use ember_storage::DType;

/// The CUDA C side of one dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaType {
    /// The dtype.
    pub dtype: DType,
    /// The element type in memory (`__half`, `float`, `long long`, ...).
    pub storage: &'static str,
    /// The type expressions are evaluated in (`float` for f16 and bf16, as PyTorch's opmath).
    pub compute: &'static str,
    /// Kernel-name suffix (`f32`, `bf16`, ...).
    pub suffix: &'static str,
}

/// Every dtype Ember has, in CUDA C.
pub const CUDA_TYPES: [CudaType; 8] = [
    CudaType { dtype: DType::Bool, storage: "bool", compute: "bool", suffix: "bool" },
    CudaType { dtype: DType::U8, storage: "unsigned char", compute: "unsigned char", suffix: "u8" },
    CudaType { dtype: DType::I32, storage: "int", compute: "int", suffix: "i32" },
    CudaType { dtype: DType::I64, storage: "long long", compute: "long long", suffix: "i64" },
    CudaType { dtype: DType::F16, storage: "__half", compute: "float", suffix: "f16" },
    CudaType { dtype: DType::BF16, storage: "__nv_bfloat16", compute: "float", suffix: "bf16" },
    CudaType { dtype: DType::F32, storage: "float", compute: "float", suffix: "f32" },
    CudaType { dtype: DType::F64, storage: "double", compute: "double", suffix: "f64" },
];

/// The CUDA C side of `dtype`.
pub fn cuda_type(dtype: DType) -> CudaType {
    *CUDA_TYPES.iter().find(|t| t.dtype == dtype).expect("every dtype has a CUDA type")
}
