"""Training checkpoints (resumable state) and inference exports (.safetensors + sha256).

A training checkpoint holds everything a run needs to go on as if it had never stopped: the
network, the optimizer, the LR scheduler, the GradScaler, the Python / NumPy / torch (and CUDA)
generator states and the data position (stage, step, epoch, items consumed in the epoch). It is
written as the film records are (`film/records.py`): to a temporary name in the same folder,
flushed and fsynced, renamed over `last.ckpt`, and the folder fsynced - a kill at any moment leaves
the previous checkpoint or the new one, never a torn file.

Exports are what inference loads: the network's weights as .safetensors under the official names
(the Model Loader, the CLI, film projects and Ray workers read them exactly like the official
release), with a `.sha256` sidecar like `download` writes.
"""

from __future__ import annotations

import os
import pickle
import random
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import WEIGHTS_LICENSE, save_safetensors, sha256_file
from ..errors import CheckpointError

STATE_FORMAT = 1
LAST = "last.ckpt"


@dataclass(frozen=True)
class DataPosition:
    """Where the run stands: stage index, optimizer steps done in that stage, the epoch being read,
    the global items of it already consumed, and the data phase (max_skip, fine-tune) it was made for."""

    stage: int = 0
    step: int = 0
    epoch: int = 0
    consumed: int = 0
    max_skip: int = 0
    finetune: bool = False


def rng_states() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a tensor: the checkpoint then holds only what torch's weights_only loader reads
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(folder: Path, *, network: nn.Module, optimizer, scheduler, scaler, position: DataPosition,
                        run: dict) -> Path:
    """Write the resumable state to folder/last.ckpt atomically; returns its path."""
    from ..film.records import fsync_dir, fsync_file

    state = {
        "format": STATE_FORMAT,
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_states(),
        "position": asdict(position),
        "run": run,
    }
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / LAST
    partial = folder / f".{LAST}.partial-{uuid.uuid4().hex[:8]}"
    try:
        torch.save(state, partial)
        fsync_file(partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
    return target


def load_training_state(folder: Path) -> dict:
    """The state `save_training_state` wrote (tensors on the CPU). CheckpointError with advice when it
    is missing or unreadable."""
    path = folder / LAST
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {folder}: it has no {LAST}. Start the run without --resume "
                              f"(or point --out at the folder of the run to continue).")
    try:
        # Tensors, numbers, strings and containers only (the generators' states included), so torch's
        # safe loader reads it: a training folder from elsewhere cannot run code here.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"cannot read the training checkpoint {path} ({type(e).__name__}: {e}); it is "
                              f"damaged. Delete it to start over from the last export.") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of this version (format "
                              f"{state.get('format') if isinstance(state, dict) else '?'}, expected {STATE_FORMAT}).")
    return state


def export_weights(network: nn.Module, path: Path, *, metadata: dict[str, str] | None = None,
                   source: str = "trained by python -m colormnet_core train") -> str:
    """Write the network for inference: .safetensors under official names (atomic), then its sha256
    sidecar (`<file>.sha256`, read by `download.verify`). Returns the sha256.

    Self-contained for both families: a DINOv3 (CMNET2) network's export holds its whole ViT backbone
    under CMNET2's names, so it loads without a `dinov3-vitb16/` folder beside it - a tuned head must
    meet the backbone it was tuned with, and `unlock_backbone` changes the backbone itself.

    A `{sha8}` in the file name is replaced by the first 8 hex digits of the file's sha256 (content-
    named files: the same weights always get the same name). source: the sidecar's provenance line."""
    from ..download import sidecar
    from ..film.records import fsync_dir, fsync_file, write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    partial = path.with_name(f".{path.name.replace('{sha8}', 'x')}.partial-{uuid.uuid4().hex[:8]}")
    try:
        save_safetensors(state, partial, metadata=metadata)
        fsync_file(partial)
        digest = sha256_file(partial)
        path = path.with_name(path.name.replace("{sha8}", digest[:8]))
        sidecar(path).unlink(missing_ok=True)             # a record of older bytes must not outlive them
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    write_atomic(sidecar(path), (f"{digest}  {path.name}\nsource {source}\n"
                                 f"Derived from ColorMNet weights licensed {WEIGHTS_LICENSE} when started from "
                                 f"them.\n").encode())
    return digest
