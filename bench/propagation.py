"""Forward against bidirectional propagation (colormnet_core/propagation.py): quality and cost.

    python bench/propagation.py quality --checkpoint CK [--blend distance pixel] [--clips pan24 wipe ...] \
        [--two-shot]
    python bench/propagation.py choices --checkpoint CK --cache DIR [--clips ...] [--two-shot]
    python bench/propagation.py memory --checkpoint CK --frames 60 240 --resolution 854x480 --size 112 \
        [--ram-limit-mb 0 512] [--threads 1]

Clips (processing size 112; `CLIPS`):
* pans over the blackswan colour exemplar (tests/data): T frames, 224x160 crops moving P px per
  frame, so every frame's true colours are known and any frame can be a true keyframe exemplar;
* wipe: 24 frames in which another part of the exemplar (upside down) wipes over the pan from the
  right (frames 0-20): the earlier exemplar shows what the left of a frame holds, the later one
  the right (the case for a per-pixel blend);
* head: a 30-frame pan with the whole exemplar picture as a reference and keyframes 6, 14, 22
  (frames before the first exemplar);
* with --two-shot, the shipped two-shot example (workflows/media, exemplars at frames 0 and 12 as
  the keyframes workflow pins them, no shot list) at its own size 416x240.
Measures: pop(k) = mean |Lab ab(k+1) - ab(k-1)| of the 8-bit outputs over the median of that
two-frame change in the clip (k's own frame shows the exemplar); flash(k) = the mean of the
one-frame changes k-1 -> k and k -> k+1 over the median one-frame change; CDC = TCVC's colour
distribution consistency (JS divergence of per-channel 256-bin histograms of frames t, t+d,
d = 1, 2, 4); error = mean CIELAB ab distance to the true colours (pans, wipe, head) over the
frames that are not exemplars, and over the frames after the last exemplar ("tail") / before the
first ("head").

quality: the shipped code end to end (`make_session`), forward and bidirectional with each
`--blend`; prints wall time too.

choices: the alternatives issue 24 chose between, recombined from plain runs (`ColorizeSession`)
computed once per clip and cached in DIR: the forward pass (F: over the whole clip; Fs: from the
first exemplar), the backward pass (B), runs restarted at the last exemplar (T: its exemplar and
the references; T2: also the earlier exemplars as references) and back from the first (H). Since
colorize_shot is built from exactly these runs (tests/test_propagation.py), the rows of the shipped
choices equal `quality`'s (up to float rounding of the blend).

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

# name: (frames, px per frame, keyframes)
PANS = {"pan17": (17, 2, (0, 8, 16)), "pan24": (24, 2, (0, 12, 20)), "pan30": (30, 2, (0, 12, 24)),
        "pan37": (37, 2, (0, 18, 36)), "pan25x3": (25, 3, (0, 8, 16, 24)), "pan40": (40, 2, (0, 10, 20)),
        "pan24x6": (24, 6, (0, 8, 16))}
CLIPS = (*PANS, "wipe", "head")


def exemplar_picture() -> torch.Tensor:
    from tests import golden

    return golden.load_png(golden.BLACKSWAN / "exemplar" / "00000.png")     # 3 x 240 x 416 uint8


def pan(frames: int, step: int) -> torch.Tensor:
    image = exemplar_picture()
    return torch.stack([image[:, 40:200, step * i:step * i + 224] for i in range(frames)])


def wipe() -> torch.Tensor:
    image = exemplar_picture()
    frames = []
    for t in range(24):
        a = image[:, 40:200, 2 * t:2 * t + 224]
        b = image[:, 40:200, 190 - 2 * t:190 - 2 * t + 224].flip(1)
        edge = max(0, 224 - round(224 * t / 20))
        frames.append(torch.cat([a[..., :edge], b[..., edge:]], -1))
    return torch.stack(frames)


def clip(name: str) -> tuple[torch.Tensor, tuple[int, ...], list[torch.Tensor]]:
    """(frames `T x 3 x H x W` uint8 in true colour, keyframes, reference pictures)."""
    if name in PANS:
        count, step, keys = PANS[name]
        return pan(count, step), keys, []
    if name == "wipe":
        return wipe(), (0, 10, 20), []
    if name == "head":
        return pan(30, 2), (6, 14, 22), [exemplar_picture()]
    raise SystemExit(f"unknown clip {name}; one of {', '.join(CLIPS)}")


def two_shot():
    from colormnet_core.exemplars import Exemplar
    from colormnet_core.video_io import FrameSource, read_image

    media = REPO / "workflows" / "media"
    video = torch.stack(list(FrameSource(media / "colormnet_example_two_shots.mp4")))
    exemplars = [Exemplar(read_image(media / "colormnet_example_exemplar.png"), 0),
                 Exemplar(read_image(media / "colormnet_example_exemplar_mirrored.png"), 12)]
    return video, exemplars


# -- measures ------------------------------------------------------------------------------------

def chroma(rgb: torch.Tensor) -> torch.Tensor:
    """Lab (a, b) of 8-bit rounded RGB frames `T x 3 x H x W` in [0, 1] -> `T x 2 x H x W` float64."""
    from colormnet_core.color import rgb_to_lab

    return rgb_to_lab((rgb * 255).round().double() / 255)[:, 1:]


def pops(rgb: torch.Tensor, keys) -> tuple[list[float], float, list[float]]:
    """(pop per inner keyframe, median two-frame change, flash per inner keyframe): see the docstring."""
    ab = chroma(rgb)
    change = [(ab[t + 1] - ab[t - 1]).abs().mean().item() for t in range(1, len(ab) - 1)]
    median = float(np.median(change))
    step = [(ab[t + 1] - ab[t]).abs().mean().item() for t in range(len(ab) - 1)]
    inner = [k for k in keys if 0 < k < len(ab) - 1]
    flash = [round((step[k - 1] + step[k]) / 2 / float(np.median(step)), 2) for k in inner]
    return [round((ab[k + 1] - ab[k - 1]).abs().mean().item() / median, 2) for k in inner], median, flash


def cdc(rgb: torch.Tensor) -> float:
    rgb8 = (rgb * 255).round().to(torch.uint8).numpy()
    hist = np.stack([[np.bincount(f[c].ravel(), minlength=256) / f[c].size for c in range(3)] for f in rgb8])

    def js(p, q):
        m = (p + q) / 2
        return 0.5 * sum((a * np.log(np.where(a > 0, a, 1) / np.where(a > 0, m, 1))).sum(-1) for a in (p, q))

    return float(np.mean([js(hist[:-d], hist[d:]).mean() for d in (1, 2, 4)]))


def measure(rgb: torch.Tensor, keys, truth: torch.Tensor | None) -> dict:
    """rgb: outputs `T x 3 x H x W` float in [0, 1]; truth: the true colour frames (uint8) or None."""
    from colormnet_core import metrics

    p, median, flash = pops(rgb, keys)
    out = {"pop": p, "median": round(median, 2), "flash": flash, "cdc": round(cdc(rgb), 5)}
    if truth is not None:
        got = torch.stack([metrics.chroma(x) for x in rgb])
        true = torch.stack([metrics.chroma(x) for x in truth])
        error = (true - got).square().sum(1).sqrt().mean((1, 2))
        out["error"] = round(error[[t for t in range(len(rgb)) if t not in keys]].mean().item(), 2)
        if keys[-1] < len(rgb) - 1:
            out["tail"] = round(error[keys[-1] + 1:].mean().item(), 2)
        if keys[0] > 0:
            out["head"] = round(error[:keys[0]].mean().item(), 2)
    return out


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# -- quality: the shipped code -------------------------------------------------------------------

def quality(args) -> None:
    from colormnet_core.checkpoint import load_model
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.propagation import make_session

    torch.set_num_threads(args.threads)
    net = load_model(args.checkpoint)
    modes = [("forward", None)] + [("bidirectional", b) for b in args.blend]
    print(row("clip", "keyframes", "mode", "blend", "pops (x median)", "median two-frame change", "flash", "CDC",
              "error (tail, head)", "wall s"))
    print(row(*["---"] * 10))

    def run(name, frames, exemplars, keys, size, truth):
        for mode, blend in modes:
            extra = {"blend": blend} if blend else {}
            session = make_session(net, EncodedExemplars(tuple(exemplars)), size=size, propagation=mode, **extra)
            started = time.perf_counter()
            rgb = torch.stack([r.rgb for r in session.run(frames)])
            wall = time.perf_counter() - started
            m = measure(rgb, keys, truth)
            error = " ".join(str(m[k]) for k in ("error", "tail", "head") if k in m) or "-"
            print(row(name, ",".join(map(str, keys)), mode, blend or "-", m["pop"], m["median"], m["flash"], m["cdc"],
                      error, f"{wall:.1f}"), flush=True)

    for name in args.clips:
        frames, keys, refs = clip(name)
        exemplars = [Exemplar(frames[k], k) for k in keys] + [Exemplar(r) for r in refs]
        run(name, frames, exemplars, keys, ProcessingSize("short_side", 112), frames)
    if args.two_shot:
        video, exemplars = two_shot()
        run("two-shot example", video, exemplars, (0, 12), ProcessingSize.parse("480"), None)


# -- choices: the alternatives, recombined from plain runs ---------------------------------------

def passes(net, frames: torch.Tensor, colour: dict, keys, refs, size) -> dict:
    """The plain runs the alternatives are made of (see the docstring): per run, ab `T x 2 x h x w` and
    confidence maps `T x 1 x h x w`, in the run's own frame order. colour: keyframe -> its exemplar."""
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    def run(clip_frames, pinned, references=refs):
        exemplars = EncodedExemplars(tuple(Exemplar(colour[k], f) for f, k in pinned) +
                                     tuple(Exemplar(r) for r in references))
        out = list(ColorizeSession(net, exemplars, size=size, pixel_confidence=True).run(clip_frames))
        return {"ab": torch.stack([r.ab for r in out]), "conf": torch.stack([r.confidence_map for r in out])}

    first, last = keys[0], keys[-1]
    res = {"F": run(frames, [(k, k) for k in keys]),
           "B": run(frames[first:last + 1].flip(0), [(last - k, k) for k in keys])}
    if last < len(frames) - 1:
        res["T"] = run(frames[last:], [(0, last)])
        res["T2"] = run(frames[last:], [(0, last)], [colour[k] for k in keys[:-1]] + list(refs))
    if first > 0:
        res["Fs"] = run(frames[first:], [(k - first, k) for k in keys])
        res["H"] = run(frames[:first + 1].flip(0), [(0, first)])
    return res


def combine(res: dict, keys, n: int, *, blend: str = "distance", tail: str = "F", ease: int = 0,
            head: str = "F", forward: str = "F") -> torch.Tensor:
    """Chroma `T x 2 x h x w` of one alternative. tail: F (issue 16), T, T2, ease (T eased into F over
    `ease` frames, 0 = over the last stretch's length); head: F or H; forward: the stretch's forward
    pass F (from frame 0) or Fs (from the first exemplar); blend: distance or pixel (blend.py)."""
    from colormnet_core.blend import backward_weight, pixel_weight

    first, last = keys[0], keys[-1]
    f_run, offset = (res["Fs"], first) if forward == "Fs" else (res["F"], 0)
    ab = res["F"]["ab"].clone()
    for t in range(first, last + 1):
        if t in keys:
            continue
        k = max(x for x in keys if x <= t)
        s = (t - k) / (min(x for x in keys if x > t) - k)
        f, b = f_run["ab"][t - offset], res["B"]["ab"][last - t]
        if blend == "pixel":
            w = pixel_weight(s, f_run["conf"][t - offset], res["B"]["conf"][last - t])
        else:
            w = backward_weight(blend, s, float(f_run["conf"][t - offset].mean()),
                                float(res["B"]["conf"][last - t].mean()))
        ab[t] = (1 - w) * f + w * b
    length = ease or last - keys[-2]
    for t in range(last + 1, n):
        if tail in ("T", "T2"):
            ab[t] = res[tail]["ab"][t - last]
        elif tail == "ease":
            w = max(0.0, 1 - (t - last) / (length + 1))
            ab[t] = w * res["T"]["ab"][t - last] + (1 - w) * res["F"]["ab"][t]
    for t in range(first):
        ab[t] = res["H"]["ab"][first - t] if head == "H" else f_run["ab"][t] if forward == "F" else res["F"]["ab"][t]
    return ab


def confidence_agreement(res: dict, keys, truth: torch.Tensor) -> float:
    """Over the stretch's frames that are not exemplars, at the pixels where the two passes' colours
    differ in error against the truth by more than 2.2 CIELAB units (about one just-noticeable
    difference): the share where the pass with the higher relative confidence (c / frame mean, as
    the per-pixel blend weighs them) is the one nearer the truth. 50 % = confidence says nothing."""
    import torch.nn.functional as F

    from colormnet_core.color import rgb_to_lab

    first, last = keys[0], keys[-1]
    right = total = 0
    for t in range(first, last + 1):
        if t in keys:
            continue
        f, b = res["F"]["ab"][t], res["B"]["ab"][last - t]
        true = F.interpolate(rgb_to_lab(truth[t:t + 1].double() / 255)[:, 1:].float(), size=f.shape[-2:],
                             mode="area")[0] / 110
        gap = (f - true).square().sum(0).sqrt() - (b - true).square().sum(0).sqrt()     # > 0: backward nearer
        c_f, c_b = res["F"]["conf"][t][0], res["B"]["conf"][last - t][0]
        lean = c_b / c_b.mean() - c_f / c_f.mean()                                        # > 0: backward trusted
        clear = gap.abs() > 0.02
        right += int(((gap > 0) == (lean > 0))[clear].sum())
        total += int(clear.sum())
    return right / max(total, 1)


def choices(args) -> None:
    from colormnet_core.checkpoint import load_model
    from colormnet_core.compose import compose_rgb
    from colormnet_core.preprocess import ProcessingSize

    torch.set_num_threads(args.threads)
    net = load_model(args.checkpoint)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    small = ProcessingSize("short_side", 112)
    clips = []
    for name in args.clips:
        frames, keys, refs = clip(name)
        clips.append((name, frames, keys, refs, small, {k: frames[k] for k in keys}, frames))
    if args.two_shot:
        video, exemplars = two_shot()
        clips.append(("two-shot", video, (0, 12), [], ProcessingSize.parse("480"),
                      {e.frame: e.image for e in exemplars}, None))
    tails, heads, blends = [], [], []
    for name, frames, keys, refs, size, colour, truth in clips:
        path = cache / f"{name}.pt"
        if not path.exists():
            started = time.perf_counter()
            torch.save(passes(net, frames, colour, keys, refs, size), path)
            print(f"{name}: runs in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        res = torch.load(path, weights_only=True)
        n = len(frames)

        def measured(ab, frames=frames, keys=keys, truth=truth):
            return measure(compose_rgb(frames, ab), keys, truth)

        shipped = {"head": "H", "forward": "Fs"} if keys[0] > 0 else {}
        if keys[-1] < n - 1:
            cells = []
            for opts in ({"tail": "F"}, {"tail": "T"}, {"tail": "T2"}, {"tail": "ease", "ease": 4},
                         {"tail": "ease", "ease": 8}, {"tail": "ease"}):
                if opts["tail"] in ("T", "T2") and opts["tail"] not in res:
                    cells.append("-")          # a cache from before that run was added
                    continue
                m = measured(combine(res, keys, n, **opts, **shipped))
                cells.append(f"{m['pop'][-1]} / {m['cdc']}" + (f" / {m['tail']}" if "tail" in m else ""))
            tails.append(row(name, ",".join(map(str, keys)), *cells))
        if keys[0] > 0:
            cells = []
            for opts in ({"head": "F", "forward": "F"}, {"head": "H", "forward": "F"}, {"head": "H", "forward": "Fs"}):
                m = measured(combine(res, keys, n, tail="ease", ease=4, **opts))
                cells.append(f"{m['pop'][0]} / {m['cdc']} / {m['head']}")
            heads.append(row(name, ",".join(map(str, keys)), *cells))
        agreement = "-" if truth is None else f"{confidence_agreement(res, keys, truth):.0%}"
        for blend in ("distance", "pixel"):
            m = measured(combine(res, keys, n, blend=blend, tail="ease", ease=4, **shipped))
            blends.append(row(name, ",".join(map(str, keys)), blend, m["pop"], m["median"], m["flash"], m["cdc"],
                              m.get("error", "-"), agreement))
    print("Tail after the last exemplar (pop at it / CDC / error after it):\n")
    print(row("clip", "keyframes", "forward (issue 16)", "restart", "restart + earlier exemplars as references",
              "ease 4", "ease 8", "ease over the last gap"))
    print(row(*["---"] * 8))
    print("\n".join(tails))
    print("\nHead before the first exemplar (pop at it / CDC / error before it):\n")
    print(row("clip", "keyframes", "forward pass from 0 (issue 16)", "run back from it, forward pass from 0",
              "run back from it, forward pass from it"))
    print(row(*["---"] * 5))
    print("\n".join(heads))
    print("\nBlend inside the stretches (shipped head and tail):\n")
    print(row("clip", "keyframes", "blend", "pops (x median)", "median two-frame change", "flash", "CDC", "error",
              "confidence picks the nearer pass"))
    print(row(*["---"] * 9))
    print("\n".join(blends))


# -- memory --------------------------------------------------------------------------------------

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
    parser.add_argument("command", choices=["quality", "choices", "memory"])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blend", nargs="+", default=["distance", "pixel"],
                        choices=["distance", "pixel", "confidence", "distance_confidence"])
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), help=f"of {', '.join(CLIPS)}")
    parser.add_argument("--two-shot", action="store_true", help="also the shipped two-shot example (416x240)")
    parser.add_argument("--cache", default=".cache/bench_propagation", help="choices: where the runs are kept")
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 240])
    parser.add_argument("--resolution", default="854x480")
    parser.add_argument("--size", default="112")
    parser.add_argument("--ram-limit-mb", type=float, nargs="+", default=[0, 512])
    parser.add_argument("--mode", nargs="+", default=["bidirectional"], help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(memory_single(args)))
    else:
        {"quality": quality, "choices": choices, "memory": memory}[args.command](args)


if __name__ == "__main__":
    main()
