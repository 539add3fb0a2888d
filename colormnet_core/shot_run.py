"""One shot's colorization: the official per-frame schedule over one continuous run of frames.

A `ShotRun` owns what the official `InferenceCore` keeps between frames: the MFP memory, the GRU
hidden state, the last memory frame (for LA), the schedule's counters and the per-frame match
confidence. A video without shots is one run; with shots and reset every shot is a run of its own,
started at the shot's first frame, so shot k's output does not depend on anything before it. The
film renderer colours one shot per job through the same unit (via `ColorizeSession` with one shot).

Per frame t, counted from the run's first frame (official `InferenceCore.step` / `step_AnyExemplar`):
* memory frame when r frames passed since the last one, or an exemplar arrives; never the last frame;
* hidden state: zeros at an exemplar; deep update by the value encoder at memory frames (or every
  `deep_update_every` frames, applied at the next memory frame), decoder update at other frames,
  none at the last frame;
* readout = top-k memory read + LA to the last memory frame (no LA for frame 0 of the reference path);
* at a pinned exemplar's frame the output chroma is the exemplar's.

CMNET2's references given at a frame (`Exemplar(reference=True)`, its `step_AnyExemplar` with a
reference): at that frame the reference is memorised twice, first like the official reference
(working memory; the run's first memory frame is XMem's pinned slot) and then in the tagged
permanent store (`MFPMemory.add_reference`, CMNET2's perm_mem); LA's last memory frame becomes
the reference; the frame is predicted from memory without LA, with no hidden-state update (the
hidden state is kept, zeros only if there was none) and memorised without deep update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor

from .confidence import MemoryConfidence
from .config import MemoryConfig
from .errors import InputError
from .exemplars import EncodedExemplars, PreparedExemplar
from .memory import MemoryEventHook, MFPMemory
from .network import EncodedKey
from .shots import Shot, ShotDetector, ShotDetectorConfig, validate_shots


class ShotRun:
    """The official schedule over frames `first, first + 1, ...` (video frame indices).

    stages: the network's named stages (`ColorMNet` or a compiled view); prepared: the exemplars at
    the run's geometry (pinned ones are used at their frame, references enter memory at `first`);
    autocast: a zero-argument callable returning the autocast context to run the stages in.
    Not thread-safe; one run per shot.
    """

    def __init__(self, stages, prepared: Sequence[PreparedExemplar], config: MemoryConfig, *, first: int = 0,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 on_memory_event: MemoryEventHook | None = None) -> None:
        self.stages = stages
        self.config = config
        self.first = first
        self.memory = MFPMemory(config, on_event=on_memory_event)
        self.tracker = MemoryConfidence(self.memory)
        self._pinned = {p.frame: p for p in prepared if p.frame is not None and not p.reference}
        self._references = [p for p in prepared if p.frame is None and not p.reference]
        self._tagged: dict[int, list[PreparedExemplar]] = {}
        for p in prepared:
            if p.reference:   # given at its frame; without a frame, at the run's first frame
                self._tagged.setdefault(first if p.frame is None else p.frame, []).append(p)
        self._autocast = autocast
        self._frame = first - 1
        self._last_mem_t = 0
        self._last_deep_t = -config.deep_update_every
        self._hidden: Tensor | None = None
        self._last_key: Tensor | None = None
        self._last_value: Tensor | None = None
        # The last step's per-pixel confidence, `h16 x w16` (MemoryConfidence.pixels); None = 1
        # everywhere (a pinned exemplar's frame).
        self.pixel_confidence: Tensor | None = None

    @property
    def next_frame(self) -> int:
        """The video frame index the next `step` colours."""
        return self._frame + 1

    def step(self, image: Tensor, key: EncodedKey, *, last: bool) -> tuple[Tensor, Tensor | float]:
        """Colour the next frame. image: its network input `1 x 3 x Hp x Wp` (L' repeated); key: its
        encoded key; last: the run's last frame (never memorised). Returns the padded prediction
        `1 x 2 x Hp x Wp` (normalised ab) and the frame's match confidence (0-dim tensor, or 1.0)."""
        self._frame += 1
        frame = self._frame
        t = frame - self.first          # the schedule counts from the run's first frame
        cfg, net, memory, tracker = self.config, self.stages, self.memory, self.tracker
        pinned = self._pinned.get(frame)
        references = self._references if t == 0 else []
        tagged = self._tagged.get(frame, [])
        confidence: Tensor | float = 1.0
        self.pixel_confidence = None
        sync = cfg.deep_update_every < 0
        is_mem = ((t - self._last_mem_t >= cfg.mem_every) or pinned is not None or bool(references)
                  or bool(tagged)) and not last
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
            if tagged:
                if self._hidden is None:
                    self._hidden = net.empty_hidden(key.features.f16)
                for ref in tagged:
                    before = memory.stats
                    memory.add(ref.key, ref.shrinkage, ref.selection, ref.value, permanent=False, frame_index=frame)
                    tracker.added(before, 1.0)
                    memory.add_reference(ref.key, ref.shrinkage, ref.value, tag=frame)
                    self._last_key, self._last_value = ref.key, ref.value
                if pinned is None:
                    is_deep = False
            if pinned is not None:
                prediction = pinned.ab
                self._hidden = net.empty_hidden(key.features.f16)
            else:
                readout = memory.read(key.key, key.selection, frame_index=frame)
                pixels = tracker.pixels()
                confidence = pixels.mean()
                self.pixel_confidence = pixels.view(key.key.shape[-2:])
                if not references and not tagged:
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
        return prediction, confidence


def check_colour_source(exemplars: EncodedExemplars, index: int, first: int, last: int | None) -> None:
    """With a per-shot reset, shot `index` (frames first..last; last None = not known yet, e.g. a cut
    just detected) must start from an exemplar pinned to its first frame or from the references,
    like any video. Raises `InputError` naming the shot and what to do."""
    if exemplars.references or first in exemplars.tagged_frames:
        return
    if last is None:
        if first not in exemplars.pinned_frames:
            raise InputError(
                f"a cut was detected at frame {first} (shot {index} starts there) but no exemplar is pinned "
                f"to frame {first} and there is no reference, so nothing gives that shot colours. Pin an "
                f"exemplar to frame {first}, add a reference exemplar, give the shot list yourself, or "
                f"run without per-shot reset.")
        return
    frames = f"frames {first}-{last}"
    inside = sorted(f for f in exemplars.pinned_frames + exemplars.tagged_frames if first <= f <= last)
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


def check_video_source(exemplars: EncodedExemplars) -> None:
    """Without a reset, frame 0 needs an exemplar pinned to it or a reference."""
    pinned = sorted(exemplars.pinned_frames + exemplars.tagged_frames)
    if not exemplars.references and pinned and pinned[0] != 0:
        raise InputError(
            f"the first exemplar is pinned to frame {pinned[0]}, so frames 0-{pinned[0] - 1} have no "
            f"colour source. Pin an exemplar to frame 0, or add one as a reference (not a frame of the video).")


class ShotBoundaries:
    """Where the shots of a session's video start: from a shot list, or detected while reading
    ("auto"; a cut is known when its first frame is read), or one shot (None).

    reset: whether shots restart memory (a `ShotRun` each) or only label frames."""

    def __init__(self, shots: Sequence[Shot] | Literal["auto"] | None, config: ShotDetectorConfig | None,
                 reset: bool, exemplars: EncodedExemplars) -> None:
        if shots is not None and shots != "auto" and isinstance(shots, str):
            raise InputError(f"shots must be a list of shots, 'auto' or None, not {shots!r} "
                             f"(use shots.parse_shots to read text such as 0-119,120-300).")
        self.listed = None if shots is None or shots == "auto" else validate_shots(shots)
        self.detector = ShotDetector(config) if shots == "auto" else None
        self.reset = reset and shots is not None
        self.starts = {0} if self.listed is None else {s.first for s in self.listed}
        if self.reset and self.listed is not None:
            for i, shot in enumerate(self.listed):
                check_colour_source(exemplars, i, shot.first, shot.last)
        else:
            check_video_source(exemplars)

    def read(self, frame: Tensor, index: int) -> bool:
        """Frame `index` is about to be read: whether it starts a new shot (feeds the detector)."""
        if self.detector is not None and self.detector.push(frame):
            self.starts.add(index)
        if self.listed is not None and index > self.listed[-1].last:
            raise InputError(f"the video has more frames than the shots cover (0-{self.listed[-1].last}); "
                             f"make the last shot end at the video's last frame.")
        return index > 0 and index in self.starts

    def shots(self, done: int) -> list[Shot]:
        """The shots of the first `done` frames."""
        starts = sorted(s for s in self.starts if s < done)
        return [Shot(first, last) for first, last in zip(starts, [s - 1 for s in starts[1:]] + [done - 1])]

    def check_length(self, total: int, *, finished: bool) -> None:
        """InputError unless a video of `total` frames fits the shot list (`finished`: all were read)."""
        if self.listed is None:
            return
        if not finished:
            validate_shots(self.listed, total)
        elif total != self.listed[-1].last + 1:
            raise InputError(f"the shots cover frames 0-{self.listed[-1].last} but the video had "
                             f"{total} frames; make the shot list match the video.")


def check_pinned_within(exemplars: EncodedExemplars, total: int) -> None:
    """InputError when an exemplar is pinned past the video's last frame."""
    outside = sorted(f for f in exemplars.pinned_frames + exemplars.tagged_frames if f >= total)
    if outside:
        raise InputError(
            f"exemplar(s) pinned to frame(s) {outside}, but the video has {total} frames "
            f"(0-{total - 1}); pin them to frames that exist or use them as references.")
