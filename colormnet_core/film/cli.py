"""`python -m colormnet_core film init|status|render|assemble`: a feature film, shot by shot.

Exit status: 0 when the command did all it was asked (render: every shot is done), 3 when `render`
left shots undone (needing an exemplar, busy in another process, or failed), 1 on an error that
stopped the command, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..cli import add_memory_arguments, memory_from_args, pick_device
from ..errors import Cancelled
from ..shots import ShotDetectorConfig, parse_shots
from .assemble import assemble_film
from .distributed import add_ray_arguments, render_jobs_with_ray
from .jobs import FilmSettings
from .plan import has_colour_source, plan_jobs, state_of
from .project import FilmProject
from .records import ProjectLocked
from .render import render_job
from .source import FilmError

INCOMPLETE = 3


def add_film_parser(subparsers) -> None:
    film = subparsers.add_parser(
        "film", help="render a long film shot by shot: resumable, re-renders only what changed",
        description="A film project is a folder: `init` finds the shots and writes each shot's keyframe; put a "
                    "colour picture for a shot's first frame into exemplars/ (000120.png for frame 120, or "
                    "reference*.png for every shot); `render` renders the shots that are missing or stale; "
                    "`assemble` joins them with the source's sound.")
    sub = film.add_subparsers(dest="film_command", required=True)
    init = sub.add_parser("init", help="make a project for a video: find its shots, write their keyframes")
    init.add_argument("source", help="the film's video file")
    init.add_argument("--project", required=True, help="project folder (new or empty)")
    init.add_argument("--shots", default="auto", metavar="auto|none|FIRST-LAST,...",
                      help="'auto' (default) detects cuts and cross-fades; 'none' makes the film one shot; or give "
                           "inclusive 0-based ranges, e.g. 0-119,120-300")
    defaults = ShotDetectorConfig()
    init.add_argument("--threshold", type=float, default=defaults.threshold,
                      help=f"cut score that makes a hard cut (default {defaults.threshold}; lower finds more cuts)")
    init.add_argument("--min-shot-length", type=int, default=defaults.min_shot_length,
                      help=f"frames; a cut closer than this to the previous one is ignored (default "
                           f"{defaults.min_shot_length})")
    init.set_defaults(handler=_init)
    status = sub.add_parser("status", help="each shot's state: done, stale, pending, needs_exemplar")
    status.add_argument("--project", required=True)
    status.add_argument("--json", action="store_true", help="print JSON: {\"shots\": [{index, first, last, state, "
                                                            "keyframe, reason}, ...]}")
    status.add_argument("--checkpoint", default=None,
                        help="judge the shots against this checkpoint (default: the one the last render used); "
                             "a checkpoint of another family or release makes every rendered shot stale")
    status.set_defaults(handler=_status)
    render = sub.add_parser("render", help="render the shots that are missing or stale")
    render.add_argument("--project", required=True)
    render.add_argument("--shots", default=None, metavar="3,7-9", help="only these shots (indices; default all)")
    render.add_argument("--checkpoint", default=None, help="ColorMNet checkpoint (default: the downloaded weights)")
    render.add_argument("--size", default=None, help="processing size: 480, long:854, 0.5mp (default: official)")
    render.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    render.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    render.add_argument("--key-batch", type=int, default=1)
    render.add_argument("--crf", type=int, default=18, help="H.264 quality of the segments (18: visually lossless)")
    render.add_argument("--keep-luminance", action="store_true",
                        help="shrink out-of-gamut colours instead of clipping them (output luminance = input's)")
    render.add_argument("--propagation", default="forward", choices=["forward", "bidirectional"],
                        help="forward: the official one-way propagation; bidirectional: blend a backward pass "
                             "from each later exemplar (fewer colour jumps at keyframes)")
    add_memory_arguments(render)
    add_ray_arguments(render)
    render.set_defaults(handler=_render)
    assemble = sub.add_parser("assemble", help="join the segments (no re-encoding) with the source's sound")
    assemble.add_argument("--project", required=True)
    assemble.add_argument("--output", required=True, help="the film: .mp4, .mov or .mkv")
    assemble.add_argument("--overwrite", action="store_true")
    assemble.set_defaults(handler=_assemble)


def _init(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    shots = parse_shots(args.shots)
    detector = ShotDetectorConfig(threshold=args.threshold, min_shot_length=args.min_shot_length)
    with tqdm(desc="finding shots", unit="frame", file=sys.stderr, disable=shots != "auto") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        project = FilmProject.init(args.source, args.project, shots=shots, detector=detector, progress=progress)
    print(f"{len(project.shots)} shots, {project.frame_count} frames; keyframes in {project.dir / 'keyframes'}. "
          f"Put a colour picture of each keyframe into {project.dir / 'exemplars'} under the same name, then run "
          f"`film render --project {project.dir}`.", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    project = FilmProject.open(args.project)
    sha = None
    if getattr(args, "checkpoint", None):
        from ..checkpoint import sha256_file
        from ..download import find_checkpoint

        sha = sha256_file(find_checkpoint(args.checkpoint))
    states = project.status(checkpoint_sha256=sha)
    if args.json:
        print(json.dumps({"shots": [s.to_json() for s in states]}))
        return 0
    counts = {name: sum(s.state == name for s in states) for name in ("done", "stale", "pending", "needs_exemplar")}
    for s in states:
        print(f"shot {s.index:4d}  frames {s.first}-{s.last}  {s.state}"
              + (f"  (colour {s.keyframe})" if s.state == "needs_exemplar" else "")
              + (f"  ({s.reason})" if s.reason else ""))
    print(", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items()) + f" of {len(states)} shots")
    return 0


def _render(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, sha256_file
    from ..download import find_checkpoint

    checkpoint = find_checkpoint(args.checkpoint)
    project = FilmProject.open(args.project)
    settings = FilmSettings(size=args.size, memory=memory_from_args(args), precision=args.dtype,
                            gamut="keep_luminance" if args.keep_luminance else "clip", crf=args.crf,
                            propagation=args.propagation)
    shots = None if args.shots is None else _indices(args.shots)
    with project.render_lock():
        checkpoint_sha256 = sha256_file(checkpoint)
        jobs = plan_jobs(project, settings, checkpoint_sha256, shots)
        project.remember_settings(settings, checkpoint_sha256)
        needs = [job for job in jobs if not has_colour_source(job)]
        todo = [job for job in jobs if has_colour_source(job) and state_of(project, job) != "done"]
        print(f"{len(jobs) - len(needs) - len(todo)} shots done, {len(todo)} to render, {len(needs)} need an "
              f"exemplar", file=sys.stderr)
        failed, busy = [], []
        if todo and args.ray:
            code = render_jobs_with_ray(project, todo, args, checkpoint, failed, busy)
            if code:
                return code
        elif todo:
            device = pick_device(args.device)
            network = load_model(checkpoint, device=device)
            code = _render_jobs(project, todo, network, device, args.key_batch, failed, busy)
            if code:
                return code
    for job in needs:
        print(f"shot {job.index} (frames {job.first}-{job.last}) needs an exemplar: colour "
              f"{project.keyframe_path(job.index)} and save it as {project.exemplar_path(job.first)}", file=sys.stderr)
    for job in busy:
        print(f"shot {job.index} is being rendered by another process; it was left to it", file=sys.stderr)
    for job, reason in failed:
        print(f"shot {job.index} failed: {reason}", file=sys.stderr)
    if needs or busy or failed:
        print(f"the film is incomplete: {len(needs)} shots need an exemplar, {len(busy)} busy, {len(failed)} failed",
              file=sys.stderr)
        return INCOMPLETE
    print(f"every shot is done; `film assemble --project {project.dir} --output FILM.mp4` joins them",
          file=sys.stderr)
    return 0


def _render_jobs(project, todo, network, device, key_batch, failed, busy) -> int:
    """Render and commit each job with a film-wide progress bar; returns 130 on Ctrl-C, else 0."""
    from tqdm import tqdm

    started = time.perf_counter()
    with tqdm(total=sum(job.frames for job in todo), unit="frame", file=sys.stderr, desc="film") as bar:
        for number, job in enumerate(todo, 1):
            bar.set_postfix_str(f"shot {job.index} ({number}/{len(todo)})")
            try:
                with project.shot_lock(job.index):
                    result = render_job(job, network, out_path=project.partial_segment_path(job), device=device,
                                        key_batch=key_batch, on_frame=lambda _: bar.update(1))
                    project.commit(job, result)
            except ProjectLocked:
                busy.append(job)
                bar.update(job.frames)
            except (KeyboardInterrupt, Cancelled):
                print(f"\nstopped; the {number - 1} shots finished in this run are kept. Run `film render` again "
                      f"to continue.", file=sys.stderr)
                return 130
            except FilmError as e:
                failed.append((job, str(e)))
                if isinstance(e.__cause__, OSError):   # a full disk fails every later shot the same way
                    break
    elapsed = time.perf_counter() - started
    done = len(todo) - len(failed) - len(busy)
    print(f"rendered {done} shots in {elapsed:.1f} s", file=sys.stderr)
    return 0


def _assemble(args: argparse.Namespace) -> int:
    project = FilmProject.open(args.project)
    path = assemble_film(project, args.output, overwrite=args.overwrite)
    print(f"{project.frame_count} frames, {len(project.shots)} shots -> {path}", file=sys.stderr)
    return 0


def _indices(text: str) -> list[int]:
    """'3,7-9' -> [3, 7, 8, 9]."""
    out: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            out.extend(range(int(first), int(last) + 1) if sep else [int(first)])
        except ValueError:
            raise FilmError(f"cannot read the shot list {text!r} at {part!r}: use indices such as 3,7-9.") from None
    return out
