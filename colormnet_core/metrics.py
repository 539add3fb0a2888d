"""Quality metrics for colorized video: PSNR and SSIM against a ground truth, CDC (temporal colour
stability, no ground truth) and the keyframe pop (how visibly colours jump at a pinned exemplar).

Every metric takes RGB frames `3 x H x W`, uint8 or float in [0, 1]; float frames are first rounded to
8 bits exactly as `FrameWriter` saves them, so a metric on a session's output equals the metric on the
PNGs it writes. Everything is computed in float64 (no uint8 arithmetic; see `psnr_uint8_wrap` for why
that matters). The optional learned metrics (LPIPS, FID) are in `perceptual.py`.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .color import rgb_to_lab
from .errors import InputError

PEAK = 255.0                 # PSNR and SSIM are on 8-bit RGB
CDC_OFFSETS = (1, 2, 4)      # TCVC's frame distances, weighted equally
SSIM_WINDOW = 7              # scikit-image's default: uniform 7 x 7 window, sample covariance
POP_SHORT_SIDE = 480         # the keyframe pop compares chroma at most at this short side (see `chroma`)
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def as_uint8_rgb(frame: Tensor, what: str = "frame") -> Tensor:
    """`3 x H x W` uint8 RGB (on the CPU) from uint8 or float in [0, 1] (rounded like `FrameWriter`)."""
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise InputError(f"{what} must be RGB 3 x H x W, got shape {tuple(frame.shape)}.")
    if frame.dtype != torch.uint8:
        frame = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frame.cpu()


def _pair(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    pred, gt = as_uint8_rgb(pred, "the prediction"), as_uint8_rgb(gt, "the ground truth")
    if pred.shape != gt.shape:
        raise InputError(f"the prediction is {pred.shape[2]}x{pred.shape[1]} but the ground truth is "
                         f"{gt.shape[2]}x{gt.shape[1]} (width x height); compare frames of the same size.")
    return pred, gt


def psnr(pred: Tensor, gt: Tensor) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels, peak 255, in float64:
    10 log10(255^2 / mean((pred - gt)^2)). Identical frames give +inf. Equals
    `skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=255)`."""
    pred, gt = _pair(pred, gt)
    mse = (pred.double() - gt.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(PEAK**2 / mse)


def psnr_uint8_wrap(pred: Tensor, gt: Tensor) -> float:
    """The PSNR the official evaluation script reports (evaluation_matrics/evaluation.py,
    `calculate_psnr`), reproduced to compare with published numbers. It subtracts and squares the
    8-bit arrays in uint8, so both steps wrap modulo 256: a difference of -1 becomes 255, whose square
    wraps to 1; a difference of 16 squares to 256, which wraps to 0. The mean of those wrapped squares
    goes into 20 log10(255 / sqrt(mse)). The result is not a PSNR; use `psnr`."""
    pred, gt = _pair(pred, gt)
    wrapped = ((gt - pred) * (gt - pred)).double()   # uint8 tensors wrap like numpy's uint8 arrays
    mse = wrapped.mean().item()
    return math.inf if mse == 0 else 20 * math.log10(PEAK / math.sqrt(mse))


def ssim(pred: Tensor, gt: Tensor) -> float:
    """Structural similarity on 8-bit RGB, averaged over the three channels, in float64.

    Defined as scikit-image's default (`structural_similarity(gt, pred, channel_axis=-1,
    data_range=255)`, which the official evaluation also uses on uint8 frames): local means, variances
    (sample, /(N-1)) and covariance over a uniform 7 x 7 window, C1 = (0.01 * 255)^2,
    C2 = (0.03 * 255)^2, S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    averaged over the window positions that lie fully inside the image (scikit-image crops the 3-pixel
    border its padding touches, so only valid windows count). Frames must be at least 7 x 7.
    """
    pred, gt = _pair(pred, gt)
    if min(pred.shape[1:]) < SSIM_WINDOW:
        raise InputError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{pred.shape[2]}x{pred.shape[1]}.")
    return statistics.fmean(_ssim_channel(p.numpy().astype(np.float64), g.numpy().astype(np.float64))
                            for p, g in zip(pred, gt))


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one channel, `H x W` float64 in [0, 255]."""
    pad = SSIM_WINDOW // 2

    def window_mean(t: np.ndarray) -> np.ndarray:   # OpenCV's box filter: a running sum, fast in float64
        mean = cv2.boxFilter(t, -1, (SSIM_WINDOW, SSIM_WINDOW), normalize=True, borderType=cv2.BORDER_REFLECT)
        return mean[pad:-pad, pad:-pad]             # windows that touch the padding do not count

    mx, my, mxx, myy, mxy = (window_mean(t) for t in (x, y, x * x, y * y, x * y))
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    vx, vy, vxy = cov_norm * (mxx - mx * mx), cov_norm * (myy - my * my), cov_norm * (mxy - mx * my)
    c1, c2 = (_SSIM_K1 * PEAK) ** 2, (_SSIM_K2 * PEAK) ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


def channel_histograms(frame: Tensor) -> Tensor:
    """`3 x 256` float64: per RGB channel, the fraction of pixels at each 8-bit level (rows sum to 1)."""
    frame = as_uint8_rgb(frame)
    flat = frame.reshape(3, -1).long() + 256 * torch.arange(3).view(3, 1)
    counts = torch.bincount(flat.flatten(), minlength=3 * 256).view(3, 256)
    return counts.double() / frame[0].numel()


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in nats between distributions along the last dimension:
    JS = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, with 0 log 0 = 0. Range [0, ln 2]."""
    m = (p + q) / 2

    def kl(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * torch.log(a / torch.where(a > 0, m, 1.0)), 0.0).sum(-1)

    return 0.5 * kl(p) + 0.5 * kl(q)


class CDCAccumulator:
    """Colour distribution consistency (CDC, from TCVC: Liu et al., "Temporally Consistent Video
    Colorization with Deep Feature Propagation and Self-regularization Learning"), fed one frame at a
    time. Lower is steadier colour; 0 for a still video.

    For N frames, with h_c(t) frame t's normalised 256-bin histogram of RGB channel c and JS the
    Jensen-Shannon divergence in nats (natural log, as TCVC's scipy.stats.entropy):

        CDC = 1/3 sum_{c in R,G,B} sum_{d in 1,2,4} 1/3 * mean_{t=0..N-1-d} JS(h_c(t), h_c(t+d))

    i.e. each offset's divergences are averaged over its own pairs first, then the three offsets and
    the three channels weigh equally (TCVC's `calculate_folders_multiple` and the official ColorMNet
    `calculate_cdc`, for one clip; over several clips they average the per-clip values). Where a video
    is too short for an offset (N <= d), TCVC's mean is NaN; here that offset is left out and the others
    are averaged, and `value` is None below 2 frames.

    Memory is bounded: the last 4 frames' histograms, running sums per offset, and one float per frame
    (`js_next`, channel-averaged JS(t, t+1), for per-frame reports).
    """

    def __init__(self) -> None:
        self._recent: deque[Tensor] = deque(maxlen=max(CDC_OFFSETS))
        self._sums = {d: torch.zeros(3, dtype=torch.float64) for d in CDC_OFFSETS}
        self._pairs = dict.fromkeys(CDC_OFFSETS, 0)
        self.js_next: list[float] = []
        self.frames = 0

    def add(self, frame: Tensor) -> None:
        """frame: `3 x H x W` RGB, uint8 or float in [0, 1]."""
        hist = channel_histograms(frame)
        for d in CDC_OFFSETS:
            if len(self._recent) >= d:
                js = js_divergence(self._recent[-d], hist)
                self._sums[d] += js
                self._pairs[d] += 1
                if d == 1:
                    self.js_next.append(js.mean().item())
        self._recent.append(hist)
        self.frames += 1

    @property
    def value(self) -> float | None:
        """CDC of the frames so far (None below 2 frames)."""
        means = [self._sums[d] / self._pairs[d] for d in CDC_OFFSETS if self._pairs[d]]
        if not means:
            return None
        return torch.stack(means).mean().item()


def cdc(frames: Iterable[Tensor]) -> float | None:
    """CDC of a clip (see `CDCAccumulator`); frames `3 x H x W` RGB, uint8 or float in [0, 1]."""
    acc = CDCAccumulator()
    for frame in frames:
        acc.add(frame)
    return acc.value


def chroma(frame: Tensor, short_side: int = POP_SHORT_SIDE) -> Tensor:
    """`2 x h x w` float32 CIELAB (a*, b*) of an RGB frame (uint8 or float in [0, 1], 8-bit rounded),
    area-downscaled first to `short_side` if the frame is larger. Why: the network's colour is made at
    the processing size (480 short side or less) and upsampled, so finer chroma holds no information
    about propagation; and Lab costs about 0.5 s per 1080p frame on one CPU thread, 45 ms at 832x480."""
    rgb = as_uint8_rgb(frame).float() / 255
    h, w = rgb.shape[1:]
    if min(h, w) > short_side:
        scale = short_side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = F.interpolate(rgb[None], size=size, mode="area")[0]
    return rgb_to_lab(rgb, compute_dtype=torch.float32)[1:]


def chroma_change(a: Tensor, b: Tensor) -> float:
    """Mean over pixels of the chroma distance sqrt(da*^2 + db*^2) between two `2 x H x W` chroma maps
    (CIELAB units: about 2.3 is a just-noticeable difference)."""
    return (a - b).square().sum(0).sqrt().mean().item()


class KeyframePop:
    """How much the colours jump across pinned exemplars in one shot, fed the shot's frames in order.

    For a frame t with neighbours in the shot, the two-frame change is D(t) = chroma_change(t-1, t+1)
    (frame t itself left out: at a pinned exemplar it shows the exemplar, not the propagation on either
    side). The pop at a pinned exemplar k is D(k) / median of D(t) over the shot's other frames (those
    not pinned, so the baseline is ordinary motion, not the pops being measured). About 1 means the
    keyframe changes the colours no more than any other two frames do.

    Why chroma (CIELAB a*, b*) and not RGB: the luminance comes from the grey input and moves with
    the picture in every mode; only the colour is propagated, so comparing chroma keeps motion from
    diluting the jump. Why the Euclidean ab distance: it is CIELAB's colour difference without its
    lightness term, in units people know.

    Bounded memory: the last two chroma maps and one float per frame.
    """

    def __init__(self, first: int, pinned: Iterable[int]) -> None:
        self.first = first
        self.pinned = set(pinned)
        self._recent: deque[Tensor] = deque(maxlen=2)
        self.changes: dict[int, float] = {}      # centre frame t -> D(t)
        self.next_index = first

    def add(self, frame: Tensor) -> None:
        """The shot's next frame (`3 x H x W` RGB, uint8 or float in [0, 1])."""
        ab = chroma(frame)
        if len(self._recent) == 2:
            self.changes[self.next_index - 1] = chroma_change(self._recent[0], ab)
        self._recent.append(ab)
        self.next_index += 1

    def pops(self) -> list[dict]:
        """One entry per pinned exemplar with a neighbour on both sides in this shot, in frame order:
        {"frame": k, "pop": D(k) / median (None when the median is 0 or there is no other frame),
        "change": D(k), "median_change": the median}. Exemplars on a shot's first or last frame have no
        pop (there is nothing on one side)."""
        baseline = [c for t, c in self.changes.items() if t not in self.pinned]
        median = statistics.median(baseline) if baseline else None
        out = []
        for k in sorted(self.pinned & self.changes.keys()):
            change = self.changes[k]
            ratio = change / median if median else None
            out.append({"frame": k, "pop": _round(ratio), "change": _round(change), "median_change": _round(median)})
        return out


def keyframe_pops(frames: Iterable[Tensor], pinned: Iterable[int], *, first: int = 0) -> list[dict]:
    """`KeyframePop.pops` for one shot whose frames (starting at index `first`) are given in order."""
    meter = KeyframePop(first, pinned)
    for frame in frames:
        meter.add(frame)
    return meter.pops()


class ShotMetrics:
    """Per-shot CDC and keyframe pops of a colorization, fed its output frames as they stream (the
    CLI's `--report`). Bounded memory: one shot's accumulators at a time, plus one small dict per shot.

    pinned: the frames exemplars are pinned to (any shot)."""

    def __init__(self, pinned: Sequence[int]) -> None:
        self.pinned = list(pinned)
        self._done: list[dict] = []
        self._shot: int | None = None
        self._cdc: CDCAccumulator | None = None
        self._pop: KeyframePop | None = None

    def add(self, index: int, shot: int, rgb: Tensor) -> None:
        """A colorized frame: its index in the video, its shot's index and its RGB (`3 x H x W`)."""
        if shot != self._shot:
            if self._cdc is not None:
                self._done.append(self._summary())
            self._shot, self._cdc, self._pop = shot, CDCAccumulator(), KeyframePop(index, self.pinned)
        frame = as_uint8_rgb(rgb)
        self._cdc.add(frame)
        self._pop.add(frame)

    def _summary(self) -> dict:
        return {"cdc": _round(self._cdc.value), "keyframe_pop": self._pop.pops()}

    def per_shot(self) -> list[dict]:
        """[{"cdc": float | None, "keyframe_pop": [...]}] per shot seen so far, in order (see
        `CDCAccumulator.value` and `KeyframePop.pops`)."""
        return self._done + ([self._summary()] if self._cdc is not None else [])


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)
