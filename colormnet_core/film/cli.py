"""`python -m colormnet_core film init|status|render|revert|finetune|assemble`: a feature film, shot by shot.

Exit status: 0 when the command did all it was asked (render: every shot is done), 3 when `render`
left shots undone (needing an exemplar, busy in another process, or failed), 1 on an error that
stopped the command, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..cli import add_memory_arguments, memory_from_args, pick_device
from ..errors import Cancelled
from ..shots import ShotDetectorConfig, parse_shots
from .assemble import assemble_film
from .checkpoints import checkpoint_file, project_checkpoint, revert_checkpoint
from .commit import commit_shot, recover_all
from .distributed import add_ray_arguments, render_jobs_with_ray
from .history import revert_shot, shot_history
from .jobs import FilmSettings
from .plan import STATE_WORDS, STATES, has_colour_source, plan_jobs, plural, state_of
from .project import FilmProject
from .records import ProjectLocked
from .render import job_warnings, render_job
from .source import FilmError

INCOMPLETE = 3
COUNT_WORDS = {"done": "done", "stale": "stale", "damaged": "damaged", "pending": "to render",
               "needs_exemplar": "needing an exemplar"}


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
    status = sub.add_parser("status", help="each shot's state: done, stale, damaged, pending, needs_exemplar, and "
                                           "which shots have earlier exemplars")
    status.add_argument("--project", required=True)
    status.add_argument("--json", action="store_true", help="print JSON: {\"shots\": [{index, first, last, state, "
                                                            "keyframe, reason, history}, ...]}")
    status.add_argument("--checkpoint", default=None,
                        help="judge the shots against this checkpoint (default: the one the last render used); "
                             "a checkpoint of another family or release makes every rendered shot stale")
    status.set_defaults(handler=_status)
    revert = sub.add_parser("revert", help="bring back a shot's previous exemplar (and its segment, when it was "
                                           "kept and still matches: then nothing is rendered)")
    revert.add_argument("--project", required=True)
    revert.add_argument("--shot", required=True, type=int, help="shot index (see `film status`)")
    revert.set_defaults(handler=_revert)
    render = sub.add_parser("render", help="render the shots that are missing or stale")
    render.add_argument("--project", required=True)
    render.add_argument("--shots", default=None, metavar="3,7-9", help="only these shots (indices; default all)")
    render.add_argument("--checkpoint", default=None,
                        help="ColorMNet checkpoint (default: the project's own, set by `film finetune`, else the "
                             "downloaded weights)")
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
    add_finetune_parser(sub)
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
    print(f"{plural(len(project.shots), 'shot')}, {plural(project.frame_count, 'frame')}; keyframes in "
          f"{project.dir / 'keyframes'}. "
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
    files = project.exemplar_files()
    histories = [shot_history(project, s.index, files) for s in states]
    if args.json:
        print(json.dumps({"shots": [{**s.to_json(), "history": {"earlier_exemplars": [p.name for p in h.earlier],
                                                                 "can_revert": h.can_revert}}
                                    for s, h in zip(states, histories)]}))
        return 0
    counts = {name: sum(s.state == name for s in states) for name in STATES}
    for s, history in zip(states, histories):
        words = f"stale ({s.reason})" if s.state == "stale" and s.reason else STATE_WORDS[s.state]
        print(f"shot {s.index:4d}  frames {s.first}-{s.last}  {words}"
              + (f"  (colour {s.keyframe})" if s.state == "needs_exemplar" else "")
              + (f"  [history: {history.describe()}]" if history.earlier or history.can_revert else ""))
    print(", ".join(f"{n} {COUNT_WORDS[name]}" for name, n in counts.items() if n or name == "done")
          + f" (of {plural(len(states), 'shot')})")
    return 0


def _revert(args: argparse.Namespace) -> int:
    project = FilmProject.open(args.project)
    outcome = revert_shot(project, args.shot)
    print(outcome.message, file=sys.stderr)
    return 0


def _device(name: str) -> torch.device:
    """The device `--device` names, refused in one line (before anything is written) when it is not
    on this machine."""
    device = pick_device(name) if name == "auto" else None
    if device is not None:
        return device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FilmError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:1 or mps.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FilmError(f"--device {name}: this machine has no CUDA GPU that PyTorch can use; use --device cpu "
                            f"(or auto), or install a CUDA build of PyTorch and the NVIDIA driver.")
        if (device.index or 0) >= count:
            raise FilmError(f"--device {name}: this machine has {plural(count, 'CUDA GPU')} (cuda:0-cuda:"
                            f"{count - 1}); pick one of them.")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FilmError(f"--device {name}: Apple's MPS is not available here; use --device cpu or auto.")
    return device


def render_checkpoint(project: FilmProject, explicit: str | None) -> Path:
    """The checkpoint a render uses: `explicit` (--checkpoint), else the project's own, else the download."""
    from ..download import find_checkpoint

    own = checkpoint_file(project)
    if explicit is None:
        return own or find_checkpoint(None)
    path = find_checkpoint(explicit)
    if own is not None and path.resolve() != own.resolve():
        print(f"note: rendering with {path} as asked; the project's own checkpoint is {own.name} ("
              f"{project_checkpoint(project).reason}), and `film status` judges the shots by it", file=sys.stderr)
    return path


def _render(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, sha256_file

    settings = FilmSettings(size=args.size, memory=memory_from_args(args), precision=args.dtype,
                            gamut="keep_luminance" if args.keep_luminance else "clip", crf=args.crf,
                            propagation=args.propagation)
    device = None if args.ray else _device(args.device)
    shots = None if args.shots is None else _indices(args.shots)
    project = FilmProject.open(args.project, check_source=False)
    checkpoint = render_checkpoint(project, args.checkpoint)
    with project.render_lock():      # first: a second render refuses at once, before reading the source
        project.check_source()
        recover_all(project)
        checkpoint_sha256 = sha256_file(checkpoint)
        jobs = plan_jobs(project, settings, checkpoint_sha256, shots)
        needs = [job for job in jobs if not has_colour_source(job)]
        todo = [job for job in jobs if has_colour_source(job) and state_of(project, job) != "done"]
        print(f"{len(jobs) - len(needs) - len(todo)} done, {len(todo)} to render, {len(needs)} needing an "
              f"exemplar (of {plural(len(jobs), 'shot')})", file=sys.stderr)
        for job in todo:
            for warning in job_warnings(job):
                print(f"warning: {warning}", file=sys.stderr)
        failed, busy = [], []
        if todo and args.ray:
            code = render_jobs_with_ray(project, todo, args, checkpoint, failed, busy)
            if code:
                return code
        elif todo:
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
        print(f"the film is incomplete: {len(needs)} needing an exemplar, {len(busy)} busy, {len(failed)} failed "
              f"(of {plural(len(jobs), 'shot')})", file=sys.stderr)
        return INCOMPLETE
    print(f"every shot is done; `film assemble --project {project.dir} --output FILM.mp4` joins them",
          file=sys.stderr)
    return 0


def _render_jobs(project, todo, network, device, key_batch, failed, busy) -> int:
    """Render and commit each job with a film-wide progress bar; returns 130 on Ctrl-C, else 0."""
    from tqdm import tqdm

    started = time.perf_counter()
    rendered = 0

    def render(job, partial):
        return render_job(job, network, out_path=partial, device=device, key_batch=key_batch,
                          on_frame=lambda _: bar.update(1))

    with tqdm(total=sum(job.frames for job in todo), unit="frame", file=sys.stderr, desc="film") as bar:
        for number, job in enumerate(todo, 1):
            bar.set_postfix_str(f"shot {job.index} ({number}/{len(todo)})")
            try:
                rendered += commit_shot(project, job, render).rendered
            except ProjectLocked:
                busy.append(job)
                bar.update(job.frames)
            except (KeyboardInterrupt, Cancelled):
                print(f"\nstopped; the {plural(rendered, 'shot')} finished in this run are kept. Run `film render` "
                      f"again to continue.", file=sys.stderr)
                return 130
            except FilmError as e:
                failed.append((job, str(e)))
                if isinstance(e.__cause__, OSError):   # a full disk fails every later shot the same way
                    failed.extend((j, "not tried: the disk error above stopped the render") for j in todo[number:])
                    break
    elapsed = time.perf_counter() - started
    print(f"rendered {plural(rendered, 'shot')} in {elapsed:.1f} s", file=sys.stderr)
    return 0


def add_finetune_parser(sub) -> None:
    from ..training.finetune import FinetuneConfig

    defaults = FinetuneConfig()
    tune = sub.add_parser(
        "finetune", help="teach the network this film: fine-tune it on the project's exemplars, make it the "
                         "project's checkpoint (every shot goes stale); --revert goes back",
        description="Fine-tunes the project's checkpoint (or the downloaded weights) on pseudo-sequences made from "
                    "every colour picture in exemplars/ (the official static-image augmentation), plus colour "
                    "frames of the film if you have them. A share of the pictures is held out and scored (PSNR, "
                    "SSIM, CDC) before and after. The result is written to checkpoints/finetuned-<sha8>.safetensors "
                    "and becomes the project's checkpoint. Weights tuned from the official or CMNET2 weights stay "
                    "under their licence, CC BY-NC-SA 4.0 (non-commercial).")
    tune.add_argument("--project", required=True)
    tune.add_argument("--steps", type=int, default=defaults.steps, help=f"optimizer steps (default {defaults.steps})")
    tune.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    tune.add_argument("--colour-frames", default=None, metavar="DIR",
                      help="colour frames of the film (e.g. another release): each sub-folder of DIR is a clip of "
                           "consecutive frames, loose images are stills")
    tune.add_argument("--size", type=int, default=defaults.size,
                      help=f"square training crop, a multiple of 112 (default {defaults.size}, official)")
    tune.add_argument("--lr", type=float, default=defaults.learning_rate,
                      help=f"learning rate (default {defaults.learning_rate})")
    tune.add_argument("--holdout", type=float, default=defaults.holdout,
                      help=f"share of the pictures held out for the before/after scores (default {defaults.holdout})")
    tune.add_argument("--seed", type=int, default=defaults.seed)
    tune.add_argument("--checkpoint", default=None,
                      help="start from this checkpoint (default: the project's own, else the downloaded weights)")
    tune.add_argument("--unlock-backbone", action="store_true",
                      help="DINOv3 (CMNET2) checkpoints: train the ViT backbone too (CMNET2's --unlock_backbone)")
    tune.add_argument("--revert", action="store_true",
                      help="go back to the project's previous checkpoint (the fine-tuned file is kept)")
    tune.set_defaults(handler=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoint import load_model
    from ..training.finetune import FinetuneConfig, check_finetune_data, estimate_finetune_seconds
    from .finetune import finetune_project, project_inputs

    project = FilmProject.open(args.project)
    if args.revert:
        with project.render_lock():
            left, now = revert_checkpoint(project)
        print(f"the project's checkpoint is {now.path.name} again (left {left.path.name}, kept in "
              f"{left.path.parent}); every shot rendered with {left.path.name} is stale: run `film render "
              f"--project {project.dir}`", file=sys.stderr)
        return 0
    config = FinetuneConfig(steps=args.steps, learning_rate=args.lr, size=args.size, holdout=args.holdout,
                            seed=args.seed, unlock_backbone=args.unlock_backbone)
    device = _device(args.device)
    with project.render_lock():
        inputs = project_inputs(project, config, colour_frames=args.colour_frames, checkpoint=args.checkpoint)
        check_finetune_data(inputs.pictures, config, inputs.colour_frames)      # refuse before any work
        started = time.perf_counter()
        try:        # Ctrl-C anywhere from here on (the estimate's steps included) writes nothing
            network = load_model(inputs.start.path, device=device)
            estimate = estimate_finetune_seconds(network, inputs.pictures, config, device, inputs.colour_frames)
            print(f"fine-tuning {inputs.start.path.name} on {inputs.describe()}: {config.steps} steps at "
                  f"{config.size} px on {device}; estimated {_duration(estimate)}", file=sys.stderr)
            with tqdm(total=config.steps, unit="step", file=sys.stderr, desc="fine-tune") as bar:
                def on_step(step) -> None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {step.loss:.4f}")

                outcome = finetune_project(project, inputs, config, device=device, network=network, on_step=on_step)
        except KeyboardInterrupt:
            print("\nstopped; the project is unchanged (nothing was written).", file=sys.stderr)
            return 130
    result = outcome.result
    if result.before is not None and result.after is not None:
        print(f"held-out ({plural(result.before.pictures, 'picture')}, {result.before.frames} frames) before: "
              f"{result.before.describe()}\n{' ' * 10}after:  {result.after.describe()} "
              f"(PSNR {result.after.psnr - result.before.psnr:+.2f} dB)", file=sys.stderr)
    print(f"fine-tuned in {_duration(time.perf_counter() - started)} (estimate setup included); wrote "
          f"{outcome.checkpoint.path} (sha256 {outcome.checkpoint.sha256}); it is now the project's checkpoint and "
          f"every rendered shot is stale: run `film render --project {project.dir}` (or `film finetune --revert`)",
          file=sys.stderr)
    return 0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _assemble(args: argparse.Namespace) -> int:
    project = FilmProject.open(args.project)
    path = assemble_film(project, args.output, overwrite=args.overwrite)
    print(f"{plural(project.frame_count, 'frame')}, {plural(len(project.shots), 'shot')} -> {path}", file=sys.stderr)
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
