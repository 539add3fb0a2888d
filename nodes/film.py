"""Film nodes: a film project on disk (colormnet_core.film), rendered one shot per queued prompt.

Film Project opens or creates the project under output/colormnet_films/<name>; Film Shot picks one
shot (its `shot` widget increments after every queued prompt, so a batch count of N renders N shots);
Render Shot writes that shot's segment; Assemble Film joins the segments into a VIDEO.

The FILM socket value is an immutable `Film` (where the project is, its shots); every node reopens
the project for its current state, so nothing shared between nodes is ever modified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
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
STATE_WORDS = {"done": "done", "stale": "stale (made from other exemplars or settings)", "pending": "not rendered yet",
               "needs_exemplar": "needs an exemplar"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


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
    """output/colormnet_films/<name>, after checking that the name is one plain folder name."""
    name = name.strip()
    if not _NAME.match(name) or ".." in name:
        raise InputError(f"project name {name!r} is not a plain folder name: use letters, digits, spaces, '.', '_' "
                         f"or '-' (up to 100, starting with a letter or digit), e.g. my_film.")
    return host.films_dir() / name


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


def summary(project) -> list[str]:
    """The lines Film Project shows: counts per state, then the shots that need an exemplar."""
    states = project.status()
    count = {s: sum(1 for x in states if x.state == s) for s in ("done", "stale", "pending", "needs_exemplar")}
    lines = [f"{len(states)} shots, {project.frame_count} frames: {count['done']} done, {count['stale']} stale, "
             f"{count['pending']} to render, {count['needs_exemplar']} needing an exemplar."]
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
        keyframe = _read_image(project.keyframe_path(shot))
        (state,) = (x.state for x in _core().shot_states(project, shots=[shot]))
        lines = [f"Shot {shot} of {count} (0-{count - 1}): frames {first}-{last}, {STATE_WORDS[state]}."]
        host.show_status(unique_id, lines)
        return {"ui": {"text": lines}, "result": (keyframe, str(first), first, last, shot)}


def _read_image(path: Path) -> torch.Tensor:
    """A PNG -> IMAGE `1 x H x W x 3` float32 in [0, 1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read the keyframe {path}; the project folder is damaged. Create the project again "
                         f"under a new name.")
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


def pin_exemplars(project, exemplars, shot: int) -> list[str]:
    """Saves the exemplars pinned inside shot `shot` into the project's exemplars/ (so later renders, by
    node or CLI, reuse them); returns notes about the ones that are not saved."""
    from ..colormnet_core.preprocess import as_rgb

    first, last = (int(v) for v in project.shots[shot][:2])
    notes = []
    for exemplar in exemplars:
        if exemplar.frame is None:
            notes.append("a reference exemplar (frame -1) is not used here: a film's references are files "
                         "exemplars/reference*.png in the project, applying to every shot.")
        elif not first <= exemplar.frame <= last:
            notes.append(f"the exemplar pinned to frame {exemplar.frame} is outside shot {shot} (frames {first}-"
                         f"{last}), so it is not saved; queue the shot that holds that frame with it.")
        else:
            rgb = as_rgb(exemplar.image.unsqueeze(0), "the exemplar")[0]
            project.save_exemplar(exemplar.frame, (rgb * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    return notes


def film_settings(model, memory, size: str, keep_luminance: bool, crf: int, device: torch.device,
                  propagation: str = "forward"):
    """FilmSettings for the node's choices: what changes a segment's bytes."""
    return _core().FilmSettings(size=None if not size[:1].isdigit() else size, memory=memory.config,
                                precision=model.autocast(device), gamut="keep_luminance" if keep_luminance else "clip",
                                crf=int(crf), propagation=propagation)


def _confidence_file(fingerprint: str) -> Path:
    # The plot of a shot rendered earlier in this ComfyUI session; the project itself keeps no plot.
    return host.temp_dir() / "colormnet_film_confidence" / f"{fingerprint}.json"


def render_one(project, job, model, device: torch.device, key_batch: int) -> list[float]:
    """Renders `job` to a partial segment and commits it (under the shot's lock); returns the confidence
    per frame. Progress per frame; Cancel stops within a frame and leaves no partial file."""
    film = _core()
    update = host.progress(job.frames)

    with project.shot_lock(job.index):
        partial = project.partial_segment_path(job)
        network = model.network(device)
        try:
            result = film.render_job(job, network, out_path=partial, device=device, key_batch=key_batch,
                                     on_frame=lambda frame: update(frame.index + 1), should_stop=host.interrupted)
            project.commit(job, result)
        except Cancelled:
            host.raise_if_interrupted()   # ComfyUI's own interruption exception, so the UI shows "interrupted"
            raise
        except torch.OutOfMemoryError as e:
            raise ResolutionError(f"the GPU ran out of memory rendering shot {job.index}. Choose a smaller "
                                  f"processing_size (e.g. 480 or 360) or a key_batch of 1.") from e
        finally:
            model.offload()
            partial.unlink(missing_ok=True)   # committed: already renamed; otherwise a cut-short file
    confidence = [float(c) for c in result.confidence]
    target = _confidence_file(job.fingerprint)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(confidence))
    return confidence


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
    SEARCH_ALIASES = [*SEARCH_ALIASES, "film", "shot", "render", "segment"]
    OUTPUT_NODE = True
    DESCRIPTION = ("Renders one shot of a film project into its segment (segments/<first frame>.mp4), from the "
                   "exemplars in memory that are pinned inside the shot. Those exemplars are saved into the "
                   "project's exemplars/ folder, so a later render (this node or the command line) reuses them "
                   "without the image model. A shot already rendered with the same exemplars, settings and "
                   "checkpoint is not rendered again. A new exemplar or other settings render it again. Progress "
                   "per frame; Cancel stops within a frame and keeps the previous segment.")
    RETURN_TYPES = ("VIDEO", "IMAGE")
    RETURN_NAMES = ("video", "confidence_plot")
    OUTPUT_TOOLTIPS = ("The shot's segment (H.264, no sound), to preview; Assemble Film joins all of them.",
                       "Match confidence per frame of the shot: add exemplars where it drops.")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "film": ("FILM",),
            "model": ("COLORMNET_MODEL",),
            "memory": ("COLORMNET_MEMORY", {"tooltip": "From ColorMNet Memory: its exemplars pinned inside the "
                       "shot (Load Exemplar with the frame index Film Shot outputs) are saved and used."}),
            "shot": ("INT", {"default": 0, "min": 0, "max": MAX_SHOT, "tooltip": "Shot index: connect Film "
                     "Shot's 'shot' output."}),
            **_size_inputs(),
            "crf": CRF_INPUT,
        }, "optional": {**custom_size_input(), **propagation_input()}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def render(self, film, model, memory, shot, processing_size, keep_luminance, key_batch, crf=18,
               custom_size=None, propagation="forward", unique_id=None):
        core = _core()
        size = size_choice(processing_size, custom_size)
        project = open_project(film)
        count = len(project.shots)
        if not 0 <= shot < count:
            raise InputError(f"the film has {count} shots, 0-{count - 1}; there is no shot {shot}. Connect Film "
                             f"Shot's 'shot' output to Render Shot.")
        notes = pin_exemplars(project, memory.exemplars.exemplars, shot)
        device = host.torch_device()
        settings = film_settings(model, memory, size, keep_luminance, crf, device, propagation)
        sha = checkpoint_sha256(model.path)
        (job,) = core.plan_jobs(project, settings, sha, shots=[shot])
        project.remember_settings(settings, sha)   # Film Project's summary and Assemble judge against these
        (state,) = core.shot_states(project, settings, sha, shots=[shot])
        if state.state == "needs_exemplar":
            raise InputError(f"shot {shot} (frames {job.first}-{job.last}) has no exemplar: pin one inside it (Load "
                             f"Exemplar's frame or batch_frames = {job.first}, from Film Shot), or put "
                             f"{project.exemplar_path(job.first).name} in {project.exemplar_path(job.first).parent}.")
        if state.state == "done":
            notes.append(f"shot {shot} is already done with these exemplars and settings: nothing rendered.")
            saved = _confidence_file(job.fingerprint)
            confidence = json.loads(saved.read_text()) if saved.is_file() else None
        else:
            confidence = render_one(project, job, model, device, key_batch)
            notes.append(f"shot {shot} rendered: frames {job.first}-{job.last}.")
        pinned = sorted(e.frame - job.first for e in job.exemplars if e.frame is not None)
        plot = confidence_plot(confidence, [(0, len(confidence) - 1)], (), pinned) if confidence else \
            _placeholder_plot(f"Shot {shot} was rendered earlier;\nits confidence is shown when it renders.")
        host.show_status(unique_id, notes)
        video, ui = _preview(project.segment_path(shot), f"colormnet_shot_{job.first:06d}")
        return {"ui": {**ui, "text": notes}, "result": (video, plot)}


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
        listing = _short_list([f"{s.index} (frames {s.first}-{s.last}: {STATE_WORDS[s.state]})" for s in waiting])
        raise InputError(f"{len(waiting)} of {len(project.shots)} shots are not rendered with the current settings: "
                         f"{listing}. Queue them in the film workflow (set Film Shot's shot to each, or to "
                         f"{waiting[0].index} with a batch count), then run Assemble Film again.")
