"""The runs of one shot with bidirectional propagation (`propagation.colorize_shot`).

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
* The restart alone removes the pop and most of the drift (error -4.2 to -5.6 on three clips) but
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
import dataclasses
import logging
from collections.abc import Callable, Generator, Iterable, Iterator

import torch
from torch import Tensor

from . import blend as blending
from .blend import EASE_FRAMES, Blend, pixel_weight
from .compose import compose_rgb
from .config import MemoryConfig
from .exemplars import EncodedExemplars
from .network import ColorMNet
from .session import ColorizedFrame, ColorizeSession
from .shot_run import check_pinned_within
from .spill import ShotFrames, SpillBuffer

log = logging.getLogger(__name__)

# Bump when bidirectional output changes for the same inputs: film segments rendered with it (shots with
# two or more exemplars) become stale. 1: issue 16; 2: issue 24 (head and tail runs).
BIDIRECTIONAL_VERSION = 2


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


class BidirectionalShot:
    """The runs of one shot with at least two pinned exemplars (module docstring), yielding its frames
    in order: head, stretch (forward pass, then the backward pass blended in), tail.

    frames: the shot's frames (`ShotFrames`); buffer: makes the `SpillBuffer`s (closed by the
    caller); device: where the sessions compute; options: `ColorizeSession`'s keyword options."""

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
                w = mean_w = blending.backward_weight(self.blend, s, forward_c, result.confidence)
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
            w = blending.ease_weight(j)
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
