"""Speed and memory of a colorization run: frames/s and peak memory (RSS; VRAM on CUDA) against
frame count, resolution, precision and key-batch size. Each measurement runs in a fresh process.

    python bench/bench.py --checkpoint CK --frames 25 100 400 --resolution 854x480 --size 112 \
        [--precision float32 bfloat16] [--key-batch 1 4] [--device auto] [--out bench/results.jsonl]

Frames are the blackswan clip (../shared/data/blackswan) resized to the resolution and played
back and forth to the requested length; the exemplar is its colour frame 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLACKSWAN = REPO.parent / "shared" / "data" / "blackswan"


def frames_of(resolution: tuple[int, int], count: int):
    import cv2
    import torch

    paths = sorted((BLACKSWAN / "frames").glob("*.png"))
    clip = [torch.from_numpy(cv2.resize(cv2.imread(str(p))[:, :, ::-1], resolution, interpolation=cv2.INTER_AREA)
                             .copy()).permute(2, 0, 1) for p in paths]
    order = itertools.cycle(list(range(len(clip))) + list(range(len(clip) - 2, 0, -1)))
    for _ in range(count):
        yield clip[next(order)]


def measure(args) -> dict:
    import cv2
    import torch

    sys.path.insert(0, str(REPO))
    from colormnet_core.checkpoint import load_model
    from colormnet_core.cli import pick_device
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.session import ColorizeSession

    width, height = map(int, args.resolution.split("x"))
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = load_model(args.checkpoint, device=device)
    exemplar = cv2.resize(cv2.imread(str(BLACKSWAN / "exemplar" / "00000.png"))[:, :, ::-1], (width, height),
                          interpolation=cv2.INTER_AREA)
    exemplars = EncodedExemplars((Exemplar(torch.from_numpy(exemplar.copy()).permute(2, 0, 1), 0),))
    session = ColorizeSession(net, exemplars, size=ProcessingSize.parse(args.size), device=device,
                              precision=args.precision, key_batch=args.key_batch, compile=args.compile)
    warm = 3
    times, started, stats = [], None, None
    for i, _ in enumerate(session.run(frames_of((width, height), args.frames))):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if i + 1 == warm:
            started = now
        times.append(now)
        stats = session.memory.stats
    timed = args.frames - warm
    fps = timed / (times[-1] - started) if timed > 0 else float("nan")
    result = {
        "frames": args.frames, "resolution": args.resolution, "size": args.size,
        "processing": "x".join(map(str, session.geometry.processing_size[::-1])), "precision": args.precision,
        "key_batch": args.key_batch, "compile": args.compile, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "fps": round(fps, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory_elements": {"permanent": stats.permanent, "working": stats.working, "long_term": stats.long_term},
    }
    if device.type == "cuda":
        result["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames", type=int, nargs="+", default=[25, 100, 400])
    parser.add_argument("--resolution", nargs="+", default=["854x480"])
    parser.add_argument("--size", nargs="+", default=["official"], help="processing sizes (see --size of the CLI)")
    parser.add_argument("--precision", nargs="+", default=["float32"])
    parser.add_argument("--key-batch", type=int, nargs="+", default=[4])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.frames, args.resolution, args.size = args.frames[0], args.resolution[0], args.size[0]
        args.precision, args.key_batch = args.precision[0], args.key_batch[0]
        print(json.dumps(measure(args)))
        return
    print("| frames | input | processing | precision | key batch | device | frames/s | peak RSS MB | peak VRAM MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res, size, prec, kb, n in itertools.product(args.resolution, args.size, args.precision, args.key_batch,
                                                     args.frames):
        cmd = [sys.executable, __file__, "--single", "--checkpoint", args.checkpoint, "--frames", str(n),
               "--resolution", res, "--size", size, "--precision", prec, "--key-batch", str(kb),
               "--device", args.device] + (["--compile"] if args.compile else [])
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"| {n} | {res} | {size} | {prec} | {kb} | failed: {run.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| {n} | {res} | {r['processing']} | {prec} | {kb} | {r['device_name']} ({r['threads']} threads) | "
              f"{r['fps']:.2f} | {r['peak_rss_mb']:.0f} | {r.get('peak_vram_mb', '-')} |", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
