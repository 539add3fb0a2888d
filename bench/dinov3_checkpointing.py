"""Training the DINOv3 ViT-B/16 (`--unlock-backbone`): memory and time with and without activation checkpointing.

    python bench/dinov3_checkpointing.py [--size 224] [--frames 4] [--repeats 3] [--device cpu|cuda]

One training step of the key encoder's DINOv3 branch (ViT blocks 0-10, the 1x1 conv head) on `frames`
frames of `size` x `size`, forward and backward, as one training sequence passes it. Each setting runs
in a fresh process, so the peak is that setting's own: peak resident memory (CPU) or peak allocated
device memory (CUDA), and the median step time. The gradients are the same either way (asserted in
tests/test_finetune.py); checkpointing trades a second forward pass of each block for not keeping its
activations.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_setting(checkpointed: bool, size: int, frames: int, repeats: int, device: str) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from colormnet_core.dinov3 import Dinov3Features

    torch.manual_seed(0)
    dino = Dinov3Features().to(device).eval()
    dino.checkpointed = checkpointed
    x = torch.randn(frames, 3, size, size, device=device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        dino.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        dino(x).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024)
    return {"checkpointed": checkpointed, "median_s": statistics.median(times), "peak_mb": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)   # a child process's setting
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_setting(args.one == "on", args.size, args.frames, args.repeats, args.device)))
        return
    rows = []
    for setting in ("off", "on"):
        child = subprocess.run([sys.executable, __file__, "--one", setting, "--size", str(args.size), "--frames",
                                str(args.frames), "--repeats", str(args.repeats), "--device", args.device],
                               capture_output=True, text=True, check=True, timeout=3600)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    unit = "peak allocated MB" if args.device == "cuda" else "peak RSS growth MB"
    print(f"| checkpointed | step (median of {args.repeats}) | {unit} |")
    print("| --- | --- | --- |")
    for row in rows:
        print(f"| {'yes' if row['checkpointed'] else 'no'} | {row['median_s']:.2f} s | {row['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
