"""Cheap checks of exemplars that are legal but probably not what the user meant.

Nothing here raises: each check returns warnings (sentences that say what looks wrong and what
to do) for the caller to log or show. Thresholds come from measurements on real clips
(tests/test_exemplar_checks.py):

* luminance correlation of a pinned exemplar with its frame (both averaged down to 32 x 32):
  0.998 for the colour version of the frame itself (fixture, blackswan); 0.95 down to 0.87 for
  the frame-0 picture pinned to frames 3-11 of the same shot (visible ghosting); 0.47 for the
  mirrored picture. Below 0.95 we warn.
* aspect ratio: a pinned exemplar is stretched to its frame's size; more than 3 % off is visible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from .color import rgb_to_lab
from .exemplars import Exemplar
from .preprocess import as_rgb

log = logging.getLogger(__name__)

MIN_SIDE = 32                    # px; the network sees colour at 1/16 of the processing size
GREY_CHROMA = 4.0                # Lab chroma units; 99 % of the pixels below this = no colour to give
ASPECT_TOLERANCE = 0.03          # relative difference of width/height ratios
LUMA_MIN_CORRELATION = 0.95      # see the module docstring
_POOL = 32                       # side of the luminance thumbnails compared


def _rgb(image: Tensor, what: str) -> Tensor:
    """`C x H x W` (C = 1, 3, 4; uint8 or float) -> `1 x 3 x H x W` float64 in [0, 1]; `what` names the
    image in the error about NaN (an exemplar or a frame, so the message points at the right input)."""
    return as_rgb(image.unsqueeze(0), what).double()


def _thumbnail_lab(rgb: Tensor, size: int) -> Tensor:
    """Area-averaged Lab thumbnail (`1 x 3 x size x size`), cheap for any input size."""
    return rgb_to_lab(F.adaptive_avg_pool2d(rgb, size))


def _name(frame: int | None) -> str:
    return "the reference exemplar" if frame is None else f"the exemplar pinned to frame {frame}"


def check_exemplar(image: Tensor, frame: int | None = None) -> list[str]:
    """Warnings about one exemplar on its own: tiny, or without colour.

    image: `C x H x W` sRGB (C = 1, 3 or 4; uint8 or float in [0, 1]); frame: its pinned frame index
    or None for a reference (used in the messages only).
    """
    warnings: list[str] = []
    height, width = image.shape[-2:]
    name = _name(frame)
    if min(height, width) < MIN_SIDE:
        warnings.append(
            f"{name} is only {width}x{height} pixels: it carries almost no colour detail (the network reads "
            f"colour at 1/16 of the processing size). Use a larger image, ideally the frame's own size.")
    rgb = _rgb(image, name)
    if image.shape[0] == 1:   # a single channel is grey by definition
        chroma = torch.zeros(1)
    else:
        lab = _thumbnail_lab(rgb, min(64, height, width))
        chroma = lab[:, 1:].pow(2).sum(1).sqrt().flatten()
    if torch.quantile(chroma.float(), 0.99) < GREY_CHROMA:
        warnings.append(
            f"{name} is greyscale (no colour to propagate), so the output stays grey. Connect the colour "
            f"image: a colour version of a frame, or any colour picture of similar content as a reference.")
    return warnings


def check_pinned(image: Tensor, frame_image: Tensor, frame: int) -> list[str]:
    """Warnings about an exemplar pinned to `frame` compared with that frame: other aspect ratio
    (it would be stretched) or luminance that does not match (it is not that frame in colour).

    image, frame_image: `C x H x W` sRGB (C = 1, 3 or 4; uint8 or float in [0, 1]), any sizes.
    """
    warnings: list[str] = []
    eh, ew = image.shape[-2:]
    fh, fw = frame_image.shape[-2:]
    ratio = (ew / eh) / (fw / fh)
    if abs(math.log(ratio)) > math.log1p(ASPECT_TOLERANCE):
        warnings.append(
            f"the exemplar pinned to frame {frame} is {ew}x{eh} (aspect {ew / eh:.2f}) but the frames are "
            f"{fw}x{fh} ({fw / fh:.2f}): it will be stretched, so colours land beside their objects. Crop it "
            f"to the frames' aspect ratio, or use it as a reference (frame = -1), which matches colours by "
            f"content, not position.")
    size = min(_POOL, eh, ew, fh, fw)
    ex = _thumbnail_lab(_rgb(image, _name(frame)), size)[:, 0].flatten()
    fr = _thumbnail_lab(_rgb(frame_image, f"frame {frame} (of the frames to colorize)"), size)[:, 0].flatten()
    ex, fr = ex - ex.mean(), fr - fr.mean()
    denominator = ex.norm() * fr.norm()
    if denominator > 1e-6 * ex.numel():   # a flat frame or exemplar has no structure to compare
        correlation = float((ex * fr).sum() / denominator)
        if correlation < LUMA_MIN_CORRELATION:
            warnings.append(
                f"the exemplar pinned to frame {frame} does not match that frame's brightness pattern "
                f"(correlation {correlation:.3f}; the colour version of the frame itself gives about 1.0), so "
                f"it will ghost over the frame. Set its frame to -1 to use it as a reference, or pin it to the "
                f"frame it was made from.")
    return warnings


def check_exemplars(
    exemplars: Iterable[Exemplar],
    *,
    frame_at: Callable[[int], Tensor | None] | None = None,
    intrinsic: bool = True,
) -> list[str]:
    """All warnings for a set of exemplars; each is also logged.

    frame_at(i): the video frame i as `C x H x W` (None when unknown, e.g. a stream not yet read);
    intrinsic=False skips the per-image checks (when they were already reported elsewhere).
    """
    found: list[str] = []
    for exemplar in exemplars:
        if intrinsic:
            found += check_exemplar(exemplar.image, exemplar.frame)
        if exemplar.frame is not None and frame_at is not None:
            frame_image = frame_at(exemplar.frame)
            if frame_image is not None:
                found += check_pinned(exemplar.image, frame_image, exemplar.frame)
    for message in found:
        log.warning("ColorMNet: %s", message)
    return found
