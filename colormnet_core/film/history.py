"""Exemplar history: every exemplar a shot was rendered from stays in the project, and `revert` brings
the previous one back.

exemplars/history/<frame>-<sha256 prefix>.<ext> holds each pinned exemplar a commit used (and any file
that was replaced in exemplars/, by a node or by hand); segments/history/ holds the shot's previous
segment and record (one per shot). "Previous" means: the exemplars the shot's segment was made from,
when exemplars/ holds others that were never rendered (a new picture put there by hand); otherwise
the exemplars of the render before the last one. A revert whose segment still matches the current
settings and checkpoint renders nothing: the segment and record come back through `commit_shot`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .commit import archive, commit_shot, history_dir, history_name, kept_records, working_exemplars
from .jobs import ExemplarFile, FilmSettings
from .records import UNREADABLE, record_of
from .render import SegmentResult
from .source import FilmError


@dataclass(frozen=True)
class ShotHistory:
    """earlier: exemplar files in history for frames of the shot, other than those in use;
    previous_segment: whether the segment of the render before the last one is kept; uncommitted:
    exemplars/ holds pinned exemplars the shot's segment was not made from."""

    earlier: tuple[Path, ...]
    previous_segment: bool
    uncommitted: bool

    @property
    def can_revert(self) -> bool:
        return self.uncommitted or self.previous_segment

    def describe(self) -> str:
        parts = []
        if self.uncommitted:
            parts.append("new exemplar not rendered yet")
        if self.earlier:
            n = len(self.earlier)
            parts.append(f"{n} earlier exemplar{'s' if n != 1 else ''}")
        if self.can_revert:
            parts.append("`film revert` restores the previous one")
        return "; ".join(parts)


def _pinned_of_record(record) -> dict[int, tuple[str, str]]:
    """{frame: (sha256, file name)} of a record's pinned exemplars."""
    if not isinstance(record, dict) or record is UNREADABLE:
        return {}
    exemplars = record.get("job", {}).get("exemplars", [])
    return {int(e["frame"]): (e["sha256"], Path(e["path"]).name) for e in exemplars if e.get("frame") is not None}


def _pinned_now(project, i: int, files=None) -> dict[int, str]:
    return {e.frame: e.sha256 for e in project.exemplars_for(i, files) if e.frame is not None}


def shot_history(project, i: int, files=None) -> ShotHistory:
    shot = project.shots[i]
    now = _pinned_now(project, i, files)
    committed = {f: sha for f, (sha, _) in _pinned_of_record(record_of(project, i)).items()}
    folder = history_dir(project)
    earlier = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            frame, _, digest = path.stem.partition("-")
            if frame.isdigit() and shot.holds(int(frame)) and not (now.get(int(frame), "").startswith(digest)):
                earlier.append(path)
    return ShotHistory(tuple(earlier), bool(kept_records(project, i)), bool(committed) and now != committed)


@dataclass(frozen=True)
class Reverted:
    """state: the shot's state after the revert ("done", or "stale" when it must be rendered again);
    rendered_again_needed: True when the restored exemplars' segment was not kept or does not match."""

    state: str
    frames: tuple[int, ...]
    message: str


def revert_shot(project, i: int, settings: FilmSettings | None = None, checkpoint_sha256: str | None = None
                ) -> Reverted:
    """Bring back shot i's previous exemplars (see the module docstring). Settings and checkpoint:
    those to judge the segment by (default: the project's last render's; its own checkpoint when
    `film finetune` set one)."""
    from .checkpoints import judged_checkpoint_sha256
    from .plan import plan_jobs

    i = project.shot_index(i)
    settings = settings or project.settings()
    checkpoint_sha256 = checkpoint_sha256 or judged_checkpoint_sha256(project)
    if settings is None or checkpoint_sha256 is None:
        raise FilmError(f"shot {i} has never been rendered, so it has no previous exemplar to go back to.")
    record = record_of(project, i)
    now = _pinned_now(project, i)
    committed = _pinned_of_record(record)
    kept = None
    if committed and now != {f: sha for f, (sha, _) in committed.items()}:
        target = committed                          # the picture the segment was made from
    else:
        found = kept_records(project, i)
        if not found:
            raise FilmError(f"shot {i} has no earlier exemplar to go back to: it was rendered from one exemplar "
                            f"only.")
        kept = found[0]
        target = _pinned_of_record(kept[0])
    missing = [name for _, name in target.values() if not (history_dir(project) / name).is_file()]
    if missing:
        raise FilmError(f"shot {i}'s previous exemplar(s) {', '.join(missing)} are not in "
                        f"{history_dir(project)}; put the picture back into exemplars/ by hand.")
    (job,) = plan_jobs(project, settings, checkpoint_sha256, shots=[i])
    pinned = tuple(ExemplarFile(str(history_dir(project) / name), frame, sha)
                   for frame, (sha, name) in sorted(target.items()))
    job = dataclasses.replace(job, exemplars=pinned + tuple(e for e in job.exemplars if e.frame is None))
    _retire_others(project, i, set(target))
    source = kept if kept is not None and kept[0].get("fingerprint") == job.fingerprint else None

    def restore(staged, partial: Path) -> SegmentResult:
        if source is None:
            raise _NotKept()
        record_kept, segment = source
        import shutil

        shutil.copyfile(segment, partial)
        return SegmentResult(partial, record_kept["sha256"], int(record_kept["frames"]),
                             partial.stat().st_size)

    frames = tuple(sorted(target))
    try:
        commit_shot(project, job, restore, remember_settings=False)
    except _NotKept:
        _put_back(project, i, target)
        return Reverted("stale", frames, f"shot {i}: exemplar(s) of frame(s) {list(frames)} restored; its segment "
                                         f"was made with other settings or is no longer kept, so render the shot "
                                         f"again.")
    return Reverted("done", frames, f"shot {i}: exemplar(s) of frame(s) {list(frames)} restored with their "
                                    f"segment; nothing was rendered.")


class _NotKept(Exception):
    """The previous segment is not kept or does not match: only the exemplars are restored."""


def _retire_others(project, i: int, keep: set[int]) -> None:
    """Move the shot's pinned exemplars at frames not in `keep` into history (a revert removes them)."""
    shot = project.shots[i]
    with project.shot_lock(i):
        for e in project.exemplars_for(i):
            if e.frame is not None and e.frame not in keep and shot.holds(e.frame):
                for path in working_exemplars(project, e.frame):
                    archive(project, path, e.frame)
                    path.unlink(missing_ok=True)


def _put_back(project, i: int, target: dict[int, tuple[str, str]]) -> None:
    from .commit import promote_exemplars

    with project.shot_lock(i):
        promote_exemplars(project, i, [(f, sha, name) for f, (sha, name) in target.items()])


__all__ = ["Reverted", "ShotHistory", "history_name", "revert_shot", "shot_history"]
