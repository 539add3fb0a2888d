"""Video files through PyAV (FFmpeg): a reader that decodes one frame at a time and an H.264 writer.

The reader opens the file and decodes its first frame at once, so a file that is not a video (an
image renamed .mp4, a truncated download) fails with a clear `InputError` before any work starts.
Frame counts are not trusted: many containers (browser webm/mkv recordings) store none, so frames
are read until the decoder says end of file.

The writer encodes H.264 yuv420p (the codec and layout every browser plays), keeps the source's
timestamps (variable frame rates stay in sync with the sound), copies the source's audio packets
untouched and writes to a temporary name that is renamed only when the file is complete. The same
frames give the same bytes in every run (see `x264_options`).
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
from torch import Tensor

from .errors import InputError, Transaction

log = logging.getLogger(__name__)

VideoSource = str | Path | BinaryIO

# Output suffix -> FFmpeg muxer able to hold H.264.
H264_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Audio codecs copied into an mp4 as they are: the ones browsers play from mp4. Anything else that
# goes into an mp4 (PCM, AC-3, Vorbis...) is re-encoded to AAC so the preview has sound.
MP4_AUDIO_COPY = {"aac", "mp3", "opus", "flac"}
DEFAULT_FPS = Fraction(25)
# x264's canonical algorithms instead of the CPU's fastest ones; needed for reproducible files, not
# only for equal files across CPUs. On AVX-512 CPUs x264's macroblock-tree propagation
# (mbtree_propagate_list_internal_avx512, x264 core 164-165) works on 8 macroblocks at a time, so when
# the width in macroblocks is not a multiple of 8 (832x480: 52) its last row reads past the end of
# the frame's cost and motion-vector arrays into heap bytes x264 never wrote, and scatters what it
# finds there into the reference frames' costs, hence into the quantizers. Those bytes are whatever
# the process's allocator left there (a colorization between two frames changes them), so the same
# frames encoded twice gave different files, decoding up to 26 levels apart. The C propagation stops
# at the row's end, at no measurable cost (100 frames at 832x480 encode in the same time).
REPRODUCIBLE_X264_PARAMS = "cpu-independent=1"


@dataclass(frozen=True)
class AudioInfo:
    """The source's first audio stream: codec name, samples per second, channel count."""

    codec: str
    sample_rate: int
    channels: int


def h264_encoder() -> str:
    """The H.264 encoder of this PyAV build (libx264 preferred); InputError when there is none."""
    for name in ("libx264", "h264"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except (av.FFmpegError, ValueError):
                continue
    raise InputError(f"this PyAV {av.__version__} build has no H.264 encoder; install the PyPI wheel "
                     f"(`pip install av`, it includes libx264) or write PNG frames to a folder instead.")


def x264_options(crf: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The libx264 options of every file we write: `crf`, preset medium, then `extra` (libavcodec
    libx264 options such as threads), with `REPRODUCIBLE_X264_PARAMS` added last to its x264-params
    so that no extra option turns it off."""
    options = {"crf": str(crf), "preset": "medium", **(extra or {})}
    params = options.get("x264-params", "")
    options["x264-params"] = f"{params}:{REPRODUCIBLE_X264_PARAMS}" if params else REPRODUCIBLE_X264_PARAMS
    return options


def _describe(source: VideoSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "the video stream")


def _rewind(source: VideoSource) -> VideoSource:
    """A fresh handle on the same bytes: a file path as is, an in-memory buffer as a new view."""
    if isinstance(source, io.BytesIO):
        return io.BytesIO(source.getbuffer())
    if isinstance(source, (str, Path)):
        return str(source)
    source.seek(0)
    return source


def _open_input(source: VideoSource) -> av.container.InputContainer:
    try:
        return av.open(_rewind(source), mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(
            f"cannot read {_describe(source)} as a video ({getattr(e, 'strerror', None) or e}). It is not a video "
            f"or it is damaged (a partial download?). Re-export it as .mp4 (H.264), or extract its frames into a "
            f"folder of PNGs and give the folder.") from e


class VideoReader:
    """Frames of one video file, decoded lazily.

    Iterating yields uint8 RGB `3 x H x W` tensors (colour matrix and range from the file's tags),
    from the first frame to the end of the file, however many frames the header announces.
    `timestamp(i)` gives frame i's presentation time in `time_base` units (for the writer).

    Attributes: width, height (of the first frame), fps (average rate; 25 when the file has none),
    time_base, frame_count (the header's count, None when absent), duration (seconds or None),
    audio (`AudioInfo` or None).
    """

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.name = _describe(source)
        container = _open_input(source)
        try:
            kind = container.format.name
            if kind.endswith("_pipe") or kind.startswith("image2"):
                raise InputError(
                    f"{self.name} is a single {kind.removesuffix('_pipe').upper()} image, not a video (renamed?). "
                    f"Give a video file or a folder of frames; an image can be an exemplar.")
            if not container.streams.video:
                raise InputError(f"{self.name} has no video stream (only {len(container.streams)} other "
                                 f"stream(s)); give a video file or a folder of frames.")
            stream = container.streams.video[0]
            self.time_base = stream.time_base or Fraction(1, 90000)
            self.fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_FPS)
            self.frame_count = stream.frames if stream.frames and stream.frames > 0 else None
            if container.duration is not None and container.duration > 0:
                self.duration: float | None = container.duration / av.time_base
            elif stream.duration is not None and stream.duration > 0:
                self.duration = float(stream.duration * self.time_base)
            else:
                self.duration = None
            audio = container.streams.audio[0] if container.streams.audio else None
            self.audio = None if audio is None else AudioInfo(
                audio.codec_context.name, audio.codec_context.sample_rate or 0, audio.codec_context.channels or 0)
            self._pending = self._decode(container, stream)
            first = next(self._pending, None)
            if first is None:
                raise InputError(f"{self.name} contains no decodable video frame; it is damaged or empty. "
                                 f"Re-export it, or give a folder of frames.")
        except BaseException:
            container.close()
            raise
        self.width, self.height = first.width, first.height
        self._first = first
        self._first_rgb: Tensor | None = None
        self._timestamps: dict[int, int] = {}
        self._last_pts: int | None = None

    def first_frame(self) -> Tensor:
        """Frame 0 as uint8 RGB `3 x H x W` (decoded when the file was opened; for checks before work)."""
        if self._first_rgb is None:
            self._first_rgb = torch.from_numpy(np.ascontiguousarray(
                self._first.to_ndarray(format="rgb24"))).permute(2, 0, 1)
        return self._first_rgb

    def frame_at(self, index: int) -> Tensor | None:
        """Frame `index` if known without reading on: frame 0 only (for checks before work)."""
        return self.first_frame() if index == 0 else None

    @property
    def estimated_frames(self) -> int | None:
        """Frame count for progress bars: the header's, else duration x fps, else None. Not a promise."""
        if self.frame_count is not None:
            return self.frame_count
        return max(1, round(self.duration * self.fps)) if self.duration else None

    @property
    def frame_ticks(self) -> int:
        """One frame's duration in `time_base` units (at least 1)."""
        return max(1, round(1 / (self.fps * self.time_base)))

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        stream.thread_type = "AUTO"
        index = damaged = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    # A damaged packet (often the cut-off last one of a truncated file) loses its frame
                    # but not the film, as with FFmpeg's own tools.
                    damaged += 1
                    log.warning("%s: skipped a damaged packet after frame %d (%s)", self.name, index, e)
                    continue
                for frame in frames:
                    index += 1
                    yield frame
            if self.frame_count is not None and index < self.frame_count:
                log.warning("%s announces %d frames but only %d could be decoded (%d damaged packets; truncated "
                            "file?)", self.name, self.frame_count, index, damaged)
        except av.FFmpegError as e:
            raise InputError(f"reading {self.name} failed after {index} frames ({e}); the file is damaged "
                             f"there. Re-export it, or cut it before that point.") from e
        finally:
            container.close()

    def __iter__(self) -> Iterator[Tensor]:
        frames = self._pending if self._first is not None else None
        if frames is None:   # a second pass: open the file again
            container = _open_input(self.source)
            frames = self._decode(container, container.streams.video[0])
        else:
            frames = _prepend(self._first, frames)
            self._first = None
        self._last_pts = None
        for index, frame in enumerate(frames):
            self._timestamps[index] = self._monotonic_pts(frame.pts)
            rgb = frame.to_ndarray(format="rgb24")
            yield torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)

    def _monotonic_pts(self, pts: int | None) -> int:
        # Some streams have no timestamps or repeat one; the muxer needs strictly increasing ones.
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self.frame_ticks
        self._last_pts = pts
        return pts

    def timestamp(self, index: int) -> int | None:
        """Presentation time of frame `index` (already yielded) in `time_base` units; forgotten once asked."""
        return self._timestamps.pop(index, None)

    def count_frames(self) -> int:
        """Frames actually present, by reading every video packet (no decoding: about disk speed).

        Catches truncated files whose header promises more frames than the file holds."""
        container = _open_input(self.source)
        try:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as e:
            raise InputError(f"reading {self.name} failed ({e}); the file is damaged. Re-export it.") from e
        finally:
            container.close()

    def require_frame(self, index: int) -> None:
        """InputError unless frame `index` (0-based) exists; for exemplars pinned to frames, before any work.

        The packets are counted unless the header already rules the frame out: a truncated file's
        header promises frames that are not there."""
        if index < 0:
            return
        count = self.frame_count
        if count is None or index < count:
            count = self.count_frames()
            if self.frame_count is not None and count < self.frame_count:
                log.warning("%s announces %d frames but holds %d (truncated?)", self.name, self.frame_count, count)
        if index >= count:
            raise InputError(f"an exemplar is pinned to frame {index}, but {Path(self.name).name} has {count} "
                             f"frames (0-{count - 1}); pin it to a frame that exists or use it as a reference "
                             f"(frame -1).")

    def open_audio(self):
        """A new (container, audio stream) pair on the same file, for the writer to copy from."""
        if self.audio is None:
            return None
        container = _open_input(self.source)
        return container, container.streams.audio[0]


def _prepend(first, rest):
    yield first
    yield from rest


class _AudioCopy:
    """Copies (or, when the container cannot hold the codec, re-encodes to AAC) one audio stream,
    interleaved with the video as it is written so memory does not grow with the film's length."""

    def __init__(self, reader: VideoReader, output, muxer: str) -> None:
        self.container, stream = reader.open_audio()
        self.stream = stream
        name = stream.codec_context.name
        copy = name in MP4_AUDIO_COPY if muxer == "mp4" else True
        if copy:
            try:
                self.out = output.add_stream_from_template(stream)
            except (av.FFmpegError, ValueError):
                copy = False
        if not copy:
            self.out = output.add_stream("aac", rate=stream.codec_context.sample_rate or 48000)
            self.out.layout = "mono" if stream.codec_context.channels == 1 else "stereo"
            self.out.format = "fltp"   # the native AAC encoder's only sample format
            log.info("audio %s cannot go into %s as it is; re-encoding it to AAC", name, muxer)
        self.copy = copy
        self.transcoded_from = None if copy else name
        self.output = output
        self._packets = self.container.demux(stream)
        self._next = None
        self._done = False

    def mux_until(self, seconds: float | None) -> None:
        """Write the audio up to `seconds` (None: all of it)."""
        while not self._done:
            if self._next is None:
                self._next = next(self._packets, None)
                if self._next is None:
                    self._done = True
                    break
            packet = self._next
            if packet.dts is None or not packet.size:   # demuxer flush marker
                self._next = None
                continue
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base > seconds:
                break
            self._next = None
            if self.copy:
                packet.stream = self.out
                self.output.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None   # let the encoder count samples
                    self.output.mux(self.out.encode(frame))

    def finish(self) -> None:
        self.mux_until(None)
        if not self.copy:
            self.output.mux(self.out.encode(None))
        self.close()

    def close(self) -> None:
        self.container.close()


class _WaveformAudio:
    """Encodes an in-memory waveform (`C x T` float in [-1, 1], e.g. ComfyUI's AUDIO) to AAC, interleaved
    with the video as it is written."""

    def __init__(self, waveform: Tensor, sample_rate: int, output) -> None:
        wave = waveform.detach().float().clamp(-1, 1).cpu().numpy()
        self.wave = np.ascontiguousarray(wave[:2] if wave.shape[0] > 2 else wave)   # AAC here: mono or stereo
        if wave.shape[0] > 2:
            log.warning("the audio has %d channels; its first two are kept (stereo)", wave.shape[0])
        self.rate = int(sample_rate)
        self.layout = "mono" if self.wave.shape[0] == 1 else "stereo"
        self.out = output.add_stream("aac", rate=self.rate)
        self.out.layout, self.out.format = self.layout, "fltp"
        self.output = output
        self.transcoded_from = "pcm"
        self.position = 0

    def mux_until(self, seconds: float | None) -> None:
        total = self.wave.shape[1]
        end = total if seconds is None else min(total, int(seconds * self.rate) + 1)
        while self.position < end:
            count = min(4096, end - self.position)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(self.wave[:, self.position:self.position + count]), format="fltp",
                layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = self.rate, self.position, Fraction(1, self.rate)
            self.output.mux(self.out.encode(frame))
            self.position += count

    def finish(self) -> None:
        self.mux_until(None)
        self.output.mux(self.out.encode(None))

    def close(self) -> None:
        pass


class VideoWriter(Transaction):
    """Encodes RGB frames into an H.264 yuv420p file (.mp4, .m4v, .mov or .mkv) at `path`.

    fps: nominal rate; time_base: the timestamps' unit (the source's, so its timing is kept);
    audio_from: a `VideoReader` whose audio is copied; audio_waveform: (`C x T` float waveform, sample
    rate) encoded to AAC instead, for sound held in memory; crf: x264 quality (0 lossless, 18 visually
    lossless, 23 default); encoder_options: more libx264 options (e.g. a fixed thread count, for
    byte-identical files on any machine: on one machine the same frames give the same bytes anyway).
    Frames are written to `<stem>.partial-<id><suffix>` beside `path`, which is renamed to `path` by
    `close()`. `abort()` (or leaving a `with` block by an exception) deletes
    it: a colorization cannot be resumed from a partial file, so it would only be a cut-short video
    that looks finished, and the user is told how many frames were done instead.
    Odd frame sizes are padded by one row/column (edge copy): yuv420p needs even sizes, and padding
    keeps every source pixel.
    """

    def __init__(self, path: str | Path, *, fps: Fraction | float = DEFAULT_FPS, time_base: Fraction | None = None,
                 audio_from: VideoReader | None = None, audio_waveform: tuple[Tensor, int] | None = None,
                 crf: int = 18, overwrite: bool = False, encoder_options: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in H264_CONTAINERS:
            raise InputError(f"cannot write H.264 into {self.path.name}: use one of "
                             f"{', '.join(sorted(H264_CONTAINERS))} (or a folder for PNG frames).")
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path} exists; choose another output or pass --overwrite.")
        if not 0 <= crf <= 51:
            raise InputError(f"crf must be between 0 (lossless) and 51, got {crf}.")
        self.muxer = H264_CONTAINERS[suffix]
        self.encoder = h264_encoder()
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.time_base = time_base or 1 / self.fps
        self.audio_from = audio_from
        self.audio_waveform = audio_waveform
        self.crf = crf
        self.encoder_options = dict(encoder_options or {})
        self.count = 0
        self.padded: tuple[int, int] | None = None
        self.audio_transcoded_from: str | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f"{self.path.stem}.partial-{uuid.uuid4().hex[:8]}{self.path.suffix}")
        self._output = None
        self._stream = None
        self._audio: _AudioCopy | _WaveformAudio | None = None
        self._last_pts = -1

    def _start(self, height: int, width: int) -> None:
        options = {"movflags": "+faststart"} if self.muxer in ("mp4", "mov") else {}
        self._output = av.open(str(self.partial), mode="w", format=self.muxer, options=options)
        stream = self._output.add_stream(self.encoder, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        if (stream.width, stream.height) != (width, height):
            self.padded = (stream.width, stream.height)
            log.warning("frames are %dx%d; H.264 yuv420p needs even sizes, so the video is padded to %dx%d "
                        "(last row/column repeated)", width, height, stream.width, stream.height)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        # BT.709 limited range, tagged: what browsers assume for H.264, so colours match the PNGs.
        stream.codec_context.colorspace = 1
        stream.codec_context.color_primaries = 1
        stream.codec_context.color_trc = 1
        stream.codec_context.color_range = 1
        if self.encoder == "libx264":
            stream.options = x264_options(self.crf, self.encoder_options)
        self._stream = stream
        if self.audio_from is not None and self.audio_from.audio is not None:
            self._audio = _AudioCopy(self.audio_from, self._output, self.muxer)
        elif self.audio_waveform is not None:
            self._audio = _WaveformAudio(*self.audio_waveform, self._output)
        if self._audio is not None:
            self.audio_transcoded_from = self._audio.transcoded_from

    def write(self, rgb: Tensor, pts: int | None = None) -> None:
        """rgb: `3 x H x W`, uint8 or float in [0, 1]; pts: presentation time in `time_base` units
        (default: the next frame slot)."""
        if rgb.dtype != torch.uint8:
            rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        array = np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())
        if self._output is None:
            self._start(*array.shape[:2])
        if self.padded is not None:
            array = np.pad(array, ((0, self.padded[1] - array.shape[0]), (0, self.padded[0] - array.shape[1]),
                                   (0, 0)), mode="edge")
        if pts is None or pts <= self._last_pts:
            ticks = max(1, round(1 / (self.fps * self.time_base)))
            pts = self.count * ticks if self._last_pts < 0 else self._last_pts + ticks
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
        frame.pts, frame.time_base = pts, self.time_base
        if self._audio is not None:
            self._audio.mux_until(float(pts * self.time_base))
        self._output.mux(self._stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        """Finish the file (flush, remaining audio, index) and give it its final name."""
        if self._output is None:   # no frame was written: there is no file to finish
            return
        try:
            self._output.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish()
            self._output.close()
        except BaseException:
            self.abort()
            raise
        self._output = None
        os.replace(self.partial, self.path)
        log.info("wrote %d frames to %s", self.count, self.path)

    def abort(self) -> None:
        """Stop without a result: close everything and delete the partial file."""
        for closer in (self._audio.close if self._audio is not None else None,
                       self._output.close if self._output is not None else None):
            if closer is not None:
                try:
                    closer()
                except (av.FFmpegError, OSError) as e:
                    log.debug("ignored while aborting %s: %s", self.partial, e)
        self._audio = self._output = None
        self.partial.unlink(missing_ok=True)
