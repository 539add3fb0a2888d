"""Proximity-weighted memory matching: references close in time count more (CMNET2, HAVC >= 1.0.9).

When many references match a frame's content about equally well but carry different colours, the
top-k softmax averages them towards grey. CMNET2's remedy (`do_softmax` with a group mask, in
model/memory_util.py of dan64/cmnet2, 2026-09-23) re-splits the weight that the references
already get, by their distance in frames; it never changes how much the references weigh in total
against working and long-term memory. For every query pixel, over its top-k memory elements
(values v_1 >= ... >= v_k, the read's own top-k; R = the top-k elements that are references):

    w      = softmax(v)                                   (the unbiased top-k weights)
    W_R    = sum over R of w                              (the references' share: preserved)
    range  = max over R of v - min over R of v            (0 when R is empty)
    d_j    = |t - tag_j| for j in R                       (t: the frame being coloured; tag: the frame
                                                           the reference was given at)
    dn_j   = d_j / max over R of d   (0 when that max is 0: no reference is farther than another)
    u_j    = softmax over R of (v_j - alpha * dn_j * range)
    weight = W_R * u_j for j in R, w_j otherwise

alpha (`MemoryConfig.proximity_bias`) is relative to the pixel's own spread of reference scores, so
it means the same at any similarity scale: 0 leaves the split by similarity alone (up to
rounding), larger values move the references' share towards the nearest ones. Working and
long-term memory are never penalised (they already favour recent frames). Only the permanent
references tagged with a frame form the group R: the first-frame pin of the official schedule and
untagged references are outside it.

The arithmetic follows CMNET2's order of operations (max-subtracted softmax, distances normalised
by the group's maximum) so that results agree to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def proximity_weights(values: Tensor, indices: Tensor, in_group: Tensor, distance: Tensor, alpha: float) -> Tensor:
    """Top-k weights with the references' share re-split by temporal distance.

    values: `1 x k x n` top-k similarities of n query pixels (sorted descending); indices: their
    memory elements `1 x k x n`; in_group: bool `N` (memory elements that are tagged references);
    distance: float32 `N` (|t - tag| for references, ignored elsewhere); alpha >= 0.
    Returns weights `1 x k x n` summing to 1 over k.
    """
    is_group = in_group[indices]
    dist = distance.to(values.dtype)[indices]
    w_full = torch.softmax(values, dim=1)
    share = (w_full * is_group).sum(dim=1, keepdim=True)
    has_group = is_group.any(dim=1, keepdim=True)
    group_max = torch.where(is_group, values, torch.full_like(values, float("-inf"))).max(dim=1, keepdim=True).values
    group_min = torch.where(is_group, values, torch.full_like(values, float("inf"))).min(dim=1, keepdim=True).values
    spread = torch.where(has_group, group_max - group_min, torch.zeros_like(group_max))
    farthest = torch.where(is_group, dist, torch.zeros_like(dist)).max(dim=1, keepdim=True).values
    normalised = torch.where(farthest > 0, dist / torch.clamp(farthest, min=1e-12), torch.zeros_like(dist))
    penalty = alpha * normalised * spread
    inside = torch.softmax(torch.where(is_group, values - penalty, torch.full_like(values, float("-inf"))), dim=1)
    inside = torch.nan_to_num(inside, nan=0.0)      # pixels with no reference in their top-k: 0 * NaN
    return torch.where(is_group, inside * share, w_full)
