"""What reading one shot costs in a long film: seek to the keyframe before it and decode forward,
against decoding the film from its start (what a renderer without an index would have to do).

Makes a long synthetic H.264 file (default 90 minutes at 24 frames/s, 320x180, a keyframe every
250 frames as x264's default), indexes it as `film init` does, then times reading a 48-frame shot
near the end both ways. Usage: python bench/film_seek.py [--minutes 90] [--out bench/film_seek.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colormnet_core.film.source import index_source, read_frames  # noqa: E402


def make_film(path: Path, frames: int, size: tuple[int, int], fps: int) -> None:
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(frames):
            base = ((x * 2 + y + i * 3) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.stack([base, base // 2, 255 - base], -1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=90)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--shot", type=int, default=48, help="frames in the shot read")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    frames = int(args.minutes * 60 * args.fps)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "film.mp4"
        started = time.perf_counter()
        make_film(path, frames, (320, 180), args.fps)
        made = time.perf_counter() - started
        started = time.perf_counter()
        index = index_source(path)
        indexed = time.perf_counter() - started
        first, last = frames - args.shot - 100, frames - 101
        started = time.perf_counter()
        count = sum(1 for _ in read_frames(path, index, first, last))
        seek = time.perf_counter() - started
        started = time.perf_counter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = 0
            for decoded, frame in enumerate(container.decode(stream), 1):   # noqa: B007
                if decoded > last:
                    frame.to_ndarray(format="rgb24")
        linear = time.perf_counter() - started
        result = {"frames": frames, "size": "320x180", "gop": index.keyframes[1] if len(index.keyframes) > 1 else None,
                  "file_mb": round(path.stat().st_size / 2**20, 1), "make_s": round(made, 1),
                  "index_s": round(indexed, 2), "shot": [first, last], "shot_frames_read": count,
                  "seek_and_decode_s": round(seek, 3), "decode_from_start_s": round(linear, 2),
                  "speedup": round(linear / seek, 1)}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
