//! The op-table gradient sweep on the CPU backend (and its lazy device): every differentiable elementwise row, first and
//! second order, over random shapes with broadcasting and non-contiguous views, inside each row's
//! declared domain; and the check that every such row has PyTorch reference cases with gradients.

use ember::{manual_seed, Device};
use ember_tests::sweep::{differentiable_binary, differentiable_unary, sweep_binary, sweep_unary};
use proptest::prelude::*;

mod common;
use common::broadcast_pair;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_unary_row_passes_gradcheck(shape in proptest::collection::vec(1..4usize, 0..4), transposed: bool, seed: u64) {
        manual_seed(seed);
        let checked = sweep_unary(Device::Cpu, &shape, transposed).map_err(TestCaseError::fail)?;
        // only trigamma's backward (polygamma(2, x)) is missing, so digamma has no second order
        prop_assert_eq!(&checked.unsupported, &["digamma (second order)", "trigamma (first order)"]);
        prop_assert_eq!(checked.first.len(), differentiable_unary().count() - 1);
        prop_assert_eq!(checked.second.len(), differentiable_unary().count() - 2);
    }

    #[test]
    fn every_binary_row_passes_gradcheck((sa, sb) in broadcast_pair(), transposed: bool, seed: u64) {
        manual_seed(seed);
        let checked = sweep_binary(Device::Cpu, &sa, &sb, transposed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(checked.first.len(), differentiable_binary().count());
        prop_assert_eq!(checked.second.len(), differentiable_binary().count());
        prop_assert!(checked.unsupported.is_empty(), "{:?}", checked.unsupported);
    }
}

#[test]
fn the_sweep_covers_the_whole_table() {
    let (u, b) = (differentiable_unary().count(), differentiable_binary().count());
    println!("differentiable rows: {u} unary + {b} binary");
    assert!(u >= 40 && b >= 15, "{u} unary, {b} binary");
}

/// `sinc` was added as one row of the op table and nothing else: its PyTorch cases (special values,
/// f32 and f64, and gradients at edge points) pass, and the sweep above checks its gradients.
#[test]
fn a_row_added_to_the_table_is_a_complete_op() {
    let dir = ember_tests::conformance::edge_case_dir();
    let summary = ember_tests::conformance::run_all(&dir, Device::Cpu, true).expect("edge cases load");
    let sinc: Vec<_> = summary.results.iter().filter(|(id, _)| id.starts_with("sinc/")).collect();
    assert_eq!(sinc.len(), 3);
    for (id, outcome) in sinc {
        assert_eq!(outcome, &ember_tests::conformance::Outcome::Passed, "{id}");
    }
    assert!(differentiable_unary().any(|op| op.name() == "sinc"));
}

/// The conformance name of a table row: its own name, or the op that exercises it where the row has
/// no method of its own.
fn conformance_name(name: &str) -> &str {
    match name {
        "gelu_tanh" => "gelu",          // gelu(approximate="tanh")
        "threshold_backward" => "relu", // relu's gradient
        other => other,
    }
}

/// Every differentiable row of the op table has PyTorch reference cases with gradients, in the shared
/// conformance set or in Ember's own edge-case set.
#[test]
fn every_differentiable_row_has_pytorch_cases_with_gradients() {
    let mut with_grads = std::collections::HashSet::new();
    for dir in [ember_tests::conformance::default_dir(), ember_tests::conformance::edge_case_dir()] {
        for case in ember_tests::conformance::load_manifest(&dir).expect("cases load") {
            if !case.grads.is_empty() {
                with_grads.insert(case.op);
            }
        }
    }
    let names = differentiable_unary().map(|o| o.name()).chain(differentiable_binary().map(|o| o.name()));
    // PyTorch defines no derivative for floor_divide (its backward raises), so there is no reference;
    // Ember's gradient (0, as floor's) is checked by the finite-difference sweep
    let missing: Vec<&str> =
        names.filter(|n| *n != "floor_divide" && !with_grads.contains(conformance_name(n))).collect();
    assert!(missing.is_empty(), "rows without PyTorch cases with gradients: {missing:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The sweep on the lazy device (`Device::Cpu.lazy()`): forward and backward ops are recorded and
    /// run as fused groups, and every row's gradients still match finite differences.
    #[test]
    fn every_row_passes_gradcheck_lazily(
        shape in proptest::collection::vec(1..4usize, 0..4),
        (sa, sb) in broadcast_pair(),
        transposed: bool,
        seed: u64,
    ) {
        manual_seed(seed);
        let lazy = Device::Cpu.lazy();
        let checked = sweep_unary(lazy, &shape, transposed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(checked.first.len(), differentiable_unary().count() - 1);
        prop_assert_eq!(checked.second.len(), differentiable_unary().count() - 2);
        let checked = sweep_binary(lazy, &sa, &sb, transposed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(checked.first.len(), differentiable_binary().count());
        prop_assert_eq!(checked.second.len(), differentiable_binary().count());
    }
}

/// The same sweep on the CUDA backend (f64 kernels, strided and broadcast views), over a few fixed
/// shapes. Runs where a GPU is present (the GPU check of `crates/ops-cuda/gpu/`); elsewhere it says
/// it was skipped.
#[test]
fn the_sweep_passes_on_cuda() {
    if !ember::cuda::is_available() {
        println!("SKIPPED: no CUDA device (the sweep runs on the CPU above; on a GPU in crates/ops-cuda/gpu/run.sh)");
        return;
    }
    manual_seed(3);
    let cuda = Device::Cuda(0);
    for (shape, transposed) in [(vec![], false), (vec![3], false), (vec![2, 3], true), (vec![2, 1, 3], false)] {
        let checked = sweep_unary(cuda, &shape, transposed).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert_eq!(checked.first.len(), differentiable_unary().count() - 1, "{shape:?}");
    }
    for (sa, sb) in [(vec![2, 3], vec![3]), (vec![4, 1], vec![1, 2]), (vec![], vec![2])] {
        let checked = sweep_binary(cuda, &sa, &sb, true).unwrap_or_else(|e| panic!("{sa:?} {sb:?}: {e}"));
        assert_eq!(checked.first.len(), differentiable_binary().count(), "{sa:?} {sb:?}");
    }
}
