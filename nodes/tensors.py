"""The BHWC <-> BCHW boundary: ComfyUI IMAGE is `B x H x W x C` float32 in [0, 1]; the core is channel-first."""

from __future__ import annotations

import torch

from ..colormnet_core.errors import InputError


def to_bchw(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{what} must be a ComfyUI IMAGE batch (B x H x W x C), got {shape}.")
    if images.shape[0] == 0:
        raise InputError(f"{what} is an empty batch: connect a node that outputs at least one image.")
    return images.permute(0, 3, 1, 2)


def to_bhwc(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1).contiguous()
