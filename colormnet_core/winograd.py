"""Winograd F(2x2, 3x3) convolution for the wide 3x3 convolutions of the decoder and the Fuse, on the CPU.

A 3x3 convolution (stride 1, zero padding 1) computes each 2x2 output tile from a 4x4 input tile.
Winograd's minimal filtering algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016) writes the tile as

    Y = A^T [ (G w G^T) . (B^T d B) ] A        (. = element-wise, summed over input channels)

so the channel mixing becomes 16 matrix products, one per element of the 4x4 transformed tile,
with 16 multiply-adds per output tile and channel pair instead of 36. The transforms only add,
subtract and halve, so in float32 the result is closer to a float64 reference than oneDNN's
direct kernel (measured max |error| 2.3e-6 against 2e-5 at the decoder's shapes).

CPU only, float32, no autograd: anywhere else (CUDA, where cuDNN picks its own Winograd
kernels; autocast; gradients) `conv3x3` calls `F.conv2d`. Narrow convolutions are left to
oneDNN too: below 256 input channels the transforms cost more than the products save, and so do
small maps (below 1024 pixels), where the per-call filter transform dominates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Below these widths the direct kernel is as fast (measured: 128 -> 128 channels, 0.9-1.2x).
MIN_IN_CHANNELS = 256
MIN_OUT_CHANNELS = 128
# Below this many pixels per map (H x W) the filter transform, done per call, costs more than the
# products save (measured break-even 600-1200 output pixels; 1960 at the official size's stride 16:
# 0.6-0.9x). Per map, not per batch: a frame's result must not depend on how many share its batch.
MIN_MAP_PIXELS = 1024
# Tiles per band: the band's transformed input and products (16 x tiles x channels each) stay a
# few MB, and the matrix products are still wide enough for the BLAS kernels.
BAND_TILES = 1024

_enabled = True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block `conv3x3` always uses `F.conv2d` (the direct kernels), e.g. to compare."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _filter_transform() -> Tensor:
    """`kron(G, G)`: 16 x 9, row i*4 + j takes `(G w G^T)[i, j]` from the 9 filter taps."""
    g = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    return torch.kron(g, g)


_FILTER_TRANSFORM = _filter_transform()


def transform_weight(weight: Tensor) -> Tensor:
    """`G w G^T` for every filter: weight `K x C x 3 x 3` -> `16 x C x K` (element (i, j) at i*4 + j).

    One product with `kron(G, G)` over the taps; its entries are 0, +-1/2, +-1/4 and 1, so every
    transformed value is a short sum of exactly scaled weights.
    """
    k, c = weight.shape[:2]
    taps = weight.permute(2, 3, 1, 0).reshape(9, c * k)             # tap x (C, K)
    return (_FILTER_TRANSFORM.to(weight) @ taps).view(16, c, k)


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` by Winograd F(2x2, 3x3).

    x: `N x C x H x W`; weight `K x C x 3 x 3`; returns `N x K x H x W` in channels-last layout.
    """
    n, c, h, w = x.shape
    k = weight.shape[0]
    th, tw = (h + 1) // 2, (w + 1) // 2                              # output tiles
    u = transform_weight(weight)                                     # 16 x C x K
    # Channels last, zero padded by one on the top/left and to whole tiles on the bottom/right.
    padded = x.new_zeros(n, 2 * th + 2, 2 * tw + 2, c)
    padded[:, 1:h + 1, 1:w + 1] = x.permute(0, 2, 3, 1)
    out = x.new_empty(n, 2 * th, 2 * tw, k)
    band = max(1, BAND_TILES // (n * tw))
    for i0 in range(0, th, band):
        bh = min(band, th - i0)
        d = padded[:, 2 * i0:2 * (i0 + bh) + 2]                     # N x (2bh + 2) x Wp x C
        r = [d[:, j:j + 2 * bh:2] for j in range(4)]                # input row j of every tile
        # B^T d: rows (r0 - r2, r1 + r2, r2 - r1, r1 - r3); then the same along the columns.
        v = x.new_empty(4, 4, n, bh, tw, c)
        for a, t in enumerate((r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3])):
            col = [t[:, :, j:j + 2 * tw:2] for j in range(4)]
            torch.sub(col[0], col[2], out=v[a, 0])
            torch.add(col[1], col[2], out=v[a, 1])
            torch.sub(col[2], col[1], out=v[a, 2])
            torch.sub(col[1], col[3], out=v[a, 3])
        m = torch.bmm(v.view(16, -1, c), u).view(4, 4, n, bh, tw, k)
        if bias is not None:
            m[1, 1] += bias                                          # A^T e_1 = (1, 1): reaches all 4 outputs
        # A^T m A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], written into the 2x2 output positions.
        o = out[:, 2 * i0:2 * (i0 + bh)].view(n, bh, 2, tw, 2, k)
        for row, s in enumerate(((m[0] + m[1]).add_(m[2]), (m[1] - m[2]).sub_(m[3]))):
            torch.add(s[0], s[1], out=o[:, :, row, :, 0]).add_(s[2])
            torch.sub(s[1], s[2], out=o[:, :, row, :, 1]).sub_(s[3])
    return out[:, :h, :w].permute(0, 3, 1, 2)


def uses_winograd(x: Tensor, weight: Tensor) -> bool:
    """Whether `conv3x3(x, weight, ...)` takes the Winograd path."""
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and weight.shape[1] >= MIN_IN_CHANNELS and weight.shape[0] >= MIN_OUT_CHANNELS
            and x.shape[2] * x.shape[3] >= MIN_MAP_PIXELS
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 3x3 convolution with zero padding 1 and stride 1: Winograd on the CPU where it pays, else `F.conv2d`."""
    if uses_winograd(x, weight):
        return winograd_conv3x3(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=1)


class Conv3x3(nn.Conv2d):
    """`nn.Conv2d(in_dim, out_dim, 3, padding=1)` (same parameters and state-dict keys) through `conv3x3`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return conv3x3(x, self.weight, self.bias)
