"""A film project: a folder that turns one long video into shots rendered one at a time.

Layout (all names by a shot's first frame, its absolute 0-based index, six digits):

    film.json          format version, source path and fingerprint, shots, last render's settings
    source_index.json  every frame's timestamp and the keyframes (to read one shot alone)
    source_check.json  the source's size and times when its packets were last checked (a cache)
    keyframes/         000120.png: the first frame of every shot (what an image model colours)
    exemplars/         000120.png pins a colour picture to frame 120; reference*.png apply to every shot
      history/         000120-<sha256 prefix>.png: every exemplar a render used or that was replaced
    segments/          000120.mp4: one H.264 segment per shot
      history/         the previous segment and record of a shot rendered again (history.py)
    records/           000120.json: the job fingerprint, sha256, size and frame count of the segment;
                       000120.journal.json while a commit of that shot is under way (commit.py)
    locks/             advisory locks (see records.py)

`film.json` and the index are written by `init`; the settings in film.json when a shot commits with
other settings; each shot's record by whoever rendered that shot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from torch import Tensor

from ..errors import InputError
from ..shots import Shot, ShotDetector, ShotDetectorConfig, validate_shots
from ..video_io import read_image
from .checks import check_shape, check_windows_name
from .jobs import ExemplarFile, FilmSettings
from .records import file_lock, read_json, remove_partials, write_atomic, write_json
from .source import FilmError, SourceIndex, fingerprint_source, index_source, read_frames

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_PINNED = re.compile(r"^(\d+)$")
_FINGERPRINTS_SEEN: dict[tuple, dict] = {}     # source_stat(...) -> fingerprint, per process
def source_stat(path: Path) -> list:
    """What changes whenever a file is written or replaced: size, mtime, ctime, inode (ctime cannot be
    set back by tools that restore mtime)."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class FilmProject:
    """An open project folder (`init` makes one, `open` opens one). Not thread-safe; cheap to reopen."""

    def __init__(self, folder: Path, data: dict, index: SourceIndex) -> None:
        self.dir = folder
        self.data = data
        self.index = index
        self.source = Path(data["source"])
        self.shots = [Shot(first, last) for first, last in data["shots"]]

    # -- making and opening -------------------------------------------------------------------

    @classmethod
    def init(cls, source: str | Path, folder: str | Path, *, shots: list[Shot] | str | None = "auto",
             detector: ShotDetectorConfig | None = None,
             progress: Callable[[int, int], None] | None = None) -> FilmProject:
        """Make a project in `folder` (new or empty) for the video `source`. shots: "auto" (detect cuts
        and cross-fades, decoding the film once), a list of `Shot`s, or None (one shot)."""
        source, folder = Path(source).resolve(), Path(folder)
        check_windows_name(folder.resolve().name)
        if (folder / "film.json").exists():
            raise FilmError(f"{folder} is already a film project; use `film status` / `film render`, or give a "
                            f"new folder to start over.")
        if not source.is_file():
            raise FilmError(f"source video not found: {source}.")
        index = index_source(source)
        count = index.frame_count
        if shots == "auto":
            found = _detect(source, index, detector, progress)
        elif shots is None or shots == "none":
            found = [Shot(0, count - 1)]
        else:
            found = validate_shots(shots, count)
        for sub in ("keyframes", "exemplars", "segments", "records", "locks"):
            try:
                (folder / sub).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                from .records import disk_error

                raise disk_error(e, folder / sub, "the project folder") from e
        data = {"format": FORMAT_VERSION, "source": str(source), "source_fingerprint":
                fingerprint_source(source, index, packets=False), "shots": [[s.first, s.last] for s in found],
                "settings": None, "checkpoint_sha256": None}
        project = cls(folder, data, index)
        for i, shot in enumerate(found):
            if not project.keyframe_path(i).exists():
                project._write_png(project.keyframe_path(i), next(iter(read_frames(source, index, shot.first,
                                                                                   shot.first))))
        write_json(folder / "source_index.json", index.to_json(), "the source's index")
        project._remember_source_check(data["source_fingerprint"])
        write_json(folder / "film.json", data, "the project file")      # last: a folder without it is no project yet
        log.info("film project %s: %d frames, %d shots", folder, count, len(found))
        return project

    @classmethod
    def open(cls, folder: str | Path, *, check_source: bool = True) -> FilmProject:
        """Open a project; FilmError when it is none, of another format version, or its source changed."""
        folder = Path(folder)
        if not (folder / "film.json").is_file():
            raise FilmError(f"{folder} is not a film project (no film.json); make one with the Film Project node "
                            f"or `film init SOURCE --project {folder}`.")
        data = read_json(folder / "film.json", "the project file")
        if data.get("format") != FORMAT_VERSION:
            raise FilmError(f"{folder / 'film.json'} is format version {data.get('format')!r}, this version of "
                            f"ColorMNet reads version {FORMAT_VERSION}; use the ColorMNet version that made it, "
                            f"or make the project again in a new folder.")
        check_shape(data, folder / "film.json")
        project = cls(folder, data, SourceIndex.from_json(read_json(folder / "source_index.json", "the index")))
        if project.shots[-1].last != project.frame_count - 1:
            raise FilmError(f"{folder / 'film.json'} lists shots up to frame {project.shots[-1].last} but the "
                            f"source's index has {project.frame_count} frames; restore film.json from a backup or "
                            f"make the project again in a new folder.")
        if check_source:
            project.check_source()
        return project

    def check_source(self) -> None:
        """FilmError naming what differs when the source is gone or not the file the project was made
        from. Reads the whole file (no decoding) when its size or times differ from the last check."""
        if not self.source.is_file():
            raise FilmError(f"the film's source {self.source} is gone; put it back at that path (the project "
                            f"{self.dir} refers to it).")
        key = tuple(source_stat(self.source))
        recorded = self.data["source_fingerprint"]
        if key in _FINGERPRINTS_SEEN or self._source_check() == list(key):
            return
        if key[1] != recorded["bytes"]:
            now = {"bytes": key[1]}
        else:
            now = fingerprint_source(self.source, self.index)
        differs = [_difference(name, recorded[name], now[name]) for name in recorded
                   if name in now and now[name] != recorded[name]]
        if differs:
            raise FilmError(f"the source {self.source} changed since the project was made: {'; '.join(differs)}. "
                            f"Nothing was overwritten. Restore the original file, or make a new project for the "
                            f"new one.")
        _FINGERPRINTS_SEEN[key] = now
        self._remember_source_check(recorded)

    def _source_check(self) -> list | None:
        try:
            data = json.loads((self.dir / "source_check.json").read_text())
        except (OSError, ValueError):
            return None
        fingerprint = hashlib.sha256(json.dumps(self.data["source_fingerprint"], sort_keys=True).encode()).hexdigest()
        return data.get("stat") if isinstance(data, dict) and data.get("fingerprint") == fingerprint else None

    def _remember_source_check(self, fingerprint: dict) -> None:
        """Note the source's stat after a passing check (best effort: a read-only project checks every time)."""
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        try:
            write_json(self.dir / "source_check.json", {"stat": source_stat(self.source), "fingerprint": digest})
        except (FilmError, OSError):
            log.debug("could not write %s", self.dir / "source_check.json", exc_info=True)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def frame_count(self) -> int:
        return self.index.frame_count

    @property
    def source_fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.data["source_fingerprint"], sort_keys=True).encode()).hexdigest()

    def _name(self, i: int) -> str:
        return f"{self.shots[i].first:06d}"

    def keyframe_path(self, i: int) -> Path:
        return self.dir / "keyframes" / f"{self._name(i)}.png"

    def segment_path(self, i: int) -> Path:
        return self.dir / "segments" / f"{self._name(i)}.mp4"

    def record_path(self, i: int) -> Path:
        return self.dir / "records" / f"{self._name(i)}.json"

    def exemplar_path(self, frame: int) -> Path:
        return self.dir / "exemplars" / f"{frame:06d}.png"

    def shot_index(self, i: int) -> int:
        """`i` checked against the shot list (FilmError naming the valid range)."""
        if not 0 <= i < len(self.shots):
            raise FilmError(f"shot {i} does not exist: the film has {len(self.shots)} shots (0-{len(self.shots) - 1}).")
        return i

    def partial_segment_path(self, job) -> Path:
        """A fresh temporary name beside shot `job.index`'s segment (never counted as done)."""
        final = self.segment_path(job.index)
        return final.with_name(f"{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")

    # -- records and locks (records.py) ---------------------------------------------------------

    def status(self, settings: FilmSettings | None = None, checkpoint_sha256: str | None = None):
        """`plan.shot_states` of this project."""
        from .plan import shot_states

        return shot_states(self, settings, checkpoint_sha256)

    @contextlib.contextmanager
    def shot_lock(self, i: int) -> Iterator[None]:
        """Exclusive right to render shot i (ProjectLocked at once if another process has it); clears
        the temporary files a killed render of that shot left."""
        with file_lock(self.dir / "locks" / f"{self._name(i)}.lock", f"shot {i} of {self.dir}"):
            remove_partials(self, i)
            yield

    def render_lock(self):
        """The project-wide lock of `film render`. A second render refuses at once instead of waiting:
        waiting would look like a hang, and two renders of one project on one machine only compete for
        the same GPU; several machines share a project through --ray or the ComfyUI farm instead, which
        take the per-shot locks."""
        return file_lock(self.dir / "locks" / "render.lock", f"the film project {self.dir}")

    # -- exemplars ------------------------------------------------------------------------------

    def save_exemplar(self, frame: int, rgb: Tensor) -> Path:
        """Store a colour picture (uint8 or float RGB `3 x H x W`) pinned to `frame`, replacing any
        other picture pinned there (which is kept in exemplars/history/); the render that follows
        sees it as the shot's exemplar. (Render Shot does not use this: its exemplar counts only
        once the shot commits, see commit.py.)"""
        from .commit import archive, working_exemplars

        if not 0 <= frame < self.frame_count:
            raise FilmError(f"cannot pin an exemplar to frame {frame}: the film has frames 0-{self.frame_count - 1}.")
        path = self.exemplar_path(frame)
        old = working_exemplars(self, frame)
        for other in old:
            archive(self, other, frame)
        write_atomic(path, png_bytes(rgb, path.name), f"the exemplar of frame {frame}")
        for other in old:
            if other != path:
                other.unlink()
        return path

    def exemplar_files(self) -> list[ExemplarFile]:
        """Every picture in exemplars/, checked (see `scan_exemplars`)."""
        return scan_exemplars(self.dir / "exemplars", self.frame_count)

    def exemplars_for(self, i: int, files: list[ExemplarFile] | None = None) -> tuple[ExemplarFile, ...]:
        """Shot i's exemplars: those pinned inside it, then the references."""
        shot = self.shots[self.shot_index(i)]
        files = self.exemplar_files() if files is None else files
        return tuple(e for e in files if e.frame is not None and shot.holds(e.frame)) + tuple(
            e for e in files if e.frame is None)

    # -- settings of the last render -------------------------------------------------------------

    def settings(self) -> FilmSettings | None:
        saved = self.data.get("settings")
        return None if saved is None else FilmSettings.from_json(saved)

    def remember_settings(self, settings: FilmSettings, checkpoint_sha256: str) -> None:
        """Record the settings a shot was committed with (commit.py calls this after the record), so
        `status` and `assemble` judge against them; a render that commits nothing changes nothing."""
        if self.data.get("settings") == settings.to_json() and self.data.get("checkpoint_sha256") == checkpoint_sha256:
            return
        current = read_json(self.dir / "film.json", "the project file")   # another process may have written it
        self.data = {**current, "settings": settings.to_json(), "checkpoint_sha256": checkpoint_sha256}
        write_json(self.dir / "film.json", self.data, "the project file")

    def keyframe(self, i: int) -> Path:
        """Shot i's keyframe file, extracted again from the source when it is missing or unreadable."""
        path = self.keyframe_path(self.shot_index(i))
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
            log.warning("keyframe %s missing or unreadable: extracting it again from the source", path)
            first = self.shots[i].first
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_png(path, next(iter(read_frames(self.source, self.index, first, first))))
        return path

    def _write_png(self, path: Path, rgb: Tensor) -> None:
        write_atomic(path, png_bytes(rgb, path.name))


def png_bytes(rgb: Tensor, name: str = "the picture") -> bytes:
    """A uint8 or float [0, 1] RGB `3 x H x W` tensor as PNG file bytes."""
    if rgb.dtype.is_floating_point:
        rgb = (rgb.clamp(0, 1) * 255).round().byte()
    array = np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise FilmError(f"could not encode {name} as PNG.")
    return encoded.tobytes()


def _difference(name: str, was, now) -> str:
    if name == "packets_sha256":
        return "its video packets differ (an edit or a re-encode, even of the same size)"
    return f"{name} was {was}, now {now}"


def scan_exemplars(folder: Path, frame_count: int) -> list[ExemplarFile]:
    """Every picture in `folder`, checked: names, frames, readable images, one per frame. Pinned ones
    first (by frame), then references. FilmError naming the files at fault and the naming rule."""
    found: dict[int | None, list[Path]] = {}
    bad = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        pinned = _PINNED.match(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not (pinned or path.stem.lower().startswith("reference")):
            bad.append(path.name)
            continue
        found.setdefault(int(path.stem) if pinned else None, []).append(path)
    if bad:
        raise FilmError(f"exemplars/ holds files that are not exemplars: {', '.join(bad)}. Name a colour picture "
                        f"by the frame it shows (000120.png pins it to frame 120) or reference*.png for every "
                        f"shot ({', '.join(IMAGE_SUFFIXES)}); move other files elsewhere.")
    twice = {f: p for f, p in found.items() if f is not None and len(p) > 1}
    if twice:
        listing = "; ".join(f"frame {f}: {', '.join(x.name for x in p)}" for f, p in sorted(twice.items()))
        raise FilmError(f"several exemplars are pinned to one frame ({listing}); keep one picture per frame.")
    outside = sorted(f for f in found if f is not None and f >= frame_count)
    if outside:
        raise FilmError(f"exemplar(s) pinned to frame(s) {outside}, but the film has frames "
                        f"0-{frame_count - 1}; rename them to the frame they show.")
    files = []
    for frame, paths in found.items():
        for path in paths:
            try:
                read_image(path)
            except InputError:
                raise FilmError(f"exemplars/{path.name} cannot be read as an image; replace it by a PNG or JPEG "
                                f"colour picture of frame {frame} (or of the whole film, for a reference), or "
                                f"remove it.") from None
            files.append(ExemplarFile(str(path), frame, hashlib.sha256(path.read_bytes()).hexdigest()))
    return sorted(files, key=lambda e: (e.frame is None, e.frame or 0, e.path))


def _detect(source: Path, index: SourceIndex, config: ShotDetectorConfig | None,
            progress: Callable[[int, int], None] | None) -> list[Shot]:
    """Decode the film once and find its shots."""
    detector = ShotDetector(config)
    total = index.frame_count
    for t, frame in enumerate(read_frames(source, index, 0, total - 1)):
        detector.push(frame)
        if progress is not None:
            progress(t + 1, total)
    return detector.finish(total)
