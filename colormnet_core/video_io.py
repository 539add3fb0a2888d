"""Frame sources and sinks, one frame at a time: image folders (OpenCV) and video files (PyAV, see video_file)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from .errors import InputError, Transaction

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

    Iterating yields uint8 RGB `3 x H x W` tensors. Opening a video decodes its first frame, so a file
    that is not a video fails here, before any work. `count` is exact for folders and the header's
    count (or None) for videos, which are read to their end whatever it says; `names` are output
    file stems (folders only); `fps` is the video's rate (25 for folders); `video` is the
    `VideoReader` (None for folders), whose timestamps and audio a `FrameWriter` can keep.
    Not `Sized` on purpose: a video's frame count is a claim, not a fact.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.video = None
        self.names: list[str] | None = None
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not self.files:
                raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {self.path}.")
            self.fps: Fraction = Fraction(25)
            self.names = [p.stem for p in self.files]
            self.count: int | None = len(self.files)
        elif self.path.is_file():
            from .video_file import VideoReader

            self.files = None
            self.video = VideoReader(self.path)
            self.fps = self.video.fps
            self.count = self.video.frame_count
        else:
            raise InputError(f"input not found: {self.path} (give a video file or a folder of frames).")

    @property
    def estimated_count(self) -> int | None:
        """For progress bars only: exact for folders, an estimate (or None) for videos."""
        return self.count if self.video is None else self.video.estimated_frames

    def require_frame(self, index: int) -> None:
        """InputError unless frame `index` exists (0-based): checked before colorizing, for pinned exemplars.
        For a video the packets are counted (see `VideoReader.require_frame`)."""
        if self.video is not None:
            self.video.require_frame(index)
        elif index >= self.count:
            raise InputError(f"an exemplar is pinned to frame {index}, but the folder {self.path} has {self.count} "
                             f"frames (0-{self.count - 1}); pin it to a frame that exists or use it as a reference "
                             f"(frame -1).")

    def timestamp(self, index: int) -> int | None:
        """Frame `index`'s presentation time in the video's time base (None for folders)."""
        return self.video.timestamp(index) if self.video is not None else None

    def __iter__(self) -> Iterator[Tensor]:
        if self.files is None:
            yield from self.video
            return
        for p in self.files:
            yield read_image(p)


class FrameWriter(Transaction):
    """Writes RGB frames to a folder of PNGs or to an H.264 video file (by the path's suffix).

    For a video, `source` (a `FrameSource`) lends its timestamps, time base and audio; the file
    appears under its name only when complete (see `video_file.VideoWriter`). Leaving a `with`
    block by an exception deletes an unfinished video but keeps PNGs already written.
    """

    def __init__(self, path: str | Path, *, fps: float | Fraction = 25.0, names: list[str] | None = None,
                 source: FrameSource | None = None, crf: int = 18, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.names = names
        self.count = 0
        self.is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        self.source = source
        self._video = None
        if self.is_video:
            from .video_file import VideoWriter

            reader = source.video if source is not None else None
            self._video = VideoWriter(
                self.path, fps=source.fps if source is not None else fps,
                time_base=reader.time_base if reader is not None else None, audio_from=reader, crf=crf,
                overwrite=overwrite)
        else:
            if self.path.exists() and any(self.path.iterdir()) and not overwrite:
                raise InputError(f"the output folder {self.path} is not empty; choose another or pass --overwrite.")
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def video(self):
        """The `VideoWriter` (None for PNG folders)."""
        return self._video

    def write(self, rgb: Tensor, index: int | None = None) -> None:
        """rgb: `3 x H x W`, uint8 or float in [0, 1] (float is rounded to 8 bits); index: the frame's
        index in the source (for its timestamp)."""
        if self._video is not None:
            pts = self.source.timestamp(index) if self.source is not None and index is not None else None
            self._video.write(rgb, pts)
            self.count += 1
            return
        if rgb.dtype != torch.uint8:
            rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        bgr = np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
        name = self.names[self.count] if self.names and self.count < len(self.names) else f"{self.count:05d}"
        if not cv2.imwrite(str(self.path / f"{name}.png"), bgr):
            raise InputError(f"cannot write {self.path / (name + '.png')}; check the folder's permissions.")
        self.count += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def abort(self) -> None:
        """Stop without a result: an unfinished video is deleted; PNGs already written stay."""
        if self._video is not None:
            self._video.abort()
