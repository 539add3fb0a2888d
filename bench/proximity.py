"""Proximity-weighted matching (CMNET2's `proximity_bias`) on both checkpoint families: quality.

    python bench/proximity.py --checkpoint .cache/golden_weights.safetensors \
        .cache/golden_dinov3/DINOv3FeatureV6_LocalAtten_p374099.pth [--alpha 0 0.5 0.7] [--clips pan30 wipe]

CMNET2's schedule as `--reference IMG@N --memory-like-cmnet2` runs it: the true colour frame at every
keyframe of a clip is a reference given at that frame (it joins the tagged permanent memory; the
frame itself is still predicted), memory sizes derived from the clip's length. The clips are
bench/propagation.py's pans and wipe, whose true colours are known, so each alpha is scored by the
mean CIELAB ab distance to the truth over all frames ("error"), over the frames nearest a reference
other than the first ("late", where the nearer reference should win), and by CDC (TCVC's colour
distribution consistency; lower is steadier). Processing size 112, CPU, float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import propagation as clips  # noqa: E402  (bench/propagation.py: the clips and measures)


def colourise(net, frames: torch.Tensor, keys, alpha: float) -> torch.Tensor:
    from colormnet_core.config import MemoryConfig
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.preprocess import ProcessingSize
    from colormnet_core.session import ColorizeSession

    exemplars = EncodedExemplars(tuple(Exemplar(frames[k], k, reference=True) for k in keys))
    memory = MemoryConfig.like_cmnet2(len(frames), proximity_bias=alpha)
    session = ColorizeSession(net, exemplars, memory=memory, size=ProcessingSize.parse("112"), device="cpu")
    return torch.stack([r.rgb for r in session.run(iter(frames))])


def scores(rgb: torch.Tensor, truth: torch.Tensor, keys) -> dict:
    from colormnet_core import metrics

    got = torch.stack([metrics.chroma(x) for x in rgb])
    true = torch.stack([metrics.chroma(x) for x in truth])
    error = (true - got).square().sum(1).sqrt().mean((1, 2))
    nearest = [min(keys, key=lambda k: abs(k - t)) for t in range(len(rgb))]
    late = [t for t in range(len(rgb)) if nearest[t] != keys[0]]
    return {"error": round(error.mean().item(), 2), "late": round(error[late].mean().item(), 2),
            "cdc": round(clips.cdc(rgb), 5)}


def main() -> None:
    from colormnet_core.checkpoint import describe_network, load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", type=Path, required=True)
    parser.add_argument("--alpha", nargs="+", type=float, default=[0.0, 0.5, 0.7])
    parser.add_argument("--clips", nargs="+", default=["pan30", "pan40", "pan24x6", "wipe"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| checkpoint | clip | references at | " + " | ".join(f"alpha {a}: error / late / CDC" for a in args.alpha)
          + " |")
    print("|---|---|---|" + "---|" * len(args.alpha))
    for path in args.checkpoint:
        net = load_model(path)
        family = describe_network(net)
        for name in args.clips:
            truth, keys, _ = clips.clip(name)
            cells = []
            for alpha in args.alpha:
                s = scores(colourise(net, truth, keys, alpha), truth, keys)
                cells.append(f"{s['error']} / {s['late']} / {s['cdc']}")
            print(f"| {family} | {name} | {','.join(map(str, keys))} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
