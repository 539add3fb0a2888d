"""Training data: clips from folders of colour frames, and pseudo-sequences from single pictures.

Both give `(image T x 3 x H x W, ab T x 2 x H x W)` in the official normalised Lab (see
`forward.ClipBatch`): the grey input is made from the colour frames themselves.

Randomness is keyed: the sampler hands every item a seed derived from (run seed, epoch, position in
the epoch's global order) and the item draws from a NumPy RandomState with that seed in the order the
official dataset draws from the global NumPy generator. An item is therefore the same on any number
of processes or data-loading workers, and after a resume, with no generator state to carry.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..errors import InputError
from .augment import ClipAugmentation, PictureAugmentation, lab_planes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SEED_RANGE = 2147483647        # the official draws its per-sequence / per-frame seeds below this

Item = tuple[Tensor, Tensor]    # image T x 3 x H x W (L' x 3), ab T x 2 x H x W


def item_seed(seed: int, epoch: int, position: int) -> int:
    """The 32-bit seed of the item at `position` of `epoch`'s global order."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_array(array: np.ndarray, what: str) -> None:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"{what} must be H x W x 3 uint8 RGB, got {array.shape} {array.dtype}.")


def _open_rgb(picture: str | Path | np.ndarray) -> Image.Image:
    """An RGB PIL image from a file or an `H x W x 3` uint8 array."""
    if isinstance(picture, np.ndarray):
        return Image.fromarray(picture)
    with Image.open(picture) as im:
        return im.convert("RGB")


def _to_item(frames: list[Image.Image]) -> Item:
    planes = [lab_planes(f) for f in frames]
    light = torch.stack([p[0] for p in planes])
    return light.expand(-1, 3, -1, -1).contiguous(), torch.stack([p[1] for p in planes])


def sample_frame_indices(length: int, num_frames: int, max_skip: int, rng: np.random.RandomState) -> list[int]:
    """The official frame sampling: a first frame uniformly, then each next one uniformly from the
    frames within max_skip of any frame chosen so far (not yet chosen); sorted, reversed half the time.
    Draws from `rng` exactly as the official draws from NumPy's global generator."""
    skip = min(length, max_skip)
    chosen = [int(rng.randint(length))]
    # A set, as the official: np.random.choice over list(set) depends on the set's iteration order.
    allowed = set(range(max(0, chosen[-1] - skip), min(length, chosen[-1] + skip + 1))).difference(set(chosen))
    while len(chosen) < num_frames:
        chosen.append(int(rng.choice(list(allowed))))
        around = set(range(max(0, chosen[-1] - skip), min(length, chosen[-1] + skip + 1)))
        allowed = allowed.union(around).difference(set(chosen))
    chosen.sort()
    if rng.rand() < 0.5:
        chosen.reverse()
    return chosen


class ClipFolderDataset(Dataset):
    """The official DAVISVidevoDataset layout: `root/<clip>/<frame>.png|jpg`, colour frames sorted by
    name; clips with fewer than `num_frames` frames are skipped (as the official). Index with
    `(clip index, item seed)` (see `KeyedSampler`). `from_frames` takes clips held in memory."""

    def __init__(self, root: str | Path, *, num_frames: int = 8, max_skip: int = 5, crop: int = 448,
                 finetune: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"training clips folder not found: {root}. Give a folder with one sub-folder of "
                             f"colour frames per clip (root/<clip>/00000.png ...).")
        self.root, self.num_frames, self.max_skip, self.crop = root, num_frames, max_skip, crop
        self.augment = ClipAugmentation(crop, finetune=finetune)
        self.clips: list[tuple[str, list[Path]]] = []
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            frames = _images_in(folder)
            if len(frames) >= num_frames:
                self.clips.append((folder.name, frames))
        if not self.clips:
            raise InputError(f"no usable clip in {root}: each clip is a sub-folder of at least {num_frames} colour "
                             f"frames ({', '.join(IMAGE_SUFFIXES)}); found {len(folders)} sub-folder(s).")
        log.info("%d of %d clips in %s have at least %d frames", len(self.clips), len(folders), root, num_frames)

    @classmethod
    def from_frames(cls, clips: Sequence[Sequence[np.ndarray]], *, num_frames: int = 8, max_skip: int = 5,
                    crop: int = 448, finetune: bool = False) -> ClipFolderDataset:
        """Clips held in memory: each a sequence of RGB uint8 `H x W x 3` frames in film order (e.g. colour
        frames of a film, for fine-tuning). Clips shorter than `num_frames` are refused, not skipped: the
        caller chose them."""
        short = [i for i, clip in enumerate(clips) if len(clip) < num_frames]
        if not clips or short:
            raise InputError(f"training clips need at least {num_frames} frames each; clip(s) {short or 'none'} "
                             f"of {len(clips)} have fewer: give longer runs of consecutive colour frames.")
        for clip in clips:
            for frame in clip:
                _check_array(frame, "a training clip's frame")
        other = cls.__new__(cls)
        other.root, other.num_frames, other.max_skip, other.crop = None, num_frames, max_skip, crop
        other.augment = ClipAugmentation(crop, finetune=finetune)
        other.clips = [(f"clip{i}", list(clip)) for i, clip in enumerate(clips)]
        return other

    def __len__(self) -> int:
        return len(self.clips)

    def phase(self, *, max_skip: int, finetune: bool) -> ClipFolderDataset:
        """The same clips with the official schedule's frame-gap limit and fine-tune augmentation."""
        other = copy.copy(self)
        other.max_skip = max_skip
        other.augment = ClipAugmentation(self.crop, finetune=finetune)
        return other

    def frames_of(self, index: int, rng: np.random.RandomState) -> tuple[list[int], list[Image.Image]]:
        """The official sampling and augmentation of clip `index` (frame indices, augmented frames)."""
        _, paths = self.clips[index]
        chosen = sample_frame_indices(len(paths), self.num_frames, self.max_skip, rng)
        clip_seed = int(rng.randint(_SEED_RANGE))
        frames = []
        for i in chosen:
            frames.append(self.augment(_open_rgb(paths[i]), clip_seed, int(rng.randint(_SEED_RANGE))))
        return chosen, frames

    def __getitem__(self, key: tuple[int, int]) -> Item:
        index, seed = key
        return _to_item(self.frames_of(index, np.random.RandomState(seed))[1])


class PictureDataset(Dataset):
    """Pseudo-sequences of `num_frames` frames made from single colour pictures by the official static
    augmentation. `pictures`: image files, or RGB uint8 arrays `H x W x 3` (e.g. a film's exemplars)."""

    def __init__(self, pictures: Sequence[str | Path | np.ndarray], *, num_frames: int = 3, crop: int = 448) -> None:
        if not pictures:
            raise InputError("no pictures to train on: give at least one colour image.")
        for p in pictures:
            if isinstance(p, np.ndarray):
                _check_array(p, "a training picture array")
        self.pictures = list(pictures)
        self.num_frames = num_frames
        self.augment = PictureAugmentation(crop)

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> PictureDataset:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"pictures folder not found: {folder}.")
        paths = _images_in(folder)
        if not paths:
            raise InputError(f"no pictures in {folder} ({', '.join(IMAGE_SUFFIXES)}).")
        return cls(paths, **kwargs)

    def __len__(self) -> int:
        return len(self.pictures)

    def phase(self, *, max_skip: int, finetune: bool) -> PictureDataset:
        """Pictures have no frame gaps and the official static stage no fine-tune phase: unchanged."""
        return self

    def _picture(self, index: int) -> Image.Image:
        return _open_rgb(self.pictures[index])

    def frames_of(self, index: int, rng: np.random.RandomState) -> list[Image.Image]:
        picture = self._picture(index)
        sequence_seed = int(rng.randint(_SEED_RANGE))
        return [self.augment(picture, sequence_seed, int(rng.randint(_SEED_RANGE)), rng)
                for _ in range(self.num_frames)]

    def __getitem__(self, key: tuple[int, int]) -> Item:
        index, seed = key
        return _to_item(self.frames_of(index, np.random.RandomState(seed)))


class KeyedSampler(Sampler):
    """This process's share of one epoch, as `(dataset index, item seed)` pairs.

    An epoch is a random order of the items (torch.randperm seeded with seed + epoch, as
    DistributedSampler does) cut into global batches of `batch_size`, the last incomplete one dropped
    (the official loader drops it too). Rank r takes the slice [r b, (r + 1) b) of every global batch,
    b = batch_size / world_size: the clips that DDP rank r computes as clips r b... of the global batch.
    Unlike DistributedSampler's interleaving, this makes an epoch the same global batches on any number
    of processes. `start`: global batches of the epoch already consumed (a resume).
    """

    def __init__(self, size: int, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.rank, self.local = rank, batch_size // world_size
        self.batches = size // batch_size
        self.start = start

    def __len__(self) -> int:
        return max(0, self.batches - self.start) * self.local

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        for k in range(self.start, self.batches):
            for j in range(self.local):
                position = k * self.batch_size + self.rank * self.local + j
                yield order[position], item_seed(self.seed, self.epoch, position)
