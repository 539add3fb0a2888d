"""Shots: cut and cross-fade detection, shot lists, per-shot reset exactness, match confidence,
the errors users can cause, and the CLI report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from colormnet_core.config import MemoryConfig
from colormnet_core.errors import InputError
from colormnet_core.exemplars import EncodedExemplars, Exemplar
from colormnet_core.preprocess import ProcessingSize
from colormnet_core.session import ColorizeSession
from colormnet_core.shots import (
    Shot,
    ShotDetector,
    ShotDetectorConfig,
    detect_shots,
    keyframe_indices,
    needs_exemplar,
    parse_shots,
    shots_to_text,
)
from colormnet_core.video_io import FrameSource

from . import golden

SMALL = ProcessingSize("short_side", 64)


def moving_texture(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random colour field panning 3 px per frame, with per-frame noise: `n x 3 x h x w` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(1, 3, 12, 20, generator=g), size=(h + 60, w + 3 * n + 60),
                          mode="bicubic", align_corners=False)[0]
    return torch.stack([(field[:, 20:20 + h, 3 * t:3 * t + w] + 0.03 * torch.randn(3, h, w, generator=g)).clamp(0, 1)
                        for t in range(n)])


def drifting_discs(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Coloured discs drifting over a gradient, light noise: `n x 3 x h x w` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    centres, colours = torch.rand(6, 2, generator=g), torch.rand(6, 3, generator=g)
    radii = 0.05 + 0.15 * torch.rand(6, generator=g)
    frames = []
    for t in range(n):
        image = torch.stack([0.8 * yy, 0.3 + 0.4 * xx, 0.6 - 0.5 * yy * xx])
        for (cy, cx), colour, r in zip(centres, colours, radii):
            disc = (((yy - cy - 0.004 * t) ** 2 + (xx - cx + 0.006 * t) ** 2) < r ** 2).float()
            image = image * (1 - disc) + colour[:, None, None] * disc
        frames.append((image + 0.01 * torch.randn(3, h, w, generator=g)).clamp(0, 1))
    return torch.stack(frames)


def blackswan(h: int, w: int) -> torch.Tensor:
    frames = torch.stack(list(FrameSource(golden.BLACKSWAN / "frames"))).float() / 255     # 16 frames
    return F.interpolate(frames, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def four_source_clip():
    """64 frames: golden video 0-11 | cut | moving texture 12-27, 12-frame cross-fade to blackswan
    28-39, blackswan 40-51 | cut | drifting discs 52-63."""
    real = golden.frames().float() / 255
    h, w = real.shape[-2:]
    texture, swan, discs = moving_texture(28, h, w, 1), blackswan(h, w), drifting_discs(12, h, w, 2)
    alpha = torch.arange(1, 13) / 13
    fade = torch.stack([(1 - a) * texture[16 + i] + a * swan[i] for i, a in enumerate(alpha)])
    swan_tail = torch.cat([swan[12:16], swan[8:16].flip(0)])       # forward, then backward: one take
    return torch.cat([real, texture[:16], fade, swan_tail, discs])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_detection_finds_each_cut_at_its_frame_and_one_boundary_inside_the_cross_fade(four_source_clip, dtype):
    clip = (four_source_clip * 255).round().to(torch.uint8) if dtype == torch.uint8 else four_source_clip
    starts = keyframe_indices(detect_shots(clip))
    assert starts[:2] == [0, 12] and starts[-1] == 52 and len(starts) == 4, starts
    assert 28 <= starts[2] <= 39, f"cross-fade boundary {starts[2]} is outside frames 28-39"


def test_each_source_alone_is_one_shot(four_source_clip):
    for first, last in ((0, 11), (12, 27), (40, 51), (52, 63)):
        assert detect_shots(four_source_clip[first:last + 1]) == [Shot(0, last - first)]


def test_detector_streams_and_respects_min_shot_length():
    a, b = drifting_discs(1, 48, 64, 3)[0], moving_texture(1, 48, 64, 4)[0]
    frames = [a if (t // 3) % 2 == 0 else b for t in range(18)]        # a cut every 3 frames
    assert keyframe_indices(detect_shots(frames, min_shot_length=1)) == [0, 3, 6, 9, 12, 15]
    assert keyframe_indices(detect_shots(frames, min_shot_length=4)) == [0, 6, 12]
    detector = ShotDetector(ShotDetectorConfig(min_shot_length=1))
    answers = [detector.push(f.mean(0)) for f in frames]                # H x W luminance works too
    assert [t for t, new in enumerate(answers) if new] == [3, 6, 9, 12, 15]
    assert detector.finish(20) == [Shot(0, 2), Shot(3, 5), Shot(6, 8), Shot(9, 11), Shot(12, 14), Shot(15, 19)]
    with pytest.raises(InputError, match="C x H x W"):
        detector.push(torch.zeros(2, 48, 64))
    with pytest.raises(InputError, match="threshold"):
        ShotDetectorConfig(threshold=0)


def test_of_two_cuts_closer_than_min_shot_length_the_stronger_is_kept():
    """Finding of issue 23: a false cut at frame 79 (a flash, a fast pan) suppressed the real cut at 82, so
    the last shot's keyframe showed the previous scene. A ramp moved sideways by a fifth keeps its histogram
    (a weak cut, score 2 x 0.16); the ramp reversed is a strong one (score 1)."""
    ramp = torch.linspace(0, 1, 64).expand(32, 64)
    scene_a, shifted, scene_b = ramp, ramp.roll(13, dims=1), ramp.flip(1)
    frames = [scene_a] * 79 + [shifted] * 3 + [scene_b] * 20
    detector = ShotDetector(ShotDetectorConfig(min_shot_length=10))
    starts = [t for t, frame in enumerate(frames) if detector.push(frame)]
    assert starts == [79, 82]                    # streaming: each said as it came; 82 replaces 79
    assert detector.finish() == [Shot(0, 81), Shot(82, 101)] and detector.ignored_cuts == [79]
    # The other way round, a weaker cut after a strong one is the one dropped.
    frames = [scene_a] * 79 + [scene_b] * 3 + [scene_b.roll(13, dims=1)] * 20
    assert detect_shots(frames, min_shot_length=10) == [Shot(0, 78), Shot(79, 101)]


def test_parse_shots_and_text_round_trip():
    assert parse_shots("auto") == "auto" and parse_shots(" AUTO ") == "auto"
    assert parse_shots("none") is None and parse_shots("") is None
    shots = parse_shots("0-119, 120-300", total=301)
    assert shots == [Shot(0, 119), Shot(120, 300)]
    assert shots_to_text(shots) == "0-119,120-300" and keyframe_indices(shots) == [0, 120]
    for text, message in (("0-9,11-20", "gap"), ("0-9,9-20", "overlap"), ("0-9,x", "cannot read shot 'x'"),
                          ("0-9,20-10", "ends before it starts"), ("5-9", "starts at frame 5"),
                          ("0-9;10-20", "cannot read")):
        with pytest.raises(InputError, match=message):
            parse_shots(text)
    with pytest.raises(InputError, match="video has 400 frames"):
        parse_shots("0-119,120-300", total=400)


def test_needs_exemplar_flags_shots_without_one_and_long_low_stretches():
    shots = [Shot(0, 9), Shot(10, 19), Shot(20, 39)]
    confidence = [1.0] * 40
    confidence[10] = 0.3                    # shot 1 has no exemplar and its first frame matches badly
    confidence[25:31] = [0.2] * 6           # 6 low frames in shot 2: a stretch at min_run=5
    confidence[33:37] = [0.2] * 4           # too short
    assert needs_exemplar(shots, confidence, [0, 20], low=0.5, min_run=5) == [10, 25]
    assert needs_exemplar(shots, confidence, [0, 10, 20], low=0.5, min_run=7) == []
    # A shot with no exemplar pinned in it but coloured well (from a reference) needs none: a
    # reference-only run's frame 0 at 0.98 is not marked.
    confidence[10] = 0.98
    assert needs_exemplar(shots, confidence, [], low=0.5, min_run=7) == []


def test_needs_exemplar_flags_an_ignored_cut_followed_by_low_confidence_however_short():
    shots = [Shot(0, 39)]
    confidence = [1.0] * 40
    confidence[14:17] = [0.3] * 3           # 3 frames after the scene change at 13: far below min_run
    assert needs_exemplar(shots, confidence, [0], min_run=10, ignored_cuts=[13]) == [13]
    assert needs_exemplar(shots, confidence, [0], min_run=10, ignored_cuts=[30]) == []   # well matched
    assert needs_exemplar(shots, confidence, [0], min_run=10) == []


# -- sessions on the fixture network -------------------------------------------------------------

def _run(network, frames, exemplars, **options):
    session = ColorizeSession(network, EncodedExemplars(tuple(exemplars)), MemoryConfig(mem_every=2),
                              size=SMALL, **options)
    return list(session.run(frames)), session


@pytest.mark.slow
def test_each_shot_is_bit_identical_to_a_run_of_that_shot_alone(golden_network):
    real = golden.frames()[:3].float() / 255
    h, w = real.shape[-2:]
    clip = torch.cat([real, moving_texture(2, h, w, 5), drifting_discs(2, h, w, 6)])     # shots 0-2, 3-4, 5-6
    colour0, colour5 = golden.exemplar(), (drifting_discs(1, h, w, 6)[0] * 255).round().to(torch.uint8)
    reference = (moving_texture(1, h, w, 7)[0] * 255).round().to(torch.uint8)
    shots = [Shot(0, 2), Shot(3, 4), Shot(5, 6)]
    # Shot 0: pinned exemplar and reference; shot 1: the reference only; shot 2: its own pinned
    # exemplar. key_batch=2 puts the cut at frame 3 inside a batch of the continuous run.
    together, session = _run(golden_network, clip, [Exemplar(colour0, 0), Exemplar(colour5, 5), Exemplar(reference)],
                             shots=shots, key_batch=2)
    alone = []
    for shot, pinned in zip(shots, ([Exemplar(colour0, 0)], [], [Exemplar(colour5, 0)])):
        alone += _run(golden_network, clip[shot.first:shot.last + 1], [*pinned, Exemplar(reference)], key_batch=2)[0]
    for ours, theirs in zip(together, alone, strict=True):
        assert torch.equal(ours.ab, theirs.ab) and torch.equal(ours.rgb, theirs.rgb), f"frame {ours.index} differs"
        assert ours.confidence == theirs.confidence
    assert [r.shot for r in together] == [0, 0, 0, 1, 1, 2, 2]
    assert together[0].confidence == together[5].confidence == 1.0
    assert session.report()["shots"] == [[0, 2], [3, 4], [5, 6]]
    # Without the reset the second shot carries the first one's memory: the outputs differ.
    carried, _ = _run(golden_network, clip[:4], [Exemplar(colour0, 0), Exemplar(reference)], key_batch=2)
    assert not torch.equal(carried[3].ab, together[3].ab)


@pytest.mark.slow
def test_confidence_drops_in_a_shot_without_exemplar_and_the_report_flags_it(golden_network):
    real = golden.frames()[:5].float() / 255
    clip = torch.cat([real, drifting_discs(5, *real.shape[-2:], 8)])
    results, session = _run(golden_network, clip, [Exemplar(golden.exemplar(), 0)], shots="auto",
                            shot_config=ShotDetectorConfig(min_shot_length=2), reset_at_cuts=False)
    confidence = [r.confidence for r in results]
    first, second = sum(confidence[:5]) / 5, sum(confidence[5:]) / 5
    assert confidence[0] == 1.0 and all(0 <= c <= 1 for c in confidence)
    assert second < first - 0.15, f"shot 2 mean confidence {second:.3f} vs shot 1 {first:.3f}"
    report = json.loads(json.dumps(session.report()))
    assert report["shots"] == [[0, 4], [5, 9]] and len(report["confidence"]) == 10
    assert 5 in report["needs_exemplar"] and 0 not in report["needs_exemplar"]


def test_a_shot_without_exemplar_is_an_error_naming_it(golden_network):
    exemplar = golden.exemplar()
    with pytest.raises(InputError, match=r"shot 1 \(frames 4-9\) has no exemplar"):
        ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar, 0),)), shots=[Shot(0, 3), Shot(4, 9)])
    with pytest.raises(InputError, match=r"shot 1 \(frames 4-9\) starts at frame 4 .* pinned to frame 6"):
        ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar, 0), Exemplar(exemplar, 6))),
                        shots=[Shot(0, 3), Shot(4, 9)])
    # A reference colours every shot; without the reset the official carry-over needs nothing more.
    ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar, 0), Exemplar(exemplar))),
                    shots=[Shot(0, 3), Shot(4, 9)])
    ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar, 0),)), shots=[Shot(0, 3), Shot(4, 9)],
                    reset_at_cuts=False)


@pytest.mark.slow
def test_a_detected_cut_into_a_shot_without_exemplar_stops_at_the_cut(golden_network):
    real = golden.frames()[:2].float() / 255
    clip = torch.cat([real, drifting_discs(2, *real.shape[-2:], 9)])
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(golden.exemplar(), 0),)), size=SMALL,
                              shots="auto", shot_config=ShotDetectorConfig(min_shot_length=2))
    done = []
    with pytest.raises(InputError, match="cut was detected at frame 2"):
        done.extend(session.run(clip))
    assert [r.index for r in done] == [0, 1]


@pytest.mark.slow
def test_cli_writes_the_report(tmp_path, golden_checkpoint):
    import cv2

    real = golden.frames()[:3]
    discs = (drifting_discs(3, *real.shape[-2:], 10) * 255).round().to(torch.uint8)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(torch.cat([real, discs])):
        cv2.imwrite(str(frames_dir / f"{i:05d}.png"), frame.permute(1, 2, 0).numpy()[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "ex3.png"), discs[0].permute(1, 2, 0).numpy()[:, :, ::-1])
    base = [sys.executable, "-m", "colormnet_core", "colorize", "--input", str(frames_dir),
            "--exemplar", f"{golden.GOLDEN / 'inputs' / 'exemplar.png'}@0", "--exemplar", f"{tmp_path / 'ex3.png'}@3",
            "--output", str(tmp_path / "out"), "--checkpoint", str(golden_checkpoint), "--size", "64",
            "--device", "cpu"]
    bad = subprocess.run([*base, "--shots", "0-2,4-5"], capture_output=True, text=True, timeout=300, cwd=golden.REPO)
    assert bad.returncode == 1 and "gap" in bad.stderr and "Traceback" not in bad.stderr
    report_path = tmp_path / "report.json"
    result = subprocess.run([*base, "--shots", "0-2,3-5", "--report", str(report_path)], capture_output=True,
                            text=True, timeout=600, cwd=golden.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["shots"] == [[0, 2], [3, 5]]
    assert len(report["confidence"]) == 6 and report["confidence"][0] == report["confidence"][3] == 1.0
    assert all(0 <= c <= 1 for c in report["confidence"]) and report["needs_exemplar"] == []
    # Per shot: CDC, and no keyframe pop (both exemplars are on a shot's first frame).
    assert len(report["cdc"]) == 2 and all(c > 0 for c in report["cdc"]) and report["keyframe_pop"] == [[], []]
