"""Metrics: PSNR/SSIM against scikit-image, the official uint8 wrap, CDC against TCVC's formula written
out here, the keyframe pop on a sequence with a known jump, and the evaluate command."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colormnet_core.__main__ import main
from colormnet_core.color import lab_to_rgb
from colormnet_core.metrics import (
    CDCAccumulator,
    ShotMetrics,
    cdc,
    keyframe_pops,
    psnr,
    psnr_uint8_wrap,
    ssim,
)

from .clips import make_clip


def random_pair(rng: np.random.Generator, height: int, width: int, noise: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) uint8 `H x W x 3`: a smooth picture and a noisy copy (noise=None: unrelated)."""
    gt = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 2)
    if noise is None:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), gt
    pred = np.clip(gt.astype(int) + rng.integers(-noise, noise + 1, gt.shape), 0, 255).astype(np.uint8)
    return pred, gt


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


@pytest.mark.parametrize("height, width, noise", [(7, 7, 40), (24, 31, 3), (48, 64, 25), (33, 20, None)])
def test_psnr_and_ssim_match_scikit_image_on_random_pairs(height, width, noise):
    rng = np.random.default_rng(height * width)
    for _ in range(3):
        pred, gt = random_pair(rng, height, width, noise)
        expected_psnr = peak_signal_noise_ratio(gt, pred, data_range=255)
        expected_ssim = structural_similarity(gt, pred, channel_axis=-1, data_range=255)
        assert abs(psnr(chw(pred), chw(gt)) - expected_psnr) < 1e-6
        assert abs(ssim(chw(pred), chw(gt)) - expected_ssim) < 1e-4
        # Float frames in [0, 1] are rounded to 8 bits first, as the writer saves them.
        assert abs(ssim(chw(pred).float() / 255, chw(gt)) - expected_ssim) < 1e-4


def test_psnr_of_identical_frames_is_infinite_and_ssim_is_one():
    frame = chw(random_pair(np.random.default_rng(1), 16, 16, 0)[1])
    assert psnr(frame, frame) == math.inf and ssim(frame, frame) == pytest.approx(1.0, abs=1e-12)


def official_psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    """The official evaluation's expression, applied to 8-bit arrays as its script loads them."""
    mse = ((gt - pred) ** 2).mean()
    return math.inf if mse == 0 else 20 * np.log10(255.0 / np.sqrt(mse))


def test_the_official_psnr_wraps_around_in_uint8_and_ours_does_not():
    rng = np.random.default_rng(5)
    pred, gt = random_pair(rng, 24, 32, 60)
    ours, wrapped = psnr(chw(pred), chw(gt)), psnr_uint8_wrap(chw(pred), chw(gt))
    assert wrapped == pytest.approx(official_psnr(gt, pred), abs=1e-9)
    assert wrapped > ours + 3          # errors of 16 or more wrap to small squares: a flattering number
    # Every value 16 levels off: MSE 256, i.e. 24.05 dB; in uint8, 16 * 16 = 256 wraps to 0, "perfect".
    off = np.clip(gt.astype(int) + 16, 0, 255).astype(np.uint8)
    gt_low = off - 16
    assert psnr(chw(off), chw(gt_low)) == pytest.approx(10 * math.log10(255**2 / 256), abs=1e-9)
    assert psnr_uint8_wrap(chw(off), chw(gt_low)) == math.inf == official_psnr(gt_low, off)
    # One level too dark: -1 wraps to 255, whose square wraps to 1, so only here do both agree.
    assert psnr_uint8_wrap(chw(gt_low), chw(off - 15)) == pytest.approx(psnr(chw(gt_low), chw(off - 15)))


def tcvc_histograms(frame: np.ndarray) -> list[np.ndarray]:
    """Per channel: the count of each of the 256 levels over H*W."""
    return [np.bincount(frame[..., c].ravel(), minlength=256) / frame[..., c].size for c in range(3)]


def tcvc_js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence, natural log, 0 log 0 = 0."""
    m = (p + q) / 2
    return 0.5 * sum(p[i] * np.log(p[i] / m[i]) for i in range(256) if p[i] > 0) + \
        0.5 * sum(q[i] * np.log(q[i] / m[i]) for i in range(256) if q[i] > 0)


def tcvc_cdc(frames: list[np.ndarray]) -> float:
    """TCVC's CDC written out: per channel, JS divergence between the histograms of frames t and t+d;
    mean over t for each d in (1, 2, 4); the three offsets weighted 1/3; then the mean of the channels."""
    hists = [tcvc_histograms(f) for f in frames]
    per_channel = [sum(np.mean([tcvc_js(hists[t][c], hists[t + d][c]) for t in range(len(frames) - d)]) / 3
                       for d in (1, 2, 4)) for c in range(3)]
    return float(np.mean(per_channel))


def drifting_frames(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (12, 10, 3))
    return [np.clip(base + 6 * t + rng.integers(0, 9, base.shape), 0, 255).astype(np.uint8) for t in range(count)]


def test_cdc_matches_tcvc_formula_and_streams():
    frames = drifting_frames(9, 2)
    expected = tcvc_cdc(frames)
    assert expected > 0.05
    acc = CDCAccumulator()
    for f in frames:
        acc.add(chw(f))
    assert acc.value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert cdc(chw(f).float() / 255 for f in frames) == pytest.approx(expected, rel=1e-9)
    assert len(acc._recent) == 4          # bounded: only the last four frames' histograms are kept
    # A still clip is perfectly consistent; a single frame has no CDC.
    assert cdc([chw(frames[0])] * 6) == 0.0 and cdc([chw(frames[0])]) is None


def test_cdc_of_a_clip_too_short_for_offset_4_averages_the_offsets_it_has():
    frames = drifting_frames(3, 3)
    acc = CDCAccumulator()
    for f in frames:
        acc.add(chw(f))
    h = [tcvc_histograms(f) for f in frames]
    # Offset 1: the mean over its two pairs; offset 2: its one pair; offset 4 does not fit, so it is left out.
    expected = np.mean([(np.mean([tcvc_js(h[0][c], h[1][c]), tcvc_js(h[1][c], h[2][c])])
                         + tcvc_js(h[0][c], h[2][c])) / 2 for c in range(3)])
    assert acc.value == pytest.approx(expected, rel=1e-9)


def uniform_lab_frames(a_values: list[float], size: int = 8) -> list[torch.Tensor]:
    """Uniformly coloured uint8 frames of CIELAB (60, a, 10), one per a value."""
    out = []
    for a in a_values:
        lab = torch.tensor([60.0, a, 10.0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, size, size)
        out.append((lab_to_rgb(lab, compute_dtype=torch.float64)[0].clamp(0, 1) * 255).round().to(torch.uint8))
    return out


def test_keyframe_pop_measures_a_known_jump_and_leaves_the_exemplar_frame_out():
    # Chroma drifts by 1 per frame; at frame 6 the colours jump by 12 (a keyframe that snaps).
    a = [float(t) + (12.0 if t >= 6 else 0.0) for t in range(12)]
    pops = keyframe_pops(uniform_lab_frames(a), pinned=[0, 6, 11])
    assert [p["frame"] for p in pops] == [6]           # frames 0 and 11 lack a neighbour on one side
    assert pops[0]["median_change"] == pytest.approx(2.0, abs=0.3)
    assert pops[0]["change"] == pytest.approx(14.0, abs=0.5)
    assert pops[0]["pop"] == pytest.approx(7.0, abs=0.8)
    # No jump, but the exemplar's own frame is far off (it shows the exemplar): no pop.
    spike = [float(t) + (40.0 if t == 6 else 0.0) for t in range(12)]
    assert keyframe_pops(uniform_lab_frames(spike), pinned=[6])[0]["pop"] == pytest.approx(1.0, abs=0.2)


def test_shot_metrics_restart_at_every_shot():
    a = [float(t) for t in range(6)] + [40.0 + t + (10.0 if t >= 3 else 0.0) for t in range(6)]
    frames = uniform_lab_frames(a)
    metrics = ShotMetrics([0, 6, 9])
    for i, frame in enumerate(frames):
        metrics.add(i, 0 if i < 6 else 1, frame)
    first, second = metrics.per_shot()
    assert first["keyframe_pop"] == [] and [p["frame"] for p in second["keyframe_pop"]] == [9]
    assert second["keyframe_pop"][0]["pop"] == pytest.approx(6.0, abs=0.8)   # (10 + 2) / 2
    assert first["cdc"] == pytest.approx(cdc(frames[:6]), abs=1e-6)
    assert second["cdc"] == pytest.approx(cdc(frames[6:]), abs=1e-6)


def write_frames(folder, frames: list[np.ndarray]):
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), f[:, :, ::-1])
    return folder


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_folders_json_and_table(tmp_path, capsys):
    rng = np.random.default_rng(7)
    pairs = [random_pair(rng, 24, 32, 20) for _ in range(10)]
    pred = write_frames(tmp_path / "pred", [p for p, _ in pairs])
    gt = write_frames(tmp_path / "gt", [g for _, g in pairs])
    code, out, _ = run_main(capsys, pred, gt, "--json", "--keyframes", "3")
    assert code == 0
    result = json.loads(out)
    per_psnr = [peak_signal_noise_ratio(g, p, data_range=255) for p, g in pairs]
    assert result["frames"] == 10 and result["shots"] == [[0, 9]]
    assert result["per_frame"]["psnr"] == pytest.approx(per_psnr, abs=1e-5)
    assert result["psnr"] == pytest.approx(np.mean(per_psnr), abs=1e-5)
    assert result["ssim"] == pytest.approx(np.mean(
        [structural_similarity(g, p, channel_axis=-1, data_range=255) for p, g in pairs]), abs=1e-5)
    assert result["cdc"] == pytest.approx(tcvc_cdc([p for p, _ in pairs]), abs=1e-6)
    assert result["cdc_gt"] == pytest.approx(tcvc_cdc([g for _, g in pairs]), abs=1e-6)
    assert [p["frame"] for p in result["per_shot"][0]["keyframe_pop"]] == [3]
    code, out, _ = run_main(capsys, pred, gt, "--json", "--shots", "0-4,5-9")
    by_shot = json.loads(out)
    assert by_shot["shots"] == [[0, 4], [5, 9]] and len(by_shot["per_shot"]) == 2
    assert [s["cdc"] for s in by_shot["per_shot"]] == pytest.approx(
        [tcvc_cdc([p for p, _ in pairs[:5]]), tcvc_cdc([p for p, _ in pairs[5:]])], abs=1e-6)
    assert by_shot["cdc"] == pytest.approx(np.mean([s["cdc"] for s in by_shot["per_shot"]]), abs=1e-6)
    code, out, _ = run_main(capsys, pred, gt, "--keyframes", "3")
    assert code == 0 and "PSNR (dB)" in out and "SSIM" in out and "CDC" in out and "pop @ 3" in out


def test_evaluate_refuses_different_counts_and_sizes(tmp_path, capsys):
    frames = drifting_frames(4, 1)
    gt = write_frames(tmp_path / "gt", frames)
    fewer = write_frames(tmp_path / "fewer", frames[:3])
    smaller = write_frames(tmp_path / "smaller", [f[:8] for f in frames])
    code, out, err = run_main(capsys, fewer, gt)
    assert code == 1 and out == "" and err.startswith(f"error: {fewer} has 3 frames but {gt} has 4;")
    code, _, err = run_main(capsys, smaller, gt)
    assert code == 1 and "frame 0:" in err and "is 10x8 but" in err and "is 10x12" in err
    code, _, err = run_main(capsys, gt, gt, "--keyframes", "4")
    assert code == 1 and "keyframe 4 is past the last frame (3)" in err


def test_evaluate_videos(tmp_path, capsys):
    clip = make_clip(tmp_path / "gt.mp4", frames=6, size=(32, 24), audio_codec=None)
    short = make_clip(tmp_path / "short.mp4", frames=5, size=(32, 24), audio_codec=None)
    code, out, _ = run_main(capsys, clip, clip, "--json")
    result = json.loads(out)
    assert code == 0 and result["frames"] == 6 and result["identical_frames"] == 6
    assert result["psnr"] is None and result["per_frame"]["psnr"] == [None] * 6 and result["ssim"] == 1.0
    assert result["cdc"] == result["cdc_gt"] > 0
    # The count of a video is found by reading it to its end.
    code, _, err = run_main(capsys, short, clip)
    assert code == 1 and f"{short} has 5 frames but {clip} has 6" in err


def test_lpips_without_a_library_says_what_to_install(monkeypatch):
    import sys

    from colormnet_core.errors import ColorMNetError
    from colormnet_core.perceptual import LPIPS

    for name in ("torchmetrics", "torchmetrics.image", "torchmetrics.image.lpip", "pyiqa"):
        monkeypatch.setitem(sys.modules, name, None)     # import fails as if not installed
    with pytest.raises(ColorMNetError, match="LPIPS needs torchmetrics .* or pyiqa, and neither is installed"):
        LPIPS()


def test_lpips_offline_gives_a_clear_error(monkeypatch):
    import sys
    import types
    import urllib.error

    from colormnet_core.perceptual import LPIPS, MetricUnavailableError

    def offline(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    fake = types.ModuleType("torchmetrics.image.lpip")
    fake.LearnedPerceptualImagePatchSimilarity = offline
    monkeypatch.setitem(sys.modules, "torchmetrics", types.ModuleType("torchmetrics"))
    monkeypatch.setitem(sys.modules, "torchmetrics.image", types.ModuleType("torchmetrics.image"))
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", fake)
    with pytest.raises(MetricUnavailableError, match="downloads the network weights on first use") as e:
        LPIPS()
    assert "URLError" in str(e.value) and "name resolution" in str(e.value)
