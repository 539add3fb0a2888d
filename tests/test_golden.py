"""End-to-end parity with the official pipeline: the four golden configurations (CPU, float32).

Tolerances from the fixture's README (tests/data/README.md): ab max abs <= 5e-5 and mean abs <= 5e-6 per
frame; 8-bit PNG within +-1 level with at most 0.1 % of values differing.
"""

from __future__ import annotations

import pytest
import torch

from colormnet_core import memory as memory_module
from colormnet_core.color import to_uint8_truncate
from colormnet_core.config import MemoryConfig
from colormnet_core.exemplars import EncodedExemplars, Exemplar
from colormnet_core.session import ColorizeSession

from . import golden

pytestmark = pytest.mark.slow


# Frames where the official top-k choice sits on a near-tie: the 30th and 31st memory similarities of
# one query pixel differ by ~3e-6, below float32 drift in the keys, so either implementation may pick
# either element. The test checks that such a tie is really there (gap below TIE_GAP) and bounds the
# local effect; every other frame must meet the README tolerances.
KNOWN_TIES = {("C_any_exemplar", 11)}
TIE_GAP = 1e-5


def run_config(network, name: str, monkeypatch=None, **session_options):
    cfg = golden.configs()[name]
    options = cfg["options"]
    frame = None if options["FirstFrameIsNotExemplar"] else 0
    exemplars = EncodedExemplars((Exemplar(golden.load_png(golden.GOLDEN / cfg["exemplar"]), frame),))
    events, sizes, gaps = [], [], []
    if monkeypatch is not None:
        original = memory_module.top_k_affinity

        def recording(sim, top_k):
            values = torch.topk(sim, k=min(top_k + 1, sim.shape[1]), dim=1).values
            gaps.append((values[0, top_k - 1] - values[0, top_k]).abs().min().item())
            return original(sim, top_k)

        monkeypatch.setattr(memory_module, "top_k_affinity", recording)
    session = ColorizeSession(network, exemplars, MemoryConfig.from_official_options(options),
                              on_memory_event=lambda kind, info: events.append((kind, info)), **session_options)

    def record(result):
        s = session.memory.stats
        sizes.append((s.permanent + s.working, s.long_term))

    results = list(session.run(golden.frames(), on_frame=record))
    return results, events, sizes, gaps


@pytest.fixture(scope="module", params=golden.CONFIG_NAMES)
def config_run(request, golden_network):
    with pytest.MonkeyPatch.context() as mp:
        # One frame per key batch, so that memory sizes read in on_frame belong to that frame.
        results, events, sizes, gaps = run_config(golden_network, request.param, monkeypatch=mp, key_batch=1)
    # Frame 0 of the first-frame path reads no memory; align read gaps with frame indices.
    reads = {r.index: g for r, g in zip(results[len(results) - len(gaps):], gaps)}
    return request.param, results, events, sizes, reads


def test_ab_matches_official_every_frame(config_run):
    name, results, _, _, reads = config_run
    expected = golden.expected_ab(name)
    assert len(results) == len(expected) == 12
    for result in results:
        ref = expected[f"{result.index:05d}"]
        diff = (result.ab.float() - ref).abs()
        if (name, result.index) in KNOWN_TIES:
            assert reads[result.index] < TIE_GAP, "the recorded near-tie is gone: remove it from KNOWN_TIES"
            assert diff.max() <= 1e-2 and diff.mean() <= 5e-4
            # CBAM's global pooling spreads a local flip thinly over the frame; visible changes stay local
            # (measured: 3.8 % of values beyond 1e-3, max 3.8e-3).
            assert (diff > 1e-3).float().mean() <= 0.06, "a tie flip changes a few cells, not the frame"
            continue
        assert diff.max() <= 5e-5, f"{name} frame {result.index}: max |ab diff| {diff.max():.2e}"
        assert diff.mean() <= 5e-6, f"{name} frame {result.index}: mean |ab diff| {diff.mean():.2e}"


def test_png_matches_official_every_frame(config_run):
    name, results, _, _, _ = config_run
    for result in results:
        ours = to_uint8_truncate(result.rgb)
        ref = golden.expected_png(name, result.index)
        assert ours.shape == ref.shape
        diff = (ours.int() - ref.int()).abs()
        if (name, result.index) in KNOWN_TIES:
            assert diff.max() <= 3 and (diff > 0).float().mean() <= 0.03
            continue
        assert diff.max() <= 1, f"{name} frame {result.index}: a value differs by {diff.max()} levels"
        assert (diff > 0).float().mean() <= 1e-3, f"{name} frame {result.index}: {(diff > 0).sum()} values differ"


def test_memory_sizes_follow_official(config_run):
    name, _, _, sizes, _ = config_run
    frames = golden.stats(name)["frames"]
    expected = [(f["work_mem_elems"], f["long_mem_elems"]) for f in frames]
    assert sizes == expected


def test_consolidation_happens_on_the_recorded_frames(config_run):
    name, _, events, _, _ = config_run
    stats = golden.stats(name)
    consolidated = [info["frame"] for kind, info in events if kind == "consolidate"]
    pruned = [(info["frame"], info["before"], info["after"]) for kind, info in events if kind == "prune"]
    assert consolidated == stats.get("consolidation_frames", [])
    assert pruned == [(r["ti"], r["before"], r["after"]) for r in stats.get("obsolete_removal_frames", [])]
    if name == "B_consolidation":
        assert consolidated == [2, 3, 4, 5, 6, 7, 8, 9, 10]   # the README's numbers, not only stats.json's


def test_batched_key_encoding_matches_unbatched(golden_network):
    one = run_config(golden_network, "A_release", key_batch=1)[0]
    many = run_config(golden_network, "A_release", key_batch=6)[0]
    for a, b in zip(one, many):
        assert (a.ab - b.ab).abs().max() <= 1e-5
