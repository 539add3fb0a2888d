"""A film's source video: its frame index, its fingerprint, and reading one shot without the rest.

The index is made once, at `film init`, by demuxing every video packet (no decoding: disk speed):
each frame's presentation timestamp and which frames are keyframes. Reading shot [first, last]
then seeks to the last keyframe at or before `first` and decodes forward from there, so a shot
near the end of a two-hour film costs at most one GOP of extra decoding, not the whole film.

The fingerprint says whether the file is still the one the project was made from: its size,
frame count, time base and rate, and a sha256 of every video packet (timestamps, flags and bytes),
taken in the same demuxing pass that makes the index, so a same-size edit anywhere in the film is
seen. Checking it again reads the file once (no decoding); `FilmProject` does that only when the
file's size, mtime, ctime or inode differ from those of the last check. Projects made before the
packet hash existed are checked as they were made: a hash of three decoded frames.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
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
    is pts[i]); keyframes: indices of frames that start a GOP; fps: the stream's average rate;
    packets_sha256: hash of every video packet (see `packets_digest`), None for older projects."""

    time_base: Fraction
    fps: Fraction
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    packets_sha256: str | None = None

    @property
    def frame_count(self) -> int:
        return len(self.pts)

    def to_json(self) -> dict:
        data = {"time_base": str(self.time_base), "fps": str(self.fps), "pts": list(self.pts),
                "keyframes": list(self.keyframes)}
        return data if self.packets_sha256 is None else {**data, "packets_sha256": self.packets_sha256}

    @classmethod
    def from_json(cls, data: dict) -> SourceIndex:
        try:
            return cls(Fraction(data["time_base"]), Fraction(data["fps"]), tuple(int(p) for p in data["pts"]),
                       tuple(int(k) for k in data["keyframes"]), data.get("packets_sha256"))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise FilmError(f"the project's source_index.json is damaged ({type(e).__name__}: {e}); make the "
                            f"project again in a new folder (your exemplars can be copied over).") from None

    def keyframe_before(self, frame: int) -> int:
        """The last keyframe at or before `frame` (0 when none is known)."""
        i = bisect.bisect_right(self.keyframes, frame) - 1
        return self.keyframes[i] if i >= 0 else 0


def _open_video(path: Path):
    """The container of a video file; FilmError for a still image (a PNG renamed .mp4) or no video."""
    try:
        container = _open_input(path)
    except InputError as e:
        raise FilmError(str(e)) from None
    kind = container.format.name
    if kind.endswith("_pipe") or kind.startswith("image2") or kind in ("png", "apng", "gif", "webp"):
        container.close()
        raise FilmError(f"{Path(path).name} is a single {kind.removesuffix('_pipe').upper()} image, not a video "
                        f"(renamed?); a film project needs the film's video file (.mp4, .mov, .mkv...).")
    if not container.streams.video:
        container.close()
        raise FilmError(f"{path} has no video stream; a film project needs a video file.")
    return container


def _packet_bytes(packet) -> bytes:
    """What one packet contributes to the packet hash: timestamps, keyframe flag, size and payload."""
    head = struct.pack("<qq?i", packet.pts if packet.pts is not None else -1,
                       packet.dts if packet.dts is not None else -1, bool(packet.is_keyframe), packet.size)
    return head + bytes(packet)


def packets_digest(path: Path) -> str:
    """sha256 of every video packet of `path` in file order (one pass, no decoding)."""
    container = _open_video(path)
    digest = hashlib.sha256()
    try:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                digest.update(_packet_bytes(packet))
    except av.FFmpegError as e:
        return f"unreadable ({e})"
    finally:
        container.close()
    return digest.hexdigest()


def index_source(path: Path) -> SourceIndex:
    """Demux every video packet of `path` (no decoding) into a `SourceIndex`, hashing the packets on
    the way. FilmError for a still image, a file without video, or frames without usable timestamps
    (they cannot be seeked; re-export them as mp4)."""
    container = _open_video(path)
    digest = hashlib.sha256()
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 90000)
        fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        entries = []
        for packet in container.demux(stream):
            if packet.size:
                digest.update(_packet_bytes(packet))
                entries.append((packet.pts, packet.is_keyframe))
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
    return SourceIndex(Fraction(time_base), fps, pts, keyframes, digest.hexdigest())


def fingerprint_source(path: Path, index: SourceIndex, *, packets: bool = True) -> dict:
    """The facts `FilmProject.open` compares: size, frame count, time base, fps and the packet hash
    (`packets_digest`; with packets=False, that of `index`, made while indexing). An index without a
    packet hash (a project made before it existed) gets the former check: a hash of `HASHED_FRAMES`
    decoded frames (first, middle, last) in the decoder's pixel format."""
    if index.packets_sha256 is not None:
        return {"bytes": os.path.getsize(path), "frames": index.frame_count, "time_base": str(index.time_base),
                "fps": str(index.fps),
                "packets_sha256": packets_digest(path) if packets else index.packets_sha256}
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
                                f"gave {frame.pts}; the file is damaged, or changed after the project was made "
                                f"from it. Restore the original file.")
            yield frame if raw else _rgb(frame)
            done += 1
            if done == len(shot.pts):
                return
        raise FilmError(f"{path} ended {len(shot.pts) - done} frame(s) before frame {len(shot.pts) - 1} of the "
                        f"frames asked for: the file is truncated or damaged. Restore the complete file (if a "
                        f"project was made from it, the file it was made from).")
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
