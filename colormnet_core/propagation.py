"""Propagation per shot: forward (official) or bidirectional between pinned exemplars.

forward: the official schedule, `ColorizeSession` as it is (the default).

bidirectional (a shot with at least two pinned exemplars; with fewer it is forward, bit for bit):
every part of the shot is made of ordinary forward runs (`ColorizeSession`) over a stretch of its
frames, in one direction or the other, so each run is exactly what a session over those frames
gives (bit for bit on the CPU in fp32; tested). With e_first .. e_last the shot's first and last
pinned exemplar:
* stretch e_first..e_last: a forward pass (from e_first: exemplars pinned at or before t, and the
  references, which enter memory at e_first) blended with a backward pass (a run over the
  reversed stretch e_last, e_last - 1, ..., e_first with every exemplar pinned to its mirrored
  index e_last - f, and the references: exemplars pinned at or after t). How they blend:
  `blend.py` (per frame by temporal distance by default; per pixel by confidence on request);
* tail, after e_last: a run restarted at e_last (the exemplar at e_last pinned to its first frame,
  and the references: the backward pass's own starting state), eased into the forward pass, which
  carries on over the first `EASE_FRAMES` frames after e_last: frame e_last + j is
  w_j restart + (1 - w_j) forward, w_j = 1 - j / (EASE_FRAMES + 1); after that the restarted run;
* head, before e_first (only with references; otherwise there is no colour source there): a run
  over the frames e_first, e_first - 1, ..., 0 from the exemplar at e_first and the references.
At a pinned exemplar's frame the output is the exemplar's colour, as in forward.

Why a restart eased in after the last exemplar. Issue 16's design took the plain forward pass
after e_last. Its memory still holds the frames before e_last, which drifted, while the frame just
before e_last is (almost) the backward pass one frame from its exemplar: the colours jumped there,
1.24-1.76x the median two-frame change on the pans below, against 0.59-0.88x at interior keyframes.
Measured with `bench/propagation.py choices` (fixture weights, CPU, processing size 112, 2026-12-06;
clips in that file: pans over the blackswan colour exemplar, W x P = P px per frame, whose true
colours are known; "wipe"; "head" = a 30-frame pan with the whole picture as reference; the shipped
two-shot example at 416x240 without its shot list; the runs computed once and recombined, so rows
differ only by what happens after e_last). Each cell: pop at e_last (x median), CDC, and the mean
CIELAB ab error against the true colours over the frames after e_last:

| clip, keyframes | issue 16 | restart | restart + refs | ease 4 (chosen) | ease 8 |
|---|---|---|---|---|---|
| pan 24, 0,12,20 | 1.43 .03974 39.5 | 0.82 .03841 35.1 | 0.99 .03871 36.4 | 0.80 .03852 36.3 | 0.79 .03833 35.6 |
| pan 30, 0,12,24 | 1.76 .03691 41.0 | 0.78 .03542 35.4 | 0.92 .03576 36.7 | 0.81 .03626 38.3 | 0.78 .03562 36.7 |
| pan 40, 0,10,20 | 1.46 .02975 38.7 | 0.72 .03362 38.8 | 0.87 .03243 38.1 | 0.71 .02994 38.2 | 0.70 .03049 37.9 |
| pan 24x6, 0,8,16 | 1.24 .04499 41.8 | 0.81 .05027 41.3 | 0.76 .04686 40.6 | 0.68 .04555 40.9 | 0.74 .04700 40.6 |
| wipe, 0,10,20 | 0.80 .04089 38.2 | 0.57 .04166 39.8 | 0.59 .04195 40.7 | 0.53 .04136 38.9 | 0.54 .04147 39.3 |
| head, 6,14,22 | 1.67 .04221 40.9 | 0.86 .04265 36.7 | 0.81 .04219 37.2 | 0.69 .04189 39.1 | 0.77 .04175 37.8 |
| two-shot, 0,12 | 1.36 .03564 | 1.22 .03775 | - | 1.26 .03609 | 1.23 .03672 |

("restart + refs": the earlier exemplars of the shot as references of the restarted run; "ease N":
the restarted run eased into the forward pass over N frames; two-shot: frame 12 is also a cut.)
* The restart alone removes the pop and most of the drift (error -4.2 to -5.5 on three clips) but
  raises CDC by up to 13 % (pan 40, pan 24x6): the restarted run holds few memory frames, so each
  new one moves the fixture network's colours more than in the forward pass; with the earlier
  exemplars as references it is in between (up to +9 %).
* The 4-frame ease keeps the pop as low (0.53-0.81x; 1.26x across the two-shot cut) and CDC within
  -3.1 %..+1.3 % of issue 16's on every clip, with the error after e_last lower on five clips of
  six (wipe +0.8). Longer eases lower that error a little more but raise CDC by up to +4.5 % (8
  frames, or as many as the last stretch is long). Hence 4 (`blend.EASE_FRAMES`).

Head. Before e_first the forward pass reads only the references; at e_first + 1 it has the
exemplar, so the colours jump there like forward's own keyframe pop. Same measures, clip "head"
(pop at e_first / CDC / error over the frames before it): forward pass from frame 0 before it
(issue 16) 3.71 / .05514 / 45.1; a run back from e_first, forward pass from frame 0 (its memory
then holds the reference-only frames) 1.50 / .04436 / 34.7; a run back from e_first and the
forward pass started at e_first (the mirror of the backward pass; chosen) 0.83 / .04189 / 34.7.

Streaming and memory: frames are read once, in order. The chroma of the stretch (2 x h x w float32
at the processing size; with the per-pixel blend also its confidence, 1 x h x w) and, unless the
frames can be indexed (a tensor, a list), the input frames up to e_last + EASE_FRAMES are kept in
`SpillBuffer`s, which move to a temporary file past `ram_limit` bytes each; backward runs read the
frames back from the buffer in reverse (never decoding backwards). One session is alive at a time
(each pass's session is released before the next starts). Output of the head starts once its run
is done, the stretch's once its backward pass is done; the tail streams.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .blend import BLENDS, EASE_FRAMES, Blend, backward_weight, ease_weight, pixel_weight
from .compose import compose_rgb
from .config import MemoryConfig
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars
from .network import ColorMNet
from .session import ColorizedFrame, ColorizeSession
from .shot_run import check_pinned_within
from .shots import Shot, ShotDetector, ShotDetectorConfig, detect_shots, needs_exemplar, validate_shots
from .spill import DEFAULT_RAM_LIMIT, ShotFrames, SpillBuffer

log = logging.getLogger(__name__)

Propagation = Literal["forward", "bidirectional"]
PROPAGATIONS: tuple[str, ...] = ("forward", "bidirectional")


def check_propagation(propagation: str) -> None:
    if propagation not in PROPAGATIONS:
        raise InputError(f"propagation must be forward or bidirectional, not {propagation!r}.")


def remap_exemplars(exemplars: EncodedExemplars, to: Callable[[int], int | None]) -> EncodedExemplars:
    """The exemplars with each pinned frame f moved to to(f) (None: dropped); references kept."""
    kept = []
    for e in exemplars.exemplars:
        frame = None if e.frame is None else to(e.frame)
        if e.frame is None or frame is not None:
            kept.append(e if frame == e.frame else dataclasses.replace(e, frame=frame))
    return EncodedExemplars(tuple(kept))


def mirror_exemplars(exemplars: EncodedExemplars, first: int, last: int) -> EncodedExemplars:
    """Exemplars of the backward pass over frames last, last - 1, ..., first: one pinned to frame f in
    [first, last] is pinned to last - f; references are kept; exemplars pinned elsewhere dropped."""
    return remap_exemplars(exemplars, lambda f: last - f if first <= f <= last else None)


def restart_exemplars(exemplars: EncodedExemplars, frame: int) -> EncodedExemplars:
    """Exemplars of a run restarted at `frame` (in either direction): the one pinned there, pinned to
    the run's first frame, and the references."""
    return remap_exemplars(exemplars, lambda f: 0 if f == frame else None)


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
    the module docstring); exemplars: pinned to the shot's own frame indices, and/or references;
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

        shot = _BidirectionalShot(network, exemplars, memory, ShotFrames(frames, buffer), buffer, device=device,
                                  blend=blend, should_stop=should_stop, options=session_options)
        yield from shot.run()


class _Chroma:
    """Chroma (`2 x h x w`), per-frame confidence and optionally confidence maps (`1 x h x w`) of a
    run of frames, by slot, in `SpillBuffer`s (CPU)."""

    def __init__(self, buffer: Callable[[str], SpillBuffer], what: str, maps: bool) -> None:
        self.ab = buffer(f"buffered chroma ({what})")
        self.maps = buffer(f"buffered confidence ({what})") if maps else None
        self.confidence: list[float] = []

    def append(self, result: ColorizedFrame) -> None:
        self.ab.append(result.ab)
        self.confidence.append(result.confidence)
        if self.maps is not None:
            self.maps.append(result.confidence_map)


class _BidirectionalShot:
    """The runs of one shot with at least two pinned exemplars (module docstring), yielding its frames
    in order: head, stretch (forward pass, then the backward pass blended in), tail."""

    def __init__(self, network: ColorMNet, exemplars: EncodedExemplars, memory: MemoryConfig | None,
                 frames: ShotFrames, buffer: Callable[[str], SpillBuffer], *, device: torch.device, blend: Blend,
                 should_stop: Callable[[], bool] | None, options: dict) -> None:
        self.network, self.exemplars, self.memory, self.frames, self.buffer = network, exemplars, memory, frames, buffer
        self.pinned = exemplars.pinned_frames
        self.first, self.last = self.pinned[0], self.pinned[-1]
        self.device, self.blend, self.should_stop = device, blend, should_stop
        self.want_maps = bool(options.get("pixel_confidence", False))
        self.maps = self.want_maps or blend == "pixel"
        self.options = {**options, "pixel_confidence": self.maps}

    def run(self) -> Iterator[ColorizedFrame]:
        if not self.frames.available(self.last):
            check_pinned_within(self.exemplars, self.frames.read)
        if self.first > 0:
            yield from self._head()
        ease = yield from self._stretch()
        yield from self._tail(ease)

    def _session(self, exemplars: EncodedExemplars) -> ColorizeSession:
        return ColorizeSession(self.network, exemplars, self.memory, **self.options)

    def _run(self, exemplars: EncodedExemplars, frames: Iterable[Tensor]) -> Iterator[ColorizedFrame]:
        return self._session(exemplars).run(frames, should_stop=self.should_stop)

    def _head(self) -> Iterator[ColorizedFrame]:
        """Frames 0..first-1: a run from the first exemplar over first, first - 1, ..., 0."""
        first = self.first
        head = _Chroma(self.buffer, "before the first exemplar", self.maps)
        frames = (self.frames[t] for t in range(first, -1, -1))
        for result in self._run(restart_exemplars(self.exemplars, first), frames):
            if result.index:                       # slot first - 1 - t holds frame t
                head.append(result)
        for t in range(first):
            yield self._frame(t, head, first - 1 - t)

    def _stretch(self) -> Generator[ColorizedFrame, None, list[tuple[Tensor, float, Tensor | None]]]:
        """Frames first..last; returns the forward pass's (ab, confidence, map) of the EASE_FRAMES
        frames after last."""
        first, last = self.first, self.last
        stretch = _Chroma(self.buffer, "between exemplars", self.maps)
        ease: list[tuple[Tensor, float, Tensor | None]] = []
        forward = self.exemplars if first == 0 else remap_exemplars(self.exemplars, lambda f: f - first)
        for result in self._run(forward, self.frames.span(first, last + EASE_FRAMES + 1)):
            if first + result.index <= last:
                stretch.append(result)
            else:
                ease.append((result.ab, result.confidence, result.confidence_map))
        self._blend_backward(stretch)
        for t in range(first, last + 1):
            yield self._frame(t, stretch, t - first)
        return ease

    def _blend_backward(self, stretch: _Chroma) -> None:
        """Run the backward pass over the stretch and blend it into `stretch` in place."""
        first, last, pinned = self.first, self.last, set(self.pinned)
        frames = (self.frames[t] for t in range(last, first - 1, -1))
        for result in self._run(mirror_exemplars(self.exemplars, first, last), frames):
            t = last - result.index
            if t in pinned:        # both passes show the exemplar here; keep the forward pass's bits
                continue
            i, s = t - first, self._distance(t)
            forward_ab, forward_c = stretch.ab[i], stretch.confidence[i]
            backward_ab = result.ab.to(forward_ab.device, forward_ab.dtype)
            if self.blend == "pixel":
                w = pixel_weight(s, stretch.maps[i], result.confidence_map.cpu())
                mean_w = float(w.mean())
            else:
                w = mean_w = backward_weight(self.blend, s, forward_c, result.confidence)
            stretch.ab[i] = (1 - w) * forward_ab + w * backward_ab
            stretch.confidence[i] = (1 - mean_w) * forward_c + mean_w * result.confidence
            if stretch.maps is not None:
                stretch.maps[i] = (1 - w) * stretch.maps[i] + w * result.confidence_map.cpu()
        log.info("backward pass over frames %d-%d blended (%s)", first, last, self.blend)

    def _tail(self, ease: list[tuple[Tensor, float, Tensor | None]]) -> Iterator[ColorizedFrame]:
        """Frames after last: the run restarted at the last exemplar, eased into the forward pass."""
        last = self.last
        if not self.frames.available(last + 1):
            return
        for result in self._run(restart_exemplars(self.exemplars, last), self.frames.rest(last)):
            j = result.index
            if j == 0:                  # the exemplar's frame, already given by the stretch
                continue
            if j > len(ease):
                yield result._replace(index=last + j, confidence_map=self._map(result.confidence_map))
                continue
            w = ease_weight(j)
            forward_ab, forward_c, forward_map = ease[j - 1]
            ab = (1 - w) * forward_ab + w * result.ab
            cmap = None if forward_map is None else (1 - w) * forward_map + w * result.confidence_map
            yield self._compose(last + j, ab, (1 - w) * forward_c + w * result.confidence, cmap)

    def _frame(self, t: int, chroma: _Chroma, slot: int) -> ColorizedFrame:
        cmap = None if chroma.maps is None else chroma.maps[slot]
        return self._compose(t, chroma.ab[slot], chroma.confidence[slot], cmap)

    def _compose(self, t: int, ab: Tensor, confidence: float, cmap: Tensor | None) -> ColorizedFrame:
        """The output frame t from its chroma, exactly as a session composes it (`compose_rgb`)."""
        ab = ab.to(self.device)
        rgb = compose_rgb(self.frames[t][None], ab[None], gamut=self.options.get("gamut", "clip"),
                          device=self.device, output_device=self.options.get("output_device", "cpu"))[0]
        return ColorizedFrame(t, rgb, ab, float(confidence), 0, self._map(cmap))

    def _map(self, cmap: Tensor | None) -> Tensor | None:
        return cmap.to(self.device) if self.want_maps and cmap is not None else None

    def _distance(self, t: int) -> float:
        """Where t lies between the exemplars around it: 0 at e_k, 1 at e_k+1."""
        k = bisect.bisect_right(self.pinned, t) - 1
        return (t - self.pinned[k]) / (self.pinned[k + 1] - self.pinned[k])


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
