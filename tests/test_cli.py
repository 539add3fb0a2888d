"""The standalone CLI end to end on the real blackswan clip (tests/data) with the fixture checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from colormnet_core.cli import parse_exemplar
from colormnet_core.color import rgb_to_lab
from colormnet_core.metrics import cdc, keyframe_pops
from colormnet_core.video_io import FrameSource, read_image

from . import golden
from .clips import make_clip, probe

BLACKSWAN = golden.BLACKSWAN


def test_exemplar_argument_syntax(tmp_path):
    assert parse_exemplar("a/b.png@12") == (tmp_path.__class__("a/b.png"), 12)
    assert parse_exemplar("a/b.png") == (tmp_path.__class__("a/b.png"), None)
    assert parse_exemplar("odd@name.png") == (tmp_path.__class__("odd@name.png"), None)


@pytest.mark.slow
def test_cli_colorizes_blackswan_frames(tmp_path, golden_checkpoint):
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    exemplar = BLACKSWAN / "exemplar" / "00000.png"
    cmd = [sys.executable, "-m", "colormnet_core", "colorize", "--input", str(BLACKSWAN / "frames"),
           "--exemplar", f"{exemplar}@0", "--exemplar", f"{exemplar}@8", "--output", str(out),
           "--checkpoint", str(golden_checkpoint), "--size", "112", "--device", "cpu", "--report", str(report_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=golden.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16 frames" in result.stderr
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == [p.stem for p in sorted((BLACKSWAN / "frames").glob("*.png"))]
    # The report's temporal metrics, computed while streaming, equal those of the PNGs it wrote.
    report = json.loads(report_path.read_text())
    frames = [read_image(p) for p in written]
    assert report["cdc"] == [pytest.approx(cdc(frames), abs=1e-6)] and report["cdc"][0] > 0
    expected_pops = keyframe_pops(frames, [0, 8])
    assert [p["frame"] for p in expected_pops] == [8]
    assert report["keyframe_pop"] == [[{k: pytest.approx(v, abs=1e-5) for k, v in expected_pops[0].items()}]]
    for name in ("00000", "00008", "00015"):
        ours, source = read_image(out / f"{name}.png"), read_image(BLACKSWAN / "frames" / f"{name}.png")
        assert ours.shape == source.shape == (3, 240, 416)
        l_ours = rgb_to_lab(ours[None].double() / 255)[0, 0]
        l_source = rgb_to_lab(source[None].double() / 255)[0, 0]
        # Same luminance up to out-of-gamut clipping (official output rule) and 8-bit rounding.
        assert (l_ours - l_source).abs().median() < 0.5
        assert rgb_to_lab(ours[None].double() / 255)[0, 1:].abs().mean() > 1     # it is in colour


def test_cli_reports_user_errors_without_traceback(tmp_path, golden_checkpoint):
    cmd = [sys.executable, "-m", "colormnet_core", "colorize", "--input", str(tmp_path / "missing"),
           "--exemplar", "x.png", "--output", str(tmp_path / "o"), "--checkpoint", str(golden_checkpoint)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=golden.REPO)
    assert result.returncode == 1
    assert result.stderr.startswith("error: input not found") and "Traceback" not in result.stderr


def test_frame_source_reads_folders_in_name_order_and_skips_hidden_files(tmp_path):
    import cv2
    import numpy as np

    for name in ("b.png", "a.png", ".hidden.png"):
        cv2.imwrite(str(tmp_path / name), np.full((4, 6, 3), ord(name[0]), np.uint8))
    source = FrameSource(tmp_path)
    assert source.names == ["a", "b"] and source.count == 2
    assert [int(f[0, 0, 0]) for f in source] == [ord("a"), ord("b")]
    assert torch.equal(read_image(tmp_path / "a.png"), next(iter(source)))


def run_cli(tmp_path, source, output, checkpoint, *extra):
    exemplar = tmp_path / "exemplar.png"
    if not exemplar.exists():
        import cv2
        import numpy as np

        cv2.imwrite(str(exemplar), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    cmd = [sys.executable, "-m", "colormnet_core", "colorize", "--input", str(source), "--exemplar", f"{exemplar}@0",
           "--output", str(output), "--checkpoint", str(checkpoint), "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=golden.REPO)


@pytest.mark.slow
def test_cli_mp4_with_audio_gives_h264_with_the_same_audio(tmp_path, golden_checkpoint):
    clip = make_clip(tmp_path / "film.mp4", frames=6, fps=12, audio_seconds=0.5)
    result = run_cli(tmp_path, clip, tmp_path / "out.mp4", golden_checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 frames" in result.stderr and "audio aac copied" in result.stderr
    before, after = probe(clip), probe(tmp_path / "out.mp4")
    assert after["video_codec"] == "h264" and after["pix_fmt"] == "yuv420p" and after["frames"] == 6
    assert after["audio_codec"] == "aac" and after["audio_bytes"] == before["audio_bytes"]
    assert abs(after["duration"] - before["duration"]) < 1 / 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exemplar.png", "film.mp4", "out.mp4"]


@pytest.mark.slow
def test_cli_webm_without_duration_gives_the_full_output(tmp_path, golden_checkpoint):
    clip = make_clip(tmp_path / "recording.webm", frames=7, fps=10, video_codec="libvpx", audio_codec="libopus",
                     audio_seconds=0.7, live=True)
    assert probe(clip)["duration"] is None
    result = run_cli(tmp_path, clip, tmp_path / "out.mp4", golden_checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    after = probe(tmp_path / "out.mp4")
    assert after["frames"] == 7 and after["audio_codec"] == "opus" and abs(after["duration"] - 0.7) < 0.1


def test_cli_refuses_an_image_renamed_mp4_with_one_message_and_no_output(tmp_path, golden_checkpoint):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "film.mp4.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "film.mp4.png").rename(tmp_path / "film.mp4")
    result = run_cli(tmp_path, tmp_path / "film.mp4", tmp_path / "out.mp4", golden_checkpoint)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'film.mp4'} is a single PNG image, not a video (renamed?). Give a video file or a "
        f"folder of frames; an image can be an exemplar."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exemplar.png", "film.mp4"]
