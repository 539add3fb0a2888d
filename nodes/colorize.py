"""Memory settings and the colorize nodes (in-memory frames, and streaming file to file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..colormnet_core.config import MemoryConfig
from ..colormnet_core.errors import Cancelled, InputError, ResolutionError
from ..colormnet_core.exemplars import EncodedExemplars
from ..colormnet_core.preprocess import ProcessingSize
from . import host
from .tensors import to_bchw

log = logging.getLogger(__name__)

DEFAULTS = MemoryConfig()


@dataclass(frozen=True)
class MemorySeed:
    """The COLORMNET_MEMORY socket value: settings plus encoded exemplars. Immutable; every colorize
    run builds its own session (and memory) from it."""

    config: MemoryConfig
    exemplars: EncodedExemplars


class ColorMNetMemory:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Memory (MFP) settings. Defaults are the official release's. Working memory keeps the newest "
                   "memory frames; long-term memory keeps prototypes of older ones, so memory stays bounded for "
                   "any video length.")
    RETURN_TYPES = ("COLORMNET_MEMORY",)
    RETURN_NAMES = ("memory",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "encoded": ("COLORMNET_ENCODED",),
            "mem_every": ("INT", {"default": d.mem_every, "min": 1, "max": 100,
                                  "tooltip": "r: every r-th frame is added to memory."}),
            "min_mid_term_frames": ("INT", {"default": d.min_mid_term_frames, "min": 1, "max": 100,
                                            "tooltip": "T_min: working-memory frames kept after consolidation."}),
            "max_mid_term_frames": ("INT", {"default": d.max_mid_term_frames, "min": 2, "max": 200,
                                            "tooltip": "T_max: working-memory frames that trigger consolidation."}),
            "num_prototypes": ("INT", {"default": d.num_prototypes, "min": 1, "max": 4096,
                                       "tooltip": "P: long-term prototypes made per consolidation."}),
            "max_long_term_elements": ("INT", {"default": d.max_long_term_elements, "min": 2, "max": 1_000_000,
                                               "tooltip": "LT_max: long-term memory capacity."}),
            "top_k": ("INT", {"default": d.top_k, "min": 1, "max": 1000,
                              "tooltip": "Memory entries each pixel reads from."}),
            "long_term": ("BOOLEAN", {"default": True, "tooltip": "Off: working memory grows with the video "
                                      "(official option; short clips only)."}),
            "permanent_exemplars": ("BOOLEAN", {"default": True, "tooltip": "Keep every exemplar in memory for "
                                                "the whole video (off: the official rule, only the first is kept)."}),
        }}

    def build(self, encoded, mem_every, min_mid_term_frames, max_mid_term_frames, num_prototypes,
              max_long_term_elements, top_k, long_term, permanent_exemplars):
        config = MemoryConfig(
            mem_every=mem_every, min_mid_term_frames=min_mid_term_frames, max_mid_term_frames=max_mid_term_frames,
            num_prototypes=num_prototypes, max_long_term_elements=max_long_term_elements, top_k=top_k,
            enable_long_term=long_term, permanent_exemplars=permanent_exemplars)
        return (MemorySeed(config, encoded),)


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
                key_batch: int, on_frame):
    """Shared loop: device placement, progress, interruption, offload. Yields ColorizedFrame."""
    from ..colormnet_core.session import ColorizeSession

    device = host.torch_device()
    network = model.network(device)
    update = host.progress(total or 1)
    try:
        session = ColorizeSession(
            network, memory.exemplars, memory.config, size=processing_size(size_choice), device=device,
            precision=model.autocast(device), key_batch=key_batch, output_device=host.intermediate_device(),
            gamut="keep_luminance" if keep_luminance else "clip")
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


class ColorMNetColorize:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Colorizes video frames (an IMAGE batch) from the exemplars in memory. Progress per frame; "
                   "Cancel stops within a frame.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "colorize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "frames": ("IMAGE", {"tooltip": "Video frames; only their luminance is used."}),
            **_size_inputs(),
        }}

    def colorize(self, model, memory, frames, processing_size, keep_luminance, key_batch):
        batch = to_bchw(frames, "frames")
        out = torch.empty_like(frames, device=host.intermediate_device())

        def store(result):
            out[result.index] = result.rgb.permute(1, 2, 0)

        run_session(model, memory, batch, batch.shape[0], processing_size, keep_luminance, key_batch, store)
        return (out,)


class ColorMNetColorizeVideo:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Colorizes a video file from ComfyUI's input folder and writes the result to the output "
                   "folder frame by frame, so memory use stays flat however long the film is. Audio is not "
                   "copied.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "colorize"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        from ..colormnet_core.video_io import VIDEO_SUFFIXES

        folder = host.input_dir()
        videos = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) \
            if folder.is_dir() else []
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY",),
            "video": (videos or ["(no video in the input folder)"], {"tooltip": "A video in ComfyUI/input."}),
            "filename_prefix": ("STRING", {"default": "colormnet/video"}),
            **_size_inputs(),
        }}

    def colorize(self, model, memory, video, filename_prefix, processing_size, keep_luminance, key_batch):
        from ..colormnet_core.video_io import FrameSource, FrameWriter

        path = host.annotated_input_path(video)
        if not path.is_file():
            raise InputError(f"video not found: {path}. Put it in ComfyUI's input folder and refresh.")
        source = FrameSource(path)
        out_dir = host.output_dir()
        target, subfolder = _next_output(out_dir, filename_prefix, ".mp4")
        with FrameWriter(target, fps=source.fps) as writer:
            run_session(model, memory, source, len(source) or None, processing_size, keep_luminance, key_batch,
                        lambda result: writer.write(result.rgb))
        ui = {"images": [{"filename": target.name, "subfolder": subfolder, "type": "output"}], "animated": [True]}
        return {"ui": ui, "result": (str(target),)}


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
