"""LA - local attention from the current frame to the last memory frame (official `LocalGatedPropagation`).

For every pixel p of the stride-16 grid, attention over the 15x15 window around p in the memory
frame: logits `q(p)/8 . k(p+o) + rel_o(q(p))`, softmax over the offsets o that fall inside the
frame, weighted sum of the memory values, then a depthwise 5x5 conv and a linear projection.
Pure PyTorch: the official code needs a compiled correlation extension for the same correlation.

Evaluated on square tiles of the grid: the T x T query pixels of a tile see a shared
(T + 2r) x (T + 2r) key window, so correlation and aggregation are two dense batched matrix
products (BLAS) instead of 225 unfolded copies of the 1024-channel value map. The 225 logits of
each pixel are gathered out of the dense products, so the softmax is the official one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LocalAttention(nn.Module):
    """LA with window radius `radius` (official max_dis 7: a 15x15 window, 225 offsets).

    Offsets are indexed row-major, `o = (dy + r) * (2r + 1) + (dx + r)`, as the official
    correlation orders them. `tile`: query tile side T (8 measured fastest on CPU for the release
    sizes: each query pays (T + 2r)^2 / 225 = 2.2x the multiply-adds, in large BLAS calls).
    """

    def __init__(self, key_dim: int = 64, value_dim: int = 1024, radius: int = 7, tile: int = 8):
        super().__init__()
        self.radius = radius
        self.window = 2 * radius + 1
        self.relative_position = nn.Conv2d(key_dim, self.window ** 2, 1)
        self.dw_conv = nn.Conv2d(value_dim, value_dim, 5, padding=2, groups=value_dim, bias=False)
        self.projection = nn.Linear(value_dim, value_dim)
        self.scale = 1.0 / math.sqrt(key_dim)
        self.tile = tile

    def attention_weights(self, query: Tensor, key: Tensor) -> Tensor:
        """Softmax weights `B x 225 x h x w` (zero for offsets outside the frame). For inspection/tests."""
        b, _, h, w = query.shape
        t = self.tile
        rows = [weights for weights, _ in self._tile_rows(query, key, None)]    # B x nx x T*T x 225 each
        grid = torch.stack(rows, 1).view(b, len(rows), -1, t, t, self.window ** 2)
        grid = grid.permute(0, 5, 1, 3, 2, 4).reshape(b, self.window ** 2, len(rows) * t, -1)
        return grid[:, :, :h, :w]

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """query, key: `B x Ck x h x w` (keys of this and of the last memory frame);
        value: `B x Cv x h x w` (the memory frame's value, both chroma objects concatenated)
        -> `B x Cv x h x w`."""
        b, _, h, w = query.shape
        t = self.tile
        rows = [agg for _, agg in self._tile_rows(query, key, value)]             # B x nx x T*T x Cv each
        grid = torch.stack(rows, 1).view(b, len(rows), -1, t, t, value.shape[1])
        aggregated = grid.permute(0, 5, 1, 3, 2, 4).reshape(b, value.shape[1], len(rows) * t, -1)[:, :, :h, :w]
        out = self.dw_conv(aggregated)
        return self.projection(out.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)

    def _tile_rows(self, query: Tensor, key: Tensor, value: Tensor | None):
        """Yield, per row of tiles, (weights `B x nx x T*T x 225`, aggregated `B x nx x T*T x Cv` or None).

        One row of tiles at a time bounds the temporaries to about nx * (T + 2r)^2 * Cv values."""
        b, ck, h, w = query.shape
        r, t = self.radius, self.tile
        side = t + 2 * r
        ny, nx = -(-h // t), -(-w // t)
        extra_h, extra_w = ny * t - h, nx * t - w
        rel = F.pad(self.relative_position(query), (0, extra_w, 0, extra_h))   # from the unscaled query
        q = F.pad(query * self.scale, (0, extra_w, 0, extra_h))
        around = (r, r + extra_w, r, r + extra_h)
        key_pad = F.pad(key, around)
        value_pad = None if value is None else F.pad(value, around)
        inside = F.pad(torch.ones(1, 1, h, w, device=query.device, dtype=query.dtype), around)
        index = _window_index(t, r, query.device)                                # T*T x 225 into side*side
        for y in range(ny):
            ys, ks = slice(y * t, y * t + t), slice(y * t, y * t + side)
            q_tiles = _tiles(q[:, :, ys], t, t).transpose(-1, -2)               # B x nx x T*T x Ck
            rel_tiles = _tiles(rel[:, :, ys], t, t).transpose(-1, -2)           # B x nx x T*T x 225
            k_tiles = _tiles(key_pad[:, :, ks], side, t)                        # B x nx x Ck x side^2
            valid = _tiles(inside[:, :, ks], side, t)[0, :, 0][:, index] > 0    # nx x T*T x 225
            dense = q_tiles @ k_tiles                                           # B x nx x T*T x side^2
            logits = dense.gather(-1, index.expand(b, nx, -1, -1)) + rel_tiles
            weights = logits.masked_fill(~valid, float("-inf")).softmax(dim=-1)
            if value_pad is None:
                yield weights, None
                continue
            v_tiles = _tiles(value_pad[:, :, ks], side, t).transpose(-1, -2)    # B x nx x side^2 x Cv
            spread = torch.zeros_like(dense, dtype=v_tiles.dtype).scatter_(
                -1, index.expand(b, nx, -1, -1), weights.to(v_tiles.dtype))
            yield weights, spread @ v_tiles


def _tiles(x: Tensor, size: int, step: int) -> Tensor:
    """`B x C x size x W'` band -> its square tiles `B x n x C x size*size` (n = tiles along W', every `step`)."""
    b, c = x.shape[:2]
    tiles = x.unfold(3, size, step)                                            # B x C x size x n x size
    return tiles.permute(0, 3, 1, 2, 4).reshape(b, tiles.shape[3], c, size * size)


def _window_index(tile: int, radius: int, device: torch.device) -> Tensor:
    """`T*T x 225`: position in the (T + 2r)^2 key window of query (i, j)'s offset o = (dy, dx)."""
    side = tile + 2 * radius
    i = torch.arange(tile, device=device)
    o = torch.arange(2 * radius + 1, device=device)
    rows = (i[:, None, None, None] + o[None, None, :, None]) * side              # i, ., oy, .
    cols = i[None, :, None, None] + o[None, None, None, :]                       # ., j, ., ox
    return (rows + cols).reshape(tile * tile, -1)
