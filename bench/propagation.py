"""Forward against bidirectional propagation (colormnet_core/propagation.py): quality and cost.

    python bench/propagation.py quality --checkpoint CK [--blend distance confidence distance_confidence]
    python bench/propagation.py memory --checkpoint CK --frames 60 240 --resolution 854x480 --size 112 \
        [--ram-limit-mb 0 512] [--threads 1]

quality: keyframe pop and CDC of both modes on
* pans over the blackswan colour exemplar (tests/data), whose every frame is a true keyframe
  exemplar: (frames, pixels per frame, keyframes) as in CLIPS;
* the shipped two-shot example (workflows/media, exemplars at frames 0 and 12, as the keyframes
  workflow pins them), without and with its shot list 0-11,12-23.
pop(k) = mean |Lab ab(k+1) - ab(k-1)| of the 8-bit outputs over the median of that two-frame
change in the clip (k's own frame shows the exemplar); flash(k) = the mean of the one-frame changes
k-1 -> k and k -> k+1 over the median one-frame change (how much the exemplar's own frame stands
out); CDC = TCVC's colour distribution consistency (JS divergence of per-channel 256-bin histograms
of frames t, t+d, d = 1, 2, 4). Also prints wall time.

memory: one fresh process per mode and RAM limit: `frames` synthetic uint8 frames at `resolution`
streamed like a decoded video (not indexable, so the bidirectional stretch buffers them), exemplars
at the first and last frame (the stretch is the whole clip). Prints peak RSS, RSS once the model
is loaded (before the run), wall time, and the bytes the buffers held.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIPS = ((17, 2, (0, 8, 16)), (30, 2, (0, 12, 24)), (37, 2, (0, 18, 36)), (25, 3, (0, 8, 16, 24)))


def pan(frames: int, step: int) -> torch.Tensor:
    from tests import golden

    image = golden.load_png(golden.BLACKSWAN / "exemplar" / "00000.png")
    return torch.stack([image[:, 40:200, step * i:step * i + 224] for i in range(frames)])


def chroma(results) -> torch.Tensor:
    from colormnet_core.color import rgb_to_lab

    rgb8 = (torch.stack([r.rgb for r in results]) * 255).round()
    return rgb_to_lab(rgb8.double() / 255)[:, 1:]


def pops(results, keys) -> tuple[list[float], float, list[float]]:
    """(pop per inner keyframe, median two-frame change, flash per inner keyframe): see the docstring."""
    ab = chroma(results)
    change = [(ab[t + 1] - ab[t - 1]).abs().mean().item() for t in range(1, len(ab) - 1)]
    median = float(np.median(change))
    step = [(ab[t + 1] - ab[t]).abs().mean().item() for t in range(len(ab) - 1)]
    inner = [k for k in keys if 0 < k < len(ab) - 1]
    flash = [round((step[k - 1] + step[k]) / 2 / float(np.median(step)), 2) for k in inner]
    return [round((ab[k + 1] - ab[k - 1]).abs().mean().item() / median, 2) for k in inner], median, flash


def cdc(results) -> float:
    rgb8 = (torch.stack([r.rgb for r in results]) * 255).round().to(torch.uint8).numpy()
    hist = np.stack([[np.bincount(f[c].ravel(), minlength=256) / f[c].size for c in range(3)] for f in rgb8])

    def js(p, q):
        m = (p + q) / 2
        return 0.5 * sum((a * np.log(np.where(a > 0, a, 1) / np.where(a > 0, m, 1))).sum(-1) for a in (p, q))

    return float(np.mean([js(hist[:-d], hist[d:]).mean() for d in (1, 2, 4)]))


def quality(args) -> None:
    from colormnet_core.checkpoint import load_model
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.propagation import make_session
    from colormnet_core.shots import Shot
    from colormnet_core.video_io import FrameSource, read_image

    torch.set_num_threads(args.threads)
    net = load_model(args.checkpoint)
    modes = [("forward", None)] + [("bidirectional", b) for b in args.blend]
    print("| clip | keyframes | mode | blend | pops (x median) | median two-frame change | flash | CDC | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(name, frames, exemplars, keys, size, shots=None, modes=modes):
        for mode, blend in modes:
            extra = {"blend": blend} if blend else {}
            session = make_session(net, exemplars, size=size, shots=shots, propagation=mode, **extra)
            started = time.perf_counter()
            results = list(session.run(frames))
            wall = time.perf_counter() - started
            p, median, flash = pops(results, keys)
            print(f"| {name} | {','.join(map(str, keys))} | {mode} | {blend or '-'} | {p} | {median:.2f} | {flash} "
                  f"| {cdc(results):.5f} | {wall:.1f} |", flush=True)

    small = ProcessingSize("short_side", 112)
    for count, step, keys in CLIPS[:args.clips]:
        clip = pan(count, step)
        row(f"pan {count} frames, {step} px/frame", clip, EncodedExemplars(tuple(Exemplar(clip[k], k) for k in keys)),
            keys, small)
    media = REPO / "workflows" / "media"
    video = torch.stack(list(FrameSource(media / "colormnet_example_two_shots.mp4")))
    exemplars = EncodedExemplars((Exemplar(read_image(media / "colormnet_example_exemplar.png"), 0),
                                  Exemplar(read_image(media / "colormnet_example_exemplar_mirrored.png"), 12)))
    official = ProcessingSize.parse("480")      # the keyframes workflow's size (= the clip's own 416x240)
    two = modes[:2]     # forward and the first blend: this clip is 6x the pixels of the pans
    row("two-shot example, no shot list", video, exemplars, (0, 12), official, modes=two)
    row("two-shot example, shots 0-11,12-23", video, exemplars, (0, 12), official, [Shot(0, 11), Shot(12, 23)],
        modes=two)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_single(args) -> dict:
    from colormnet_core.checkpoint import load_model
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.propagation import make_session
    from colormnet_core.spill import SpillBuffer

    torch.set_num_threads(args.threads)
    width, height = map(int, args.resolution.split("x"))
    n = args.frames[0]
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")

    def frame(t: int) -> torch.Tensor:
        phase = 2 * np.pi * t / 50
        rgb = torch.stack([0.5 + 0.4 * torch.sin(6 * x + phase), 0.5 + 0.4 * torch.cos(5 * y - phase),
                           0.5 + 0.4 * torch.sin(4 * (x + y) + 2 * phase)])
        return (rgb * 255).round().to(torch.uint8)

    held: list[int] = []
    original_close = SpillBuffer.close

    def close(self):                     # record what each buffer held before it is freed
        held.append(self.nbytes)
        original_close(self)

    SpillBuffer.close = close
    net = load_model(args.checkpoint)
    exemplars = EncodedExemplars((Exemplar(frame(0), 0), Exemplar(frame(n - 1), n - 1)))
    extra = {"ram_limit": int(args.ram_limit_mb[0] * 2**20)} if args.mode[0] == "bidirectional" else {}
    session = make_session(net, exemplars, size=ProcessingSize.parse(args.size), propagation=args.mode[0], **extra)
    started = time.perf_counter()
    rss_after_load = _rss_mb()
    count = 0
    for _ in session.run(frame(t) for t in range(n)):
        count += 1
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"mode": args.mode[0], "frames": count, "resolution": args.resolution, "size": args.size,
            "ram_limit_mb": args.ram_limit_mb[0] if extra else None, "threads": torch.get_num_threads(),
            "wall_s": round(wall, 1), "s_per_frame": round(wall / count, 3),
            "rss_before_run_mb": round(rss_after_load), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "buffered_mb": round(sum(held) / 2**20, 1)}


def memory(args) -> None:
    print("| mode | frames | input | processing | RAM limit MiB | buffered MiB | s/frame | RSS before run MB "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.frames:
        for mode, limit in [("forward", 0)] + [("bidirectional", mb) for mb in args.ram_limit_mb]:
            cmd = [sys.executable, __file__, "memory", "--single", "--checkpoint", args.checkpoint, "--frames", str(n),
                   "--resolution", args.resolution, "--size", args.size, "--threads", str(args.threads),
                   "--mode", mode, "--ram-limit-mb", str(limit)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"| {mode} | {n} | failed: {run.stderr.strip().splitlines()[-1:]} |")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            limit_text = "-" if r["ram_limit_mb"] is None else r["ram_limit_mb"]
            print(f"| {mode} | {n} | {r['resolution']} | {r['size']} | {limit_text} | {r['buffered_mb']} "
                  f"| {r['s_per_frame']} | {r['rss_before_run_mb']} | {r['peak_rss_mb']} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["quality", "memory"])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blend", nargs="+", default=["distance"],
                        choices=["distance", "confidence", "distance_confidence"])
    parser.add_argument("--clips", type=int, default=len(CLIPS), help="quality: how many of the pan clips")
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 240])
    parser.add_argument("--resolution", default="854x480")
    parser.add_argument("--size", default="112")
    parser.add_argument("--ram-limit-mb", type=float, nargs="+", default=[0, 512])
    parser.add_argument("--mode", nargs="+", default=["bidirectional"], help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(memory_single(args)))
    elif args.command == "quality":
        quality(args)
    else:
        memory(args)


if __name__ == "__main__":
    main()
