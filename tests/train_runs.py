"""Helpers for the training-run tests: tiny clip folders and `python -m colormnet_core train` runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2

from .clips import panning_field
from .golden import REPO

# The smallest official-shaped run: 112 x 112 crops, 2 frames per clip (frame 0 gives the exemplar,
# frame 1 is predicted), fp32 on the CPU, no data workers, a checkpoint after every step.
TINY = ["--crop", "112", "--num-frames", "2", "--num-workers", "0", "--device", "cpu", "--no-progress",
        "--checkpoint-every", "1"]


def make_clip_folders(root: Path, *, clips: int = 2, frames: int = 4) -> Path:
    """`clips` folders of `frames` colour PNG frames (80 x 64, a panning colour field)."""
    for c in range(clips):
        folder = root / f"clip{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(panning_field(frames, 64, 80, seed=c)):
            cv2.imwrite(str(folder / f"{t:05d}.png"), frame[:, :, ::-1])
    return root


def train_env(threads: int = 1) -> dict[str, str]:
    """Equal thread counts make runs comparable to float rounding (BLAS sums depend on them)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def train_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "colormnet_core", "train", *map(str, args)]


def run_train(*args: str | Path, timeout: float = 900, threads: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(*args), env=train_env(threads), cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
