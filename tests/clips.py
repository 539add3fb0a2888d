"""Tiny synthetic video files made with PyAV for the video tests (no data files needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def frame_pixels(i: int, height: int, width: int) -> np.ndarray:
    """Frame i: a moving diagonal gradient, uint8 `H x W x 3` (distinct per frame, smooth for the encoder)."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 3 + y * 2 + i * 17) % 256
    return np.stack([base, (base + 85) % 256, (255 - base)], axis=-1).astype(np.uint8)


def make_clip(path: Path, *, frames: int = 12, size: tuple[int, int] = (64, 48), fps: int = 12,
              video_codec: str = "libx264", audio_codec: str | None = "aac", audio_seconds: float = 1.0,
              sample_rate: int = 48000, live: bool = False) -> Path:
    """Write a clip: `frames` frames of `size` (width, height) at `fps`, plus `audio_seconds` of a
    440 Hz mono sine in `audio_codec` (None: no audio). live=True writes a Matroska/WebM file the way
    browsers record them: no duration and no index in the header."""
    width, height = size
    options = {"live": "1"} if live else {}
    with av.open(str(path), mode="w", options=options) as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if audio_codec is not None:
            audio = container.add_stream(audio_codec, rate=sample_rate)
            audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, height, width), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            total = int(audio_seconds * sample_rate)
            t = np.arange(total) / sample_rate
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, total, chunk):
                samples = wave[start:start + chunk]
                fmt = audio.format.name   # the encoder's sample format; mono, so packed == planar shape
                data = (samples * 32767).astype(np.int16) if fmt.startswith("s16") else samples
                frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path


def probe(path: Path) -> dict:
    """What a player sees: codecs, pixel format, decoded frame count, timestamps, duration, audio bytes."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        info = {
            "format": container.format.name,
            "video_codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "size": (video.codec_context.width, video.codec_context.height),
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "duration": container.duration / av.time_base if container.duration else None,
        }
        times = [float(f.pts * f.time_base) for f in container.decode(video)]
    info["frames"] = len(times)
    info["times"] = times
    if audio is not None:
        with av.open(str(path)) as container:
            info["audio_bytes"] = sum(p.size for p in container.demux(container.streams.audio[0]) if p.size)
    return info


def panning_field(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """n frames of a smooth random colour field panning 2 px per frame: uint8 `n x H x W x 3`."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 10, 3)).astype(np.float32)
    big = cv2.resize(coarse, (width + 2 * n + 8, height), interpolation=cv2.INTER_CUBIC)
    frames = [big[:, 2 * t:2 * t + width] for t in range(n)]
    return (np.clip(np.stack(frames), 0, 1) * 255).round().astype(np.uint8)


def make_shot_clip(path: Path, *, shots: tuple[int, ...] = (12, 10, 11), size: tuple[int, int] = (96, 64),
                   fps: int = 12, gop: int = 5, audio: bool = True) -> Path:
    """A film in miniature: one shot of `shots[k]` frames per entry, each a different panning colour
    field (hard cuts between them), H.264 with a keyframe every `gop` frames (so shots start between
    keyframes) and, with audio, a 440 Hz AAC track as long as the video."""
    width, height = size
    frames = np.concatenate([panning_field(n, height, width, seed=10 + k) for k, n in enumerate(shots)])
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        video.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = int(len(frames) / fps * 48000)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = wave[start:start + 1024]
                frame = av.AudioFrame.from_ndarray(chunk[None], format=sound.format.name, layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path
