"""What training changes in each checkpoint family: the one place that decides which parts are frozen.

ColorMNet (the official family, DINOv2 ViT-S/14 key-encoder branch): the official `Segmentor`
runs DINOv2 *and* its 1x1 conv + BatchNorm (`network2.conv3`, `network2.bn3`) under `no_grad`, so
those weights never change in training - they stay what the checkpoint (or the DINOv2 release)
holds. Everything else is trained. Freezing by `requires_grad_(False)` is the same computation: no
gradient reaches them, nothing is kept for a backward pass, and AdamW leaves them untouched (the
official AdamW skips them because their gradient is None).

A family whose backbone is fine-tuned end to end adds its case to `frozen_modules` returning
fewer modules (or none).
"""

from __future__ import annotations

import logging

from torch import nn

from ..network import ColorMNet
from ..pvgfe import DinoFeatures

log = logging.getLogger(__name__)


def frozen_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every part of `network` that training must not change, by family."""
    if isinstance(network, ColorMNet) and isinstance(network.key_encoder.dino, DinoFeatures):
        return [("key_encoder.dino", network.key_encoder.dino)]
    raise TypeError(f"no training rule for a {type(network).__name__} with a "
                    f"{type(getattr(getattr(network, 'key_encoder', None), 'dino', None)).__name__} backbone; "
                    f"add its family to colormnet_core.training.families.frozen_modules.")


def prepare_for_training(network: nn.Module) -> list[nn.Parameter]:
    """Freeze the family's frozen parts, put the network in eval mode and return the trainable parameters.

    Eval mode throughout, as the official trainer (XMem's convention): BatchNorm uses and keeps its
    running statistics, dropout is off. Returns the parameters to optimise, in module order.
    """
    network.eval()
    frozen = frozen_modules(network)
    for _, module in frozen:
        module.requires_grad_(False)
    trainable = [p for p in network.parameters() if p.requires_grad]
    log.info("training %d parameters; frozen: %s", sum(p.numel() for p in trainable),
             ", ".join(name for name, _ in frozen) or "nothing")
    return trainable
