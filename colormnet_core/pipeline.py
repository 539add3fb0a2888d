"""Frames to network inputs and predictions back to frames, at one video's processing geometry.

The network sees the luminance of each frame as normalised Lab at the processing size (padded to
a multiple of 16); it predicts chroma there. The output takes that chroma, upsampled to the input
size, over the input's own full-resolution luminance, so resizing never blurs detail.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor

from .compose import chroma_over_luminance
from .errors import InputError
from .exemplars import EncodedExemplars, PreparedExemplar
from .network import EncodedKey
from .preprocess import Geometry, ProcessingSize, as_rgb, network_image, normalized_lab


class EncodedFrames(NamedTuple):
    """A batch of B frames: lab `B x 3 x H x W` normalised Lab at the input size; images the network
    inputs `B x 3 x Hp x Wp`; keys their `EncodedKey` (batched)."""

    lab: Tensor
    images: Tensor
    keys: EncodedKey

    def key(self, i: int) -> EncodedKey:
        """Frame i's key as a batch of one."""
        keys = self.keys
        return EncodedKey(keys.key[i:i + 1], keys.shrinkage[i:i + 1], keys.selection[i:i + 1],
                          type(keys.features)(*(f[i:i + 1] for f in keys.features)))


class FramePipeline:
    """One video's geometry, prepared exemplars and the conversions around the network.

    stages: the network's named stages (or a compiled view); amp_dtype: autocast dtype or None;
    gamut: "clip" or "keep_luminance" (see `ColorizeSession`). The geometry is planned from the
    first frame; every later frame must have its size."""

    def __init__(self, network, stages, exemplars: EncodedExemplars, size: ProcessingSize, device: torch.device,
                 amp_dtype: torch.dtype | None, gamut: str, output_device: torch.device) -> None:
        self.network, self.stages, self.exemplars = network, stages, exemplars
        self.size, self.device, self.amp_dtype = size, device, amp_dtype
        self.gamut, self.output_device = gamut, output_device
        self.geometry: Geometry | None = None
        self.prepared: list[PreparedExemplar] = []

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def encode(self, frames: list[Tensor], first_index: int) -> EncodedFrames:
        """frames: `C x H x W` (C = 1, 3 or 4; float in [0, 1] or uint8), video frames first_index...;
        plans the geometry and prepares the exemplars on the first call."""
        rgb = as_rgb(torch.stack([f if f.dim() == 3 else f.unsqueeze(0) for f in _same_size(frames)]))
        if self.geometry is None:
            self.geometry = Geometry.plan(*rgb.shape[-2:], self.size)
            with self.autocast():
                # The precision is part of the exemplars' cache key: a session in another precision
                # must not read encodings made under this one's autocast (another dtype, other values).
                self.prepared = self.exemplars.prepare(self.network, self.geometry, self.device,
                                                       self.amp_dtype or torch.float32)
        elif tuple(rgb.shape[-2:]) != self.geometry.input_size:
            h, w = self.geometry.input_size
            raise InputError(f"frame {first_index} is {rgb.shape[-1]}x{rgb.shape[-2]} but the video started at "
                             f"{w}x{h}; all frames of a video must have one size (resize them first).")
        # float64 (exact for 8-bit input) where the device has it; MPS has no float64.
        rgb = rgb.to(self.device, torch.float32 if self.device.type == "mps" else rgb.dtype)
        lab = normalized_lab(rgb)
        images = network_image(lab, self.geometry)
        with self.autocast():
            keys = self.stages.encode_key(images, need_shrinkage=True)
        return EncodedFrames(lab, images, keys)

    def compose(self, lab: Tensor, predictions: Tensor) -> tuple[Tensor, Tensor]:
        """lab: the frames' normalised Lab `B x 3 x H x W`; predictions: padded ab `B x 2 x Hp x Wp`.
        Returns (rgb `B x 3 x H x W` float32 sRGB in [0, 1] on the output device, ab `B x 2 x h x w`
        unpadded normalised chroma at the processing size)."""
        ab = self.geometry.padding.crop(predictions.float())
        return chroma_over_luminance(lab, ab, self.gamut).to(self.output_device), ab


def _same_size(frames: list[Tensor]) -> list[Tensor]:
    sizes = {tuple(f.shape[-2:]) for f in frames}
    if len(sizes) > 1:
        raise InputError(f"frames of different sizes in one video: {sorted(sizes)}; resize them to one size first.")
    return frames
