//! The CUDA C sources of Ember's kernels, generated in Rust from the op table and compiled at run
//! time by NVRTC (and, in tests, as C++ under an emulation header).

pub mod dtype;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod matmul_int;
pub mod movement;
pub mod program;
pub mod random;
pub mod reduce;
pub mod scan;
pub mod sort;
pub mod window;

/// Index helpers and the `ember_*` scalar functions the op table's CUDA expressions call.
pub const PRELUDE: &str = include_str!("prelude.cuh");
