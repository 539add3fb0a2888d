"""Value encoder: ResNet-18 on `[L', L', L', own chroma, other chroma]`, fused with the key's f16."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import ResNetTrunk
from .blocks import FeatureFusionBlock, group_conv, gru_update


class HiddenReinforcer(nn.Module):
    """Deep update of the hidden state from a fresh value: GRU over `conv3x3([value, h])`."""

    def __init__(self, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.transform = nn.Conv2d(value_dim + hidden_dim, 3 * hidden_dim, 3, padding=1)

    def forward(self, value: Tensor, h: Tensor) -> Tensor:
        return gru_update(group_conv(self.transform, torch.cat([value, h], dim=2)), h)


class ValueEncoder(nn.Module):
    """Encodes a frame with known (or predicted) chroma into memory values.

    Object i's input is the 3-channel image followed by its own chroma plane and the other one
    (the official multi-object layout: the order matters).
    """

    def __init__(self, value_dim: int = 512, hidden_dim: int = 64) -> None:
        super().__init__()
        self.cnn = ResNetTrunk("resnet18", in_chans=5)
        self.fuser = FeatureFusionBlock(1024, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def forward(
        self, image: Tensor, f16: Tensor, hidden: Tensor, ab: Tensor, *, deep_update: bool
    ) -> tuple[Tensor, Tensor]:
        """image `B x 3 x H x W` (L' x 3), f16 `B x 1024 x H/16 x W/16`, hidden `B x 2 x Ch x h x w`,
        ab `B x 2 x H x W` (a', b' in [-1, 1]) -> (value `B x 2 x Cv x h x w`, hidden)."""
        b = image.shape[0]
        own = ab.unsqueeze(2)                       # B x 2 x 1 x H x W
        other = ab.flip(1).unsqueeze(2)             # with two objects, "the others" is the other plane
        x = torch.cat([image.unsqueeze(1).expand(-1, 2, -1, -1, -1), own, other], dim=2)
        g16 = self.cnn(x.flatten(0, 1)).f16
        if g16.shape[-2:] != f16.shape[-2:]:        # identity for 112-padded inputs
            g16 = F.interpolate(g16, size=f16.shape[-2:], mode="bilinear", align_corners=False)
        value = self.fuser(f16, g16.view(b, 2, *g16.shape[1:]))
        if deep_update and self.hidden_reinforce is not None:
            hidden = self.hidden_reinforce(value, hidden)
        return value, hidden
