"""Speed and memory of a colorization run: s/frame (wall and process CPU), peak RSS (and peak VRAM
on CUDA) against frame count, resolution, precision, key batch and torch.compile. Each measurement
runs in a fresh process; with several --repo checkouts the runs are interleaved (side by side).

    python bench/bench.py --checkpoint CK --resolution 832x480 --frames 8 --warm 3 --threads 2 \
        [--precision float32 bfloat16] [--key-batch 1 4] [--compile] [--repeat 3] \
        [--repo . /path/to/baseline-worktree] [--device auto] [--out bench/results.jsonl]
    python bench/bench.py ... --repo . /path/to/official-colormnet --dinov2 /path/to/dinov2   (see official.py)
    python bench/bench.py --checkpoint OFFICIAL.safetensors CMNET2_DINOV3.pth ...   (families side by side)

Frames: the blackswan clip (../shared/data/blackswan, else tests/data/blackswan or
workflows/media/blackswan, else a synthetic clip) resized to the resolution and played back and
forth to the requested length; the exemplar is its colour frame 0. The first --warm frames are
not timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(args) -> dict:
    sys.path.insert(0, str(REPO / "bench"))
    import official

    if official.is_official_checkout(args.repo):
        return official.measure(args)
    sys.path.insert(0, str(Path(args.repo).resolve()))
    import clip
    import torch

    from colormnet_core.checkpoint import load_model
    from colormnet_core.cli import pick_device
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.session import ColorizeSession

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = map(int, args.resolution.split("x"))
    source, frames, exemplar = clip.load((width, height))
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = load_model(args.checkpoint, device=device)
    session = ColorizeSession(net, EncodedExemplars((Exemplar(exemplar, 0),)), size=ProcessingSize.parse(args.size),
                              device=device, precision=args.precision, key_batch=args.key_batch,
                              compile=args.compile)
    wall, cpu, stats = [], [], None
    for _ in session.run(clip.play(frames, args.frames)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter())
        cpu.append(time.process_time())
        stats = session.memory.stats
    timed = args.frames - args.warm
    first = args.warm - 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "repo": str(Path(args.repo).resolve()), "checkpoint": Path(args.checkpoint).name,
        "network": f"{net.config.backbone}", "source": source, "frames": args.frames, "warm": args.warm,
        "resolution": args.resolution, "size": args.size,
        "processing": "x".join(map(str, session.geometry.processing_size[::-1])), "precision": args.precision,
        "key_batch": args.key_batch, "compile": args.compile, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "s_per_frame": round((wall[-1] - wall[first]) / timed, 4) if timed > 0 else None,
        "cpu_s_per_frame": round((cpu[-1] - cpu[first]) / timed, 4) if timed > 0 else None,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "minor_faults": usage.ru_minflt,
        "memory_elements": {"permanent": stats.permanent, "working": stats.working, "long_term": stats.long_term},
    }
    result["fps"] = round(1 / result["s_per_frame"], 3) if result["s_per_frame"] else None
    if device.type == "cuda":
        result["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, nargs="+",
                        help="one or more checkpoints (e.g. the official and a CMNET2 DINOv3 one); runs interleaved")
    parser.add_argument("--frames", type=int, nargs="+", default=[25, 100, 400])
    parser.add_argument("--warm", type=int, default=3, help="frames not timed at the start")
    parser.add_argument("--resolution", nargs="+", default=["854x480"])
    parser.add_argument("--size", nargs="+", default=["official"], help="processing sizes (see --size of the CLI)")
    parser.add_argument("--precision", nargs="+", default=["float32"])
    parser.add_argument("--key-batch", type=int, nargs="+", default=[1])
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repo", nargs="+", default=[str(REPO)],
                        help="checkouts to compare (e.g. a `git worktree` of the baseline); runs are interleaved")
    parser.add_argument("--dinov2", default="",
                        help="for an official checkout in --repo: a facebookresearch/dinov2 checkout (see official.py)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.frames, args.resolution, args.size = args.frames[0], args.resolution[0], args.size[0]
        args.precision, args.key_batch, args.repo = args.precision[0], args.key_batch[0], args.repo[0]
        args.checkpoint = args.checkpoint[0]
        args.compile = args.compile[0] == "on"
        print(json.dumps(measure(args)))
        return
    print("| repo | checkpoint | frames | input | processing | precision | key batch | compile | device | s/frame "
          "| CPU s/frame | peak RSS MB | peak VRAM MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    runs: dict[tuple, list[dict]] = {}
    for res, size, prec, kb, comp, n, _rep, repo, checkpoint in itertools.product(
            args.resolution, args.size, args.precision, args.key_batch, args.compile, args.frames,
            range(args.repeat), args.repo, args.checkpoint):
        cmd = [sys.executable, __file__, "--single", "--checkpoint", checkpoint, "--frames", str(n),
               "--warm", str(args.warm), "--resolution", res, "--size", size, "--precision", prec,
               "--key-batch", str(kb), "--compile", comp, "--threads", str(args.threads), "--repo", repo,
               "--device", args.device, "--dinov2", args.dinov2]
        run = subprocess.run(cmd, capture_output=True, text=True)
        name, ck = Path(repo).resolve().name, Path(checkpoint).name
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines() or ["(no output)"]
            print(f"| {name} | {ck} | {n} | {res} | {size} | {prec} | {kb} | {comp} | failed: {lines[-1]} |",
                  flush=True)
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        runs.setdefault((repo, ck, res, size, prec, kb, comp, n), []).append(r)
        print(f"| {name} | {ck} | {n} | {res} | {r['processing']} | {prec} | {kb} | {comp} | {r['device_name']} "
              f"({r['threads']} threads) | {r['s_per_frame']} | {r['cpu_s_per_frame']} | {r['peak_rss_mb']:.0f} "
              f"| {r.get('peak_vram_mb', '-')} |", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    if args.repeat > 1:
        print("\nmedians over repeats:")
        for key, rs in runs.items():
            print(f"  {Path(key[0]).resolve().name} {key[1:]}: {statistics.median(r['s_per_frame'] for r in rs):.3f} "
                  f"s/frame, peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MB")


if __name__ == "__main__":
    main()
