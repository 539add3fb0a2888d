"""Propagation per shot: forward (official) or bidirectional between pinned exemplars.

forward: the official schedule, `ColorizeSession` as it is (the default).

bidirectional: between two consecutive exemplars e_k < e_k+1 of a shot, a forward pass from e_k
and a backward pass from e_k+1 are blended per frame. The passes:
* forward pass = the ordinary forward run over the whole shot: at frame t it has seen every
  exemplar pinned at or before t (and the references);
* backward pass = an ordinary forward run over the reversed stretch e_last, e_last - 1, ..., e_first
  (first and last exemplar of the shot) with every exemplar pinned to the mirrored index
  e_last - f (and the references, which enter memory at its first frame, e_last): at frame t it
  has seen every exemplar pinned at or after t. It is exactly that run (bit-identical on the CPU
  in fp32), nothing of the forward pass leaks into it.
Frames before the first exemplar and after the last take the forward pass (the only one that
reaches frames after the last; before the first, the forward pass reads the references, and
keeping it there makes one exemplar per shot bit-identical to forward). At a pinned exemplar's
frame the output is the exemplar's colour, as in forward.

Blend: per frame, by the temporal distance (`blend="distance"`, the default): frame t between e_k
and e_k+1 is (1 - s) * forward + s * backward in chroma (a/110, b/110 at the processing size),
s = (t - e_k) / (e_k+1 - e_k); the confidence is blended the same way. Measured with
bench/propagation.py (fixture weights, CPU, size 112; pans over the blackswan exemplar, so every
keyframe is a true colour frame; pop = chroma change k-1 -> k+1 over the clip's median two-frame
change; all numbers in bench/RESULTS.md):

| clip, keyframes | forward pop / CDC | distance | confidence | distance x confidence |
|---|---|---|---|---|
| 17 frames, 0,8,16 | 0.99 / 0.0580 | 0.78 / 0.0385 | 0.41 / 0.0404 | 0.90 / 0.0387 |
| 30 frames, 0,12,24 | 1.41, 2.09 / 0.0454 | 0.59, 1.76 / 0.0369 | 0.51, 1.35 / 0.0338 | 0.63, 1.89 / 0.0379 |
| 37 frames, 0,18,36 | 3.08 / 0.0331 | 0.88 / 0.0326 | 0.71 / 0.0290 | 0.93 / 0.0343 |

median two-frame change (Lab units): 17 frames 20.6 forward, 7.9 distance, 12.5 confidence, 7.1
distance x confidence; 30 frames 6.4, 7.6, 8.5, 7.2; 37 frames 6.6, 7.6, 8.4, 7.3.
Why distance: every blend removes the interior pop (<= 0.93x the median against 0.99-3.08x
forward) and lowers CDC (one exception: distance x confidence on the 37-frame clip). Weighting by
the passes' confidence gives the lowest pop ratios, but mostly because the frame-to-frame change
it is divided by grows by 10-60 %: the confidence of each pass jumps from frame to frame, and so
does the weight, which is the flicker the blend is there to remove (absolute pops differ by ~15 %).
Distance weights are smooth in t, reach exactly 0 and 1 at the exemplars (a frame next to an
exemplar is that exemplar's pass) and do not depend on the checkpoint's similarity scale, which
the fixture weights cannot calibrate. The pop at the last exemplar (1.76 on the 30-frame clip) is
forward-only territory after it: the forward pass carries the earlier, drifted frames in memory.
Per pixel: not tried; the session reports one confidence per frame, and the per-pixel best match
(stride 16, inside `MFPMemory`) is not public. It is the next thing to measure once the shot unit
exposes it; the other blends stay selectable (`blend=`) to re-measure on the real weights.

Streaming and memory: frames of the shot are read once, in order. While the forward pass crosses
e_first..e_last, its chroma (2 x h x w float32 at the processing size) and, unless the frames can
be indexed (a tensor, a list), the input frames are kept in `SpillBuffer`s, which move to a
temporary file past `ram_limit` bytes each; the backward pass then reads the frames back from the
buffer in reverse (never decoding backwards), and each of its frames is blended into the chroma
buffer in place; finally the stretch is emitted in order, RGB rebuilt by `compose.compose_rgb`.
Output of the stretch therefore starts only once the backward pass is done.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Literal

from torch import Tensor

from .compose import compose_rgb
from .config import MemoryConfig
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars, Exemplar
from .network import ColorMNet
from .session import ColorizedFrame, ColorizeSession
from .shots import Shot, ShotDetector, ShotDetectorConfig, detect_shots, needs_exemplar, validate_shots
from .spill import DEFAULT_RAM_LIMIT, SpillBuffer

log = logging.getLogger(__name__)

Propagation = Literal["forward", "bidirectional"]
Blend = Literal["distance", "confidence", "distance_confidence"]
PROPAGATIONS: tuple[str, ...] = ("forward", "bidirectional")


def check_propagation(propagation: str) -> None:
    if propagation not in PROPAGATIONS:
        raise InputError(f"propagation must be forward or bidirectional, not {propagation!r}.")


def backward_weight(blend: Blend, distance: float, forward_confidence: float, backward_confidence: float) -> float:
    """Weight in [0, 1] of the backward pass at a frame `distance` of the way from e_k (0) to e_k+1 (1).

    distance: linear in the frame index; confidence: the passes' match confidence (`ColorizeSession`)
    in proportion; distance_confidence: both (each pass's confidence times its nearness)."""
    if blend == "distance":
        return distance
    if blend == "confidence":
        total = forward_confidence + backward_confidence
        return backward_confidence / total if total > 0 else distance
    near_b, near_f = distance * backward_confidence, (1 - distance) * forward_confidence
    return near_b / (near_b + near_f) if near_b + near_f > 0 else distance


def mirror_exemplars(exemplars: EncodedExemplars, first: int, last: int) -> EncodedExemplars:
    """Exemplars of the backward pass over frames last, last - 1, ..., first: one pinned to frame f in
    [first, last] is pinned to last - f; references are kept; exemplars pinned elsewhere dropped."""
    return EncodedExemplars(tuple(
        Exemplar(e.image, None if e.frame is None else last - e.frame, e.reference)
        for e in exemplars.exemplars if e.frame is None or first <= e.frame <= last))


def shot_exemplars(exemplars: EncodedExemplars, shot: Shot) -> EncodedExemplars:
    """The exemplars of one shot, pinned frames counted from the shot's first frame; references kept."""
    return EncodedExemplars(tuple(
        Exemplar(e.image, None if e.frame is None else e.frame - shot.first, e.reference)
        for e in exemplars.exemplars if e.frame is None or shot.holds(e.frame)))


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
    (indexed, not copied) or any iterable (read once; the stretch between the first and last exemplar
    is buffered, see the module docstring); exemplars: pinned to the shot's own frame indices, and/or
    references; session_options: `ColorizeSession`'s (size, device, precision, key_batch,
    output_device, compile, gamut), not shots. ram_limit: bytes per buffer before it spills to a
    temporary file in `spill_dir`. Yields `ColorizedFrame`s with shot 0; with fewer than two pinned
    exemplars, or propagation "forward", exactly `ColorizeSession(...).run(frames)`.
    """
    check_propagation(propagation)
    if blend not in ("distance", "confidence", "distance_confidence"):
        raise InputError(f"blend must be distance, confidence or distance_confidence, not {blend!r}.")
    if "shots" in session_options:
        raise InputError("colorize_shot colorizes one shot; give the shots to colorize_video instead.")
    pinned = exemplars.pinned_frames
    if propagation == "forward" or len(pinned) < 2:
        yield from ColorizeSession(network, exemplars, memory, **session_options).run(frames, should_stop=should_stop)
        return
    with contextlib.ExitStack() as stack:
        def buffer(what: str) -> SpillBuffer:
            return stack.enter_context(SpillBuffer(ram_limit=ram_limit, directory=spill_dir, what=what))

        indexed = _indexable(frames)
        stretch_frames = frames if indexed else buffer("buffered frames")
        chroma = buffer("buffered chroma")
        source = frames if indexed else _tap(frames, pinned[0], pinned[-1], stretch_frames)
        forward = ColorizeSession(network, exemplars, memory, **session_options)
        confidence: list[float] = []
        for result in forward.run(source, should_stop=should_stop):
            if not pinned[0] <= result.index <= pinned[-1]:
                yield result
                continue
            chroma.append(result.ab)
            confidence.append(result.confidence)
            if result.index == pinned[-1]:
                stretch = _Stretch(pinned, stretch_frames, 0 if indexed else pinned[0], chroma, confidence)
                _blend_backward(stretch, network, exemplars, memory, blend, should_stop, session_options)
                yield from stretch.emit(forward, session_options)


class _Stretch:
    """Frames first..last (the first and last pinned exemplar of a shot) between the two passes."""

    def __init__(self, pinned: list[int], frames, offset: int, chroma: SpillBuffer, confidence: list[float]) -> None:
        self.pinned, self.first, self.last = pinned, pinned[0], pinned[-1]
        self.frames, self.offset, self.chroma, self.confidence = frames, offset, chroma, confidence

    def frame(self, t: int) -> Tensor:
        return self.frames[t - self.offset]

    def distance(self, t: int) -> float:
        """Where t lies between the exemplars around it: 0 at e_k, 1 at e_k+1."""
        k = bisect.bisect_right(self.pinned, t) - 1
        return (t - self.pinned[k]) / (self.pinned[k + 1] - self.pinned[k])

    def emit(self, forward: ColorizeSession, options: dict) -> Iterator[ColorizedFrame]:
        device = forward.device
        for t in range(self.first, self.last + 1):
            ab = self.chroma[t - self.first].to(device)
            rgb = compose_rgb(self.frame(t)[None], ab[None], gamut=options.get("gamut", "clip"), device=device,
                              output_device=options.get("output_device", "cpu"))[0]
            yield ColorizedFrame(t, rgb, ab, self.confidence[t - self.first], 0)


def _blend_backward(stretch: _Stretch, network: ColorMNet, exemplars: EncodedExemplars, memory: MemoryConfig | None,
                    blend: Blend, should_stop: Callable[[], bool] | None, options: dict) -> None:
    """Run the backward pass over the stretch and blend it into `stretch.chroma` and its confidence."""
    first, last, pinned = stretch.first, stretch.last, set(stretch.pinned)
    backward = ColorizeSession(network, mirror_exemplars(exemplars, first, last), memory, **options)
    reversed_frames = (stretch.frame(t) for t in range(last, first - 1, -1))
    for result in backward.run(reversed_frames, should_stop=should_stop):
        t = last - result.index
        if t in pinned:        # both passes show the exemplar here; keep the forward pass's bits
            continue
        i = t - first
        w = backward_weight(blend, stretch.distance(t), stretch.confidence[i], result.confidence)
        forward_ab = stretch.chroma[i]
        stretch.chroma[i] = (1 - w) * forward_ab + w * result.ab.to(forward_ab.device, forward_ab.dtype)
        stretch.confidence[i] = (1 - w) * stretch.confidence[i] + w * result.confidence
    log.info("backward pass over frames %d-%d blended (%s)", first, last, blend)


def _indexable(frames: Iterable[Tensor]) -> bool:
    return isinstance(frames, (Tensor, Sequence, SpillBuffer))


def _tap(frames: Iterable[Tensor], first: int, last: int, store: SpillBuffer) -> Iterator[Tensor]:
    """Pass frames through, keeping frames first..last in `store`."""
    for t, frame in enumerate(frames):
        if first <= t <= last:
            store.append(frame)
        yield frame


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
        if self._auto and _indexable(frames):
            shots = detect_shots(frames, config=self.shot_config)
        elif self._auto:
            yield from self._buffered_shots(frames)
            return
        if shots is None:
            yield None, frames
            return
        iterator = None if _indexable(frames) else iter(frames)
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
