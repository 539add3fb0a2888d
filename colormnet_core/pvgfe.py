"""PVGFE - large-pretrained visual model guided feature estimation (the ColorMNet key encoder).

A ResNet-50 (stages 1-3) and DINOv2 ViT-S/14 see the same input (L' replicated to 3 channels,
no ImageNet normalisation). DINOv2's last four blocks are concatenated, projected and resized
from stride 14 to stride 16, then fused into the ResNet features at strides 16, 8 and 4 by a
cross-channel attention in which DINOv2 gives the queries and the ResNet the keys and values.
CMNET2's checkpoints put a DINOv3 ViT-B/16 in DINOv2's place (`dinov3.py`); everything after its
1536-channel stride-16 map is the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import DINO_DIM, DINO_LAYERS, DINO_PATCH, ResNetTrunk, build_dinov2_vits14, dinov2_intermediate_layers
from .dinov3 import Dinov3Features
from .winograd import Conv3x3

DINO_CONCAT_DIM = DINO_DIM * len(DINO_LAYERS)   # 1536


class KeyFeatures(NamedTuple):
    """Fused key-encoder maps: f16 `B x 1024 x H/16 x W/16`, f8 `B x 512 x H/8`, f4 `B x 256 x H/4`."""

    f16: Tensor
    f8: Tensor
    f4: Tensor


def _normalise_channels(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(y, var): x normalised over dim 1 with its biased variance."""
    centred = x - x.mean(1, keepdim=True)
    var = centred.pow(2).mean(1, keepdim=True)
    return centred / (var + eps).sqrt(), var


class _LayerNorm2dFunction(torch.autograd.Function):
    """LayerNorm2d with the closed-form backward the official Fuse defines:
    `dx = (g - y mean(g y) - mean(g)) / sqrt(var + eps)`, g = dL/dout * weight.

    Autograd through the forward's steps subtracts large, nearly equal terms (the mean and variance
    paths) and loses ~100x more float32 digits on the Fuse's maps; this form works on the
    normalised y, as the official trainer does."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        y, var = _normalise_channels(x, eps)
        ctx.save_for_backward(y, var, weight)
        ctx.eps = eps
        return weight.view(1, -1, 1, 1) * y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        y, var, weight = ctx.saved_tensors
        g = grad * weight.view(1, -1, 1, 1)
        dx = (g - y * (g * y).mean(1, keepdim=True) - g.mean(1, keepdim=True)) / (var + ctx.eps).sqrt()
        return dx, (grad * y).sum((0, 2, 3)), grad.sum((0, 2, 3)), None


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel, eps 1e-6 (biased variance), as the official Fuse."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad or self.bias.requires_grad):
            return _LayerNorm2dFunction.apply(x, self.weight, self.bias, self.eps)
        y, _ = _normalise_channels(x, self.eps)
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class CrossChannelAttention(nn.Module):
    """Restormer-style "transposed" attention between channels, queries from one map, keys/values from another.

    Each of the `heads` heads attends over its `2C/heads` channels with an affinity of
    L2-normalised (over space) channel rows, scaled by a learned per-head temperature.
    """

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        wide = 2 * dim
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_q = nn.Conv2d(dim, wide, 1)
        self.to_q_dw = nn.Conv2d(wide, wide, 3, padding=1, groups=wide)
        self.to_k = nn.Conv2d(dim, wide, 1)
        self.to_k_dw = nn.Conv2d(wide, wide, 3, padding=1, groups=wide)
        self.to_v = nn.Conv2d(dim, wide, 1)
        self.to_v_dw = nn.Conv2d(wide, wide, 3, padding=1, groups=wide)
        self.to_out = nn.Sequential(nn.Conv2d(wide, dim, 1))

    def forward(self, query_map: Tensor, context_map: Tensor) -> Tensor:
        """query_map, context_map: `B x C x H x W` -> `B x C x H x W`."""
        b, _, h, w = query_map.shape

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, self.heads, -1, h * w)

        q = F.normalize(heads(self.to_q_dw(self.to_q(query_map))), dim=-1)
        k = F.normalize(heads(self.to_k_dw(self.to_k(context_map))), dim=-1)
        v = heads(self.to_v_dw(self.to_v(context_map)))
        affinity = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.to_out((affinity @ v).reshape(b, -1, h, w))


class GuidedFusion(nn.Module):
    """Fuse (official name): `ReLU(LN(attention(LN(P e), LN(c)) + P e))`, P a 3x3 conv on the DINOv2 map e."""

    def __init__(self, dino_dim: int, dim: int) -> None:
        super().__init__()
        self.dino_proj = Conv3x3(dino_dim, dim)
        self.norm_dino = LayerNorm2d(dim)
        self.norm_cnn = LayerNorm2d(dim)
        self.attention = CrossChannelAttention(dim)
        self.norm_out = LayerNorm2d(dim)

    def forward(self, dino: Tensor, cnn: Tensor, *, upsample: int = 1) -> Tensor:
        """dino: `B x 1536 x h x w`, cnn: `B x dim x (upsample h) x (upsample w)` -> like cnn.

        The official code upsamples e bilinearly to the cnn map's size before P."""
        projected = self.dino_proj(dino) if upsample == 1 else self._project_upsampled(dino, upsample)
        fused = self.attention(self.norm_dino(projected), self.norm_cnn(cnn)) + projected
        return F.relu(self.norm_out(fused))

    def _project_upsampled(self, dino: Tensor, factor: int) -> Tensor:
        """`P(up(e))` as `sum_tap shift_tap(up(W_tap e)) + bias`, exact in real arithmetic.

        Bilinear upsampling acts on each channel alike, so it commutes with P's channel mixing: each
        of the 9 taps mixes 1536 -> dim channels on the small map and is upsampled afterwards
        (factor^2 = 16x fewer multiply-adds at stride 4, and no 1536-channel map at stride 4).
        Zero padding: a tap reading outside the upsampled map contributes nothing, as in the conv.
        """
        weight, bias = self.dino_proj.weight, self.dino_proj.bias            # dim x 1536 x 3 x 3
        dim = weight.shape[0]
        taps = F.conv2d(dino, weight.permute(2, 3, 0, 1).reshape(9 * dim, -1, 1, 1))   # B x 9dim x h x w
        height, width = dino.shape[-2] * factor, dino.shape[-1] * factor
        out = None
        for tap in range(9):
            dy, dx = tap // 3 - 1, tap % 3 - 1
            up = F.interpolate(taps[:, tap * dim:(tap + 1) * dim], scale_factor=factor, mode="bilinear",
                               align_corners=False)
            if out is None:                                                  # the centre-row taps cover all
                out = torch.zeros_like(up)
            out[..., max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] += \
                up[..., max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
        return out + bias.view(1, -1, 1, 1)


class DinoFeatures(nn.Module):
    """DINOv2 blocks 8-11 concatenated, 1x1 conv + BN + ReLU, resized from stride 14 to stride 16.

    (The official code never trains conv/bn here - they sit under no_grad - but applies them.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.vit = build_dinov2_vits14()
        # A hub parameter timm lacks: unused at inference, kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, DINO_DIM))
        self.conv = nn.Conv2d(DINO_CONCAT_DIM, DINO_CONCAT_DIM, 1, bias=False)
        self.bn = nn.BatchNorm2d(DINO_CONCAT_DIM)

    def forward(self, x: Tensor) -> Tensor:
        """x: `B x 3 x H x W` (multiples of 112) -> `B x 1536 x H/16 x W/16`."""
        d14 = torch.cat(dinov2_intermediate_layers(self.vit, x), dim=1)
        d14 = F.relu(self.bn(self.conv(d14)))
        # Explicit size int(g * 14 / 16): the 8:7 ratio is exact for 112-multiples.
        size = (int(d14.shape[-2] * DINO_PATCH / 16), int(d14.shape[-1] * DINO_PATCH / 16))
        return F.interpolate(d14, size=size, mode="bilinear", align_corners=False)


class KeyEncoder(nn.Module):
    """PVGFE: image `B x 3 x H x W` (L' x 3, H and W multiples of 112) -> fused f16, f8, f4.

    backbone: "dinov2_vits14" (official) or "dinov3_vitb16" (CMNET2); `dino` is either branch."""

    def __init__(self, backbone: str = "dinov2_vits14") -> None:
        super().__init__()
        self.cnn = ResNetTrunk("resnet50")
        self.dino = Dinov3Features() if backbone == "dinov3_vitb16" else DinoFeatures()
        self.fuse16 = GuidedFusion(DINO_CONCAT_DIM, 1024)
        self.fuse8 = GuidedFusion(DINO_CONCAT_DIM, 512)
        self.fuse4 = GuidedFusion(DINO_CONCAT_DIM, 256)

    def forward(self, image: Tensor) -> KeyFeatures:
        c4, c8, c16 = self.cnn(image)
        d16 = self.dino(image)
        return KeyFeatures(
            f16=self.fuse16(d16, c16),
            f8=self.fuse8(d16, c8, upsample=2),
            f4=self.fuse4(d16, c4, upsample=4),
        )
