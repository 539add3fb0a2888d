"""Shot nodes: the shot detector (cuts -> keyframes for an image model) and the confidence plot that
Colorize outputs (frame index -> match confidence, cuts and frames that need an exemplar marked).

The COLORMNET_SHOTS socket value is a tuple of `colormnet_core.shots.Shot` (immutable, so ComfyUI's
output cache can hand it to every consumer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..colormnet_core.errors import InputError
from ..colormnet_core.shots import (
    Shot,
    ShotDetector,
    ShotDetectorConfig,
    keyframe_indices,
    parse_shots,
    shots_to_text,
    validate_shots,
)
from . import host
from .tensors import to_bchw, to_bhwc

log = logging.getLogger(__name__)

# The core's defaults are the tuned ones; the node shows them.
_DEFAULTS = ShotDetectorConfig()


class ColorMNetDetectShots:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Finds the shots of a video (hard cuts and fades) and outputs the first frame of every shot "
                   "as an image batch plus their frame indices, ready for an image model to colour them and for "
                   "Load Exemplar (image batch + batch_frames). Connect 'shots' to Colorize so memory starts "
                   "afresh at every cut.")
    RETURN_TYPES = ("COLORMNET_SHOTS", "IMAGE", "STRING", "INT", "STRING")
    RETURN_NAMES = ("shots", "keyframes", "keyframe_indices", "shot_count", "shots_text")
    OUTPUT_TOOLTIPS = (
        "The shot list, for ColorMNet Colorize (shots = 'from input').",
        "The first frame of every shot, one image per shot.",
        "Their frame indices, comma-separated: connect to Load Exemplar's batch_frames.",
        "Number of shots.",
        "The shots as text, e.g. 0-119,120-300 (inclusive frame ranges).",
    )
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "threshold": ("FLOAT", {
                    "default": _DEFAULTS.threshold, "min": 0.01, "max": 1.0, "step": 0.01,
                    "tooltip": "How different two neighbouring frames must be (0-1) to count as a cut. Raise "
                               "it if fast motion or flashes are taken for cuts; lower it if real cuts are "
                               "missed."}),
                "min_shot_length": ("INT", {
                    "default": _DEFAULTS.min_shot_length, "min": 1, "max": 100_000,
                    "tooltip": "Shortest shot in frames: a cut closer than this to the previous one is "
                               "ignored. Raise it against bursts of false cuts (flashes, strobes); lower it "
                               "to keep very short shots."}),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "Video frames (an IMAGE batch)."}),
                "video": ("VIDEO", {"tooltip": "Or a VIDEO (e.g. from Load Video): read frame by frame, only "
                                    "the keyframes are kept in memory. Connect frames or video, not both."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def detect(self, threshold, min_shot_length, frames=None, video=None, unique_id=None):
        if (frames is None) == (video is None):
            raise InputError("ColorMNet Detect Shots needs exactly one input: connect either 'frames' (an IMAGE "
                             "batch) or 'video' (a VIDEO), not " + ("both." if frames is not None else "neither."))
        config = ShotDetectorConfig(threshold=float(threshold), min_shot_length=int(min_shot_length))
        if frames is not None:
            batch = to_bchw(frames, "frames")
            shots, _, ignored = _detect(config, iter(batch), batch.shape[0], keep=False)
            keyframes = frames[keyframe_indices(shots)]
        else:
            chw_frames, total = _video_frames(video)
            shots, kept, ignored = _detect(config, chw_frames, total, keep=True)
            keyframes = to_bhwc(torch.stack([_as_float(kept[i]) for i in keyframe_indices(shots)]))
        # Image models and Preview Image take RGB: grey (1 channel) or RGBA keyframes become RGB.
        keyframes = keyframes[..., :3] if keyframes.shape[-1] >= 3 else keyframes[..., :1].expand(-1, -1, -1, 3)
        host.show_text(unique_id, ignored_cuts_notes(ignored, config.min_shot_length))
        shots = tuple(shots)
        indices = ", ".join(str(i) for i in keyframe_indices(shots))
        log.info("ColorMNet: %d shot(s): %s", len(shots), shots_to_text(shots))
        return (shots, keyframes, indices, len(shots), shots_to_text(shots))


def _detect(config: ShotDetectorConfig, frames: Iterator[torch.Tensor], total: int | None, *,
            keep: bool) -> tuple[list[Shot], dict[int, torch.Tensor], list[int]]:
    """Streams the frames through the detector; with keep, remembers the frames where a shot starts
    (a later cut may still be dropped by min_shot_length, so the final list decides). Returns the shots,
    those frames and the cuts dropped as too close to the previous one."""
    detector = ShotDetector(config)
    update = host.progress(total or 1)
    kept: dict[int, torch.Tensor] = {}
    count = 0
    for i, frame in enumerate(frames):
        host.raise_if_interrupted()
        starts_shot = detector.push(frame) or i == 0
        if keep and starts_shot:
            kept[i] = frame
        count = i + 1
        update(count)
    if count == 0:
        raise InputError("the video has no frames; check the node that loads it.")
    return detector.finish(total=count), kept, detector.ignored_cuts


def ignored_cuts_notes(ignored: Sequence[int], min_shot_length: int) -> list[str]:
    """The node text for scene changes the detector saw but dropped (closer than min_shot_length)."""
    if not ignored:
        return []
    frames = ", ".join(str(f) for f in ignored)
    message = (f"scene change(s) at frame(s) {frames} ignored: closer than min_shot_length ({min_shot_length} "
               f"frames) to a stronger cut, so each is coloured from the exemplar of the shot it falls in. Lower "
               f"min_shot_length to cut there, or pin an exemplar to that frame.")
    log.warning("ColorMNet: %s", message)
    return [message]


def _as_float(frame: torch.Tensor) -> torch.Tensor:
    return frame.float() / 255.0 if frame.dtype == torch.uint8 else frame.float()


def _video_frames(video) -> tuple[Iterable[torch.Tensor], int | None]:
    """`C x H x W` frames of a ComfyUI VIDEO: decoded one by one from its file when it has one,
    otherwise from its components (which ComfyUI decodes whole)."""
    source = getattr(video, "get_stream_source", lambda: None)()
    if isinstance(source, (str, Path)) and Path(source).is_file():
        from ..colormnet_core.video_io import FrameSource

        reader = FrameSource(source)
        return iter(reader), reader.estimated_count   # for the progress bar only
    images = video.get_components().images
    batch = to_bchw(images, "the video's frames")
    return iter(batch), batch.shape[0]


# -- the confidence plot ---------------------------------------------------------------------------

PLOT_SIZE = (640, 360)                 # width, height: legible when the node preview shrinks it ~2x
_BG, _GRID, _TEXT = (255, 255, 255), (215, 215, 215), (40, 40, 40)
_LINE, _CUT, _NEED, _PINNED = (31, 119, 180), (255, 140, 0), (214, 39, 40), (44, 160, 44)   # RGB
_SHOT_BAND = (243, 243, 246)
_FONT, _SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.62


def confidence_plot(confidence: Sequence[float], shots: Sequence[Sequence[int]] = (),
                    needs_exemplar: Sequence[int] = (), pinned: Sequence[int] = (), *,
                    size: tuple[int, int] = PLOT_SIZE) -> torch.Tensor:
    """Draws frame index -> confidence as a ComfyUI IMAGE `1 x H x W x 3` float32 in [0, 1].

    shots: inclusive (first, last) ranges, drawn as alternating bands with an orange line at each cut;
    needs_exemplar: frames marked with red triangles and their numbers; pinned: frames that have an
    exemplar (green dots). Drawn with OpenCV (no plotting library)."""
    width, height = size
    n = len(confidence)
    if n == 0:
        raise InputError("no confidence values to plot (the run produced no frames).")
    values = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0)
    top_value = max(1.0, float(values.max()))
    img = np.full((height, width, 3), _BG, np.uint8)
    left, right, top, bottom = 62, 18, 50, 48
    pw, ph = width - left - right, height - top - bottom

    def x_at(i: float) -> int:
        return left + round(pw * (i + 0.5) / n)

    def y_at(v: float) -> int:
        return top + round(ph * (1.0 - min(max(v, 0.0), top_value) / top_value))

    for k, (first, last) in enumerate(shots):       # shot bands
        if k % 2 == 1:
            cv2.rectangle(img, (x_at(first - 0.5), top), (x_at(last + 0.5), top + ph), _SHOT_BAND, -1)
    for v in np.linspace(0, top_value, 5):           # horizontal grid and y labels
        y = y_at(v)
        cv2.line(img, (left, y), (left + pw, y), _GRID, 1)
        cv2.putText(img, f"{v:.2f}".rstrip("0").rstrip(".") or "0", (6, y + 6), _FONT, _SCALE, _TEXT, 2, cv2.LINE_AA)
    for first, _ in list(shots)[1:]:                 # cuts, between frame first-1 and first
        x = x_at(first - 0.5)
        cv2.line(img, (x, top), (x, top + ph), _CUT, 3)
    points = np.array([[x_at(i), y_at(v)] for i, v in enumerate(values)], np.int32)
    if n == 1:
        cv2.circle(img, tuple(points[0]), 5, _LINE, -1, cv2.LINE_AA)
    else:
        cv2.polylines(img, [points], False, _LINE, 3, cv2.LINE_AA)
    for f in pinned:
        if 0 <= f < n:
            cv2.circle(img, (x_at(f), y_at(values[f])), 7, _PINNED, -1, cv2.LINE_AA)
    for f in needs_exemplar:
        if 0 <= f < n:
            x = x_at(f)
            triangle = np.array([[x - 9, top - 14], [x + 9, top - 14], [x, top]], np.int32)
            cv2.fillPoly(img, [triangle], _NEED, cv2.LINE_AA)
            cv2.line(img, (x, top), (x, top + ph), _NEED, 1, cv2.LINE_AA)
            label = str(f)   # the frame number, beside the marker (right of it unless at the right edge)
            (tw, _), _ = cv2.getTextSize(label, _FONT, 0.5, 1)
            lx = x + 12 if x + 12 + tw < width else x - 12 - tw
            cv2.putText(img, label, (lx, top - 2), _FONT, 0.5, _NEED, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), _TEXT, 1)
    ticks = sorted({0, n - 1, *(first for first, _ in shots)})
    last_x = -100
    for i in ticks:                                  # x labels: first, last and every shot start
        label = str(i)
        (tw, _), _ = cv2.getTextSize(label, _FONT, _SCALE, 2)
        x = min(max(x_at(i) - tw // 2, 0), width - tw)
        if x > last_x + 6:
            cv2.putText(img, label, (x, top + ph + 22), _FONT, _SCALE, _TEXT, 2, cv2.LINE_AA)
            last_x = x + tw
    cv2.putText(img, "frame", (left + pw // 2 - 24, height - 6), _FONT, 0.55, _TEXT, 1, cv2.LINE_AA)
    _legend(img, [("confidence", _LINE), ("cut", _CUT), ("needs exemplar", _NEED), ("exemplar", _PINNED)])
    return torch.from_numpy(img).float().div_(255.0).unsqueeze(0)


def _legend(img: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    x = 10
    for label, colour in entries:
        cv2.rectangle(img, (x, 12), (x + 16, 28), colour, -1)
        cv2.putText(img, label, (x + 22, 27), _FONT, _SCALE, _TEXT, 2, cv2.LINE_AA)
        (tw, _), _ = cv2.getTextSize(label, _FONT, _SCALE, 2)
        x += tw + 34


# -- Colorize's shot inputs ------------------------------------------------------------------------

SHOT_MODES = ["none (official)", "auto", "from input"]
# The colorize nodes' outputs after their frames (added last, so links in saved workflows keep their slots).
SHOT_RETURN_TYPES = ("IMAGE", "STRING")
SHOT_RETURN_NAMES = ("confidence_plot", "report")
SHOT_OUTPUT_TOOLTIPS = (
    "Match confidence per frame (cuts orange, frames that need an exemplar red): add exemplars where it drops.",
    "JSON: shots [[first, last], ...], confidence (one value per frame), needs_exemplar (frame indices).")


def shot_inputs() -> dict:
    """Optional inputs for the colorize nodes (appended, so older workflows keep working)."""
    return {
        "shots": (SHOT_MODES, {"default": SHOT_MODES[0], "tooltip": (
            "Per-shot reset: at every cut, memory and hidden state start afresh so colours do not leak from "
            "the previous shot. 'none (official)': one continuous shot (the official behaviour). 'auto': "
            "detect cuts here (with shot_threshold and min_shot_length). 'from input': the shot list from "
            "ColorMNet Detect Shots, or text such as 0-11,12-23. With shots, every shot needs an exemplar pinned "
            "inside it or a reference exemplar.")}),
        "shot_list": ("COLORMNET_SHOTS,STRING", {"tooltip": (
            "From ColorMNet Detect Shots, or text (e.g. a String node) in the CLI's --shots syntax: inclusive "
            "frame ranges from 0 such as 0-11,12-23. Used when shots = 'from input'.")}),
    }


def auto_shot_inputs() -> dict:
    """The detector settings for shots = 'auto' (appended after the older optional inputs)."""
    return {
        "shot_threshold": ("FLOAT", {
            "default": _DEFAULTS.threshold, "min": 0.01, "max": 1.0, "step": 0.01,
            "tooltip": "shots = 'auto': how different two neighbouring frames must be (0-1) to count as a cut "
                       "(as on Detect Shots)."}),
        "min_shot_length": ("INT", {
            "default": _DEFAULTS.min_shot_length, "min": 1, "max": 100_000,
            "tooltip": "shots = 'auto': shortest shot in frames; a cut closer than this to the previous one is "
                       "ignored, and the node's text lists the ignored ones."}),
    }


def shot_config(threshold: float | None, min_shot_length: int | None) -> ShotDetectorConfig:
    """The detector settings of a colorize node's 'auto' shots (None: the default)."""
    return ShotDetectorConfig(
        threshold=_DEFAULTS.threshold if threshold is None else float(threshold),
        min_shot_length=_DEFAULTS.min_shot_length if min_shot_length is None else int(min_shot_length))


def session_shots(mode: str, shot_list, total: int | None):
    """The `shots` argument of ColorizeSession for the node's choice: None, "auto" or the list.

    shot_list: Detect Shots' tuple of `Shot`s, [first, last] pairs (through the API), or text in the
    CLI's --shots syntax (read by the same `parse_shots`)."""
    if mode not in SHOT_MODES:
        raise InputError(f"shots must be one of {SHOT_MODES}, got {mode!r}.")
    if mode != "from input":
        if shot_list is not None:
            raise InputError(f"a shot list is connected but shots is {mode!r}, so it would be ignored. Set shots "
                             f"to 'from input' to use it, or disconnect shot_list.")
        return None if mode == SHOT_MODES[0] else "auto"
    if isinstance(shot_list, str):
        parsed = parse_shots(shot_list)   # names the part it cannot read and shows the syntax
        if parsed == "auto":
            return "auto"
        shot_list = parsed
    if not shot_list:
        raise InputError("shots is 'from input' but no shot list is connected: connect the 'shots' output of "
                         "ColorMNet Detect Shots to shot_list (or text such as 0-11,12-23), or choose 'auto'.")
    try:
        shots = validate_shots(shot_list)
    except (TypeError, ValueError, IndexError) as e:
        raise InputError(f"shot_list must be ColorMNet Detect Shots' output, [first, last] pairs or text such as "
                         f"0-11,12-23; got {shot_list!r}.") from e
    end = shots[-1].last
    if total is not None and end != total - 1:
        raise InputError(f"the shot list covers frames 0-{end} ({shots_to_text(shots)}) but the video has "
                         f"{total} frames; run ColorMNet Detect Shots on the same frames you colorize.")
    return shots


def plot_report(report: dict, pinned: Sequence[int]) -> torch.Tensor:
    """Colorize's confidence_plot output from `ColorizeSession.report()`."""
    return confidence_plot(report["confidence"], report["shots"], report["needs_exemplar"], pinned)
