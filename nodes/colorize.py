"""The colorize node (frames in memory as an IMAGE batch) and the session loop shared with the video node."""

from __future__ import annotations

import json
import logging

import torch

from ..colormnet_core.errors import Cancelled, ResolutionError
from ..colormnet_core.preprocess import ProcessingSize
from . import host
from .memory import MemorySeed
from .shots import plot_report, session_shots, shot_inputs
from .tensors import to_bchw

log = logging.getLogger(__name__)


SIZE_CHOICES = ["official (no resize)", "360", "480", "540", "720", "1080"]


def processing_size(choice: str) -> ProcessingSize:
    return ProcessingSize() if not choice[:1].isdigit() else ProcessingSize("short_side", float(choice))


def _size_inputs():
    return {
        "processing_size": (SIZE_CHOICES, {"default": "480", "tooltip": "Short side the network sees. Colour is "
                            "computed at this size and laid over the full-resolution luminance. 'official' "
                            "processes frames at their own size (slow and memory-hungry for HD)."}),
        "keep_luminance": ("BOOLEAN", {"default": True, "tooltip": "Shrink out-of-gamut colours instead of "
                           "clipping them, so the output's luminance is exactly the input's."}),
        "key_batch": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames encoded per network call; "
                      "lower it if the GPU runs out of memory."}),
    }


def run_session(model, memory: MemorySeed, frames, total: int | None, size_choice: str, keep_luminance: bool,
                key_batch: int, on_frame, *, shots=None):
    """Shared loop: device placement, progress, interruption, offload; calls on_frame(ColorizedFrame).
    shots: None (official), "auto" or a shot list. Returns the finished session (for its report)."""
    from ..colormnet_core.session import ColorizeSession

    device = host.torch_device()
    network = model.network(device)
    update = host.progress(total or 1)
    try:
        session = ColorizeSession(
            network, memory.exemplars, memory.config, size=processing_size(size_choice), device=device,
            precision=model.autocast(device), key_batch=key_batch, output_device=host.intermediate_device(),
            gamut="keep_luminance" if keep_luminance else "clip", shots=shots)
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
    DESCRIPTION = ("Colorizes video frames (an IMAGE batch) from the exemplars in memory. Progress per frame; "
                   "Cancel stops within a frame.")
    # New outputs go at the end so links in saved workflows keep their slots.
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "confidence_plot", "report")
    OUTPUT_TOOLTIPS = ("The colorized frames.",
                       "Match confidence per frame (cuts orange, frames that need an exemplar red): add exemplars "
                       "where it drops.",
                       "JSON: shots [[first, last], ...], confidence (one value per frame), needs_exemplar "
                       "(frame indices).")
    FUNCTION = "colorize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "frames": ("IMAGE", {"tooltip": "Video frames; only their luminance is used."}),
            **_size_inputs(),
        }, "optional": shot_inputs()}

    def colorize(self, model, memory, frames, processing_size, keep_luminance, key_batch,
                 shots="none (official)", shot_list=None):
        batch = to_bchw(frames, "frames")
        out = torch.empty_like(frames, device=host.intermediate_device())

        def store(result):
            out[result.index] = result.rgb.permute(1, 2, 0)

        session = run_session(model, memory, batch, batch.shape[0], processing_size, keep_luminance, key_batch,
                              store, shots=session_shots(shots, shot_list, batch.shape[0]))
        report = session.report()
        return (out, plot_report(report, memory.exemplars.pinned_frames), json.dumps(report))
