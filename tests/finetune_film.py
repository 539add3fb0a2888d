"""A tiny film of real footage for the fine-tuning tests: tiles of DAVIS *blackswan*.

The only colour picture of real footage in tests/data is blackswan's exemplar (the colour version of
frame 0). The film cuts the 416x240 clip into a 3 x 2 grid of 138x120 tiles; shot k shows tile k
through frames 0..3 (real motion of the grey footage), and its exemplar is tile k of the colour
exemplar, pinned to the shot's first frame. So every shot has its own content (water, swan, bank)
with the film's one palette: what a film project's exemplars look like to a fine-tune.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from colormnet_core.film import FilmProject
from colormnet_core.shots import Shot

from . import golden

TILE_W, TILE_H = 138, 120
GRID = [(r, c) for r in range(2) for c in range(3)]


def tile(image: torch.Tensor, k: int) -> torch.Tensor:
    """Tile k of a `3 x 240 x 416` picture: `3 x 120 x 138`."""
    r, c = GRID[k]
    return image[:, r * TILE_H:(r + 1) * TILE_H, c * TILE_W:(c + 1) * TILE_W].contiguous()


def exemplar_tiles() -> list[torch.Tensor]:
    """The six colour tiles of blackswan's exemplar, uint8 `3 x 120 x 138`."""
    colour = golden.load_png(golden.BLACKSWAN / "exemplar" / "00000.png")
    return [tile(colour, k) for k in range(len(GRID))]


def make_tile_film(folder: Path, *, frames_per_shot: int = 4, exemplars: int = 6) -> FilmProject:
    """A project of six shots (tiles, `frames_per_shot` frames each) with the first `exemplars` shots'
    exemplars saved."""
    grey = [golden.load_png(p) for p in sorted((golden.BLACKSWAN / "frames").glob("*.png"))[:frames_per_shot]]
    video = folder / "tiles.mp4"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = TILE_W, TILE_H, "yuv420p"
        stream.options = {"crf": "12"}
        index = 0
        for k in range(len(GRID)):
            for frame in grey:
                pixels = np.ascontiguousarray(tile(frame, k).permute(1, 2, 0).numpy())
                out = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                out.pts, out.time_base = index, Fraction(1, 12)
                container.mux(stream.encode(out))
                index += 1
        container.mux(stream.encode(None))
    shots = [Shot(k * frames_per_shot, (k + 1) * frames_per_shot - 1) for k in range(len(GRID))]
    project = FilmProject.init(video, folder / "project", shots=shots)
    for k, picture in enumerate(exemplar_tiles()[:exemplars]):
        project.save_exemplar(k * frames_per_shot, picture)
    return project
