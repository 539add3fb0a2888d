"""Building blocks shared by the value encoder and the decoder (XMem's "group" modules).

Tensors named `g` are per-object: `B x O x C x H x W`, with O = 2 chroma channels (object 0
predicts a', object 1 predicts b'). Convolutions fold O into the batch and share weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .winograd import Conv3x3, conv3x3


def group_conv(conv: nn.Conv2d, g: Tensor) -> Tensor:
    """Apply an ordinary conv to every object of `g: B x O x C x H x W`."""
    b, o = g.shape[:2]
    out = conv(g.flatten(0, 1))
    return out.view(b, o, *out.shape[1:])


def group_resize(g: Tensor, scale: float, mode: str) -> Tensor:
    """Resize every object of `g: B x O x C x H x W` by `scale` (bilinear, align_corners=False, or area)."""
    b, o = g.shape[:2]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(g.flatten(0, 1), scale_factor=scale, mode=mode, **kwargs)
    return out.view(b, o, *out.shape[1:])


def broadcast_cat(x: Tensor, g: Tensor) -> Tensor:
    """Concatenate a shared map `x: B x C x H x W` before each object's channels of `g`."""
    return torch.cat([x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1), g], dim=2)


def gru_update(gates: Tensor, h: Tensor) -> Tensor:
    """XMem's GRU variant: `h' = f * h * (1 - u) + u * tanh(c)` (no reset gate).

    gates: `B x O x 3C x H x W` ordered forget, update, candidate; h: `B x O x C x H x W`.
    """
    dim = h.shape[2]
    forget = torch.sigmoid(gates[:, :, :dim])
    update = torch.sigmoid(gates[:, :, dim:2 * dim])
    candidate = torch.tanh(gates[:, :, 2 * dim:])
    return forget * h * (1 - update) + update * candidate


class GroupResBlock(nn.Module):
    """`conv(relu(conv(relu(g)))) + shortcut(g)`; the shortcut is a 3x3 conv when widths differ."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.downsample = Conv3x3(in_dim, out_dim) if in_dim != out_dim else None
        self.conv1 = Conv3x3(in_dim, out_dim)
        self.conv2 = Conv3x3(out_dim, out_dim)

    def forward(self, g: Tensor) -> Tensor:
        out = group_conv(self.conv2, F.relu(group_conv(self.conv1, F.relu(g))))
        shortcut = g if self.downsample is None else group_conv(self.downsample, g)
        return out + shortcut

    def forward_shared(self, x: Tensor, g: Tensor) -> Tensor:
        """`forward(broadcast_cat(x, g))` with x's share of the first convolutions computed once.

        A conv over `[x, g_o]` is a conv over x plus a conv over g_o (the weight split by input
        channel), and ReLU acts per channel, so x (the same for every object) is convolved once
        instead of once per object. x: `B x Cx x H x W`, g: `B x O x Cg x H x W`.
        """
        if self.downsample is None:
            return self.forward(broadcast_cat(x, g))
        split = x.shape[1]

        def conv(layer: nn.Conv2d, shared: Tensor, own: Tensor) -> Tensor:
            weight = layer.weight
            common = conv3x3(shared, weight[:, :split], layer.bias)
            b, o = own.shape[:2]
            mine = conv3x3(own.flatten(0, 1), weight[:, split:])
            return mine.view(b, o, *mine.shape[1:]) + common.unsqueeze(1)

        out = group_conv(self.conv2, F.relu(conv(self.conv1, F.relu(x), F.relu(g))))
        return out + conv(self.downsample, x, g)


class ChannelGate(nn.Module):
    """CBAM channel gate: `x * sigmoid(MLP(avgpool x) + MLP(maxpool x))`, reduction 16."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # Sequential indices 1 and 3 hold the weights, as in the checkpoint (`mlp.1`, `mlp.3`).
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
            nn.Linear(channels // reduction, channels))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)


class SpatialGate(nn.Module):
    """CBAM spatial gate: `x * sigmoid(conv7x7([max over channels, mean over channels]))`."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial.conv(pooled))


class CBAM(nn.Module):
    """Convolutional block attention module: channel gate then spatial gate (returns the gated map)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)   # checkpoint names
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """`block2(g + CBAM(g))` with `g = block1([x, g])`: merges a shared map x into per-object features."""

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupResBlock(mid_dim, out_dim)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """x: `B x x_dim x H x W`, g: `B x O x g_dim x H x W` -> `B x O x out_dim x H x W`."""
        g = self.block1.forward_shared(x, g)
        r = self.attention(g.flatten(0, 1)).view_as(g)
        return self.block2(g + r)
