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


# Near-ties: where the k-th and (k+1)-th memory similarities of a query pixel are closer than float32
# drift in the keys (TIE_GAP), either top-k choice is right and which one is taken depends on the
# machine's BLAS kernels (measured: C frame 11 on one machine, A/B frame 1 on another, gaps 1.2e-6 and
# 3.5e-6). Such a frame may differ by a few levels on a few pixels, and the frames after it a little
# (hidden state and memory carry the flip, fading within a few frames). The test finds the ties itself
# by recording every read's smallest gap, and asserts that any difference beyond the fixture
# tolerances is confined to a near-tie frame or its aftermath; every other frame meets the tolerances.
TIE_GAP = 1e-5


def strict_ok(diff) -> bool:
    return bool(diff.max() <= 5e-5 and diff.mean() <= 5e-6)


def tie_flips(name: str, results, reads: dict[int, float]) -> set[int]:
    """Frames whose top-k read sat on a near-tie and whose output is outside the strict tolerance."""
    expected = golden.expected_ab(name)
    return {r.index for r in results if reads.get(r.index, 1.0) < TIE_GAP
            and not strict_ok((r.ab.float() - expected[f"{r.index:05d}"]).abs())}


def tie_status(flips: set[int], index: int) -> str:
    """'tie' at a flipped near-tie frame, 'after' once one happened earlier, else 'clean'."""
    if index in flips:
        return "tie"
    return "after" if any(i < index for i in flips) else "clean"


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
    flips = tie_flips(name, results, reads)
    for result in results:
        ref = expected[f"{result.index:05d}"]
        diff = (result.ab.float() - ref).abs()
        status = tie_status(flips, result.index)
        where = f"{name} frame {result.index} ({status})"
        if status == "tie":
            # CBAM's global pooling spreads a local flip thinly over the frame; visible changes stay local
            # (measured on two machines: max 1.2e-2, mean 2.7e-4, <= 6.6 % of values beyond 1e-3).
            assert diff.max() <= 2e-2 and diff.mean() <= 5e-4, f"{where}: {diff.max():.2e} / {diff.mean():.2e}"
            assert (diff > 1e-3).float().mean() <= 0.1, f"{where}: a tie flip changes a few cells, not the frame"
        elif status == "after":
            assert diff.max() <= 1e-3 and diff.mean() <= 5e-5, f"{where}: {diff.max():.2e} / {diff.mean():.2e}"
        else:
            assert diff.max() <= 5e-5, f"{where}: max |ab diff| {diff.max():.2e}"
            assert diff.mean() <= 5e-6, f"{where}: mean |ab diff| {diff.mean():.2e}"


def test_png_matches_official_every_frame(config_run):
    name, results, _, _, reads = config_run
    flips = tie_flips(name, results, reads)
    for result in results:
        ours = to_uint8_truncate(result.rgb)
        ref = golden.expected_png(name, result.index)
        assert ours.shape == ref.shape
        diff = (ours.int() - ref.int()).abs()
        status = tie_status(flips, result.index)
        where = f"{name} frame {result.index} ({status})"
        if status == "tie":      # a few levels on a few pixels (measured: <= 7 levels on <= 3 % of values)
            assert diff.max() <= 8 and (diff > 0).float().mean() <= 0.05, f"{where}: {diff.max()} levels"
            continue
        share = 5e-3 if status == "after" else 1e-3
        assert diff.max() <= 1, f"{where}: a value differs by {diff.max()} levels"
        assert (diff > 0).float().mean() <= share, f"{where}: {(diff > 0).sum()} values differ"


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
        # Batching changes BLAS blocking: float rounding only (measured up to 1.25e-5), within the
        # fixture's tolerance; a changed computation or a flipped tie shows as >= 1e-3.
        diff = (a.ab - b.ab).abs()
        assert diff.max() <= 5e-5 and diff.mean() <= 5e-6
