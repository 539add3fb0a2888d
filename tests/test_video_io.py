"""Video files in and out (PyAV): H.264 with the source's audio and timing, streams of unknown length,
files that are not videos refused up front, no finished-looking partial outputs. No model needed."""

from __future__ import annotations

import ctypes
import hashlib
import shutil
from contextlib import contextmanager

import av
import cv2
import numpy as np
import pytest
import torch

from colormnet_core.errors import InputError
from colormnet_core.video_file import VideoReader, VideoWriter
from colormnet_core.video_io import FrameSource, FrameWriter

from .clips import make_clip, panning_field, probe


def copy_through(source_path, target, **writer_options):
    """Read every frame and write it back (inverted, as a stand-in for colorizing)."""
    source = FrameSource(source_path)
    with FrameWriter(target, source=source, **writer_options) as writer:
        for index, frame in enumerate(source):
            writer.write(255 - frame, index)
    return source, writer


def test_mp4_with_audio_becomes_h264_with_the_same_audio_and_timing(tmp_path):
    clip = make_clip(tmp_path / "film.mp4", frames=12, size=(64, 48), fps=12, audio_codec="aac")
    source, writer = copy_through(clip, tmp_path / "out.mp4")
    assert source.count == 12 and source.fps == 12 and source.video.audio.codec == "aac"
    before, after = probe(clip), probe(tmp_path / "out.mp4")
    assert after["video_codec"] == "h264" and after["pix_fmt"] == "yuv420p" and after["size"] == (64, 48)
    assert after["frames"] == before["frames"] == 12
    assert after["times"] == pytest.approx(before["times"], abs=1e-6)
    assert abs(after["duration"] - before["duration"]) < 1 / 12
    # Copied packet for packet, not re-encoded.
    assert after["audio_codec"] == "aac" and after["audio_bytes"] == before["audio_bytes"] > 0
    assert writer.video.audio_transcoded_from is None
    # The frames are the written ones, in order (H.264 crf 18 + 4:2:0 chroma: a few levels off).
    written = [255 - f.int() for f in FrameSource(clip)]
    decoded = [f.int() for f in FrameSource(tmp_path / "out.mp4")]
    errors = torch.tensor([[(d - w).abs().float().mean() for w in written] for d in decoded])
    assert torch.equal(errors.argmin(1), torch.arange(12)) and errors.diagonal().max() < 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mp4", "out.mp4"]   # no partial file left


def test_audio_an_mp4_cannot_hold_is_reencoded_to_aac(tmp_path):
    clip = make_clip(tmp_path / "film.mkv", audio_codec="pcm_s16le")
    _, writer = copy_through(clip, tmp_path / "out.mp4")
    after = probe(tmp_path / "out.mp4")
    assert writer.video.audio_transcoded_from == "pcm_s16le" and after["audio_codec"] == "aac"
    assert after["frames"] == 12 and abs(after["duration"] - 1.0) < 1 / 12
    # Into Matroska the same PCM is copied as it is.
    _, writer = copy_through(clip, tmp_path / "out.mkv")
    assert writer.video.audio_transcoded_from is None and probe(tmp_path / "out.mkv")["audio_codec"] == "pcm_s16le"


def test_webm_without_duration_is_read_to_its_end(tmp_path):
    clip = make_clip(tmp_path / "recording.webm", frames=15, fps=10, video_codec="libvpx", audio_codec="libopus",
                     audio_seconds=1.5, live=True)
    assert probe(clip)["duration"] is None                  # as browsers write them
    source, _ = copy_through(clip, tmp_path / "out.mp4")
    assert source.count is None and source.estimated_count is None
    after = probe(tmp_path / "out.mp4")
    assert after["frames"] == 15 and after["audio_codec"] == "opus"
    assert after["times"] == pytest.approx([i / 10 for i in range(15)], abs=1e-3)


def test_an_image_renamed_mp4_is_refused_when_opened(tmp_path):
    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((48, 64, 3), np.uint8))
    shutil.copy(tmp_path / "still.png", tmp_path / "film.mp4")
    with pytest.raises(InputError, match=r"film.mp4 is a single PNG image, not a video .*folder of frames"):
        FrameSource(tmp_path / "film.mp4")


@pytest.mark.parametrize("damage", ["text", "half"])
def test_a_damaged_file_is_refused_when_opened(tmp_path, damage):
    clip = make_clip(tmp_path / "film.mp4", audio_codec=None)
    data = clip.read_bytes()
    clip.write_bytes(b"not a video at all" * 20 if damage == "text" else data[:len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read .*film.mp4 as a video .*damaged.*Re-export"):
        VideoReader(clip)


def test_pinned_frames_are_checked_against_the_frames_really_there(tmp_path):
    clip = make_clip(tmp_path / "film.mp4", frames=40, audio_codec=None)
    # Index at the front (as streaming-friendly files have it), then cut the file after frame 20's
    # data: the header still promises 40 frames.
    faststart = tmp_path / "faststart.mp4"
    _remux(clip, faststart, {"movflags": "+faststart"})
    with av.open(str(faststart)) as container:
        ends = sorted(p.pos + p.size for p in container.demux(video=0) if p.size)
    faststart.write_bytes(faststart.read_bytes()[:ends[19]])
    source = FrameSource(faststart)
    assert source.count == 40
    source.require_frame(3)
    source.require_frame(19)
    with pytest.raises(InputError, match=r"pinned to frame 20, but faststart.mp4 has 20 frames \(0-19\)"):
        source.require_frame(20)
    assert len(list(source)) == 20
    FrameSource(clip).require_frame(39)
    with pytest.raises(InputError, match="pinned to frame 40, but film.mp4 has 40 frames"):
        FrameSource(clip).require_frame(40)


def test_a_failed_or_cancelled_write_leaves_no_file(tmp_path):
    clip = make_clip(tmp_path / "film.mp4")
    source = FrameSource(clip)
    target = tmp_path / "out" / "film_colour.mp4"
    with pytest.raises(KeyboardInterrupt), FrameWriter(target, source=source) as writer:
        for index, frame in enumerate(source):
            writer.write(frame, index)
            if index == 5:
                assert any(p.name.startswith("film_colour.partial-") for p in target.parent.iterdir())
                raise KeyboardInterrupt
    assert list(target.parent.iterdir()) == []


def test_odd_sizes_are_padded_and_bad_targets_refused_before_work(tmp_path, caplog):
    clip = make_clip(tmp_path / "odd.mp4", audio_codec=None)
    with VideoWriter(tmp_path / "odd_out.mp4", fps=12) as writer:
        for frame in FrameSource(clip):
            writer.write(frame[:, :47, :63])
    assert writer.padded == (64, 48) and "padded to 64x48" in caplog.text
    assert probe(tmp_path / "odd_out.mp4")["size"] == (64, 48)
    with pytest.raises(InputError, match=r"cannot write H.264 into x.webm: use one of .m4v, .mkv, .mov, .mp4"):
        VideoWriter(tmp_path / "x.webm")
    with pytest.raises(InputError, match="exists; choose another output or pass --overwrite"):
        VideoWriter(tmp_path / "odd_out.mp4")


def _remux(source, target, options):
    with av.open(str(source)) as src, av.open(str(target), "w", options=options) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0], opaque=True)
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)



def test_sound_held_in_memory_is_encoded_to_aac(tmp_path):
    rate = 16000
    wave = torch.sin(torch.arange(rate) / rate * 2 * torch.pi * 440)[None].repeat(2, 1) * 0.3   # 1 s stereo
    with VideoWriter(tmp_path / "out.mp4", fps=10, audio_waveform=(wave, rate)) as writer:
        for i in range(10):
            writer.write(torch.full((3, 48, 64), i * 20, dtype=torch.uint8))
    after = probe(tmp_path / "out.mp4")
    assert writer.audio_transcoded_from == "pcm" and after["audio_codec"] == "aac" and after["frames"] == 10
    assert abs(after["duration"] - 1.0) < 0.1
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert decoded.shape[0] == 2 and abs(decoded.shape[1] - rate) < 2048 and 0.2 < np.abs(decoded).max() < 0.4


@contextmanager
def heap_filled_with(byte: int):
    """Every block malloc hands out meanwhile comes filled with `~byte` (glibc's M_PERTURB; elsewhere a
    no-op, and the test below then only compares two runs)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        mallopt = None
    m_perturb = -6
    if mallopt is not None:
        mallopt(m_perturb, byte)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(m_perturb, 0)


def test_the_same_frames_give_the_same_bytes_whatever_the_heap_held(tmp_path):
    # A task may run twice (Ray retries, farm re-renders) and must write the same bytes. x264's AVX-512
    # macroblock-tree code reads heap bytes it never wrote when the width in macroblocks (here 6) is
    # not a multiple of 8; a colorization run between two frames leaves different bytes there than a
    # fresh process does. Filling new allocations with a different byte in each run makes any such
    # dependence show (without VideoWriter's x264 options: 4 fills, 4 different files, on AVX-512).
    rng = np.random.default_rng(5)
    noise = rng.integers(-20, 20, (8, 64, 96, 3))
    frames = np.clip(panning_field(8, 64, 96, seed=5) + noise, 0, 255).astype(np.uint8)
    digests = set()
    for fill in (0, 0x55, 0xAA, 0xEE):
        path = tmp_path / f"fill{fill}.mp4"
        with heap_filled_with(fill), VideoWriter(path, fps=12) as writer:
            for pixels in frames:
                writer.write(torch.from_numpy(pixels).permute(2, 0, 1))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
