"""Where a colorization run spends its time, stage by stage (CPU time of the process and wall time).

    python bench/profile_stages.py --checkpoint .cache/golden_weights.safetensors \
        [--resolution 832x480] [--frames 8] [--threads 2] [--key-batch 1] [--precision float32] [--ops 25]

Every stage is wrapped with a timer (disjoint stages; "other" is the rest of the session loop).
CPU time (user + sys, all threads) is what to compare on a shared machine: wall time there depends
on the neighbours. The first `--warm` frames are excluded. `--ops N` adds torch.profiler's N most
expensive operators. Frames: blackswan when ../shared is present, else a synthetic clip.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# stage -> (where, names): "network" names submodules whose forward is timed; otherwise where is a
# module ("colormnet_core.pipeline") or a class in one ("colormnet_core.memory:MFPMemory") whose
# functions or methods are timed.
STAGES = {
    "key encoder: ResNet-50": ("network", "key_encoder.cnn"),
    "key encoder: DINOv2": ("network", "key_encoder.dino"),
    "key encoder: fusion (3 Fuse)": ("network", "key_encoder.fuse16 key_encoder.fuse8 key_encoder.fuse4"),
    "key projection": ("network", "key_proj"),
    "memory read (top-k)": ("colormnet_core.memory:MFPMemory", "read"),
    "memory add / consolidation": ("colormnet_core.memory:MFPMemory", "add"),
    "LA (local attention)": ("network", "local_attention"),
    "value encoder": ("network", "value_encoder"),
    "decoder": ("network", "decoder"),
    "colour: RGB -> Lab": ("colormnet_core.pipeline", "normalized_lab"),
    "colour: network image": ("colormnet_core.pipeline", "network_image"),
    "colour: Lab -> RGB": ("colormnet_core.compose", "lab_to_rgb denormalize_lab fit_chroma_to_gamut"),
}


class Timers:
    def __init__(self) -> None:
        self.cpu = defaultdict(float)
        self.wall = defaultdict(float)
        self.active = False
        self.depth = 0

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.active or self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] += time.process_time() - c0
                self.wall[name] += time.perf_counter() - w0
                self.depth -= 1
        return timed


def instrument(net, wrap) -> Callable[[], None]:
    """Replace every stage's function by `wrap(stage, function)` (network submodules' forward on `net`
    only; memory methods and colour functions process-wide). Returns a function that undoes it."""
    import importlib

    undo = []
    for stage, (where, names) in STAGES.items():
        for name in names.split():
            if where == "network":
                owner, attr = functools.reduce(getattr, name.split("."), net), "forward"
            else:
                module, _, cls = where.partition(":")
                owner = importlib.import_module(module)
                owner, attr = (getattr(owner, cls) if cls else owner), name
            had = attr in vars(owner)
            undo.append((owner, attr, vars(owner).get(attr), had))
            setattr(owner, attr, wrap(stage, getattr(owner, attr)))

    def restore() -> None:
        for owner, attr, original, had in reversed(undo):
            if had:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
    return restore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--resolution", default="832x480")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--warm", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--key-batch", type=int, default=1)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--ops", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="append the result as one JSON line")
    args = parser.parse_args()

    import clip
    import torch

    from colormnet_core.checkpoint import load_model
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    torch.set_num_threads(args.threads)
    width, height = map(int, args.resolution.split("x"))
    source, frames, exemplar = clip.load((width, height))
    net = load_model(args.checkpoint, device="cpu")
    timers = Timers()
    instrument(net, timers.wrap)
    session = ColorizeSession(net, EncodedExemplars((Exemplar(exemplar, 0),)), precision=args.precision,
                              key_batch=args.key_batch)
    profiler = None
    cpu0 = wall0 = 0.0
    for i, _ in enumerate(session.run(clip.play(frames, args.frames))):
        if i + 1 == args.warm:
            timers.active = True
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if args.ops:
                profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiler.__enter__()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profiler is not None:
        profiler.__exit__(None, None, None)
    timed = args.frames - args.warm
    rss = resource.getrusage(resource.RUSAGE_SELF)
    print(f"input {source}, {args.resolution}, {args.frames} frames ({timed} timed), {args.threads} threads, "
          f"{args.precision}, key batch {args.key_batch}, torch {torch.__version__}")
    print(f"per frame: CPU {cpu / timed:.2f} s, wall {wall / timed:.2f} s; peak RSS {rss.ru_maxrss / 1024:.0f} MB; "
          f"minor page faults {rss.ru_minflt}")
    print("| stage | CPU s/frame | share | wall s/frame |")
    print("|---|---|---|---|")
    rows = {**{k: timers.cpu[k] for k in STAGES}, "other (loop, copies, glue)": cpu - sum(timers.cpu.values())}
    walls = {**{k: timers.wall[k] for k in STAGES}, "other (loop, copies, glue)": wall - sum(timers.wall.values())}
    for name, value in rows.items():
        print(f"| {name} | {value / timed:.3f} | {100 * value / cpu:.1f} % | {walls[name] / timed:.3f} |")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cpu_s_per_frame": cpu / timed,
                                "wall_s_per_frame": wall / timed, "peak_rss_mb": rss.ru_maxrss / 1024,
                                "stages_cpu": {k: v / timed for k, v in rows.items()}}) + "\n")


if __name__ == "__main__":
    main()
