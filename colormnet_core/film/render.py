"""Render one shot job into an H.264 segment. Writes no record: whoever commits decides (records.py).

A job is rendered exactly as a shot of `colorize --shots` with the job's propagation: memory and
hidden state start afresh at the shot's first frame and the shot is colourised from the exemplars
pinned inside it and the references, so a film assembled from segments shows the same frames as one
run over the film with the same shots (tested). Bidirectional propagation buffers the stretch
between the shot's first and last exemplar beside the segments. The segment's timestamps are the
source's, shifted so that the shot starts at 0; the assembler shifts them back. Encoder options are
fixed (thread count included), so the same job gives the same bytes on any machine with the same
numerics (CPU fp32).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from ..exemplars import EncodedExemplars, Exemplar
from ..propagation import make_session
from ..session import ColorizedFrame
from ..video_file import VideoWriter
from ..video_io import read_image
from .jobs import ShotJob
from .records import fsync_file
from .source import FilmError, read_span

log = logging.getLogger(__name__)

# libx264 options of every segment: a fixed thread count makes the bytes independent of the machine's
# core count (x264's output depends on its threading), and every segment then has the same headers,
# which the packet-level assembly needs.
SEGMENT_ENCODER_OPTIONS = {"threads": "4"}


@dataclass(frozen=True)
class SegmentResult:
    """A rendered segment: where it is, its sha256, frame count and size in bytes; confidence: the
    shot's per-frame match confidence; report: the session's report (shot-relative frame indices)."""

    path: Path
    sha256: str
    frames: int
    bytes: int
    confidence: tuple[float, ...] = ()
    report: dict | None = None


def shot_exemplars(job: ShotJob) -> EncodedExemplars:
    """The job's exemplar files read and pinned to shot-relative frames (references stay references)."""
    if not any(e.frame == job.first for e in job.exemplars) and not any(e.frame is None for e in job.exemplars):
        raise FilmError(f"shot {job.index} (frames {job.first}-{job.last}) has no exemplar for its first frame "
                        f"{job.first} and there is no reference; colour its keyframe and save it as "
                        f"exemplars/{job.first:06d}.png.")
    return EncodedExemplars(tuple(
        Exemplar(read_image(e.path), None if e.frame is None else e.frame - job.first) for e in job.exemplars))


def job_warnings(job: ShotJob, extra: list[Exemplar] | tuple = ()) -> list[str]:
    """What Colorize warns about, for a film shot: each exemplar tiny or greyscale, and each pinned one
    of another aspect ratio than the film or not matching its frame (`exemplar_checks`). extra:
    exemplars not in the project yet (film frame indices), replacing the job's at their frames.
    Reads the pinned frames from the source (a seek each); never raises for a frame it cannot read."""
    from ..exemplar_checks import check_exemplars
    from .source import ShotSpan

    def frame_at(frame: int):
        k = frame - job.first
        if not 0 <= k < job.frames:
            return None
        one = ShotSpan(job.span.seek_pts, (job.span.pts[k],), job.span.time_base, job.span.fps)
        try:
            return next(iter(read_span(job.source, one)))
        except (FilmError, OSError, StopIteration):
            return None

    replaced = {e.frame for e in extra}
    exemplars = [Exemplar(read_image(e.path), e.frame) for e in job.exemplars if e.frame not in replaced or
                 e.frame is None] + list(extra)
    return [f"shot {job.index}: {w}" for w in check_exemplars(exemplars, frame_at=frame_at)]


def render_job(job: ShotJob, network, *, out_path: str | Path, device: torch.device | str | None = None,
               key_batch: int = 1, on_frame: Callable[[ColorizedFrame], bool | None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> SegmentResult:
    """Colour shot `job` and write it to `out_path` (an .mp4 the caller names, usually a temporary
    name from `FilmProject.partial_segment_path`); the file is complete and fsynced on return, and
    removed if anything fails (Cancelled, a full disk, a damaged source). on_frame(result) gets
    shot-relative `ColorizedFrame`s; returning False cancels."""
    out_path = Path(out_path)
    settings = job.settings
    spill = {"spill_dir": out_path.parent} if settings.propagation == "bidirectional" else {}
    session = make_session(network, shot_exemplars(job), settings.memory, propagation=settings.propagation,
                           size=settings.processing_size, device=device, precision=settings.precision,
                           key_batch=key_batch, gamut=settings.gamut, **spill)
    span = job.span
    start = span.pts[0]
    writer = VideoWriter(out_path, fps=span.fps, time_base=span.time_base, crf=settings.crf, overwrite=True,
                         encoder_options=SEGMENT_ENCODER_OPTIONS)
    try:
        with writer:
            frames = _counted(read_span(job.source, span), job.frames, job)
            for result in session.run(frames, on_frame=on_frame, should_stop=should_stop):
                writer.write(result.rgb, span.pts[result.index] - start)
    except OSError as e:
        raise FilmError(f"writing shot {job.index}'s segment failed ({e.strerror or e}); the shot was not "
                        f"recorded and earlier segments are intact. Free disk space in {out_path.parent} and "
                        f"render again.") from e
    if writer.count != job.frames:
        out_path.unlink(missing_ok=True)
        raise FilmError(f"shot {job.index}: {writer.count} frames were written but the shot has {job.frames}.")
    fsync_file(out_path)
    return SegmentResult(out_path, sha256_of(out_path), writer.count, out_path.stat().st_size,
                         tuple(session.confidence), session.report())


def _counted(frames, expected: int, job: ShotJob):
    """The span's frames, as a sized sequence would be checked: exemplars pinned past the end are
    caught by the span's length, which `ColorizeSession.run` cannot see from a generator."""
    pinned = [e.frame for e in job.exemplars if e.frame is not None and not job.first <= e.frame <= job.last]
    if pinned:
        raise FilmError(f"shot {job.index}'s job lists exemplars outside frames {job.first}-{job.last}: {pinned}.")
    yield from frames


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_packets(path: Path) -> int:
    """Video packets (= frames) in a segment, read without decoding; FilmError if it is unreadable."""
    try:
        with av.open(str(path)) as container:
            return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
    except (av.FFmpegError, OSError, IndexError) as e:
        raise FilmError(f"{path} is not a complete segment ({e}).") from e
