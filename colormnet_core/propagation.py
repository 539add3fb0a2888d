"""Propagation per shot: forward (official) or bidirectional between pinned exemplars.

forward: the official schedule, `ColorizeSession` as it is (the default).

bidirectional: between a shot's pinned exemplars, a forward and a backward pass are blended, and
runs restarted at the shot's last (and first) exemplar continue after (and before) them, so colours
do not jump at keyframes. How and why, with the measurements: `bidirectional.py` (the runs of one
shot) and `blend.py` (how they are mixed). With fewer than two pinned exemplars in a shot it is
forward, bit for bit.

This module holds the entry points: `colorize_shot` (one shot), `PropagatingSession` (a video shot
by shot, `ColorizeSession`'s surface) and `make_session`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Literal

from torch import Tensor

from .bidirectional import BidirectionalShot, remap_exemplars
from .blend import BLENDS, Blend
from .config import MemoryConfig
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars
from .network import ColorMNet
from .session import ColorizedFrame, ColorizeSession
from .shot_run import check_pinned_within
from .shots import Shot, ShotDetector, ShotDetectorConfig, detect_shots, needs_exemplar, validate_shots
from .spill import DEFAULT_RAM_LIMIT, ShotFrames, SpillBuffer

Propagation = Literal["forward", "bidirectional"]
PROPAGATIONS: tuple[str, ...] = ("forward", "bidirectional")


def check_propagation(propagation: str) -> None:
    if propagation not in PROPAGATIONS:
        raise InputError(f"propagation must be forward or bidirectional, not {propagation!r}.")


def shot_exemplars(exemplars: EncodedExemplars, shot: Shot) -> EncodedExemplars:
    """The exemplars of one shot, pinned frames counted from the shot's first frame; references kept."""
    return remap_exemplars(exemplars, lambda f: f - shot.first if shot.holds(f) else None)


def colorize_shot(
    network: ColorMNet,
    frames: Iterable[Tensor],
    exemplars: EncodedExemplars,
    memory: MemoryConfig | None = None,
    *,
    propagation: Propagation = "forward",
    blend: Blend = "distance",
    should_stop: Callable[[], bool] | None = None,
    ram_limit: int = DEFAULT_RAM_LIMIT,
    spill_dir: str | Path | None = None,
    **session_options,
) -> Iterator[ColorizedFrame]:
    """Colorize one shot (a continuous take; its frames numbered from 0) lazily, in frame order.

    frames: the shot's `C x H x W` frames (uint8 or float [0, 1]): a `T x C x H x W` tensor or list
    (indexed, not copied) or any iterable (read once; what the passes read again is buffered, see
    `bidirectional.py`); exemplars: pinned to the shot's own frame indices, and/or references;
    blend: see `blend.py`; session_options: `ColorizeSession`'s (size, device, precision,
    key_batch, output_device, compile, gamut, pixel_confidence), not shots. ram_limit: bytes per
    buffer before it spills to a temporary file in `spill_dir`. Yields `ColorizedFrame`s with shot
    0; with fewer than two pinned exemplars, or propagation "forward", exactly
    `ColorizeSession(...).run(frames)`.
    """
    check_propagation(propagation)
    if blend not in BLENDS:
        raise InputError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}.")
    if "shots" in session_options:
        raise InputError("colorize_shot colorizes one shot; give the shots to colorize_video instead.")
    if propagation == "forward" or len(exemplars.pinned_frames) < 2:
        yield from ColorizeSession(network, exemplars, memory, **session_options).run(frames, should_stop=should_stop)
        return
    # The session checks the options and that frame 0 has a colour source, as forward would.
    device = ColorizeSession(network, exemplars, memory, **session_options).device
    if isinstance(frames, Sized):
        check_pinned_within(exemplars, len(frames))
    with contextlib.ExitStack() as stack:
        def buffer(what: str) -> SpillBuffer:
            return stack.enter_context(SpillBuffer(ram_limit=ram_limit, directory=spill_dir, what=what))

        shot = BidirectionalShot(network, exemplars, memory, ShotFrames(frames, buffer), buffer, device=device,
                                 blend=blend, should_stop=should_stop, options=session_options)
        yield from shot.run()


class PropagatingSession:
    """A whole video colorized shot by shot with `colorize_shot` (bidirectional propagation).

    The part of `ColorizeSession`'s surface that callers use: `run`, `report`, `frames_done`,
    `shots`, `confidence`. Arguments as `ColorizeSession`'s (shots: None = one shot, a list, or
    "auto"), plus `colorize_shot`'s (propagation, blend, ram_limit, spill_dir). Every shot is
    colorized on its own (memory and hidden state start afresh at each cut, as with
    `reset_at_cuts`), so the carry-over across cuts (`reset_at_cuts=False`) is forward-only.
    With "auto", shots are detected before they are colorized: on an indexed input (a tensor, a
    list) in a first pass over the luminance; on a stream each shot is buffered (spilling to disk
    past ram_limit) until its cut is seen, so a file is still decoded once.
    """

    def __init__(self, network: ColorMNet, exemplars: EncodedExemplars, memory: MemoryConfig | None = None, *,
                 propagation: Propagation = "bidirectional", shots: Sequence[Shot] | Literal["auto"] | None = None,
                 shot_config: ShotDetectorConfig | None = None, blend: Blend = "distance",
                 ram_limit: int = DEFAULT_RAM_LIMIT, spill_dir: str | Path | None = None, **options) -> None:
        check_propagation(propagation)
        if options.pop("reset_at_cuts", True) is False and shots is not None:
            raise InputError(f"propagation {propagation} colorizes every shot on its own; carrying memory across "
                             f"cuts (reset_at_cuts=False) works with forward propagation only.")
        # The session checks every option, and every listed shot's colour source, with the video's numbers.
        ColorizeSession(network, exemplars, memory, shots=shots, shot_config=shot_config, **options)
        self.network, self.exemplars, self.memory_config = network, exemplars, memory
        self.propagation, self.options = propagation, options
        self._shot_list = None if shots is None or shots == "auto" else validate_shots(shots)
        self._auto = shots == "auto"
        self.shot_config = shot_config
        self._shot_options = dict(propagation=propagation, blend=blend, ram_limit=ram_limit, spill_dir=spill_dir)
        self._confidence: list[float] = []
        self._shots_done: list[Shot] = []

    @property
    def frames_done(self) -> int:
        return len(self._confidence)

    @property
    def shots(self) -> list[Shot]:
        """The shots of the frames done so far."""
        current = [Shot(self._next_first, self.frames_done - 1)] if self.frames_done > self._next_first else []
        return self._shots_done + current

    @property
    def confidence(self) -> list[float]:
        """Per-frame match confidence (blended like the chroma in a bidirectional stretch)."""
        return list(self._confidence)

    @property
    def _next_first(self) -> int:
        return self._shots_done[-1].last + 1 if self._shots_done else 0

    def report(self, *, low: float = 0.5, min_run: int = 10) -> dict:
        """`ColorizeSession.report`'s keys, plus "propagation"."""
        shots, confidence = self.shots, self.confidence
        return {
            "shots": [[s.first, s.last] for s in shots],
            "confidence": [round(c, 6) for c in confidence],
            "needs_exemplar": needs_exemplar(shots, confidence, self.exemplars.pinned_frames, low=low, min_run=min_run),
            "reset_at_cuts": self._shot_list is not None or self._auto,
            "propagation": self.propagation,
        }

    def run(self, frames: Iterable[Tensor], *, on_frame: Callable[[ColorizedFrame], bool | None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[ColorizedFrame]:
        """As `ColorizeSession.run`; a bidirectional stretch is yielded once its backward pass is done."""
        total = len(frames) if isinstance(frames, Sized) else None
        if total == 0:
            raise InputError("the video has no frames; check the input path or the node that loads it.")
        if total is not None:
            outside = [f for f in self.exemplars.pinned_frames if f >= total]
            if outside:
                raise InputError(f"exemplar(s) pinned to frame(s) {outside}, but the video has {total} frames "
                                 f"(0-{total - 1}); pin them to frames that exist or use them as references.")
            if self._shot_list is not None:
                validate_shots(self._shot_list, total)
        for index, (shot, shot_frames) in enumerate(self._split(frames)):
            local = self.exemplars if shot is None else shot_exemplars(self.exemplars, shot)
            first = self._next_first
            if shot is not None:
                self._check_source(index, shot)
            for result in colorize_shot(self.network, shot_frames, local, self.memory_config,
                                        should_stop=should_stop, **self._shot_options, **self.options):
                result = result._replace(index=result.index + first, shot=index)
                self._confidence.append(result.confidence)
                if on_frame is not None and on_frame(result) is False:
                    raise Cancelled(f"stopped by the caller after {result.index + 1} frames.")
                yield result
            self._shots_done.append(Shot(first, self.frames_done - 1))
        if self._shot_list is not None and self.frames_done != self._shot_list[-1].last + 1:
            raise InputError(f"the shots cover frames 0-{self._shot_list[-1].last} but the video had "
                             f"{self.frames_done} frames; make the shot list match the video.")

    def _split(self, frames: Iterable[Tensor]) -> Iterator[tuple[Shot | None, Iterable[Tensor]]]:
        """(shot, its frames) in order; shot None = the whole video as one shot, length unknown."""
        shots = self._shot_list
        if self._auto and ShotFrames.indexable(frames):
            shots = detect_shots(frames, config=self.shot_config)
        elif self._auto:
            yield from self._buffered_shots(frames)
            return
        if shots is None:
            yield None, frames
            return
        iterator = None if ShotFrames.indexable(frames) else iter(frames)
        for shot in shots:
            if iterator is None:
                yield shot, frames[shot.first:shot.last + 1]
            else:
                yield shot, itertools.islice(iterator, shot.length)

    def _buffered_shots(self, frames: Iterable[Tensor]) -> Iterator[tuple[Shot, SpillBuffer]]:
        detector = ShotDetector(self.shot_config)
        opts = self._shot_options
        buffer = SpillBuffer(ram_limit=opts["ram_limit"], directory=opts["spill_dir"], what="frames of a shot")
        first = 0
        try:
            for t, frame in enumerate(frames):
                if detector.push(frame) and len(buffer):
                    yield Shot(first, t - 1), buffer
                    buffer.close()
                    buffer, first = SpillBuffer(ram_limit=opts["ram_limit"], directory=opts["spill_dir"],
                                                what="frames of a shot"), t
                buffer.append(frame)
            if not len(buffer):
                raise InputError("the video has no frames; check the input path or the node that loads it.")
            yield Shot(first, first + len(buffer) - 1), buffer
        finally:
            buffer.close()

    def _check_source(self, index: int, shot: Shot) -> None:
        if self.exemplars.references or shot.first in self.exemplars.pinned_frames:
            return
        raise InputError(
            f"shot {index} (frames {shot.first}-{shot.last}) has no exemplar pinned to its first frame "
            f"{shot.first} and there is no reference, so nothing gives frames from {shot.first} on colours. Pin an "
            f"exemplar to frame {shot.first}, add a reference exemplar, or give the shot list yourself.")


def make_session(network: ColorMNet, exemplars: EncodedExemplars, memory: MemoryConfig | None = None, *,
                 propagation: Propagation = "forward", **options) -> ColorizeSession | PropagatingSession:
    """The session for `propagation`: "forward" gives `ColorizeSession` itself (the official
    behaviour, unchanged); "bidirectional" a `PropagatingSession`. options: both classes' keywords
    (blend, ram_limit and spill_dir only with bidirectional)."""
    check_propagation(propagation)
    if propagation == "forward":
        extra = sorted(set(options) & {"blend", "ram_limit", "spill_dir"})
        if extra:
            raise InputError(f"{', '.join(extra)} apply to bidirectional propagation only.")
        return ColorizeSession(network, exemplars, memory, **options)
    return PropagatingSession(network, exemplars, memory, propagation=propagation, **options)
