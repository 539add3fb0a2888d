"""The memory-settings node and its socket value (an immutable seed for every colorize run)."""

from __future__ import annotations

from dataclasses import dataclass

from ..colormnet_core.config import MemoryConfig
from ..colormnet_core.exemplars import EncodedExemplars
from .search import SEARCH_ALIASES

DEFAULTS = MemoryConfig()


@dataclass(frozen=True)
class MemorySeed:
    """The COLORMNET_MEMORY socket value: settings plus encoded exemplars. Immutable; every colorize
    run builds its own session (and memory) from it."""

    config: MemoryConfig
    exemplars: EncodedExemplars


class ColorMNetMemory:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("How the colorizer remembers colours along the video. The defaults are the official "
                   "release's and suit most videos: recent frames are kept in detail, older ones compressed, so "
                   "memory stays bounded for any length. Change them only for very long films or fast action.")
    RETURN_TYPES = ("COLORMNET_MEMORY",)
    RETURN_NAMES = ("memory",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "encoded": ("COLORMNET_ENCODED",),
            "mem_every": ("INT", {"default": d.mem_every, "min": 1, "max": 100, "tooltip": "Every N-th frame is "
                                  "added to memory. Lower: follows fast changes (new objects, camera moves) more "
                                  "closely, slower. Higher: faster, colours may lag behind changes. Default 5."}),
            "min_mid_term_frames": ("INT", {"default": d.min_mid_term_frames, "min": 1, "max": 100, "tooltip":
                                            "Recent memory frames kept in full detail after older ones are "
                                            "compressed into long-term memory. Higher: sharper recall of the last "
                                            "few seconds, more memory and time. Lower: leaner, older detail fades "
                                            "sooner. Must stay below max_mid_term_frames. Default 5."}),
            "max_mid_term_frames": ("INT", {"default": d.max_mid_term_frames, "min": 2, "max": 200, "tooltip":
                                            "When this many recent memory frames have piled up, the oldest are "
                                            "compressed into long-term memory. Higher: detail kept longer, more "
                                            "memory and time per frame. Lower it if the GPU runs out of memory. "
                                            "Default 10."}),
            "num_prototypes": ("INT", {"default": d.num_prototypes, "min": 1, "max": 4096, "tooltip": "Entries "
                                       "each compression keeps in long-term memory. Higher: finer colour detail "
                                       "remembered, but long-term memory fills sooner. Lower: coarser, lasts "
                                       "longer. Default 128."}),
            "max_long_term_elements": ("INT", {"default": d.max_long_term_elements, "min": 2, "max": 1_000_000,
                                               "tooltip": "Size limit of long-term memory (least-used entries are "
                                               "dropped when full). Raise it for long films whose early colours "
                                               "must come back much later (more memory and time); lower it to save "
                                               "memory. Must exceed num_prototypes. Default 10000."}),
            "top_k": ("INT", {"default": d.top_k, "min": 1, "max": 1000, "tooltip": "Memory entries each pixel takes "
                              "its colour from. Higher: smoother, more averaged colours. Lower: crisper, may "
                              "flicker or bleed. Default 30; rarely worth changing."}),
            "long_term": ("BOOLEAN", {"default": True, "tooltip": "Off: nothing is compressed and memory grows with "
                                      "every memory frame (official option) - short clips only; long videos run out "
                                      "of memory."}),
            "permanent_exemplars": ("BOOLEAN", {"default": True, "tooltip": "On: every exemplar stays in memory for "
                                                "the whole video, so its colours never fade. Off: the official rule "
                                                "(only the first exemplar is kept; later ones age out like frames)."}),
        }, "optional": {
            "proximity_bias": ("FLOAT", {"default": d.proximity_bias, "min": 0.0, "max": 10.0, "step": 0.05,
                                         "tooltip": "Proximity-weighted matching (CMNET2): among exemplars loaded with "
                                         "role 'reference', those given at frames nearer the current one take more "
                                         "of the references' weight; the references' total weight is unchanged. "
                                         "Helps when similar-looking references carry different colours (greyish "
                                         "results). 0 = off (default, official behaviour); CMNET2 uses 0.5-0.7. "
                                         "No effect on pinned exemplars."}),
        }}

    def build(self, encoded, mem_every, min_mid_term_frames, max_mid_term_frames, num_prototypes,
              max_long_term_elements, top_k, long_term, permanent_exemplars, proximity_bias=0.0):
        config = MemoryConfig(
            mem_every=mem_every, min_mid_term_frames=min_mid_term_frames, max_mid_term_frames=max_mid_term_frames,
            num_prototypes=num_prototypes, max_long_term_elements=max_long_term_elements, top_k=top_k,
            enable_long_term=long_term, permanent_exemplars=permanent_exemplars, proximity_bias=proximity_bias)
        return (MemorySeed(config, encoded),)
