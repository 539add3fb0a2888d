"""Decoder: readout + hidden state -> a', b' logits at full resolution, and the next hidden state."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import FeatureFusionBlock, GroupResBlock, group_conv, group_resize, gru_update
from .winograd import Conv3x3


class DecoderOutput(NamedTuple):
    """logits `B x 2 x H x W` (before tanh); hidden `B x 2 x Ch x h x w`, or None when not updated."""

    logits: Tensor
    hidden: Tensor | None


class HiddenUpdater(nn.Module):
    """GRU update of the hidden state from the decoder's features at strides 16, 8 and 4.

    The stride-4 features carry the pre-tanh logit as an extra (257th) channel; the finer maps are
    average-pooled down to stride 16.
    """

    def __init__(self, mid_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.g16_conv = nn.Conv2d(mid_dims[0], mid_dim, 1)
        self.g8_conv = nn.Conv2d(mid_dims[1], mid_dim, 1)
        self.g4_conv = nn.Conv2d(mid_dims[2] + 1, mid_dim, 1)
        self.transform = Conv3x3(mid_dim + hidden_dim, 3 * hidden_dim)

    def forward(self, g16: Tensor, g8: Tensor, g4: Tensor, h: Tensor) -> Tensor:
        g = (group_conv(self.g16_conv, g16)
             + group_conv(self.g8_conv, group_resize(g8, 0.5, "area"))
             + group_conv(self.g4_conv, group_resize(g4, 0.25, "area")))
        return gru_update(group_conv(self.transform, torch.cat([g, h], dim=2)), h)


class UpsampleBlock(nn.Module):
    """`res(conv3x3(skip) + bilinear x2(g))`: one step up the decoder."""

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = Conv3x3(skip_dim, up_dim)
        self.out_conv = GroupResBlock(up_dim, out_dim)

    def forward(self, skip: Tensor, g: Tensor) -> Tensor:
        g = group_resize(g, 2, "bilinear") + self.skip_conv(skip).unsqueeze(1)
        return self.out_conv(g)


class Decoder(nn.Module):
    """Per-object decoder sharing the key encoder's f16/f8/f4 as skips."""

    def __init__(self, value_dim: int = 512, hidden_dim: int = 64) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fuser = FeatureFusionBlock(1024, value_dim + hidden_dim, 512, 512)
        self.hidden_update = HiddenUpdater((512, 256, 256), 256, hidden_dim) if hidden_dim > 0 else None
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(
        self, f16: Tensor, f8: Tensor, f4: Tensor, readout: Tensor, hidden: Tensor | None, *, update_hidden: bool
    ) -> DecoderOutput:
        """readout `B x 2 x Cv x h x w`, hidden `B x 2 x Ch x h x w` (or None without a hidden state)."""
        g = readout if self.hidden_update is None else torch.cat([readout, hidden], dim=2)
        g16 = self.fuser(f16, g)
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logit4 = group_conv(self.pred, F.relu(g4))                     # B x 2 x 1 x 4h x 4w
        new_hidden = None
        if update_hidden and self.hidden_update is not None:
            new_hidden = self.hidden_update(g16, g8, torch.cat([g4, logit4], dim=2), hidden)
        # The official order: upsample the logit x4 first, tanh afterwards (done by the caller).
        logits = F.interpolate(logit4.flatten(1, 2), scale_factor=4, mode="bilinear", align_corners=False)
        return DecoderOutput(logits, new_hidden)
