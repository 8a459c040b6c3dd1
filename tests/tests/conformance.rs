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
