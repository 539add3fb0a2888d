"""One video's colorization: frames in, colour frames out, with our exemplar, size and shot extensions.

The session turns frames into network inputs (Lab at the processing geometry, keys encoded in
batches), hands each frame to the current `ShotRun` (`shot_run.py`: the official per-frame schedule,
memory and hidden state over one continuous run) and rebuilds full-resolution RGB from the predicted
chroma and the input's own luminance.

Shots (ours): with a shot list (or "auto" detection) and `reset_at_cuts`, every shot is colorized as
if it were a video of its own: memory, hidden state and the schedule start afresh at its first frame,
its last frame is treated as the official last frame, key batches never span a cut, and references
enter memory again at each shot's first frame. So shot k's output is bit-identical (CPU, fp32) to a
separate session over shot k's frames with the exemplars pinned inside it (and the references).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .allocator import retain_freed_memory
from .confidence import pixel_map
from .config import MemoryConfig, working_precision
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars
from .memory import MemoryEventHook
from .network import ColorMNet, EncodedKey
from .pipeline import FramePipeline
from .preprocess import Geometry, ProcessingSize
from .shot_run import ShotBoundaries, ShotRun, check_colour_source, check_pinned_within
from .shots import Shot, ShotDetectorConfig, needs_exemplar

log = logging.getLogger(__name__)

Precision = Literal["float32", "bfloat16", "float16"]
Gamut = Literal["clip", "keep_luminance"]
_AMP = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ColorizedFrame(NamedTuple):
    """index; rgb `3 x H x W` float32 sRGB in [0, 1] at the input resolution (on `output_device`);
    ab `2 x h x w` normalised chroma (a/110, b/110) at the processing size, unpadded (the official
    network-resolution output); confidence in [0, 1] (see `ColorizeSession`; 1.0 at a pinned
    exemplar's frame); shot: index of the frame's shot (0 without shots); confidence_map: the
    per-pixel confidence `1 x h x w` float32 in [0, 1] at the processing size, unpadded like ab (its
    mean over the stride-16 grid is `confidence`; see `confidence.pixel_map`), on the compute device,
    or None when the session was not asked for it (`pixel_confidence=True`)."""

    index: int
    rgb: Tensor
    ab: Tensor
    confidence: float = 1.0
    shot: int = 0
    confidence_map: Tensor | None = None


class ColorizeSession:
    """Colorizes one video, frame by frame. Build a fresh session per video; not thread-safe.

    network: a loaded `ColorMNet` in eval mode (it is not modified); exemplars: `EncodedExemplars`;
    memory: `MemoryConfig`; size: `ProcessingSize` (official = no resize); precision: autocast dtype;
    key_batch: frames whose keys are encoded in one call (keys do not depend on memory; 1 is
    fastest on CPU and needs the least memory, see bench/RESULTS.md);
    gamut: "clip" out-of-gamut RGB (official) or "keep_luminance" (shrink chroma instead, so the
    output's luminance is the input's).
    shots: None (one continuous run: the official behaviour), a list of `Shot`s tiling the video, or
    "auto" (detected while running with `shot_config`; a cut is known one frame late, which the
    one-frame look-ahead of `run` absorbs). reset_at_cuts: with shots, start memory and hidden
    state afresh at every cut (False keeps the official carry-over and only labels the frames, e.g.
    to find where exemplars are missing). With a reset, every shot needs an exemplar pinned to its
    first frame or a reference; otherwise `InputError` names the shot (up front for a list, at the
    cut for "auto").

    Confidence of a frame (in [0, 1]; defined and justified in `confidence.py`): mean over its
    stride-16 pixels of exp(best memory similarity) times the confidence of the frame that best
    match was memorised from; 1.0 at exemplars. Low = nothing in memory that traces back to an
    exemplar resembles the frame (new content, or a shot read against another shot's memory).
    pixel_confidence: also give every frame that value per pixel (`ColorizedFrame.confidence_map`,
    at the processing size; bidirectional propagation blends by it).
    """

    def __init__(
        self,
        network: ColorMNet,
        exemplars: EncodedExemplars,
        memory: MemoryConfig | None = None,
        *,
        size: ProcessingSize | None = None,
        device: torch.device | str | None = None,
        precision: Precision = "float32",
        key_batch: int = 1,
        output_device: torch.device | str = "cpu",
        on_memory_event: MemoryEventHook | None = None,
        compile: bool = False,
        gamut: Gamut = "clip",
        shots: Sequence[Shot] | Literal["auto"] | None = None,
        shot_config: ShotDetectorConfig | None = None,
        reset_at_cuts: bool = True,
        pixel_confidence: bool = False,
    ) -> None:
        if precision not in _AMP:
            raise InputError(f"precision must be float32, bfloat16 or float16, not {precision!r}.")
        if gamut not in ("clip", "keep_luminance"):
            raise InputError(f"gamut must be clip or keep_luminance, not {gamut!r}.")
        if key_batch < 1:
            raise InputError(f"key_batch must be at least 1, got {key_batch}.")
        self.exemplars = exemplars
        self._bounds = ShotBoundaries(shots, shot_config, reset_at_cuts, exemplars)
        self.reset_at_cuts = self._bounds.reset
        self.network = network
        self.memory_config = memory or MemoryConfig()
        self.size = size or ProcessingSize()
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.amp_dtype = _AMP[working_precision(precision, self.device.type)]   # no fp16 on CPUs
        self.key_batch = key_batch
        self.output_device = torch.device(output_device)
        self.on_memory_event = on_memory_event
        self.gamut = gamut
        self.pixel_confidence = pixel_confidence
        self._stages = _CompiledStages(network) if compile else network
        self._pipeline = FramePipeline(network, self._stages, exemplars, self.size, self.device, self.amp_dtype,
                                       gamut, self.output_device)
        self._t = -1
        self._run: ShotRun | None = None   # the current continuous run (one per shot with a reset)
        self._shot_index = -1
        self._confidence: list[Tensor | float] = []
        self._frame_shot: list[int] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def frames_done(self) -> int:
        return self._t + 1

    @property
    def shots(self) -> list[Shot]:
        """The shots of the frames done so far (given, detected, or one shot without shots)."""
        return self._bounds.shots(self.frames_done)

    @property
    def confidence(self) -> list[float]:
        """Per-frame match confidence of the frames done so far (see the class docstring)."""
        self._confidence = [float(c) for c in self._confidence]
        return list(self._confidence)   # type: ignore[arg-type]

    def report(self, *, low: float = 0.5, min_run: int = 10) -> dict:
        """JSON-serialisable summary: {"shots": [[first, last], ...] (inclusive, 0-based),
        "confidence": [float per frame], "needs_exemplar": [frame indices] (see
        `shots.needs_exemplar`), "ignored_cuts": [frame indices of cuts "auto" dropped as closer than
        min_shot_length to the previous one], "reset_at_cuts": bool}."""
        shots, confidence = self.shots, self.confidence
        detector = self._bounds.detector
        ignored = detector.ignored_cuts if detector is not None else []
        return {
            "shots": [[s.first, s.last] for s in shots],
            "confidence": [round(c, 6) for c in confidence],
            "needs_exemplar": needs_exemplar(shots, confidence, self.exemplars.pinned_frames,
                                             low=low, min_run=min_run, ignored_cuts=ignored),
            "ignored_cuts": list(ignored),
            "reset_at_cuts": self.reset_at_cuts,
        }

    def step(self, frame: Tensor, *, last: bool = False) -> ColorizedFrame:
        """Colorize the next frame: `C x H x W` (C = 1, 3 or 4; float in [0, 1] or uint8).

        `last=True` marks the video's last frame (the official pipeline never memorises it); with a
        shot list and reset, a shot's last frame is marked by the session. "auto" shots need `run`."""
        if self._bounds.detector is not None:
            raise InputError("shots='auto' needs run() (it looks one frame ahead); give a shot list to use step().")
        if self.reset_at_cuts:
            last = last or self.frames_done + 1 in self._bounds.starts
        return self._annotate(next(self._process([frame], [last])))

    def run(
        self,
        frames: Iterable[Tensor],
        *,
        on_frame: Callable[[ColorizedFrame], bool | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[ColorizedFrame]:
        """Colorize a whole video lazily: yields one `ColorizedFrame` per input frame.

        frames: any iterable of `C x H x W` frames (a `T x C x H x W` tensor, a list, a reader).
        on_frame(result) is called for each output; returning False stops with `Cancelled`.
        should_stop() is polled before every frame (cheap; e.g. a UI's cancel flag).
        """
        total = len(frames) if isinstance(frames, Sized) else None
        if total == 0:
            raise InputError("the video has no frames; check the input path or the node that loads it.")
        if total is not None:
            check_pinned_within(self.exemplars, total)
            self._bounds.check_length(total, finished=False)
        iterator = iter(frames)
        pending = next(iterator, None)
        if pending is None:
            raise InputError("the video has no frames; check the input path or the node that loads it.")
        index = self.frames_done              # index of `pending`
        self._bounds.read(pending, index)
        # On the CPU, freed activations are reused instead of faulted in afresh (allocator.py).
        with retain_freed_memory() if self.device.type == "cpu" else contextlib.nullcontext():
            yield from self._run_chunks(pending, iterator, index, on_frame, should_stop)
        check_pinned_within(self.exemplars, self.frames_done)
        self._bounds.check_length(self.frames_done, finished=True)

    # -- internals ----------------------------------------------------------------------------

    def _run_chunks(self, pending: Tensor, iterator: Iterator[Tensor], index: int,
                    on_frame: Callable[[ColorizedFrame], bool | None] | None,
                    should_stop: Callable[[], bool] | None) -> Iterator[ColorizedFrame]:
        """`run`'s loop: key batches of up to `key_batch` frames, never spanning a cut; `pending` is frame `index`."""
        while pending is not None:
            chunk, lasts = [], []
            while pending is not None and len(chunk) < self.key_batch:
                chunk.append(pending)
                pending = next(iterator, None)
                index += 1
                cut = pending is not None and self._bounds.read(pending, index) and self.reset_at_cuts
                lasts.append(pending is None or cut)
                if cut:       # a key batch never spans a cut: batches match those of a per-shot run
                    break
            for result in self._process(chunk, lasts, should_stop):
                result = self._annotate(result)
                if on_frame is not None and on_frame(result) is False:
                    raise Cancelled(f"stopped by the caller after {result.index + 1} frames.")
                yield result

    def _annotate(self, result: ColorizedFrame) -> ColorizedFrame:
        confidence = self._confidence[result.index]
        if isinstance(confidence, Tensor):
            confidence = self._confidence[result.index] = float(confidence)
        return result._replace(confidence=confidence, shot=self._frame_shot[result.index])

    @property
    def geometry(self) -> Geometry | None:
        """The processing geometry (planned from the first frame; None before it)."""
        return self._pipeline.geometry

    @property
    def memory(self):
        """The current run's `MFPMemory` (None before the first frame)."""
        return None if self._run is None else self._run.memory

    def _begin_run(self, t: int) -> None:
        """A fresh `ShotRun` from frame t: memory, hidden state and schedule start afresh."""
        self._run = ShotRun(self._stages, self._pipeline.prepared, self.memory_config, first=t,
                            autocast=self._pipeline.autocast, on_memory_event=self.on_memory_event)

    @torch.inference_mode()
    def _process(self, frames: list[Tensor], lasts: list[bool],
                 should_stop: Callable[[], bool] | None = None) -> Iterator[ColorizedFrame]:
        first = self._t + 1
        encoded = self._pipeline.encode(frames, first)
        predictions, grids = [], []
        for i, last in enumerate(lasts):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {self._t + 1} frames.")
            key = encoded.key(i)
            predictions.append(self._step(encoded.images[i:i + 1], key, last))
            if self.pixel_confidence:
                grid = self._run.pixel_confidence
                grids.append(key.key.new_ones(key.key.shape[-2:], dtype=torch.float32) if grid is None else grid)
        rgb, ab = self._pipeline.compose(encoded.lab, torch.cat(predictions))
        maps = pixel_map(torch.stack(grids), self.geometry) if grids else [None] * len(lasts)
        for i in range(len(lasts)):
            yield ColorizedFrame(first + i, rgb[i], ab[i], confidence_map=maps[i])

    def _step(self, image: Tensor, key: EncodedKey, last: bool) -> Tensor:
        """Frame bookkeeping (shots, reset, confidence) around `ShotRun.step`; returns the padded
        prediction `1 x 2 x Hp x Wp`."""
        self._t += 1
        if self._t in self._bounds.starts:
            self._shot_index += 1
            if self._t > 0 and self.reset_at_cuts and self._bounds.listed is None:
                check_colour_source(self.exemplars, self._shot_index, self._t, None)
            if self._run is None or self.reset_at_cuts:
                self._begin_run(self._t)
        self._frame_shot.append(self._shot_index)
        prediction, confidence = self._run.step(image, key, last=last)
        self._confidence.append(confidence)
        return prediction


@functools.cache
def _compiled_stage(name: str):
    """`torch.compile` of the `ColorMNet` stage `name` as a plain function (network first), made once
    per process. Dynamo caches compiled code per function and guards, so every session and every
    network reuses it; and nothing here holds a network, which a cache keyed by network did (it kept
    every network ever compiled in memory, on the GPU too, after its owner had let it go)."""
    return torch.compile(getattr(ColorMNet, name))


class _CompiledStages:
    """A view of `network` whose heavy stages go through torch.compile (see `_compiled_stage`)."""

    def __init__(self, network: ColorMNet) -> None:
        self.network = network
        self.empty_hidden = network.empty_hidden

    def encode_key(self, *args, **kwargs):
        return _compiled_stage("encode_key")(self.network, *args, **kwargs)

    def encode_value(self, *args, **kwargs):
        return _compiled_stage("encode_value")(self.network, *args, **kwargs)

    def decode(self, *args, **kwargs):
        return _compiled_stage("decode")(self.network, *args, **kwargs)

    def read_short_term(self, *args, **kwargs):
        return _compiled_stage("read_short_term")(self.network, *args, **kwargs)
