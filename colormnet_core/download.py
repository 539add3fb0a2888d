"""Fetching the official weights (explicitly, never at import) and verifying them later.

The official checkpoint is published by the ColorMNet authors under CC BY-NC-SA 4.0. We download
it from the GitHub release (or a Hugging Face repo the user names), convert it to .safetensors
under official names and record its sha256 in a sidecar file that later loads check.
"""

from __future__ import annotations

import logging
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .checkpoint import OFFICIAL_FILENAME, OFFICIAL_URL, WEIGHTS_LICENSE, convert, sha256_file
from .errors import CheckpointError, InputError

log = logging.getLogger(__name__)

SAFETENSORS_NAME = Path(OFFICIAL_FILENAME).with_suffix(".safetensors").name
LICENSE_NOTICE = (
    f"The ColorMNet weights ({OFFICIAL_FILENAME}) are licensed {WEIGHTS_LICENSE}: "
    "https://creativecommons.org/licenses/by-nc-sa/4.0/ - no commercial use; credit the authors; share "
    "derivatives under the same licence.")

Progress = Callable[[int, int], None]   # (bytes done, bytes total or 0)


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(path: str | Path) -> None:
    """If a sha256 was recorded at download, the file must still match it."""
    path = Path(path)
    record = sidecar(path)
    if not record.exists():
        return
    expected = record.read_text().split()[0]
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"{path} does not match the sha256 recorded when it was downloaded ({expected[:12]}..., now "
            f"{actual[:12]}...): the file is damaged or was replaced. Delete it and {record.name}, then "
            f"download it again.")


def _fetch_url(url: str, target: Path, progress: Progress | None, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise CheckpointError(f"the download of {url} stopped after {done} of {total} bytes; try again.")
    except OSError as e:   # URLError, HTTPError, timeouts
        raise CheckpointError(
            f"cannot download {url} ({e}). Check the connection, or download the file by hand and put it "
            f"in {target.parent}.") from e


def download_official(
    dest_dir: str | Path,
    *,
    accept_license: bool,
    url: str = OFFICIAL_URL,
    hf_repo_id: str | None = None,
    hf_filename: str = OFFICIAL_FILENAME,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the official checkpoint into dest_dir as .safetensors (+ .sha256); returns its path.

    A file already there (and matching its recorded sha256) is reused without network access.
    """
    if not accept_license:
        raise InputError(f"{LICENSE_NOTICE} Accept the licence to download the weights.")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / SAFETENSORS_NAME
    if target.exists():
        verify(target)
        return target
    log.info(LICENSE_NOTICE)
    source_name = Path(hf_filename if hf_repo_id else url.rsplit("/", 1)[-1].split("?")[0]).name
    raw = dest_dir / f".partial-{source_name}"   # keeps the suffix, which says how to read it
    try:
        if hf_repo_id:
            from huggingface_hub import hf_hub_download

            try:
                cached = hf_hub_download(repo_id=hf_repo_id, filename=hf_filename)
            except Exception as e:   # the hub raises many types: offline, 404, auth
                raise CheckpointError(f"cannot download {hf_filename} from the Hugging Face repo {hf_repo_id} "
                                      f"({type(e).__name__}: {e}).") from e
            shutil.copyfile(cached, raw)
        else:
            _fetch_url(url, raw, progress, timeout)
        _, sha_out = convert(raw, target, force=True)
        sidecar(target).write_text(f"{sha_out}  {target.name}\nsource {hf_repo_id or url}\n{LICENSE_NOTICE}\n")
    finally:
        raw.unlink(missing_ok=True)
    return target
