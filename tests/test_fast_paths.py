"""The lean formulations (sparse top-k readout, tap-first Fuse projection, shared fuser convolutions)
against the literal ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from colormnet_core import memory as memory_module
from colormnet_core.blocks import GroupResBlock, broadcast_cat
from colormnet_core.config import MemoryConfig
from colormnet_core.memory import MFPMemory, dense_affinity, gather_readout, similarity, top_k_affinity
from colormnet_core.pvgfe import GuidedFusion


def random_frame(generator, h=3, w=5, ck=8, cv=6):
    return (torch.randn(1, ck, h, w, generator=generator), torch.rand(1, 1, h, w, generator=generator) + 1,
            torch.rand(1, ck, h, w, generator=generator), torch.randn(1, 2, cv, h, w, generator=generator))


@pytest.mark.parametrize("top_k", [4, 30, 100])
def test_read_equals_dense_top_k_affinity(top_k, monkeypatch):
    g = torch.Generator().manual_seed(top_k)
    memory = MFPMemory(MemoryConfig(top_k=top_k, enable_long_term=False))
    stored = [random_frame(g) for _ in range(3)]
    for t, (k, s, e, v) in enumerate(stored):
        memory.add(k, s, e, v, permanent=t == 0, frame_index=t)
    query_key, _, query_sel, _ = random_frame(g)
    monkeypatch.setattr(memory_module, "READ_CHUNK_ELEMENTS", 40)      # several query bands
    readout = memory.read(query_key, query_sel)

    mem_key = torch.cat([f[0].flatten(2) for f in stored], -1)
    mem_value = torch.cat([f[3][0].flatten(2) for f in stored], -1)   # 2 x Cv x N
    sim = similarity(mem_key, torch.cat([f[1].flatten(2) for f in stored], -1), query_key.flatten(2),
                     query_sel.flatten(2))
    k = min(top_k, sim.shape[1])
    values, index = torch.topk(sim.contiguous(), k=k, dim=1)
    weights = values.exp() / values.exp().sum(1, keepdim=True)
    affinity = torch.zeros_like(sim).scatter_(1, index, weights)
    expected = (mem_value @ affinity[0]).view_as(readout)
    assert (readout - expected).abs().max() <= 1e-5
    assert memory.last_read_similarity.shape == (k, 15) and memory.last_read_similarity.dtype == torch.float32
    # Bands of a few queries may round differently from one whole product (other BLAS kernels).
    assert (memory.last_read_similarity - values[0]).abs().max() <= 1e-5
    assert torch.equal(memory.last_read_index, index[0])
    assert (memory.last_read_similarity[:-1] >= memory.last_read_similarity[1:]).all()


def test_sparse_and_gathered_readouts_agree_with_the_dense_product():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(200, 12, generator=g)                           # N x C
    top = top_k_affinity(-torch.rand(1, 200, 9, generator=g), 30)
    dense = values.t() @ dense_affinity(top, 200)[0]
    assert (gather_readout(values, top) - dense).abs().max() <= 1e-5                 # CSR path (float32)
    assert (gather_readout(values.double(), top).float() - dense).abs().max() <= 1e-5  # gathered path


@pytest.mark.parametrize("factor", [2, 4])
def test_tap_first_projection_equals_conv_of_the_upsampled_map(factor):
    torch.manual_seed(factor)
    fuse = GuidedFusion(dino_dim=16, dim=8).double().eval()
    dino = torch.randn(1, 16, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        literal = fuse.dino_proj(F.interpolate(dino, scale_factor=factor, mode="bilinear", align_corners=False))
        taps = fuse._project_upsampled(dino, factor)
    assert taps.shape == literal.shape
    # Equal in exact arithmetic: float64 differences are rounding (~1e-15); a wrong shift or border is O(1).
    assert (taps - literal).abs().max() <= 1e-12


def test_shared_first_convolutions_equal_the_block_on_the_concatenation():
    """The decoder fuser's block 1 convolves the shared key features once for all objects: the same
    result as the block applied to `[x, g_o]` for each object o (checked in float64, so exactly up
    to rounding)."""
    torch.manual_seed(0)
    block = GroupResBlock(12, 8).double()
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)      # shared: B x Cx x H x W
    g = torch.randn(2, 3, 5, 5, 6, dtype=torch.float64)   # per object: B x O x Cg x H x W
    expected = block(broadcast_cat(x, g))
    assert torch.allclose(block.forward_shared(x, g), expected, rtol=0, atol=1e-12)
    swapped = block.forward_shared(x, g.flip(1))          # each object keeps its own result
    assert torch.allclose(swapped, expected.flip(1), rtol=0, atol=1e-12)
