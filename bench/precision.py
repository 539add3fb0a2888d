"""Reduced precision against float32, in 8-bit output levels (the official truncation).

    python bench/precision.py --checkpoint CK [--input golden|blackswan] [--frames 12]
        [--resolution 832x480] [--precision bfloat16 float16] [--device cpu]

golden: the fixture's 12 frames (185x321) with configuration A's exemplar; blackswan: the clip
(see clip.py) at --resolution. Reports, per precision, the largest level difference to float32
and the share of values that differ by more than 0, 1, 2 and 8 levels (all frames, all channels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def run(net, frames, exemplar, precision: str, device) -> list:
    import torch

    from colormnet_core.color import to_uint8_truncate
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    session = ColorizeSession(net, EncodedExemplars((Exemplar(exemplar, 0),)), device=device, key_batch=1)
    # Set directly: the session turns float16 into float32 on CPUs (too slow for use), but its
    # rounding is what a GPU's float16 autocast gives, so it is measured here all the same.
    session.amp_dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    return [to_uint8_truncate(r.rgb).to(torch.int16) for r in session.run(frames)]


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

    import clip
    import torch

    from colormnet_core.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.input == "golden":
        from tests import golden

        frames = list(golden.frames()[:args.frames])
        exemplar = golden.load_png(golden.GOLDEN / golden.configs()["A_release"]["exemplar"])
    else:
        _, clip_frames, exemplar = clip.load(tuple(map(int, args.resolution.split("x"))))
        frames = list(clip.play(clip_frames, args.frames))
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
        diff = (torch.stack(run(net, frames, exemplar, precision, device)) - reference).abs().float()
        shares = " | ".join(f"{100 * (diff > t).float().mean().item():.3f} %" for t in (0, 1, 2, 8))
        print(f"| {precision} | {int(diff.max())} | {shares} | {diff.mean().item():.3f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
