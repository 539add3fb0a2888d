"""One training clip through the network and its loss, as the official trainer computes them.

Per batch of clips (official `ColorMNetTrainer.do_pass`, stage 2):
1. keys and key features of all T frames at once;
2. frame 0's value from its true chroma (the exemplar), with a deep update of a zero hidden state;
3. for t = 1..T-1: a plain softmax read over the reference frames (`draws`), plus LA from frame t-1's
   key and value; the decoder predicts a', b' = tanh(logits) and updates the hidden state (not at
   the last frame); the prediction - not the truth - is encoded as frame t's value, deep-updating
   the hidden state when the step's coin says so;
4. loss = sum over t = 1..T-1 of mean |prediction_t - truth_t| (L1 in normalised a', b').
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..memory import softmax_readout
from ..network import ColorMNet
from ..pvgfe import KeyFeatures
from .draws import StepDraws


class ClipBatch(NamedTuple):
    """A batch of training clips in the official normalised Lab space.

    image `B x T x 3 x H x W`: L' = (L - 50)/50 replicated to 3 channels; ab `B x T x 2 x H x W`:
    the true a' = a/110, b' = b/110 (frame 0's is the exemplar the clip starts from). H and W are
    multiples of 112 (DINOv2's patch 14 and the stride 16).
    """

    image: Tensor
    ab: Tensor

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(self.image.to(device, non_blocking=True), self.ab.to(device, non_blocking=True))


class ClipLoss(NamedTuple):
    """total: scalar, the sum of `frames`; frames `T-1`: mean |prediction - truth| of frames 1..T-1."""

    total: Tensor
    frames: Tensor


def check_batch(batch: ClipBatch, num_ref_frames: int) -> None:
    b, t, c, h, w = batch.image.shape
    if batch.ab.shape != (b, t, 2, h, w) or c != 3:
        raise InputError(f"a training batch needs image B x T x 3 x H x W and ab B x T x 2 x H x W, got "
                         f"{tuple(batch.image.shape)} and {tuple(batch.ab.shape)}.")
    if h % 112 or w % 112:
        raise InputError(f"training frames must be multiples of 112 pixels on each side, got {h}x{w}: "
                         f"crop or resize them (the official crop is 448x448).")
    if t < 2:
        raise InputError(f"a training clip needs at least 2 frames, got {t}.")


def _per_clip(tensor: Tensor, frames: list[list[int]]) -> Tensor:
    """tensor `B x T x C x h x w`, frames[b]: indices of one length -> `B x C x (len * h * w)`,
    memory elements ordered (frame, y, x) as the official readout flattens them."""
    picked = torch.stack([tensor[b, idx] for b, idx in enumerate(frames)])       # B x n x C x h x w
    return picked.transpose(1, 2).flatten(2)


def clip_loss(network: ColorMNet, batch: ClipBatch, draws: StepDraws, *, num_ref_frames: int = 3,
              clip_offset: int = 0) -> ClipLoss:
    """The official training forward of a batch of clips and its L1 loss (see the module docstring).

    clip_offset: the index of this batch's first clip in the step's global batch (the rank's share
    under data parallelism), so that `draws` give every clip the same choices on any number of
    processes. Runs in the current autocast / grad mode; the caller owns backward and the optimizer.
    """
    check_batch(batch, num_ref_frames)
    image, truth = batch.image, batch.ab
    b, t_count = image.shape[:2]
    encoded = network.encode_key(image.flatten(0, 1))
    h, w = encoded.key.shape[-2:]

    def per_frame(x: Tensor) -> Tensor:
        return x.view(b, t_count, *x.shape[1:])

    key, shrinkage, selection = per_frame(encoded.key), per_frame(encoded.shrinkage), per_frame(encoded.selection)
    features = KeyFeatures(*(per_frame(f) for f in encoded.features))
    hidden = network.empty_hidden(features.f16[:, 0])
    value, hidden = network.encode_value(image[:, 0], features.f16[:, 0], hidden, truth[:, 0], deep_update=True)
    values = [value]                                                   # B x 2 x Cv x h x w per frame
    losses = []
    total: Tensor | int = 0
    for t in range(1, t_count):
        refs = [list(draws.reference_frames(t, clip_offset + i)) for i in range(b)]
        stacked = torch.stack(values, 1)                               # B x t x 2 x Cv x h x w
        readout = softmax_readout(
            _per_clip(key, refs), _per_clip(shrinkage, refs), _per_clip(stacked.flatten(2, 3), refs),
            key[:, t].flatten(2), selection[:, t].flatten(2))
        readout = readout.view(b, 2, -1, h, w) + network.read_short_term(key[:, t], key[:, t - 1], values[t - 1])
        last = t == t_count - 1
        ab, decoded = network.decode(KeyFeatures(*(f[:, t] for f in features)), readout, hidden,
                                     update_hidden=not last)
        if not last:
            hidden = decoded.hidden
            value, hidden = network.encode_value(image[:, t], features.f16[:, t], hidden, ab,
                                                 deep_update=draws.deep_update(t))
            values.append(value)
        loss = (ab - truth[:, t]).abs().mean()
        losses.append(loss)
        total = total + loss
    return ClipLoss(total, torch.stack([x.detach() for x in losses]))


class ClipObjective(nn.Module):
    """`clip_loss` as a module, so that DistributedDataParallel can wrap the whole step (our network
    has named stages and no `forward`)."""

    def __init__(self, network: ColorMNet, *, num_ref_frames: int = 3) -> None:
        super().__init__()
        self.network = network
        self.num_ref_frames = num_ref_frames

    def forward(self, batch: ClipBatch, draws: StepDraws, clip_offset: int = 0) -> ClipLoss:
        return clip_loss(self.network, batch, draws, num_ref_frames=self.num_ref_frames, clip_offset=clip_offset)
