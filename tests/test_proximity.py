"""Proximity-weighted matching: the references' total weight is kept, its split follows distance."""

from __future__ import annotations

import pytest
import torch

from colormnet_core.config import MemoryConfig
from colormnet_core.errors import InputError
from colormnet_core.memory import MFPMemory
from colormnet_core.proximity import proximity_weights


def top_k(n_mem=12, n_query=50, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    sim = -torch.rand(1, n_mem, n_query, generator=g) * 4
    values, indices = torch.topk(sim, k, dim=1)
    return values, indices


def test_weights_keep_the_references_share_and_favour_near_ones():
    values, indices = top_k()
    in_group = torch.zeros(12, dtype=torch.bool)
    in_group[:6] = True                                    # elements 0-5: references, 6-11: other memory
    distance = torch.tensor([0.0, 0.0, 10.0, 10.0, 20.0, 20.0] + [0.0] * 6)
    plain = torch.softmax(values, dim=1)
    group = in_group[indices]
    for alpha in (0.0, 0.5, 2.0):
        w = proximity_weights(values, indices, in_group, distance, alpha)
        assert torch.allclose(w.sum(1), torch.ones(1, 50), atol=1e-6)
        assert torch.allclose((w * group).sum(1), (plain * group).sum(1), atol=1e-6)   # references' share kept
        assert torch.equal(w[~group], plain[~group])                                  # others untouched
        if alpha == 0:
            assert torch.allclose(w, plain, atol=1e-6)
    near = (group & (distance[indices] == 0))
    weak, strong = (proximity_weights(values, indices, in_group, distance, a)[near].sum() for a in (0.5, 2.0))
    assert strong > weak > plain[near].sum()


def test_no_reference_in_the_top_k_or_all_at_one_distance_changes_nothing():
    values, indices = top_k()
    plain = torch.softmax(values, dim=1)
    nobody = torch.zeros(12, dtype=torch.bool)
    assert torch.equal(proximity_weights(values, indices, nobody, torch.zeros(12), 1.0), plain)
    everyone = torch.ones(12, dtype=torch.bool)
    same = proximity_weights(values, indices, everyone, torch.full((12,), 7.0), 1.0)
    assert torch.allclose(same, plain, atol=1e-6)   # every distance normalises to 1: a uniform shift


def test_memory_applies_it_to_references_given_at_frames_only():
    """Two references with the same key but different values, given at frames 0 and 10: read at frame 9,
    the bias moves the readout towards the reference of frame 10."""
    g = torch.Generator().manual_seed(1)
    key = torch.randn(1, 8, 2, 3, generator=g)
    shrinkage = torch.ones(1, 1, 2, 3)
    selection = torch.full((1, 8, 2, 3), 0.5)
    value_a, value_b = torch.zeros(1, 2, 4, 2, 3), torch.ones(1, 2, 4, 2, 3)
    readouts = {}
    for alpha in (0.0, 1.0):
        memory = MFPMemory(MemoryConfig(top_k=12, proximity_bias=alpha))
        memory.add_reference(key, shrinkage, value_a, tag=0)
        memory.add_reference(key + 0.01, shrinkage, value_b, tag=10)
        readouts[alpha] = memory.read(key, selection, frame_index=9)
        assert memory.stats.references == 12 and memory.stats.permanent == memory.stats.working == 0
    assert readouts[1.0].mean() > readouts[0.0].mean() + 0.05
    with pytest.raises(InputError, match="proximity_bias"):
        MemoryConfig(proximity_bias=-0.1)
    with pytest.raises(InputError, match="proximity_bias"):
        MemoryConfig(proximity_bias=float("nan"))


def test_like_cmnet2_derives_memory_from_the_video_length():
    c = MemoryConfig.like_cmnet2(8)
    assert (c.max_mid_term_frames, c.min_mid_term_frames, c.mem_every, c.num_prototypes) == (8, 4, 5, 128)
    assert c.permanent_exemplars is False and c.max_long_term_elements == 129   # CMNET2: 8, below P (see doc)
    long = MemoryConfig.like_cmnet2(5000, top_k=20, mem_every=12, proximity_bias=0.7)
    assert (long.max_mid_term_frames, long.min_mid_term_frames, long.mem_every) == (10, 5, 10)
    assert (long.max_long_term_elements, long.top_k, long.proximity_bias) == (1000, 20, 0.7)
    assert MemoryConfig.like_cmnet2(1).min_mid_term_frames == 1
