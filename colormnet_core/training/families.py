"""What training changes in each checkpoint family: the one place that decides which parts are frozen.

ColorMNet (the official family, DINOv2 ViT-S/14 key-encoder branch): the official `Segmentor`
runs DINOv2 *and* its 1x1 conv + BatchNorm (`network2.conv3`, `network2.bn3`) under `no_grad`, so
those weights never change in training - they stay what the checkpoint (or the DINOv2 release)
holds. Everything else is trained. Freezing by `requires_grad_(False)` is the same computation: no
gradient reaches them, nothing is kept for a backward pass, and AdamW leaves them untouched (the
official AdamW skips them because their gradient is None).

CMNET2 (the DINOv3 ViT-B/16 family; read off dan64/cmnet2 at commit 2550df4e,
`training/train_dinov3.py` and `Segmentor_DINOv3` in `colormnet/model/resnet.py`): its trainer is
the official one with `backbone='dinov3'` and an `--unlock_backbone` switch. By default the DINOv3
ViT is frozen (eval, `requires_grad_(False)`, run under `no_grad`) while its 1x1 conv 3072 -> 1536 +
BatchNorm head (`network2.proj`, our `key_encoder.dino.conv` / `.bn`) is trained with the rest of
the network. With `--unlock_backbone` the ViT is trained end to end as well (HuggingFace gradient
checkpointing; dropout and drop-path are 0 in its config, so its forced train mode computes what
eval mode does); the released DINOv3FeatureV6_LocalAtten_p*.pth were trained so. Here:
`unlock_backbone=False` (CMNET2's default) freezes `key_encoder.dino.vit` and the unused pretraining
`mask_token`; `unlock_backbone=True` freezes nothing. The DINOv2 family ignores the switch (the
official code has none).

`official_initialisation` is the official family's start from pretrained backbones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint import SAFETENSORS, sniff_format
from ..dinov3 import Dinov3Features
from ..errors import InputError
from ..network import ColorMNet
from ..pvgfe import DinoFeatures

log = logging.getLogger(__name__)


def frozen_modules(network: nn.Module, *, unlock_backbone: bool = False) -> list[tuple[str, nn.Module | nn.Parameter]]:
    """(name, module or parameter) of every part of `network` that training must not change, by family.

    unlock_backbone: CMNET2's switch (DINOv3 family only): train its ViT too instead of freezing it."""
    if isinstance(network, ColorMNet) and isinstance(network.key_encoder.dino, DinoFeatures):
        return [("key_encoder.dino", network.key_encoder.dino)]
    if isinstance(network, ColorMNet) and isinstance(network.key_encoder.dino, Dinov3Features):
        if unlock_backbone:
            return []
        dino = network.key_encoder.dino
        return [("key_encoder.dino.vit", dino.vit), ("key_encoder.dino.mask_token", dino.mask_token)]
    raise TypeError(f"no training rule for a {type(network).__name__} with a "
                    f"{type(getattr(getattr(network, 'key_encoder', None), 'dino', None)).__name__} backbone; "
                    f"add its family to colormnet_core.training.families.frozen_modules.")


def prepare_for_training(network: nn.Module, *, unlock_backbone: bool = False) -> list[nn.Parameter]:
    """Freeze the family's frozen parts, put the network in eval mode and return the trainable parameters.

    Eval mode throughout, as the official trainer (XMem's convention): BatchNorm uses and keeps its
    running statistics, dropout is off. Returns the parameters to optimise, in module order.
    unlock_backbone: see `frozen_modules`.
    """
    network.eval()
    frozen = frozen_modules(network, unlock_backbone=unlock_backbone)
    for _, module in frozen:
        module.requires_grad_(False)
    dino = network.key_encoder.dino
    if isinstance(dino, Dinov3Features):
        # A trained ViT-B keeps every block's activations for every frame of every sequence (GBs at 448);
        # CMNET2 checkpoints them (HuggingFace gradient checkpointing), and so do we. A frozen ViT keeps none.
        dino.checkpointed = unlock_backbone
    trainable = [p for p in network.parameters() if p.requires_grad]
    log.info("training %d parameters; frozen: %s", sum(p.numel() for p in trainable),
             ", ".join(name for name, _ in frozen) or "nothing")
    return trainable


@dataclass(frozen=True)
class PretrainedBackbones:
    """The pretrained weights the official trainer starts from (it downloads them; here they are files):
    DINOv2 ViT-S/14 (torch.hub `dinov2_vits14`, e.g. dinov2_vits14_pretrain.pth) and the torchvision
    ImageNet ResNet-50 and ResNet-18 (resnet50-0676ba61.pth, resnet18-5c106cde.pth)."""

    dinov2: Path
    resnet50: Path
    resnet18: Path


def _tensors(path: Path, what: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"{what} weights not found: {path}.")
    try:
        if sniff_format(path) == SAFETENSORS:
            from safetensors.torch import load_file

            return load_file(str(path))
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:   # torch and safetensors raise many types for foreign or damaged files
        raise InputError(f"cannot read the {what} weights {path} ({type(e).__name__}: {str(e)[:160]}).") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path} is not a plain state dict of {what} weights.")
    return state


def _load_part(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or misshaped:
        raise InputError(f"{path} does not hold {what} weights: {len(missing)} missing "
                         f"({', '.join(missing[:4])}), {len(misshaped)} of another shape ({', '.join(misshaped[:4])}).")
    module.load_state_dict({k: state.get(k, expected[k]) for k in expected}, strict=True)


def official_initialisation(network: ColorMNet, backbones: PretrainedBackbones, *, seed: int) -> None:
    """Initialise `network` for training from scratch as the official code does: pretrained DINOv2 and
    ImageNet ResNets (the value encoder's two extra input channels - own and other chroma - get
    orthogonal random weights), an orthogonal key projection with zero bias, Xavier-normal GRU
    transforms, PyTorch's defaults elsewhere."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nn.init.orthogonal_(network.key_proj.key.weight)
        nn.init.zeros_(network.key_proj.key.bias)
        for gru in (network.decoder.hidden_update, network.value_encoder.hidden_reinforce):
            if gru is not None:
                nn.init.xavier_normal_(gru.transform.weight)
        dino = _tensors(backbones.dinov2, "DINOv2 ViT-S/14")
        network.key_encoder.dino.mask_token.copy_(dino.pop("mask_token", network.key_encoder.dino.mask_token))
        _load_part(network.key_encoder.dino.vit, dino, backbones.dinov2, "DINOv2 ViT-S/14")
        _load_part(network.key_encoder.cnn, _tensors(backbones.resnet50, "ResNet-50"), backbones.resnet50,
                   "ResNet-50")
        resnet18 = dict(_tensors(backbones.resnet18, "ResNet-18"))
        conv1 = resnet18.get("conv1.weight")
        if conv1 is not None and conv1.shape[1] == 3:
            extra = torch.zeros(conv1.shape[0], 2, *conv1.shape[2:])
            nn.init.orthogonal_(extra)
            resnet18["conv1.weight"] = torch.cat([conv1, extra], 1)
        _load_part(network.value_encoder.cnn, resnet18, backbones.resnet18, "ResNet-18")
    log.info("initialised from %s, %s and %s", backbones.dinov2.name, backbones.resnet50.name, backbones.resnet18.name)
