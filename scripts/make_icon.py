"""Writes docs/icon.png, the pack's icon for the Comfy Registry and ComfyUI-Manager: a square crop of
the shipped example's frame 0, split on the diagonal into what goes in (the grayscale frame, decoded from
workflows/media/colormnet_example.mp4) and its colour exemplar (workflows/media/colormnet_example_exemplar.png).
The Registry asks for a square image of at most 400 x 400 pixels.

    python scripts/make_icon.py [--size 256] [--out docs/icon.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / "workflows" / "media"
MAX_SIDE = 400          # the Registry's limit
LINE = 3                # px: the white seam between grey and colour, at the icon's size


def first_frame(path: Path) -> Image.Image:
    """Frame 0 of a video as RGB."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_image().convert("RGB")


def square(image: Image.Image, size: int, centre_x: float) -> Image.Image:
    """The largest square around horizontal position `centre_x` (0-1), resized to `size` (Lanczos)."""
    width, height = image.size
    side = min(width, height)
    left = min(max(round(centre_x * width - side / 2), 0), width - side)
    top = (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def make_icon(size: int, centre_x: float = 0.5) -> Image.Image:
    """Grayscale input above-left of the diagonal, its colour exemplar below-right, a white seam between."""
    if not 16 <= size <= MAX_SIDE:
        raise SystemExit(f"--size must be 16-{MAX_SIDE} pixels (the Registry's limit is {MAX_SIDE}), got {size}.")
    grey = square(first_frame(MEDIA / "colormnet_example.mp4").convert("L").convert("RGB"), size, centre_x)
    colour = square(Image.open(MEDIA / "colormnet_example_exemplar.png").convert("RGB"), size, centre_x)
    ys, xs = np.mgrid[0:size, 0:size]
    offset = xs + ys - (size - 1)                     # < 0 above-left of the anti-diagonal
    out = np.where((offset < 0)[..., None], np.asarray(grey), np.asarray(colour))
    out[np.abs(offset) < LINE] = 255
    return Image.fromarray(out.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "icon.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_icon(args.size).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.size}x{args.size})")


if __name__ == "__main__":
    main()
