"""Match confidence: how well a frame's colours are backed by an exemplar, from the memory read.

Definition. For a query pixel i of frame t, let j be the memory element with the highest similarity
S_ij (the anisotropic negative squared L2 of the MFP read, <= 0) and c_j the confidence of the frame
j was memorised from (1 for exemplars and references). The pixel's confidence is exp(S_ij) * c_j
and the frame's is its mean over the stride-16 pixels; a frame with a pinned exemplar has 1.

Why this form:
* exp(S) is the unnormalised affinity the top-k softmax weights. Its maximum says how close the
  nearest memory pixel is, in [0, 1], whatever the memory size; the normalised affinity would not
  (one vague match and one exact match both get weight 1).
* Colours travel from exemplars through memorised frames, so a frame is only as trustworthy as
  what it copies from. Without the factor c_j, a shot read against another shot's memory looks
  uncertain for a few frames and then "confident" again as soon as its own (wrongly coloured)
  frames are memorised; with it, the doubt is inherited and stays until an exemplar comes.
* Cost: the read's own top-k (values and memory indices) plus a gather and a mean per frame; the
  element-to-frame map needs only the store sizes (`MFPMemory.stats`).

Long-term prototypes average their source frames, so the long-term store carries the mean
confidence of all frames consolidated into it.

Consequences to know: confidence decays along a propagation chain (each memorised frame passes on
its own value), so far from any exemplar it sinks even in a steady shot, which is where drift
builds up too; and exp(S) is absolute, so its level depends on the checkpoint's similarity scale
(measured here only on the golden fixture network: 0.7-0.95 after an exemplar, ~0.3 in a shot read
against another shot's memory). `shots.needs_exemplar(low=...)` may need retuning on real weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory import MemoryStats, MFPMemory
from .preprocess import Geometry


class MemoryConfidence:
    """Mirrors the confidence of every frame in one `MFPMemory` (one per memory; not thread-safe).

    Call `added` after every `MFPMemory.add` (with the stats taken just before it) and `frame` after
    a `MFPMemory.read`.
    """

    def __init__(self, memory: MFPMemory) -> None:
        self.memory = memory
        self.permanent: list[Tensor] = []      # one 0-dim tensor per permanent frame, in store order
        self.working: list[Tensor] = []        # one per working-memory frame, oldest first
        self._long_term_sum: Tensor | float = 0.0
        self._long_term_frames = 0

    def added(self, before: MemoryStats, confidence: Tensor | float) -> None:
        """Record the frame just memorised; `before` = `memory.stats` before the add."""
        after = self.memory.stats
        store = self.memory.permanent if after.permanent > before.permanent else self.memory.working
        value = torch.as_tensor(confidence, dtype=torch.float32, device=store.key.device)
        if after.permanent > before.permanent:
            self.permanent.append(value)
            return
        self.working.append(value)
        kept = after.working // after.frame_elements
        if kept < len(self.working):         # a consolidation moved the oldest frames to long-term
            moved, self.working = self.working[:len(self.working) - kept], self.working[len(self.working) - kept:]
            self._long_term_sum = self._long_term_sum + torch.stack(moved).sum()
            self._long_term_frames += len(moved)

    def frame(self) -> Tensor:
        """Confidence (0-dim float32 tensor in [0, 1], on the memory's device) of the last read."""
        return self.pixels().mean()

    def pixels(self) -> Tensor:
        """Per-pixel confidence of the last read: float32 `n` in [0, 1], one per query pixel of the
        stride-16 grid (row-major), on the memory's device; `frame()` is its mean."""
        memory = self.memory
        similarity, index = memory.last_read_similarity, memory.last_read_index
        stats, hw = memory.stats, memory.frame_elements
        device = similarity.device
        parts = []
        if stats.references:       # CMNET2's references given at a frame: colour sources, like exemplars
            parts.append(torch.ones(stats.references, dtype=torch.float32, device=device))
        if stats.long_term:
            mean = self._long_term_sum / max(self._long_term_frames, 1)
            parts.append(torch.as_tensor(mean, dtype=torch.float32, device=device).expand(stats.long_term))
        for frames in (self.permanent, self.working):
            if frames:
                parts.append(torch.stack(frames).repeat_interleave(hw))
        source = torch.cat(parts)
        return similarity[0].exp() * source[index[0]]


def pixel_map(grids: Tensor, geometry: Geometry) -> Tensor:
    """Per-pixel confidence at the processing size: grids `B x h16 x w16` (the stride-16 grid of the
    padded frame, `MemoryConfidence.pixels` reshaped) -> `B x 1 x h x w` float32 in [0, 1], unpadded
    like the session's chroma. Bilinear (align_corners=False), which puts each grid value at the
    centre of its 16 x 16 block, as the network's own upsampling does."""
    up = F.interpolate(grids[:, None].float(), scale_factor=16, mode="bilinear", align_corners=False)
    return geometry.padding.crop(up).contiguous()
