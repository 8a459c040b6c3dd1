#!/usr/bin/env bash
# Builds, on this machine, everything the GPU check needs into target/gpu-check (ignored by git):
# the stripped ember-ops-cuda test binaries, the CUDA-relevant workspace tests (conformance,
# gradient sweep), the xtask binary (conformance/bench --device cuda), the mnist example built with
# CUDA, PyTorch's torch_ref.py and run.sh; packed into target/gpu-check.tar.xz (~15 MB; the folder
# is ~100 MB, over the device tool's 64 MiB). On the GPU machine, from the repository root (carry
# target/gpu-check.tar.xz):
#   tar -xJf target/gpu-check.tar.xz -C target && bash target/gpu-check/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=target/gpu-check
rm -rf "$out" && mkdir -p "$out/tests"
copy_tests() { # copies the test executables cargo reports (minus the CPU-only emulation test)
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] != "emulated_kernels":
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$out/tests"
}
cargo test -p ember-ops-cuda --release --no-run --message-format=json 2>/dev/null | copy_tests
cargo bench -p ember-ops-cuda --bench backends --no-run --message-format=json 2>/dev/null | copy_tests
cargo test -p ember-tests --release --features ember/cuda --test conformance --test op_sweep --no-run \
    --message-format=json 2>/dev/null | copy_tests
# NcclGroup as a world of one (NCCL from PyTorch's nvidia-nccl wheel, see run.sh)
cargo test -p ember-distributed --release --features nccl --test nccl --no-run --message-format=json 2>/dev/null | copy_tests
cargo build --release -p xtask
cargo build --release -p ember --features cuda --example mnist
cp target/release/xtask target/release/examples/mnist "$out/"
cp ../shared/perf/torch_ref.py "$out/" 2>/dev/null || echo "note: ../shared/perf/torch_ref.py not found; run.sh skips PyTorch's side"
strip "$out"/tests/* "$out/xtask" "$out/mnist" 2>/dev/null || true
cp crates/ops-cuda/gpu/run.sh "$out/run.sh"
chmod +x "$out/run.sh"
du -sh "$out"
tar -cJf target/gpu-check.tar.xz -C target gpu-check
ls -la target/gpu-check.tar.xz
