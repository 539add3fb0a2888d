"""Access to the golden parity fixture in tests/data/golden (produced by running the official code).

The fixture stores its checkpoint compressed (`weights_base.safetensors`: each tensor's first
<= 4099 values, periodic); the full checkpoint is rebuilt here, once, into the repo's .cache/.
Float tensors (per-frame ab, intermediates) are stored as `.f32.xz`: float32 values byte-shuffled
(all first bytes, then all second bytes, ...) and xz-compressed, which is lossless and ~1.5x smaller
than plain compression. `scripts/make_test_data.py` rebuilds tests/data from the original fixture.
"""

from __future__ import annotations

import json
import lzma
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
GOLDEN = DATA / "golden"
SPEC = DATA / "spec"
BLACKSWAN = DATA / "blackswan"
MEDIA = REPO / "workflows" / "media"
CACHE = REPO / ".cache"
CONFIG_NAMES = ("A_release", "B_consolidation", "C_any_exemplar", "D_no_longterm")


def pack_tensors(tensors: dict, path: Path) -> None:
    """Write float32 arrays (numpy or torch) losslessly as byte-shuffled, xz-compressed `.f32.xz`."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(np.asarray(tensors[name], dtype=np.float32))
        header[name] = {"shape": list(array.shape), "offset": offset}
        chunks.append(array.view(np.uint8).reshape(-1, 4).T.tobytes())
        offset += array.size
    head = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(struct.pack("<Q", len(head)) + head + b"".join(chunks), preset=9))


def unpack_tensors(path: Path) -> dict[str, torch.Tensor]:
    raw = lzma.decompress(path.read_bytes())
    (size,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + size])
    payload = memoryview(raw)[8 + size:]
    out = {}
    for name, entry in header.items():
        numel = int(np.prod(entry["shape"]))
        start = entry["offset"] * 4
        planes = np.frombuffer(payload[start:start + numel * 4], np.uint8).reshape(4, numel)
        out[name] = torch.from_numpy(planes.T.copy().view(np.float32).reshape(entry["shape"]))
    return out


def golden_weights() -> Path:
    """Path of the fixture's full checkpoint (official names, float16 values), rebuilt if absent."""
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
    return unpack_tensors(GOLDEN / config / "ab.f32.xz")


def expected_png(config: str, index: int) -> torch.Tensor:
    return load_png(GOLDEN / config / "png" / f"{index:05d}.png")


def stats(config: str) -> dict:
    return json.loads((GOLDEN / config / "stats.json").read_text())


def intermediates() -> dict[str, torch.Tensor]:
    return unpack_tensors(GOLDEN / "A_release" / "intermediates.f32.xz")


def exemplar() -> torch.Tensor:
    """The fixture's colour exemplar (colour version of frame 0), uint8 `3 x 185 x 321`."""
    return load_png(GOLDEN / "inputs" / "exemplar.png")
