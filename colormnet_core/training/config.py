"""Training settings: the official stages and the run around them. Frozen and self-validating.

The official ColorMNet release trains one stage, "2" (DAVIS + Videvo clips), with the numbers in
`CLIPS_STAGE` (`util/configuration.py`, `train.py`). Its code base (XMem's) also has a stage "0"
of pseudo-sequences made from single pictures (`dataset/static_dataset.py`); ColorMNet ships no
settings for it, so `STATIC_STAGE` takes XMem's stage-0 numbers - except the crop: XMem's 384 is no
multiple of DINOv2's patch (14), so the pictures are cropped to 448 as the clips are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from ..errors import InputError

OFFICIAL_SEED = 14159265          # train.py seeds torch, NumPy and random with it at every stage

StageKind = Literal["static", "clips"]


@dataclass(frozen=True)
class StageConfig:
    """One training stage. Iteration numbers count optimizer steps (one global batch each)."""

    kind: StageKind
    iterations: int                            # main phase
    finetune: int                              # then this many steps without rotation/shear ("fine-tune")
    lr: float                                  # AdamW learning rate
    lr_milestones: tuple[int, ...]             # MultiStepLR: lr *= gamma at each
    gamma: float = 0.1
    weight_decay: float = 0.05                 # AdamW (decoupled)
    batch_size: int = 2                        # global batch: split evenly over the processes
    num_frames: int = 8                        # T: frames per training clip
    num_ref_frames: int = 3                    # frames a frame reads from memory (frame 0 + 2 random)
    deep_update_prob: float = 0.2
    crop: int = 448                            # square training crop (multiple of 112)
    max_skip: tuple[int, ...] = (5, 10, 15, 5)                 # frame-gap limits, the first from step 0
    skip_fractions: tuple[float, ...] = (0.1, 0.3, 0.9)        # ... the others from these shares of `iterations`

    def __post_init__(self) -> None:
        if self.kind not in ("static", "clips"):
            raise InputError(f"stage kind must be 'static' or 'clips', got {self.kind!r}.")
        if self.iterations < 0 or self.finetune < 0 or self.iterations + self.finetune < 1:
            raise InputError(f"a stage needs at least one step (iterations {self.iterations}, "
                             f"fine-tune {self.finetune}).")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 < self.gamma <= 1:
            raise InputError(f"lr must be > 0, weight decay >= 0 and gamma in (0, 1]; got {self.lr}, "
                             f"{self.weight_decay}, {self.gamma}.")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}.")
        if self.num_frames < 2 or self.num_ref_frames < 1:
            raise InputError(f"a clip needs at least 2 frames and at least 1 reference frame, got "
                             f"{self.num_frames} and {self.num_ref_frames}.")
        if self.crop < 112 or self.crop % 112:
            raise InputError(f"the training crop must be a multiple of 112 pixels, got {self.crop}: use 112, "
                             f"224, 336 or 448 (official).")
        if len(self.max_skip) != len(self.skip_fractions) + 1 or min(self.max_skip) < 1:
            raise InputError("max_skip needs one value more than skip_fractions, each at least 1.")
        if not 0 <= self.deep_update_prob <= 1:
            raise InputError(f"deep_update_prob must be in [0, 1], got {self.deep_update_prob}.")

    @property
    def total_steps(self) -> int:
        return self.iterations + self.finetune

    def max_skip_at(self, step: int) -> int:
        """The frame-gap limit at `step` (official: it switches at round(iterations * fraction))."""
        skip = self.max_skip[0]
        for value, fraction in zip(self.max_skip[1:], self.skip_fractions):
            if step >= round(self.iterations * fraction):
                skip = value
        return skip

    def in_finetune(self, step: int) -> bool:
        return self.finetune > 0 and step >= self.iterations

    def lr_at(self, step: int) -> float:
        return self.lr * self.gamma ** sum(step >= m for m in self.lr_milestones)


CLIPS_STAGE = StageConfig(kind="clips", iterations=150_000, finetune=10_000, lr=2e-5, lr_milestones=(120_000,))
STATIC_STAGE = StageConfig(kind="static", iterations=150_000, finetune=0, lr=1e-5, lr_milestones=(30_000,),
                           batch_size=16, num_frames=3, num_ref_frames=2, crop=448,
                           max_skip=(1,), skip_fractions=())
STAGES: dict[str, StageConfig] = {"0": STATIC_STAGE, "2": CLIPS_STAGE}


def parse_duration(text: str) -> float:
    """'8h', '30m', '90s', '1h30m', '45' (seconds) -> seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise InputError(f"cannot read the duration {text!r}: write e.g. 8h, 30m, 90s or 1h30m.")
    seconds = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(n) * seconds[u] for n, u in parts)


@dataclass(frozen=True)
class RunConfig:
    """The run around the stages: seed, precision, checkpoints, logging."""

    stages: tuple[StageConfig, ...] = field(default_factory=lambda: (CLIPS_STAGE,))
    seed: int = OFFICIAL_SEED
    amp: bool | None = None                    # fp16 autocast + GradScaler; None: on CUDA (official), off elsewhere
    checkpoint_every: int = 1000               # steps between resumable checkpoints ...
    checkpoint_minutes: float = 15.0           # ... or minutes, whichever comes first
    export_every: int = 2500                   # steps between inference exports (.safetensors + .sha256)
    log_every: int = 100                       # steps between TensorBoard scalars
    num_workers: int = 2                       # data-loading processes per training process
    name: str = "colormnet"                    # export file names: <name>_s<stages>_<step>.safetensors

    def __post_init__(self) -> None:
        if not self.stages:
            raise InputError("a training run needs at least one stage.")
        if self.seed < 0:
            raise InputError(f"the seed must be 0 or positive, got {self.seed}.")
        if self.checkpoint_every < 1 or self.export_every < 1 or self.log_every < 1 or self.checkpoint_minutes <= 0:
            raise InputError("checkpoint, export and log intervals must be positive.")
        if self.num_workers < 0:
            raise InputError(f"num_workers must be 0 or more, got {self.num_workers}.")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise InputError(f"the run name {self.name!r} may hold only letters, digits, '_', '-' and '.'.")

    def with_stages(self, codes: str, **overrides) -> RunConfig:
        """The official stages named by `codes` ("2", "0", "02"), each with `overrides` applied."""
        unknown = [c for c in codes if c not in STAGES]
        if not codes or unknown:
            raise InputError(f"unknown training stage(s) {''.join(unknown) or codes!r}: use 0 (pictures), 2 (clips) "
                             f"or 02 (both, in order).")
        return replace(self, stages=tuple(replace(STAGES[c], **overrides) for c in codes))
