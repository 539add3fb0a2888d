"""Join a film's segments into one video without re-encoding, with the source's sound and timing.

Every segment is an H.264 stream that starts on a keyframe, encoded with the same settings (so the
same codec headers), with timestamps relative to its shot's first frame. The assembler copies their
packets into one mp4, each shifted to its shot's source timestamp, and copies the source's audio
packets interleaved. With B-frames a stream's decode timestamps run `d` frames behind its
presentation timestamps, and x264 uses a smaller `d` for very short segments; every segment's decode
timestamps are therefore lowered to the largest `d` of the film, which keeps them strictly
increasing across the joins (a decode time may always be earlier than the presentation time).
"""

from __future__ import annotations

import logging
import os
import uuid
from fractions import Fraction
from pathlib import Path

import av

from ..video_file import H264_CONTAINERS, VideoReader, _AudioCopy
from .plan import STATE_WORDS, shot_states
from .records import disk_error, fsync_dir
from .source import FilmError

log = logging.getLogger(__name__)


def assemble_film(project, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the film (H.264 yuv420p in .mp4/.mov/.mkv, the source's audio) to `output`, atomically.
    FilmError listing the shots that are not done: missing, stale, or with a segment that does not
    match its record (the same sha256 check `status` and `render` use, so they agree)."""
    output = Path(output)
    if output.suffix.lower() not in H264_CONTAINERS:
        raise FilmError(f"cannot write the film as {output.name}: use .mp4, .mov or .mkv.")
    if output.exists() and not overwrite:
        raise FilmError(f"{output} exists; choose another name or pass --overwrite.")
    _require_all_done(project)
    segments = [project.segment_path(i) for i in range(len(project.shots))]
    partial = output.with_name(f"{output.stem}.partial-{uuid.uuid4().hex[:8]}{output.suffix}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        frames = _join(project, segments, partial, H264_CONTAINERS[output.suffix.lower()])
        if frames != project.frame_count:
            raise FilmError(f"the segments hold {frames} frames but the source has {project.frame_count}; "
                            f"render the film again.")
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, output)
    except OSError as e:
        raise disk_error(e, output, "the assembled film") from e
    except av.FFmpegError as e:
        if getattr(e, "errno", None) is not None:
            raise disk_error(OSError(e.errno, e.strerror), output, "the assembled film") from e
        raise
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(output.parent)
    log.info("assembled %d shots, %d frames into %s", len(segments), project.frame_count, output)
    return output


def _require_all_done(project) -> None:
    if project.settings() is None:
        raise FilmError("no shot has been rendered yet; render the shots first.")
    states = shot_states(project)
    waiting = [s for s in states if s.state != "done"]
    if waiting:
        listing = ", ".join(f"{s.index} ({s.first}-{s.last}: {STATE_WORDS[s.state]})" for s in waiting[:20])
        more = f" and {len(waiting) - 20} more" if len(waiting) > 20 else ""
        raise FilmError(f"{len(waiting)} of {len(states)} shots are not rendered with the current settings: "
                        f"{listing}{more}. Give the shots that need one an exemplar, render them, then "
                        f"assemble again.")


def _join(project, segments: list[Path], partial: Path, muxer: str) -> int:
    """Copy every segment's packets (and the source's audio) into `partial`; returns the frame count."""
    source_tb = project.index.time_base
    delays = [_delay(segment, source_tb) for segment in segments]
    lowest = max(delays)
    options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
    reader = VideoReader(project.source)
    frames = 0
    last_dts = None
    with av.open(str(partial), mode="w", format=muxer, options=options) as out:
        with av.open(str(segments[0])) as first:
            template = first.streams.video[0]
            headers = bytes(template.codec_context.extradata or b"")
            video = out.add_stream_from_template(template)
        video.time_base = source_tb
        audio = _AudioCopy(reader, out, muxer) if reader.audio is not None else None
        try:
            for i, segment in enumerate(segments):
                offset = project.index.pts[project.shots[i].first]
                with av.open(str(segment)) as container:
                    stream = container.streams.video[0]
                    if bytes(stream.codec_context.extradata or b"") != headers:
                        raise FilmError(f"shot {i}'s segment was encoded with other settings than shot 0's; "
                                        f"render all shots with one version of ColorMNet, then assemble.")
                    for packet in container.demux(stream):
                        if not packet.size:
                            continue
                        pts = _rescale(packet.pts, stream.time_base, source_tb) + offset
                        dts = _rescale(packet.dts, stream.time_base, source_tb) + offset - (lowest - delays[i])
                        if last_dts is not None and dts <= last_dts:
                            raise FilmError(f"shot {i}'s segment cannot be joined after shot {i - 1}'s (decode "
                                            f"times overlap); render shot {i} again.")
                        last_dts = dts
                        if audio is not None:
                            audio.mux_until(float(pts * source_tb))
                        packet.stream, packet.time_base, packet.pts, packet.dts = video, source_tb, pts, dts
                        out.mux(packet)
                        frames += 1
            if audio is not None:
                audio.finish()
                audio = None
        finally:
            if audio is not None:
                audio.close()
    return frames


def _delay(segment: Path, time_base: Fraction) -> int:
    """How far the segment's first decode timestamp runs ahead of its first presentation (time_base units)."""
    with av.open(str(segment)) as container:
        stream = container.streams.video[0]
        packet = next(p for p in container.demux(stream) if p.size)
        return _rescale(packet.pts, stream.time_base, time_base) - _rescale(packet.dts, stream.time_base, time_base)


def _rescale(value: int, source: Fraction, target: Fraction) -> int:
    return round(Fraction(value) * Fraction(source) / Fraction(target))
