"""ColorMNet as named stages: encode_key, encode_value, read_short_term, decode.

The memory read between them has no parameters and lives in `memory.py`; the per-frame schedule
lives in `session.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention import LocalAttention
from .config import NetworkConfig
from .decoder import Decoder, DecoderOutput
from .pvgfe import KeyEncoder, KeyFeatures
from .value_encoder import ValueEncoder

KEY_FEATURE_DIM = 1024   # f16 channels: fixed by the architecture, not derived from a checkpoint


class EncodedKey(NamedTuple):
    """Output of `ColorMNet.encode_key` for `B` frames; h, w = H/16, W/16.

    key `B x Ck x h x w`; shrinkage `B x 1 x h x w` (>= 1) or None; selection `B x Ck x h x w` in (0, 1);
    features: the fused f16/f8/f4 maps (the decoder's skips).
    """

    key: Tensor
    shrinkage: Tensor | None
    selection: Tensor
    features: KeyFeatures


class KeyProjection(nn.Module):
    """Three 3x3 convs on f16: key, shrinkage `s = d^2 + 1`, selection `e = sigmoid(.)`."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.shrinkage = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.selection = nn.Conv2d(in_dim, key_dim, 3, padding=1)

    def forward(self, f16: Tensor, *, need_shrinkage: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        shrinkage = self.shrinkage(f16) ** 2 + 1 if need_shrinkage else None
        return self.key(f16), shrinkage, torch.sigmoid(self.selection(f16))


class ColorMNet(nn.Module):
    """The ColorMNet network (ECCV 2024), 123,609,281 parameters with the release's dimensions
    (DINOv2 ViT-S/14); 189,610,561 with CMNET2's DINOv3 ViT-B/16 key-encoder backbone.

    Inputs are in the official normalised Lab: image = L' = (L - 50)/50 replicated to 3 channels,
    chroma = (a/110, b/110); H and W multiples of 112 (see `preprocess.pad_to_multiple`).
    """

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or NetworkConfig()
        self.key_encoder = KeyEncoder(config.backbone)
        self.key_proj = KeyProjection(KEY_FEATURE_DIM, config.key_dim)
        self.value_encoder = ValueEncoder(config.value_dim, config.hidden_dim)
        self.local_attention = LocalAttention(config.key_dim, 2 * config.value_dim)
        self.decoder = Decoder(config.value_dim, config.hidden_dim)

    def encode_key(self, image: Tensor, *, need_shrinkage: bool = True) -> EncodedKey:
        """image `B x 3 x H x W` -> keys and features of B frames (frames are independent: batch freely)."""
        features = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(features.f16, need_shrinkage=need_shrinkage)
        return EncodedKey(key, shrinkage, selection, features)

    def empty_hidden(self, f16: Tensor) -> Tensor | None:
        """Zero hidden state `B x 2 x Ch x h x w` matching f16's batch, grid, device and dtype."""
        if self.config.hidden_dim == 0:
            return None
        b, _, h, w = f16.shape
        return f16.new_zeros(b, 2, self.config.hidden_dim, h, w)

    def encode_value(
        self, image: Tensor, f16: Tensor, hidden: Tensor | None, ab: Tensor, *, deep_update: bool
    ) -> tuple[Tensor, Tensor | None]:
        """image `B x 3 x H x W`, f16, hidden `B x 2 x Ch x h x w`, ab `B x 2 x H x W` in [-1, 1]
        -> (value `B x 2 x Cv x h x w`, hidden - refreshed by the reinforcer when deep_update)."""
        if hidden is None:
            hidden = self.empty_hidden(f16)
        return self.value_encoder(image, f16, hidden, ab, deep_update=deep_update)

    def read_short_term(self, key: Tensor, memory_key: Tensor, memory_value: Tensor) -> Tensor:
        """LA: key `B x Ck x h x w` against the last memory frame's key and value `B x 2 x Cv x h x w`
        -> `B x 2 x Cv x h x w`, to be added to the memory readout."""
        b, objects, cv, h, w = memory_value.shape
        out = self.local_attention(key, memory_key, memory_value.reshape(b, objects * cv, h, w))
        return out.view(b, objects, cv, h, w)

    def decode(
        self, features: KeyFeatures, readout: Tensor, hidden: Tensor | None, *, update_hidden: bool
    ) -> tuple[Tensor, DecoderOutput]:
        """readout `B x 2 x Cv x h x w` -> (ab = tanh(logits) `B x 2 x H x W` in (-1, 1), raw decoder output)."""
        out = self.decoder(*features, readout, hidden, update_hidden=update_hidden)
        return torch.tanh(out.logits), out
