"""A film's source video: its frame index, its fingerprint, and reading one shot without the rest.

The index is made once, at `film init`, by demuxing every video packet (no decoding: disk speed):
each frame's presentation timestamp and which frames are keyframes. Reading shot [first, last]
then seeks to the last keyframe at or before `first` and decodes forward from there, so a shot
near the end of a two-hour film costs at most one GOP of extra decoding, not the whole film.

The fingerprint says whether the file is still the one the project was made from: its size,
frame count, time base and rate, and a hash of a few decoded frames in the decoder's own pixel
format (not RGB, so a different colour-conversion library cannot change it).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..video_file import _open_input

log = logging.getLogger(__name__)

HASHED_FRAMES = 3          # decoded frames hashed into the fingerprint: first, middle, last


class FilmError(InputError):
    """A film project cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True)
class SourceIndex:
    """pts: every frame's presentation time in `time_base` units, in presentation order (frame i's
    is pts[i]); keyframes: indices of frames that start a GOP; fps: the stream's average rate."""

    time_base: Fraction
    fps: Fraction
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]

    @property
    def frame_count(self) -> int:
        return len(self.pts)

    def to_json(self) -> dict:
        return {"time_base": str(self.time_base), "fps": str(self.fps), "pts": list(self.pts),
                "keyframes": list(self.keyframes)}

    @classmethod
    def from_json(cls, data: dict) -> SourceIndex:
        return cls(Fraction(data["time_base"]), Fraction(data["fps"]), tuple(data["pts"]), tuple(data["keyframes"]))

    def keyframe_before(self, frame: int) -> int:
        """The last keyframe at or before `frame` (0 when none is known)."""
        i = bisect.bisect_right(self.keyframes, frame) - 1
        return self.keyframes[i] if i >= 0 else 0


def index_source(path: Path) -> SourceIndex:
    """Demux every video packet of `path` (no decoding) into a `SourceIndex`. FilmError for files whose
    frames have no usable timestamps (they cannot be seeked; re-export them as mp4)."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise FilmError(f"{path} has no video stream; a film project needs a video file.")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 90000)
        fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        entries = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.size]
    except av.FFmpegError as e:
        raise FilmError(f"reading {path} failed ({e}); the file is damaged. Re-export it.") from e
    finally:
        container.close()
    if not entries:
        raise FilmError(f"{path} holds no video frames; give the film's video file.")
    if any(pts is None for pts, _ in entries) or len({pts for pts, _ in entries}) != len(entries):
        raise FilmError(f"{path} has frames without distinct timestamps, so single shots cannot be read from it. "
                        f"Re-export it as mp4 (e.g. `ffmpeg -i IN -c:v libx264 -crf 12 -c:a copy OUT.mp4`).")
    entries.sort()
    pts = tuple(p for p, _ in entries)
    keyframes = tuple(i for i, (_, key) in enumerate(entries) if key) or (0,)
    return SourceIndex(Fraction(time_base), fps, pts, keyframes)


def fingerprint_source(path: Path, index: SourceIndex) -> dict:
    """The facts `FilmProject.open` compares: size, frame count, time base, fps and a hash of
    `HASHED_FRAMES` decoded frames (first, middle, last) in the decoder's pixel format.

    Checking a file against a stored index costs three seeks, not a pass over the file: the time base
    and rate are read from the stream's header, and a file that was cut or re-encoded has another
    size, or other frames (or none) at the stored timestamps."""
    container = _open_input(path)
    try:
        stream = container.streams.video[0] if container.streams.video else None
        header = (Fraction(stream.time_base or Fraction(1, 90000)),
                  Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)) if stream else None
    finally:
        container.close()
    if header != (index.time_base, index.fps):
        return {"bytes": os.path.getsize(path), "frames": index.frame_count, "time_base": str(header and header[0]),
                "fps": str(header and header[1]), "frames_sha256": "not compared"}
    count = index.frame_count
    picks = sorted({0, count // 2, count - 1})
    digest = hashlib.sha256()
    for frame in picks:
        try:
            decoded = next(iter(read_frames(path, index, frame, frame, raw=True)))
        except FilmError:
            return {"bytes": os.path.getsize(path), "frames": index.frame_count, "time_base": str(index.time_base),
                    "fps": str(index.fps), "frames_sha256": f"no frame at the stored timestamp of frame {frame}"}
        digest.update(_pixels(decoded))
    return {"bytes": os.path.getsize(path), "frames": count, "time_base": str(index.time_base),
            "fps": str(index.fps), "frames_sha256": digest.hexdigest()}


@dataclass(frozen=True)
class ShotSpan:
    """What a reader needs to decode one shot alone: pts of its frames (in the source's `time_base`, in
    order), the pts of the keyframe to seek to (None: decode from the start of the file), and the
    source's average rate (for the segment's nominal rate)."""

    seek_pts: int | None
    pts: tuple[int, ...]
    time_base: Fraction
    fps: Fraction

    def to_json(self) -> dict:
        return {"seek_pts": self.seek_pts, "pts": list(self.pts), "time_base": str(self.time_base),
                "fps": str(self.fps)}

    @classmethod
    def from_json(cls, data: dict) -> ShotSpan:
        return cls(data["seek_pts"], tuple(data["pts"]), Fraction(data["time_base"]), Fraction(data["fps"]))


def span(index: SourceIndex, first: int, last: int) -> ShotSpan:
    """The `ShotSpan` of frames first..last (inclusive)."""
    if not 0 <= first <= last < index.frame_count:
        raise FilmError(f"frames {first}-{last} are outside the source's 0-{index.frame_count - 1}.")
    start = index.keyframe_before(first)
    return ShotSpan(index.pts[start] if start > 0 else None, index.pts[first:last + 1], index.time_base, index.fps)


def read_frames(path: Path, index: SourceIndex, first: int, last: int, *, raw: bool = False) -> Iterator:
    """Frames first..last of the source (see `read_span`)."""
    return read_span(path, span(index, first, last), raw=raw)


def read_span(path: str | Path, shot: ShotSpan, *, raw: bool = False) -> Iterator:
    """The span's frames: uint8 RGB `3 x H x W` tensors (or the decoder's `av.VideoFrame`s with
    raw=True). Seeks to the keyframe before the first frame and decodes forward; frames are identified
    by their timestamps, so a seek that lands earlier than asked only costs time."""
    container = _open_input(path)
    done = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if shot.seek_pts is not None:
            container.seek(shot.seek_pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None or frame.pts < shot.pts[done]:
                continue
            if frame.pts != shot.pts[done]:
                raise FilmError(f"{path}: the frame at timestamp {shot.pts[done]} was expected but the decoder "
                                f"gave {frame.pts}; the file changed since `film init` or is damaged. Run "
                                f"`film init` again on the file.")
            yield frame if raw else _rgb(frame)
            done += 1
            if done == len(shot.pts):
                return
        raise FilmError(f"{path} ended {len(shot.pts) - done} frame(s) before the shot's last frame; the file was "
                        f"truncated since `film init`. Restore it, or run `film init` again.")
    except av.FFmpegError as e:
        raise FilmError(f"decoding {path} failed after {done} frames of the shot ({e}); the file is damaged "
                        f"there.") from e
    finally:
        container.close()


def _pixels(frame: av.VideoFrame) -> bytes:
    """The frame's pixels in its own format, without the planes' row padding (which is not data)."""
    try:
        array = frame.to_ndarray()
    except (ValueError, NotImplementedError, av.FFmpegError):     # formats numpy cannot hold as they are
        array = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(array).tobytes()


def _rgb(frame: av.VideoFrame) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame.to_ndarray(format="rgb24"))).permute(2, 0, 1)
