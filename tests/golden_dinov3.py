"""The DINOv3 parity fixture (tests/data/golden_dinov3, made by running CMNET2's own code) and its
weight recipe.

Recipe (`draw_base`): every tensor of CMNET2's DINOv3 state dict (`state_dict.tsv`, read off
CMNET2's model) gets min(numel, 4099) values drawn from numpy's PCG64 seeded by sha256 of
"<seed>:<key>", at a scale set by the tensor's kind, rounded to float16; the full tensor repeats
them periodically (`expand`), as tests/data/golden does. `write_release` lays a draw out exactly as
CMNET2 releases it: a flat `.pth` of the whole network (fine-tuned backbone inside, either block
naming) plus the `dinov3-vitb16/` folder (config.json + model.safetensors holding a *different*
draw, the "pretrained" backbone that the `.pth` overrides). The fixture was made with seed 0;
another seed gives an independent draw for re-checking parity (`scripts/make_dinov3_weights.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .golden import CACHE, DATA, unpack_tensors

FIXTURE = DATA / "golden_dinov3"
BACKBONE = "key_encoder.network2.backbone."
CHECKPOINT_NAME = "DINOv3FeatureV6_LocalAtten_p374099.pth"
FIXTURE_SEED = 0
FOLDER_SEED_OFFSET = 1_000_003     # the folder's "pretrained" backbone: another draw than the .pth's
PERIOD = 4099


def manifest() -> dict[str, tuple[tuple[int, ...], str]]:
    """CMNET2's DINOv3 state dict: key -> (shape, dtype), in its order (transformers >= 5 names)."""
    out = {}
    for line in (FIXTURE / "state_dict.tsv").read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(int(x) for x in shape.split(",") if x), dtype)
    return out


def _scale(key: str, shape: tuple[int, ...]) -> tuple[str, float, float]:
    """(distribution, centre, spread) for a tensor: realistic magnitudes per kind of parameter."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return "lognormal", 0.0, 0.5
    if leaf == "running_mean":
        return "normal", 0.0, 0.1
    if leaf == "temperature":
        return "lognormal", 0.0, 0.5
    if leaf in ("cls_token", "register_tokens", "mask_token"):
        return "normal", 0.0, 0.4
    if leaf == "lambda1":                       # DINOv3 LayerScale
        return "normal", 0.0, 0.2
    if len(shape) >= 2:                         # conv / linear weights: LeCun scale
        return "normal", 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))
    if leaf == "weight":                        # BatchNorm / LayerNorm gains
        return "normal", 1.0, 0.3
    return "normal", 0.0, 0.025 if key.startswith(BACKBONE) else 0.05


def draw_base(seed: int) -> dict[str, torch.Tensor]:
    """The recipe: base values (float16, <= 4099 per tensor; int64 counters are 0) for every key."""
    out = {}
    for key, (shape, dtype) in manifest().items():
        if dtype != "float32":
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little"))
        kind, centre, spread = _scale(key, shape)
        values = rng.standard_normal(min(math.prod(shape), PERIOD)) * spread
        values = np.exp(values) if kind == "lognormal" else values + centre
        out[key] = torch.from_numpy(values.astype(np.float16))
    return out


def expand(base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full float32 tensors from base values (periodic repetition), CMNET2 names."""
    shapes = manifest()
    out = {}
    for key, values in base.items():
        shape, _ = shapes[key]
        if values.dtype == torch.int64:
            out[key] = values.reshape(shape).clone()
            continue
        numel = math.prod(shape)
        out[key] = values.float().repeat(-(-numel // values.numel()))[:numel].reshape(shape).contiguous()
    return out


def folder_state(seed: int) -> dict[str, torch.Tensor]:
    """The `dinov3-vitb16/model.safetensors` of a draw: HF hub names (`layer.N`), another seed."""
    full = expand(draw_base(seed + FOLDER_SEED_OFFSET))
    return {k[len(BACKBONE):].replace("model.layer.", "layer.", 1): v
            for k, v in full.items() if k.startswith(BACKBONE)}


def write_release(out: Path, seed: int, *, naming: str = "model.layer", backbone_in_pth: bool = True) -> Path:
    """Lay a draw out as CMNET2 releases it under `out`; returns the `.pth` path.

    naming: "model.layer" (saved with transformers >= 5) or "layer" (4.x); backbone_in_pth=False
    writes a `.pth` without backbone tensors (the folder must then provide them)."""
    out.mkdir(parents=True, exist_ok=True)
    state = expand(draw_base(seed))
    if naming == "layer":
        state = {k.replace(BACKBONE + "model.layer.", BACKBONE + "layer.", 1): v for k, v in state.items()}
    if not backbone_in_pth:
        state = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
    folder = out / "dinov3-vitb16"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(FIXTURE / "dinov3-vitb16" / "config.json", folder / "config.json")
    save_file(folder_state(seed), str(folder / "model.safetensors"), metadata={"format": "pt"})
    path = out / CHECKPOINT_NAME
    torch.save(state, path)
    return path


def fixture_release() -> Path:
    """The fixture's checkpoint (seed 0, CMNET2 release layout) in .cache/, written once."""
    out = CACHE / "golden_dinov3"
    path = out / CHECKPOINT_NAME
    if not path.exists() or not (out / "dinov3-vitb16" / "model.safetensors").exists():
        tmp = CACHE / "golden_dinov3.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_release(tmp, FIXTURE_SEED)
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)
    return path


def stored_base() -> dict[str, torch.Tensor]:
    """The base values stored in the fixture (must equal `draw_base(FIXTURE_SEED)`)."""
    with safe_open(FIXTURE / "weights_base.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict


def cases() -> dict:
    return json.loads((FIXTURE / "cases.json").read_text())


def expected_ab(case: str) -> dict[str, torch.Tensor]:
    return unpack_tensors(FIXTURE / case / "ab.f32.xz")


def stages(case: str) -> dict[str, torch.Tensor]:
    return unpack_tensors(FIXTURE / case / "stages.f32.xz")


def memory(case: str) -> dict:
    """CMNET2's memory sizes (elements) after each frame: {"frames": [{frame, perm, work, long}], "config"}."""
    return json.loads((FIXTURE / case / "memory.json").read_text())
