"""Reduced precision against float32, in 8-bit output levels (the official truncation).

    python bench/precision.py --checkpoint CK [--input golden|blackswan] [--frames 12]
        [--resolution 832x480] [--precision bfloat16 float16] [--device cpu]

golden: the fixture's 12 frames (185x321) with configuration A's exemplar; blackswan: the clip
(see clip.py) at --resolution. Reports, per precision, the largest level difference to float32
and the share of values that differ by more than 0, 1, 2 and 8 levels (all frames, all channels).
bench/gpu_check.py uses the same functions on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

LEVEL_THRESHOLDS = (0, 1, 2, 8)


def run(net, frames, exemplar, precision: str, device, size=None) -> list:
    """8-bit outputs (int16 `3 x H x W` per frame) of a session in `precision` ("float32", "bfloat16",
    "float16"); size: a `ProcessingSize` (None: official)."""
    import torch

    from colormnet_core.color import to_uint8_truncate
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    on_cpu_fp16 = precision == "float16" and torch.device(device).type == "cpu"
    session = ColorizeSession(net, EncodedExemplars((Exemplar(exemplar, 0),)), device=device, key_batch=1, size=size,
                              precision="float32" if on_cpu_fp16 else precision)
    if on_cpu_fp16:
        # The session runs float16 as float32 on CPUs (too slow for use), but its rounding is what a
        # GPU's float16 autocast gives, so it is measured here all the same: the autocast dtype is set
        # where the session's frames take it from, its pipeline.
        session.amp_dtype = session._pipeline.amp_dtype = torch.float16
    return [to_uint8_truncate(r.rgb).to(torch.int16) for r in session.run(frames)]


def inputs(name: str, count: int, resolution: tuple[int, int] | None = None, folder: Path | None = None):
    """(frames, exemplar) of an input: "golden" (the fixture's frames, configuration A's exemplar) or
    "blackswan" (clip.py's clip, or `folder`, at `resolution` = (width, height); None: its own size),
    `count` frames (the clip played back and forth; None: each frame once)."""
    import clip

    from tests import golden

    if name == "golden":
        frames = list(golden.frames()[:count])
        return frames, golden.load_png(golden.GOLDEN / golden.configs()["A_release"]["exemplar"])
    _, clip_frames, exemplar = clip.load(resolution, folder)
    return list(clip.play(clip_frames, count or len(clip_frames))), exemplar


def level_stats(levels, reference) -> dict:
    """Differences of 8-bit outputs to the reference's (stacked int16): max and mean levels, and the
    percentage of values differing by more than each of LEVEL_THRESHOLDS."""
    diff = (levels - reference).abs().float()
    return {"max_levels": int(diff.max()), "mean_levels": round(diff.mean().item(), 4),
            **{f"over_{t}_pct": round(100 * (diff > t).float().mean().item(), 4) for t in LEVEL_THRESHOLDS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--input", default="golden", choices=["golden", "blackswan"])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--resolution", default="832x480")
    parser.add_argument("--precision", nargs="+", default=["bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch

    from colormnet_core.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    frames, exemplar = inputs(args.input, args.frames, tuple(map(int, args.resolution.split("x"))))
    device = torch.device(args.device)
    net = load_model(args.checkpoint, device=device)
    started = time.perf_counter()
    reference = torch.stack(run(net, frames, exemplar, "float32", device))
    print(f"{args.input}, {len(frames)} frames, {tuple(reference.shape[-2:])}, {device}: float32 "
          f"{time.perf_counter() - started:.0f} s")
    print("| precision | max levels | > 0 | > 1 | > 2 | > 8 | mean levels | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in args.precision:
        started = time.perf_counter()
        stats = level_stats(torch.stack(run(net, frames, exemplar, precision, device)), reference)
        shares = " | ".join(f"{stats[f'over_{t}_pct']:.3f} %" for t in LEVEL_THRESHOLDS)
        print(f"| {precision} | {stats['max_levels']} | {shares} | {stats['mean_levels']:.3f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
