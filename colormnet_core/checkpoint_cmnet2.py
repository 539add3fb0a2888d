"""CMNET2's DINOv3 checkpoints: what a user downloads, their names, and how they become ours.

What CMNET2 (dan64/cmnet2) releases for its DINOv3 ViT-B/16 family (read off its loader,
`ColorMNet.load_weights`, and its tools `training/export_weights.py`, `tools/build_dinov3_checkpoint.py`):

* `DINOv3FeatureV6_LocalAtten_p<step>.pth` - `torch.save(model.state_dict())` of the whole network
  with `backbone='dinov3'`, fine-tuned backbone included: every official key except the DINOv2
  branch, plus `key_encoder.network2.backbone.*` (a HuggingFace `DINOv3ViTModel` state dict) and
  `key_encoder.network2.proj.{0,1}.*` (1x1 conv 3072 -> 1536, BatchNorm). The backbone's blocks are
  `backbone.model.layer.N.*` when saved under transformers >= 5 and `backbone.layer.N.*` under 4.x;
  both are accepted. A raw training checkpoint ({"model": state, "optimizer": ...}) is unwrapped.
* `dinov3-vitb16.zip` - the folder `dinov3-vitb16/`: HuggingFace `config.json` and `model.safetensors`
  (the pretrained, not fine-tuned, backbone, hub naming `layer.N.*`). CMNET2 builds the backbone
  from it and then overwrites every tensor the `.pth` holds. We build the backbone with timm, so
  the folder is needed only when the `.pth` lacks backbone tensors (they are then taken from it, as
  CMNET2 would); when present, its config.json is checked against the architecture we build.

The remap table below is the only place where CMNET2's DINOv3 names meet ours.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from torch import Tensor

from .errors import CheckpointError

log = logging.getLogger(__name__)

CMNET2_RELEASES = "https://github.com/dan64/cmnet2/releases"
BACKBONE_DIR = "dinov3-vitb16"
BACKBONE_ZIP_URL = f"{CMNET2_RELEASES}/download/v1.1.0/dinov3-vitb16.zip"
HOW_TO_GET_CMNET2 = (f"CMNET2's DINOv3 checkpoints (e.g. DINOv3FeatureV6_LocalAtten_p374099.pth) and the backbone "
                     f"folder dinov3-vitb16.zip are at {CMNET2_RELEASES} (weights licensed CC BY-NC-SA 4.0, "
                     f"non-commercial), or run: python -m colormnet_core download --model cmnet2-dinov3-p374099.")

_N = r"(\d+)"
# CMNET2 (HuggingFace) name -> ours; `{n}` is a block index. First match wins; a rule without a
# trailing dot is an exact key. Reversed, the same table writes CMNET2's transformers >= 5 names.
DINOV3_RULES: tuple[tuple[str, str], ...] = (
    ("key_encoder.network2.backbone.embeddings.cls_token", "key_encoder.dino.vit.cls_token"),
    ("key_encoder.network2.backbone.embeddings.register_tokens", "key_encoder.dino.vit.reg_token"),
    ("key_encoder.network2.backbone.embeddings.mask_token", "key_encoder.dino.mask_token"),
    ("key_encoder.network2.backbone.embeddings.patch_embeddings.", "key_encoder.dino.vit.patch_embed.proj."),
    ("key_encoder.network2.backbone.model.layer.{n}.attention.o_proj.", "key_encoder.dino.vit.blocks.{n}.attn.proj."),
    ("key_encoder.network2.backbone.model.layer.{n}.attention.", "key_encoder.dino.vit.blocks.{n}.attn."),
    ("key_encoder.network2.backbone.model.layer.{n}.layer_scale1.lambda1", "key_encoder.dino.vit.blocks.{n}.gamma_1"),
    ("key_encoder.network2.backbone.model.layer.{n}.layer_scale2.lambda1", "key_encoder.dino.vit.blocks.{n}.gamma_2"),
    ("key_encoder.network2.backbone.model.layer.{n}.mlp.up_proj.", "key_encoder.dino.vit.blocks.{n}.mlp.fc1."),
    ("key_encoder.network2.backbone.model.layer.{n}.mlp.down_proj.", "key_encoder.dino.vit.blocks.{n}.mlp.fc2."),
    ("key_encoder.network2.backbone.model.layer.{n}.", "key_encoder.dino.vit.blocks.{n}."),
    ("key_encoder.network2.backbone.norm.", "key_encoder.dino.vit.norm."),
    ("key_encoder.network2.proj.0.", "key_encoder.dino.conv."),
    ("key_encoder.network2.proj.1.", "key_encoder.dino.bn."),
)
BACKBONE_PREFIX = "key_encoder.network2.backbone."
# transformers 4.x saved DINOv3ViTModel's blocks one level up: backbone.layer.N -> backbone.model.layer.N
_V4_BLOCKS = re.compile(r"^key_encoder\.network2\.backbone\.layer\.(\d+)\.")
CMNET2_SENTINELS = ("key_encoder.network2.proj.0.weight", "key_encoder.network2.backbone.embeddings.cls_token")
OUR_DINOV3_SENTINEL = "key_encoder.dino.vit.reg_token"

# The DINOv3 ViT-B/16 that `dinov3.py` builds, as HuggingFace config fields; a folder whose
# config.json says otherwise holds another network.
EXPECTED_CONFIG = {
    "model_type": "dinov3_vit", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "patch_size": 16, "num_channels": 3, "num_register_tokens": 4,
    "rope_theta": 100.0, "layer_norm_eps": 1e-5, "hidden_act": "gelu", "query_bias": True, "key_bias": False,
    "value_bias": True, "proj_bias": True, "mlp_bias": True, "use_gated_mlp": False,
}


def _compile(rules: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern, str]]:
    out = []
    for source, target in rules:
        pattern = re.escape(source).replace(re.escape("{n}"), _N)
        out.append((re.compile("^" + pattern + ("" if source.endswith(".") else "$")),
                    target.replace("{n}", r"\1")))
    return out


_FORWARD = _compile(DINOV3_RULES)
_REVERSE = _compile(tuple((b, a) for a, b in DINOV3_RULES))


def _apply(name: str, compiled: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, target in compiled:
        match = pattern.match(name)
        if match:
            return match.expand(target) + name[match.end():]
    return None


def normalize_block_naming(name: str) -> str:
    """`backbone.layer.N.` (transformers 4.x) -> `backbone.model.layer.N.` (transformers >= 5)."""
    return _V4_BLOCKS.sub(r"key_encoder.network2.backbone.model.layer.\1.", name)


def cmnet2_to_ours(name: str) -> str | None:
    """Our name for a CMNET2 DINOv3-branch key (either block naming), None for other keys."""
    return _apply(normalize_block_naming(name), _FORWARD)


def ours_to_cmnet2(name: str) -> str | None:
    """CMNET2's (transformers >= 5) name for one of our DINOv3-branch keys, None for other keys."""
    return _apply(name, _REVERSE)


def is_cmnet2(state: dict[str, Tensor]) -> bool:
    """Whether a state dict under CMNET2's names holds the DINOv3 family (by its head or backbone keys)."""
    return any(k in state for k in CMNET2_SENTINELS) or any(
        normalize_block_naming(k).startswith(BACKBONE_PREFIX + "model.layer.") for k in state)


def backbone_keys(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A bare HuggingFace DINOv3ViTModel state dict (a folder's model.safetensors) under CMNET2's names."""
    return {normalize_block_naming(BACKBONE_PREFIX + k): v for k, v in hf_state.items()
            if not k.startswith("rope_embeddings.")}


def find_backbone_folder(checkpoint: Path) -> Path | None:
    """`dinov3-vitb16/` next to the checkpoint (where CMNET2's README says to extract it), if any."""
    folder = checkpoint.parent / BACKBONE_DIR
    return folder if (folder / "config.json").is_file() else None


def check_backbone_config(folder: Path) -> None:
    """Raise CheckpointError when `folder/config.json` describes another network than DINOv3 ViT-B/16."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read {path}: {e}. Extract dinov3-vitb16.zip again ({BACKBONE_ZIP_URL}).") from e
    wrong = [f"{k}={config.get(k)!r} (expected {v!r})" for k, v in EXPECTED_CONFIG.items()
             if k in config and config[k] != v]
    if config.get("model_type") != "dinov3_vit":
        wrong.insert(0, f"model_type={config.get('model_type')!r} (expected 'dinov3_vit')")
    if wrong:
        raise CheckpointError(
            f"{path} does not describe the DINOv3 ViT-B/16 that CMNET2's checkpoints use: {'; '.join(wrong[:5])}. "
            f"Replace the folder with dinov3-vitb16.zip from {BACKBONE_ZIP_URL}.")


def read_backbone_folder(folder: Path) -> dict[str, Tensor]:
    """The folder's backbone tensors under CMNET2's names (config checked first)."""
    from safetensors.torch import load_file

    check_backbone_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no model.safetensors; extract dinov3-vitb16.zip again "
                              f"({BACKBONE_ZIP_URL}).")
    try:
        return backbone_keys(load_file(str(weights), device="cpu"))
    except Exception as e:   # safetensors raises its own error types for damaged files
        raise CheckpointError(f"Cannot read {weights} ({type(e).__name__}: {str(e)[:160]}): it is truncated or "
                              f"damaged; extract dinov3-vitb16.zip again ({BACKBONE_ZIP_URL}).") from e


class MissingBackboneError(CheckpointError):
    """A CMNET2 `.pth` whose backbone tensors are neither in it nor in a `dinov3-vitb16/` beside it."""


def complete_backbone(state: dict[str, Tensor], path: Path, expected: list[str]) -> dict[str, Tensor]:
    """Fill backbone tensors the checkpoint lacks from `dinov3-vitb16/` beside it, as CMNET2 does.

    state: CMNET2-named tensors (blocks already in `model.layer` naming); expected: the CMNET2 names
    of every backbone tensor. Raises CheckpointError naming what is missing and where to get it."""
    missing = [k for k in expected if k not in state]
    folder = find_backbone_folder(path)
    if folder is not None:
        check_backbone_config(folder)
    if not missing:
        return state
    if folder is None:
        shown = ", ".join(k[len(BACKBONE_PREFIX):] for k in missing[:3])
        raise MissingBackboneError(
            f"{path.name} is a CMNET2 DINOv3 checkpoint without its DINOv3 ViT-B/16 backbone: {len(missing)} of "
            f"{len(expected)} backbone tensors are missing ({shown}{' ...' if len(missing) > 3 else ''}). Download "
            f"dinov3-vitb16.zip ({BACKBONE_ZIP_URL}) and extract it next to the checkpoint, so that "
            f"{path.parent / BACKBONE_DIR / 'model.safetensors'} exists; or use a checkpoint that holds the "
            f"backbone (every released DINOv3FeatureV6_LocalAtten_p*.pth does). {HOW_TO_GET_CMNET2}")
    extra = read_backbone_folder(folder)
    absent = [k for k in missing if k not in extra]
    if absent:
        raise CheckpointError(f"{folder / 'model.safetensors'} lacks {len(absent)} backbone tensors "
                              f"({', '.join(absent[:3])}); extract dinov3-vitb16.zip again ({BACKBONE_ZIP_URL}).")
    log.info("%s: %d backbone tensors taken from %s", path.name, len(missing), folder)
    return {**state, **{k: extra[k] for k in missing}}


_BLOCK_FIELDS = ("norm1.weight", "norm1.bias", "attention.q_proj.weight", "attention.q_proj.bias",
                 "attention.k_proj.weight", "attention.v_proj.weight", "attention.v_proj.bias",
                 "attention.o_proj.weight", "attention.o_proj.bias", "layer_scale1.lambda1", "norm2.weight",
                 "norm2.bias", "mlp.up_proj.weight", "mlp.up_proj.bias", "mlp.down_proj.weight",
                 "mlp.down_proj.bias", "layer_scale2.lambda1")


def expected_backbone_keys(depth: int = 12) -> list[str]:
    """CMNET2's names (transformers >= 5 naming) of every DINOv3 ViT-B/16 backbone tensor (211)."""
    head = [f"embeddings.{k}" for k in ("cls_token", "mask_token", "register_tokens", "patch_embeddings.weight",
                                        "patch_embeddings.bias")]
    blocks = [f"model.layer.{i}.{f}" for i in range(depth) for f in _BLOCK_FIELDS]
    return [BACKBONE_PREFIX + k for k in head + blocks + ["norm.weight", "norm.bias"]]
