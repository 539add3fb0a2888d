"""Warnings for exemplars that are legal but probably wrong (thresholds measured on real clips)."""

from __future__ import annotations

import logging

import pytest
import torch

from colormnet_core.exemplar_checks import check_exemplar, check_exemplars, check_pinned
from colormnet_core.exemplars import Exemplar

from . import golden


def blackswan(kind: str, index: int) -> torch.Tensor:
    return golden.load_png(golden.BLACKSWAN / kind / f"{index:05d}.png")


def test_a_good_exemplar_gets_no_warning():
    exemplar, frames = golden.exemplar(), golden.frames()
    assert check_exemplar(exemplar, 0) == [] and check_pinned(exemplar, frames[0], 0) == []
    assert check_pinned(blackswan("exemplar", 0), blackswan("frames", 0), 0) == []
    # Float, RGBA and a different but same-aspect size are fine too.
    rgba = torch.cat([exemplar.float() / 255, torch.ones(1, *exemplar.shape[1:])])
    assert check_exemplar(rgba, 0) == [] and check_pinned(rgba[:, ::2, ::2], frames[0], 0) == []


def test_the_frame0_picture_pinned_later_in_the_shot_is_flagged():
    exemplar, frames = golden.exemplar(), golden.frames()
    flagged = [t for t in range(len(frames)) if check_pinned(exemplar, frames[t], t)]
    assert flagged == list(range(3, len(frames)))    # the scene has moved by frame 3 (correlation < 0.95)
    (message,) = check_pinned(exemplar, frames[10], 10)
    assert "frame 10" in message and "frame to -1" in message
    late = len(list((golden.BLACKSWAN / "frames").glob("*.png"))) - 1
    assert check_pinned(blackswan("exemplar", 0), blackswan("frames", late), late)
    mirrored = golden.load_png(golden.GOLDEN / "inputs" / "exemplar_mirrored.png")
    assert check_pinned(mirrored, frames[0], 0)


def test_another_aspect_ratio_is_flagged_with_the_fix():
    exemplar, frame = golden.exemplar(), golden.frames()[0]
    (aspect, *_) = check_pinned(exemplar[:, :, :185], frame, 0)
    assert "185x185" in aspect and "321x185" in aspect and "stretched" in aspect
    assert "Crop" in aspect and "frame = -1" in aspect
    # Within 3 %: no aspect warning (the luminance still matches).
    assert check_pinned(exemplar[:, :, :316], frame, 0) == []


def test_greyscale_and_tiny_exemplars_are_flagged():
    grey = golden.frames()[0]
    assert any("greyscale" in w for w in check_exemplar(grey, 0))
    assert any("greyscale" in w for w in check_exemplar(grey[:1], None))
    tiny = check_exemplar(torch.rand(3, 1, 1), None)
    assert any("1x1 pixels" in w for w in tiny)
    assert not any("pixels" in w for w in check_exemplar(torch.rand(3, 32, 48), None))


def test_check_exemplars_logs_each_warning_and_skips_unknown_frames(caplog):
    exemplar, frames = golden.exemplar(), golden.frames()
    exemplars = [Exemplar(exemplar, 0), Exemplar(exemplar, 10), Exemplar(torch.rand(3, 8, 8)), Exemplar(exemplar, 99)]
    with caplog.at_level(logging.WARNING):
        found = check_exemplars(exemplars, frame_at=lambda i: frames[i] if i < len(frames) else None)
    assert len(found) == 2 and "frame 10" in found[0] and "8x8" in found[1]
    assert [r.getMessage() for r in caplog.records] == [f"ColorMNet: {w}" for w in found]
    assert check_exemplars(exemplars[:2], frame_at=None) == []


@pytest.mark.parametrize("flat", ["frame", "exemplar"])
def test_flat_images_skip_the_luminance_check(flat):
    exemplar, frame = golden.exemplar(), golden.frames()[0]
    grey = torch.full_like(frame, 128)
    assert check_pinned(grey if flat == "exemplar" else exemplar, grey if flat == "frame" else frame, 0) == []
