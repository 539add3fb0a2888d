"""Frozen, self-validating settings. Paper symbols (ColorMNet, ECCV 2024; XMem) in the comments."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from .errors import InputError

Backbone = Literal["dinov2_vits14", "dinov3_vitb16"]
BACKBONES: tuple[str, ...] = ("dinov2_vits14", "dinov3_vitb16")


@dataclass(frozen=True)
class NetworkConfig:
    """Dimensions the official loader derives from a checkpoint (`init_hyperparameters`), and the
    key encoder's large pretrained backbone: DINOv2 ViT-S/14 (the official release) or DINOv3
    ViT-B/16 (CMNET2's fine-tuned checkpoints, `dinov3.py`)."""

    key_dim: int = 64       # C^k: channels of key and selection
    value_dim: int = 512    # C^v: channels of a value per chroma channel ("object")
    hidden_dim: int = 64    # C^h: channels of the GRU hidden state (0 = no hidden state)
    backbone: Backbone = "dinov2_vits14"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"NetworkConfig.backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}.")
        for name in ("key_dim", "value_dim"):
            if getattr(self, name) <= 0:
                raise InputError(f"NetworkConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.hidden_dim < 0:
            raise InputError(f"NetworkConfig.hidden_dim must be 0 or positive, got {self.hidden_dim}.")


@dataclass(frozen=True)
class MemoryConfig:
    """MFP (memory feature propagation) settings; the defaults are the official release's.

    The two exemplar options are ours: the official code has exactly one exemplar and no
    permanent store.
    """

    mem_every: int = 5                      # r: a frame is memorised when r frames passed since the last one
    deep_update_every: int = -1             # -1: hidden-state deep update on every memory frame
    enable_long_term: bool = True           # working -> long-term consolidation on
    min_mid_term_frames: int = 5            # T_min: working-memory frames kept after a consolidation
    max_mid_term_frames: int = 10           # T_max: working-memory frames that trigger a consolidation
    num_prototypes: int = 128               # P: long-term prototypes made per consolidation
    max_long_term_elements: int = 10_000    # LT_max: long-term capacity in elements (pixels at stride 16)
    top_k: int = 30                         # k of the top-k softmax over memory
    permanent_exemplars: bool = True        # ours: exemplars live in a store that is never consolidated
    proximity_bias: float = 0.0             # CMNET2's alpha: references near in time count more (0 = off)

    def __post_init__(self) -> None:
        if self.mem_every < 1:
            raise InputError(f"mem_every (r) must be at least 1, got {self.mem_every}.")
        if self.deep_update_every == 0 or self.deep_update_every < -1:
            raise InputError(
                f"deep_update_every must be -1 (with every memory frame) or a positive number of "
                f"frames, got {self.deep_update_every}.")
        if not 1 <= self.min_mid_term_frames < self.max_mid_term_frames:
            raise InputError(
                f"min_mid_term_frames (T_min={self.min_mid_term_frames}) must be at least 1 and below "
                f"max_mid_term_frames (T_max={self.max_mid_term_frames}).")
        if self.num_prototypes < 1:
            raise InputError(f"num_prototypes (P) must be at least 1, got {self.num_prototypes}.")
        if self.enable_long_term and self.max_long_term_elements <= self.num_prototypes:
            raise InputError(
                f"max_long_term_elements (LT_max={self.max_long_term_elements}) must exceed "
                f"num_prototypes (P={self.num_prototypes}) so that a consolidation fits; raise "
                f"LT_max or lower P.")
        if self.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}.")
        if not 0 <= self.proximity_bias <= 100:   # also rejects NaN
            raise InputError(
                f"proximity_bias (alpha) must be 0 (off) or a positive strength such as 0.5, got "
                f"{self.proximity_bias}; CMNET2 uses 0.5-0.9.")

    @classmethod
    def like_cmnet2(cls, num_frames: int, *, top_k: int = 30, mem_every: int = 5,
                    proximity_bias: float = 0.0) -> MemoryConfig:
        """The memory sizes CMNET2's `ColorMNetRender` derives from a video of `num_frames` frames.

        T_max = min(10, n), T_min = min(5, floor(T_max / 2)), r = min(mem_every, T_max), P = 128,
        LT_max = min(1000, n) elements, XMem's first-frame pin (no permanent exemplars of ours).
        Where CMNET2's numbers are degenerate they are raised to the nearest valid ones: T_max >= 2,
        T_min >= 1 (videos of 1-3 frames) and LT_max >= P + 1 (videos of <= 128 frames; there CMNET2
        consolidates once and then its pruning fails inside a bare `except`, so its working memory
        grows without bound, which we do not copy). Neither changes a video too short to fill
        working memory (fewer than T_max memory frames)."""
        if num_frames < 1:
            raise InputError(f"num_frames must be at least 1, got {num_frames}.")
        t_max = max(2, min(10, num_frames))
        t_min = max(1, min(5, t_max // 2))
        return cls(mem_every=min(mem_every, t_max), max_mid_term_frames=t_max, min_mid_term_frames=t_min,
                   num_prototypes=128, max_long_term_elements=max(129, min(1000, num_frames)), top_k=top_k,
                   permanent_exemplars=False, proximity_bias=proximity_bias)

    @classmethod
    def from_official_options(cls, options: dict) -> MemoryConfig:
        """Settings from the official `test.py` option names (as in the golden fixture's configs)."""
        return cls(
            mem_every=int(options.get("mem_every", 5)),
            deep_update_every=int(options.get("deep_update_every", -1)),
            enable_long_term=not bool(options.get("disable_long_term", False)),
            min_mid_term_frames=int(options.get("min_mid_term_frames", 5)),
            max_mid_term_frames=int(options.get("max_mid_term_frames", 10)),
            num_prototypes=int(options.get("num_prototypes", 128)),
            max_long_term_elements=int(options.get("max_long_term_elements", 10_000)),
            top_k=int(options.get("top_k", 30)),
            permanent_exemplars=False,
        )


def working_precision(precision: str, device_type: str) -> str:
    """The autocast precision to use for `precision` ("float32", "bfloat16", "float16") on a device
    type ("cpu", "cuda", "mps", ...). float16 on a CPU has no fast kernels (about 30x slower than
    float32 there), so it becomes float32, with a warning that says so."""
    if precision == "float16" and device_type == "cpu":
        logging.getLogger(__name__).warning(
            "ColorMNet: float16 (fp16) on the CPU would run about 30x slower than float32; using float32. "
            "Choose float32/auto on a CPU, or run on a GPU for float16.")
        return "float32"
    return precision



def auto_precision(device_type: str) -> str:
    """The precision "auto" means on a device type ("cpu", "cuda", "mps", ...); issue 10's
    measurements are in bench/RESULTS.md.

    CPU: float32 - fp16 has no fast CPU kernels, and bf16 autocast drifts by tens of 8-bit levels
    from fp32. CUDA: float16 autocast, the official default (10 mantissa bits against bf16's 7, the
    same tensor-core speed; CUDA autocast keeps exp/softmax in fp32, so the memory read's unshifted
    exponentials do not underflow). Anything else (MPS, ...): float32, untested in reduced precision.
    """
    return "float16" if device_type == "cuda" else "float32"
