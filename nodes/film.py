"""Film nodes: a film project on disk (colormnet_core.film), rendered one shot per queued prompt.

Film Project opens or creates the project under output/colormnet_films/<name>; Film Shot picks one
shot (its `shot` widget increments after every queued prompt, so a batch count of N renders N shots);
Render Shot writes that shot's segment; Assemble Film joins the segments into a VIDEO.

Render Shot's `memory` input (what carries the image model's exemplar) is lazy: it is asked for only
when the shot has no exemplar in the project yet, or `done_shot` says to redo it. A re-queued film
whose shots have exemplars therefore never runs the image model again; a shot that is stale (other
settings) renders again from the exemplar the project holds. The new exemplar counts only once the
shot's segment commits (colormnet_core.film.commit), so a Cancel keeps the previous one.

The FILM socket value is an immutable `Film` (where the project is, its shots); every node reopens
the project for its current state, so nothing shared between nodes is ever modified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..colormnet_core.errors import Cancelled, InputError, ResolutionError
from . import host
from .colorize import _size_inputs, custom_size_input, propagation_input, size_choice
from .search import SEARCH_ALIASES
from .shots import confidence_plot
from .video import CRF_INPUT, InMemoryVideo, VideoFile, input_videos, video_source

log = logging.getLogger(__name__)

NO_FILE = "(none: use the video input)"
SOURCE_NAME = "source.mp4"   # an in-memory VIDEO is written once into its project under this name
MAX_SHOT = 1_000_000
DONE_SHOT = ("skip", "redo with the new exemplar", "revert to the previous exemplar")


@dataclass(frozen=True)
class Film:
    """The FILM socket value. dir: the project folder; shots: inclusive (first, last) frame ranges."""

    dir: Path
    shots: tuple[tuple[int, int], ...]
    frame_count: int


def _core():
    """colormnet_core.film, imported when a film node runs (the plugin imports without it)."""
    from ..colormnet_core import film

    return film


def project_folder(name: str) -> Path:
    """output/colormnet_films/<name>, after checking that the name is one plain folder name that works
    on every OS (colormnet_core.film.check_project_name)."""
    return host.films_dir() / _core().check_project_name(name)


def project_state(folder: Path) -> str:
    """A digest of what the project's records, exemplars and segments are now (names, sizes, times): a
    node fed from Film Project runs again when it changes (a shot rendered, an exemplar replaced)."""
    digest = hashlib.sha256()
    for sub in ("film.json", "records", "exemplars", "segments"):
        path = folder / sub
        entries = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
        for entry in entries:
            stat = entry.stat()
            digest.update(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def open_project(film: Film):
    return _core().FilmProject.open(film.dir)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(project) -> list[str]:
    """The lines Film Project shows: counts per state, then the shots that need an exemplar."""
    states = project.status()
    count = {s: sum(1 for x in states if x.state == s) for s in ("done", "stale", "damaged", "pending",
                                                                 "needs_exemplar")}
    damaged = f"{count['damaged']} damaged (render again), " if count["damaged"] else ""
    lines = [f"{_plural(len(states), 'shot')}, {_plural(project.frame_count, 'frame')}: {count['done']} done, "
             f"{count['stale']} stale, {damaged}{count['pending']} to render, {count['needs_exemplar']} needing an "
             f"exemplar."]
    waiting = [str(x.index) for x in states if x.state == "needs_exemplar"]
    if waiting:
        lines.append("Needing an exemplar (queue them with Film Shot): shots " + _short_list(waiting) + ".")
    if count["done"] == len(states):
        lines.append("Every shot is done: Assemble Film joins them.")
    return lines


def _short_list(items: list[str], limit: int = 20) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


class ColorMNetFilmProject:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "project", "feature film", "resume"]
    DESCRIPTION = ("A film project: a folder in output/colormnet_films/<project> that holds the film's shots, "
                   "their keyframes, your exemplars and one rendered segment per shot. The first run detects the "
                   "shots (a cut or a fade starts a new one) and writes every shot's first frame; later runs open "
                   "it and show how many shots are done. Render it one shot per queued prompt (Film Shot -> Render "
                   "Shot), redo any shot at any time, and resume after a crash: finished shots are kept.")
    RETURN_TYPES = ("FILM",)
    RETURN_NAMES = ("film",)
    OUTPUT_TOOLTIPS = ("The project, for Film Shot, Render Shot and Assemble Film.",)
    FUNCTION = "open_film"

    @classmethod
    def INPUT_TYPES(cls):
        videos = input_videos()
        from .shots import _DEFAULTS as detector

        return {"required": {
            "project": ("STRING", {"default": "my_film", "tooltip": "The project's name: a folder in ComfyUI's "
                        "output/colormnet_films. A new name creates the project from the video; an existing one "
                        "opens it (then the video is optional and must be the one it was made from)."}),
            "threshold": ("FLOAT", {"default": detector.threshold, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                          "Cut detection (only when the project is created): how different two neighbouring frames "
                          "must be (0-1) to count as a cut. To detect again, use a new project name."}),
            "min_shot_length": ("INT", {"default": detector.min_shot_length, "min": 1, "max": 100_000, "tooltip":
                                "Cut detection (only when the project is created): shortest shot in frames."}),
        }, "optional": {
            "video": ("VIDEO", {"tooltip": "The black-and-white film, from Load Video. Used when the project is "
                                "created; a VIDEO made in memory (e.g. Create Video) is written once into the project "
                                "as source.mp4."}),
            "file": ([NO_FILE, *videos], {"default": NO_FILE, "tooltip": "Or a video file in ComfyUI's input folder "
                     "(read in place: nothing is copied). Connect the video or pick a file, not both."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, project="", **_):
        # Runs again (and so do the nodes fed from it) whenever a shot's record, exemplar or segment
        # changed, so the summary and Assemble Film see the project as it is now.
        try:
            return project_state(project_folder(project))
        except (InputError, OSError):
            return float("nan")

    def open_film(self, project, threshold, min_shot_length, video=None, file=NO_FILE, unique_id=None):
        film = _core()
        folder = project_folder(project)
        if video is not None and file != NO_FILE:
            raise InputError(f"Film Project got both a video input and the file {file!r}; connect the video or "
                             f"pick a file, not both.")
        if (folder / "film.json").exists():
            opened = film.FilmProject.open(folder)
            _check_same_source(opened, video, file, project)
        else:
            source = _source_path(video, file, folder, project)
            from ..colormnet_core.shots import ShotDetectorConfig

            detector = ShotDetectorConfig(threshold=float(threshold), min_shot_length=int(min_shot_length))
            log.info("ColorMNet: creating film project %s from %s", folder, source)
            update = host.progress(100)
            opened = film.FilmProject.init(source, folder, shots="auto", detector=detector,
                                           progress=lambda done, total: _tick(update, done, total))
        lines = summary(opened)
        host.show_status(unique_id, lines)
        log.info("ColorMNet film %s: %s", project, " ".join(lines))
        value = Film(opened.dir, tuple((int(s[0]), int(s[1])) for s in opened.shots), int(opened.frame_count))
        return {"ui": {"text": lines}, "result": (value,)}


def _tick(update, done: int, total: int) -> None:
    host.raise_if_interrupted()   # Cancel stops shot detection (no film.json yet: nothing to clean)
    update(int(100 * done / total) if total else 0)


def _source_path(video, file: str, folder: Path, project: str) -> Path:
    """The file a new project reads: the picked input file, the VIDEO's file, or (for a VIDEO held in
    memory) a copy written once into the project folder."""
    if file != NO_FILE:
        path = host.annotated_input_path(file)
        if not path.is_file():
            raise InputError(f"video not found: {path}. Put it in ComfyUI's input folder and refresh the page.")
        return path
    if video is None:
        raise InputError(f"there is no film project named {project!r} in {host.films_dir()} yet: connect a VIDEO "
                         f"(Load Video) or pick a file to create it.")
    source = video_source(video)
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return Path(source).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SOURCE_NAME
    if source is not None:   # a file held in memory (an upload ComfyUI did not write out): its bytes as they are
        source.seek(0)
        target.write_bytes(source.read())
        return target
    _write_in_memory(InMemoryVideo(video.get_components()), target)
    return target


def _write_in_memory(frames: InMemoryVideo, target: Path) -> None:
    """Encodes a VIDEO made of frames into the project, once: lossless (crf 0), with its sound."""
    from ..colormnet_core.video_file import VideoWriter

    with VideoWriter(target, fps=frames.fps, time_base=frames.time_base, audio_waveform=frames.waveform, crf=0,
                     overwrite=True) as writer:
        for index, frame in enumerate(frames):
            writer.write(frame.float().clamp(0, 1), index)


def _check_same_source(project, video, file: str, name: str) -> None:
    """An existing project opened with a video input: it must be the film the project was made from."""
    if file != NO_FILE:
        given = host.annotated_input_path(file)
    elif video is not None:
        source = video_source(video)
        given = Path(source) if isinstance(source, (str, Path)) else None
        if given is None:   # held in memory: the project keeps its own copy; compare what can be compared
            count = len(video.get_components().images)
            if count != project.frame_count:
                raise InputError(f"film project {name!r} has {project.frame_count} frames, but the video connected "
                                 f"has {count}: it is another film. Use a new project name for it.")
            return
    else:
        return
    if given.resolve() != Path(project.source).resolve():
        raise InputError(f"film project {name!r} was made from {project.source}, but the video connected is "
                         f"{given}. Use a new project name for that film, or connect the original.")


class ColorMNetFilmShot:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "shot", "keyframe"]
    DESCRIPTION = ("One shot of a film project: its keyframe (first frame) for an image model to colour, and the "
                   "frame index Load Exemplar pins the coloured picture to. With 'control after generate' set to "
                   "increment, pressing Run with a batch count of N queues shots 0, 1, ... N-1, one prompt each. "
                   "A shot past the last one does nothing (the film is complete) and says so here.")
    RETURN_TYPES = ("IMAGE", "STRING", "INT", "INT", "INT")
    RETURN_NAMES = ("keyframe", "frame", "first", "last", "shot")
    OUTPUT_TOOLTIPS = (
        "The shot's first frame (black and white), for the image model.",
        "Its frame index in the film as text (e.g. 120): connect to Load Exemplar's batch_frames.",
        "The shot's first frame index (0-based, in the film).",
        "The shot's last frame index (inclusive).",
        "The shot index: connect to Render Shot.",
    )
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "film": ("FILM",),
            "shot": ("INT", {"default": 0, "min": 0, "max": MAX_SHOT, "control_after_generate": True, "tooltip":
                     "Shot index, 0 = the first. Set the control below to 'increment' so every queued prompt takes "
                     "the next shot; set it to 0 and Run with a batch count equal to the film's shots."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def pick(self, film, shot, unique_id=None):
        project = open_project(film)
        count = len(project.shots)
        if not 0 <= shot < count:
            # Not an error: a batch count above the shot count is the easy way to render "everything", and
            # each extra prompt would otherwise pop an error although nothing is wrong with the film.
            message = (f"The film has {count} shots, 0-{count - 1}; shot {shot} does not exist, so this prompt does "
                       f"nothing. All queued prompts past the last shot do nothing: set the batch count to {count} "
                       f"(and the shot back to 0).")
            log.warning("ColorMNet: %s", message)
            host.show_status(unique_id, [message])
            blocked = host.execution_blocker(None)
            return {"ui": {"text": [message]}, "result": (blocked,) * len(self.RETURN_TYPES)}
        first, last = (int(v) for v in project.shots[shot][:2])
        keyframe = _read_image(project.keyframe(shot))
        (state,) = (x.state for x in _core().shot_states(project, shots=[shot]))
        lines = [f"Shot {shot} of {count} (0-{count - 1}): frames {first}-{last}, {_core().STATE_WORDS[state]}."]
        host.show_status(unique_id, lines)
        return {"ui": {"text": lines}, "result": (keyframe, str(first), first, last, shot)}


def _read_image(path: Path) -> torch.Tensor:
    """A PNG -> IMAGE `1 x H x W x 3` float32 in [0, 1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read the picture {path}; replace it, or delete it (a keyframe is then extracted "
                         f"again from the film).")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(rgb)).float().div_(255.0).unsqueeze(0)


# -- rendering one shot ----------------------------------------------------------------------------

_SHA_CACHE: dict[str, tuple[tuple[float, int], str]] = {}
_SHA_LOCK = threading.Lock()


def checkpoint_sha256(path: Path) -> str:
    """The checkpoint's sha256 (part of every shot's fingerprint), computed once per file version."""
    from ..colormnet_core.checkpoint import sha256_file

    stat = path.stat()
    stamp = (stat.st_mtime, stat.st_size)
    with _SHA_LOCK:
        cached = _SHA_CACHE.get(str(path))
        if cached is None or cached[0] != stamp:
            _SHA_CACHE[str(path)] = (stamp, sha256_file(path))
        return _SHA_CACHE[str(path)][1]


def new_exemplars(project, exemplars, shot: int) -> tuple[dict[int, bytes], list, list[str]]:
    """The memory's exemplars pinned inside shot `shot` as ({frame: PNG bytes}, [Exemplar], notes about
    the ones not used). Nothing is written: they enter the project when the shot commits."""
    from ..colormnet_core.exemplars import Exemplar
    from ..colormnet_core.film.project import png_bytes
    from ..colormnet_core.preprocess import as_rgb

    first, last = (int(v) for v in project.shots[shot][:2])
    notes, pictures, kept = [], {}, []
    for exemplar in exemplars:
        if exemplar.frame is None:
            notes.append("a reference exemplar (frame -1) is not used here: a film's references are files "
                         "exemplars/reference*.png in the project, applying to every shot.")
        elif not first <= exemplar.frame <= last:
            notes.append(f"the exemplar pinned to frame {exemplar.frame} is outside shot {shot} (frames {first}-"
                         f"{last}), so it is not used; queue the shot that holds that frame with it.")
        else:
            rgb = (as_rgb(exemplar.image.unsqueeze(0), "the exemplar")[0] * 255).round().clamp(0, 255)
            rgb = rgb.to(torch.uint8).cpu()
            pictures[exemplar.frame] = png_bytes(rgb, f"the exemplar of frame {exemplar.frame}")
            kept.append(Exemplar(rgb, exemplar.frame))
    return pictures, kept, notes


def film_settings(model, memory_config, size: str, keep_luminance: bool, crf: int, device: torch.device,
                  propagation: str = "forward"):
    """FilmSettings for the node's choices: what changes a segment's bytes."""
    return _core().FilmSettings(size=None if not size[:1].isdigit() else size, memory=memory_config,
                                precision=model.autocast(device), gamut="keep_luminance" if keep_luminance else "clip",
                                crf=int(crf), propagation=propagation)


def memory_config_from_prompt(prompt, unique_id):
    """The MemoryConfig that Render Shot's `memory` input will carry, read from the queued prompt
    without running anything: the linked node must be ColorMNet Memory with every setting a plain
    value. None when it cannot be told (then the input is evaluated)."""
    from .memory import ColorMNetMemory

    try:
        link = prompt[str(unique_id)]["inputs"]["memory"]
        node = prompt[str(link[0])]
        if node.get("class_type") != "ColorMNetMemory":
            return None
        values = {k: v for k, v in node["inputs"].items() if k != "encoded"}
        if any(isinstance(v, list) for v in values.values()):   # a setting fed by a link
            return None
        return ColorMNetMemory().build(None, **values)[0].config
    except (KeyError, TypeError, IndexError, ValueError, AttributeError):
        return None


def _confidence_file(fingerprint: str) -> Path:
    # The plot of a shot rendered earlier in this ComfyUI session; the project itself keeps no plot.
    return host.temp_dir() / "colormnet_film_confidence" / f"{fingerprint}.json"


def render_one(project, job, model, device: torch.device, key_batch: int, pictures: dict[int, bytes]):
    """Renders `job` (with `pictures` replacing its exemplars at their frames) and commits it through the
    core's one commit path (lock, partial file, render, commit, clean-up). Returns the `Committed`
    and the confidence per frame (None when it was already done). Progress per frame; Cancel stops
    within a frame and leaves the shot as it was."""
    film = _core()
    update = host.progress(job.frames)

    def render(staged, partial):
        network = model.network(device)
        try:
            return film.render_job(staged, network, out_path=partial, device=device, key_batch=key_batch,
                                   on_frame=lambda frame: update(frame.index + 1), should_stop=host.interrupted)
        finally:
            model.offload()

    try:
        committed = film.commit_shot(project, job, render, new_exemplars=pictures)
    except Cancelled:
        host.raise_if_interrupted()   # ComfyUI's own interruption exception, so the UI shows "interrupted"
        raise
    except torch.OutOfMemoryError as e:
        raise ResolutionError(f"the GPU ran out of memory rendering shot {job.index}. Choose a smaller "
                              f"processing_size (e.g. 480 or 360) or a key_batch of 1.") from e
    if not committed.rendered:
        return committed, None
    confidence = [float(c) for c in committed.result.confidence]
    target = _confidence_file(committed.job.fingerprint)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(confidence))
    return committed, confidence


def _placeholder_plot(text: str) -> torch.Tensor:
    from .shots import PLOT_SIZE

    width, height = PLOT_SIZE
    img = np.full((height, width, 3), 255, np.uint8)
    for row, line in enumerate(text.split("\n")):
        cv2.putText(img, line, (20, 60 + 34 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (40, 40, 40), 2, cv2.LINE_AA)
    return torch.from_numpy(img).float().div_(255.0).unsqueeze(0)


def _preview(segment: Path, prefix: str):
    """A copy of `segment` in ComfyUI's temp folder as (VIDEO, ui): the project file may be replaced later
    while ComfyUI still caches this output."""
    folder = host.temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{prefix}_{uuid.uuid4().hex[:12]}.mp4"
    shutil.copyfile(segment, target)
    ui = {"images": [{"filename": target.name, "subfolder": "", "type": "temp"}], "animated": [True]}
    return host.video_from_file(target) or VideoFile(target), ui


class ColorMNetRenderShot:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "shot", "render", "segment", "revert"]
    OUTPUT_NODE = True
    DESCRIPTION = ("Renders one shot of a film project into its segment (segments/<first frame>.mp4). A shot that "
                   "has no exemplar in the project yet takes the exemplars pinned inside it from 'memory' (the "
                   "image model's picture); a shot that has one renders from it, and a shot already rendered with "
                   "the same exemplars, settings and checkpoint is skipped: then the image model does not run at "
                   "all. To replace a shot's exemplar set done_shot to 'redo'; 'revert' brings back the previous "
                   "one (without rendering when its segment was kept). A new exemplar enters the project only "
                   "when the shot's segment is saved, so Cancel keeps the previous exemplar and segment.")
    RETURN_TYPES = ("VIDEO", "IMAGE", "IMAGE")
    RETURN_NAMES = ("video", "confidence_plot", "exemplar")
    OUTPUT_TOOLTIPS = ("The shot's segment (H.264, no sound), to preview; Assemble Film joins all of them.",
                       "Match confidence per frame of the shot: add exemplars where it drops.",
                       "The exemplar the shot is rendered from (its first frame's, as saved in the project).")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "film": ("FILM",),
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY", {"lazy": True, "tooltip": "From ColorMNet Memory: its exemplars "
                       "pinned inside the shot (Load Exemplar with the frame index Film Shot outputs). Evaluated "
                       "only when the shot has no exemplar in the project or done_shot is 'redo', so a re-queued "
                       "film does not run the image model again."}),
            "shot": ("INT", {"default": 0, "min": 0, "max": MAX_SHOT, "tooltip": "Shot index: connect Film "
                     "Shot's 'shot' output."}),
            **_size_inputs(),
            "crf": CRF_INPUT,
        }, "optional": {
            **custom_size_input(), **propagation_input(),
            "done_shot": (list(DONE_SHOT), {"default": DONE_SHOT[0], "tooltip": "skip: a shot that has an "
                          "exemplar is rendered from it (only if it is not already done) and the image model is not "
                          "run. redo: run the image model and render the shot with its new exemplar (the old one "
                          "stays in exemplars/history). revert: bring back the shot's previous exemplar, and its "
                          "segment when it was kept (nothing is rendered then)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}}

    def check_lazy_status(self, film, model, memory=None, shot=0, processing_size="480", keep_luminance=True,
                          key_batch=1, crf=18, custom_size=None, propagation="forward", done_shot=DONE_SHOT[0],
                          prompt=None, unique_id=None):
        """['memory'] when the image model's exemplar is needed (see the class description), else []."""
        if memory is not None or done_shot == DONE_SHOT[2]:
            return []
        if done_shot == DONE_SHOT[1]:
            return ["memory"]
        try:
            project = open_project(film)
            if not 0 <= int(shot) < len(project.shots):
                return []     # render() reports the bad index
            (state,) = _core().shot_states(project, shots=[int(shot)])
            if state.state == "needs_exemplar" or memory_config_from_prompt(prompt, unique_id) is None:
                return ["memory"]
            return []
        except Exception:   # noqa: BLE001 - undecidable here: evaluate the input, render() reports the problem
            log.debug("ColorMNet: Render Shot evaluates its memory input", exc_info=True)
            return ["memory"]

    def render(self, film, model, memory, shot, processing_size, keep_luminance, key_batch, crf=18, custom_size=None,
               propagation="forward", done_shot=DONE_SHOT[0], prompt=None, unique_id=None):
        core = _core()
        size = size_choice(processing_size, custom_size)
        project = open_project(film)
        count = len(project.shots)
        if not 0 <= shot < count:
            raise InputError(f"the film has {count} shots, 0-{count - 1}; there is no shot {shot}. Connect Film "
                             f"Shot's 'shot' output to Render Shot.")
        device = host.torch_device()
        config = memory.config if memory is not None else memory_config_from_prompt(prompt, unique_id)
        if config is None and done_shot == DONE_SHOT[2] and project.settings() is not None:
            config = project.settings().memory    # a revert judges the kept segment by the last render's
        if config is None:
            raise InputError("Render Shot could not tell the memory settings without its memory input; connect "
                             "ColorMNet Memory to 'memory'.")
        settings = film_settings(model, config, size, keep_luminance, crf, device, propagation)
        sha = checkpoint_sha256(model.path)
        if done_shot == DONE_SHOT[2]:
            outcome = core.revert_shot(project, shot, settings, sha)
            return self._result(project, shot, None, [outcome.message], unique_id)
        (job,) = core.plan_jobs(project, settings, sha, shots=[shot])
        state = core.shot_states(project, settings, sha, shots=[shot])[0].state
        notes, pictures, given = [], {}, []
        if memory is not None and (done_shot == DONE_SHOT[1] or state == "needs_exemplar"):
            pictures, given, notes = new_exemplars(project, memory.exemplars.exemplars, shot)
        elif memory is not None and memory.exemplars.exemplars:
            notes.append(f"shot {shot} already has an exemplar in the project, so the one from memory is not used; "
                         f"set done_shot to 'redo' to replace it.")
        if not (job.first in pictures or any(e.frame == job.first or e.frame is None for e in job.exemplars)):
            raise InputError(_no_exemplar_message(project, job, sorted(set(pictures) | {e.frame for e in
                                                                                         job.exemplars})))
        warnings = core.job_warnings(job, extra=given)
        committed, confidence = render_one(project, job, model, device, key_batch, pictures)
        if committed.rendered:
            notes.append(f"shot {shot} rendered: frames {job.first}-{job.last}.")
        else:
            notes.append(f"shot {shot} is already done with these exemplars and settings: nothing rendered.")
            saved = _confidence_file(committed.job.fingerprint)
            confidence = json.loads(saved.read_text()) if saved.is_file() else None
        return self._result(project, shot, confidence, notes, unique_id, warnings,
                            pinned=sorted(e.frame - job.first for e in committed.job.exemplars if e.frame is not None))

    def _result(self, project, shot: int, confidence, notes: list[str], unique_id, warnings=(), pinned=()):
        first = project.shots[shot].first
        plot = confidence_plot(confidence, [(0, len(confidence) - 1)], (), list(pinned)) if confidence else \
            _placeholder_plot(f"Shot {shot} was rendered earlier;\nits confidence is shown when it renders.")
        host.show_text(unique_id, list(warnings), notes)
        segment = project.segment_path(shot)
        if not segment.is_file():   # a revert whose segment must be rendered again
            return {"ui": {"text": [*warnings, *notes]}, "result": (None, plot, _shot_exemplar(project, shot))}
        video, ui = _preview(segment, f"colormnet_shot_{first:06d}")
        return {"ui": {**ui, "text": [*warnings, *notes]}, "result": (video, plot, _shot_exemplar(project, shot))}


def _no_exemplar_message(project, job, frames: list[int]) -> str:
    inside = [f for f in frames if f is not None and job.first < f <= job.last]
    where = (f"the exemplar pinned to frame {inside[0]} colours only frames {inside[0]} on, not the shot's start; "
             if inside else "")
    return (f"shot {job.index} (frames {job.first}-{job.last}) has no exemplar for its first frame {job.first}: "
            f"{where}pin one to frame {job.first} (Load Exemplar's batch_frames from Film Shot's 'frame' output), or "
            f"put a picture exemplars/reference.png into {project.dir} for every shot. Nothing was saved.")


def _shot_exemplar(project, shot: int) -> torch.Tensor:
    """IMAGE of the picture the shot is coloured from: its first frame's exemplar, else a reference, else
    its (grey) keyframe."""
    first = project.shots[shot].first
    for e in project.exemplars_for(shot):
        if e.frame == first or e.frame is None:
            return _read_image(Path(e.path))
    return _read_image(project.keyframe(shot))


class ColorMNetAssembleFilm:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "assemble", "join", "concatenate"]
    DESCRIPTION = ("Joins the rendered shots of a film project into one video with the film's sound and timing, "
                   "without encoding again, for Save Video. Every shot must be rendered and up to date; otherwise "
                   "the error lists the shots still to queue.")
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The whole film (H.264 with the source's audio); connect Save Video to keep it.",)
    FUNCTION = "assemble"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"film": ("FILM",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def assemble(self, film, unique_id=None):
        project = open_project(film)
        _require_every_shot(project)
        folder = host.temp_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"colormnet_film_{uuid.uuid4().hex[:12]}.mp4"
        _core().assemble_film(project, target)
        lines = [f"{len(project.shots)} shots joined: {project.frame_count} frames."]
        host.show_status(unique_id, lines)
        ui = {"images": [{"filename": target.name, "subfolder": "", "type": "temp"}], "animated": [True]}
        return {"ui": {**ui, "text": lines}, "result": (host.video_from_file(target) or VideoFile(target),)}


def _require_every_shot(project) -> None:
    """InputError listing the shots still to render (the core's own check words it for the command line)."""
    if project.settings() is None:
        raise InputError(f"no shot of {project.dir.name!r} has been rendered yet: queue the film workflow (Film Shot "
                         f"-> Render Shot) once per shot, then run Assemble Film again.")
    waiting = [s for s in project.status() if s.state != "done"]
    if waiting:
        listing = _short_list([f"{s.index} (frames {s.first}-{s.last}: {_core().STATE_WORDS[s.state]})"
                               for s in waiting])
        raise InputError(f"{len(waiting)} of {len(project.shots)} shots are not rendered with the current settings: "
                         f"{listing}. Queue them in the film workflow (set Film Shot's shot to each, or to "
                         f"{waiting[0].index} with a batch count), then run Assemble Film again.")
