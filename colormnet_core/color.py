"""sRGB <-> CIE Lab (D65, 2 degree observer) in torch, matching scikit-image's rgb2lab / lab2rgb.

The official pipeline converts with scikit-image: rgb2lab in float64 from 8-bit files (then cast
to float32), lab2rgb in float32 (scikit-image >= 0.19 keeps float32), then truncates to 8 bits.
The defaults here follow that, so 8-bit outputs agree with the official PNGs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputError

# sRGB primaries -> XYZ (the matrix scikit-image uses) and the D65 white.
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _check(x: Tensor, what: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise InputError(f"{what} must be (..., 3, H, W) with 3 channels, got shape {tuple(x.shape)}.")


def _default_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _mix(matrix: Tensor, x: Tensor) -> Tensor:
    """Apply a 3x3 matrix over the channel dim (-3)."""
    return torch.einsum("ij,...jhw->...ihw", matrix, x)


def rgb_to_lab(rgb: Tensor, *, compute_dtype: torch.dtype | None = None) -> Tensor:
    """sRGB `(..., 3, H, W)` in [0, 1] -> Lab (L in [0, 100], a and b about [-128, 127]).

    Computed in `compute_dtype` (default float64, float32 on MPS), returned in the input's floating
    dtype. The official pipeline converts 8-bit files in float64 and then casts to float32.
    """
    _check(rgb, "rgb")
    dtype = compute_dtype or _default_dtype(rgb)
    out_dtype = rgb.dtype if rgb.is_floating_point() else torch.float32
    x = rgb.to(dtype)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp(min=0) ** 2.4, x / 12.92)
    xyz = _mix(torch.tensor(_XYZ_FROM_RGB, dtype=dtype, device=x.device), linear)
    xyz = xyz / torch.tensor(_WHITE_D65, dtype=dtype, device=x.device).view(3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    lab = torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)
    return lab.to(out_dtype)


def lab_to_rgb(lab: Tensor, *, compute_dtype: torch.dtype | None = torch.float32) -> Tensor:
    """Lab `(..., 3, H, W)` -> sRGB in [0, 1], in scikit-image's order of operations.

    Negative Z (out-of-gamut Lab) is clamped to 0 and RGB clipped to [0, 1], silently. float32 by
    default, as scikit-image computes for float32 input (which the official code passes); float64
    gives rounding that differs from the official 8-bit outputs on ~0.1 % of values.
    """
    _check(lab, "lab")
    dtype = compute_dtype or lab.dtype
    x = lab.to(dtype)
    light, a, b = x.unbind(-3)
    fy = (light + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp(min=0)
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f > 0.2068966, f.pow(3.0), (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * torch.tensor(_WHITE_D65, dtype=torch.float64).to(dtype).to(x.device).view(3, 1, 1)
    inverse = torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)).to(dtype).to(x.device)
    linear = _mix(inverse, xyz)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=0) ** (1 / 2.4) - 0.055, linear * 12.92)
    return rgb.clamp(0, 1).to(lab.dtype if lab.is_floating_point() else torch.float32)


def quantize_to_uint8_levels(rgb: Tensor) -> Tensor:
    """Round [0, 1] floats to exact k/255 values in float64 (8-bit files are exactly these)."""
    return (rgb.to(torch.float64).clamp(0, 1) * 255).round() / 255


def normalize_lab(lab: Tensor) -> Tensor:
    """Lab -> the official network space (L', a', b') = ((L - 50)/50, a/110, b/110), computed like
    torchvision's Normalize (subtract, then divide) in the input dtype."""
    _check(lab, "lab")
    mean = torch.tensor([50.0, 0.0, 0.0], dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    std = torch.tensor([50.0, 110.0, 110.0], dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    return (lab - mean) / std


def denormalize_lab(lab_norm: Tensor) -> Tensor:
    """(L', a', b') -> Lab the official way: Normalize(mean=(-1, 0, 0), std=(1/50, 1/110, 1/110)),
    i.e. a division by float32(1/50) and float32(1/110), not a multiplication by 50 and 110."""
    _check(lab_norm, "normalised lab")
    x = lab_norm.float()
    mean = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor([1 / 50, 1 / 110, 1 / 110], dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_uint8_truncate(rgb: Tensor) -> Tensor:
    """[0, 1] float -> uint8 the official way: clip, x255, truncate toward zero (not round)."""
    return (rgb.clamp(0, 1) * 255).to(torch.uint8)


def fit_chroma_to_gamut(lab: Tensor, *, iterations: int = 12) -> Tensor:
    """Scale each pixel's (a, b) toward grey just enough that its sRGB is in gamut, keeping L.

    lab `(..., 3, H, W)`. Plain clipping of out-of-gamut RGB (the official behaviour) changes
    the luminance of strongly coloured dark or bright pixels; this keeps L to within the Lab
    round trip. Bisection on the chroma scale (grey is always in gamut for L in [0, 100]).
    """
    _check(lab, "lab")
    light, chroma = lab[..., :1, :, :], lab[..., 1:, :, :]

    def inside(scale: Tensor) -> Tensor:
        linear = _linear_rgb(torch.cat([light, chroma * scale], dim=-3))
        return ((linear >= -1e-6) & (linear <= 1 + 1e-6)).all(dim=-3, keepdim=True)

    full = torch.ones_like(light)
    if bool(inside(full).all()):
        return lab
    low, high = torch.zeros_like(light), full
    for _ in range(iterations):
        mid = (low + high) / 2
        ok = inside(mid)
        low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
    scale = torch.where(inside(full), full, low)
    return torch.cat([light, chroma * scale], dim=-3)


def _linear_rgb(lab: Tensor) -> Tensor:
    """Lab -> linear sRGB without clipping (negative Z counts as out of gamut: it maps below 0)."""
    light, a, b = lab.unbind(-3)
    fy = (light + 16.0) / 116.0
    f = torch.stack([a / 500.0 + fy, fy, fy - b / 200.0], dim=-3)
    xyz = torch.where(f > 0.2068966, f.pow(3.0), (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * torch.tensor(_WHITE_D65, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    inverse = torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)).to(lab.dtype).to(lab.device)
    return _mix(inverse, xyz)
