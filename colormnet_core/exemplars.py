"""Exemplars: colour images that say what colours the video has.

An exemplar either *is* a frame of the video in colour (pinned to its frame index: at that frame
the output takes its chroma and the memory gets it; official first-frame path, generalised to any
frame), or is a reference image that is not a frame (loaded into memory before frame 0; official
any-exemplar path), or is a reference *given at* a frame (`reference=True`; CMNET2's schedule): when
the video reaches that frame it joins working memory and a permanent memory where it is tagged
with the frame (for proximity-weighted matching), and the frame itself is still predicted, from
memory and without local attention, as every frame of CMNET2 goes through the any-exemplar step.
Encoding a reference is independent of the video and can be reused across videos of the same
processing size; a pinned exemplar is encoded together with its frame's
luminance when the session reaches it, exactly as the official pipeline does.

An exemplar of another size than the processing size is resized to it: at the official processing
size (frames not resized) exactly as the official reader does (PIL bilinear on 8-bit RGB, then Lab),
so outputs match the official pipeline; at our own processing sizes by an antialiased float
bilinear resize (no 8-bit rounding).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .errors import InputError
from .preprocess import Geometry, as_rgb, normalized_lab, resize, resize_like_official

if TYPE_CHECKING:   # the network pulls in timm; exemplars are made without it (e.g. at plugin import)
    from .network import ColorMNet


def _no_network() -> None:
    """Stands in for the weak reference of a cache entry made without a network (pinned exemplars only)."""
    return None


@dataclass(frozen=True)
class Exemplar:
    """image: `3 x H x W` (or `1/4 x H x W`) sRGB in [0, 1] or uint8, any size and aspect;
    frame: the index of the video frame it is the colour version of, or None for a reference;
    reference: True for a CMNET2 reference given at `frame` (None: the first frame): it joins the
    permanent memory tagged with that frame instead of pinning the frame's output."""

    image: Tensor
    frame: int | None = None
    reference: bool = False

    def __post_init__(self) -> None:
        if self.image.dim() != 3:
            raise InputError(f"an exemplar image must be C x H x W, got shape {tuple(self.image.shape)}.")
        if self.frame is not None and self.frame < 0:
            raise InputError(f"an exemplar's frame index must be 0 or more, got {self.frame}.")


@dataclass(frozen=True)
class PreparedExemplar:
    """An exemplar at a processing geometry: padded normalised Lab `1 x 3 x Hp x Wp` (L', a', b'),
    plus - for references - its memory entry (key, shrinkage, selection, value)."""

    frame: int | None
    lab: Tensor
    reference: bool = False
    key: Tensor | None = None
    shrinkage: Tensor | None = None
    selection: Tensor | None = None
    value: Tensor | None = None

    @property
    def ab(self) -> Tensor:
        return self.lab[:, 1:]

    @property
    def image(self) -> Tensor:
        return self.lab[:, :1].expand(-1, 3, -1, -1)


@dataclass
class EncodedExemplars:
    """Exemplars ready for sessions; immutable to callers (ComfyUI shares one object between nodes).

    Encodings are cached per processing geometry, so one object colorizes many videos.
    """

    exemplars: tuple[Exemplar, ...]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.exemplars:
            raise InputError("no exemplar given: add at least one colour exemplar image.")
        pinned = [e.frame for e in self.exemplars if e.frame is not None and not e.reference]
        duplicates = sorted({f for f in pinned if pinned.count(f) > 1})
        if duplicates:
            raise InputError(f"several exemplars are pinned to frame(s) {duplicates}; keep one exemplar per frame.")

    @property
    def pinned_frames(self) -> list[int]:
        return sorted(e.frame for e in self.exemplars if e.frame is not None and not e.reference)

    @property
    def references(self) -> list[Exemplar]:
        """Official references: not a frame, in memory before the first frame."""
        return [e for e in self.exemplars if e.frame is None and not e.reference]

    @property
    def tagged_frames(self) -> list[int]:
        """Frames at which CMNET2 references are given (a reference without a frame: 0)."""
        return sorted(e.frame or 0 for e in self.exemplars if e.reference)

    def prepare(self, network: ColorMNet | None, geometry: Geometry, device: torch.device,
                dtype: torch.dtype = torch.float32) -> list[PreparedExemplar]:
        """Resize, convert and (for references) encode every exemplar for `geometry` on `device`.

        network: None where no exemplar is a reference (pinned exemplars are only resized).

        dtype: the autocast dtype the caller encodes under (float32: none). It is part of the cache
        key, so that a session in one precision never reads encodings made in another (a float32
        read of bfloat16 keys fails, and a float16 session would silently use float32 encodings)."""
        cache_key = (geometry.processing_size, geometry.padding, str(device), dtype, id(network))
        cached = self._cache.get(cache_key)
        # The id of a network that was freed can be a new network's (a model swapped for a fine-tuned one
        # in the same memory): the entry counts only while it is the very same network object.
        if cached is None or cached[0]() is not network:
            self._cache.clear()   # one geometry at a time keeps device memory bounded
            prepared = [self._prepare_one(e, network, geometry, device) for e in self.exemplars]
            held = weakref.ref(network) if network is not None else _no_network
            self._cache[cache_key] = cached = (held, prepared)
        return cached[1]

    @torch.inference_mode()
    def _prepare_one(self, exemplar: Exemplar, network: ColorMNet | None, geometry: Geometry,
                     device: torch.device) -> PreparedExemplar:
        name = ("the reference exemplar" if exemplar.frame is None and not exemplar.reference else
                f"the reference given at frame {exemplar.frame or 0}" if exemplar.reference else
                f"the exemplar pinned to frame {exemplar.frame}")
        rgb = as_rgb(exemplar.image.unsqueeze(0), name)
        if geometry.resized:
            rgb = resize(rgb, geometry.processing_size)           # ours: float, antialiased
        else:
            rgb = resize_like_official(rgb, geometry.processing_size)   # official size: PIL on 8-bit, as it does
        lab = geometry.padding.pad(normalized_lab(rgb.clamp(0, 1))).to(device)
        if exemplar.frame is not None and not exemplar.reference:
            return PreparedExemplar(exemplar.frame, lab)
        # A reference's memory entry does not depend on the video (no deep update: the value is
        # independent of the hidden state), so it is encoded once per geometry.
        if network is None:
            raise ValueError(f"{name} is a reference: it is encoded by the network, and none was given")
        image = lab[:, :1].expand(-1, 3, -1, -1)
        encoded = network.encode_key(image, need_shrinkage=True)
        value, _ = network.encode_value(image, encoded.features.f16, None, lab[:, 1:], deep_update=False)
        return PreparedExemplar(exemplar.frame, lab, exemplar.reference, encoded.key, encoded.shrinkage,
                                encoded.selection, value)
