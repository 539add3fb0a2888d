"""The one way a shot's segment becomes part of a film: lock, partial file, render, commit, clean up.

`commit_shot` is called by `film render` (cli.py), by the ComfyUI node Render Shot and by the Ray
driver (distributed.py); only the `render` callable differs (in process, or a Ray task). Its steps,
in order (`STEPS`; `fault_hook` is called after each, which is how the tests kill -9 there):

    locked     the shot's lock is held; what a killed commit left is rolled back or forward (`recover`)
    journaled  records/<shot>.journal.json says what this commit will change
    staged     the shot's pinned exemplars are in exemplars/history/ under their content hash (a new
               exemplar from a node is written there only, never over the one in use)
    rendered   the segment is complete under a partial name (the render reads the staged exemplars)
    verified   its sha256 and frame count are checked
    kept       the previous segment and record are linked into segments/history/ (for `revert`)
    renamed    the new segment has the final name
    recorded   the record is written: the commit point. Before it the shot is what it was (a kill
               after `renamed` is rolled back from segments/history/), after it the new render counts
    promoted   exemplars/ shows the exemplars the segment was made from (the previous ones stay in
               history) and film.json the settings; the journal is removed
    released   partial files are gone and the lock is released

So a Cancel, an error or a kill -9 at any moment leaves the shot done with its previous exemplar and
segment, or done with the new ones; never a segment counted done that is not what its record says.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .jobs import ExemplarFile, FilmSettings, ShotJob
from .records import (
    UNREADABLE,
    disk_error,
    fsync_dir,
    read_json,
    record_of,
    remove_partials,
    rename_segment,
    segment_is_done,
    verified_sha256,
    verify_segment,
    write_atomic,
    write_json,
)
from .render import SegmentResult
from .source import FilmError

log = logging.getLogger(__name__)

STEPS = ("locked", "journaled", "staged", "rendered", "verified", "kept", "renamed", "recorded", "promoted",
         "released")

# Called as fault_hook(step, shot index) after each step; None in normal use (tests inject faults here).
fault_hook: Callable[[str, int], None] | None = None

Render = Callable[[ShotJob, Path], SegmentResult]


@dataclass(frozen=True)
class Committed:
    """What `commit_shot` did: the shot's record now, whether a segment was rendered (False: it was
    already done with this job), and the job as rendered (exemplars at their history paths)."""

    record: dict
    rendered: bool
    job: ShotJob
    result: SegmentResult | None = None


def _step(name: str, index: int) -> None:
    if fault_hook is not None:
        fault_hook(name, index)


def history_dir(project) -> Path:
    return project.dir / "exemplars" / "history"


def kept_dir(project) -> Path:
    return project.dir / "segments" / "history"


def history_name(frame: int, sha256: str, suffix: str) -> str:
    """exemplars/history/<frame>-<first 16 hex of sha256><suffix>: one file per content and frame."""
    return f"{frame:06d}-{sha256[:16]}{suffix.lower()}"


def journal_path(project, i: int) -> Path:
    return project.record_path(i).with_name(f"{project.record_path(i).stem}.journal.json")


def commit_shot(project, job: ShotJob, render: Render, *, new_exemplars: dict[int, bytes] | None = None,
                remember_settings: bool = True) -> Committed:
    """Render shot `job.index` with `render(job, partial_path)` and commit it (see the module docstring).

    new_exemplars: {frame: PNG bytes} of exemplars that replace (or add to) the shot's pinned ones for
    this render only until it commits. A shot already done with the resulting job is not rendered:
    its exemplars are made current and `rendered` is False. Raises ProjectLocked when another process
    holds the shot, FilmError / Cancelled from the render (the shot then stays as it was)."""
    i = job.index
    with project.shot_lock(i):
        recover(project, i)
        _step("locked", i)
        staged, writes = _staged_job(project, job, new_exemplars or {})
        done = segment_is_done(project, i, staged.fingerprint)
        previous = record_of(project, i)
        if done and not writes and _current(project, _pinned(staged)):
            _step("released", i)     # nothing to change: not even a journal is written
            return Committed(previous, False, staged)
        journal = {"fingerprint": staged.fingerprint, "pinned": _pinned(staged), "created": sorted(writes),
                   "settings": staged.settings.to_json() if remember_settings and not done else None,
                   "checkpoint_sha256": staged.checkpoint_sha256, "rendered": not done,
                   "previous_sha256": previous.get("sha256") if isinstance(previous, dict) else None}
        path = journal_path(project, i)
        write_json(path, journal, f"shot {i}'s journal")
        _step("journaled", i)
        partial = project.partial_segment_path(job)
        committed = False
        try:
            for name, data in writes.items():
                write_atomic(history_dir(project) / name, data, f"an exemplar of shot {i}")
            _step("staged", i)
            if done:
                record, result = previous, None
            else:
                result = render(staged, partial)
                _step("rendered", i)
                verify_segment(staged, Path(result.path), sha256=result.sha256, frames=result.frames)
                _step("verified", i)
                _keep_previous(project, i, previous)
                _step("kept", i)
                record = rename_segment(project, staged, Path(result.path), sha256=result.sha256,
                                        frames=result.frames)
                _step("renamed", i)
                write_json(project.record_path(i), record, f"shot {i}'s record")
            committed = True
            _step("recorded", i)
            _roll_forward(project, i, journal)
            _step("promoted", i)
        except BaseException:
            if not committed:
                _roll_back(project, i, journal)
            raise
        finally:
            Path(partial).unlink(missing_ok=True)
            remove_partials(project, i)
    _step("released", i)
    return Committed(record, not done, staged, result)


def _current(project, pinned: list[list]) -> bool:
    """Whether exemplars/ already shows exactly these pinned exemplars."""
    for frame, sha, _ in pinned:
        files = working_exemplars(project, frame)
        if len(files) != 1 or verified_sha256(files[0]) != sha:
            return False
    return True


def _pinned(job: ShotJob) -> list[list]:
    return [[e.frame, e.sha256, Path(e.path).name] for e in job.exemplars if e.frame is not None]


def _staged_job(project, job: ShotJob, new: dict[int, bytes]) -> tuple[ShotJob, dict[str, bytes]]:
    """The job with its pinned exemplars (the new ones in place of those at the same frames) read from
    exemplars/history/, and the history files still to write {name: bytes}."""
    import hashlib

    shot = project.shots[job.index]
    outside = sorted(f for f in new if not shot.holds(f))
    if outside:
        raise FilmError(f"exemplar(s) for frame(s) {outside} are outside shot {job.index} (frames {shot.first}-"
                        f"{shot.last}).")
    folder = history_dir(project)
    writes: dict[str, bytes] = {}
    exemplars = []
    for e in job.exemplars:
        if e.frame is None or e.frame in new:
            if e.frame is None:
                exemplars.append(e)
            continue
        source = Path(e.path)
        name = history_name(e.frame, e.sha256, source.suffix)
        if not (folder / name).is_file():
            data = _read(source)
            if hashlib.sha256(data).hexdigest() != e.sha256:
                raise FilmError(f"{source.name} changed while shot {job.index} was being prepared; render the "
                                f"shot again.")
            writes[name] = data
        exemplars.append(dataclasses.replace(e, path=str(folder / name)))
    for frame, data in sorted(new.items()):
        sha = hashlib.sha256(data).hexdigest()
        name = history_name(frame, sha, ".png")
        if not (folder / name).is_file():
            writes[name] = data
        exemplars.append(ExemplarFile(str(folder / name), frame, sha))
    pinned = sorted((e for e in exemplars if e.frame is not None), key=lambda e: e.frame)
    references = [e for e in exemplars if e.frame is None]
    if writes:
        folder.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(job, exemplars=tuple(pinned) + tuple(references)), writes


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FilmError(f"cannot read the exemplar {path} ({e.strerror or e}).") from e


def _keep_previous(project, i: int, previous) -> None:
    """Link the shot's current segment and record into segments/history/ (only the latest previous one
    is kept per shot), so `revert` can bring them back and a kill after the rename rolls back."""
    segment = project.segment_path(i)
    if not isinstance(previous, dict) or verified_sha256(segment) != previous.get("sha256"):
        return
    folder = kept_dir(project)
    stem = f"{segment.stem}-{previous['sha256'][:16]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{stem}.mp4"
        if not target.exists():
            tmp = folder / f".{stem}.partial"
            tmp.unlink(missing_ok=True)
            try:
                os.link(segment, tmp)          # no copy: the rename that follows leaves this name the old file
            except OSError:
                shutil.copyfile(segment, tmp)
            os.replace(tmp, target)
        write_json(folder / f"{stem}.json", previous, f"shot {i}'s previous record")
    except OSError as e:
        raise disk_error(e, folder / f"{stem}.mp4", f"shot {i}'s previous segment") from e
    fsync_dir(folder)


def kept_records(project, i: int) -> list[tuple[dict, Path]]:
    """Shot i's previous records and segments in segments/history/, newest first."""
    stem = project.segment_path(i).stem
    found = []
    for path in kept_dir(project).glob(f"{stem}-*.json") if kept_dir(project).is_dir() else ():
        try:
            record = read_json(path, "a previous record")
        except FilmError:
            continue
        segment = path.with_suffix(".mp4")
        if segment.is_file():
            found.append((path.stat().st_mtime_ns, record, segment))
    return [(record, segment) for _, record, segment in sorted(found, key=lambda x: -x[0])]


def _prune_kept(project, i: int, keep_sha: str | None) -> None:
    """Drop kept segments of shot i other than the one of `keep_sha` (the commit just before this one)."""
    stem = project.segment_path(i).stem
    folder = kept_dir(project)
    if not folder.is_dir():
        return
    for path in folder.glob(f"{stem}-*"):
        if keep_sha is None or not path.name.startswith(f"{stem}-{keep_sha[:16]}"):
            path.unlink(missing_ok=True)


def recover(project, i: int) -> None:
    """Finish or undo what a killed commit of shot i left (call holding the shot's lock): past the
    commit point roll forward (exemplars and settings made current), before it roll back (the previous
    segment back in place, staged exemplars nobody uses removed); partial files are deleted."""
    path = journal_path(project, i)
    remove_partials(project, i)
    if not path.is_file():
        return
    try:
        journal = read_json(path, f"shot {i}'s journal")
    except FilmError:
        path.unlink(missing_ok=True)
        return
    record = record_of(project, i)
    if isinstance(record, dict) and record is not UNREADABLE and record.get("fingerprint") == journal.get(
            "fingerprint"):
        log.info("shot %d: completing a commit a killed process left", i)
        _roll_forward(project, i, journal)
    else:
        log.info("shot %d: undoing a commit a killed process left", i)
        _roll_back(project, i, journal)


def _roll_forward(project, i: int, journal: dict) -> None:
    promote_exemplars(project, i, [tuple(p) for p in journal["pinned"]])
    if journal.get("settings") is not None:
        project.remember_settings(FilmSettings.from_json(journal["settings"]), journal["checkpoint_sha256"])
    if journal.get("rendered"):
        _prune_kept(project, i, journal.get("previous_sha256"))
    journal_path(project, i).unlink(missing_ok=True)
    fsync_dir(journal_path(project, i).parent)


def _roll_back(project, i: int, journal: dict) -> None:
    record = record_of(project, i)
    segment = project.segment_path(i)
    if isinstance(record, dict) and record is not UNREADABLE and verified_sha256(segment) != record.get("sha256"):
        for kept_record, kept_segment in kept_records(project, i):
            if kept_record.get("sha256") == record.get("sha256") and verified_sha256(kept_segment) == record["sha256"]:
                tmp = segment.with_name(f"{segment.stem}.partial-restore{segment.suffix}")
                shutil.copyfile(kept_segment, tmp)
                os.replace(tmp, segment)
                fsync_dir(segment.parent)
                log.info("shot %d: its previous segment was put back", i)
                break
    used = {Path(e["path"]).name for e in (record.get("job", {}).get("exemplars", [])
                                          if isinstance(record, dict) and record is not UNREADABLE else [])}
    for name in journal.get("created", []):
        if name not in used:
            (history_dir(project) / name).unlink(missing_ok=True)
    journal_path(project, i).unlink(missing_ok=True)


def working_exemplars(project, frame: int) -> list[Path]:
    """The files in exemplars/ pinned to `frame` (any image suffix)."""
    from .project import IMAGE_SUFFIXES

    folder = project.dir / "exemplars"
    return [p for p in folder.glob(f"*{frame}.*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and p.stem.isdigit() and int(p.stem) == frame]


def promote_exemplars(project, i: int, pinned: list[tuple[int, str, str]]) -> None:
    """Make exemplars/ hold exactly `pinned` [(frame, sha256, history name)] for those frames; a file it
    replaces is copied into history first (so nothing a user put there is lost)."""
    folder = history_dir(project)
    for frame, sha, name in pinned:
        source = folder / name
        current = working_exemplars(project, frame)
        if len(current) == 1 and verified_sha256(current[0]) == sha:
            continue
        for old in current:
            archive(project, old, frame)
        target = project.dir / "exemplars" / f"{frame:06d}{source.suffix}"
        write_atomic(target, _read(source), f"the exemplar of frame {frame}")
        for old in current:
            if old != target:
                old.unlink(missing_ok=True)


def archive(project, path: Path, frame: int) -> Path:
    """A copy of the exemplar file `path` (pinned to `frame`) in exemplars/history/ (kept as it is)."""
    import hashlib

    data = _read(path)
    target = history_dir(project) / history_name(frame, hashlib.sha256(data).hexdigest(), path.suffix)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data, f"the earlier exemplar of frame {frame}")
    return target


def recover_all(project) -> None:
    """`recover` every shot a killed commit left a journal for (skipping shots another process holds)."""
    from .records import ProjectLocked

    stems = {p.name.removesuffix(".journal.json") for p in (project.dir / "records").glob("*.journal.json")}
    for i in range(len(project.shots)):
        if project.record_path(i).stem in stems:
            try:
                with project.shot_lock(i):
                    recover(project, i)
            except ProjectLocked:
                continue
