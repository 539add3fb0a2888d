"""How bidirectional propagation (`propagation.py`) mixes its passes: weights per frame or per pixel,
and the ease after a shot's last exemplar.

Notation: a stretch runs between consecutive exemplars e_k < e_k+1; at frame t in it,
s = (t - e_k) / (e_k+1 - e_k) is the temporal distance (0 at e_k, 1 at e_k+1); f and b are the
forward and backward passes' chroma, c_f and c_b their match confidence (`confidence.py`: per frame,
or per pixel at the processing size, `ColorizedFrame.confidence_map`). Output = (1 - w) f + w b.

Blends (`Blend`):
* distance (default): w = s, one weight per frame;
* pixel: per pixel, distance times *relative* confidence: r = c / mean(c) over the frame (each
  pass its own), w = s r_b / (s r_b + (1 - s) r_f). Where both maps are flat (r = 1), or where
  they agree, this is exactly the distance blend; it only moves weight, inside a frame, to the
  pass that matches that part of the frame better than its own average. The frame-level level of
  confidence is left out on purpose: weighting whole frames by it is what made the
  confidence blends below flicker (each pass's mean confidence jumps from frame to frame);
* confidence, distance_confidence: per frame, w = c_b / (c_f + c_b) and
  s c_b / (s c_b + (1 - s) c_f) (issue 16's alternatives, kept to re-measure on real weights).

Measured with `bench/propagation.py choices` (fixture weights, CPU, processing size 112,
2026-12-06; the clips are described there and in `propagation.py`: pans whose true colours are
known, "wipe" = a second picture wiping over the first from the right, so the earlier exemplar shows
the left of a frame and the later one the right, the case a per-pixel blend is for; "head" = a pan
with a reference and keyframes 6, 14, 22; the shipped two-shot example at 416x240, no shot list;
the runs computed once, so the two columns differ only by the blend; the shipped head and tail).
pop = chroma change across each inner keyframe (k-1 to k+1) over the clip's median two-frame
change; flash = the one-frame changes into and out of k over the median one-frame change; CDC
(TCVC); error = mean CIELAB ab distance to the true colours over the frames that are not exemplars:

| clip, keyframes | distance (default): pops / flash / CDC / error | pixel: pops / flash / CDC / error |
|---|---|---|
| pan 17, 0,8,16 | 0.78 / 3.60 / .03849 / 34.22 | 0.77 / 3.61 / .03849 / 34.19 |
| pan 24, 0,12,20 | 0.69 0.80 / 5.15 4.46 / .03852 / 35.47 | 0.68 0.80 / 5.14 4.45 / .03864 / 35.49 |
| pan 30, 0,12,24 | 0.60 0.81 / 5.27 4.63 / .03626 / 36.00 | 0.60 0.82 / 5.25 4.61 / .03639 / 36.00 |
| pan 37, 0,18,36 | 0.88 / 5.90 / .03264 / 37.68 | 0.88 / 5.82 / .03265 / 37.69 |
| pan 25x3, 0,8,16,24 | 0.84 0.71 / 3.56 3.64 / .04108 / 35.59 | 0.83 0.71 / 3.54 3.63 / .04115 / 35.57 |
| pan 40, 0,10,20 | 0.64 0.71 / 5.14 4.53 / .02994 / 36.55 | 0.64 0.71 / 5.14 4.51 / .02985 / 36.54 |
| pan 24x6, 0,8,16 | 0.69 0.68 / 3.78 3.62 / .04555 / 37.77 | 0.70 0.68 / 3.78 3.62 / .04554 / 37.76 |
| wipe, 0,10,20 | 0.96 0.53 / 3.56 3.65 / .04136 / 35.17 | 0.95 0.51 / 3.43 3.52 / .04190 / 35.35 |
| head, 6,14,22 | 0.83 0.61 0.69 / 3.98 4.58 4.15 / .04189 / 35.67 | 0.82 0.61 0.69 / 3.99 4.59 4.16 / .04186 / 35.67 |
| two-shot, 0,12 | 1.26 / 3.43 / .03609 / - | 1.26 / 3.38 / .03608 / - |

Why distance stays the default: the per-pixel blend is within 0.02 of it in pop, 0.1 in flash,
0.4 % in CDC and 0.03 in error on every pan, and worse on the one clip made for it (wipe: CDC +1.3 %,
error +0.18; its lower pop ratios come from a 5 % larger median change). The reason is measurable:
at the pixels where the two passes' errors differ by more than 2.2 CIELAB units (one just-noticeable
difference), the pass with the higher relative confidence is the nearer one at 47-52 % of them on
every clip: with the fixture's synthetic weights the confidence map says nothing about which pass is
right, so the per-pixel blend only redistributes the weight at random. The mechanism itself is
tested (tests/test_propagation.py: confidence is low where memory has not seen the picture; the
weight leans per pixel and is the distance where confidence is flat); whether it helps with the
trained checkpoint is to be measured with it (`bench/propagation.py choices`, `colorize --blend pixel`).
The per-frame confidence blends were measured in issue 16 (bench/RESULTS.md): lower pop ratios,
10-60 % more frame-to-frame change.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Blend = Literal["distance", "pixel", "confidence", "distance_confidence"]
BLENDS: tuple[str, ...] = ("distance", "pixel", "confidence", "distance_confidence")

# Frames after a shot's last exemplar over which the output eases from the run restarted at that
# exemplar into the forward pass (see `propagation.py` for the measurements behind 4).
EASE_FRAMES = 4


def backward_weight(blend: Blend, distance: float, forward_confidence: float, backward_confidence: float) -> float:
    """Per-frame weight in [0, 1] of the backward pass at `distance` (s) between its two exemplars;
    confidences: the passes' per-frame match confidence. For blend "pixel" see `pixel_weight`."""
    if blend in ("distance", "pixel"):
        return distance
    if blend == "confidence":
        total = forward_confidence + backward_confidence
        return backward_confidence / total if total > 0 else distance
    near_b, near_f = distance * backward_confidence, (1 - distance) * forward_confidence
    return near_b / (near_b + near_f) if near_b + near_f > 0 else distance


def pixel_weight(distance: float, forward_map: Tensor, backward_map: Tensor) -> Tensor:
    """Per-pixel weight of the backward pass (blend "pixel"): maps `1 x h x w` confidence in [0, 1]
    at the processing size -> `1 x h x w` float32 in [0, 1]. Falls back to `distance` where a map's
    mean is 0 and where both relative confidences are 0."""
    s = float(distance)
    if s in (0.0, 1.0):
        return torch.full_like(forward_map, s, dtype=torch.float32)
    r_f, r_b = _relative(forward_map), _relative(backward_map)
    near_b, near_f = s * r_b, (1 - s) * r_f
    total = near_b + near_f
    return torch.where(total > 0, near_b / total.clamp_min(torch.finfo(torch.float32).tiny), s)


def ease_weight(offset: int, frames: int = EASE_FRAMES) -> float:
    """Weight of the restarted run at `offset` frames after a shot's last exemplar (1 <= offset):
    linear from 1 at the exemplar to 0 at `frames + 1` frames after it."""
    return max(0.0, 1.0 - offset / (frames + 1))


def _relative(confidence: Tensor) -> Tensor:
    confidence = confidence.float()
    mean = confidence.mean()
    return confidence / mean if mean > 0 else torch.ones_like(confidence)
