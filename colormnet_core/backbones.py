"""Backbones built from timm without any download: ResNet trunks and DINOv2 ViT-S/14.

The official code builds torchvision ResNets and the torch.hub `dinov2_vits14`; every weight is
then overwritten by the checkpoint, so we build the same architectures from timm with random
weights (`pretrained=False`) and let the checkpoint fill them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError

DINO_PATCH = 14
DINO_DIM = 384
DINO_LAYERS = (8, 9, 10, 11)   # 0-based blocks whose (normed) outputs PVGFE concatenates
_DINO_GRID = 37                # the checkpoint's pos_embed covers 37x37 patches (518x518 input)


class CnnFeatures(NamedTuple):
    """ResNet stage outputs: f4 `B x C4 x H/4 x W/4`, f8 at stride 8, f16 at stride 16."""

    f4: Tensor
    f8: Tensor
    f16: Tensor


class ResNetTrunk(nn.Module):
    """Stem and stages 1-3 of a timm ResNet (no stage 4, no classifier).

    Parameter names follow torchvision/timm (`conv1`, `bn1`, `layer1..3`), which is what the
    official checkpoint uses apart from the key encoder's `res2` (renamed in `checkpoint.py`).
    """

    def __init__(self, arch: str, in_chans: int = 3) -> None:
        super().__init__()
        net = timm.create_model(arch, pretrained=False, in_chans=in_chans)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.act1 = net.act1
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3

    def forward(self, x: Tensor) -> CnnFeatures:
        """x: `B x in_chans x H x W` -> features at strides 4, 8 and 16."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        f4 = self.layer1(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return CnnFeatures(f4, f8, f16)


def dinov2_pos_embed(pos_embed: Tensor, grid_h: int, grid_w: int) -> Tensor:
    """Positional embedding for a `grid_h x grid_w` patch grid, by the DINOv2 torch.hub rule.

    pos_embed: `1 x (1 + 37*37) x D` (class token first). Returns `1 x (1 + grid_h*grid_w) x D`
    in pos_embed's dtype. The hub resizes the 37x37 grid bicubically (a = -0.75, no antialias)
    with a *scale factor* of (g + 0.1)/37 rather than a target size: the output size is still g,
    but the source sampling positions follow the slightly larger scale. timm's own resampling
    (size-based, antialiased) gives clearly different features, so it must not be used.
    """
    n_patch = pos_embed.shape[1] - 1
    side = math.isqrt(n_patch)
    if grid_h == side and grid_w == side:
        return pos_embed
    dim = pos_embed.shape[-1]
    cls_pos = pos_embed[:, :1].float()
    grid = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    # The MPS bicubic kernel is missing or differs; this is a few KB of work, so do it on the CPU there.
    work_device = torch.device("cpu") if grid.device.type == "mps" else grid.device
    grid = F.interpolate(
        grid.to(work_device),
        scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
        mode="bicubic",
        align_corners=False,
        antialias=False,
    ).to(pos_embed.device)
    if grid.shape[-2:] != (grid_h, grid_w):   # cannot happen for g >= 1; kept as a guard on torch changes
        raise RuntimeError(f"pos_embed resize gave {tuple(grid.shape[-2:])}, expected {(grid_h, grid_w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([cls_pos, grid], dim=1).to(pos_embed.dtype)


def build_dinov2_vits14() -> nn.Module:
    """timm's `vit_small_patch14_dinov2` with the hub model's geometry, random weights, no head.

    `img_size=518` makes pos_embed `1 x 1370 x 384` like the hub checkpoint; `dynamic_img_size`
    lets it take any multiple of 14 (we replace timm's pos-embed resampling, see below).
    """
    return timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, img_size=518, dynamic_img_size=True, num_classes=0)


def dinov2_intermediate_layers(vit: nn.Module, x: Tensor, layers: tuple[int, ...] = DINO_LAYERS) -> list[Tensor]:
    """Hub `get_intermediate_layers(x, n=layers, reshape=True, norm=True)` on a timm DINOv2 ViT.

    x: `B x 3 x H x W`, H and W multiples of 14 -> one `B x 384 x H/14 x W/14` map per layer
    (0-based block indices). Each taken block output goes through the final LayerNorm; the class
    token is dropped.
    """
    b, _, h, w = x.shape
    if h % DINO_PATCH or w % DINO_PATCH:
        raise InputError(f"DINOv2 input must be a multiple of {DINO_PATCH} pixels, got {h}x{w}.")
    gh, gw = h // DINO_PATCH, w // DINO_PATCH
    tokens = vit.patch_embed(x).reshape(b, gh * gw, DINO_DIM)   # timm gives NHWC with dynamic size
    tokens = torch.cat([vit.cls_token.expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + dinov2_pos_embed(vit.pos_embed, gh, gw)
    outputs = []
    for i, block in enumerate(vit.blocks[: max(layers) + 1]):
        tokens = block(tokens)
        if i in layers:
            out = vit.norm(tokens)[:, 1:]
            outputs.append(out.reshape(b, gh, gw, DINO_DIM).permute(0, 3, 1, 2))
    return outputs
