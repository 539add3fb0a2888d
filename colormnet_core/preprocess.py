"""Geometry: processing size, padding to multiples of 112, and frame/exemplar preparation.

The official pipeline never resizes frames (its `--size` option is broken): it pads each frame
to multiples of 112 = lcm(14, 16) so both the DINOv2 grid (1/14) and the stride-16 grid are whole.
Our processing size resizes the luminance first (aspect kept) and pads afterwards; the predicted
chroma is brought back to the input resolution and laid over the original luminance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .color import normalize_lab, rgb_to_lab
from .errors import InputError, ResolutionError

PAD_MULTIPLE = 112
SizeMode = Literal["official", "short_side", "long_side", "megapixels"]

# Above this many padded pixels one frame's activations need tens of GB (the stride-4 fusion
# alone holds 1536 x H/4 x W/4 floats); ask for a processing size instead.
MAX_PROCESSING_PIXELS = 3840 * 2240


@dataclass(frozen=True)
class ProcessingSize:
    """How big the network sees a frame. `official`: the input size (the official pipeline).

    short_side / long_side: that side becomes `value` pixels; megapixels: area `value` x 1e6;
    aspect ratio kept, then padded to multiples of 112. Never upscales past the input.
    """

    mode: SizeMode = "official"
    value: float = 0

    def __post_init__(self) -> None:
        if self.mode not in ("official", "short_side", "long_side", "megapixels"):
            raise InputError(f"processing size mode must be official, short_side, long_side or megapixels, "
                             f"not {self.mode!r}.")
        if self.mode != "official" and not self.value > 0:
            raise InputError(f"processing size {self.mode} needs a positive value, got {self.value}.")

    @classmethod
    def parse(cls, text: str | None) -> ProcessingSize:
        """'480' or 'short:480' (short side), 'long:854', '0.5mp', 'official' or None."""
        if text is None or text.strip().lower() in ("", "official", "none", "-1"):
            return cls()
        t = text.strip().lower()
        try:
            if t.endswith("mp"):
                return cls("megapixels", float(t[:-2]))
            if t.startswith("long:"):
                return cls("long_side", float(t[5:]))
            if t.startswith("short:"):
                return cls("short_side", float(t[6:]))
            return cls("short_side", float(t))
        except ValueError:
            raise InputError(f"cannot read processing size {text!r}: use e.g. 480, short:480, long:854, "
                             f"0.5mp or official.") from None

    def resolve(self, height: int, width: int) -> tuple[int, int]:
        """Processing (height, width) for an input of height x width (before padding)."""
        if self.mode == "official":
            return height, width
        if self.mode == "megapixels":
            scale = math.sqrt(self.value * 1e6 / (height * width))
        else:
            side = min(height, width) if self.mode == "short_side" else max(height, width)
            scale = self.value / side
        scale = min(scale, 1.0)
        return max(16, round(height * scale)), max(16, round(width * scale))


@dataclass(frozen=True)
class Padding:
    """Zero padding to multiples of 112, split floor/ceil (top/left get the floor)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def for_size(cls, height: int, width: int, multiple: int = PAD_MULTIPLE) -> Padding:
        dh = math.ceil(height / multiple) * multiple - height
        dw = math.ceil(width / multiple) * multiple - width
        return cls(dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)

    def pad(self, x: Tensor) -> Tensor:
        """Pad the last two dims with 0 (in normalised Lab: mid-grey L, neutral chroma)."""
        return F.pad(x, (self.left, self.right, self.top, self.bottom))

    def crop(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return x[..., self.top:h - self.bottom, self.left:w - self.right]


@dataclass(frozen=True)
class Geometry:
    """Input size, processing size and padding of one video."""

    input_size: tuple[int, int]
    processing_size: tuple[int, int]
    padding: Padding

    @classmethod
    def plan(cls, height: int, width: int, size: ProcessingSize) -> Geometry:
        ph, pw = size.resolve(height, width)
        padding = Padding.for_size(ph, pw)
        padded = (ph + padding.top + padding.bottom) * (pw + padding.left + padding.right)
        if padded > MAX_PROCESSING_PIXELS:
            raise ResolutionError(
                f"{width}x{height} frames would be processed at {pw}x{ph}, too large to fit in memory "
                f"(limit about {MAX_PROCESSING_PIXELS / 1e6:.1f} megapixels). Set a processing size, "
                f"e.g. short side 480 or 720: colour is computed at that size and laid over the "
                f"full-resolution luminance, so the output keeps its {width}x{height} detail.")
        return cls((height, width), (ph, pw), padding)

    @property
    def resized(self) -> bool:
        return self.processing_size != self.input_size

    @property
    def grid(self) -> tuple[int, int]:
        """Stride-16 grid of the padded frame."""
        ph, pw = self.processing_size
        p = self.padding
        return (ph + p.top + p.bottom) // 16, (pw + p.left + p.right) // 16


def as_rgb(frames: Tensor, what: str = "frames") -> Tensor:
    """Frames `B x C x H x W` with C = 1 (grey), 3 (RGB) or 4 (RGBA; alpha dropped) -> `B x 3 x H x W`.

    uint8 is scaled to [0, 1]; floats must be finite and are clamped to [0, 1].
    """
    if frames.dim() != 4:
        raise InputError(f"{what} must be a batch B x C x H x W, got shape {tuple(frames.shape)}.")
    channels = frames.shape[1]
    if channels == 1:
        frames = frames.expand(-1, 3, -1, -1)
    elif channels == 4:
        frames = frames[:, :3]
    elif channels != 3:
        raise InputError(f"{what} must have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {channels}.")
    if frames.dtype == torch.uint8:
        return frames.to(torch.float64) / 255
    if not frames.is_floating_point():
        raise InputError(f"{what} must be uint8 or float in [0, 1], got {frames.dtype}.")
    finite = torch.isfinite(frames).flatten(1).all(1)
    if not finite.all():
        where = f" (first at index {int((~finite).nonzero()[0])})" if frames.shape[0] > 1 else ""
        raise InputError(f"NaN or infinite values in {what}{where}; check the node or file that produced them.")
    return frames.clamp(0, 1)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize in float, antialiased when shrinking: `B x C x H x W` -> `B x C x size`.

    Used for frames and for exemplars at our own processing sizes (no 8-bit rounding on the way)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def resize_like_official(rgb: Tensor, size: tuple[int, int]) -> Tensor:
    """The official reader's exemplar resize: 8-bit RGB through PIL's `Image.resize(..., BILINEAR)`.

    rgb: `1 x 3 x H x W` sRGB in [0, 1] (8-bit values k/255 come back exactly: rounded, not truncated);
    size: (height, width). Returns `1 x 3 x height x width` float64 sRGB in [0, 1] holding 8-bit values,
    which is what `rgb2lab` sees in the official pipeline. PIL's bilinear filter widens its support
    when shrinking (like torch's antialiased bilinear) but rounds to 8 bits in fixed point, so a float
    resize is up to a level away on many pixels; the network amplifies that (top-k choices flip) to
    tens of levels in the output. Matching PIL keeps outputs equal to the official ones.
    """
    from PIL import Image  # Pillow comes with torchvision (and ComfyUI)

    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb
    if rgb.shape[0] != 1 or rgb.shape[1] != 3:
        raise InputError(f"resize_like_official takes one RGB image 1 x 3 x H x W, got {tuple(rgb.shape)}.")
    pixels = (rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    height, width = size
    resized = Image.fromarray(pixels, "RGB").resize((width, height), Image.BILINEAR)
    out = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None]
    return out.to(torch.float64) / 255


def normalized_lab(rgb: Tensor) -> Tensor:
    """sRGB `B x 3 x H x W` in [0, 1] -> official normalised Lab (L', a', b') in float32."""
    return normalize_lab(rgb_to_lab(rgb).float())


def network_image(lab_norm: Tensor, geometry: Geometry) -> Tensor:
    """Normalised Lab at input size `B x 3 x H x W` -> padded network input `B x 3 x Hp x Wp` (L' x 3)."""
    light = resize(lab_norm[:, :1], geometry.processing_size)
    return geometry.padding.pad(light).expand(-1, 3, -1, -1).contiguous()
