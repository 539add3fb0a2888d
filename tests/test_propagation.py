"""Bidirectional propagation between exemplars (propagation.py), its buffers (spill.py) and the RGB
rebuild (compose.py): exactness against plain sessions, and fewer keyframe pops on a made clip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from colormnet_core import propagation
from colormnet_core.color import rgb_to_lab
from colormnet_core.compose import compose_rgb
from colormnet_core.errors import InputError
from colormnet_core.exemplars import EncodedExemplars, Exemplar
from colormnet_core.preprocess import ProcessingSize
from colormnet_core.propagation import colorize_shot, make_session
from colormnet_core.session import ColorizeSession
from colormnet_core.shots import Shot
from colormnet_core.spill import SpillBuffer

from . import golden

SMALL = ProcessingSize("short_side", 112)
KEYS = (0, 8, 16)


def panning_clip(frames: int, step: int = 2) -> torch.Tensor:
    """A camera pan over the blackswan exemplar: colour frames `T x 3 x 160 x 224` uint8, so every
    frame's true colours are known and any frame can be a true keyframe exemplar."""
    image = golden.load_png(golden.BLACKSWAN / "exemplar" / "00000.png")      # 3 x 240 x 416
    return torch.stack([image[:, 40:200, step * i:step * i + 224] for i in range(frames)])


def chroma(results) -> torch.Tensor:
    """Lab (a, b) of the 8-bit outputs, `T x 2 x H x W`."""
    rgb8 = (torch.stack([r.rgb for r in results]) * 255).round()
    return rgb_to_lab(rgb8.double() / 255)[:, 1:]


def keyframe_pops(results, keys) -> list[float]:
    """Chroma change from frame k-1 to k+1 across each inner keyframe k, over the clip's median
    two-frame change (k's own frame shows the exemplar and is left out)."""
    ab = chroma(results)
    change = [(ab[t + 1] - ab[t - 1]).abs().mean().item() for t in range(1, len(ab) - 1)]
    median = float(np.median(change))
    return [(ab[k + 1] - ab[k - 1]).abs().mean().item() / median for k in keys[1:-1]]


def cdc(results) -> float:
    """Colour distribution consistency (TCVC): Jensen-Shannon divergence of per-channel 256-bin
    histograms of the 8-bit frames t and t + d, averaged over channels and frames, then over d = 1, 2, 4."""
    rgb8 = (torch.stack([r.rgb for r in results]) * 255).round().to(torch.uint8).numpy()
    hist = np.stack([[np.bincount(f[c].ravel(), minlength=256) / f[c].size for c in range(3)] for f in rgb8])

    def js(p, q):
        m = (p + q) / 2
        kl = lambda a: (a * np.log(np.where(a > 0, a, 1) / np.where(a > 0, m, 1))).sum(-1)   # noqa: E731 - 0 log 0 = 0
        return 0.5 * kl(p) + 0.5 * kl(q)

    return float(np.mean([js(hist[:-d], hist[d:]).mean() for d in (1, 2, 4)]))


def pinned(clip, keys) -> EncodedExemplars:
    return EncodedExemplars(tuple(Exemplar(clip[k], k) for k in keys))


# -- buffers and RGB rebuild ---------------------------------------------------------------------

@pytest.mark.parametrize("ram_limit", [0, 10**9])
def test_spill_buffer_gives_back_the_bits_it_was_given(tmp_path, ram_limit):
    items = [torch.randn(2, 5, 7) for _ in range(4)]
    with SpillBuffer(ram_limit=ram_limit, directory=tmp_path) as buffer:
        for item in items:
            buffer.append(item)
        buffer[2] = items[2] * 3
        assert buffer.spilled == (ram_limit == 0) and len(buffer) == 4 and buffer.nbytes == 4 * 2 * 5 * 7 * 4
        assert all(torch.equal(buffer[i], items[i] * (3 if i == 2 else 1)) for i in range(4))
        with pytest.raises(InputError, match="different shapes"):
            buffer.append(torch.zeros(2, 5, 8))


def test_spill_buffer_moves_to_disk_only_past_its_limit(tmp_path):
    frame = torch.arange(300, dtype=torch.uint8).reshape(3, 10, 10)
    with SpillBuffer(ram_limit=2 * frame.numel(), directory=tmp_path) as buffer:
        buffer.append(frame)
        buffer.append(frame + 1)
        assert not buffer.spilled
        buffer.append(frame + 2)
        assert buffer.spilled and [int(f[0, 0, 0]) for f in buffer] == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("gamut", ["clip", "keep_luminance"])
def test_compose_rgb_rebuilds_the_sessions_output_bit_for_bit(golden_network, gamut):
    clip = panning_clip(3)
    results = list(ColorizeSession(golden_network, pinned(clip, [0]), size=SMALL, gamut=gamut).run(clip))
    rgb = compose_rgb(clip, torch.stack([r.ab for r in results]), gamut=gamut)
    assert torch.equal(rgb, torch.stack([r.rgb for r in results]))


# -- exactness -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_backward_pass_is_a_forward_run_over_the_reversed_stretch(golden_network, monkeypatch):
    clip = panning_clip(10)
    keys = (0, 4, 8)
    monkeypatch.setattr(propagation, "backward_weight", lambda *args: 1.0)      # backward pass only
    streamed = (frame for frame in clip)                                         # buffered, spilled to disk
    out = list(colorize_shot(golden_network, streamed, pinned(clip, keys), propagation="bidirectional",
                             size=SMALL, ram_limit=0))
    reverse = EncodedExemplars(tuple(Exemplar(clip[k], keys[-1] - k) for k in keys))
    expected = list(ColorizeSession(golden_network, reverse, size=SMALL).run(clip[keys[0]:keys[-1] + 1].flip(0)))
    assert [r.index for r in out] == list(range(10))
    for result in out[keys[0]:keys[-1] + 1]:
        twin = expected[keys[-1] - result.index]
        assert torch.equal(result.ab, twin.ab), f"frame {result.index}"
        assert torch.equal(result.rgb, twin.rgb), f"frame {result.index}"


@pytest.mark.slow
def test_one_exemplar_per_shot_is_forward_bit_for_bit(golden_network):
    clip = torch.cat([panning_clip(4), panning_clip(4).flip(-1)])
    shots = [Shot(0, 3), Shot(4, 7)]
    exemplars = pinned(clip, [0, 4])
    forward = list(ColorizeSession(golden_network, exemplars, size=SMALL, shots=shots).run(clip))
    session = make_session(golden_network, exemplars, size=SMALL, shots=shots, propagation="bidirectional")
    both = list(session.run(iter(clip)))
    for f, b in zip(forward, both, strict=True):
        assert (f.index, f.shot, f.confidence) == (b.index, b.shot, b.confidence)
        assert torch.equal(f.ab, b.ab) and torch.equal(f.rgb, b.rgb), f"frame {f.index}"
    assert session.report()["shots"] == [[0, 3], [4, 7]]


def test_bad_propagation_options_are_explained(golden_network):
    exemplars = pinned(panning_clip(1), [0])
    with pytest.raises(InputError, match="forward or bidirectional"):
        make_session(golden_network, exemplars, propagation="both")
    with pytest.raises(InputError, match="forward propagation only"):
        make_session(golden_network, exemplars, propagation="bidirectional", shots=[Shot(0, 3)], reset_at_cuts=False)
    with pytest.raises(InputError, match="bidirectional propagation only"):
        make_session(golden_network, exemplars, ram_limit=0)


# -- fewer pops ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_keyframes(golden_network):
    """Both modes on a 17-frame pan with true keyframe exemplars at frames 0, 8 and 16."""
    clip = panning_clip(KEYS[-1] + 1)
    return {mode: list(colorize_shot(golden_network, clip, pinned(clip, KEYS), propagation=mode, size=SMALL))
            for mode in ("forward", "bidirectional")}


@pytest.mark.slow
def test_bidirectional_shows_the_exemplars_at_their_frames(three_keyframes):
    forward, both = three_keyframes["forward"], three_keyframes["bidirectional"]
    for k in KEYS:
        assert torch.equal(both[k].ab, forward[k].ab) and torch.equal(both[k].rgb, forward[k].rgb)
        assert both[k].confidence == 1.0
    assert not torch.equal(both[KEYS[1] - 1].ab, forward[KEYS[1] - 1].ab)     # the blend did something


@pytest.mark.slow
def test_bidirectional_removes_the_keyframe_pop_without_losing_stability(three_keyframes):
    forward, both = three_keyframes["forward"], three_keyframes["bidirectional"]
    pops = {mode: keyframe_pops(results, KEYS) for mode, results in three_keyframes.items()}
    assert max(pops["bidirectional"]) <= 1.5, pops
    assert max(pops["bidirectional"]) < max(pops["forward"]), pops
    assert cdc(both) <= cdc(forward)


@pytest.mark.slow
def test_cli_takes_the_propagation(tmp_path, golden_checkpoint):
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    clip = panning_clip(5, step=4)
    for i, frame in enumerate(clip):
        cv2.imwrite(str(frames / f"{i:03d}.png"), frame.permute(1, 2, 0).numpy()[:, :, ::-1])
    cmd = [sys.executable, "-m", "colormnet_core", "colorize", "--input", str(frames), "--output", str(tmp_path / "o"),
           "--exemplar", f"{frames / '000.png'}@0", "--exemplar", f"{frames / '004.png'}@4",
           "--checkpoint", str(golden_checkpoint), "--size", "112", "--device", "cpu",
           "--propagation", "bidirectional", "--report", str(tmp_path / "r.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=golden.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "o").glob("*.png"))) == 5
    assert '"propagation": "bidirectional"' in (tmp_path / "r.json").read_text()
