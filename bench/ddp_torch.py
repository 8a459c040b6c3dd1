"""PyTorch's side of Ember's DDP measurement (examples/ddp_bench.rs): W7 (MLP train step with Adam)
and W11 (Transformer encoder layer forward + backward) as DistributedDataParallel steps with the
gloo backend, each rank with the workload's full batch; `local` is the same step without DDP.
Rank 0 prints one JSON line per figure (ms per step, median of 7 rounds of 5 steps).

    torchrun --nproc_per_node 2 bench/ddp_torch.py [W7,W11]

PyTorch is only the reference here, not a dependency of Ember.
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

ROUNDS, STEPS = 7, 5


def timed(step):
    for _ in range(3):
        step()
    ms = []
    for _ in range(ROUNDS):
        dist.barrier()
        t = time.perf_counter()
        for _ in range(STEPS):
            step()
        ms.append((time.perf_counter() - t) * 1e3 / STEPS)
    ms.sort()
    return ms[ROUNDS // 2], ms[0], ms[-1]


def emit(wid, mode, t):
    if dist.get_rank() == 0:
        med, lo, hi = t
        print(json.dumps({"id": wid, "lib": "torch", "mode": "ddp-" + mode, "ranks": dist.get_world_size(),
                          "threads": torch.get_num_threads(), "value": round(med, 3), "unit": "ms",
                          "min_ms": round(lo, 3), "max_ms": round(hi, 3), "steps": ROUNDS * STEPS}), flush=True)


def main():
    dist.init_process_group("gloo")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    only = sys.argv[1] if len(sys.argv) > 1 else "W7,W11"
    torch.manual_seed(dist.get_rank())
    if "W7" in only:
        x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
        for mode in ["local", "overlap"]:
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
            model = net if mode == "local" else DDP(net)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)

            def step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            emit("W7", mode, timed(step))
    if "W11" in only:
        x = torch.randn(16, 128, 256)
        for mode in ["local", "overlap"]:
            torch.manual_seed(0)
            layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
            model = layer if mode == "local" else DDP(layer)

            def step():
                layer.zero_grad(set_to_none=True)
                model(x).sum().backward()

            emit("W11", mode, timed(step))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
