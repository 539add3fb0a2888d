"""Benchmark input: the blackswan clip when ../shared is beside the repo, else a synthetic clip.

Frames are uint8 `3 x H x W` RGB at the requested resolution, played back and forth to any length;
the exemplar is the clip's colour frame 0. Only the benchmarks use this (tests make their own).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = (REPO.parent / "shared" / "data" / "blackswan", REPO / "tests" / "data" / "blackswan",
              REPO / "workflows" / "media" / "blackswan")


def find_clip() -> Path | None:
    """The first clip folder with `frames/*.png` and `exemplar/00000.png`, or None."""
    for folder in CANDIDATES:
        if any((folder / "frames").glob("*.png")) and (folder / "exemplar" / "00000.png").is_file():
            return folder
    return None


def _read(path: Path, size: tuple[int, int] | None) -> torch.Tensor:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    if size is not None and img.shape[1::-1] != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def synthetic(size: tuple[int, int], count: int) -> list[torch.Tensor]:
    """Smooth moving colour blobs (deterministic), so the network sees structure, not noise."""
    width, height = size
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    clip = []
    for t in range(count):
        phase = t / max(count, 1) * 2 * torch.pi
        rgb = torch.stack([0.5 + 0.4 * torch.sin(6 * x + phase), 0.5 + 0.4 * torch.cos(5 * y - phase),
                           0.5 + 0.4 * torch.sin(4 * (x + y) + 2 * phase)])
        clip.append((rgb * 255).round().to(torch.uint8))
    return clip


def load(size: tuple[int, int] | None, folder: Path | None = None) -> tuple[str, list[torch.Tensor], torch.Tensor]:
    """(source description, frames, exemplar) at size = (width, height) (None: the clip's own size;
    the synthetic clip needs a size). folder: this clip (default: the first of CANDIDATES)."""
    folder = folder or find_clip()
    if folder is None:
        clip = synthetic(size, 20)
        return "synthetic", [f.float().mean(0, keepdim=True).round().to(torch.uint8).expand(3, -1, -1)
                             for f in clip], clip[0]
    frames = [_read(p, size) for p in sorted((folder / "frames").glob("*.png"))]
    return str(folder), frames, _read(folder / "exemplar" / "00000.png", size)


def play(clip: list[torch.Tensor], count: int):
    """`count` frames of the clip played forward and back (no frame repeated at the turns)."""
    order = itertools.cycle(list(range(len(clip))) + list(range(len(clip) - 2, 0, -1)))
    for _ in range(count):
        yield clip[next(order)]
