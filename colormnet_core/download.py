"""Fetching the weights (explicitly, never at import) and verifying them later.

The official checkpoint is published by the ColorMNet authors under CC BY-NC-SA 4.0. We download
it from the GitHub release (or a Hugging Face repo the user names), convert it to .safetensors
under official names and record its sha256 in a sidecar file that later loads check. CMNET2's
DINOv3 checkpoints (same licence) come from dan64/cmnet2's releases: the .pth is checked against
its published sha256 where one is known and converted to one standalone .safetensors.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import threading
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import OFFICIAL_FILENAME, OFFICIAL_URL, WEIGHTS_LICENSE, convert, sha256_file
from .checkpoint_cmnet2 import BACKBONE_DIR, BACKBONE_ZIP_URL, CMNET2_RELEASES, MissingBackboneError
from .errors import Cancelled, CheckpointError, InputError

log = logging.getLogger(__name__)

SAFETENSORS_NAME = Path(OFFICIAL_FILENAME).with_suffix(".safetensors").name
LICENSE_NOTICE = (
    f"The ColorMNet weights ({OFFICIAL_FILENAME}) are licensed {WEIGHTS_LICENSE}: "
    "https://creativecommons.org/licenses/by-nc-sa/4.0/ - no commercial use; credit the authors; share "
    "derivatives under the same licence.")

Progress = Callable[[int, int], None]   # (bytes done, bytes total or 0)
StopCheck = Callable[[], bool]          # True: stop now (e.g. the user pressed Cancel)
POLL_SECONDS = 0.25                     # longest wait before the stop check is asked again
CHUNK = 1 << 20


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
            f"{path.name} is damaged or was replaced (sha256 differs from the download record): delete it and "
            f"its .sha256 file, then download it again. Recorded {expected[:12]}..., now {actual[:12]}...; "
            f"file: {path}.")


def check_url(url: str) -> str:
    """The URL, stripped, if it is http(s) with a host; else InputError (file://, ftp://, a bare path...)."""
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InputError(
            f"Download URL must start with https:// (or http://), got {url[:80]!r}. Use the official URL "
            f"{OFFICIAL_URL}, or copy a local file into the models folder yourself.")
    return url


def _wait(worker: threading.Thread, should_stop: StopCheck | None, what: str) -> None:
    """Join `worker`, polling `should_stop` every POLL_SECONDS so that a cancel is never kept waiting."""
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if should_stop is not None and should_stop():
            raise Cancelled(f"download cancelled while {what}.")


def _open(url: str, timeout: float, should_stop: StopCheck | None):
    """urlopen in a helper thread: connecting and waiting for headers stay cancellable."""
    box: dict = {}

    def work():
        try:
            box["response"] = urllib.request.urlopen(url, timeout=timeout)   # noqa: S310 - scheme checked
        except BaseException as e:   # handed to the caller's thread below
            box["error"] = e
        if box.get("abandoned") and "response" in box:
            box["response"].close()

    worker = threading.Thread(target=work, name="colormnet-download-open", daemon=True)
    worker.start()
    try:
        _wait(worker, should_stop, "connecting")
    except Cancelled:
        box["abandoned"] = True
        if "response" in box:
            box["response"].close()
        raise
    if "error" in box:
        raise box["error"]
    return box["response"]


def _pump(response, chunks: queue.Queue) -> None:
    """Reader thread: blocking reads of `response` into `chunks`, then b"" at the end or the error."""
    try:
        while True:
            chunk = response.read1(CHUNK)
            chunks.put(chunk)
            if not chunk:
                return
    except BaseException as e:   # handed to the consuming thread
        chunks.put(e)


def _shut_down(response) -> None:
    """Wake a read blocked on `response`: shut its connection down (through a duplicate descriptor, which
    the caller's close does not touch). Closing alone would wait for the read to time out."""
    try:
        with socket.socket(fileno=os.dup(response.fileno())) as conn:
            conn.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):   # already closed or reset: nothing left to wake
        pass


def _fetch_url(url: str, target: Path, progress: Progress | None, timeout: float,
               should_stop: StopCheck | None = None) -> None:
    """Stream `url` into `target`. Every wait lasts at most POLL_SECONDS before `should_stop` is asked
    again; `timeout` seconds without a byte is a stall error.

    A helper thread does the blocking reads, so that a stalled server cannot hold a cancel back. (Polling the
    socket with select instead misses the bytes the HTTP layer buffered along with the headers.)"""
    done = 0

    def stalled() -> CheckpointError:
        return CheckpointError(
            f"Download of {url} stalled: no data for {timeout:.0f} s after {done} bytes. Try again later, or "
            f"download the file by hand into {target.parent}.")

    try:
        with _open(url, timeout, should_stop) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            chunks: queue.Queue = queue.Queue()
            reader = threading.Thread(target=_pump, args=(response, chunks), name="colormnet-download-read",
                                      daemon=True)
            reader.start()
            try:
                idle = 0.0
                while True:
                    if should_stop is not None and should_stop():
                        raise Cancelled(f"download cancelled after {done} bytes.")
                    try:
                        chunk = chunks.get(timeout=POLL_SECONDS)
                    except queue.Empty:
                        idle += POLL_SECONDS
                        if idle >= timeout:
                            raise stalled() from None
                        continue
                    if isinstance(chunk, TimeoutError):   # the socket's own timeout: the same stall
                        raise stalled() from chunk
                    if isinstance(chunk, BaseException):
                        raise chunk
                    if not chunk:
                        break
                    idle = 0.0
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            finally:
                if reader.is_alive():   # cancelled or failed with a read pending
                    _shut_down(response)
        if total and done != total:
            raise CheckpointError(f"Download of {url} stopped after {done} of {total} bytes; try again.")
    except OSError as e:   # URLError, HTTPError, resets
        raise CheckpointError(
            f"Cannot download {url} ({e}). Check the connection and the URL, or download the file by hand "
            f"and put it in {target.parent}.") from e


def download_official(
    dest_dir: str | Path,
    *,
    accept_license: bool,
    url: str = OFFICIAL_URL,
    hf_repo_id: str | None = None,
    hf_filename: str = OFFICIAL_FILENAME,
    progress: Progress | None = None,
    timeout: float = 60.0,
    should_stop: StopCheck | None = None,
) -> Path:
    """Download the official checkpoint into dest_dir as .safetensors (+ .sha256); returns its path.

    url: http(s) only (GitHub release by default); hf_repo_id: download from that Hugging Face repo
    instead (None: use url; "" is an error). A file already there (and matching its recorded
    sha256) is reused without network access. should_stop() is polled at least every second while
    connecting and downloading; True raises Cancelled and removes the partial file. timeout:
    seconds without data before the download counts as stalled.
    """
    if not accept_license:
        raise InputError(f"{LICENSE_NOTICE} Accept the licence to download the weights.")
    if hf_repo_id is not None:
        hf_repo_id = hf_repo_id.strip()
        if not hf_repo_id:
            raise InputError("source is huggingface but hf_repo_id is empty: enter the repo as owner/name, or "
                             "switch source to github_release to use the URL.")
    else:
        url = check_url(url)
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
                raise CheckpointError(f"Cannot download {hf_filename} from the Hugging Face repo {hf_repo_id}: "
                                      f"check the repo id, file name and connection "
                                      f"({type(e).__name__}: {e}).") from e
            shutil.copyfile(cached, raw)
        else:
            _fetch_url(url, raw, progress, timeout, should_stop)
        _, sha_out = convert(raw, target, force=True)
        sidecar(target).write_text(f"{sha_out}  {target.name}\nsource {hf_repo_id or url}\n{LICENSE_NOTICE}\n")
    finally:
        raw.unlink(missing_ok=True)
    return target


def default_weights_dir() -> Path:
    """Where the command line keeps downloaded weights: $COLORMNET_HOME, else ~/.cache/colormnet."""
    import os

    return Path(os.environ.get("COLORMNET_HOME") or Path.home() / ".cache" / "colormnet")


def find_checkpoint(explicit: str | Path | None = None) -> Path:
    """The checkpoint to use: `explicit` if given (it must exist), else the official weights in
    `default_weights_dir()` (.safetensors from `python -m colormnet_core download`, or the .pth put there
    by hand). CheckpointError saying how to get them when there are none (nothing is downloaded here)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}. Pass the path of {OFFICIAL_FILENAME} (or its "
                                  f".safetensors), or leave --checkpoint out to use the downloaded weights.")
        return path
    folder = default_weights_dir()
    for name in (SAFETENSORS_NAME, OFFICIAL_FILENAME):
        if (folder / name).is_file():
            return folder / name
    cmnet2 = sorted(folder.glob("DINOv3FeatureV6_LocalAtten_p*.safetensors"), reverse=True)
    if cmnet2:   # only CMNET2 weights were downloaded: the newest release
        return cmnet2[0]
    raise CheckpointError(
        f"no ColorMNet checkpoint found in {folder}. Download the official weights once with "
        f"`python -m colormnet_core download --accept-license` (needs a network connection; licence "
        f"{WEIGHTS_LICENSE}), or put {OFFICIAL_FILENAME} there yourself ({OFFICIAL_URL}), or pass --checkpoint PATH.")


@dataclass(frozen=True)
class ReleaseFile:
    """One downloadable file: its URL, and its sha256 and size where published (None: not known; the
    sha256 of what was downloaded is then recorded in the sidecar and checked on every later load)."""

    url: str
    sha256: str | None = None
    size: int | None = None


# CMNET2's DINOv3 checkpoints (dan64/cmnet2 README). p374099's and the backbone zip's sha256 and sizes
# are the ones HAVC's installer pins, checked there against GitHub's release digests; p374099 is on
# the v1.3.0 release (the v1.2.0 link in some READMEs points at a missing asset).
CMNET2_CHECKPOINTS: dict[str, ReleaseFile] = {
    "p374099": ReleaseFile(f"{CMNET2_RELEASES}/download/v1.3.0/DINOv3FeatureV6_LocalAtten_p374099.pth",
                           "ccb635feeba003b63e9aa7d226e7de09ff0da3824f2b6709cc1b1aa163cad312", 758716232),
    "p372402": ReleaseFile(f"{CMNET2_RELEASES}/download/v1.2.0/DINOv3FeatureV6_LocalAtten_p372402.pth"),
    "p369412": ReleaseFile(f"{CMNET2_RELEASES}/download/v1.1.0/DINOv3FeatureV6_LocalAtten_p369412.pth"),
}
CMNET2_BACKBONE = ReleaseFile(BACKBONE_ZIP_URL, "9a8eecd00d326552f78df733c322868d161246c015ea10ceaee3d3036c7f61b2",
                              318219242)
CMNET2_LICENSE_NOTICE = (
    "CMNET2's DINOv3 checkpoints are fine-tuned from the ColorMNet weights and carry their licence, "
    f"{WEIGHTS_LICENSE}: https://creativecommons.org/licenses/by-nc-sa/4.0/ - no commercial use; credit the "
    "ColorMNet authors and CMNET2 (dan64); share derivatives under the same licence. The DINOv3 backbone "
    "inside them also falls under Meta's DINOv3 licence.")
MODEL_CHOICES = ("official", *(f"cmnet2-dinov3-{r}" for r in CMNET2_CHECKPOINTS))


def cmnet2_safetensors_name(release: str) -> str:
    return f"DINOv3FeatureV6_LocalAtten_{release}.safetensors"


def _check_sha(path: Path, expected: str | None, url: str) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise CheckpointError(
            f"{url} arrived with sha256 {actual[:12]}..., not the published {expected[:12]}...: the download is "
            f"damaged or the release changed. Nothing was kept; try again, or check {CMNET2_RELEASES}.")
    return actual


def _extract_backbone(archive: Path, dest_dir: Path) -> None:
    """Unpack dinov3-vitb16.zip's folder into dest_dir/dinov3-vitb16 (via a temporary folder and a
    rename; only that folder's files, never a path outside it)."""
    final = dest_dir / BACKBONE_DIR
    tmp = dest_dir / f".partial-{BACKBONE_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or ".." in parts or Path(info.filename).is_absolute():
                    continue
                inner = parts[1:] if parts and parts[0] == BACKBONE_DIR else parts
                if len(inner) != 1:
                    continue
                with zf.open(info) as src, open(tmp / inner[0], "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        if not (tmp / "config.json").is_file() or not (tmp / "model.safetensors").is_file():
            raise CheckpointError(f"{archive.name} holds no {BACKBONE_DIR}/config.json and model.safetensors; "
                                  f"download it again from {CMNET2_BACKBONE.url}.")
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{archive.name} is not a readable zip ({e}); download it again.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_cmnet2(
    dest_dir: str | Path,
    *,
    accept_license: bool,
    release: str = "p374099",
    url: str | None = None,
    sha256: str | None = None,
    backbone_url: str | None = None,
    backbone_sha256: str | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
    should_stop: StopCheck | None = None,
) -> Path:
    """Download one of CMNET2's DINOv3 checkpoints into dest_dir as one .safetensors (whole network,
    backbone included, CMNET2's names) + .sha256; returns its path.

    The published sha256 (where known) is checked before anything is kept. The backbone folder
    (dinov3-vitb16.zip, 318 MB) is fetched only when the .pth lacks backbone tensors (released ones
    hold them all). url/sha256/backbone_url/backbone_sha256 override the catalogue (mirrors, tests).
    A file already there (and matching its recorded sha256) is reused without network access."""
    if not accept_license:
        raise InputError(f"{CMNET2_LICENSE_NOTICE} Accept the licence to download the weights.")
    if release not in CMNET2_CHECKPOINTS:
        raise InputError(f"unknown CMNET2 release {release!r}: choose one of {', '.join(CMNET2_CHECKPOINTS)}.")
    entry = CMNET2_CHECKPOINTS[release]
    url = check_url(url or entry.url)
    expected = sha256 if url != entry.url or sha256 else entry.sha256
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / cmnet2_safetensors_name(release)
    if target.exists():
        verify(target)
        return target
    log.info(CMNET2_LICENSE_NOTICE)
    raw = dest_dir / f".partial-{Path(url.split('?')[0]).name or 'checkpoint.pth'}"
    archive = dest_dir / ".partial-dinov3-vitb16.zip"
    try:
        _fetch_url(url, raw, progress, timeout, should_stop)
        sha_in = _check_sha(raw, expected, url)
        try:
            _, sha_out = convert(raw, target, force=True)
        except MissingBackboneError:
            zip_url = check_url(backbone_url or CMNET2_BACKBONE.url)
            zip_sha = backbone_sha256 if backbone_url or backbone_sha256 else CMNET2_BACKBONE.sha256
            _fetch_url(zip_url, archive, progress, timeout, should_stop)
            _check_sha(archive, zip_sha, zip_url)
            _extract_backbone(archive, dest_dir)
            _, sha_out = convert(raw, target, force=True)
        sidecar(target).write_text(f"{sha_out}  {target.name}\nsource {url} sha256 {sha_in}"
                                   f"{'' if expected else ' (no published sha256; recorded at download)'}\n"
                                   f"{CMNET2_LICENSE_NOTICE}\n")
    finally:
        raw.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
    return target
