"""Held-out scores of a fine-tune: sequences made from pictures the tuning never sees, colorized from
their first frame, scored against their own colours (PSNR, SSIM, CDC; see `finetune.py`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..exemplars import EncodedExemplars, Exemplar
from ..metrics import cdc, psnr, ssim
from ..network import ColorMNet
from ..session import ColorizeSession
from .datasets import PictureDataset, item_seed


@dataclass(frozen=True)
class HoldoutScores:
    """Means over the held-out sequences (see the module docstring). psnr in dB, higher is better;
    ssim in [-1, 1], higher is better; cdc lower is steadier. pictures / clips: how many were held out;
    frames: how many frames were scored."""

    psnr: float
    ssim: float
    cdc: float
    pictures: int
    clips: int = 0
    frames: int = 0

    def describe(self) -> str:
        return f"PSNR {self.psnr:.2f} dB, SSIM {self.ssim:.4f}, CDC {self.cdc:.5f}"

def _to_tensor(image: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def _centre_crop(frame: np.ndarray, size: int) -> Image.Image:
    image = Image.fromarray(frame)
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def holdout_sequences(pictures: list[np.ndarray], clips: list[list[np.ndarray]], *, frames: int, size: int,
                      seed: int) -> list[list[Tensor]]:
    """The held-out sequences, each a list of `3 x size x size` uint8 RGB frames: per picture (`H x W x 3`
    uint8) one pseudo-sequence of `frames` frames by the official static augmentation keyed on `seed`;
    per clip its first `frames` frames, centre-cropped."""
    sequences = []
    if pictures:
        data = PictureDataset(pictures, num_frames=frames, crop=size)
        for i in range(len(data)):
            sequences.append([_to_tensor(f) for f in data.frames_of(i, np.random.RandomState(item_seed(seed, 0, i)))])
    for clip in clips:
        sequences.append([_to_tensor(_centre_crop(f, size)) for f in clip[:frames]])
    return sequences


def score_holdout(network: ColorMNet, sequences: list[list[Tensor]], *, pictures: int, clips: int,
                  device: torch.device, should_stop: Callable[[], bool] | None = None) -> HoldoutScores:
    """Colorize each sequence from its first frame (pinned exemplar) and score it against its colours."""
    psnrs, ssims, cdcs = [], [], []
    for frames in sequences:
        session = ColorizeSession(network, EncodedExemplars((Exemplar(frames[0], frame=0),)), device=device)
        outputs = [r.rgb for r in session.run(torch.stack(frames), should_stop=should_stop)]
        for out, truth in zip(outputs[1:], frames[1:]):
            value = psnr(out, truth)
            if math.isfinite(value):
                psnrs.append(value)
            ssims.append(ssim(out, truth))
        value = cdc(outputs)
        if value is not None:
            cdcs.append(value)
    return HoldoutScores(statistics.fmean(psnrs) if psnrs else math.inf, statistics.fmean(ssims),
                         statistics.fmean(cdcs) if cdcs else 0.0, pictures, clips, len(ssims))
