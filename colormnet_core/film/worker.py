"""What runs inside a Ray worker process: one shot job, with the network cached per process.

`render_shot_task` is the body of the Ray task that `distributed.py` submits (wrapped there with
`ray.remote`, so this module never imports Ray at import time and can be tested without it). A task
gets a `ShotJob` as JSON (the whole description of the shot) and a `TaskSpec` as a plain dict:

* where the segment goes. With `partial` set and the driver's probe file visible under the same
  path with the same token, the project folder is shared (a NAS, or one machine): the task writes the
  segment there under the driver-chosen temporary name and returns only its sha256 and frame count.
  Otherwise it renders into a local temporary file and returns the bytes; the driver writes them. The
  task never touches records: the driver is their only writer.
* where the inputs come from. The source, the exemplars and the checkpoint are read at their paths,
  or, when the driver staged them (no shared folder), fetched once per node from Ray's object store
  into a local cache named by their fingerprint.

A task may run twice (Ray retries it after a lost worker or node), so it only ever writes its own
temporary file and is deterministic: the same job gives the same bytes (CPU, float32).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint import load_model, sha256_file
from ..errors import CheckpointError, InputError
from .jobs import ShotJob
from .render import render_job

log = logging.getLogger(__name__)

# One network per worker process and checkpoint: a worker renders many shots, the model loads once.
_NETWORKS: dict[tuple[str, str], torch.nn.Module] = {}
_LOADS = 0


def cached_network(checkpoint: Path, sha256: str, device: torch.device) -> torch.nn.Module:
    """The network for `sha256`, loaded from `checkpoint` on the first call in this process.

    CheckpointError when the file's sha256 is not the job's: every node must render with the very
    weights the job (and its fingerprint) names."""
    global _LOADS
    key = (sha256, str(device))
    network = _NETWORKS.get(key)
    if network is None:
        if not checkpoint.is_file():
            raise CheckpointError(
                f"checkpoint {checkpoint} not found on node {socket.gethostname()}. Put the same file at the "
                f"same path on every node, or render with --shared-folder no to ship it from the driver.")
        actual = sha256_file(checkpoint)
        if actual != sha256:
            raise CheckpointError(
                f"{checkpoint} on node {socket.gethostname()} is not the driver's checkpoint (sha256 "
                f"{actual[:12]}..., expected {sha256[:12]}...). Copy the driver's file there, or render with "
                f"--shared-folder no to ship it from the driver.")
        network = load_model(checkpoint, device=device)
        _NETWORKS.clear()   # one checkpoint at a time: a worker that switched films frees the old one
        _NETWORKS[key] = network
        _LOADS += 1
    return network


def _cache_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / f"colormnet-ray-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fetch_staged(staged: dict) -> Path:
    """A local copy of a file the driver put in the object store: {"key", "suffix", "size", "ref": [ref]}.

    The copy is named by the key (a sha256 or the source fingerprint), so a node fetches each file
    once; it is written under a temporary name and renamed, so a killed task leaves no torn copy."""
    import ray

    target = _cache_dir() / f"{staged['key']}{staged['suffix']}"
    if target.is_file() and target.stat().st_size == staged["size"]:
        return target
    data = ray.get(staged["ref"][0])   # nested in a list so Ray hands us the ref, not a copy per task
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def _localized(job: ShotJob, staged: dict) -> ShotJob:
    """The job with the source and exemplars replaced by this node's staged copies (same bytes)."""
    if not staged:
        return job
    source = fetch_staged(staged["source"]) if "source" in staged else Path(job.source)
    exemplars = tuple(dataclasses.replace(e, path=str(fetch_staged(staged["exemplars"][e.sha256])))
                      if e.sha256 in staged.get("exemplars", {}) else e for e in job.exemplars)
    return dataclasses.replace(job, source=str(source), exemplars=exemplars)


def folder_is_shared(probe: dict | None) -> bool:
    """True when the driver's probe file is visible here with the driver's token (same folder)."""
    if not probe:
        return False
    try:
        return Path(probe["path"]).read_text() == probe["token"]
    except OSError:
        return False


def render_shot_task(job_json: dict, spec: dict) -> dict:
    """Render one shot job (see the module docstring); returns a JSON-able dict for the driver:
    index, shared (bool), path (shared) or data (bytes), sha256, frames, bytes, host, node, pid,
    loads (networks this process has loaded so far), seconds."""
    started = time.perf_counter()
    job = ShotJob.from_json(job_json)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device") or "cpu")
    staged = spec.get("staged") or {}
    checkpoint = fetch_staged(staged["checkpoint"]) if "checkpoint" in staged else Path(spec["checkpoint"])
    network = cached_network(checkpoint, job.checkpoint_sha256, device)
    local_job = _localized(job, staged)
    if not Path(local_job.source).exists():
        raise InputError(
            f"the film's source {local_job.source} is not readable on node {socket.gethostname()}. Put it at "
            f"the same path on every node (a shared folder), or render with --shared-folder no to ship it.")
    shared = spec.get("partial") is not None and folder_is_shared(spec.get("probe"))
    _trace(job.index)
    if shared:
        # This attempt's own name: a retry never writes into a file a lost attempt may still hold.
        partial = Path(spec["partial"])
        out_path = partial.with_name(f"{partial.stem}.a{os.getpid()}-{secrets.token_hex(3)}{partial.suffix}")
        result = render_job(local_job, network, out_path=out_path, device=device,
                            key_batch=spec.get("key_batch", 1))
        payload = {"path": str(result.path)}
    else:
        with tempfile.TemporaryDirectory(prefix="colormnet-shot-") as tmp:
            result = render_job(local_job, network, out_path=Path(tmp) / f"{job.first:06d}.mp4", device=device,
                                key_batch=spec.get("key_batch", 1))
            payload = {"data": result.path.read_bytes()}
    return {**payload, "index": job.index, "shared": shared, "sha256": result.sha256, "frames": result.frames,
            "bytes": result.bytes, "host": socket.gethostname(), "node": _node_id(), "pid": os.getpid(),
            "loads": _LOADS, "seconds": time.perf_counter() - started}


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:   # outside a Ray worker (direct calls in tests)
        return ""


def _trace(index: int) -> None:
    """If $COLORMNET_RAY_TRACE_DIR is set (diagnostics, tests), note which node and process started
    which shot there, as an empty file `<shot>-<node id>-<pid>`."""
    folder = os.environ.get("COLORMNET_RAY_TRACE_DIR")
    if folder:
        Path(folder, f"{index}-{_node_id()}-{os.getpid()}").touch()
