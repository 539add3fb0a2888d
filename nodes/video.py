"""The video nodes: ComfyUI VIDEO in, VIDEO out, decoded and encoded one frame at a time.

`ColorMNetVideo` takes core Load Video's VIDEO and returns a VIDEO (an H.264 file with the source's
audio, in ComfyUI's temp folder) that core Save Video copies and previews. RAM stays flat however
long the film is: frames go from the decoder through the network into the encoder one by one.
`ColorMNetColorizeVideo` (file name in, file out) is kept, deprecated, for saved workflows.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from pathlib import Path

from ..colormnet_core.errors import InputError
from . import host
from .colorize import (
    _size_inputs,
    after_run_notes,
    custom_size_input,
    precision_notes,
    propagation_input,
    require_finite,
    run_session,
    size_choice,
)
from .search import SEARCH_ALIASES
from .shots import (
    SHOT_OUTPUT_TOOLTIPS,
    SHOT_RETURN_NAMES,
    SHOT_RETURN_TYPES,
    auto_shot_inputs,
    plot_report,
    session_shots,
    shot_config,
    shot_inputs,
)

log = logging.getLogger(__name__)

CRF_INPUT = ("INT", {"default": 18, "min": 0, "max": 51, "tooltip": "H.264 quality. Lower is better and bigger: 18 "
                     "looks like the original, 23 is half the size, 0 is lossless (huge)."})


class VideoFile:
    """A VIDEO backed by a file, for use without ComfyUI (tests, scripts); the subset of ComfyUI's
    `VideoFromFile` that Save Video and our nodes use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def get_stream_source(self) -> str:
        return str(self.path)

    def get_dimensions(self) -> tuple[int, int]:
        from ..colormnet_core.video_file import VideoReader

        reader = VideoReader(self.path)
        return reader.width, reader.height

    def save_to(self, path, format="auto", codec="auto", metadata=None) -> None:   # noqa: A002 - ComfyUI's names
        import shutil

        shutil.copyfile(self.path, path)

    def __repr__(self) -> str:
        return f"VideoFile({str(self.path)!r})"


def video_source(video):
    """The file (path or in-memory buffer) behind a VIDEO, or None for one built from frames in memory."""
    if isinstance(video, (str, Path)):
        return video
    own = type(video).__dict__.get("get_stream_source")   # the base class's default re-encodes: not wanted
    if own is not None:
        return video.get_stream_source()
    return getattr(video, "_VideoFromFile__file", None)   # ComfyUI before get_stream_source existed


def open_video(video):
    """A frame source for a VIDEO input: a `VideoReader` on its file (InputError, with what to do, when it
    is no readable video), or `InMemoryVideo` for a VIDEO built from frames (e.g. Create Video)."""
    from ..colormnet_core.video_file import VideoReader

    source = video_source(video)
    if source is not None:
        return VideoReader(source)
    if not hasattr(video, "get_components"):
        raise InputError(f"expected a VIDEO (from Load Video or Create Video), got {type(video).__name__}.")
    return InMemoryVideo(video.get_components())


class InMemoryVideo:
    """A VIDEO whose frames are already in memory (IMAGE `T x H x W x 3`, float 0..1), with the surface of
    `VideoReader` that `colorize_video` uses; its AUDIO, if any, is encoded to AAC."""

    audio = None

    def __init__(self, components) -> None:
        from fractions import Fraction

        self.images = components.images
        if self.images.ndim != 4 or self.images.shape[0] == 0:
            raise InputError(f"the VIDEO holds no frames (images of shape {tuple(self.images.shape)}); check the "
                             f"node that made it.")
        self.fps = Fraction(frame_rate(components.frame_rate)).limit_denominator(1_000_000)
        require_finite(self.images, "the VIDEO's frames")
        self.time_base = 1 / self.fps
        self.estimated_frames = self.frame_count = self.images.shape[0]
        self.height, self.width = self.images.shape[1:3]
        sound = getattr(components, "audio", None)
        self.waveform = (sound["waveform"][0], int(sound["sample_rate"])) if sound else None

    def require_frame(self, index: int) -> None:
        if index >= self.frame_count:
            raise InputError(f"an exemplar is pinned to frame {index}, but the video has {self.frame_count} frames "
                             f"(0-{self.frame_count - 1}); pin it to a frame that exists or use it as a reference "
                             f"(frame -1).")

    def timestamp(self, index: int) -> int:
        return index

    def frame_at(self, index: int):
        return self.images[index][..., :3].permute(2, 0, 1) if index < self.frame_count else None

    def __iter__(self):
        for image in self.images:
            yield image[..., :3].permute(2, 0, 1)


def frame_rate(value) -> float:
    """A VIDEO's frame rate from its components, checked: a VIDEO built in memory (Create Video, or Get
    Video Components -> Create Video) has no container to fall back to, and any guessed rate would change
    the film's length and put its sound out of step, so a rate that is not a positive finite number is
    an error before any work (a file-backed VIDEO keeps its own timestamps instead)."""
    try:
        rate = float(value)
        shown = f"{rate:g}"   # a Fraction(0, 1) reads as 0
    except (TypeError, ValueError):
        rate, shown = math.nan, repr(value)
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"the VIDEO's frame rate is {shown}: it must be a positive number of frames per second. "
                         f"It comes from the node that built the VIDEO in memory (Create Video's fps, often wired "
                         f"from Get Video Components, which gives 0 when the source stream reports none): set fps "
                         f"on Create Video to the film's rate, e.g. 24 or 25.")
    return rate


def colorize_video(model, memory, reader, target: Path, size_options: tuple, crf: int, node_id=None, *,
                   shots=None, detector=None, propagation: str = "forward"):
    """Decode -> colorize -> encode, one frame at a time, into `target` (renamed there only when complete).
    Pinned exemplars are checked first: their frames must exist; frame 0's is compared with its exemplar
    (the only frame known before reading; a VIDEO made from frames has them all) and warnings shown on
    the node `node_id`, with notes (precision, padding to even sizes, ignored cuts). shots: None, "auto"
    (cuts found while streaming with the ShotDetectorConfig `detector`) or a shot list; propagation:
    "forward" or "bidirectional". Returns the finished session (for its report)."""
    from ..colormnet_core.exemplar_checks import check_exemplars
    from ..colormnet_core.video_file import VideoWriter

    pinned = memory.exemplars.pinned_frames
    if pinned:
        reader.require_frame(max(pinned))
    warnings = check_exemplars(memory.exemplars.exemplars, intrinsic=False, frame_at=reader.frame_at)
    notes = precision_notes(model, host.torch_device())
    host.show_text(node_id, warnings, notes)
    audio_from = reader if reader.audio is not None else None
    with VideoWriter(target, fps=reader.fps, time_base=reader.time_base, audio_from=audio_from,
                     audio_waveform=getattr(reader, "waveform", None), crf=crf) as writer:
        session = run_session(model, memory, reader, reader.estimated_frames, *size_options,
                              lambda result: writer.write(result.rgb, reader.timestamp(result.index)), shots=shots,
                              detector=detector, propagation=propagation)
    if writer.padded:
        notes.append(f"the frames are {reader.width}x{reader.height}; H.264 needs even sizes, so the video was "
                     f"padded to {writer.padded[0]}x{writer.padded[1]} (last row/column repeated). Crop it in "
                     f"an editor if the extra pixel matters.")
    host.show_text(node_id, warnings, notes + after_run_notes(session.report(), detector or shot_config(None, None)))
    return session


def input_videos() -> list[str]:
    """Names of the video files in ComfyUI's input folder (for a file combo)."""
    from ..colormnet_core.video_io import VIDEO_SUFFIXES

    folder = host.input_dir()
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if folder.is_dir() else []


class ColorMNetVideo:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Colorizes a VIDEO (from Load Video) from the exemplars in memory and returns a VIDEO for Save "
                   "Video: H.264 (plays in browsers) with the original sound, frame rate and timing. Frames are "
                   "decoded, colorized and encoded one at a time, so memory use stays flat however long the film "
                   "is. Cancel stops within a frame and leaves no file.")
    RETURN_TYPES = ("VIDEO", *SHOT_RETURN_TYPES)
    RETURN_NAMES = ("video", *SHOT_RETURN_NAMES)
    OUTPUT_TOOLTIPS = ("The colorized video (a temporary H.264 file); connect Save Video to keep it.",
                       *SHOT_OUTPUT_TOOLTIPS)
    FUNCTION = "colorize"
    SEARCH_ALIASES = SEARCH_ALIASES

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "video": ("VIDEO", {"tooltip": "The film to colorize, from Load Video (upload or input folder). Only "
                                "its luminance is used; its sound is copied."}),
            **_size_inputs(),
            "crf": CRF_INPUT,
        }, "optional": {**shot_inputs(), **custom_size_input(), **auto_shot_inputs(), **propagation_input()},
            "hidden": {"unique_id": "UNIQUE_ID"}}

    def colorize(self, model, memory, video, processing_size, keep_luminance, key_batch, crf=18,
                 shots="none (official)", shot_list=None, custom_size=None, shot_threshold=None,
                 min_shot_length=None, propagation="forward", unique_id=None):
        size = size_choice(processing_size, custom_size)
        reader = open_video(video)
        # The header's frame count (None when absent) checks a connected shot list; "auto" still streams.
        shot_choice = session_shots(shots, shot_list, reader.frame_count)
        detector = shot_config(shot_threshold, min_shot_length)
        folder = host.temp_dir()
        folder.mkdir(parents=True, exist_ok=True)
        # A new name per run: ComfyUI may still hold (cache) the VIDEO of an earlier run until this one ends.
        target = folder / f"colormnet_{_node_tag(unique_id)}{uuid.uuid4().hex[:12]}.mp4"
        session = colorize_video(model, memory, reader, target, (size, keep_luminance, key_batch), crf, unique_id,
                                 shots=shot_choice, detector=detector, propagation=propagation)
        remove_earlier_outputs(folder, unique_id, keep=target)
        result = host.video_from_file(target) or VideoFile(target)
        report = session.report()
        plot = plot_report(report, memory.exemplars.pinned_frames)
        ui = {"images": [{"filename": target.name, "subfolder": "", "type": "temp"}], "animated": [True]}
        return {"ui": ui, "result": (result, plot, json.dumps(report))}


class ColorMNetColorizeVideo:
    CATEGORY = "ColorMNet"
    DEPRECATED = True
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("Deprecated: use ColorMNet Colorize Video (VIDEO in and out, with upload). Colorizes a video file "
                   "from ComfyUI's input folder into the output folder as H.264 with the original sound, one frame "
                   "at a time.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "colorize"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        videos = input_videos()
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "video": (videos or ["(no video in the input folder)"], {"tooltip": "A video in ComfyUI/input."}),
            "filename_prefix": ("STRING", {"default": "colormnet/video", "tooltip": "Output file name start, "
                                "relative to ComfyUI's output folder; a counter and .mp4 are added."}),
            **_size_inputs(),
        }, "optional": custom_size_input(), "hidden": {"unique_id": "UNIQUE_ID"}}

    def colorize(self, model, memory, video, filename_prefix, processing_size, keep_luminance, key_batch,
                 custom_size=None, unique_id=None):
        size = size_choice(processing_size, custom_size)
        from ..colormnet_core.video_file import VideoReader

        path = host.annotated_input_path(video)
        if not path.is_file():
            raise InputError(f"video not found: {path}. Put it in ComfyUI's input folder and refresh.")
        reader = VideoReader(path)
        out_dir = host.output_dir()
        target, subfolder = _next_output(out_dir, filename_prefix, ".mp4")
        colorize_video(model, memory, reader, target, (size, keep_luminance, key_batch), 18, unique_id)
        ui = {"images": [{"filename": target.name, "subfolder": subfolder, "type": "output"}], "animated": [True]}
        return {"ui": ui, "result": (str(target),)}


def _node_tag(node_id) -> str:
    """`n<id>_` for a node id (file-name safe), "" without one."""
    return "" if node_id is None else "n" + re.sub(r"[^A-Za-z0-9]", "-", str(node_id)) + "_"


def remove_earlier_outputs(folder: Path, node_id, keep: Path) -> list[Path]:
    """Deletes the temp videos earlier runs of node `node_id` left in `folder`, once `keep` (this run's)
    is complete. Each run of a film writes a full-length file there and ComfyUI empties temp only at
    start-up, so without this every re-run of a film costs its size again on disk; Save Video has copied
    the earlier file into the output folder during its own run, and ComfyUI's cache holds one result per
    node, which this run's replaces. Without a node id (standalone use) nothing is removed."""
    if node_id is None:
        return []
    removed = []
    for path in folder.glob(f"colormnet_{_node_tag(node_id)}*.mp4"):
        if path != keep:
            try:
                path.unlink()
                removed.append(path)
            except OSError as e:   # e.g. still open in a player on Windows: leave it for ComfyUI's restart
                log.info("ColorMNet: could not remove the earlier temp video %s (%s)", path.name, e)
    return removed


def _next_output(out_dir, prefix: str, suffix: str):
    """`<out>/<prefix>_00001_.mp4`, the first free counter, as ComfyUI's savers name files."""
    prefix_path = out_dir / prefix
    folder, stem = prefix_path.parent, prefix_path.name
    if out_dir.resolve() not in (folder.resolve(), *folder.resolve().parents):
        raise InputError(f"filename_prefix {prefix!r} points outside the output folder.")
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1
    while (folder / f"{stem}_{counter:05d}_{suffix}").exists():
        counter += 1
    subfolder = str(folder.relative_to(out_dir)) if folder != out_dir else ""
    return folder / f"{stem}_{counter:05d}_{suffix}", subfolder

