"""Crash-safe files and locks for film projects.

Write order (SQLite's atomic commit): the new content goes to a temporary name in the same folder,
is flushed and fsynced, renamed over the final name, and the folder is fsynced, so after a crash at
any moment the final name holds either the old content or the new, never a mix. A shot's segment
is committed before its record, so a record never points at a segment that is not all there.

Locks are advisory OS locks (flock / msvcrt) on files under locks/: the OS drops them when the
process dies, even by kill -9, so no stale lock outlives a crash. The lock file says who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .source import FilmError


class ProjectLocked(FilmError):
    """Another process holds the lock (a render of the project, or of this shot)."""


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once (temporary file, fsync, rename, fsync of the folder)."""
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FilmError(f"cannot read {what} {path} ({e}); restore it from a backup or run `film init` "
                        f"again in a new folder.") from e


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) or raise `ProjectLocked` at once, naming
    the holder. Never waits: see `FilmProject.render_lock` for why."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:      # closing the descriptor releases the lock
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ProjectLocked(f"{what} is in use by {holder}. Wait for it to finish or stop it; a killed process "
                                f"frees the lock by itself.")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield


def _try_lock(handle) -> bool:
    if os.name == "nt":
        import msvcrt

        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def record_of(project, i: int) -> dict | None:
    """Shot i's record, or None when there is none (or it is unreadable: then the shot is redone)."""
    path = project.record_path(i)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def segment_is_done(project, i: int, fingerprint: str) -> bool:
    """Whether shot i's segment is there, complete, and made from `fingerprint`: its record matches
    and the file has the recorded size (a truncated or replaced file does not count; `assemble`
    checks the sha256 too)."""
    record = record_of(project, i)
    if record is None or record.get("fingerprint") != fingerprint:
        return False
    segment = project.segment_path(i)
    return segment.is_file() and segment.stat().st_size == record.get("bytes")


def commit_segment(project, job, partial: Path, *, sha256: str, frames: int) -> dict:
    """Make `partial` shot `job.index`'s segment: check it, rename it into place, then write the record.
    A crash before the rename leaves the old state; between rename and record, a segment whose record
    does not match (redone next time); after, the new state."""
    from .render import count_packets, sha256_of

    if frames != job.frames:
        raise FilmError(f"shot {job.index}: the rendered segment has {frames} frames, the shot {job.frames}; "
                        f"it was not recorded.")
    if sha256_of(partial) != sha256 or count_packets(partial) != job.frames:
        raise FilmError(f"shot {job.index}: {partial.name} does not hold what was rendered (sha256 or frame count "
                        f"differs; copied incompletely?); it was not recorded. Render the shot again.")
    final = project.segment_path(job.index)
    size = partial.stat().st_size
    os.replace(partial, final)
    fsync_dir(final.parent)
    record = {"shot": job.index, "first": job.first, "last": job.last, "fingerprint": job.fingerprint,
              "segment": f"segments/{final.name}", "sha256": sha256, "frames": frames, "bytes": size,
              "rendered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job": job.to_json()}
    write_json(project.record_path(job.index), record)
    return record


def commit_bytes(project, job, data: bytes, *, sha256: str, frames: int) -> dict:
    """Commit a segment that came back as bytes (a worker without the project folder)."""
    partial = project.partial_segment_path(job)
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return commit_segment(project, job, partial, sha256=sha256, frames=frames)
    finally:
        partial.unlink(missing_ok=True)


def remove_partials(project, i: int) -> None:
    """Delete shot i's temporary segments left by a killed render (call while holding its lock)."""
    stem = project.segment_path(i).stem
    for leftover in project.segment_path(i).parent.glob(f"{stem}.partial-*"):
        leftover.unlink(missing_ok=True)
