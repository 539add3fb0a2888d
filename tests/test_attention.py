"""LA (local attention) against a brute-force loop over window offsets."""

from __future__ import annotations

import math

import pytest
import torch

from colormnet_core.attention import LocalAttention


def brute_force(la: LocalAttention, query, key, value):
    """Literal reading of the official semantics: per pixel, per offset, skip out-of-frame neighbours."""
    b, ck, h, w = query.shape
    r = la.radius
    rel = la.relative_position(query)                       # B x 225 x h x w, from the unscaled query
    q = query / math.sqrt(ck)
    aggregated = torch.zeros(b, value.shape[1], h, w, dtype=query.dtype)
    weights = torch.zeros(b, (2 * r + 1) ** 2, h, w, dtype=query.dtype)
    for y in range(h):
        for x in range(w):
            logits, neighbours, slots = [], [], []
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        o = (dy + r) * (2 * r + 1) + (dx + r)
                        logits.append((q[:, :, y, x] * key[:, :, yy, xx]).sum(1) + rel[:, o, y, x])
                        neighbours.append(value[:, :, yy, xx])
                        slots.append(o)
            alpha = torch.stack(logits, 1).softmax(1)         # B x n_valid
            weights[:, slots, y, x] = alpha
            aggregated[:, :, y, x] = (alpha[:, None, :] * torch.stack(neighbours, 2)).sum(2)
    out = la.dw_conv(aggregated)
    out = la.projection(out.flatten(2).transpose(1, 2)).transpose(1, 2).reshape_as(out)
    return out, weights


@pytest.mark.parametrize("h,w", [(3, 4), (5, 9), (14, 21), (16, 7)])
def test_matches_brute_force_including_borders(h, w):
    torch.manual_seed(h * 100 + w)
    la = LocalAttention(key_dim=16, value_dim=24).double().eval()
    q, k = torch.randn(2, 16, h, w, dtype=torch.float64), torch.randn(2, 16, h, w, dtype=torch.float64)
    v = torch.randn(2, 24, h, w, dtype=torch.float64)
    with torch.no_grad():
        ref_out, ref_w = brute_force(la, q, k, v)
        out = la(q, k, v)
        weights = la.attention_weights(q, k)
    assert (out - ref_out).abs().max() <= 1e-5
    assert (weights - ref_w).abs().max() <= 1e-5
    # Out-of-frame offsets take no weight: the corner pixel only sees the (r+1)^2 in-frame quadrant.
    assert (weights[:, :, 0, 0] > 0).sum(1).tolist() == [min(h, 8) * min(w, 8)] * 2


def test_float32_matches_float64_reference_at_release_dimensions():
    torch.manual_seed(0)
    la = LocalAttention().eval()                             # 64-d keys, 1024-d values, 15x15 window
    q, k, v = torch.randn(1, 64, 9, 13), torch.randn(1, 64, 9, 13), torch.randn(1, 1024, 9, 13)
    with torch.no_grad():
        ref, _ = brute_force(la.double(), q.double(), k.double(), v.double())
        out = la.float()(q, k, v)
    assert (out.double() - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("tile", [1, 3, 5, 20])
def test_tile_size_does_not_change_the_result(tile):
    torch.manual_seed(1)
    la = LocalAttention(key_dim=8, value_dim=16).eval()
    q, k, v = torch.randn(1, 8, 11, 6), torch.randn(1, 8, 11, 6), torch.randn(1, 16, 11, 6)
    with torch.no_grad():
        default = la(q, k, v)
        la.tile = tile                                        # 11x6 is not a multiple of any of these but 1
        tiled = la(q, k, v)
    # Same maths; a wrong tile offset or a border tile's padding would show as O(1) errors, rounding as ~1e-7.
    assert (default - tiled).abs().max() <= 1e-6
