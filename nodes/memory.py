"""The memory-settings node and its socket value (an immutable seed for every colorize run)."""

from __future__ import annotations

from dataclasses import dataclass

from ..colormnet_core.config import MemoryConfig
from ..colormnet_core.exemplars import EncodedExemplars

DEFAULTS = MemoryConfig()


@dataclass(frozen=True)
class MemorySeed:
    """The COLORMNET_MEMORY socket value: settings plus encoded exemplars. Immutable; every colorize
    run builds its own session (and memory) from it."""

    config: MemoryConfig
    exemplars: EncodedExemplars


class ColorMNetMemory:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Memory (MFP) settings. Defaults are the official release's. Working memory keeps the newest "
                   "memory frames; long-term memory keeps prototypes of older ones, so memory stays bounded for "
                   "any video length.")
    RETURN_TYPES = ("COLORMNET_MEMORY",)
    RETURN_NAMES = ("memory",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "encoded": ("COLORMNET_ENCODED",),
            "mem_every": ("INT", {"default": d.mem_every, "min": 1, "max": 100,
                                  "tooltip": "r: every r-th frame is added to memory."}),
            "min_mid_term_frames": ("INT", {"default": d.min_mid_term_frames, "min": 1, "max": 100,
                                            "tooltip": "T_min: working-memory frames kept after consolidation."}),
            "max_mid_term_frames": ("INT", {"default": d.max_mid_term_frames, "min": 2, "max": 200,
                                            "tooltip": "T_max: working-memory frames that trigger consolidation."}),
            "num_prototypes": ("INT", {"default": d.num_prototypes, "min": 1, "max": 4096,
                                       "tooltip": "P: long-term prototypes made per consolidation."}),
            "max_long_term_elements": ("INT", {"default": d.max_long_term_elements, "min": 2, "max": 1_000_000,
                                               "tooltip": "LT_max: long-term memory capacity."}),
            "top_k": ("INT", {"default": d.top_k, "min": 1, "max": 1000,
                              "tooltip": "Memory entries each pixel reads from."}),
            "long_term": ("BOOLEAN", {"default": True, "tooltip": "Off: working memory grows with the video "
                                      "(official option; short clips only)."}),
            "permanent_exemplars": ("BOOLEAN", {"default": True, "tooltip": "Keep every exemplar in memory for "
                                                "the whole video (off: the official rule, only the first is kept)."}),
        }}

    def build(self, encoded, mem_every, min_mid_term_frames, max_mid_term_frames, num_prototypes,
              max_long_term_elements, top_k, long_term, permanent_exemplars):
        config = MemoryConfig(
            mem_every=mem_every, min_mid_term_frames=min_mid_term_frames, max_mid_term_frames=max_mid_term_frames,
            num_prototypes=num_prototypes, max_long_term_elements=max_long_term_elements, top_k=top_k,
            enable_long_term=long_term, permanent_exemplars=permanent_exemplars)
        return (MemorySeed(config, encoded),)
