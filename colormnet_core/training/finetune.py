"""Fine-tuning a network on one film's own colour pictures (its exemplars), with before/after scores.

Training data (the official training, `trainer.Trainer`, one short stage):
* every training picture becomes pseudo-sequences of `num_frames` frames by the official static-image
  augmentation (`PictureDataset`: affine, flip, colour jitter, thin-plate warps), cropped to `size`;
* colour frames of the film, when given, become clips (`ClipFolderDataset.from_frames`: the official
  clip sampling and augmentation, frame gaps up to `clip_max_skip`);
* AdamW at a constant `learning_rate` (the official static stage's 1e-5 by default), the official
  per-step draws (`KeyedDraws`), fp16 autocast on CUDA and fp32 elsewhere, the family's frozen parts
  (`families.py`).

Held-out scores: before training, `holdout` of the pictures (and of the clips, when there are at
least two) is set aside, chosen by the seed, and never trained on. Each held-out picture is scored
on one pseudo-sequence of `holdout_frames` frames made from it by the same static augmentation
under a fixed seed; each held-out clip on its first `holdout_frames` frames, centre-cropped to
`size`. A sequence is colorized by the inference session (`ColorizeSession`, fp32, official memory
settings) from its first frame's colours pinned as the exemplar, the rest given as grey. PSNR and
SSIM (`metrics.psnr` / `metrics.ssim`, 8-bit RGB) are averaged over every frame after the first;
CDC (`metrics.cdc`) is computed per sequence over all its frames and averaged over sequences.
This measures what a render does: carrying a shot's exemplar through the moving, re-lit frames of
that shot, on pictures the tuning never saw.

Determinism: everything random is keyed on `seed` (the held-out choice, the augmentations, the
draws, the data order); on a CPU the same inputs give the same weights bit for bit. The caller's
network is never modified: training runs on a copy.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..errors import Cancelled, InputError
from ..network import ColorMNet
from .config import OFFICIAL_SEED, STATIC_STAGE, StageConfig
from .datasets import ClipFolderDataset, PictureDataset
from .distributed import ProcessGroup
from .holdout import HoldoutScores, holdout_sequences, score_holdout
from .trainer import Trainer, derived_seed

log = logging.getLogger(__name__)

MIN_TRAINING_ITEMS = 2        # pictures (+ clips) left to train on after the held-out share
RECOMMENDED_PICTURES = 8      # fewer works, but the gain is then small and uncertain
MIN_PICTURE_SIDE = 64         # pixels, short side: smaller pictures are blown up past recognition
MIN_COLOURFULNESS = 2.0       # mean max-min channel spread (8-bit) below which a picture counts as grey
_HOLDOUT_KEY = 7              # derived_seed streams of a fine-tune: 7 held-out choice, 8 held-out sequences


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings. Self-validating (InputError naming the fix)."""

    steps: int = 300                            # optimizer steps
    learning_rate: float = STATIC_STAGE.lr      # AdamW lr, constant (official static stage: 1e-5)
    size: int = 448                             # square crop of the training sequences (multiple of 112)
    holdout: float = 0.2                        # share of pictures (and clips) held out for scores; 0: none
    seed: int = OFFICIAL_SEED                   # keys everything random
    batch_size: int = 1                         # sequences per optimizer step
    num_frames: int = STATIC_STAGE.num_frames   # T: frames per training sequence (official static: 3)
    num_ref_frames: int = STATIC_STAGE.num_ref_frames
    weight_decay: float = STATIC_STAGE.weight_decay
    clip_max_skip: int = 5                      # largest gap between sampled frames of a colour clip
    holdout_frames: int = 6                     # frames of each held-out sequence (the first is the exemplar)
    unlock_backbone: bool = False               # DINOv3 family: train its ViT too (CMNET2's --unlock_backbone)
    amp: bool | None = None                     # fp16 autocast; None: on CUDA only
    num_workers: int = 0                        # data-loading processes (0: in this one); same data either way

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"fine-tuning needs at least 1 step, got {self.steps}; a few hundred is typical.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)) or self.learning_rate > 1e-2:
            raise InputError(f"learning rate {self.learning_rate} is out of range: use a value in (0, 0.01]; "
                             f"the official static stage uses {STATIC_STAGE.lr}.")
        if self.size < 112 or self.size % 112:
            raise InputError(f"the fine-tuning size must be a multiple of 112 pixels, got {self.size}: use 112, "
                             f"224, 336 or 448 (official).")
        if not 0 <= self.holdout < 1:
            raise InputError(f"holdout is the share of pictures kept out of training, in [0, 1), got {self.holdout}.")
        if self.seed < 0:
            raise InputError(f"the seed must be 0 or positive, got {self.seed}.")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}.")
        if self.num_frames < 2 or self.num_ref_frames < 1:
            raise InputError(f"a training sequence needs at least 2 frames and 1 reference frame, got "
                             f"{self.num_frames} and {self.num_ref_frames}.")
        if self.weight_decay < 0 or self.clip_max_skip < 1 or self.num_workers < 0:
            raise InputError("weight decay and num_workers must be >= 0, clip_max_skip >= 1.")
        if self.holdout_frames < 2:
            raise InputError(f"a held-out sequence needs at least 2 frames (an exemplar and one to score), got "
                             f"{self.holdout_frames}.")

    def stage(self) -> StageConfig:
        """The training stage this fine-tune runs: the static stage's optimiser, this length and lr, no decay."""
        return StageConfig(kind="static", iterations=self.steps, finetune=0, lr=self.learning_rate,
                           lr_milestones=(), weight_decay=self.weight_decay, batch_size=self.batch_size,
                           num_frames=self.num_frames, num_ref_frames=self.num_ref_frames, crop=self.size,
                           max_skip=(self.clip_max_skip,), skip_fractions=())


@dataclass(frozen=True)
class FinetuneStep:
    """Given to `on_step` after every optimizer step (step is 1-based)."""

    step: int
    steps: int
    loss: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class FinetuneResult:
    network: ColorMNet                      # a new network in eval mode on the input's device
    steps_done: int
    cancelled: bool                         # should_stop() said so; network = weights after steps_done steps
    losses: tuple[float, ...]
    before: HoldoutScores | None            # None when nothing was held out
    after: HoldoutScores | None             # None when nothing was held out or when cancelled
    seconds: float


# -- data ---------------------------------------------------------------------------------------------


def _as_array(picture: Tensor | np.ndarray, what: str) -> np.ndarray:
    """`3 x H x W` float [0, 1] or uint8 tensor (or an `H x W x 3` uint8 array) -> `H x W x 3` uint8."""
    if isinstance(picture, np.ndarray):
        array = picture
    elif isinstance(picture, Tensor):
        if picture.dim() != 3 or picture.shape[0] not in (3, 4):
            raise InputError(f"{what} must be a colour picture 3 x H x W, got shape {tuple(picture.shape)}.")
        rgb = picture[:3].detach().cpu()
        if rgb.dtype != torch.uint8:
            rgb = (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8)
        array = rgb.permute(1, 2, 0).numpy()
    else:
        raise InputError(f"{what} must be a tensor 3 x H x W, got {type(picture).__name__}.")
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"{what} must be RGB, got an array of shape {array.shape} ({array.dtype}).")
    return np.ascontiguousarray(array)


def _colourfulness(array: np.ndarray) -> float:
    """Mean over pixels of max - min of the three channels (8-bit): 0 for a grey picture."""
    sample = array[:: max(1, array.shape[0] // 128), :: max(1, array.shape[1] // 128)].astype(np.int16)
    return float((sample.max(axis=2) - sample.min(axis=2)).mean())


@dataclass(frozen=True)
class _Material:
    pictures: list[np.ndarray]              # training stills
    clips: list[list[np.ndarray]]           # training clips
    held_pictures: list[np.ndarray]
    held_clips: list[list[np.ndarray]]


def _held_count(n: int, share: float) -> int:
    """How many of n items are held out: round(share x n), at least 1 when share > 0, never all of them."""
    if share == 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(share * n)))


def _split(n: int, share: float, seed: int, stream: int) -> tuple[list[int], list[int]]:
    """(training, held-out) indices: the held-out ones chosen by the seed."""
    held = _held_count(n, share)
    order = np.random.default_rng([seed, _HOLDOUT_KEY, stream]).permutation(n).tolist()
    return sorted(order[held:]), sorted(order[:held])


def _frames_of(colour_frames) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """colour_frames entries: `3 x H x W` (a still of the film: trained like a picture) or `T x 3 x H x W`
    (a clip of consecutive frames)."""
    stills, clips = [], []
    for i, item in enumerate(colour_frames):
        if isinstance(item, Tensor) and item.dim() == 4:
            clips.append([_as_array(f, f"frame {t} of colour clip {i}") for t, f in enumerate(item)])
        else:
            stills.append(_as_array(item, f"colour frame {i}"))
    return stills, clips


def _material(pictures: Sequence, config: FinetuneConfig, colour_frames=()) -> _Material:
    arrays = [_as_array(p, f"picture {i}") for i, p in enumerate(pictures)]
    stills, clips = _frames_of(colour_frames)
    arrays += stills
    train_p, held_p = _split(len(arrays), config.holdout, config.seed, 0)
    train_c, held_c = _split(len(clips), config.holdout, config.seed, 1)
    return _Material([arrays[i] for i in train_p], [clips[i] for i in train_c], [arrays[i] for i in held_p],
                     [clips[i] for i in held_c])


def check_finetune_data(pictures: Sequence, config: FinetuneConfig, colour_frames: Sequence = ()) -> None:
    """InputError with advice when there is too little to learn from: fewer than MIN_TRAINING_ITEMS
    pictures (+ clips) left after the held-out share, pictures below MIN_PICTURE_SIDE pixels, grey
    pictures, clips shorter than a training sequence. Logs a warning below RECOMMENDED_PICTURES."""
    arrays = [_as_array(p, f"picture {i}") for i, p in enumerate(pictures)]
    stills, clips = _frames_of(colour_frames)
    small = [i for i, a in enumerate(arrays + stills) if min(a.shape[:2]) < MIN_PICTURE_SIDE]
    if small:
        raise InputError(f"picture(s) {small} are smaller than {MIN_PICTURE_SIDE} pixels on a side: give the "
                         f"exemplars at the film's resolution (they are cropped to {config.size} pixels).")
    grey = [i for i, a in enumerate(arrays + stills) if _colourfulness(a) < MIN_COLOURFULNESS]
    if grey:
        raise InputError(f"picture(s) {grey} have no colour (grey or nearly): fine-tuning learns colours from "
                         f"colour pictures; replace them by the coloured exemplars, or leave them out.")
    short = [i for i, c in enumerate(clips) if len(c) < max(config.num_frames, 2)]
    if short:
        raise InputError(f"colour clip(s) {short} have fewer than {config.num_frames} frames: give runs of at "
                         f"least {config.num_frames} consecutive frames, or give single frames as stills.")
    n_pictures, n_clips = len(arrays) + len(stills), len(clips)
    held = _held_count(n_pictures, config.holdout) + _held_count(n_clips, config.holdout)
    training = n_pictures + n_clips - held
    needed = max(MIN_TRAINING_ITEMS, config.batch_size)
    if training < needed or (config.holdout > 0 and held == 0):
        wanted = needed + (1 if config.holdout > 0 else 0)
        raise InputError(
            f"too little to learn from: {n_pictures} colour picture(s) and {n_clips} clip(s), of which {held} "
            f"held out for the before/after scores, leave {training} to train on; fine-tuning needs at least "
            f"{wanted} pictures (with holdout {config.holdout}), and {RECOMMENDED_PICTURES} or more to gain "
            f"reliably. Add exemplars (one colour picture per shot, e.g. exemplars/<first frame>.png in a film "
            f"project), or colour frames of the film, or hold out nothing (holdout 0: then no scores).")
    if n_pictures + n_clips < RECOMMENDED_PICTURES:
        log.warning("only %d colour pictures/clips: the fine-tune may gain little; %d or more are recommended",
                    n_pictures + n_clips, RECOMMENDED_PICTURES)


class FinetuneData:
    """The training items (`trainer.TrainingData`): pseudo-sequences of the pictures, then the clips."""

    def __init__(self, material: _Material, config: FinetuneConfig) -> None:
        self.pictures = (PictureDataset(material.pictures, num_frames=config.num_frames, crop=config.size)
                         if material.pictures else None)
        self.clips = (ClipFolderDataset.from_frames(material.clips, num_frames=config.num_frames,
                                                    max_skip=config.clip_max_skip, crop=config.size)
                      if material.clips else None)

    def __len__(self) -> int:
        return sum(len(d) for d in (self.pictures, self.clips) if d is not None)

    def phase(self, *, max_skip: int, finetune: bool) -> FinetuneData:
        other = copy.copy(self)
        if self.clips is not None:
            other.clips = self.clips.phase(max_skip=max_skip, finetune=finetune)
        return other

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        first = len(self.pictures) if self.pictures is not None else 0
        if index < first:
            return self.pictures[index, seed]
        return self.clips[index - first, seed]


# -- training -----------------------------------------------------------------------------------------


def _holdout(material: _Material, config: FinetuneConfig) -> list[list[Tensor]]:
    return holdout_sequences(material.held_pictures, material.held_clips, frames=config.holdout_frames,
                             size=config.size, seed=derived_seed(config.seed, 8))


def _trainer(network: ColorMNet, material: _Material, config: FinetuneConfig, device: torch.device) -> Trainer:
    return Trainer(network, config.stage(), FinetuneData(material, config), seed=config.seed,
                   group=ProcessGroup(device=device), amp=config.amp, num_workers=config.num_workers,
                   unlock_backbone=config.unlock_backbone)


def _training_copy(network: ColorMNet, device: torch.device) -> ColorMNet:
    """A copy of `network` on `device`, every parameter trainable (the Trainer freezes by family)."""
    if not isinstance(network, ColorMNet):
        raise InputError(f"fine-tuning needs a ColorMNet network (from load_model), got {type(network).__name__}.")
    return copy.deepcopy(network).to(device).requires_grad_(True)


def _trainable(function):
    """Runs `function` with autograd on, also when called under `torch.inference_mode()` or `no_grad`
    (ComfyUI runs every node under inference mode, where nothing can be trained)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return function(*args, **kwargs)
    return wrapper


@_trainable
def estimate_finetune_seconds(network: ColorMNet, pictures: Sequence, config: FinetuneConfig,
                              device: torch.device | str = "cpu", colour_frames: Sequence = (),
                              should_stop: Callable[[], bool] | None = None) -> float | None:
    """Seconds `finetune_network` will take with these inputs on `device`, measured: two training steps
    on a copy of the network (the second one timed; the first pays for warm-up) and one held-out
    sequence colorized, scaled to `config.steps` and to the held-out sequences scored twice.

    should_stop: polled before each of those three pieces of work; None when it said stop (a Cancel
    during the estimate waits for one step at most, not for the whole estimate)."""
    check_finetune_data(pictures, config, colour_frames)
    device = torch.device(device)
    stopped = should_stop or (lambda: False)
    material = _material(pictures, config, colour_frames)
    started = time.perf_counter()
    trainer = _trainer(_training_copy(network, device), material, replace(config, steps=2), device)
    setup = time.perf_counter() - started
    seconds = []
    for _ in range(2):
        if stopped():
            return None
        seconds.append(trainer.step().seconds)
    sequences = _holdout(material, config)
    score = 0.0
    if sequences:
        if stopped():
            return None
        began = time.perf_counter()
        score_holdout(trainer.network, sequences[:1], pictures=1, clips=0, device=device)
        score = (time.perf_counter() - began) * len(sequences) * 2
    return setup + config.steps * seconds[-1] + score


@_trainable
def finetune_network(network: ColorMNet, pictures: Sequence, config: FinetuneConfig, *,
                     device: torch.device | str = "cpu", colour_frames: Sequence = (),
                     on_step: Callable[[FinetuneStep], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> FinetuneResult:
    """Fine-tune a copy of `network` on colour `pictures` (+ `colour_frames`); see the module docstring.

    pictures: colour pictures, each `3 x H x W` float32 sRGB in [0, 1] or uint8, any size (e.g.
    `Exemplar.image`). colour_frames: colour frames of the film: `3 x H x W` stills (trained like
    pictures) or `T x 3 x H x W` clips of consecutive frames. device: where to train (the result is
    moved back to the input network's device). on_step: after every optimizer step. should_stop:
    polled before every step and every held-out frame; when it says stop, training ends there with
    `cancelled=True` (no "after" scores). InputError (before any work) when there is too little data.
    """
    started = time.perf_counter()
    check_finetune_data(pictures, config, colour_frames)
    device = torch.device(device)
    home = next(network.parameters()).device
    material = _material(pictures, config, colour_frames)
    sequences = _holdout(material, config)
    held = {"pictures": len(material.held_pictures), "clips": len(material.held_clips)}
    tuned = _training_copy(network, device)
    stop = should_stop or (lambda: False)
    before = after = None
    losses: list[float] = []
    cancelled = False
    try:
        if sequences:
            before = score_holdout(tuned.eval(), sequences, device=device, should_stop=stop, **held)
            log.info("held-out before: %s", before.describe())
        trainer = _trainer(tuned, material, config, device)
        began = time.perf_counter()
        while not trainer.done:
            if stop():
                raise Cancelled(f"fine-tuning cancelled after {len(losses)} of {config.steps} steps.")
            result = trainer.step()
            losses.append(result.loss)
            if on_step is not None:
                elapsed = time.perf_counter() - began
                on_step(FinetuneStep(len(losses), config.steps, result.loss, elapsed,
                                     elapsed / len(losses) * (config.steps - len(losses))))
        tuned = trainer.tuned_network()
        if sequences:
            after = score_holdout(tuned, sequences, device=device, should_stop=stop, **held)
            log.info("held-out after %d steps: %s", len(losses), after.describe())
    except Cancelled:
        cancelled, after = True, None
    tuned = tuned.eval().requires_grad_(False).to(home)
    return FinetuneResult(tuned, len(losses), cancelled, tuple(losses), before, after,
                          time.perf_counter() - started)

