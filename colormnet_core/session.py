"""One video's colorization: the official per-frame schedule, with our exemplar and size extensions.

Per frame t (official `InferenceCore.step` / `step_AnyExemplar`):
* memory frame when r frames passed since the last one, or an exemplar arrives; never the last frame;
* hidden state: zeros at an exemplar; deep update by the value encoder at memory frames (or every
  `deep_update_every` frames, applied at the next memory frame), decoder update at other frames,
  none at the last frame;
* readout = top-k memory read + LA to the last memory frame (no LA for frame 0 of the reference path);
* at a pinned exemplar's frame the output chroma is the exemplar's.

Shots (ours): with a shot list (or "auto" detection) and `reset_at_cuts`, every shot is colorized as
if it were a video of its own: memory, hidden state and the schedule start afresh at its first frame,
its last frame is treated as the official last frame, key batches never span a cut, and references
enter memory again at each shot's first frame. So shot k's output is bit-identical (CPU, fp32) to a
separate session over shot k's frames with the exemplars pinned inside it (and the references).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .allocator import retain_freed_memory
from .color import denormalize_lab, fit_chroma_to_gamut, lab_to_rgb
from .confidence import MemoryConfidence
from .config import MemoryConfig, working_precision
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars, PreparedExemplar
from .memory import MemoryEventHook, MFPMemory
from .network import ColorMNet, EncodedKey
from .preprocess import Geometry, ProcessingSize, as_rgb, network_image, normalized_lab
from .shots import Shot, ShotDetector, ShotDetectorConfig, needs_exemplar, validate_shots

log = logging.getLogger(__name__)

Precision = Literal["float32", "bfloat16", "float16"]
Gamut = Literal["clip", "keep_luminance"]
_AMP = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ColorizedFrame(NamedTuple):
    """index; rgb `3 x H x W` float32 sRGB in [0, 1] at the input resolution (on `output_device`);
    ab `2 x h x w` normalised chroma (a/110, b/110) at the processing size, unpadded (the official
    network-resolution output); confidence in [0, 1] (see `ColorizeSession`; 1.0 at a pinned
    exemplar's frame); shot: index of the frame's shot (0 without shots)."""

    index: int
    rgb: Tensor
    ab: Tensor
    confidence: float = 1.0
    shot: int = 0


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
    ) -> None:
        if precision not in _AMP:
            raise InputError(f"precision must be float32, bfloat16 or float16, not {precision!r}.")
        if gamut not in ("clip", "keep_luminance"):
            raise InputError(f"gamut must be clip or keep_luminance, not {gamut!r}.")
        if key_batch < 1:
            raise InputError(f"key_batch must be at least 1, got {key_batch}.")
        self.exemplars = exemplars
        if shots is not None and shots != "auto" and isinstance(shots, str):
            raise InputError(f"shots must be a list of shots, 'auto' or None, not {shots!r} "
                             f"(use shots.parse_shots to read text such as 0-119,120-300).")
        self._shots = None if shots is None or shots == "auto" else validate_shots(shots)
        self._detector = ShotDetector(shot_config) if shots == "auto" else None
        self.reset_at_cuts = reset_at_cuts and shots is not None
        self._starts = {0} if self._shots is None else {s.first for s in self._shots}
        if self.reset_at_cuts and self._shots is not None:
            for i, shot in enumerate(self._shots):
                self._check_shot_source(i, shot.first, shot.last)
        else:
            self._check_schedule()
        self.network = network
        self.memory_config = memory or MemoryConfig()
        self.size = size or ProcessingSize()
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.amp_dtype = _AMP[working_precision(precision, self.device.type)]   # no fp16 on CPUs
        self.key_batch = key_batch
        self.output_device = torch.device(output_device)
        self.on_memory_event = on_memory_event
        self.gamut = gamut
        self._stages = _compiled_stages(network) if compile else network
        self.geometry: Geometry | None = None
        self.memory: MFPMemory | None = None
        self._t = -1
        self._prepared: list[PreparedExemplar] = []
        self._last_mem_t = 0
        self._last_deep_t = -self.memory_config.deep_update_every
        self._hidden: Tensor | None = None
        self._last_key: Tensor | None = None
        self._last_value: Tensor | None = None
        self._shot_first = 0            # first frame of the current shot; the schedule counts from it
        self._shot_index = -1
        self._confidence: list[Tensor | float] = []
        self._memory_confidence: MemoryConfidence | None = None
        self._frame_shot: list[int] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def frames_done(self) -> int:
        return self._t + 1

    @property
    def shots(self) -> list[Shot]:
        """The shots of the frames done so far (given, detected, or one shot without shots)."""
        done = self.frames_done
        if done == 0:
            return []
        starts = sorted(s for s in self._starts if s < done)
        return [Shot(first, last) for first, last in zip(starts, [s - 1 for s in starts[1:]] + [done - 1])]

    @property
    def confidence(self) -> list[float]:
        """Per-frame match confidence of the frames done so far (see the class docstring)."""
        self._confidence = [float(c) for c in self._confidence]
        return list(self._confidence)   # type: ignore[arg-type]

    def report(self, *, low: float = 0.5, min_run: int = 10) -> dict:
        """JSON-serialisable summary: {"shots": [[first, last], ...] (inclusive, 0-based),
        "confidence": [float per frame], "needs_exemplar": [frame indices] (see
        `shots.needs_exemplar`), "reset_at_cuts": bool}."""
        shots, confidence = self.shots, self.confidence
        return {
            "shots": [[s.first, s.last] for s in shots],
            "confidence": [round(c, 6) for c in confidence],
            "needs_exemplar": needs_exemplar(shots, confidence, self.exemplars.pinned_frames,
                                             low=low, min_run=min_run),
            "reset_at_cuts": self.reset_at_cuts,
        }

    def step(self, frame: Tensor, *, last: bool = False) -> ColorizedFrame:
        """Colorize the next frame: `C x H x W` (C = 1, 3 or 4; float in [0, 1] or uint8).

        `last=True` marks the video's last frame (the official pipeline never memorises it); with a
        shot list and reset, a shot's last frame is marked by the session. "auto" shots need `run`."""
        if self._detector is not None:
            raise InputError("shots='auto' needs run() (it looks one frame ahead); give a shot list to use step().")
        t = self.frames_done
        if self.reset_at_cuts and self._shots is not None:
            last = last or (t + 1) in self._starts
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
            self._check_pinned_within(total)
            if self._shots is not None:
                validate_shots(self._shots, total)
        iterator = iter(frames)
        pending = next(iterator, None)
        if pending is None:
            raise InputError("the video has no frames; check the input path or the node that loads it.")
        index = self.frames_done              # index of `pending`
        self._starts_shot(pending, index)
        # On the CPU, freed activations are reused instead of faulted in afresh (allocator.py).
        with retain_freed_memory() if self.device.type == "cpu" else contextlib.nullcontext():
            yield from self._run_chunks(pending, iterator, index, on_frame, should_stop)
        self._check_pinned_within(self.frames_done)
        if self._shots is not None and self.frames_done != self._shots[-1].last + 1:
            raise InputError(f"the shots cover frames 0-{self._shots[-1].last} but the video had "
                             f"{self.frames_done} frames; make the shot list match the video.")

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
                cut = pending is not None and self._starts_shot(pending, index) and self.reset_at_cuts
                lasts.append(pending is None or cut)
                if cut:       # a key batch never spans a cut: batches match those of a per-shot run
                    break
            for result in self._process(chunk, lasts, should_stop):
                result = self._annotate(result)
                if on_frame is not None and on_frame(result) is False:
                    raise Cancelled(f"stopped by the caller after {result.index + 1} frames.")
                yield result

    def _check_schedule(self) -> None:
        pinned = self.exemplars.pinned_frames
        if not self.exemplars.references and pinned and pinned[0] != 0:
            raise InputError(
                f"the first exemplar is pinned to frame {pinned[0]}, so frames 0-{pinned[0] - 1} have no "
                f"colour source. Pin an exemplar to frame 0, or add one as a reference (not a frame of the video).")

    def _check_shot_source(self, index: int, first: int, last: int | None) -> None:
        """With a reset, shot `index` (frames first..last, last None = not known yet) must start from
        an exemplar pinned to its first frame or from the references, like any video."""
        if self.exemplars.references:
            return
        if last is None:
            if first not in self.exemplars.pinned_frames:
                raise InputError(
                    f"a cut was detected at frame {first} (shot {index} starts there) but no exemplar is pinned "
                    f"to frame {first} and there is no reference, so nothing gives that shot colours. Pin an "
                    f"exemplar to frame {first}, add a reference exemplar, give the shot list yourself, or "
                    f"run without per-shot reset.")
            return
        frames = f"frames {first}-{last}"
        inside = [f for f in self.exemplars.pinned_frames if f >= first and (last is None or f <= last)]
        if not inside:
            raise InputError(
                f"shot {index} ({frames}) has no exemplar and there is no reference, so nothing gives it "
                f"colours. Pin an exemplar to frame {first} (e.g. its keyframe coloured by an image model), "
                f"add a reference exemplar (not pinned to a frame), or run without per-shot reset.")
        if inside[0] != first:
            raise InputError(
                f"shot {index} ({frames}) starts at frame {first} but its first exemplar is pinned to frame "
                f"{inside[0]}, so frames {first}-{inside[0] - 1} have no colour source. Pin an exemplar to "
                f"frame {first}, add a reference exemplar, or run without per-shot reset.")

    def _starts_shot(self, frame: Tensor, index: int) -> bool:
        """Whether frame `index` (about to be read) starts a new shot; feeds the "auto" detector."""
        if self._detector is not None and self._detector.push(frame):
            self._starts.add(index)
        if self._shots is not None and index > self._shots[-1].last:
            raise InputError(f"the video has more frames than the shots cover (0-{self._shots[-1].last}); "
                             f"make the last shot end at the video's last frame.")
        return index > 0 and index in self._starts

    def _annotate(self, result: ColorizedFrame) -> ColorizedFrame:
        confidence = self._confidence[result.index]
        if isinstance(confidence, Tensor):
            confidence = self._confidence[result.index] = float(confidence)
        return result._replace(confidence=confidence, shot=self._frame_shot[result.index])

    def _begin_shot(self, t: int) -> None:
        """Per-shot reset at frame t: a fresh memory, hidden state and schedule, as in a new session."""
        if self._shots is None:
            self._check_shot_source(self._shot_index, t, None)
        self.memory = MFPMemory(self.memory_config, on_event=self.on_memory_event)
        self._shot_first = t
        self._last_mem_t = 0
        self._last_deep_t = -self.memory_config.deep_update_every
        self._hidden = self._last_key = self._last_value = None

    def _check_pinned_within(self, total: int) -> None:
        outside = [f for f in self.exemplars.pinned_frames if f >= total]
        if outside:
            raise InputError(
                f"exemplar(s) pinned to frame(s) {outside}, but the video has {total} frames "
                f"(0-{total - 1}); pin them to frames that exist or use them as references.")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _start(self, height: int, width: int) -> None:
        self.geometry = Geometry.plan(height, width, self.size)
        self.memory = MFPMemory(self.memory_config, on_event=self.on_memory_event)
        with self._autocast():
            self._prepared = self.exemplars.prepare(self.network, self.geometry, self.device)

    @torch.inference_mode()
    def _process(self, frames: list[Tensor], lasts: list[bool],
                 should_stop: Callable[[], bool] | None = None) -> Iterator[ColorizedFrame]:
        rgb = as_rgb(torch.stack([f if f.dim() == 3 else f.unsqueeze(0) for f in _same_size(frames)]))
        if self.geometry is None:
            self._start(*rgb.shape[-2:])
        elif tuple(rgb.shape[-2:]) != self.geometry.input_size:
            h, w = self.geometry.input_size
            raise InputError(f"frame {self._t + 1} is {rgb.shape[-1]}x{rgb.shape[-2]} but the video started at "
                             f"{w}x{h}; all frames of a video must have one size (resize them first).")
        # float64 (exact for 8-bit input) where the device has it; MPS has no float64.
        rgb = rgb.to(self.device, torch.float32 if self.device.type == "mps" else rgb.dtype)
        lab = normalized_lab(rgb)                                     # B x 3 x H x W, input size
        images = network_image(lab, self.geometry)
        with self._autocast():
            keys = self._stages.encode_key(images, need_shrinkage=True)
        predictions = []
        for i, last in enumerate(lasts):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {self._t + 1} frames.")
            key = EncodedKey(keys.key[i:i + 1], keys.shrinkage[i:i + 1], keys.selection[i:i + 1],
                             type(keys.features)(*(f[i:i + 1] for f in keys.features)))
            predictions.append(self._step(images[i:i + 1], key, last))
        ab = torch.cat(predictions).float()                           # B x 2 x Hp x Wp
        ab = self.geometry.padding.crop(ab)
        ab_full = ab if not self.geometry.resized else F.interpolate(
            ab, size=self.geometry.input_size, mode="bilinear", align_corners=False)
        lab_out = denormalize_lab(torch.cat([lab[:, :1], ab_full], dim=1))
        if self.gamut == "keep_luminance":
            lab_out = fit_chroma_to_gamut(lab_out)
        rgb_out = lab_to_rgb(lab_out).float()
        rgb_out = rgb_out.to(self.output_device)
        first = self._t - len(lasts) + 1
        for i in range(len(lasts)):
            yield ColorizedFrame(first + i, rgb_out[i], ab[i])

    def _step(self, image: Tensor, key: EncodedKey, last: bool) -> Tensor:
        """The official schedule for one frame; returns the padded prediction `1 x 2 x Hp x Wp`."""
        self._t += 1
        if self._t in self._starts:
            self._shot_index += 1
            if self._t > 0 and self.reset_at_cuts:
                self._begin_shot(self._t)
        self._frame_shot.append(self._shot_index)
        frame = self._t                 # the video's frame index (pinned exemplars, events)
        t = frame - self._shot_first    # the schedule's index: counts from the shot's first frame
        cfg, net, memory = self.memory_config, self._stages, self.memory
        if self._memory_confidence is None or self._memory_confidence.memory is not memory:
            self._memory_confidence = MemoryConfidence(memory)
        tracker = self._memory_confidence
        pinned = next((p for p in self._prepared if p.frame == frame), None)
        references = [p for p in self._prepared if p.frame is None] if t == 0 else []
        confidence: Tensor | float = 1.0
        sync = cfg.deep_update_every < 0
        is_mem = ((t - self._last_mem_t >= cfg.mem_every) or pinned is not None or bool(references)) and not last
        is_deep = ((sync and is_mem) or (not sync and t - self._last_deep_t >= cfg.deep_update_every)) and not last
        is_normal = (not sync or not is_deep) and not last
        with self._autocast():
            if references:
                # Official any-exemplar path: references enter memory before frame 0 is predicted,
                # from a zero hidden state and without deep update; frame 0 gets no LA term.
                self._hidden = net.empty_hidden(key.features.f16)
                for ref in references:
                    before = memory.stats
                    memory.add(ref.key, ref.shrinkage, ref.selection, ref.value, permanent=True, frame_index=frame)
                    tracker.added(before, 1.0)
                    self._last_key, self._last_value = ref.key, ref.value
                if pinned is None:
                    is_deep = False
            if pinned is not None:
                prediction = pinned.ab
                self._hidden = net.empty_hidden(key.features.f16)
            else:
                readout = memory.read(key.key, key.selection)
                confidence = tracker.frame()
                if not references:
                    readout = readout + net.read_short_term(key.key, self._last_key, self._last_value)
                prediction, out = net.decode(key.features, readout, self._hidden, update_hidden=is_normal)
                if is_normal and out.hidden is not None:
                    self._hidden = out.hidden
            if is_mem:
                value, hidden = net.encode_value(image, key.features.f16, self._hidden, prediction, deep_update=is_deep)
                before = memory.stats
                memory.add(key.key, key.shrinkage, key.selection, value, permanent=pinned is not None,
                           frame_index=frame)
                tracker.added(before, confidence)
                self._last_mem_t = t
                self._last_key, self._last_value = key.key, value
                if is_deep:
                    self._hidden = hidden
                    self._last_deep_t = t
        self._confidence.append(confidence)
        return prediction


def _same_size(frames: list[Tensor]) -> list[Tensor]:
    sizes = {tuple(f.shape[-2:]) for f in frames}
    if len(sizes) > 1:
        raise InputError(f"frames of different sizes in one video: {sorted(sizes)}; resize them to one size first.")
    return frames


_COMPILED: dict[int, object] = {}


def _compiled_stages(network: ColorMNet):
    """A view of `network` whose heavy stages go through torch.compile (cached per network)."""
    entry = _COMPILED.get(id(network))
    if entry is None or entry[0] is not network:
        class _Compiled:
            encode_key = torch.compile(network.encode_key)
            encode_value = torch.compile(network.encode_value)
            decode = torch.compile(network.decode)
            read_short_term = torch.compile(network.read_short_term)
            empty_hidden = network.empty_hidden
        entry = (network, _Compiled())
        _COMPILED[id(network)] = entry
    return entry[1]
