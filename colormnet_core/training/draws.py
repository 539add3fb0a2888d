"""The random choices inside one training step: which earlier frames a frame reads, and deep updates.

The official trainer (`model/trainer.py`) makes two kinds of draw per clip of T frames:
* reference frames: frame t reads every earlier frame while t <= num_ref_frames (3), otherwise
  frame 0 plus num_ref_frames - 1 distinct random frames of 1..t-1, in the order
  `[0, randperm(t - 1)[:2] + 1]`;
* deep update: after frame t (t < T - 1) is predicted, its value is encoded with a deep update of the
  hidden state with probability 0.2 - one coin per frame for the whole batch.

It draws them from the process-global torch and NumPy generators, so they depend on the number of
processes and on everything else that used those generators. Here a step's draws come from a
`DrawSource`: `KeyedDraws` derives each draw from (seed, step, clip, frame) alone, so a run draws the
same whether it runs on 1 or N processes and after a resume, with no generator state to carry.
`FixedDraws` replays given choices (e.g. those the official trainer made, for the parity test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_REFERENCE, _COIN = 0, 1   # stream ids inside a KeyedDraws key


class StepDraws(Protocol):
    """The draws of one optimizer step. `clip` is the clip's index in the step's global batch."""

    def reference_frames(self, t: int, clip: int) -> Sequence[int]:
        """Earlier frames (indices < t) that frame t reads from memory, in reading order."""
        ...

    def deep_update(self, t: int) -> bool:
        """Whether the value of frame t (1 <= t < T - 1) deep-updates the hidden state."""
        ...


class DrawSource(Protocol):
    def for_step(self, step: int) -> StepDraws:
        ...


def official_reference_frames(t: int, num_ref_frames: int, permutation: Sequence[int]) -> list[int]:
    """The official choice for frame t given a permutation of range(t - 1): all earlier frames while
    t <= num_ref_frames, else frame 0 and the first num_ref_frames - 1 entries of the permutation + 1."""
    if t <= num_ref_frames:
        return list(range(t))
    return [0, *(int(p) + 1 for p in list(permutation)[:num_ref_frames - 1])]


@dataclass(frozen=True)
class KeyedStepDraws:
    seed: int
    step: int
    num_ref_frames: int
    deep_update_prob: float

    def reference_frames(self, t: int, clip: int) -> list[int]:
        if t <= self.num_ref_frames:
            return list(range(t))
        rng = np.random.default_rng([self.seed, self.step, _REFERENCE, clip, t])
        return official_reference_frames(t, self.num_ref_frames, rng.permutation(t - 1))

    def deep_update(self, t: int) -> bool:
        # One coin per frame for the whole (global) batch, as the official trainer flips one per batch.
        return bool(np.random.default_rng([self.seed, self.step, _COIN, t]).random() < self.deep_update_prob)


@dataclass(frozen=True)
class KeyedDraws:
    """Counter-based draws: a pure function of (seed, step, clip, frame). Seeds must be >= 0."""

    seed: int
    num_ref_frames: int = 3
    deep_update_prob: float = 0.2

    def for_step(self, step: int) -> KeyedStepDraws:
        return KeyedStepDraws(self.seed, step, self.num_ref_frames, self.deep_update_prob)


@dataclass(frozen=True)
class FixedStepDraws:
    """Given choices: references[t][clip] (frames > num_ref_frames only; earlier ones read everything)
    and deep[t] for t = 1..T-2."""

    references: dict[int, list[list[int]]]
    deep: dict[int, bool]
    num_ref_frames: int = 3

    def reference_frames(self, t: int, clip: int) -> list[int]:
        if t <= self.num_ref_frames:
            return list(range(t))
        return list(self.references[t][clip])

    def deep_update(self, t: int) -> bool:
        return self.deep[t]


@dataclass(frozen=True)
class FixedDraws:
    """Replays a list of `FixedStepDraws`, one per step (step 0 first)."""

    steps: tuple[FixedStepDraws, ...]

    def for_step(self, step: int) -> FixedStepDraws:
        if not 0 <= step < len(self.steps):
            raise IndexError(f"FixedDraws holds the draws of {len(self.steps)} steps, not of step {step}.")
        return self.steps[step]
