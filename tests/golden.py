"""Access to the golden parity fixture in ../shared/fixtures/golden (produced by the official code).

The fixture stores its checkpoint compressed (`weights_base.safetensors`: each tensor's first
<= 4099 values); the full `weights.safetensors` is rebuilt here, once, into the repo's .cache/.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "fixtures" / "golden"
CACHE = REPO / ".cache"
CONFIG_NAMES = ("A_release", "B_consolidation", "C_any_exemplar", "D_no_longterm")


def require_shared() -> Path:
    if not GOLDEN.is_dir():
        raise FileNotFoundError(f"the golden fixture is missing: expected {GOLDEN} (../shared beside the repo).")
    return GOLDEN


def golden_weights() -> Path:
    """Path of the fixture's full checkpoint (official names, float16 values), rebuilt if absent."""
    require_shared()
    out = CACHE / "golden_weights.safetensors"
    if out.exists():
        return out
    CACHE.mkdir(exist_ok=True)
    tensors = {}
    with safe_open(GOLDEN / "weights_base.safetensors", "pt") as f:
        shapes = json.loads(f.metadata()["shapes"])
        for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
            base = f.get_tensor(key)
            numel = int(np.prod(shapes[key])) if shapes[key] else 1
            repeats = -(-numel // base.numel())
            tensors[key] = base.repeat(repeats)[:numel].reshape(shapes[key]).contiguous()
    tmp = out.with_suffix(".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    tmp.replace(out)
    return out


@lru_cache(maxsize=1)
def configs() -> dict:
    return json.loads((GOLDEN / "configs.json").read_text())


def load_png(path: Path) -> torch.Tensor:
    """8-bit PNG -> uint8 `3 x H x W` RGB (grey replicated), as PIL's convert('RGB')."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1)


def frames() -> torch.Tensor:
    """The 12 fixture frames, uint8 `T x 3 x H x W`."""
    return torch.stack([load_png(p) for p in sorted((GOLDEN / "inputs" / "frames").glob("*.png"))])


def expected_ab(config: str) -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / config / "ab.safetensors")


def expected_png(config: str, index: int) -> torch.Tensor:
    return load_png(GOLDEN / config / "png" / f"{index:05d}.png")


def stats(config: str) -> dict:
    return json.loads((GOLDEN / config / "stats.json").read_text())


def intermediates() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "A_release" / "intermediates.safetensors")
