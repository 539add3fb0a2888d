"""Makes the example inputs the shipped workflows load, from ../shared/data/blackswan:
colormnet_example.mp4 (24 frames, 416x240, 12 fps) and colormnet_example_exemplar.png (frame 0 in colour).

    python scripts/make_example_media.py OUT_DIR [--frames 24] [--width 416]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
BLACKSWAN = REPO.parent / "shared" / "data" / "blackswan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=416)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frames = sorted((BLACKSWAN / "frames").glob("*.png"))[: args.frames]
    first = cv2.imread(str(frames[0]))
    height = round(first.shape[0] * args.width / first.shape[1] / 2) * 2
    size = (args.width, height)
    writer = cv2.VideoWriter(str(args.out / "colormnet_example.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, size)
    for path in frames:
        writer.write(cv2.resize(cv2.imread(str(path)), size, interpolation=cv2.INTER_AREA))
    writer.release()
    exemplar = cv2.imread(str(BLACKSWAN / "exemplar" / "00000.png"))
    small = cv2.resize(exemplar, size, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(args.out / "colormnet_example_exemplar.png"), small)
    print(f"wrote {args.out}/colormnet_example.mp4 ({len(frames)} frames, {size[0]}x{size[1]}) and the exemplar")


if __name__ == "__main__":
    main()
