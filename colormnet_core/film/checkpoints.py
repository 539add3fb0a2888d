"""The project's own checkpoint: which network the project renders with, and the way back.

A project made before fine-tuning existed renders with whatever `film render --checkpoint` names (by
default the downloaded weights) and judges its shots by the checkpoint its last render used. Once
`film finetune` has run, film.json also holds

    "checkpoint": {"path": "checkpoints/finetuned-1a2b3c4d.safetensors", "sha256": "...",
                   "reason": "fine-tuned from 0123456789ab: 300 steps on 12 pictures",
                   "previous": [{"path": ..., "sha256": ..., "reason": ...}, ...]}

and that checkpoint is the project's: `film render` without --checkpoint uses it, `film status`
judges every shot by it (so every shot rendered with another one is stale, with the reason above),
and `film finetune --revert` makes the previous entry current again. Paths inside the project are
stored relative to it (a project folder can be moved); others absolute.

Write order (SQLite's): the checkpoint file is written and renamed first (`training.state.export_weights`),
film.json last, atomically; a crash in between leaves the old record and an unused file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .records import read_json, write_json
from .source import FilmError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class ProjectCheckpoint:
    """One entry of the record: the file, its sha256, and why it became the project's checkpoint."""

    path: Path
    sha256: str
    reason: str = ""

    def to_json(self, project_dir: Path) -> dict:
        try:
            stored = str(self.path.resolve().relative_to(project_dir.resolve()))
        except ValueError:
            stored = str(self.path.resolve())
        return {"path": stored, "sha256": self.sha256, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict, project_dir: Path) -> ProjectCheckpoint:
        path = Path(data["path"])
        return cls(path if path.is_absolute() else project_dir / path, str(data["sha256"]), str(data.get("reason", "")))


def _entry(project) -> dict | None:
    entry = project.data.get("checkpoint")
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)):
        raise FilmError(f"{project.dir / 'film.json'} has a damaged 'checkpoint' entry; restore film.json from a "
                        f"backup, or delete the entry to render with the downloaded weights again.")
    return entry


def project_checkpoint(project) -> ProjectCheckpoint | None:
    """The project's own checkpoint, or None when it has none (it renders with --checkpoint / the download)."""
    entry = _entry(project)
    return None if entry is None else ProjectCheckpoint.from_json(entry, project.dir)


def previous_checkpoints(project) -> list[ProjectCheckpoint]:
    """Earlier project checkpoints, the most recent first (what `--revert` goes back to)."""
    entry = _entry(project) or {}
    return [ProjectCheckpoint.from_json(e, project.dir) for e in reversed(entry.get("previous") or [])]


def judged_checkpoint_sha256(project) -> str | None:
    """The sha256 that shots are judged by: the project's checkpoint, else the last render's."""
    own = project_checkpoint(project)
    return own.sha256 if own is not None else project.data.get("checkpoint_sha256")


def checkpoint_file(project) -> Path | None:
    """The project's checkpoint file for a render, checked to exist; None when the project has none."""
    own = project_checkpoint(project)
    if own is None:
        return None
    if not own.path.is_file():
        raise FilmError(f"the project's checkpoint {own.path} is missing ({own.reason or 'set by film finetune'}); "
                        f"put the file back, or go back to the previous checkpoint with `film finetune --project "
                        f"{project.dir} --revert`, or render with --checkpoint PATH.")
    return own.path


def checkpoint_reason(project, sha256: str) -> str:
    """Why the project's checkpoint is `sha256` (e.g. "fine-tuned from ..."), or "" when it is not its own."""
    own = project_checkpoint(project)
    return own.reason if own is not None and own.sha256 == sha256 else ""


def _write(project, current: ProjectCheckpoint, previous: list[dict]) -> None:
    data = read_json(project.dir / "film.json", "the project file")   # another process may have written it
    data["checkpoint"] = {**current.to_json(project.dir), "previous": previous}
    write_json(project.dir / "film.json", data, "the project file")
    project.data = data


def switch_checkpoint(project, new: ProjectCheckpoint, start: ProjectCheckpoint) -> None:
    """Make `new` the project's checkpoint; `start` (the one it replaces) becomes the way back."""
    entry = _entry(project)
    previous = list((entry or {}).get("previous") or [])
    previous.append(start.to_json(project.dir))
    _write(project, new, previous)
    log.info("project %s: checkpoint %s (%s)", project.dir, new.path.name, new.reason)


def revert_checkpoint(project) -> tuple[ProjectCheckpoint, ProjectCheckpoint]:
    """Make the previous checkpoint the project's again; returns (left, now). The file left is kept
    (its weights took time to make). FilmError when there is nothing to go back to."""
    entry = _entry(project)
    previous = list((entry or {}).get("previous") or [])
    if entry is None or not previous:
        raise FilmError(f"the project {project.dir} has no earlier checkpoint to go back to: it was never "
                        f"fine-tuned (or every fine-tune was already reverted).")
    left = ProjectCheckpoint.from_json(entry, project.dir)
    back = ProjectCheckpoint.from_json(previous.pop(), project.dir)
    if not back.path.is_file():
        raise FilmError(f"the previous checkpoint {back.path} is gone; put it back (sha256 {back.sha256[:12]}...) "
                        f"and run --revert again. Nothing was changed.")
    now = ProjectCheckpoint(back.path, back.sha256, f"reverted to {back.path.name} from {left.path.name}")
    _write(project, now, previous)
    return left, now
