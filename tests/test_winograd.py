"""Winograd F(2x2, 3x3) against the direct convolution (float64 reference) and its dispatch rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from colormnet_core import winograd
from colormnet_core.blocks import GroupResBlock
from colormnet_core.winograd import Conv3x3, conv3x3, transform_weight, uses_winograd, winograd_conv3x3


def random_conv(generator, n, c, k, h, w):
    x = torch.randn(n, c, h, w, generator=generator)
    weight = torch.randn(k, c, 3, 3, generator=generator) / (9 * c) ** 0.5
    return x, weight, torch.randn(k, generator=generator)


@pytest.mark.parametrize("n, c, k, h, w", [
    (1, 256, 128, 7, 9),      # odd sizes: the last tile row and column are partly outside
    (2, 300, 130, 1, 1),      # a single pixel: every tap but the centre reads padding
    (3, 256, 256, 14, 21),
    (2, 512, 256, 35, 56),    # several bands of tiles
])
def test_equals_the_direct_convolution(n, c, k, h, w, monkeypatch):
    monkeypatch.setattr(winograd, "BAND_TILES", 64)
    g = torch.Generator().manual_seed(n * 1000 + h)
    x, weight, bias = random_conv(g, n, c, k, h, w)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    out = winograd_conv3x3(x, weight, bias)
    assert out.shape == exact.shape and out.dtype == torch.float32
    # Measured 1.5e-6 - 3e-6 here; oneDNN's direct kernel is at 1e-5 - 2e-5 on the same inputs.
    assert (out.double() - exact).abs().max() <= 5e-6
    no_bias = winograd_conv3x3(x, weight)
    assert (no_bias.double() - (exact - bias.double().view(1, -1, 1, 1))).abs().max() <= 5e-6


def test_weight_transform_is_g_w_g_transposed():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    big_g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    expected = torch.einsum("ai,kcij,bj->abck", big_g, weight, big_g).reshape(16, 4, 5)
    assert torch.allclose(transform_weight(weight), expected, atol=1e-15)


def test_dispatch_takes_winograd_only_where_it_is_exact_and_pays():
    wide = torch.zeros(256, 256, 3, 3)
    x = torch.zeros(1, 256, 32, 32)
    assert uses_winograd(x, wide)
    assert not uses_winograd(x[:, :128], wide[:128, :128])               # narrow: oneDNN is as fast
    assert not uses_winograd(x[:, :, :16], wide)                         # small: the filter transform dominates
    assert not uses_winograd(torch.zeros(4, 256, 16, 16), wide)          # per map: batching changes nothing
    assert not uses_winograd(x.double(), wide.double())                  # float32 only
    assert not uses_winograd(x.requires_grad_(), wide)                   # no autograd through out=
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_winograd(torch.zeros(1, 256, 32, 32), wide)        # autocast picks its own kernels
    with winograd.disabled():
        assert not uses_winograd(torch.zeros(1, 256, 32, 32), wide)
    assert uses_winograd(torch.zeros(1, 256, 32, 32), wide)                # restored after the block


def test_conv3x3_module_keeps_the_conv2d_state_dict_and_results():
    g = torch.Generator().manual_seed(2)
    plain = nn.Conv2d(256, 128, 3, padding=1)
    ours = Conv3x3(256, 128)
    assert list(ours.state_dict()) == list(plain.state_dict())
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 256, 9, 10, generator=g)
    with torch.no_grad():
        assert (ours(x) - plain(x)).abs().max() <= 5e-5
        with winograd.disabled():
            assert torch.equal(ours(x), plain(x))
    # With gradients it is the ordinary convolution (and differentiable).
    x.requires_grad_()
    ours(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_channels_last_result_feeds_the_next_blocks_unchanged():
    """The Winograd output is channels-last; a residual block over it equals one over NCHW input."""
    g = torch.Generator().manual_seed(3)
    block = GroupResBlock(256, 256).eval()
    x = torch.randn(1, 2, 256, 32, 40, generator=g)
    with torch.no_grad():
        fast = block(x)
        with winograd.disabled():
            direct = block(x)
        assert conv3x3(x[0], block.conv1.weight, block.conv1.bias).is_contiguous(memory_format=torch.channels_last)
    assert fast.shape == direct.shape
    assert (fast - direct).abs().max() <= 1e-4
