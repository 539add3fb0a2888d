"""Colour conversion against the published sRGB/CIE-Lab formulas evaluated in float64 (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colormnet_core.color import (
    denormalize_lab,
    fit_chroma_to_gamut,
    lab_to_rgb,
    normalize_lab,
    rgb_to_lab,
    to_uint8_truncate,
)
from colormnet_core.errors import InputError

M = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
WHITE = np.array([0.95047, 1.0, 1.08883])


def ref_rgb_to_lab(rgb):
    """rgb: ... x 3 float64 in [0, 1] (channels last)."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    t = lin @ M.T / WHITE
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ref_lab_to_rgb(lab):
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([lab[..., 1] / 500 + fy, fy, np.maximum(fy - lab[..., 2] / 200, 0)], -1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787) * WHITE
    lin = xyz @ np.linalg.inv(M).T
    return np.clip(np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin), 0, 1)


def chw(x):
    return torch.from_numpy(np.moveaxis(x, -1, -3).copy())


def samples():
    rng = np.random.default_rng(0)
    grey = np.repeat(np.arange(256)[:, None], 3, 1)[None] / 255
    image = rng.integers(0, 256, (64, 64, 3)) / 255
    corners = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]]
    anchors = np.array([corners], float)
    return [grey, image, anchors]


@pytest.mark.parametrize("index", range(3))
def test_rgb_to_lab_matches_the_formulas(index):
    rgb = samples()[index]
    ref = ref_rgb_to_lab(rgb)
    ours32 = rgb_to_lab(chw(rgb).float(), compute_dtype=torch.float32)
    ours64 = rgb_to_lab(chw(rgb))
    assert (ours32.double() - chw(ref)).abs().max() <= 1e-4
    assert (ours64 - chw(ref)).abs().max() <= 1e-9


def test_known_anchors():
    lab = rgb_to_lab(torch.tensor([[[1.0]], [[1.0]], [[1.0]]], dtype=torch.float64))[:, 0, 0]
    # This matrix's rows give white a, b of about -0.0025, 0.0047 (as scikit-image does).
    assert abs(lab[0] - 100) < 1e-3 and lab[1:].abs().max() < 1e-2
    red = rgb_to_lab(torch.tensor([[[1.0]], [[0.0]], [[0.0]]], dtype=torch.float64))[:, 0, 0]
    assert torch.allclose(red, torch.tensor([53.2408, 80.0925, 67.2032], dtype=torch.float64), atol=2e-3)


def test_lab_to_rgb_matches_the_formulas_and_round_trips():
    rgb = samples()[1]
    lab = ref_rgb_to_lab(rgb)
    back = lab_to_rgb(chw(lab), compute_dtype=torch.float64)
    assert (back - chw(rgb)).abs().max() <= 1e-5
    wild = np.array([[[50, 120, -120], [20, -100, 120], [90, 0, 250], [0, 0, 0]]], float)
    ours = lab_to_rgb(chw(wild), compute_dtype=torch.float64)
    assert torch.isfinite(ours).all() and ours.min() >= 0 and ours.max() <= 1
    assert (ours - chw(ref_lab_to_rgb(wild))).abs().max() <= 1e-5
    assert (lab_to_rgb(chw(wild).float()).double() - ours).abs().max() <= 1e-4   # float32 default


def test_official_normalisation_and_its_float32_inverse():
    lab = torch.tensor([[[37.3]], [[-12.5]], [[60.1]]])
    norm = normalize_lab(lab)
    assert torch.equal(norm[:, 0, 0], torch.stack([(lab[0, 0, 0] - 50) / 50, lab[1, 0, 0] / 110, lab[2, 0, 0] / 110]))
    x = torch.linspace(-1, 1, 2001)
    official = (x + 1) / torch.tensor(1 / 50, dtype=torch.float32)
    ours = denormalize_lab(torch.stack([x, x, x]).view(3, -1, 1))[0, :, 0]
    assert torch.equal(ours, official)
    assert not torch.equal(official, x * 50 + 50)       # the division really differs from x*50 somewhere


def test_truncating_quantisation():
    assert to_uint8_truncate(torch.tensor([0.999, 1.0, -0.1, 0.5, 1.5])).tolist() == [254, 255, 0, 127, 255]


def test_layouts_and_channel_errors():
    batch = torch.rand(2, 3, 4, 5)
    assert torch.equal(rgb_to_lab(batch)[1], rgb_to_lab(batch[1]))
    with pytest.raises(InputError, match="3 channels"):
        rgb_to_lab(torch.rand(4, 4, 5))


def test_gamut_fit_keeps_luminance_and_leaves_in_gamut_colours_alone():
    lab = torch.tensor([[[30.0, 70.0, 50.0]], [[90.0, -100.0, 10.0]], [[-90.0, 100.0, 5.0]]], dtype=torch.float64)
    fitted = fit_chroma_to_gamut(lab)
    assert torch.equal(fitted[0], lab[0])
    rgb = lab_to_rgb(fitted, compute_dtype=torch.float64)
    assert (rgb_to_lab(rgb)[0] - lab[0]).abs().max() < 0.05
    clipped_l = rgb_to_lab(lab_to_rgb(lab, compute_dtype=torch.float64))[0]
    assert (clipped_l - lab[0]).abs().max() > 1                       # clipping would have changed L
    inside = rgb_to_lab(torch.rand(3, 8, 8, dtype=torch.float64))
    assert torch.equal(fit_chroma_to_gamut(inside), inside)
