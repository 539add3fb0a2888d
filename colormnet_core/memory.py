"""MFP - memory feature propagation: XMem-style working, long-term and (ours) permanent memory.

Elements are pixels of the stride-16 grid; one frame contributes HW = h*w elements. Shapes
(batch is always 1): key `1 x Ck x N`, shrinkage `1 x 1 x N`, selection `1 x Ck x N`,
value `2 x Cv x N` (the two chroma "objects" share keys and affinities).

Stores:
* permanent - never consolidated, never pruned. Official mode puts the first memory frame here
  (XMem pins the first working-memory frame); with `permanent_exemplars` every exemplar goes here.
* working (WM) - the newest memory frames. When WM plus the pinned slot reaches T_max frames, its
  oldest frames are consolidated into P long-term prototypes and T_min - 1 frames stay.
* long-term (LT) - prototypes, pruned by normalised usage to stay within LT_max elements.
* references - CMNET2's permanent memory ("perm_mem"): references given at a frame (`add_reference`),
  each element tagged with that frame, never consolidated or pruned, no usage counting. Only these
  take part in proximity-weighted matching (`proximity.py`, `MemoryConfig.proximity_bias`).

A read concatenates [references, LT, permanent, WM] (the official [LT, WM] order, CMNET2's
references first as in its [perm_mem, LT, WM]: a reference also memorised as the first working
frame has two identical copies, and which one a top-k tie keeps decides whether it is in the
proximity group) and takes one top-k softmax over all of them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .config import MemoryConfig
from .proximity import proximity_weights

# Upper bound on memory-by-query similarity entries computed at once (4 bytes each; the similarity
# and one temporary of its size coexist); large memories are read in bands of query pixels.
READ_CHUNK_ELEMENTS = 1 << 23

MemoryEventHook = Callable[[str, dict], None]


def similarity(mem_key: Tensor, mem_shrinkage: Tensor | None, query_key: Tensor, query_selection: Tensor) -> Tensor:
    """Anisotropic negative squared L2: `S_ji = -s_j * sum_c e_ic (k_jc - q_ic)^2 / sqrt(Ck)`.

    mem_key `1 x Ck x N`, mem_shrinkage `1 x 1 x N`, query_key/selection `1 x Ck x n` -> `1 x N x n`,
    a view of a query-major `n x N` buffer, so that a top-k over memory (dim 1) reads contiguous
    values. Evaluated in the expanded form the official code uses (it decides near-tie top-k
    choices), in place on that one buffer: `2 (q e)^T K` equals `(2 q e)^T K` bit for bit and
    `-a + b` equals `b - a`, so the values are the official ones.
    """
    query_t = (2 * (query_key * query_selection)).transpose(1, 2)               # 1 x n x Ck
    sim = query_t @ mem_key
    sim -= query_selection.transpose(1, 2) @ mem_key.pow(2)
    sim -= (query_selection * query_key.pow(2)).sum(1).unsqueeze(-1)
    if mem_shrinkage is not None:
        sim *= mem_shrinkage
    return sim.div_(math.sqrt(mem_key.shape[1])).transpose(1, 2)


class TopK(NamedTuple):
    """The top-k of every query pixel: similarity values (sorted descending), their softmax
    weights and memory indices, each `1 x k x n`."""

    values: Tensor
    weights: Tensor
    indices: Tensor


def top_k_affinity(sim: Tensor, top_k: int) -> TopK:
    """Softmax over the top-k memory elements of every query (`sim`: `1 x N x n`), kept sparse.

    The official code exponentiates without subtracting the maximum; S <= 0 makes that safe,
    and keeping it keeps its rounding. `dense_affinity` gives the official `N x n` matrix.
    """
    values, indices = torch.topk(sim, k=min(top_k, sim.shape[1]), dim=1)
    weights = values.exp()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return TopK(values, weights, indices)


def dense_affinity(top: TopK, memory_size: int) -> Tensor:
    """The top-k weights scattered into a zero `1 x N x n` affinity (reference and tests only)."""
    dense = top.weights.new_zeros(1, memory_size, top.weights.shape[-1])
    return dense.scatter_(1, top.indices, top.weights)


def gather_readout(mem_value_t: Tensor, top: TopK) -> Tensor:
    """`sum_k w_kj v(i_kj)` for every query j: mem_value_t `N x C` (memory values, element-major),
    top-k of `n` queries -> `C x n`. Touches k x n values instead of multiplying by an N x n matrix
    that is zero except for k entries per column."""
    k, n = top.indices.shape[-2:]
    index, weights = top.indices[0].t(), top.weights[0].t().to(mem_value_t.dtype)   # n x k, query-major
    if mem_value_t.device.type == "cpu" and mem_value_t.dtype == torch.float32:
        # CSR (k entries per query row) times dense: one MKL call, no n x k x C temporary. The
        # indices come from topk, so the (costly) invariant checks are skipped.
        rows = torch.arange(0, n * k + 1, k, device=index.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            affinity = torch.sparse_csr_tensor(rows, index.reshape(-1), weights.reshape(-1),
                                               size=(n, mem_value_t.shape[0]), check_invariants=False)
        with torch.autocast("cpu", enabled=False):
            return (affinity @ mem_value_t).t()
    out = mem_value_t.new_empty(mem_value_t.shape[1], n)
    step = max(1, (1 << 22) // (k * mem_value_t.shape[1]))     # bounds the gathered rows to ~16 MB
    for start in range(0, n, step):
        part = slice(start, start + step)
        picked = mem_value_t.index_select(0, index[part].reshape(-1)).view(-1, k, mem_value_t.shape[1])
        out[:, part] = (weights[part].unsqueeze(1) @ picked).squeeze(1).t()
    return out


def full_affinity(sim: Tensor) -> Tensor:
    """Plain softmax over memory (dim 1) with max subtraction, as used by potentiation."""
    shifted = (sim - sim.amax(dim=1, keepdim=True)).exp()
    return shifted / shifted.sum(dim=1, keepdim=True)


def softmax_readout(mem_key: Tensor, mem_shrinkage: Tensor, mem_value: Tensor,
                    query_key: Tensor, query_selection: Tensor) -> Tensor:
    """The training-time memory read: a plain softmax over every memory element (no top-k), batched.

    mem_key `B x Ck x N`, mem_shrinkage `B x 1 x N`, mem_value `B x C x N`, query_key/selection
    `B x Ck x n` -> readout `B x C x n`. Differentiable; the official trainer reads its few
    reference frames this way (XMem's `get_affinity` + `readout`), inference uses `MFPMemory.read`.
    """
    return mem_value @ full_affinity(similarity(mem_key, mem_shrinkage, query_key, query_selection))


@dataclass
class KeyValueStore:
    """One memory store; counters (float32) only when `count_usage` (usage = use_count / life_count)."""

    count_usage: bool
    key: Tensor | None = None
    shrinkage: Tensor | None = None
    selection: Tensor | None = None
    value: Tensor | None = None
    use_count: Tensor | None = None
    life_count: Tensor | None = None

    @property
    def size(self) -> int:
        return 0 if self.key is None else self.key.shape[-1]

    def add(self, key: Tensor, shrinkage: Tensor, selection: Tensor | None, value: Tensor) -> None:
        n = key.shape[-1]
        counts = torch.zeros(1, 1, n, device=key.device, dtype=torch.float32)
        new = {"key": key, "shrinkage": shrinkage, "selection": selection, "value": value,
               "use_count": counts, "life_count": counts + 1e-7}
        for name, tensor in new.items():
            old = getattr(self, name)
            if tensor is None or (name in ("use_count", "life_count") and not self.count_usage):
                continue
            setattr(self, name, tensor if old is None else torch.cat([old, tensor], dim=-1))

    def update_usage(self, usage: Tensor) -> None:
        """usage: `N` (affinity summed over the query pixels of one read)."""
        if self.count_usage and self.size:
            self.use_count += usage.view_as(self.use_count)
            self.life_count += 1

    def usage(self) -> Tensor:
        return (self.use_count / self.life_count).flatten()

    def select(self, index: Tensor | slice) -> dict[str, Tensor | None]:
        return {name: None if t is None else t[..., index] for name, t in self._tensors().items()}

    def keep(self, index: Tensor | slice) -> None:
        for name, t in self.select(index).items():
            setattr(self, name, t)

    def _tensors(self) -> dict[str, Tensor | None]:
        return {"key": self.key, "shrinkage": self.shrinkage, "selection": self.selection, "value": self.value,
                "use_count": self.use_count, "life_count": self.life_count}


@dataclass
class MemoryStats:
    """Sizes in elements, for logging, tests and the benchmarks."""

    permanent: int
    working: int
    long_term: int
    frame_elements: int
    references: int = 0


@dataclass
class MFPMemory:
    """The memory of one video. Not thread-safe; one per session."""

    config: MemoryConfig
    on_event: MemoryEventHook | None = None
    frame_elements: int = 0                     # HW, fixed by the first insertion
    permanent: KeyValueStore = field(default_factory=lambda: KeyValueStore(count_usage=False))
    references: KeyValueStore = field(default_factory=lambda: KeyValueStore(count_usage=False))
    reference_tags: Tensor | None = field(default=None, init=False)       # float32 N: each element's frame
    working: KeyValueStore = field(init=False)
    long_term: KeyValueStore = field(init=False)
    last_read_similarity: Tensor | None = field(default=None, init=False)   # float32 k x n, set by read
    last_read_index: Tensor | None = field(default=None, init=False)        # its memory elements, int64 k x n

    def __post_init__(self) -> None:
        # Working-memory usage feeds consolidation; long-term usage feeds pruning. The official code
        # turns LT counting on only for videos of >= 391 frames; counting never changes a readout,
        # so counting always is output-identical and needs no video length (streaming).
        self.working = KeyValueStore(count_usage=self.config.enable_long_term)
        self.long_term = KeyValueStore(count_usage=self.config.enable_long_term)

    @property
    def stats(self) -> MemoryStats:
        return MemoryStats(self.permanent.size, self.working.size, self.long_term.size, self.frame_elements,
                           self.references.size)

    @property
    def empty(self) -> bool:
        return self.permanent.size + self.working.size == 0

    def add(self, key: Tensor, shrinkage: Tensor, selection: Tensor, value: Tensor, *,
            permanent: bool, frame_index: int) -> None:
        """Memorise one frame. key/selection `1 x Ck x h x w`, shrinkage `1 x 1 x h x w`,
        value `1 x 2 x Cv x h x w`. `permanent` asks for the never-evicted store; official mode
        (`permanent_exemplars=False`) pins only the first memory frame, like XMem."""
        hw = key.shape[-2] * key.shape[-1]
        if self.frame_elements == 0:
            self.frame_elements = hw
        elif hw != self.frame_elements:
            raise ValueError(f"memory frames must share one grid: {hw} elements, not {self.frame_elements}")
        if not self.config.permanent_exemplars:
            permanent = self.empty
        store = self.permanent if permanent else self.working
        store.add(key.flatten(2), shrinkage.flatten(2), selection.flatten(2), value[0].flatten(2))
        if self.config.enable_long_term and not permanent:
            self._consolidate_if_full(frame_index)

    def add_reference(self, key: Tensor, shrinkage: Tensor, value: Tensor, *, tag: int) -> None:
        """Memorise a reference given at frame `tag` in CMNET2's permanent memory (never evicted).
        key `1 x Ck x h x w`, shrinkage `1 x 1 x h x w`, value `1 x 2 x Cv x h x w`."""
        hw = key.shape[-2] * key.shape[-1]
        if self.frame_elements == 0:
            self.frame_elements = hw
        elif hw != self.frame_elements:
            raise ValueError(f"memory frames must share one grid: {hw} elements, not {self.frame_elements}")
        self.references.add(key.flatten(2), shrinkage.flatten(2), None, value[0].flatten(2))
        tags = torch.full((hw,), float(tag), device=key.device, dtype=torch.float32)
        self.reference_tags = tags if self.reference_tags is None else torch.cat([self.reference_tags, tags])

    def read(self, key: Tensor, selection: Tensor, *, frame_index: int | None = None) -> Tensor:
        """Top-k readout for a query frame: key/selection `1 x Ck x h x w` -> `1 x 2 x Cv x h x w`.

        frame_index: the frame being coloured ("now" for proximity-weighted matching; the bias
        applies only with `config.proximity_bias > 0`, references in memory and a frame index).
        Updates the usage counters (the read is not idempotent) and sets `last_read_similarity`:
        float32 `k x n`, the top-k similarities of each of the n = h*w query pixels, sorted
        descending (k = min(top_k, memory size)) and `last_read_index`, their memory elements in
        [references, long-term, permanent, working] order."""
        h, w = key.shape[-2:]
        query = key.flatten(2)
        query_sel = selection.flatten(2)
        stores = [s for s in (self.references, self.long_term, self.permanent, self.working) if s.size]
        mem_key = torch.cat([s.key for s in stores], dim=-1)
        mem_shrinkage = torch.cat([s.shrinkage for s in stores], dim=-1)
        # Element-major values (N x 2Cv), so that a gathered element is one contiguous row.
        mem_value_t = torch.cat([s.value.flatten(0, 1).t() for s in stores], dim=0)
        n_mem, n_query = mem_key.shape[-1], query.shape[-1]
        band = max(1, min(n_query, READ_CHUNK_ELEMENTS // n_mem))
        readouts, similarities, indices = [], [], []
        usage = torch.zeros(n_mem, device=key.device, dtype=torch.float32)
        alpha = self.config.proximity_bias
        biased = alpha > 0 and self.references.size > 0 and frame_index is not None
        if biased:
            in_group = torch.zeros(n_mem, dtype=torch.bool, device=key.device)
            in_group[:self.references.size] = True
            distance = torch.zeros(n_mem, dtype=torch.float32, device=key.device)
            distance[:self.references.size] = (frame_index - self.reference_tags).abs()
        for start in range(0, n_query, band):
            part = slice(start, start + band)
            top = top_k_affinity(similarity(mem_key, mem_shrinkage, query[..., part], query_sel[..., part]),
                                 self.config.top_k)
            if biased:
                top = top._replace(weights=proximity_weights(top.values, top.indices, in_group, distance, alpha))
            # Query-major order: each element's contributions arrive in query order, as in a row sum.
            usage.index_add_(0, top.indices[0].t().reshape(-1), top.weights[0].t().reshape(-1).float())
            readouts.append(gather_readout(mem_value_t, top))
            similarities.append(top.values[0].float())
            indices.append(top.indices[0])
        offset = 0
        for s in stores:
            s.update_usage(usage[offset:offset + s.size])
            offset += s.size
        self.last_read_similarity = torch.cat(similarities, dim=-1)   # top-k per query pixel, descending
        self.last_read_index = torch.cat(indices, dim=-1)             # [references, long-term, permanent, working]
        readout = torch.cat(readouts, dim=-1) if len(readouts) > 1 else readouts[0]
        return readout.view(1, 2, -1, h, w)

    # -- long-term machinery -------------------------------------------------------------------

    def _consolidate_if_full(self, frame_index: int) -> None:
        cfg, hw = self.config, self.frame_elements
        # T_max and T_min count the pinned slot, as in XMem where it is working memory's first frame.
        if self.working.size < (cfg.max_mid_term_frames - 1) * hw:
            return
        if self.long_term.size >= cfg.max_long_term_elements - cfg.num_prototypes:
            self._prune_long_term(cfg.max_long_term_elements - cfg.num_prototypes, frame_index)
        end = self.working.size - (cfg.min_mid_term_frames - 1) * hw
        candidates = self.working.select(slice(0, end))
        usage = self.working.usage()[:end]
        proto_key, proto_shrinkage, proto_value = self._potentiate(candidates, usage)
        self.working.keep(slice(end, None))
        self.long_term.add(proto_key, proto_shrinkage, None, proto_value)
        if self.on_event:
            self.on_event("consolidate", {"frame": frame_index, "candidates": end,
                                          "prototypes": proto_key.shape[-1], "long_term": self.long_term.size})

    def _potentiate(self, candidates: dict, usage: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The P most used candidates become prototypes; their shrinkage and value are the candidates'
        averaged by a full softmax over candidate-to-prototype similarity."""
        k = min(self.config.num_prototypes, usage.numel())
        index = torch.topk(usage, k=k, sorted=True).indices
        proto_key = candidates["key"][..., index]
        proto_selection = candidates["selection"][..., index]
        # Memory-major copy: the softmax sums over candidates in the official order.
        sim = similarity(candidates["key"], candidates["shrinkage"], proto_key, proto_selection).contiguous()
        affinity = full_affinity(sim)
        proto_value = candidates["value"] @ affinity[0]
        proto_shrinkage = candidates["shrinkage"] @ affinity
        return proto_key, proto_shrinkage, proto_value

    def _prune_long_term(self, max_size: int, frame_index: int) -> None:
        """Drop the least used LT elements down to max_size (ties at the threshold go together).

        The official code crashes when nothing needs removing (k = 0); here that is a no-op."""
        before = self.long_term.size
        excess = before - max_size
        if excess <= 0:
            return
        usage = self.long_term.usage()
        threshold = torch.topk(usage, k=excess, largest=False, sorted=True).values[-1]
        self.long_term.keep(usage > threshold)
        if self.on_event:
            self.on_event("prune", {"frame": frame_index, "before": before, "requested": excess,
                                    "after": self.long_term.size})
