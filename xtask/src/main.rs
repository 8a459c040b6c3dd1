//! `cargo xtask <command>`: Ember's chores.
//!
//! - `conformance [--dir DIR] [--quiet] [--device cpu|cuda|cuda:N|lazy|lazy-cuda:N] [--lazy]`: runs
//!   the PyTorch conformance cases on a device (the CPU by default); `--lazy` runs them on the
//!   device's lazy, fusing form (`--device lazy`).
//! - `bench [--only W1,W2] [--threads N] [--reps R] [--device D] [--autocast bf16|f16]`: runs the reference workloads of
//!   `../shared/perf/WORKLOADS.md` that exist so far and prints one JSON line per figure, in the
//!   format of `../shared/perf/torch_ref.py`, so the two outputs pair up by `id` + `params`. On a
//!   GPU every repetition ends with a device synchronisation, as torch_ref.py's `--device cuda`.
//!   W14 (fusion) runs each case eagerly and lazily (`mode: "eager"` / `"lazy"`); on a lazy device
//!   every other workload's figures carry `mode: "lazy"`. With `EMBER_BENCH_PROFILE=1` each figure
//!   is followed by the profiler's table of one more repetition, on stderr.

mod bench;
mod bench_fusion;
mod bench_nn;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    // the device, checked usable before any work (a missing GPU is one clear error, not 615)
    let lazy = args.iter().any(|a| a == "--lazy");
    let device = ember::Device::parse(&flag("--device").unwrap_or_else(|| "cpu".into()))
        .map(|d| if lazy { d.lazy() } else { d })
        .and_then(|d| ember::Tensor::zeros([1])?.to(d).map(|_| d));
    let device = match device {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("conformance") => {
            let dir = flag("--dir").map(std::path::PathBuf::from).unwrap_or_else(ember_tests::conformance::default_dir);
            let quiet = args.iter().any(|a| a == "--quiet");
            match ember_tests::conformance::run_all(&dir, device, quiet) {
                Ok(s) => {
                    println!("{}", s.line());
                    if s.counts().1 == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("conformance: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("bench") => {
            let only: Vec<String> =
                flag("--only").map(|s| s.split(',').map(String::from).collect()).unwrap_or_default();
            let threads: usize = flag("--threads").and_then(|s| s.parse().ok()).unwrap_or(2);
            let reps: usize = flag("--reps").and_then(|s| s.parse().ok()).unwrap_or(15);
            let autocast = match flag("--autocast").as_deref() {
                None => None,
                Some("bf16") => Some(ember::DType::BF16),
                Some("f16") => Some(ember::DType::F16),
                Some(other) => {
                    eprintln!("bench: --autocast takes bf16 or f16, got {other:?}");
                    return ExitCode::FAILURE;
                }
            };
            match bench::run(&only, threads, reps, device, autocast) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: cargo xtask conformance [--dir DIR] [--quiet] [--device D] [--lazy]\n       cargo xtask bench [--only W1,W2] [--threads N] [--reps R] [--device D] [--autocast bf16|f16]");
            ExitCode::FAILURE
        }
    }
}
