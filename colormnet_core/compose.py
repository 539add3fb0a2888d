"""The output image: predicted chroma laid over the input's own luminance, at the input resolution.

This is the last step of a session's frame (`ColorizeSession._process`), as a function of its own
so that chroma made elsewhere (a blend of two propagation passes, see `propagation.py`) becomes RGB
exactly as the session would make it: same operations, same dtypes, so the same bits on the CPU.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .color import denormalize_lab, fit_chroma_to_gamut, lab_to_rgb
from .errors import InputError
from .preprocess import as_rgb, normalized_lab

Gamut = Literal["clip", "keep_luminance"]


def compose_rgb(frames: Tensor, ab: Tensor, *, gamut: Gamut = "clip", device: torch.device | str | None = None,
                output_device: torch.device | str = "cpu") -> Tensor:
    """Colour frames from their input and a chroma prediction.

    frames: `B x C x H x W` input frames (C = 1, 3 or 4; uint8, or float in [0, 1]), of which only
    the luminance is used; ab: `B x 2 x h x w` normalised chroma (a/110, b/110) at the processing
    size, unpadded (`ColorizedFrame.ab`), upsampled bilinearly to H x W when h x w differs;
    gamut: "clip" (official) or "keep_luminance" (see `color.fit_chroma_to_gamut`); device: where
    the Lab maths runs (default: `ab`'s device). Returns `B x 3 x H x W` float32 sRGB in [0, 1] on
    `output_device`.
    """
    if frames.dim() != 4 or ab.dim() != 4 or frames.shape[0] != ab.shape[0] or ab.shape[1] != 2:
        raise InputError(f"compose_rgb takes frames B x C x H x W and chroma B x 2 x h x w with the same B, got "
                         f"{tuple(frames.shape)} and {tuple(ab.shape)}.")
    device = torch.device(device) if device is not None else ab.device
    rgb = as_rgb(frames)
    # float64 (exact for 8-bit input) where the device has it; MPS has no float64.
    rgb = rgb.to(device, torch.float32 if device.type == "mps" else rgb.dtype)
    lab = normalized_lab(rgb)
    ab = ab.to(device).float()
    if tuple(ab.shape[-2:]) != tuple(lab.shape[-2:]):
        ab = F.interpolate(ab, size=tuple(lab.shape[-2:]), mode="bilinear", align_corners=False)
    lab_out = denormalize_lab(torch.cat([lab[:, :1], ab], dim=1))
    if gamut == "keep_luminance":
        lab_out = fit_chroma_to_gamut(lab_out)
    return lab_to_rgb(lab_out).float().to(output_device)
