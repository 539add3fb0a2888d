"""The streaming video node: reads and writes a video one frame at a time."""

from __future__ import annotations

from ..colormnet_core.errors import InputError
from . import host
from .colorize import _size_inputs, run_session


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
