"""Shots: cut and cross-fade detection on decoded luminance, shot lists, and where exemplars are needed.

Why our own detector and not PySceneDetect: its detectors (content, adaptive, hash, histogram) find
hard cuts only, and its threshold detector finds fades to and from black, not cross-fades (dissolves)
between two shots, which the per-shot reset needs; its frame API changed between 0.6 and 0.7
(frame numbers became timecodes) and it brings a CLI stack (click, tqdm, platformdirs) a ComfyUI
node does not need. The signals below are a few lines of torch on frames we already hold.

Signals, on the frame's luminance (BT.601 weights) area-averaged to `grid` pixels on its long side:
* cut: s(t) = max(H(t, t-1), 2 * D(t, t-1)), where H is the luminance-histogram distance (half the L1
  distance of normalised `bins`-bin histograms, in [0, 1]; blind to motion) and D the mean absolute
  difference of the downsized frames (in [0, 1]; sees cuts between shots of similar tones). A new
  shot starts at t when s(t) >= threshold and s(t) >= cut_ratio times the mean s of the frames
  before it in the same shot (so a fast pan or noisy footage, whose s is high everywhere, does not
  cut on every frame). Of two cuts closer than min_shot_length the stronger (higher s) is kept: a
  later, stronger cut replaces a start made by a weaker cut (a flash or a false cut just before the
  real one), a later, weaker one is dropped.
* cross-fade: a dissolve changes every frame a little, so no single s(t) is large, but over
  `fade_window` frames the histogram moves as far as at a cut. A new shot starts at t when
  H(t, r) >= fade_threshold, with r = max(t - fade_window, floor) and floor = the last shot start
  (plus fade_window after a cross-fade, so the rest of that dissolve cannot trigger again; a
  dissolve longer than fade_window frames may therefore give two boundaries). The boundary falls
  inside the dissolve, where its histogram has moved fade_threshold of the way.
Both are causal: `push(frame t)` decides about frame t from frames <= t, so a streaming consumer
knows a cut one frame after the previous shot's last frame. Boundaries closer than
`min_shot_length` frames to the previous shot start are ignored, except a stronger cut replacing a
weaker one: `push` then says a shot starts at t too, and `finish` lists only the stronger (a
streaming consumer that already started a shot at the weaker cut keeps that short shot). The
detector keeps one downsized frame, `fade_window + 1` histograms and a few scores: memory does not
grow with the video.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError


class Shot(NamedTuple):
    """A run of frames from one camera take: `first` to `last` inclusive, 0-based."""

    first: int
    last: int

    @property
    def length(self) -> int:
        """Frames in the shot."""
        return self.last - self.first + 1

    def holds(self, frame: int) -> bool:
        return self.first <= frame <= self.last


@dataclass(frozen=True)
class ShotDetectorConfig:
    """Shot-boundary settings (see the module docstring for the signals)."""

    threshold: float = 0.2          # cut score s(t) in [0, 1] at which a hard cut is declared
    min_shot_length: int = 10       # frames; a boundary closer than this to the previous one is ignored
    fade_threshold: float = 0.1     # histogram distance over fade_window frames that makes a cross-fade
    fade_window: int = 12           # frames compared across for cross-fades (about a dissolve's length)
    cut_ratio: float = 3.0          # a cut's score must exceed this many times the shot's recent mean
    grid: int = 64                  # long side, in pixels, of the downsized luminance
    bins: int = 16                  # luminance-histogram bins

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise InputError(f"shot threshold must be in (0, 1], got {self.threshold}; 0.2 suits most footage, "
                             f"lower finds more cuts.")
        if not 0 < self.fade_threshold <= 1:
            raise InputError(f"fade_threshold must be in (0, 1], got {self.fade_threshold}; use about half "
                             f"of threshold.")
        if self.min_shot_length < 1:
            raise InputError(f"min_shot_length must be at least 1 frame, got {self.min_shot_length}.")
        if self.fade_window < 2:
            raise InputError(f"fade_window must be at least 2 frames, got {self.fade_window}.")
        if self.cut_ratio < 1:
            raise InputError(f"cut_ratio must be at least 1, got {self.cut_ratio}.")
        if self.grid < 8 or self.bins < 4:
            raise InputError(f"grid must be >= 8 pixels and bins >= 4, got grid={self.grid}, bins={self.bins}.")


class ShotDetector:
    """Streaming shot-boundary detector: `push` every frame in order, then `finish`.

    frame: `C x H x W` (C = 1, 3 or 4; RGB order, alpha ignored) or `H x W`, uint8 or float in [0, 1].
    """

    _SCORE_HISTORY = 8      # frames of cut score averaged for the cut_ratio test

    def __init__(self, config: ShotDetectorConfig | None = None) -> None:
        self.config = config or ShotDetectorConfig()
        self.frames_seen = 0
        self.starts: list[int] = [0]
        self.ignored_cuts: list[int] = []   # cuts dropped for a stronger one closer than min_shot_length
        self._start_score: float | None = None   # cut score of the last start (None: frame 0 or a cross-fade)
        self._previous: Tensor | None = None
        self._histograms: deque[tuple[int, Tensor]] = deque(maxlen=self.config.fade_window + 1)
        self._scores: deque[float] = deque(maxlen=self._SCORE_HISTORY)
        self._floor = 0            # earliest frame a cross-fade comparison may use

    def push(self, frame: Tensor) -> bool:
        """Add the next frame; True when a new shot starts at this frame (never for frame 0)."""
        cfg, t = self.config, self.frames_seen
        small = _small_luminance(frame, cfg.grid, t)
        histogram = torch.histc(small, bins=cfg.bins, min=0.0, max=1.0) / small.numel()
        if self._previous is not None and small.shape != self._previous.shape:
            raise InputError(f"frame {t} is {tuple(frame.shape[-2:])} but earlier frames differ in size; "
                             f"all frames of a video must have one size.")
        new_shot = cut = False
        if self._previous is not None:
            _, previous_histogram = self._histograms[-1]
            score = max(_histogram_distance(histogram, previous_histogram),
                        2 * (small - self._previous).abs().mean().item())
            allowed = t - self.starts[-1] >= cfg.min_shot_length
            recent = sum(self._scores) / len(self._scores) if self._scores else 0.0
            if score >= cfg.threshold and score >= cfg.cut_ratio * recent:
                # Of two cuts closer than min_shot_length the stronger is kept; no cross-fade comparison
                # spans a cut (it would report the same cut a few frames later).
                cut, self._floor = True, max(self._floor, t)
                stronger = not allowed and self._start_score is not None and score > self._start_score
                if allowed:
                    new_shot = True
                elif stronger:
                    self.ignored_cuts.append(self.starts.pop())
                    new_shot = True
                else:
                    self.ignored_cuts.append(t)
                if new_shot:
                    self._start_score = score
            elif allowed and t > self._floor:
                reference = next(h for i, h in self._histograms if i >= max(t - cfg.fade_window, self._floor))
                if _histogram_distance(histogram, reference) >= cfg.fade_threshold:
                    new_shot, self._floor, self._start_score = True, t + cfg.fade_window, None
            if new_shot:
                self.starts.append(t)
            if new_shot or cut:
                self._scores.clear()     # the recent-score baseline belongs to the new take
            else:
                self._scores.append(score)
        self._previous = small
        self._histograms.append((t, histogram))
        self.frames_seen += 1
        return new_shot

    def finish(self, total: int | None = None) -> list[Shot]:
        """The shots found so far; `total` (frames in the video) defaults to the frames pushed."""
        total = self.frames_seen if total is None else total
        if total < self.frames_seen or total < 1:
            raise InputError(f"finish(total={total}) but {self.frames_seen} frames were pushed.")
        ends = [s - 1 for s in self.starts[1:]] + [total - 1]
        return [Shot(first, last) for first, last in zip(self.starts, ends)]


def detect_shots(frames: Iterable[Tensor], *, threshold: float = ShotDetectorConfig.threshold,
                 min_shot_length: int = ShotDetectorConfig.min_shot_length,
                 config: ShotDetectorConfig | None = None) -> list[Shot]:
    """Shots of a whole video. frames: an iterable of `C x H x W` / `H x W` frames (uint8 or float
    [0, 1]; a `T x C x H x W` tensor works). `config`, when given, overrides the two keywords."""
    detector = ShotDetector(config or ShotDetectorConfig(threshold=threshold, min_shot_length=min_shot_length))
    for frame in frames:
        detector.push(frame)
    if detector.frames_seen == 0:
        raise InputError("the video has no frames; check the input path or the node that loads it.")
    return detector.finish()


def validate_shots(shots: Sequence[Shot | Sequence[int]], total: int | None = None) -> list[Shot]:
    """Check that shots tile frames 0..total-1 in order (no gap, no overlap); returns them as `Shot`s."""
    result = [Shot(int(s[0]), int(s[1])) for s in shots]
    if not result:
        raise InputError("the shot list is empty; give at least one shot such as 0-99, or use 'auto' or 'none'.")
    expected = 0
    for i, shot in enumerate(result):
        if shot.last < shot.first:
            raise InputError(f"shot {i} ({shot.first}-{shot.last}) ends before it starts; write FIRST-LAST "
                             f"with FIRST <= LAST.")
        if i == 0 and shot.first != 0:
            raise InputError(f"the first shot starts at frame {shot.first}; shots must start at frame 0 "
                             f"and cover the whole video, e.g. 0-119,120-300.")
        if shot.first != expected:
            what = "a gap" if shot.first > expected else "an overlap"
            raise InputError(f"shot {i} starts at frame {shot.first} but the previous shot ends at frame "
                             f"{expected - 1}: {what}. Shots must follow each other, e.g. 0-119,120-300.")
        expected = shot.last + 1
    if total is not None and expected != total:
        raise InputError(f"the shots cover frames 0-{expected - 1} but the video has {total} frames "
                         f"(0-{total - 1}); make the last shot end at frame {total - 1}.")
    return result


def parse_shots(text: str, total: int | None = None) -> list[Shot] | Literal["auto"] | None:
    """'auto' -> "auto" (detect), 'none' or '' -> None (no shots: one continuous run), and
    'FIRST-LAST,FIRST-LAST,...' (inclusive, 0-based, contiguous from 0) -> shots. `total` (frames in
    the video), when known, must equal the frames the list covers. Bad text raises `InputError`."""
    cleaned = text.strip().lower()
    if cleaned in ("auto",):
        return "auto"
    if cleaned in ("", "none", "off"):
        return None
    shots = []
    for part in cleaned.replace(" ", "").split(","):
        first, sep, last = part.partition("-")
        if not (sep and first.isdigit() and last.isdigit()):
            raise InputError(f"cannot read shot {part!r} in {text!r}: write 'auto', 'none' or ranges of "
                             f"frames such as 0-119,120-300 (inclusive, 0-based).")
        shots.append(Shot(int(first), int(last)))
    return validate_shots(shots, total)


def shots_to_text(shots: Sequence[Shot]) -> str:
    """[Shot(0, 119), Shot(120, 300)] -> '0-119,120-300' (what `parse_shots` reads)."""
    return ",".join(f"{s.first}-{s.last}" for s in shots)


def keyframe_indices(shots: Sequence[Shot]) -> list[int]:
    """The first frame of every shot: where an exemplar colours the whole shot."""
    return [s.first for s in shots]


def shot_of(shots: Sequence[Shot], frame: int) -> int:
    """Index of the shot holding `frame`."""
    for i, shot in enumerate(shots):
        if shot.holds(frame):
            return i
    raise InputError(f"frame {frame} is in no shot ({shots_to_text(shots)}).")


def needs_exemplar(shots: Sequence[Shot], confidence: Sequence[float], exemplar_frames: Iterable[int], *,
                   low: float = 0.5, min_run: int = 10, ignored_cuts: Iterable[int] = ()) -> list[int]:
    """Frames where a new exemplar would help, ascending: the first frame of every shot with no
    exemplar pinned inside it whose confidence (see `ColorizeSession`, in [0, 1]) is below `low` there
    (a reference exemplar may colour it well), the first frame of every run of >= `min_run` consecutive
    frames of one shot below `low`, and every ignored cut (a scene change too close to the previous
    cut to start a shot) followed by any frame below `low` before the next cut: that scene is coloured
    from the previous one's exemplar, so even a short stretch of it needs its own."""
    pinned = set(exemplar_frames)
    frames: set[int] = set()
    n = len(confidence)
    boundaries = sorted({s.first for s in shots} | set(ignored_cuts) | {n})
    for cut in ignored_cuts:
        following = next(b for b in boundaries if b > cut)
        if any(confidence[t] < low for t in range(cut, min(following, n))):
            frames.add(cut)
    for shot in shots:
        if not any(shot.holds(f) for f in pinned) and shot.first < n and confidence[shot.first] < low:
            frames.add(shot.first)
        run_start = None
        for t in range(shot.first, min(shot.last, len(confidence) - 1) + 1):
            if confidence[t] < low:
                if run_start is None:
                    run_start = t
                if t - run_start + 1 == min_run:
                    frames.add(run_start)
            else:
                run_start = None
    return sorted(frames)


def _small_luminance(frame: Tensor, grid: int, index: int) -> Tensor:
    """`C x H x W` / `H x W` frame -> float32 luminance in [0, 1], area-averaged to `grid` px long side."""
    if frame.dim() == 2:
        frame = frame.unsqueeze(0)
    if frame.dim() != 3 or frame.shape[0] not in (1, 3, 4):
        raise InputError(f"frame {index} has shape {tuple(frame.shape)}; expected C x H x W with C = 1, 3 or 4, "
                         f"or H x W.")
    x = frame.float() / 255 if frame.dtype == torch.uint8 else frame.float()
    luminance = x[0] if x.shape[0] == 1 else 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    h, w = luminance.shape
    scale = min(1.0, grid / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.adaptive_avg_pool2d(luminance[None, None], size)[0, 0].cpu().clamp(0, 1)


def _histogram_distance(a: Tensor, b: Tensor) -> float:
    return 0.5 * (a - b).abs().sum().item()
