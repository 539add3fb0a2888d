"""`python -m colormnet_core evaluate PRED GT`: compare a colorization with the ground truth."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterator, Sequence

from torch import Tensor

from .errors import InputError
from .metrics import ShotMetrics, psnr, psnr_uint8_wrap, ssim
from .shots import Shot, parse_shots, shot_of
from .video_io import FrameSource


def add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="PSNR, SSIM and CDC of a colorization against the ground truth",
        description="Compare predicted frames with ground-truth frames (each a video file or a folder of "
                    "frames, same count and size): PSNR (dB, 8-bit RGB, peak 255) and SSIM per frame, "
                    "computed in float; CDC (TCVC's temporal colour consistency, lower is steadier) of both; "
                    "the keyframe pop at --keyframes. LPIPS and FID are optional (torchmetrics or pyiqa; "
                    "their weights download on first use).")
    p.add_argument("pred", help="predicted frames: video file or folder of frames (sorted by name)")
    p.add_argument("gt", help="ground-truth frames: video file or folder of frames")
    p.add_argument("--json", action="store_true", help="print the results as JSON (with per-frame lists)")
    p.add_argument("--keyframes", default="", metavar="K,K,...",
                   help="frames exemplars were pinned to: report the colour pop across each")
    p.add_argument("--shots", default="none", metavar="FIRST-LAST,...",
                   help="shots as inclusive 0-based ranges (0-119,120-300): CDC and pops per shot, averaged")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (needs torchmetrics or pyiqa; downloads weights)")
    p.add_argument("--fid", action="store_true", help="also FID (needs torchmetrics + torch-fidelity; downloads)")
    p.add_argument("--device", default="cpu", help="device for LPIPS and FID: cpu, cuda, mps")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    keyframes = _parse_keyframes(args.keyframes)
    pred, gt = FrameSource(args.pred), FrameSource(args.gt)
    shots = parse_shots(args.shots, pred.count if pred.video is None else None)   # folders: checked now
    if shots == "auto":
        raise InputError("evaluate takes the shots as ranges (0-119,120-300), not 'auto'; the colorize "
                         "report (--report) lists the shots it used.")
    result = evaluate(pred, gt, keyframes=keyframes, shots=shots, lpips=args.lpips, fid=args.fid,
                      device=args.device)
    print(json.dumps(result) if args.json else _table(result))
    return 0


def evaluate(pred: FrameSource, gt: FrameSource, *, keyframes: Sequence[int] = (), shots: list[Shot] | None = None,
             lpips: bool = False, fid: bool = False, device: str = "cpu") -> dict:
    """Every metric of `pred` against `gt`, frame by frame (bounded memory). Returns a JSON-ready dict:
    "psnr", "ssim" (means over the frames; PSNR over the frames that differ, identical ones counted in
    "identical_frames"), "cdc" and "cdc_gt" (mean over shots, as TCVC averages clips), "psnr_official"
    (the official script's uint8-wrapped PSNR, for published numbers only), "frames", "shots",
    "per_shot" [{"cdc", "cdc_gt", "keyframe_pop"}], "per_frame" {"psnr", "ssim"[, "lpips"]} (infinite PSNR
    as null), and "lpips" / "fid" when asked for."""
    lpips_meter = fid_meter = None
    if lpips:
        from .perceptual import LPIPS

        lpips_meter = LPIPS(device)
    if fid:
        from .perceptual import FID

        fid_meter = FID(device)
    pred_shots, gt_shots = ShotMetrics(keyframes), ShotMetrics(())
    per_frame: dict[str, list] = {"psnr": [], "ssim": [], **({"lpips": []} if lpips_meter else {})}
    official = []
    count = 0
    for index, p, g in _frame_pairs(pred, gt):
        shot = shot_of(shots, index) if shots else 0
        pred_shots.add(index, shot, p)
        gt_shots.add(index, shot, g)
        per_frame["psnr"].append(psnr(p, g))
        per_frame["ssim"].append(ssim(p, g))
        official.append(psnr_uint8_wrap(p, g))
        if lpips_meter is not None:
            per_frame["lpips"].append(lpips_meter(p, g))
        if fid_meter is not None:
            fid_meter.update(p, g)
        count = index + 1
    if shots and shots[-1].last != count - 1:
        raise InputError(f"the shots end at frame {shots[-1].last} but the videos have {count} frames "
                         f"(0-{count - 1}); make the shot list match.")
    for k in keyframes:
        if k >= count:
            raise InputError(f"keyframe {k} is past the last frame ({count - 1}); list frames of this clip.")
    per_shot = [{"cdc": p["cdc"], "cdc_gt": g["cdc"], "keyframe_pop": p["keyframe_pop"]}
                for p, g in zip(pred_shots.per_shot(), gt_shots.per_shot())]
    finite = [v for v in per_frame["psnr"] if math.isfinite(v)]
    result = {
        "pred": str(pred.path), "gt": str(gt.path), "frames": count,
        "psnr": _mean(finite), "ssim": _mean(per_frame["ssim"]),
        "cdc": _mean([s["cdc"] for s in per_shot if s["cdc"] is not None]),
        "cdc_gt": _mean([s["cdc_gt"] for s in per_shot if s["cdc_gt"] is not None]),
        "psnr_official": _mean([v for v in official if math.isfinite(v)]),
        "identical_frames": count - len(finite),
        "shots": [[s.first, s.last] for s in shots] if shots else [[0, count - 1]],
        "per_shot": per_shot,
        "per_frame": {name: [_json_float(v) for v in values] for name, values in per_frame.items()},
    }
    if lpips_meter is not None:
        result["lpips"] = _mean(per_frame["lpips"])
    if fid_meter is not None:
        result["fid"] = _json_float(fid_meter.value())
    return result


def _frame_pairs(pred: FrameSource, gt: FrameSource) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(index, pred frame, gt frame); InputError at the first difference in count or size."""
    if pred.video is None and gt.video is None and pred.count != gt.count:   # folders: known before any work
        raise _count_error(pred, gt, pred.count, gt.count)
    pred_frames, gt_frames = iter(pred), iter(gt)
    index = 0
    while True:
        p, g = next(pred_frames, None), next(gt_frames, None)
        if p is None and g is None:
            return
        if p is None or g is None:   # a video's header count is a claim: the end is found by reading
            longer = gt_frames if p is None else pred_frames
            total = index + 1 + sum(1 for _ in longer)
            raise _count_error(pred, gt, index if p is None else total, total if p is None else index)
        if p.shape != g.shape:
            raise InputError(
                f"frame {index}: {pred.path} is {p.shape[2]}x{p.shape[1]} but {gt.path} is {g.shape[2]}x{g.shape[1]} "
                f"(width x height); metrics compare pixels, so resize the prediction to the ground truth's size "
                f"(or colorize at it).")
        yield index, p, g
        index += 1


def _count_error(pred: FrameSource, gt: FrameSource, n_pred: int, n_gt: int) -> InputError:
    return InputError(f"{pred.path} has {n_pred} frames but {gt.path} has {n_gt}; compare a colorization with "
                      f"the ground truth of the same clip, frame for frame.")


def _parse_keyframes(text: str) -> list[int]:
    parts = [t for t in text.replace(" ", "").split(",") if t]
    if not all(t.isdigit() for t in parts):
        raise InputError(f"cannot read --keyframes {text!r}: give 0-based frame numbers such as 0,12,24.")
    return sorted({int(t) for t in parts})


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 6) if values else None


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def _table(r: dict) -> str:
    def num(x: float | None, digits: int) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}"

    psnr_note = "float, peak 255"
    if r["identical_frames"]:
        psnr_note += f"; {r['identical_frames']} identical frame(s) (infinite) left out"
    rows = [
        ("PSNR (dB)", num(r["psnr"], 3), f"{psnr_note}; official uint8 script: {num(r['psnr_official'], 3)}"),
        ("SSIM", num(r["ssim"], 4), "7x7 window, channel mean"),
        ("CDC", num(r["cdc"], 6), f"lower is steadier; ground truth: {num(r['cdc_gt'], 6)}"),
    ]
    for name in ("lpips", "fid"):
        if name in r:
            rows.append((name.upper(), num(r[name], 4), "lower is closer"))
    for shot in r["per_shot"]:
        for pop in shot["keyframe_pop"]:
            rows.append((f"pop @ {pop['frame']}", num(pop["pop"], 2),
                         f"x the median two-frame chroma change ({num(pop['median_change'], 3)})"))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{r['frames']} frames, {len(r['shots'])} shot(s): {r['pred']} vs {r['gt']}"]
    lines += [f"{name:<{width}}  {value:>9}  {note}" for name, value, note in rows]
    return "\n".join(lines)
