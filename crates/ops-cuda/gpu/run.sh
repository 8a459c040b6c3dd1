#!/usr/bin/env bash
# The GPU check, run from the repository root on a machine with an NVIDIA GPU (built by prepare.sh):
# the device; every ember-ops-cuda test (kernels compiled by the machine's NVRTC for its
# architecture, each op family against the CPU backend); the conformance suite and the gradient
# sweep on cuda:0; the main job's first 50 steps on CPU and CUDA (losses within 1e-4 relative) and 2
# epochs on CUDA; then `xtask bench --device cuda` and torch_ref.py --device cuda, alternating, 3
# rounds; last the criterion benches. Steps run in order of importance (correctness first, benches
# last), each under its own timeout, so a run cut short by the device tool's 10-minute limit still
# reports the checks. Output: stdout, and the JSON lines in target/gpu-check/bench.jsonl.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cuda_lib="${CUDA_HOME:-/usr/local/cuda}/lib64"
export LD_LIBRARY_PATH="$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVRTC comes with the machine's CUDA: the compile test must run here, not skip
export EMBER_CUDA_CACHE="$here/cache" EMBER_CONFORMANCE_DIR="$PWD/tests/conformance" EMBER_REQUIRE_NVRTC=1
status=0
step() { echo; echo "== $*"; }
# NCCL for the NcclGroup test: the copy PyTorch's wheels bring (nvidia-nccl-cu*), if any
nccl_lib=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null || true)
if [ -n "$nccl_lib" ]; then export LD_LIBRARY_PATH="$nccl_lib:${LD_LIBRARY_PATH:-}"; fi
for t in "$here"/tests/*; do
    name="$(basename "$t")"
    # the workspace test binaries: only their CUDA tests (the CPU ones ran in CI)
    case "$name" in
        conformance) filter=conformance_cuda ;;
        op_sweep) filter=the_sweep_passes_on_cuda ;;
        backends) continue ;; # the criterion benches run last
        *) filter= ;;
    esac
    step "$name $filter"
    timeout 240 "$t" $filter --nocapture --test-threads 1 || status=1
done
step "conformance on cuda:0"
timeout 120 "$here/xtask" conformance --quiet --device cuda --dir tests/conformance || status=1
step "conformance on lazy-cuda:0 (lazy groups as generated kernels)"
timeout 180 "$here/xtask" conformance --quiet --device cuda --lazy --dir tests/conformance || status=1
step "main job: the first 50 steps on cpu and cuda"
for d in cpu cuda lazy-cuda; do
    timeout 120 "$here/mnist" --device "$d" --data data/mnist-5k --epochs 1 --limit 3200 --batch-size 64 \
        --out "$here/runs/$d" --loss-log "$here/loss-$d.txt" | tail -2 || status=1
done
python3 - "$here/loss-cpu.txt" "$here/loss-cuda.txt" <<'PY' || status=1
import os, sys
missing = [p for p in sys.argv[1:] if not os.path.exists(p)]
if missing:
    sys.exit(f"no step losses from {missing}: see the run above")
cpu, cuda = ([float(v) for v in open(p)] for p in sys.argv[1:])
n = min(50, len(cpu), len(cuda))
worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu[:n], cuda[:n]))
print(f"{n} steps compared; largest relative difference {worst:.2e}")
sys.exit(0 if n == 50 and worst <= 1e-4 else 1)
PY
if cmp -s "$here/loss-cuda.txt" "$here/loss-lazy-cuda.txt"; then
    echo "lazy-cuda: every step loss is cuda's to the bit"
else
    echo "lazy-cuda: step losses differ from cuda's"; status=1
fi
step "main job: 2 epochs on cuda"
timeout 180 "$here/mnist" --device cuda --data data/mnist-5k --epochs 2 --out "$here/runs/cuda2" | tail -3 || status=1
step "bench: ember and PyTorch on cuda, alternating"
: > "$here/bench.jsonl"
for round in 1 2 3; do
    timeout 120 "$here/xtask" bench --device cuda --only W1,W2,W3,W4,W7,W8,W14 --reps 5 | tee -a "$here/bench.jsonl"
    if [ -f "$here/torch_ref.py" ]; then
        timeout 120 python3 "$here/torch_ref.py" --device cuda --only W1,W2,W3,W4,W7,W8,W14 --reps 10 | tee -a "$here/bench.jsonl"
        timeout 180 python3 "$here/torch_ref.py" --device cuda --only W14 --compile --reps 10 | tee -a "$here/bench.jsonl"
    fi
done
step "criterion: op families on cpu and cuda"
timeout 300 "$here/tests/backends" --bench --warm-up-time 0.5 --measurement-time 1 || status=1
exit $status
