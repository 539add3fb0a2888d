"""Optional learned metrics: LPIPS and FID, through torchmetrics (or pyiqa for LPIPS) when installed.

Neither library is a dependency of this package: install one yourself (`pip install
"torchmetrics[image]"`; FID also needs `torch-fidelity`). Their network weights are NOT shipped with
them: the library downloads them on first use (AlexNet from download.pytorch.org for LPIPS, Inception
from GitHub for FID) into the torch hub cache (~/.cache/torch/hub/checkpoints), so the first run needs
the internet. A missing library or an offline first run raises `MetricUnavailableError` saying which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .errors import ColorMNetError
from .metrics import as_uint8_rgb

log = logging.getLogger(__name__)

_DOWNLOAD_NOTE = ("its library downloads the network weights on first use (into the torch hub cache, "
                  "~/.cache/torch/hub/checkpoints), so the first run needs the internet")


class MetricUnavailableError(ColorMNetError):
    """An optional metric cannot run here: its library is not installed or its weights cannot be fetched."""


def _unit_batch(frame: Tensor, device: torch.device) -> Tensor:
    """`1 x 3 x H x W` float32 in [0, 1] (8-bit rounded, like every metric here)."""
    return (as_uint8_rgb(frame).float() / 255).unsqueeze(0).to(device)


def _fetching(name: str, library: str, build: Callable[[], object]) -> object:
    """Build a metric object; a failure there is almost always the weight download (offline, proxy)."""
    try:
        return build()
    except ImportError as e:   # e.g. torchmetrics without torch-fidelity, or lpips for old torchmetrics
        raise MetricUnavailableError(
            f"{name} through {library} needs a package that is not installed: {str(e).rstrip('.')}. Install "
            f"it, or leave {name} out.") from None
    except Exception as e:   # any failure of a third-party download becomes one clear message
        raise MetricUnavailableError(
            f"{name} could not load its network weights through {library}: {type(e).__name__}: {e}. Note: "
            f"{_DOWNLOAD_NOTE}; connect once (or copy the weights into that cache), or leave {name} out."
        ) from None


class LPIPS:
    """Learned perceptual image patch similarity (AlexNet variant; lower is closer; 0 for identical
    frames), per frame pair. Uses torchmetrics if installed, otherwise pyiqa."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        except ImportError:
            LearnedPerceptualImagePatchSimilarity = None
        if LearnedPerceptualImagePatchSimilarity is not None:
            metric = _fetching("LPIPS", "torchmetrics", lambda: LearnedPerceptualImagePatchSimilarity(
                net_type="alex", normalize=True).to(self.device))
            self._score = lambda a, b: float(metric(a, b))
            return
        try:
            import pyiqa
        except ImportError:
            raise MetricUnavailableError(
                "LPIPS needs torchmetrics (pip install \"torchmetrics[image]\") or pyiqa, and neither is "
                f"installed. Install one, or leave LPIPS out. Note: {_DOWNLOAD_NOTE}.") from None
        metric = _fetching("LPIPS", "pyiqa", lambda: pyiqa.create_metric("lpips", device=self.device))
        self._score = lambda a, b: float(metric(a, b).mean())

    @torch.inference_mode()
    def __call__(self, pred: Tensor, gt: Tensor) -> float:
        """pred, gt: `3 x H x W` RGB, uint8 or float in [0, 1]."""
        return self._score(_unit_batch(pred, self.device), _unit_batch(gt, self.device))


class FID:
    """Frechet Inception distance between the set of predicted frames and the set of ground-truth
    frames (2048-d pool features; lower is closer). Needs hundreds of frames for a stable value: with
    fewer frames than 2048 the covariances are rank-deficient and the number is only indicative.
    torchmetrics only (it needs torch-fidelity)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError:
            raise MetricUnavailableError(
                "FID needs torchmetrics with torch-fidelity (pip install \"torchmetrics[image]\" "
                f"torch-fidelity), which is not installed. Install them, or leave FID out. Note: {_DOWNLOAD_NOTE}."
            ) from None
        self._metric = _fetching("FID", "torchmetrics", lambda: FrechetInceptionDistance(
            feature=2048, normalize=True).to(self.device))
        self.frames = 0

    @torch.inference_mode()
    def update(self, pred: Tensor, gt: Tensor) -> None:
        """One frame of each set: `3 x H x W` RGB, uint8 or float in [0, 1]."""
        self._metric.update(_unit_batch(gt, self.device), real=True)
        self._metric.update(_unit_batch(pred, self.device), real=False)
        self.frames += 1

    def value(self) -> float | None:
        """FID so far (None below 2 frames: a covariance needs two)."""
        if self.frames < 2:
            return None
        return float(self._metric.compute())
