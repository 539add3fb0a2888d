"""ColorMNet (ECCV 2024) exemplar-based video colorization: a self-contained PyTorch package.

Public API (imported lazily, so `import colormnet_core` is cheap and touches no GPU):

    from colormnet_core import load_model, EncodedExemplars, Exemplar, ColorizeSession, MemoryConfig
    net = load_model("DINOv2FeatureV6_LocalAtten_s2_154000.pth", device="cuda")
    exemplars = EncodedExemplars((Exemplar(colour_frame0, frame=0),))
    for out in ColorizeSession(net, exemplars).run(frames):   # frames: T x 3 x H x W in [0, 1]
        ...  # out.rgb: 3 x H x W
"""

from __future__ import annotations

import importlib

from .errors import Cancelled, CheckpointError, ColorMNetError, InputError, ResolutionError

_LAZY = {
    "ColorMNet": "network",
    "NetworkConfig": "config",
    "MemoryConfig": "config",
    "ProcessingSize": "preprocess",
    "Exemplar": "exemplars",
    "EncodedExemplars": "exemplars",
    "ColorizeSession": "session",
    "ColorizedFrame": "session",
    "load_model": "checkpoint",
    "read_state_dict": "checkpoint",
    "rgb_to_lab": "color",
    "Shot": "shots",
    "ShotDetector": "shots",
    "ShotDetectorConfig": "shots",
    "detect_shots": "shots",
    "parse_shots": "shots",
    "shots_to_text": "shots",
    "keyframe_indices": "shots",
    "needs_exemplar": "shots",
    "lab_to_rgb": "color",
    "compose_rgb": "compose",
    "colorize_shot": "propagation",
    "make_session": "propagation",
    "PropagatingSession": "propagation",
}

__all__ = ["Cancelled", "CheckpointError", "ColorMNetError", "InputError", "ResolutionError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
