#!/usr/bin/env bash
# Builds, on this machine, everything the GPU check needs into target/gpu-check (ignored by git,
# well under the device tool's 64 MiB): the stripped ember-ops-cuda test binaries and run.sh.
# Then, on the GPU machine: `bash target/gpu-check/run.sh` (carry target/gpu-check).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=target/gpu-check
rm -rf "$out" && mkdir -p "$out"
cargo test -p ember-ops-cuda --release --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    # the emulation test is a CPU check (it needs this checkout's headers and a C++ compiler)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] != "emulated_kernels":
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$out"
strip "$out"/* 2>/dev/null || true
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# The GPU check: the device, then every ember-ops-cuda test (kernels compiled by the machine's NVRTC
# for its architecture, elementwise/fill/cast/copy against the CPU backend).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cuda_lib="${CUDA_HOME:-/usr/local/cuda}/lib64"
export LD_LIBRARY_PATH="$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export EMBER_CUDA_CACHE="$here/cache"
status=0
for t in "$here"/*; do
    [ -x "$t" ] && [ "$(basename "$t")" != run.sh ] || continue
    echo "== $(basename "$t")"
    "$t" --nocapture --test-threads 1 || status=1
done
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
