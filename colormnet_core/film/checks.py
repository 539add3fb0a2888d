"""What a project's name and its film.json must look like, checked before anything is read or written.

Names: one folder name that works on every OS (Windows refuses device names such as `con` or `nul.txt`
and drops a trailing '.' or space), in any script. film.json: the fields and types this version
writes; a file of another shape gets one message naming what is wrong, not a KeyError.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from ..errors import InputError
from ..shots import validate_shots
from .jobs import FilmSettings
from .source import FilmError

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in "123456789¹²³"),
                     *(f"LPT{i}" for i in "123456789¹²³")}


def check_project_name(name: str) -> str:
    """`name` stripped, if it is one plain folder name that works on every OS: letters of any script,
    digits, spaces, '.', '_', '-', up to 100, starting with a letter or digit, not ending in '.' or a
    space, not a name Windows reserves (con, nul, com1...). InputError saying what to change."""
    stripped = name.strip()
    example = "e.g. my_film or Le Mépris 1963"
    if not stripped or len(stripped) > 100 or not (stripped[0].isalnum()) or any(
            not (c.isalnum() or c in " ._-") for c in stripped) or ".." in stripped:
        raise InputError(f"project name {name!r} is not a plain folder name: use letters (any language), digits, "
                         f"spaces, '.', '_' or '-', up to 100, starting with a letter or digit; {example}.")
    check_windows_name(stripped)
    return stripped


def check_windows_name(name: str) -> None:
    """InputError for a folder name Windows cannot hold: ending in '.' or a space, or a device name
    (con, prn, aux, nul, com1-9, lpt1-9, also with an extension such as nul.txt)."""
    if name.endswith((".", " ")):
        raise InputError(f"project name {name!r} ends with {name[-1]!r}, which Windows drops from folder names; "
                         f"remove it.")
    base = unicodedata.normalize("NFKC", name.split(".")[0]).strip().upper()
    if base in _WINDOWS_RESERVED:
        raise InputError(f"project name {name!r} is a device name on Windows ({base}), which cannot be a folder "
                         f"there; choose another name, e.g. {name.split('.')[0]}_film.")


def check_shape(data: dict, path: Path) -> None:
    """FilmError unless film.json has the fields and types this version writes."""
    problems = []
    if not isinstance(data.get("source"), str):
        problems.append("'source' is not a file path")
    fingerprint = data.get("source_fingerprint")
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("bytes"), int):
        problems.append("'source_fingerprint' is not an object with 'bytes'")
    shots = data.get("shots")
    if not isinstance(shots, list) or not shots or not all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) for v in s) for s in shots):
        problems.append("'shots' is not a list of [first, last] frame pairs")
    else:
        try:
            validate_shots(shots)
        except InputError as e:
            problems.append(f"'shots' {e}")
    settings = data.get("settings")
    if settings is not None:
        try:
            FilmSettings.from_json(settings)
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
            problems.append(f"'settings' cannot be read ({type(e).__name__}: {e})")
    if settings is not None and not isinstance(data.get("checkpoint_sha256"), str):
        problems.append("'checkpoint_sha256' is not a sha256")
    if problems:
        raise FilmError(f"{path} is damaged: {'; '.join(problems)}. Restore it from a backup, or make the project "
                        f"again in a new folder (copy your exemplars over).")
