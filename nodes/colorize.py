"""The colorize node (frames in memory as an IMAGE batch) and the session loop shared with the video node."""

from __future__ import annotations

import json
import logging

import torch

from ..colormnet_core.errors import Cancelled, InputError, ResolutionError
from ..colormnet_core.exemplar_checks import check_exemplars
from ..colormnet_core.preprocess import ProcessingSize
from ..colormnet_core.resources import check_memory, estimate_colorize_memory
from . import host
from .memory import MemorySeed
from .search import SEARCH_ALIASES
from .shots import (
    SHOT_OUTPUT_TOOLTIPS,
    SHOT_RETURN_NAMES,
    SHOT_RETURN_TYPES,
    auto_shot_inputs,
    ignored_cuts_notes,
    plot_report,
    session_shots,
    shot_config,
    shot_inputs,
)
from .tensors import to_bchw

log = logging.getLogger(__name__)


SIZE_CHOICES = ["official (no resize)", "240", "360", "480", "540", "720", "1080", "custom"]
CUSTOM = "custom"
MIN_CUSTOM_SIZE = 64


def processing_size(choice: str, custom_size: int | None = None) -> ProcessingSize:
    """A processing_size choice ("official ...", a short side such as "480", or "custom" with
    custom_size) -> ProcessingSize. A bare number is also accepted (what "custom" resolves to)."""
    if choice == CUSTOM:
        if custom_size is None or custom_size < MIN_CUSTOM_SIZE:
            raise InputError(f"processing_size is custom but custom_size is {custom_size}; set custom_size to the "
                             f"short side in pixels ({MIN_CUSTOM_SIZE} or more), or pick a listed size.")
        return ProcessingSize("short_side", float(custom_size))
    return ProcessingSize() if not choice[:1].isdigit() else ProcessingSize("short_side", float(choice))



def size_choice(choice: str, custom_size: int | None) -> str:
    """The processing_size string run_session takes: "custom" becomes its number."""
    processing_size(choice, custom_size)   # validates
    return str(int(custom_size)) if choice == CUSTOM else choice


def custom_size_input():
    return {"custom_size": ("INT", {"default": 480, "min": MIN_CUSTOM_SIZE, "max": 4320, "step": 8, "tooltip":
                                    "Short side in pixels when processing_size is 'custom' (ignored otherwise)."})}


def _size_inputs():
    return {
        "processing_size": (SIZE_CHOICES, {"default": "480", "tooltip": "Short side (pixels) the network works at; "
                            "the colour is laid over the full-resolution frames, so output detail is kept. Lower "
                            "(240/360): faster, less memory, broader colour edges. Higher: finer colour edges, "
                            "slower. 'official': the frames' own size, as the paper (slow, memory-hungry for HD). "
                            "'custom': use custom_size."}),
        "keep_luminance": ("BOOLEAN", {"default": True, "tooltip": "On: colours too saturated to display are "
                           "toned down, so the output's brightness is exactly the input's. Off: they are clipped "
                           "(the official behaviour; may shift brightness slightly)."}),
        "key_batch": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Frames prepared per network call. "
                      "1 is fastest on CPU and uses the least memory; on a GPU with memory to spare 4-8 may be "
                      "a little faster. Lower it to 1 if memory runs out."}),
    }


def preflight(batch: torch.Tensor, memory: MemorySeed, size: str, key_batch: int) -> list[str]:
    """Checks before any work on an in-memory batch `B x C x H x W`: raises when the run cannot fit in
    RAM; returns (and logs) warnings - memory use over half of what is free, pinned exemplars that do
    not match their frames (other aspect ratio, other picture)."""
    count, height, width = batch.shape[0], batch.shape[-2], batch.shape[-1]
    estimate = estimate_colorize_memory(count, height, width, key_batch=key_batch, size=processing_size(size))
    warnings = []
    memory_warning = check_memory(estimate, host.available_memory(), width=width, height=height)
    if memory_warning:
        log.warning("ColorMNet: %s", memory_warning)
        warnings.append(memory_warning)
    return warnings + check_exemplars(memory.exemplars.exemplars, intrinsic=False,
                                      frame_at=lambda i: batch[i] if i < count else None)


def require_finite(frames, what: str = "frames") -> None:
    """InputError naming the first frame of `frames` (`T x ...`, float) that holds NaN or infinity,
    checked frame by frame so the check needs no copy of the whole batch."""
    if not frames.is_floating_point():
        return
    for index, frame in enumerate(frames):
        if not torch.isfinite(frame).all():
            raise InputError(f"NaN or infinite values in {what}: frame {index} is the first with them; check the "
                             f"node that made the frames (e.g. a division by zero in an image node).")


def precision_notes(model, device: torch.device) -> list[str]:
    """The node note when the chosen precision cannot run as chosen on `device`."""
    if model.precision == "fp16" and model.autocast(device) != "float16":
        return [f"precision fp16 runs as fp32 on the {device.type.upper()}: it has no fast half-precision "
                f"kernels (fp16 would be about 30x slower). Choose auto or fp32 here, or run on a GPU for fp16."]
    return []


def after_run_notes(report: dict, detector) -> list[str]:
    """Notes from a finished run's report: the scene changes 'auto' shots ignored (ShotDetectorConfig
    `detector`'s min_shot_length)."""
    return ignored_cuts_notes(report.get("ignored_cuts", []), detector.min_shot_length)


PROPAGATIONS = ["forward", "bidirectional"]


def propagation_input() -> dict:
    """The optional propagation choice of the colorize nodes (appended last: older workflows keep their order)."""
    return {"propagation": (PROPAGATIONS, {"default": "forward", "tooltip": (
        "forward: the official one-way propagation (each keyframe's colours flow forward only, so they can jump "
        "at the next keyframe). bidirectional: between two exemplars of a shot, a pass from each is blended by "
        "distance, so colours glide into every keyframe, and after the shot's last keyframe a run restarted there "
        "takes over, so they do not jump there either; it costs about a second pass over the frames between a "
        "shot's first and last exemplar (buffered in ComfyUI's temp folder). With one exemplar per shot both "
        "give the same result.")})}


def run_session(model, memory: MemorySeed, frames, total: int | None, size_choice: str, keep_luminance: bool,
                key_batch: int, on_frame, *, shots=None, detector=None, propagation: str = "forward"):
    """Shared loop: device placement, progress, interruption, offload; calls on_frame(ColorizedFrame).
    shots: None (official), "auto" (found with the ShotDetectorConfig `detector`) or a shot list;
    propagation: "forward" or "bidirectional" (see `propagation_input`).
    Returns the finished session (for its report)."""
    from ..colormnet_core.propagation import make_session

    device = host.torch_device()
    network = model.network(device)
    update = host.progress(total or 1)
    try:
        spill = {"spill_dir": host.temp_dir()} if propagation == "bidirectional" else {}
        session = make_session(
            network, memory.exemplars, memory.config, propagation=propagation, size=processing_size(size_choice),
            device=device, precision=model.autocast(device), key_batch=key_batch,
            output_device=host.intermediate_device(), gamut="keep_luminance" if keep_luminance else "clip",
            shots=shots, shot_config=detector, **spill)
        for result in session.run(frames, should_stop=host.interrupted):
            on_frame(result)
            update(result.index + 1)
    except Cancelled:
        host.raise_if_interrupted()   # ComfyUI's own interruption exception, so the UI shows "interrupted"
        raise
    except torch.OutOfMemoryError as e:
        raise ResolutionError(
            f"the GPU ran out of memory at processing size {size_choice}. Choose a smaller processing_size "
            f"(e.g. 480 or 360) or a key_batch of 1.") from e
    finally:
        model.offload()
    return session


class ColorMNetColorize:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("Colorizes video frames (an IMAGE batch) from the exemplars in memory. Progress per frame; "
                   "Cancel stops within a frame.")
    RETURN_TYPES = ("IMAGE", *SHOT_RETURN_TYPES)
    RETURN_NAMES = ("images", *SHOT_RETURN_NAMES)
    OUTPUT_TOOLTIPS = ("The colorized frames.", *SHOT_OUTPUT_TOOLTIPS)
    FUNCTION = "colorize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "frames": ("IMAGE", {"tooltip": "Video frames; only their luminance is used."}),
            **_size_inputs(),
        }, "optional": {**shot_inputs(), **custom_size_input(), **auto_shot_inputs(), **propagation_input()},
            "hidden": {"unique_id": "UNIQUE_ID"}}

    def colorize(self, model, memory, frames, processing_size, keep_luminance, key_batch,
                 shots="none (official)", shot_list=None, custom_size=None, shot_threshold=None,
                 min_shot_length=None, propagation="forward", unique_id=None):
        batch = to_bchw(frames, "frames")
        size = size_choice(processing_size, custom_size)
        require_finite(frames)
        choice = session_shots(shots, shot_list, batch.shape[0])
        detector = shot_config(shot_threshold, min_shot_length)
        warnings = preflight(batch, memory, size, key_batch)
        notes = precision_notes(model, host.torch_device())
        host.show_text(unique_id, warnings, notes)
        # Three channels out whatever came in (RGBA or grey frames give RGB colour).
        out = torch.empty((*frames.shape[:3], 3), dtype=torch.float32, device=host.intermediate_device())

        def store(result):
            out[result.index] = result.rgb.permute(1, 2, 0)

        session = run_session(model, memory, batch, batch.shape[0], size, keep_luminance, key_batch,
                              store, shots=choice, detector=detector, propagation=propagation)
        report = session.report()
        host.show_text(unique_id, warnings, notes + after_run_notes(report, detector))
        return (out, plot_report(report, memory.exemplars.pinned_frames), json.dumps(report))
