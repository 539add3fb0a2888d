"""LA - local attention from the current frame to the last memory frame (official `LocalGatedPropagation`).

For every pixel p of the stride-16 grid, attention over the 15x15 window around p in the memory
frame: logits `q(p)/8 . k(p+o) + rel_o(q(p))`, softmax over the offsets o that fall inside the
frame, weighted sum of the memory values, then a depthwise 5x5 conv and a linear projection.
Pure PyTorch: the official code needs a compiled correlation extension (CUDA) for the same
correlation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LocalAttention(nn.Module):
    """LA with window radius `radius` (official max_dis 7: a 15x15 window, 225 offsets).

    Offsets are indexed row-major, `o = (dy + r) * (2r + 1) + (dx + r)`, as the correlation
    extension and `F.unfold` both order them.
    """

    def __init__(self, key_dim: int = 64, value_dim: int = 1024, radius: int = 7, chunk_bytes: int = 256 << 20):
        super().__init__()
        self.radius = radius
        self.window = 2 * radius + 1
        self.relative_position = nn.Conv2d(key_dim, self.window ** 2, 1)
        self.dw_conv = nn.Conv2d(value_dim, value_dim, 5, padding=2, groups=value_dim, bias=False)
        self.projection = nn.Linear(value_dim, value_dim)
        self.scale = 1.0 / math.sqrt(key_dim)
        self.chunk_bytes = chunk_bytes   # bound on the unfolded windows held at once

    def attention_weights(self, query: Tensor, key: Tensor) -> Tensor:
        """Softmax weights `B x 225 x h x w` (zero for offsets outside the frame). For inspection/tests."""
        weights = []
        for rows, _ in self._chunks(query, key, None):
            weights.append(rows)
        return torch.cat(weights, dim=-1).view(query.shape[0], self.window ** 2, *query.shape[-2:])

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """query, key: `B x Ck x h x w` (keys of this and of the last memory frame);
        value: `B x Cv x h x w` (the memory frame's value, both chroma objects concatenated)
        -> `B x Cv x h x w`."""
        b, _, h, w = query.shape
        parts = [agg for _, agg in self._chunks(query, key, value)]
        aggregated = torch.cat(parts, dim=-1).view(b, -1, h, w)
        out = self.dw_conv(aggregated)
        return self.projection(out.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)

    def _chunks(self, query: Tensor, key: Tensor, value: Tensor | None):
        """Yield (weights `B x 225 x n`, aggregated `B x Cv x n` or None) for bands of query rows."""
        b, ck, h, w = query.shape
        r, size, offsets = self.radius, self.window, self.window ** 2
        rel = self.relative_position(query).flatten(2)                  # from the unscaled query
        q = (query * self.scale).flatten(2)
        pad = (r, r, r, r)
        key_pad = F.pad(key, pad)
        value_pad = None if value is None else F.pad(value, pad)
        inside = F.pad(torch.ones(1, 1, h, w, device=query.device, dtype=query.dtype), pad)
        channels = ck + (0 if value is None else value.shape[1])
        per_row = channels * offsets * w * query.element_size() * b
        band = max(1, min(h, self.chunk_bytes // max(per_row, 1)))
        for y0 in range(0, h, band):
            y1 = min(h, y0 + band)
            n = (y1 - y0) * w
            cols = slice(y0 * w, y1 * w)
            key_win = F.unfold(key_pad[:, :, y0:y1 + 2 * r], size).view(b, ck, offsets, n)
            logits = (q[:, :, None, cols] * key_win).sum(1) + rel[:, :, cols]
            valid = F.unfold(inside[:, :, y0:y1 + 2 * r], size).view(1, offsets, n) > 0
            weights = logits.masked_fill(~valid, float("-inf")).softmax(dim=1)
            if value_pad is None:
                yield weights, None
                continue
            value_win = F.unfold(value_pad[:, :, y0:y1 + 2 * r], size).view(b, -1, offsets, n)
            yield weights, torch.einsum("bon,bcon->bcn", weights, value_win)
