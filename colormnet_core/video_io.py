"""Reading and writing frames with OpenCV: image folders and video files, one frame at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from .errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}


def read_image(path: str | Path) -> Tensor:
    """An image file -> uint8 RGB `3 x H x W` (grey replicated, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read {path} as an image (supported: {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return _to_tensor(img)


def _to_tensor(bgr: np.ndarray) -> Tensor:
    if bgr.dtype != np.uint8:   # 16-bit files: keep 8-bit semantics
        bgr = (bgr / 257).round().astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)


class FrameSource:
    """Frames of a video file or an image folder (sorted by name, hidden files skipped), read lazily.

    Iterating yields uint8 RGB `3 x H x W` tensors. `names` are output file stems; `fps` is the
    video's rate (25 for folders). `len()` is exact for folders and OpenCV's count for videos.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not self.files:
                raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {self.path}.")
            self.fps = 25.0
            self.names = [p.stem for p in self.files]
            self._count = len(self.files)
        elif self.path.is_file():
            capture = cv2.VideoCapture(str(self.path))
            if not capture.isOpened():
                raise InputError(f"cannot open {self.path} as a video; convert it to mp4 (H.264) or extract "
                                 f"its frames into a folder.")
            self.fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            self._count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            capture.release()
            self.files = None
            self.names = [f"{i:05d}" for i in range(self._count)]
        else:
            raise InputError(f"input not found: {self.path} (give a video file or a folder of frames).")

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Tensor]:
        if self.files is not None:
            for p in self.files:
                yield read_image(p)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                yield _to_tensor(frame)
        finally:
            capture.release()


class FrameWriter:
    """Writes RGB frames to a folder of PNGs or to a video file (by the path's suffix)."""

    def __init__(self, path: str | Path, *, fps: float = 25.0, names: list[str] | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        self.fps = fps
        self.names = names
        self.count = 0
        self._video: cv2.VideoWriter | None = None
        self.is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        if self.is_video:
            if self.path.exists() and not overwrite:
                raise InputError(f"{self.path} exists; choose another output or pass --overwrite.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            if self.path.exists() and any(self.path.iterdir()) and not overwrite:
                raise InputError(f"the output folder {self.path} is not empty; choose another or pass --overwrite.")
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, rgb: Tensor) -> None:
        """rgb: `3 x H x W`, uint8 or float in [0, 1] (float is rounded to 8 bits)."""
        if rgb.dtype != torch.uint8:
            rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        bgr = np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
        if self.is_video:
            if self._video is None:
                h, w = bgr.shape[:2]
                self._video = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._video.isOpened():
                    raise InputError(f"cannot write the video {self.path}; write to a folder of PNGs instead.")
            self._video.write(bgr)
        else:
            name = self.names[self.count] if self.names and self.count < len(self.names) else f"{self.count:05d}"
            if not cv2.imwrite(str(self.path / f"{name}.png"), bgr):
                raise InputError(f"cannot write {self.path / (name + '.png')}; check the folder's permissions.")
        self.count += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
