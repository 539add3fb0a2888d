"""Crash-safe files and locks for film projects.

Write order (SQLite's atomic commit): the new content goes to a temporary name in the same folder,
is flushed and fsynced, renamed over the final name, and the folder is fsynced, so after a crash at
any moment the final name holds either the old content or the new, never a mix. A shot's segment
is committed before its record, so a record never points at a segment that is not all there.

Locks are advisory OS locks (flock / msvcrt) on files under locks/: the OS drops them when the
process dies, even by kill -9, so no stale lock outlives a crash. The lock file says who holds it.

A segment counts as done only when its record matches the job and the file's sha256 is the
recorded one, which is what `assemble` checks too; the sha256 is computed once per process and
file version (size, mtime, ctime, inode), so a status of a long film reads its segments once.
OSErrors of the disk (full, read-only, no permission) become `FilmError`s that name the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

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


def disk_error(e: OSError, path: Path, what: str) -> FilmError:
    """A FilmError for an OSError while writing `what` at `path`, saying what to do (the caller raises it
    `from e`). Full disk, read-only file system and missing permission get their own advice."""
    where = path.parent
    if e.errno == errno.ENOSPC or e.errno == getattr(errno, "EDQUOT", -1):
        advice = f"the disk holding {where} is full. Free space there and run again"
    elif e.errno == errno.EROFS:
        advice = (f"{where} is on a read-only file system. Copy the project to a writable folder (or mount it "
                  f"writable) and run again")
    elif e.errno in (errno.EACCES, errno.EPERM):
        advice = f"you may not write in {where}. Give yourself write permission there and run again"
    else:
        advice = f"{e.strerror or e}. Check the disk and run again"
    return FilmError(f"cannot write {what} ({path.name}): {advice}; nothing that was already saved was lost.")


def write_atomic(path: Path, data: bytes, what: str | None = None) -> None:
    """Replace `path` by `data` all at once (temporary file, fsync, rename, fsync of the folder).
    FilmError (see `disk_error`) when the disk refuses; the old content is then untouched."""
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise disk_error(e, path, what or path.name) from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: dict, what: str | None = None) -> None:
    write_atomic(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode(), what)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; FilmError when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FilmError(f"cannot read {what} {path} ({e}); restore it from a backup, or make the project again "
                        f"in a new folder.") from e
    if not isinstance(data, dict):
        raise FilmError(f"{what} {path} holds a JSON {type(data).__name__}, not an object; restore it from a "
                        f"backup, or make the project again in a new folder.")
    return data


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) or raise `ProjectLocked` at once, naming
    the holder. Never waits: see `FilmProject.render_lock` for why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - the with below closes it; closing releases the lock
    except OSError as e:
        raise disk_error(e, path, f"the lock of {what}") from e
    with handle:
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


UNREADABLE = {"unreadable": True}   # what `record_of` gives for a record that exists but cannot be read


def record_of(project, i: int) -> dict | None:
    """Shot i's record; None when there is none, `UNREADABLE` when it exists but cannot be read as a
    record (then the shot is redone, and `status` says why)."""
    path = project.record_path(i)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return UNREADABLE
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        return UNREADABLE
    return record


_VERIFIED: dict[tuple, str] = {}    # (path, size, mtime_ns, ctime_ns, inode) -> sha256, per process


def verified_sha256(path: Path) -> str | None:
    """sha256 of `path`, read once per process and file version; None when the file is missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    digest = _VERIFIED.get(key)
    if digest is None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return None
        digest = _VERIFIED[key] = h.hexdigest()
    return digest


SegmentState = Literal["done", "stale", "damaged", "pending"]


def segment_state(project, i: int, fingerprint: str) -> SegmentState:
    """Shot i against the job `fingerprint`: `done` (record matches, and the segment is there with the
    recorded sha256: what `assemble` checks), `stale` (a record made from something else), `damaged`
    (the record matches but the segment is missing or changed, or the record is unreadable),
    `pending` (no record)."""
    record = record_of(project, i)
    if record is None:
        return "pending"
    if record is UNREADABLE:
        return "damaged"
    if record.get("fingerprint") != fingerprint:
        return "stale"
    return "done" if verified_sha256(project.segment_path(i)) == record.get("sha256") else "damaged"


def segment_is_done(project, i: int, fingerprint: str) -> bool:
    return segment_state(project, i, fingerprint) == "done"


def verify_segment(job, partial: Path, *, sha256: str, frames: int) -> None:
    """FilmError unless `partial` holds the job's frame count and the sha256 the renderer reported."""
    from .render import count_packets, sha256_of

    if frames != job.frames:
        raise FilmError(f"shot {job.index}: the rendered segment has {frames} frames, the shot {job.frames}; "
                        f"it was not recorded.")
    if sha256_of(partial) != sha256 or count_packets(partial) != job.frames:
        raise FilmError(f"shot {job.index}: {partial.name} does not hold what was rendered (sha256 or frame count "
                        f"differs; copied incompletely?); it was not recorded. Render the shot again.")


def rename_segment(project, job, partial: Path, *, sha256: str, frames: int) -> dict:
    """Rename the verified `partial` over shot `job.index`'s segment; returns the record to write (the
    caller writes it: commit.py's order)."""
    final = project.segment_path(job.index)
    size = partial.stat().st_size
    os.replace(partial, final)
    fsync_dir(final.parent)
    return segment_record(job, final, sha256, frames, size)


def segment_record(job, final: Path, sha256: str, frames: int, size: int) -> dict:
    return {"shot": job.index, "first": job.first, "last": job.last, "fingerprint": job.fingerprint,
            "segment": f"segments/{final.name}", "sha256": sha256, "frames": frames, "bytes": size,
            "rendered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job": job.to_json()}


def remove_partials(project, i: int) -> None:
    """Delete shot i's temporary segments left by a killed render (call while holding its lock)."""
    stem = project.segment_path(i).stem
    for leftover in project.segment_path(i).parent.glob(f"{stem}.partial-*"):
        leftover.unlink(missing_ok=True)
