"""Writes a small three-shot clip with sound for trying the film workflows: the example clip's frames
0-7 as they are, 8-15 mirrored, 16-23 upside down (three hard cuts a detector finds), with its audio.

    python scripts/make_film_clip.py OUT.mp4 [--source workflows/media/colormnet_example.mp4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from colormnet_core.video_file import VideoReader, VideoWriter  # noqa: E402

SHOT_LENGTH = 8


def shot_view(frame: torch.Tensor, index: int) -> torch.Tensor:
    """Frame `C x H x W` as shown in its shot: as is, mirrored, upside down."""
    shot = index // SHOT_LENGTH
    return frame if shot == 0 else frame.flip(-1) if shot == 1 else frame.flip(-2)


def make(source: Path, target: Path) -> Path:
    reader = VideoReader(source)
    with VideoWriter(target, fps=reader.fps, time_base=reader.time_base, audio_from=reader, crf=18,
                     overwrite=True) as writer:
        for index, frame in enumerate(reader):
            if index >= 3 * SHOT_LENGTH:
                break
            writer.write(shot_view(frame.float() / 255 if frame.dtype == torch.uint8 else frame, index),
                         reader.timestamp(index))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--source", type=Path, default=REPO / "workflows" / "media" / "colormnet_example.mp4")
    args = parser.parse_args()
    print(make(args.source, args.output))


if __name__ == "__main__":
    main()
