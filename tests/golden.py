"""Access to the golden parity fixture in tests/data/golden (produced by running the official code).

The fixture stores its checkpoint compressed (`weights_base.safetensors`: each tensor's first
<= 4099 values, periodic); the full checkpoint is rebuilt here, once, into the repo's .cache/.
Float tensors (per-frame ab, intermediates) are stored as `.f32.xz`: float32 values byte-shuffled
(all first bytes, then all second bytes, ...) and xz-compressed, which is lossless and ~1.5x smaller
than plain compression. `scripts/make_test_data.py` rebuilds tests/data from the original fixture.

The parity checks of a configuration's run (`run_config`, `check_*`) live here too, without pytest,
so that tests/test_golden.py (CPU, CI) and bench/gpu_check.py (any device) apply the same tolerances
and the same near-tie rule.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import struct
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from unittest import mock

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


# -- parity checks (tolerances: tests/data/README.md) -------------------------------------------------

# Near-ties: where the k-th and (k+1)-th memory similarities of a query pixel are closer than float32
# drift in the keys (TIE_GAP), either top-k choice is right and which one is taken depends on the
# machine's BLAS kernels (measured: C frame 11 on one machine, A/B frame 1 on another, gaps 1.2e-6 and
# 3.5e-6). Such a frame may differ by a few levels on a few pixels, and the frames after it a little
# (hidden state and memory carry the flip, fading within a few frames). The checks find the ties
# themselves from every read's smallest gap, and require that any difference beyond the fixture
# tolerances is confined to a near-tie frame or its aftermath; every other frame meets the tolerances.
TIE_GAP = 1e-5


class ParityError(AssertionError):
    """A configuration's output is outside the fixture's tolerances (the message says where)."""


class GoldenRun(NamedTuple):
    """One configuration run: results (`ColorizedFrame`s, ab moved to the CPU), memory events,
    per-frame memory sizes (permanent + working, long-term), and each frame's smallest top-k gap
    (only with `record_ties`)."""

    name: str
    results: list
    events: list
    sizes: list
    reads: dict


def _require(condition, message: str) -> None:
    if not condition:
        raise ParityError(message)


def run_config(network, name: str, *, count: int | None = None, record_ties: bool = False,
               **session_options) -> GoldenRun:
    """Run configuration `name` on its first `count` fixture frames (all 12 by default) with the
    network on its device; session_options go to `ColorizeSession` (device, key_batch, ...)."""
    from colormnet_core import memory as memory_module
    from colormnet_core.config import MemoryConfig
    from colormnet_core.exemplars import EncodedExemplars, Exemplar
    from colormnet_core.session import ColorizeSession

    cfg = configs()[name]
    options = cfg["options"]
    frame = None if options["FirstFrameIsNotExemplar"] else 0
    exemplars = EncodedExemplars((Exemplar(load_png(GOLDEN / cfg["exemplar"]), frame),))
    events, sizes, gaps = [], [], []
    original = memory_module.top_k_affinity

    def recording(sim, top_k):
        values = torch.topk(sim, k=min(top_k + 1, sim.shape[1]), dim=1).values
        gaps.append((values[0, top_k - 1] - values[0, top_k]).abs().min().item())
        return original(sim, top_k)

    session = ColorizeSession(network, exemplars, MemoryConfig.from_official_options(options),
                              on_memory_event=lambda kind, info: events.append((kind, info)), **session_options)

    def record(result):
        s = session.memory.stats
        sizes.append((s.permanent + s.working, s.long_term))

    patch = mock.patch.object(memory_module, "top_k_affinity", recording) if record_ties else contextlib.nullcontext()
    with patch:
        results = [r._replace(ab=r.ab.cpu()) for r in session.run(frames()[:count], on_frame=record)]
    # Frame 0 of the first-frame path reads no memory; align read gaps with frame indices.
    reads = {r.index: g for r, g in zip(results[len(results) - len(gaps):], gaps)}
    return GoldenRun(name, results, events, sizes, reads)


def strict_ok(diff) -> bool:
    return bool(diff.max() <= 5e-5 and diff.mean() <= 5e-6)


def tie_flips(run: GoldenRun) -> set[int]:
    """Frames whose top-k read sat on a near-tie and whose output is outside the strict tolerance."""
    expected = expected_ab(run.name)
    return {r.index for r in run.results if run.reads.get(r.index, 1.0) < TIE_GAP
            and not strict_ok((r.ab.float() - expected[f"{r.index:05d}"]).abs())}


def tie_status(flips: set[int], index: int) -> str:
    """'tie' at a flipped near-tie frame, 'after' once one happened earlier, else 'clean'."""
    if index in flips:
        return "tie"
    return "after" if any(i < index for i in flips) else "clean"


def check_ab(run: GoldenRun) -> None:
    """Every frame's normalised ab against the official's (ParityError names the first frame outside)."""
    expected = expected_ab(run.name)
    flips = tie_flips(run)
    for result in run.results:
        diff = (result.ab.float() - expected[f"{result.index:05d}"]).abs()
        status = tie_status(flips, result.index)
        where = f"{run.name} frame {result.index} ({status})"
        if status == "tie":
            # CBAM's global pooling spreads a local flip thinly over the frame; visible changes stay local
            # (measured on two machines: max 1.2e-2, mean 2.7e-4, <= 6.6 % of values beyond 1e-3).
            _require(diff.max() <= 2e-2 and diff.mean() <= 5e-4, f"{where}: {diff.max():.2e} / {diff.mean():.2e}")
            _require((diff > 1e-3).float().mean() <= 0.1, f"{where}: a tie flip changes a few cells, not the frame")
        elif status == "after":
            _require(diff.max() <= 1e-3 and diff.mean() <= 5e-5, f"{where}: {diff.max():.2e} / {diff.mean():.2e}")
        else:
            _require(diff.max() <= 5e-5, f"{where}: max |ab diff| {diff.max():.2e}")
            _require(diff.mean() <= 5e-6, f"{where}: mean |ab diff| {diff.mean():.2e}")


def check_png(run: GoldenRun) -> None:
    """Every frame's 8-bit output (the official truncation) against the official PNG."""
    from colormnet_core.color import to_uint8_truncate

    flips = tie_flips(run)
    for result in run.results:
        ours = to_uint8_truncate(result.rgb)
        ref = expected_png(run.name, result.index)
        _require(ours.shape == ref.shape, f"{run.name} frame {result.index}: shape {tuple(ours.shape)}")
        diff = (ours.int() - ref.int()).abs()
        status = tie_status(flips, result.index)
        where = f"{run.name} frame {result.index} ({status})"
        if status == "tie":      # a few levels on a few pixels (measured: <= 7 levels on <= 3 % of values)
            _require(diff.max() <= 8 and (diff > 0).float().mean() <= 0.05, f"{where}: {diff.max()} levels")
            continue
        share = 5e-3 if status == "after" else 1e-3
        _require(diff.max() <= 1, f"{where}: a value differs by {diff.max()} levels")
        _require((diff > 0).float().mean() <= share, f"{where}: {(diff > 0).sum()} values differ")


def _memorised(run: GoldenRun) -> int:
    """Frames whose memory state a run of all 12 frames shares: all of them, or all but the last of
    a shorter run (its last frame is never memorised, the full run's may be)."""
    n = len(run.results)
    return n if n == len(frames()) else n - 1


def check_memory_sizes(run: GoldenRun) -> None:
    """Working (+ pinned) and long-term memory sizes after every frame equal the official's."""
    n = _memorised(run)
    expected = [(f["work_mem_elems"], f["long_mem_elems"]) for f in stats(run.name)["frames"]][:n]
    _require(run.sizes[:n] == expected, f"{run.name}: memory sizes {run.sizes[:n]} != official {expected}")


def check_consolidation(run: GoldenRun) -> None:
    """Consolidations and long-term prunes happen on the official frames, with its sizes."""
    n = _memorised(run)
    recorded = stats(run.name)
    consolidated = [info["frame"] for kind, info in run.events if kind == "consolidate" and info["frame"] < n]
    pruned = [(info["frame"], info["before"], info["after"]) for kind, info in run.events
              if kind == "prune" and info["frame"] < n]
    expected = [f for f in recorded.get("consolidation_frames", []) if f < n]
    _require(consolidated == expected, f"{run.name}: consolidations at {consolidated}, official {expected}")
    expected_prunes = [(r["ti"], r["before"], r["after"]) for r in recorded.get("obsolete_removal_frames", [])
                       if r["ti"] < n]
    _require(pruned == expected_prunes, f"{run.name}: prunes {pruned}, official {expected_prunes}")


CHECKS = {"ab": check_ab, "png": check_png, "memory sizes": check_memory_sizes, "consolidation": check_consolidation}
