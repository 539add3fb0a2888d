"""The Fine-tune node: adapts a ColorMNet checkpoint to a film's own exemplars, inside the prompt.

Its result is the loader's COLORMNET_MODEL (a handle on the tuned weights' file, with the input's
precision), so the rest of the graph does not change. Tuned weights are kept in output/colormnet_finetune
under a content key: the input checkpoint's sha256, every picture's pixels and every setting. A re-queue
is ComfyUI's own cache hit; after a restart the node finds the weights there instead of tuning again. The
folder keeps the KEEP_TUNINGS most recently used tunings.
Nothing enters that folder before a tuning has finished (temporary file, fsync, rename, then the record),
so Cancel or a crash leaves it as it was. The maths lives in colormnet_core.training.finetune.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import textwrap
import time
import uuid
from pathlib import Path

import torch

from ..colormnet_core.errors import Cancelled, CheckpointError, InputError, ResolutionError
from . import host
from .model import ColorMNetModel, keep_loaded, load_cached
from .search import SEARCH_ALIASES
from .tensors import to_bchw

log = logging.getLogger(__name__)

CACHE_FORMAT = 1                 # in every cache key: bump when the same inputs would tune differently
MARKER = "colormnet_finetune"    # safetensors metadata key of the files this node writes
STALE_PARTIAL_S = 3600           # a partial file this old was left by a crash (none is written for so long)
KEEP_TUNINGS = 8                 # finished tunings kept in the cache folder, the most recently used (~0.5 GB each)
SAVE_SUFFIX = ".safetensors"
MAX_NAME = 100


def _core():
    """colormnet_core.training (imported when the node is used: it pulls in the training code)."""
    from ..colormnet_core import training

    return training


# -- the pictures and the cache key -----------------------------------------------------------------

def gather_pictures(exemplars, images) -> list[torch.Tensor]:
    """The colour pictures to tune on, each `3 x H x W` float32 sRGB in [0, 1] on the CPU: the exemplars'
    images (pinned and references alike, in chain order), then the pictures of the IMAGE batch."""
    from ..colormnet_core.preprocess import as_rgb

    pictures = [e.image for e in exemplars or ()]
    if images is not None:
        pictures += list(to_bchw(images, "the images input"))
    if not pictures:
        raise InputError("Fine-tune has no pictures to learn from: connect 'exemplars' (Load Exemplar) or 'images' "
                         "(an IMAGE batch, e.g. the colour pictures an image model made of the film's keyframes).")
    return [as_rgb(p.unsqueeze(0).cpu(), "a fine-tuning picture")[0].float().contiguous() for p in pictures]


def colour_clip_frames(clip) -> torch.Tensor:
    """An IMAGE batch of consecutive colour frames -> `T x 3 x H x W` float32 in [0, 1] on the CPU."""
    from ..colormnet_core.preprocess import as_rgb

    return as_rgb(to_bchw(clip, "the colour_clip input").cpu(), "the colour clip").float().contiguous()


def tune_key(checkpoint_sha256: str, pictures: list[torch.Tensor], config) -> str:
    """The cache key of a tuning: sha256 over the format, the input checkpoint's sha256, every setting of
    `config` (a FinetuneConfig, new fields included) and every picture's (or clip's) shape and float32
    pixels, in order."""
    digest = hashlib.sha256()
    head = {"format": CACHE_FORMAT, "checkpoint": checkpoint_sha256, "settings": dataclasses.asdict(config)}
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for picture in pictures:
        digest.update(f"{tuple(picture.shape)};".encode())
        digest.update(picture.numpy().tobytes())
    return digest.hexdigest()


def cache_paths(key: str) -> tuple[Path, Path]:
    """(weights, record) of the tuning `key` in the cache folder."""
    folder = host.finetune_dir()
    return folder / f"{key}{SAVE_SUFFIX}", folder / f"{key}.json"


def cached_tuning(key: str) -> dict | None:
    """The record of the finished tuning `key`, its weights checked against their sha256 and loaded into
    the model cache; None when it is not there (or damaged: then it is removed, to be tuned again)."""
    weights, record_path = cache_paths(key)
    if not (weights.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
        load_cached(weights)
    except (OSError, ValueError, CheckpointError) as e:
        log.warning("ColorMNet: the cached fine-tuning %s is damaged (%s); tuning again", weights, e)
        _remove_entry(record_path)
        return None
    with contextlib.suppress(OSError):
        os.utime(record_path)   # used now: the cache keeps the most recently used tunings
    return record


_RECORD = re.compile(r"[0-9a-f]{64}\.json")


def _remove_entry(record_path: Path) -> None:
    """A tuning's record first (without it the entry no longer counts), then its weights and their sha256.
    A file that cannot be removed (e.g. open elsewhere on Windows) is left for the next time, never an error:
    the tuning that is being stored or read must not fail over another one's files."""
    weights = record_path.with_suffix(SAVE_SUFFIX)
    for path in (record_path, weights, weights.with_name(weights.name + ".sha256")):
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("ColorMNet: could not remove %s from the fine-tuning cache (%s)", path, e)


def prune_cache(folder: Path, keep: int = KEEP_TUNINGS) -> int:
    """Remove all but the `keep` most recently used tunings (a record's mtime: set when it was tuned,
    touched when it is used again), and weights whose record never came (a crash between the two) once
    they are STALE_PARTIAL_S old. Only files named by a content key are touched. Returns how many tunings
    were removed. A prompt still holding a removed tuning's model gets the loader's "file is gone" error."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:   # removed meanwhile
            return 0.0

    records = sorted((p for p in folder.glob("*.json") if _RECORD.fullmatch(p.name)), key=used, reverse=True)
    for record in records[keep:]:
        _remove_entry(record)
    now = time.time()
    for weights in folder.glob(f"*{SAVE_SUFFIX}"):
        record = weights.with_suffix(".json")
        if _RECORD.fullmatch(record.name) and not record.exists() and 0 < used(weights) < now - STALE_PARTIAL_S:
            _remove_entry(record)
    return max(0, len(records) - keep)


def _remove_stale_partials(folder: Path) -> None:
    """Partial files a crash left (a finished write renames its partial at once)."""
    now = time.time()
    for path in folder.glob(".*.partial-*"):
        try:
            if now - path.stat().st_mtime > STALE_PARTIAL_S:
                path.unlink()
        except OSError:   # another process's file that went away meanwhile
            pass


# -- save_as: a copy in models/colormnet that the Model Loader lists ----------------------------------

def save_target(name: str) -> Path | None:
    """models/colormnet/<name>.safetensors for a save_as name (None when empty). InputError for a name that
    is not one plain file name, or that names a checkpoint this node did not write (it is never replaced)."""
    stem = name.strip()
    if stem.lower().endswith(SAVE_SUFFIX):
        stem = stem[: -len(SAVE_SUFFIX)]
    if not stem:
        return None
    if (len(stem) > MAX_NAME or not stem[0].isalnum() or stem.endswith((".", " "))
            or any(not (c.isalnum() or c in " ._-") for c in stem)):
        raise InputError(f"save_as {name!r} is not a plain file name: use letters, digits, spaces, '.', '_' or '-' "
                         f"(up to {MAX_NAME}, starting with a letter or digit), e.g. my_film_tuned. It is saved as "
                         f"<name>{SAVE_SUFFIX} in models/colormnet.")
    target = host.download_dir() / f"{stem}{SAVE_SUFFIX}"
    if target.exists() and not written_here(target):
        raise InputError(f"save_as would replace {target}, which Fine-tune did not write (a downloaded or converted "
                         f"checkpoint is never replaced). Choose another name.")
    return target


def written_here(path: Path) -> bool:
    """Whether `path` is a .safetensors file this node wrote (its metadata carries MARKER)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return MARKER in (f.metadata() or {})
    except Exception:   # noqa: BLE001 - not a readable safetensors file: not ours
        return False


def save_copy(weights: Path, target: Path, record: dict) -> None:
    """Copy the tuned weights to `target` (temporary name, fsync, rename) with their sha256 record beside
    them, unless `target` already holds those bytes."""
    from ..colormnet_core.checkpoint import WEIGHTS_LICENSE
    from ..colormnet_core.download import sidecar
    from ..colormnet_core.film.records import disk_error, fsync_dir, fsync_file, write_atomic

    sha = record["sha256"]
    record_file = sidecar(target)
    if target.is_file() and record_file.is_file() and record_file.read_text().split()[:1] == [sha]:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(weights, partial)
        fsync_file(partial)
        record_file.unlink(missing_ok=True)   # a record of older bytes must not outlive them
        os.replace(partial, target)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise disk_error(e, target, "the fine-tuned checkpoint") from e
    fsync_dir(target.parent)
    write_atomic(record_file, (f"{sha}  {target.name}\nsource fine-tuned by ColorMNet Fine-tune from the checkpoint "
                               f"with sha256 {record['checkpoint_sha256']}\nDerived from ColorMNet weights licensed "
                               f"{WEIGHTS_LICENSE} when started from them.\n").encode(), "the checkpoint's sha256")


# -- tuning -------------------------------------------------------------------------------------------

def show(unique_id, lines: list[str]) -> None:
    """Status lines on the node, each wrapped to the width the node shows (the frontend would cut words)."""
    host.show_status(unique_id, [textwrap.fill(line, host.TEXT_WIDTH, break_long_words=False) for line in lines])


def _duration(seconds: float) -> str:
    """e.g. "40 s", "13 min", "2.5 h" (a no-break space: the node's line wrap keeps number and unit together)."""
    if seconds < 90:
        return f"{seconds:.0f}\u00a0s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}\u00a0min"
    return f"{seconds / 3600:.1f}\u00a0h"


def _training_bytes(network, config) -> int:
    """A rough budget for ComfyUI to free on the GPU: weights, gradients and AdamW's two moments (16 bytes a
    parameter) plus activations, about 3 GiB per picture of the batch at the official 448 crop."""
    params = sum(p.numel() for p in network.parameters())
    return int(16 * params + config.batch_size * (config.size / 448) ** 2 * (3 << 30))


def run_tuning(model: ColorMNetModel, pictures: list[torch.Tensor], clips: tuple[torch.Tensor, ...], config,
               key: str, unique_id) -> dict:
    """Tune, then store the weights and their record under `key`; returns the record. Progress per step;
    Cancel stops before the next step and stores nothing. The core trains a copy of the loaded network
    (moved to the device on its own), so the input model stays as it was, on the CPU."""
    training = _core()
    device = host.torch_device()
    network = load_cached(model.path)
    # ComfyUI runs every node under torch.inference_mode() (and the loader made the weights there), where
    # nothing can be trained: the core trains a copy of them with autograd back on.
    try:
        with torch.inference_mode(False), torch.enable_grad():
            host.free_memory_for(_training_bytes(network, config), device)
            estimate = training.estimate_finetune_seconds(network, pictures, config, device, clips,
                                                          should_stop=host.interrupted)
            if estimate is None:
                host.raise_if_interrupted()
                raise Cancelled("fine-tuning stopped before its first step; nothing was saved.")
            start = [f"Fine-tuning {config.steps} steps on {len(pictures)} pictures"
                     f"{f' and {len(clips)} colour clip' if clips else ''}: about {_duration(estimate)} on the "
                     f"{device.type.upper()}."]
            show(unique_id, start)
            log.info("ColorMNet: %s", start[0])
            update = host.progress(config.steps)

            def on_step(step) -> None:
                update(step.step)
                if step.step == step.steps or step.step % 50 == 0:
                    log.info("ColorMNet fine-tune: step %d/%d, loss %.4f, %s left", step.step, step.steps, step.loss,
                             _duration(step.eta_s))

            result = training.finetune_network(network, pictures, config, device=device, colour_frames=clips,
                                               on_step=on_step, should_stop=host.interrupted)
    except torch.OutOfMemoryError as e:
        raise ResolutionError(f"the GPU ran out of memory fine-tuning at size {config.size} with batch_size "
                              f"{config.batch_size}. Lower size (e.g. 336 or 224) or batch_size to 1.") from e
    finally:
        host.soft_empty_cache()
    if result.cancelled:
        host.raise_if_interrupted()   # ComfyUI's own interruption exception, so the UI shows "interrupted"
        raise Cancelled(f"fine-tuning stopped after {result.steps_done} of {config.steps} steps; nothing was saved.")
    return store(key, result, model, config, len(pictures))


def _scores(scores) -> dict | None:
    return None if scores is None else dataclasses.asdict(scores)


def store(key: str, result, model: ColorMNetModel, config, pictures: int) -> dict:
    """Write the tuned network and then its record (the record is what makes the entry count)."""
    from ..colormnet_core.checkpoint import describe_network
    from ..colormnet_core.film.records import disk_error, write_atomic
    from ..colormnet_core.training.state import export_weights
    from .film import checkpoint_sha256

    weights, record_path = cache_paths(key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(weights.parent)
    record = {
        "format": CACHE_FORMAT, "key": key, "checkpoint": model.path.name,
        "checkpoint_sha256": checkpoint_sha256(model.path), "settings": dataclasses.asdict(config),
        "pictures": pictures, "steps_done": result.steps_done, "seconds": round(result.seconds, 3),
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "before": _scores(result.before), "after": _scores(result.after),
        "family": f"{describe_network(result.network)}, fine-tuned",
    }
    try:
        record["sha256"] = export_weights(result.network, weights, metadata={MARKER: json.dumps(
            {k: record[k] for k in ("checkpoint_sha256", "settings", "pictures", "steps_done")}, default=str)})
    except OSError as e:
        raise disk_error(e, weights, "the fine-tuned weights") from e
    write_atomic(record_path, json.dumps(record, indent=1, default=str).encode(), "the fine-tuning record")
    keep_loaded(weights, result.network)
    removed = prune_cache(weights.parent)
    if removed:
        log.info("ColorMNet: removed the %d least recently used fine-tuning(s) from %s (%d are kept)", removed,
                 weights.parent, KEEP_TUNINGS)
    return record


def report(record: dict, cached: bool, saved: Path | None) -> list[str]:
    """The node's status lines for a finished tuning's record."""
    how = "Tuned earlier with these inputs (kept in output/colormnet_finetune)" if cached else "Tuned"
    lines = [f"{how}: {record['steps_done']} steps on {record['pictures']} pictures in "
             f"{_duration(record['seconds'])}."]
    if record.get("first_loss") is not None:
        lines.append(f"Loss {record['first_loss']:.4f} -> {record['last_loss']:.4f}.")
    before, after = record.get("before"), record.get("after")
    if before and after:
        lines.append(f"Held out {after['pictures']} pictures: PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
                     f"SSIM {before['ssim']:.3f} -> {after['ssim']:.3f}, CDC {before['cdc']:.4f} -> "
                     f"{after['cdc']:.4f} (lower is steadier).")
    else:
        lines.append("Nothing held out (holdout 0): no before/after scores.")
    if saved is not None:
        lines.append(f"Saved as {saved.name} in models/colormnet: the Model Loader lists it after a page refresh.")
    return lines


class ColorMNetFinetune:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "fine-tune", "finetune", "train", "adapt", "film look", "domain"]
    OUTPUT_NODE = True   # it may be the graph's end: tune and save_as, then render elsewhere
    DESCRIPTION = ("Fine-tunes the model on your film's own colour pictures (its exemplars, or an image model's "
                   "coloured keyframes) so it learns the film's palette, grain and lighting: the official static-"
                   "image training on pseudo-sequences made from the pictures. A share is held out and scored "
                   "before and after (PSNR, SSIM, CDC). Progress per step; Cancel stops before the next step and "
                   "keeps nothing. The result is a model like the loader's: connect it where the loader's went. "
                   f"The {KEEP_TUNINGS} most recently used tunings are kept in output/colormnet_finetune, so the "
                   "same inputs do not tune twice, even after a restart; save_as also writes them to "
                   "models/colormnet for the Model Loader, where they stay. A few hundred steps take minutes on a "
                   "GPU, much longer on a CPU.")
    RETURN_TYPES = ("COLORMNET_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The tuned model: connect it to Encode Exemplars, Colorize, Colorize Video or Render Shot.",)
    FUNCTION = "tune"

    @classmethod
    def INPUT_TYPES(cls):
        d = _core().FinetuneConfig()
        return {"required": {
            "model": ("COLORMNET_MODEL", {"tooltip": "The checkpoint to start from (Model Loader or Download "
                      "Model); it is not changed. Its precision choice carries over to the tuned model."}),
            "steps": ("INT", {"default": d.steps, "min": 1, "max": 100_000, "tooltip": "Optimizer steps. A few "
                      "hundred adapt the model to a film; more can overfit a handful of pictures (watch the held-"
                      "out scores on this node)."}),
            "learning_rate": ("FLOAT", {"default": d.learning_rate, "min": 1e-7, "max": 1e-2, "step": 1e-7,
                              "tooltip": "AdamW learning rate. The default is the official static stage's; "
                              "higher learns faster but may forget what the network knew."}),
        }, "optional": {
            "exemplars": ("COLORMNET_EXEMPLARS", {"tooltip": "Colour pictures to learn from: Load Exemplar's "
                          "exemplars (frame indices and roles do not matter here)."}),
            "images": ("IMAGE", {"tooltip": "Or (also) an IMAGE batch of colour pictures, e.g. the keyframes an "
                       "image model coloured, or colour stills of another release of the film."}),
            "size": ("INT", {"default": d.size, "min": 112, "max": 1120, "step": 112, "tooltip": "Crop side in "
                     "pixels of the training sequences (a multiple of 112). 448 is the official; 224 or 336 are "
                     "faster and need less memory."}),
            "holdout": ("FLOAT", {"default": d.holdout, "min": 0.0, "max": 0.9, "step": 0.05, "tooltip": "Share of "
                        "the pictures not trained on but scored before and after tuning (0: train on all, no "
                        "scores)."}),
            # Not named "seed": the frontend gives an input of that name a control that defaults to randomize,
            # which would tune anew (minutes to hours) on every Run instead of reusing the tuned weights.
            "tuning_seed": ("INT", {"default": d.seed, "min": 0, "max": 2**31 - 1, "tooltip": "Every random "
                            "choice of the tuning (held-out pictures, augmentations, order): the same inputs and "
                            "seed give the same weights on the same device, and are tuned only once."}),
            "batch_size": ("INT", {"default": d.batch_size, "min": 1, "max": 64, "tooltip": "Pseudo-sequences per "
                           "step. Higher: steadier steps, more memory."}),
            "colour_clip": ("IMAGE", {"tooltip": "Optional: consecutive colour frames of the film (e.g. a "
                            "scene of another release, from Load Video -> Get Video Components), trained on as a "
                            "clip besides the pictures."}),
            "save_as": ("STRING", {"default": "", "tooltip": "Optional: also save the tuned weights as "
                        "models/colormnet/<name>.safetensors, e.g. to pick them in the film workflow's Model Loader. "
                        "A file of that name that Fine-tune did not write is never replaced."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def tune(self, model, steps, learning_rate, exemplars=None, images=None, size=None, holdout=None,
             tuning_seed=None, batch_size=None, colour_clip=None, save_as="", unique_id=None):
        from .film import checkpoint_sha256

        training = _core()
        defaults = training.FinetuneConfig()
        config = training.FinetuneConfig(
            steps=int(steps), learning_rate=float(learning_rate), size=int(defaults.size if size is None else size),
            holdout=float(defaults.holdout if holdout is None else holdout),
            seed=int(defaults.seed if tuning_seed is None else tuning_seed),
            batch_size=int(defaults.batch_size if batch_size is None else batch_size))
        pictures = gather_pictures(exemplars, images)
        clips = () if colour_clip is None else (colour_clip_frames(colour_clip),)
        target = save_target(save_as or "")
        training.check_finetune_data(pictures, config, clips)
        key = tune_key(checkpoint_sha256(model.path), [*pictures, *clips], config)
        record = cached_tuning(key)
        hit = record is not None
        if not hit:
            record = run_tuning(model, pictures, clips, config, key, unique_id)
        weights, _ = cache_paths(key)
        if target is not None:
            save_copy(weights, target, record)
        lines = report(record, hit, target)
        show(unique_id, lines)
        log.info("ColorMNet fine-tune %s: %s", key[:12], " ".join(lines))
        tuned = ColorMNetModel(weights, model.precision, record["family"])
        return {"ui": {"text": lines}, "result": (tuned,)}


class ColorMNetFilmExemplars:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "fine-tune", "exemplars", "project"]
    DESCRIPTION = ("The colour exemplars a film project holds for a run of its shots (exemplars/<frame>.png, "
                   "saved as each shot was rendered; the references exemplars/reference*.png too), for Fine-tune: "
                   "render the first shots with the film workflow, tune on their exemplars here (save_as), then "
                   "pick the tuned checkpoint in the film workflow's Model Loader and render the film with it.")
    RETURN_TYPES = ("COLORMNET_EXEMPLARS",)
    RETURN_NAMES = ("exemplars",)
    OUTPUT_TOOLTIPS = ("The shots' exemplars (pinned at their frames) and the project's references.",)
    FUNCTION = "gather"

    @classmethod
    def INPUT_TYPES(cls):
        from .film import MAX_SHOT

        return {"required": {
            "film": ("FILM", {"tooltip": "From Film Project (open the project by its name)."}),
            "first_shot": ("INT", {"default": 0, "min": 0, "max": MAX_SHOT, "tooltip": "The first shot whose "
                           "exemplars are taken (0 = the film's first)."}),
            "shots": ("INT", {"default": 8, "min": 1, "max": MAX_SHOT, "tooltip": "How many shots from first_shot. "
                      "Take shots that already have their exemplar: one added later changes the tuning's inputs, "
                      "and Fine-tune then tunes again."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def gather(self, film, first_shot, shots, unique_id=None):
        from ..colormnet_core.exemplars import Exemplar
        from .film import _plural, _read_image, open_project

        project = open_project(film)
        count = len(project.shots)
        if not 0 <= first_shot < count:
            raise InputError(f"the film has {count} shots, 0-{count - 1}; first_shot {first_shot} is past them.")
        last = min(count, first_shot + shots) - 1
        files = project.exemplar_files()
        chosen, missing = [], []
        for index in range(first_shot, last + 1):
            inside = [e for e in files if e.frame is not None and project.shots[index].holds(e.frame)]
            chosen += inside
            if not inside:
                missing.append(index)
        chosen += [e for e in files if e.frame is None]
        if not chosen:
            raise InputError(f"shots {first_shot}-{last} of the film project {project.dir.name!r} have no exemplar "
                             f"yet: render them first with the film workflow (its image model makes one per shot), "
                             f"or put colour pictures named <frame>.png into {project.dir / 'exemplars'}.")
        exemplars = tuple(Exemplar(_read_image(Path(e.path))[0].permute(2, 0, 1).contiguous(), e.frame)
                          for e in chosen)
        references = sum(1 for e in chosen if e.frame is None)
        lines = [f"{_plural(len(exemplars) - references, 'exemplar')} of shots {first_shot}-{last}"
                 f"{' and ' + _plural(references, 'reference') if references else ''}."]
        if missing:
            lines.append(f"Shots without an exemplar yet: {', '.join(map(str, missing[:20]))}"
                         f"{' ...' if len(missing) > 20 else ''}. Once they have one, Fine-tune tunes again.")
        show(unique_id, lines)
        return {"ui": {"text": lines}, "result": (exemplars,)}
