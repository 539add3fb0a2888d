"""`python -m colormnet_core colorize`: colorize a video file or a folder of frames."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .config import MemoryConfig
from .errors import Cancelled
from .exemplars import EncodedExemplars, Exemplar
from .preprocess import ProcessingSize
from .session import ColorizeSession
from .video_io import FrameSource, FrameWriter, read_image

log = logging.getLogger(__name__)


def parse_exemplar(text: str) -> tuple[Path, int | None]:
    """'IMG@N' -> (IMG, N): the colour version of frame N; 'IMG' -> (IMG, None): a reference image."""
    path, sep, frame = text.rpartition("@")
    if sep and frame.isdigit():
        return Path(path), int(frame)
    return Path(text), None


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def add_colorize_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "colorize", help="colorize a video or a folder of frames from colour exemplars",
        description="Colorize a grayscale video from one or more colour exemplars. IMG@N means IMG is the "
                    "colour version of frame N (0-based); IMG alone is a reference that is not a frame. "
                    "Without --size, frames are processed at their own size, as the official pipeline does.")
    p.add_argument("--input", required=True, help="video file or folder of frames (sorted by name)")
    p.add_argument("--exemplar", required=True, action="append", metavar="IMG[@FRAME]",
                   help="colour exemplar; repeat for several")
    p.add_argument("--output", required=True, help="output video file (.mp4, ...) or folder for PNG frames")
    p.add_argument("--checkpoint", required=True, help=".pth or .safetensors ColorMNet checkpoint")
    p.add_argument("--size", default=None,
                   help="processing size: 480 (short side), long:854, 0.5mp; default: official (no resize)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast precision")
    p.add_argument("--key-batch", type=int, default=4, help="frames whose keys are encoded in one call")
    p.add_argument("--compile", action="store_true", help="torch.compile the network stages")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    mem = p.add_argument_group("memory (MFP); defaults are the official release's")
    defaults = MemoryConfig()
    mem.add_argument("--mem-every", type=int, default=defaults.mem_every, help="r: memory frame interval")
    mem.add_argument("--top-k", type=int, default=defaults.top_k)
    mem.add_argument("--min-mid-term-frames", type=int, default=defaults.min_mid_term_frames, help="T_min")
    mem.add_argument("--max-mid-term-frames", type=int, default=defaults.max_mid_term_frames, help="T_max")
    mem.add_argument("--num-prototypes", type=int, default=defaults.num_prototypes, help="P")
    mem.add_argument("--max-long-term-elements", type=int, default=defaults.max_long_term_elements, help="LT_max")
    mem.add_argument("--no-long-term", action="store_true", help="disable long-term memory (short clips only)")
    mem.add_argument("--exemplars-not-permanent", action="store_true",
                     help="let consolidation evict exemplars like any memory frame (official behaviour)")
    p.set_defaults(handler=run_colorize)


def run_colorize(args: argparse.Namespace) -> int:
    from .checkpoint import load_model

    memory = MemoryConfig(
        mem_every=args.mem_every, top_k=args.top_k, min_mid_term_frames=args.min_mid_term_frames,
        max_mid_term_frames=args.max_mid_term_frames, num_prototypes=args.num_prototypes,
        max_long_term_elements=args.max_long_term_elements, enable_long_term=not args.no_long_term,
        permanent_exemplars=not args.exemplars_not_permanent)
    size = ProcessingSize.parse(args.size)
    source = FrameSource(args.input)
    exemplars = EncodedExemplars(tuple(
        Exemplar(read_image(path), frame) for path, frame in map(parse_exemplar, args.exemplar)))
    device = pick_device(args.device)
    network = load_model(args.checkpoint, device=device)
    session = ColorizeSession(network, exemplars, memory, size=size, device=device, precision=args.dtype,
                              key_batch=args.key_batch, compile=args.compile)
    total = len(source)
    started = time.perf_counter()
    with FrameWriter(args.output, fps=source.fps, names=source.names, overwrite=args.overwrite) as writer:
        try:
            for result in session.run(source):
                writer.write(result.rgb)
                _progress(result.index + 1, total, started)
        except (KeyboardInterrupt, Cancelled):
            print(f"\nstopped after {writer.count} frames; they are in {args.output}", file=sys.stderr)
            return 130
    elapsed = time.perf_counter() - started
    print(f"\n{writer.count} frames -> {args.output} in {elapsed:.1f} s "
          f"({writer.count / max(elapsed, 1e-9):.2f} frames/s)", file=sys.stderr)
    return 0


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    width = 30
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    of = f"/{total}" if total else ""
    print(f"\r[{bar}] {done}{of} frames, {rate:.2f} frames/s", end="", file=sys.stderr, flush=True)


