"""Host-memory estimate of a colorization, checked before any work starts.

Per-frame costs measured with the fixture network on CPU (peak RSS, tests/test_resources.py
checks the arithmetic): an IMAGE batch in memory costs 12 bytes per pixel per frame (float32
RGB) for the input and as much for the output; each frame of a key batch needs about 100 bytes
per full-resolution pixel of work buffers (float64 Lab conversion, chroma upsampling, gamut fit,
RGB out) plus about 2 kB per padded processing-size pixel of network activations. The estimate
errs high: for two 8000x4500 frames at processing size 1080 it gives about 17 GB more, where
ComfyUI peaked at 13.8 GB in all; so a run is refused only when even the estimate exceeds the
available memory, and warned about above half of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ResolutionError
from .preprocess import Geometry, ProcessingSize

IMAGE_BYTES_PER_PIXEL = 12        # float32 RGB
WORK_BYTES_PER_PIXEL = 100        # full-resolution work buffers, per frame of a key batch
NETWORK_BYTES_PER_PIXEL = 2000    # activations per padded processing pixel, per frame of a key batch
WARN_FRACTION = 0.5               # warn above this share of the available memory
_GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs on the host: `held` already allocated (the input batch), `new` to come."""

    held: int
    new: int
    frames: int
    key_batch: int

    @property
    def total(self) -> int:
        return self.held + self.new


def estimate_colorize_memory(
    frames: int, height: int, width: int, *, key_batch: int, size: ProcessingSize | None = None,
    input_in_memory: bool = True, output_in_memory: bool = True,
) -> MemoryEstimate:
    """Host bytes for colorizing `frames` frames of height x width (an IMAGE batch when
    input/output_in_memory; a streamed video holds one key batch at a time).

    Raises ResolutionError (with what to do) when the processing size itself cannot fit.
    """
    geometry = Geometry.plan(height, width, size or ProcessingSize())
    gh, gw = geometry.grid
    padded = gh * 16 * gw * 16
    pixels = height * width
    in_flight = min(frames, key_batch)
    image = IMAGE_BYTES_PER_PIXEL * pixels
    held = image * frames if input_in_memory else 0
    new = (image * frames if output_in_memory else image * in_flight) + in_flight * (
        WORK_BYTES_PER_PIXEL * pixels + NETWORK_BYTES_PER_PIXEL * padded)
    return MemoryEstimate(held, new, frames, key_batch)


def check_memory(estimate: MemoryEstimate, available: int | None, *, width: int, height: int) -> str | None:
    """None when the run fits easily; a warning when it needs over half the available memory;
    ResolutionError when it cannot fit (`available`: bytes free now, None = unknown: no check)."""
    if available is None or estimate.new <= WARN_FRACTION * available:
        return None
    advice = ("Scale the frames down before colorizing (e.g. Image Scale: colour is computed at the processing "
              "size anyway), colorize fewer frames per run, or use the streaming ColorMNet Colorize Video node "
              "(RAM flat in length)")
    if estimate.key_batch > 1:
        advice += "; key_batch 1 also saves some"
    need = (f"{estimate.frames} frames of {width}x{height} need about {estimate.new / _GB:.1f} GB more RAM "
            f"({estimate.total / _GB:.1f} GB with the input batch)")
    if estimate.new > available:
        raise ResolutionError(f"Not enough memory: {need}, but only {available / _GB:.1f} GB is available. "
                              f"{advice}.")
    return f"{need}, over half of the {available / _GB:.1f} GB available; the system may start swapping. {advice}."
