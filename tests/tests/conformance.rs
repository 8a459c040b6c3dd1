//! Runs the PyTorch conformance cases on the CPU backend and fails on any mismatch.

use ember::Device;
use ember_tests::conformance::{default_dir, run_all, Outcome};

#[test]
fn conformance_cpu() {
    let dir = default_dir();
    let summary = run_all(&dir, Device::Cpu, false).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    println!("(forward outputs, gradients and Hessian-vector products)");
    println!("{}", summary.line());
    let failed: Vec<&String> =
        summary.results.iter().filter(|(_, o)| matches!(o, Outcome::Failed(_))).map(|(id, _)| id).collect();
    assert!(
        summary.results.len() > 500,
        "expected the full case set, found {} cases in {}",
        summary.results.len(),
        dir.display()
    );
    assert!(failed.is_empty(), "{} conformance cases failed: {failed:?}", failed.len());
}

/// The shared case set on the CUDA backend, where a GPU is present (the GPU check of
/// `crates/ops-cuda/gpu/` runs it; without one it says it was skipped). Cases the CUDA backend
/// refuses (an op with no CUDA kernel for a dtype) are listed; wrong results fail.
#[test]
fn conformance_cuda() {
    if !ember::cuda::is_available() {
        println!(
            "SKIPPED: no CUDA device (conformance_cpu covers the cases; a GPU runs them in crates/ops-cuda/gpu/run.sh)"
        );
        return;
    }
    let dir = default_dir();
    let summary = run_all(&dir, Device::Cuda(0), true).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    println!("cuda:0: {}", summary.line());
    let failed: Vec<(&String, &String)> = summary
        .results
        .iter()
        .filter_map(|(id, o)| match o {
            Outcome::Failed(why) => Some((id, why)),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "{} conformance cases failed on cuda:0: {failed:#?}", failed.len());
}

/// Ember's own PyTorch-computed case set (`tests/edge_cases/gen.py`): every op-table row at special
/// values (NaN, ±inf, ±0, tiny, huge) and its gradients at edge points, integer wrapping, NaN
/// propagation in reductions, prod's gradient with zeros, overflow-safe backward formulas, reductions
/// over empty dims, and f64 constants in activations.
#[test]
fn edge_cases_cpu() {
    let dir = ember_tests::conformance::edge_case_dir();
    let summary = run_all(&dir, Device::Cpu, false).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    println!("edge cases: {}", summary.line());
    let failed: Vec<String> = summary
        .results
        .iter()
        .filter_map(|(id, o)| match o {
            Outcome::Failed(m) => Some(format!("{id}: {m}")),
            _ => None,
        })
        .collect();
    assert!(summary.results.len() > 300, "expected the edge case set, found {}", summary.results.len());
    assert!(failed.is_empty(), "{} edge cases failed:\n{}", failed.len(), failed.join("\n"));
}
