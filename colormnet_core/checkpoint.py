"""Checkpoints: reading (.pth safely, .safetensors), the official <-> our name table, strict
loading with errors that say what to do, and conversion to .safetensors.

Two checkpoint families, told apart by their keys and shapes (never by file name): the official
release (DINOv2 ViT-S/14 key-encoder backbone) and CMNET2's fine-tuned DINOv3 ViT-B/16 family,
whose backbone names and backbone folder live in `checkpoint_cmnet2.py`. This is the only module,
with that one, where official parameter names appear.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from . import checkpoint_cmnet2 as cmnet2
from .config import NetworkConfig
from .errors import CheckpointError

log = logging.getLogger(__name__)

OFFICIAL_FILENAME = "DINOv2FeatureV6_LocalAtten_s2_154000.pth"
OFFICIAL_URL = f"https://github.com/yyang181/colormnet/releases/download/v0.1/{OFFICIAL_FILENAME}"
WEIGHTS_LICENSE = "CC BY-NC-SA 4.0 (non-commercial, share-alike), by the ColorMNet authors"
HOW_TO_GET = (f"Use the official checkpoint {OFFICIAL_FILENAME} ({OFFICIAL_URL}; weights licensed "
              f"{WEIGHTS_LICENSE}) or one of CMNET2's DINOv3 checkpoints ({cmnet2.CMNET2_RELEASES}).")

# Official prefix -> ours; the first matching rule wins. An entry without a trailing dot is an exact key.
PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("key_encoder.network2.backbone.mask_token", "key_encoder.dino.mask_token"),
    ("key_encoder.network2.backbone.", "key_encoder.dino.vit."),
    ("key_encoder.network2.conv3.", "key_encoder.dino.conv."),
    ("key_encoder.network2.bn3.", "key_encoder.dino.bn."),
    ("key_encoder.conv1.", "key_encoder.cnn.conv1."),
    ("key_encoder.bn1.", "key_encoder.cnn.bn1."),
    ("key_encoder.res2.", "key_encoder.cnn.layer1."),
    ("key_encoder.layer2.", "key_encoder.cnn.layer2."),
    ("key_encoder.layer3.", "key_encoder.cnn.layer3."),
    ("key_encoder.fuse1.", "key_encoder.fuse16."),
    ("key_encoder.fuse2.", "key_encoder.fuse8."),
    ("key_encoder.fuse3.", "key_encoder.fuse4."),
    ("key_proj.key_proj.", "key_proj.key."),
    ("key_proj.d_proj.", "key_proj.shrinkage."),
    ("key_proj.e_proj.", "key_proj.selection."),
    ("value_encoder.conv1.", "value_encoder.cnn.conv1."),
    ("value_encoder.bn1.", "value_encoder.cnn.bn1."),
    ("value_encoder.layer1.", "value_encoder.cnn.layer1."),
    ("value_encoder.layer2.", "value_encoder.cnn.layer2."),
    ("value_encoder.layer3.", "value_encoder.cnn.layer3."),
    ("short_term_attn.relative_emb_k.", "local_attention.relative_position."),
    ("short_term_attn.dw_conv.conv.", "local_attention.dw_conv."),
    ("short_term_attn.projection.", "local_attention.projection."),
)
# Inside the three fusion blocks.
FUSE_RULES: tuple[tuple[str, str], ...] = (
    ("encode_enc.", "dino_proj."), ("norm1.", "norm_dino."), ("norm2.", "norm_cnn."),
    ("norm3.", "norm_out."), ("crossattn.", "attention."),
)
_OUR_FUSES = ("key_encoder.fuse16.", "key_encoder.fuse8.", "key_encoder.fuse4.")
OFFICIAL_SENTINEL = "key_encoder.network2.backbone.cls_token"
OUR_SENTINEL = "key_encoder.dino.vit.cls_token"
_CONTAINER_KEYS = ("state_dict", "model", "network", "module", "ema")


def _rename(name: str, rules: tuple[tuple[str, str], ...], fuse_rules, fuses) -> str:
    for source, target in rules:
        if name == source or (source.endswith(".") and name.startswith(source)):
            name = target + name[len(source):]
            break
    for fuse in fuses:
        if name.startswith(fuse):
            rest = name[len(fuse):]
            for source, target in fuse_rules:
                if rest.startswith(source):
                    return fuse + target + rest[len(source):]
    return name


def official_to_ours(name: str) -> str:
    return _rename(name, PREFIX_RULES, FUSE_RULES, _OUR_FUSES)


def ours_to_official(name: str, backbone: str = "dinov2_vits14") -> str:
    """The checkpoint name of one of our keys: official, or CMNET2's for the DINOv3 branch."""
    if backbone == "dinov3_vitb16":
        dinov3 = cmnet2.ours_to_cmnet2(name)
        if dinov3 is not None:
            return dinov3
    reverse = tuple((b, a) for a, b in PREFIX_RULES)
    name = _rename(name, reverse, (), ())
    official_fuses = ("key_encoder.fuse1.", "key_encoder.fuse2.", "key_encoder.fuse3.")
    return _rename(name, (), tuple((b, a) for a, b in FUSE_RULES), official_fuses)


def backbone_of(state: dict[str, Tensor]) -> str:
    """The key-encoder backbone of a state dict under our names (its DINOv3 register tokens tell)."""
    return "dinov3_vitb16" if cmnet2.OUR_DINOV3_SENTINEL in state else "dinov2_vits14"


def state_to_official(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our names -> the family's release names (official, or CMNET2's transformers >= 5 names)."""
    backbone = backbone_of(state)
    return {ours_to_official(k, backbone): v for k, v in state.items()}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SAFETENSORS = "safetensors"
TORCH_ZIP = "torch zip"
TORCH_PICKLE = "torch pickle"
_PICKLE_PROTOCOLS = range(2, 6)


def sniff_format(path: str | Path) -> str | None:
    """The checkpoint format from the file's first bytes, whatever its extension says.

    safetensors: an 8-byte little-endian header length, then a JSON header ("{"); torch.save's
    default: a zip archive ("PK\\x03\\x04"); torch.save's legacy format: a pickle (0x80, protocol
    2-5). None: none of these (damaged, empty, or another kind of file).
    """
    with open(path, "rb") as f:
        head = f.read(9)
    size = Path(path).stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        return TORCH_ZIP
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return TORCH_PICKLE
    return None


def _torch_reason(error: BaseException) -> str:
    """torch.load's complaint, minus its advice to load with weights_only=False (never safe to pass on)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if "weights_only" in first or "weights only" in first.lower():
        first = "the file could not be read with the safe tensor-only loader"
    return f"{type(error).__name__}: {first[:160]}" if first else type(error).__name__


def _unreadable(path: Path, kind: str, reason: str) -> CheckpointError:
    # What happened and what to do first: UIs and logs often show only the start of a message.
    return CheckpointError(
        f"Cannot read checkpoint {path.name} ({kind}): it is truncated, damaged or not a checkpoint; "
        f"download it again. File: {path}. Reason: {reason}. {HOW_TO_GET}")


def _read_raw(path: Path) -> dict:
    fmt = sniff_format(path)
    named = path.suffix.lower()
    if fmt == SAFETENSORS and named not in (".safetensors", ".sft"):
        log.info("%s holds safetensors data despite its %s extension; reading it as safetensors", path, named)
    elif fmt in (TORCH_ZIP, TORCH_PICKLE) and named in (".safetensors", ".sft"):
        log.info("%s holds a PyTorch checkpoint despite its %s extension; reading it safely as one", path, named)
    if fmt == SAFETENSORS or (fmt is None and named in (".safetensors", ".sft")):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:   # safetensors raises its own error types for damaged headers/data
            raise _unreadable(path, "safetensors", f"{type(e).__name__}: {str(e)[:160]}") from e
    try:
        # An open file, not a path: recent torch picks a reader from a path's extension.
        with warnings.catch_warnings(), open(path, "rb") as f:   # torch warns about odd pickle protocols
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():   # no refused Python object: the bytes are just not a checkpoint
            raise _unreadable(path, "PyTorch", _torch_reason(e)) from e
        raise CheckpointError(
            f"Checkpoint {path.name} was not loaded: it holds Python objects besides tensors, and unpickling "
            f"them could run arbitrary code. Use the official release, or resave the state dict of a copy you "
            f"trust as .safetensors. File: {path}. {HOW_TO_GET}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError,
            AttributeError) as e:   # what damaged or foreign bytes make torch.load raise
        raise _unreadable(path, "PyTorch", _torch_reason(e)) from e


def _unwrap(obj, path: Path) -> dict[str, Tensor]:
    for _ in range(3):   # {"state_dict": {"module.x": ...}} and similar nestings
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            known = (OFFICIAL_SENTINEL, OUR_SENTINEL, *cmnet2.CMNET2_SENTINELS)
            if inner is not None and not any(k in obj for k in known):
                obj = inner
                continue
        break
    if isinstance(obj, dict):   # training extras next to the weights (an epoch counter, ...)
        obj = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"Checkpoint {path.name} holds no state dict of tensors; use the official "
                              f"checkpoint instead. File: {path}. {HOW_TO_GET}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ColorMNet checkpoint (.pth/.pt/.ckpt/.bin safely, or .safetensors) -> tensors under OUR names.

    Accepts the official naming, CMNET2's DINOv3 naming (either block naming; backbone tensors the
    file lacks come from `dinov3-vitb16/` beside it, see `checkpoint_cmnet2`) or ours, bare or
    wrapped ({"state_dict": ...}, {"model": ...}, DataParallel's "module." prefix). XMem-style
    4-channel value encoders get the official zero fifth channel.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path.name}. Put the file in ComfyUI/models/colormnet/ (command line: "
            f"--checkpoint PATH). Looked for: {path}. {HOW_TO_GET}")
    state = _unwrap(_read_raw(path), path)
    if OFFICIAL_SENTINEL in state:
        state = {official_to_ours(k): v for k, v in state.items()}
    elif cmnet2.is_cmnet2(state):
        state = {cmnet2.normalize_block_naming(k): v for k, v in state.items()}
        state = cmnet2.complete_backbone(state, path, cmnet2.expected_backbone_keys())
        state = {cmnet2.cmnet2_to_ours(k) or official_to_ours(k): v for k, v in state.items()}
    elif OUR_SENTINEL not in state and cmnet2.OUR_DINOV3_SENTINEL not in state:
        sample = ", ".join(sorted(state)[:5])
        raise CheckpointError(
            f"{path.name} is not a ColorMNet checkpoint (another model's weights?): select or download the "
            f"official one or a CMNET2 DINOv3 one. It has neither a DINOv2 key encoder ({OFFICIAL_SENTINEL!r}) "
            f"nor CMNET2's DINOv3 one ({cmnet2.CMNET2_SENTINELS[0]!r}); its {len(state)} tensors start with "
            f"{sample}. File: {path}. {HOW_TO_GET}")
    conv1 = state.get("value_encoder.cnn.conv1.weight")
    if conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 4:
        # Official single -> multi-object conversion: a zero "other chroma" input channel.
        state = dict(state)
        pad = conv1.new_zeros(conv1.shape[0], 1, *conv1.shape[2:])
        state["value_encoder.cnn.conv1.weight"] = torch.cat([conv1, pad], 1)
    return state


def infer_network_config(state: dict[str, Tensor]) -> NetworkConfig:
    """Dimensions from tensor shapes, as the official `init_hyperparameters` (our names)."""
    try:
        key_dim = state["key_proj.key.weight"].shape[0]
        value_dim = state["value_encoder.fuser.block2.conv2.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"the checkpoint lacks {ours_to_official(e.args[0])}; it is incomplete. "
                              f"{HOW_TO_GET}") from None
    hidden = state.get("decoder.hidden_update.transform.weight")
    return NetworkConfig(key_dim, value_dim, 0 if hidden is None else hidden.shape[0] // 3, backbone_of(state))


def load_into(
    net: nn.Module, state: dict[str, Tensor], *, path: str | Path, dtype: torch.dtype = torch.float32
) -> None:
    """Strictly load `state` (our names) into `net`; floating tensors cast to `dtype` (fp16 files upcast).

    Raises CheckpointError listing missing, unexpected and mis-shaped entries under official names.
    """
    expected = net.state_dict()
    backbone = backbone_of(expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [(k, tuple(state[k].shape), tuple(expected[k].shape))
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        lines = [f"{Path(path).name} does not fit the ColorMNet network (another model version or a damaged "
                 f"file): use the official checkpoint. File: {path}."]
        for label, items in (("missing", missing), ("unexpected", unexpected)):
            if items:
                shown = ", ".join(ours_to_official(k, backbone) for k in items[:10])
                lines.append(f"  {len(items)} {label}: {shown}{' ...' if len(items) > 10 else ''}")
        if misshaped:
            shown = "; ".join(f"{ours_to_official(k, backbone)} {a} (expected {b})" for k, a, b in misshaped[:10])
            lines.append(f"  {len(misshaped)} with another shape: {shown}")
        lines.append(HOW_TO_GET)
        raise CheckpointError("\n".join(lines))
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(cast, strict=True)


FAMILIES = {"dinov2_vits14": "official ColorMNet, DINOv2 ViT-S/14 backbone",
            "dinov3_vitb16": "CMNET2, DINOv3 ViT-B/16 backbone (fine-tuned)"}


def describe_network(network: nn.Module) -> str:
    """The checkpoint family and key-encoder backbone of a built network, for logs and UIs."""
    return FAMILIES[network.config.backbone]


def load_model(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Build a ColorMNet sized from the checkpoint (either family), load it strictly, eval mode, on `device`."""
    from .network import ColorMNet

    state = read_state_dict(path)
    config = infer_network_config(state)
    net = ColorMNet(config)
    load_into(net, state, path=path, dtype=dtype)
    log.info("loaded %s (%d tensors; %s)", path, len(state), FAMILIES[config.backbone])
    return net.eval().to(device)


def save_safetensors(state: dict[str, Tensor], path: str | Path, *, official_names: bool = True,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `state` (our names) as .safetensors, by default under official names."""
    from safetensors.torch import save_file

    out = state_to_official(state) if official_names else dict(state)
    out = {k: v.detach().contiguous() for k, v in out.items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    save_file(out, str(tmp), metadata={"format": "pt", **(metadata or {})})
    # safetensors creates its file readable by its owner only; a checkpoint is read by other accounts too
    # (a render farm's workers, a ComfyUI service user), so it gets the usual rw-r--r--. (Not the umask:
    # reading it means setting it, which is not thread-safe inside a server.)
    tmp.chmod(0o644)
    tmp.replace(path)


def convert(source: str | Path, target: str | Path, *, force: bool = False, dtype: str = "keep") -> tuple[str, str]:
    """Convert a checkpoint to .safetensors under official names; returns (sha256 in, sha256 out)."""
    source, target = Path(source), Path(target)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; add --force to overwrite it.")
    state = read_state_dict(source)
    if dtype != "keep":
        want = {"float32": torch.float32, "float16": torch.float16}[dtype]
        state = {k: v.to(want) if v.is_floating_point() else v for k, v in state.items()}
    save_safetensors(state, target, metadata={"source_sha256": sha256_file(source)})
    return sha256_file(source), sha256_file(target)
