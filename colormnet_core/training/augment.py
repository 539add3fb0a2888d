"""The official training augmentations, on PIL images, with explicit seeds.

Clips (`dataset/vos_dataset.py`, DAVISVidevoDataset): per clip a random horizontal flip and
RandomResizedCrop to 448 (scale 0.36-1, bilinear) and ColorJitter(0.1, 0.03, 0.03); per frame
RandomAffine(+-15 deg, shear 10, bilinear, fill (124, 116, 104)) and ColorJitter(0.01, 0.01, 0.01).
The fine-tune phase keeps the affine but with rotation and shear 0.

Pictures (`dataset/static_dataset.py`, the pseudo-sequence stage): per sequence RandomAffine(scale
0.8-1.5, nearest) + flip and ColorJitter(0.1, 0.05, 0.05, hue 0.05) + RandomGrayscale(0.05); per
frame RandomAffine(+-20 deg, scale 0.9-1.1, shear 10, bicubic), Resize(crop, bicubic),
RandomCrop(crop, padded), ColorJitter(0.1, 0.05, 0.05) and, a third of the time, a thin-plate-spline
warp (12 control points moved by N(0, 0.02) of the image size). The official crop, 384, is no
multiple of DINOv2's patch (14): 448 here, as for the clips.

The official code seeds torch's global generator before each group of transforms (`reseed`) with
seeds drawn from NumPy; the same torchvision transforms are used here under `torch.random.fork_rng`,
so they draw exactly what the official ones draw and leave the caller's generator alone.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from ..color import normalize_lab, rgb_to_lab

FILL_RGB = (124, 116, 104)     # the official `im_mean`: fill of every affine transform and padding


def _seeded(seed: int, *steps):
    """Run `steps` (callables, image -> image) on torch's generator seeded with `seed`, then restore it."""

    def apply(image: Image.Image) -> Image.Image:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in steps:
                image = step(image)
        return image

    return apply


class ClipAugmentation:
    """The official clip transforms (see the module docstring). `finetune`: no rotation, no shear."""

    def __init__(self, crop: int = 448, *, finetune: bool = False) -> None:
        angle, shear = (0, 0) if finetune else (15, 10)
        self.clip_geometry = transforms.Compose([
            transforms.RandomHorizontalFlip(),
            transforms.RandomResizedCrop((crop, crop), scale=(0.36, 1.0), interpolation=InterpolationMode.BILINEAR),
        ])
        self.clip_colour = transforms.ColorJitter(0.1, 0.03, 0.03, 0)
        self.frame_geometry = transforms.RandomAffine(degrees=angle, shear=shear,
                                                      interpolation=InterpolationMode.BILINEAR, fill=FILL_RGB)
        self.frame_colour = transforms.ColorJitter(0.01, 0.01, 0.01, 0)

    def __call__(self, image: Image.Image, clip_seed: int, frame_seed: int) -> Image.Image:
        image = _seeded(clip_seed, self.clip_geometry, self.clip_colour)(image)
        return _seeded(frame_seed, self.frame_geometry, self.frame_colour)(image)


class PictureAugmentation:
    """The official static-image transforms that turn one picture into a pseudo-sequence."""

    def __init__(self, crop: int = 448, *, tps_probability: float = 0.33, tps_scale: float = 0.02) -> None:
        self.sequence_geometry = transforms.Compose([
            transforms.RandomAffine(degrees=0, scale=(0.8, 1.5), fill=FILL_RGB),
            transforms.RandomHorizontalFlip(),
        ])
        self.sequence_colour = transforms.Compose([
            transforms.ColorJitter(0.1, 0.05, 0.05, 0.05),
            transforms.RandomGrayscale(0.05),
        ])
        self.frame_geometry = transforms.Compose([
            transforms.RandomAffine(degrees=20, scale=(0.9, 1.1), shear=10, interpolation=InterpolationMode.BICUBIC,
                                    fill=FILL_RGB),
            transforms.Resize(crop, InterpolationMode.BICUBIC),
            transforms.RandomCrop((crop, crop), pad_if_needed=True, fill=FILL_RGB),
        ])
        self.frame_colour = transforms.ColorJitter(0.1, 0.05, 0.05, 0)
        self.tps_probability = tps_probability
        self.tps_scale = tps_scale

    def __call__(self, image: Image.Image, sequence_seed: int, frame_seed: int,
                 rng: np.random.RandomState) -> Image.Image:
        image = _seeded(sequence_seed, self.sequence_geometry, self.sequence_colour)(image)
        image = _seeded(frame_seed, self.frame_geometry, self.frame_colour)(image)
        if rng.rand() < self.tps_probability:
            image = Image.fromarray(random_tps_warp(np.asarray(image), rng, scale=self.tps_scale))
        return image


def random_tps_warp(image: np.ndarray, rng: np.random.RandomState, *, scale: float, points: int = 12) -> np.ndarray:
    """Warp `image` (H x W x C uint8) by a thin-plate spline through `points` random control points,
    each moved by N(0, scale) in coordinates normalised to [0, 1]. Bilinear resampling.

    Control points are drawn as the official `pick_random_points` draws them (distinct rows / h and
    distinct columns / w, paired in that order) and used with the first coordinate as x, as its
    thin-plate library reads them; on the square crops this is used on, rows and columns alike."""
    h, w = image.shape[:2]
    first = rng.choice(np.arange(h), size=points, replace=False) / h
    second = rng.choice(np.arange(w), size=points, replace=False) / w
    source = np.stack([first, second], 1)
    target = source + rng.normal(scale=scale, size=source.shape)
    map_x, map_y = _tps_sampling_map(target, source - target, h, w)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR)


def _tps_kernel(r: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r (0 at r = 0): the thin-plate radial basis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, r * r * np.log(np.maximum(r, 1e-300)), 0.0)


def _tps_sampling_map(anchors: np.ndarray, shifts: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the input: p + f(p), f the thin-plate spline with f(anchor_i) =
    shift_i (coordinates x, y in [0, 1]). Returns cv2.remap's float32 maps in pixels."""
    n = len(anchors)
    affine = np.hstack([np.ones((n, 1)), anchors])                                  # n x 3: 1, x, y
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(np.linalg.norm(anchors[:, None] - anchors[None], axis=-1))
    system[:n, n:] = affine
    system[n:, :n] = affine.T
    rhs = np.vstack([shifts, np.zeros((3, 2))])
    coeff = np.linalg.lstsq(system, rhs, rcond=None)[0]                              # (n + 3) x 2
    ys, xs = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], 1)                                     # HW x 2 (x, y)
    radial = _tps_kernel(np.linalg.norm(grid[:, None] - anchors[None], axis=-1))     # HW x n
    moved = grid + radial @ coeff[:n] + np.hstack([np.ones((len(grid), 1)), grid]) @ coeff[n:]
    return ((moved[:, 0] * w).reshape(h, w).astype(np.float32), (moved[:, 1] * h).reshape(h, w).astype(np.float32))


def lab_planes(image: Image.Image) -> tuple[Tensor, Tensor]:
    """RGB PIL image -> (L' `1 x H x W`, ab `2 x H x W`) float32 in the official normalised Lab,
    converted as the official dataset does (float64 Lab from 8 bits, then float32, then normalised)."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0).permute(2, 0, 1)
    lab = normalize_lab(rgb_to_lab(rgb).float())
    return lab[:1].contiguous(), lab[1:].contiguous()
