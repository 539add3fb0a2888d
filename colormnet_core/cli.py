"""`python -m colormnet_core colorize`: colorize a video file or a folder of frames."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .config import MemoryConfig
from .errors import Cancelled, InputError
from .exemplars import EncodedExemplars, Exemplar
from .metrics import ShotMetrics
from .preprocess import ProcessingSize
from .propagation import make_session
from .session import ColorizeSession
from .shots import parse_shots
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
                    "Without --size, frames are processed at their own size, as the official pipeline does. "
                    "--checkpoint takes either family: the official DINOv2 release or CMNET2's DINOv3 ones.")
    p.add_argument("--input", required=True, help="video file or folder of frames (sorted by name)")
    p.add_argument("--exemplar", action="append", default=[], metavar="IMG[@FRAME]",
                   help="colour exemplar; repeat for several. IMG@N pins frame N's output to IMG's colours")
    p.add_argument("--reference", action="append", default=[], metavar="IMG[@FRAME]",
                   help="CMNET2-style reference given at frame N (default 0): it joins a permanent memory tagged "
                        "with frame N and frame N is still predicted (unlike --exemplar IMG@N, which pins it); "
                        "repeat for several. See --proximity-bias and --memory-like-cmnet2")
    p.add_argument("--output", required=True,
                   help="output video (.mp4, .mkv, .mov: H.264 with the source's audio) or folder for PNG frames")
    p.add_argument("--checkpoint", default=None,
                   help=".pth or .safetensors ColorMNet checkpoint (default: the weights `download` fetched)")
    p.add_argument("--size", default=None,
                   help="processing size: 480 (short side), long:854, 0.5mp; default: official (no resize)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast precision")
    p.add_argument("--key-batch", type=int, default=1,
                   help="frames whose keys are encoded in one call (1: least memory, fastest on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network stages")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--crf", type=int, default=18,
                   help="H.264 quality for video outputs: 0 lossless, 18 (default) visually lossless, 23 smaller")
    p.add_argument("--shots", default="none", metavar="auto|none|FIRST-LAST,...",
                   help="per-shot reset: 'auto' detects cuts and cross-fades, or give the shots as inclusive "
                        "0-based frame ranges (0-119,120-300); every shot then needs an exemplar pinned to its "
                        "first frame or a reference. Default 'none': one continuous run (official behaviour)")
    p.add_argument("--propagation", default="forward", choices=["forward", "bidirectional"],
                   help="forward (official): each exemplar colours the frames after it; bidirectional: between two "
                        "exemplars of a shot, blend a forward pass and a backward pass, so colours do not jump at "
                        "keyframes, and a run restarted at a shot's last (and first) exemplar continues after (and "
                        "before) it (about twice the work between the first and last exemplar; the stretch is "
                        "buffered, on disk when long)")
    p.add_argument("--blend", default="distance", choices=["distance", "pixel"],
                   help="bidirectional only: mix the two passes per frame by the distance to the exemplars "
                        "(default), or per pixel by distance and each pass's match confidence (see "
                        "colormnet_core/blend.py for the measurements)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="write shots, per-frame match confidence and the frames that need an exemplar here")
    add_memory_arguments(p, references=True)
    p.set_defaults(handler=run_colorize)


def add_memory_arguments(p: argparse.ArgumentParser, *, references: bool = False) -> None:
    """The MFP memory options (defaults: the official release's); `memory_from_args` reads them.
    references: also the options that act on `--reference`s (proximity bias, CMNET2's sizes)."""
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
    if references:
        mem.add_argument("--proximity-bias", type=float, default=0.0, metavar="ALPHA",
                         help="proximity-weighted matching (CMNET2): among --reference images, those given at frames "
                              "nearer the current one get more of the references' weight; 0 = off (default), CMNET2 "
                              "uses 0.5-0.7. Helps when similar-looking references carry different colours")
        mem.add_argument("--memory-like-cmnet2", action="store_true",
                         help="derive T_max, T_min, LT_max, P and r from the video's length as CMNET2 does "
                              "(MemoryConfig.like_cmnet2); --top-k, --mem-every and --proximity-bias still apply")


def memory_from_args(args: argparse.Namespace, num_frames: int | None = None) -> MemoryConfig:
    """The memory settings of the parsed options; num_frames: the video's length, needed by
    --memory-like-cmnet2."""
    proximity = getattr(args, "proximity_bias", 0.0)
    if getattr(args, "memory_like_cmnet2", False):
        if not num_frames:
            raise InputError("--memory-like-cmnet2 needs the video's frame count, and this input does not tell "
                             "it up front; give the memory flags (--max-mid-term-frames ...) instead.")
        return MemoryConfig.like_cmnet2(num_frames, top_k=args.top_k, mem_every=args.mem_every,
                                        proximity_bias=proximity)
    return MemoryConfig(
        mem_every=args.mem_every, top_k=args.top_k, min_mid_term_frames=args.min_mid_term_frames,
        max_mid_term_frames=args.max_mid_term_frames, num_prototypes=args.num_prototypes,
        max_long_term_elements=args.max_long_term_elements, enable_long_term=not args.no_long_term,
        permanent_exemplars=not args.exemplars_not_permanent, proximity_bias=proximity)


def run_colorize(args: argparse.Namespace) -> int:
    from .checkpoint import describe_network, load_model
    from .download import find_checkpoint

    checkpoint = find_checkpoint(args.checkpoint)   # first: without weights nothing else matters

    if not args.exemplar and not args.reference:
        raise InputError("give at least one --exemplar IMG[@FRAME] or --reference IMG[@FRAME].")
    size = ProcessingSize.parse(args.size)
    shots = parse_shots(args.shots)
    # Everything that can be wrong with the input is checked before the model loads and work starts.
    source = FrameSource(args.input)
    memory = memory_from_args(args, source.estimated_count)
    exemplars = EncodedExemplars(tuple(
        [Exemplar(read_image(path), frame) for path, frame in map(parse_exemplar, args.exemplar)]
        + [Exemplar(read_image(path), frame, reference=True) for path, frame in map(parse_exemplar, args.reference)]))
    given = exemplars.pinned_frames + exemplars.tagged_frames
    if given:
        source.require_frame(max(given))
    if isinstance(shots, list):
        source.require_frame(shots[-1].last)
    writer = FrameWriter(args.output, names=source.names, source=source, crf=args.crf, overwrite=args.overwrite)
    device = pick_device(args.device)
    network = load_model(checkpoint, device=device)
    log.info("checkpoint %s: %s", checkpoint.name, describe_network(network))
    session = make_session(network, exemplars, memory, size=size, device=device, precision=args.dtype,
                           key_batch=args.key_batch, compile=args.compile, shots=shots, propagation=args.propagation,
                           **({"blend": args.blend} if args.propagation == "bidirectional" else {}))
    total = source.estimated_count
    # Temporal metrics for the report, from the frames as they stream (bounded memory, see ShotMetrics).
    metrics = ShotMetrics(exemplars.pinned_frames) if args.report else None
    started = time.perf_counter()
    with writer:
        try:
            for result in session.run(source):
                writer.write(result.rgb, result.index)
                if metrics is not None:
                    metrics.add(result.index, result.shot, result.rgb)
                _progress(result.index + 1, total, started)
        except (KeyboardInterrupt, Cancelled):
            writer.abort()
            kept = "nothing was written (a colorization cannot resume from a partial video)" if writer.video \
                else f"they are in {args.output}"
            print(f"\nstopped after {writer.count} frames; {kept}", file=sys.stderr)
            _write_report(args.report, session, metrics)
            return 130
    _write_report(args.report, session, metrics)
    elapsed = time.perf_counter() - started
    print(f"\n{writer.count} frames -> {args.output} in {elapsed:.1f} s "
          f"({writer.count / max(elapsed, 1e-9):.2f} frames/s)", file=sys.stderr)
    if writer.video is not None:
        _describe_video(writer.video, source)
    return 0


def _write_report(path: str | None, session: ColorizeSession, metrics: ShotMetrics | None = None) -> None:
    """The session's report as JSON: shots, per-frame confidence, frames that need an exemplar, and per
    shot (lists aligned with "shots") the output's "cdc" and "keyframe_pop" (see `metrics.ShotMetrics`)."""
    if path is None or session.frames_done == 0:
        return
    report = session.report()
    if metrics is not None:
        per_shot = metrics.per_shot()
        report["cdc"] = [shot["cdc"] for shot in per_shot]
        report["keyframe_pop"] = [shot["keyframe_pop"] for shot in per_shot]
    Path(path).write_text(json.dumps(report) + "\n")
    if report["needs_exemplar"]:
        print(f"frames that would gain from an exemplar: {report['needs_exemplar']} (report: {path})",
              file=sys.stderr)


def _describe_video(video, source: FrameSource) -> None:
    """What the user may not expect from the output file: padding, audio handling."""
    notes = [f"H.264 yuv420p ({video.encoder}, crf {video.crf})"]
    if video.padded:
        notes.append(f"padded to {video.padded[0]}x{video.padded[1]} (H.264 needs even sizes)")
    audio = source.video.audio if source.video is not None else None
    if audio is None:
        notes.append("no audio in the source")
    elif video.audio_transcoded_from:
        notes.append(f"audio {video.audio_transcoded_from} re-encoded to AAC (the container cannot hold it)")
    else:
        notes.append(f"audio {audio.codec} copied")
    print("; ".join(notes), file=sys.stderr)


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    width = 30
    filled = min(width, int(width * done / total)) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    of = f"/{total}" if total else ""
    print(f"\r[{bar}] {done}{of} frames, {rate:.2f} frames/s", end="", file=sys.stderr, flush=True)


