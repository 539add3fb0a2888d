"""Runs the official ColorMNet code (a local checkout, never shipped here) on the benchmark clip, for
side-by-side measurements with bench.py: `bench.py --repo . /path/to/official --dinov2 /path/to/dinov2`.

What it needs, all local (no network):
  * a checkout of github.com/yyang181/colormnet (folders model/, inference/, util/);
  * its compiled correlation extension (pip package `spatial-correlation-sampler`, built for CPU);
  * a checkout of github.com/facebookresearch/dinov2 for torch.hub's local source (the official
    code loads DINOv2 through torch.hub; the weights come from the ColorMNet checkpoint anyway);
  * scikit-image and einops, which the official code imports.

The per-frame work timed is what the official test script does per frame: RGB -> Lab (scikit-image,
as its dataset), `InferenceCore.step` (fp32, no autocast: our CPU baseline), Lab -> RGB of the result
(scikit-image, as it saves frames). Exemplar = the clip's colour frame 0 on frame 0, as bench.py.
"""

from __future__ import annotations

import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

OFFICIAL_CONFIG = {   # the official test script's defaults
    "FirstFrameIsNotExemplar": False, "enable_long_term": True, "max_mid_term_frames": 10,
    "min_mid_term_frames": 5, "max_long_term_elements": 10000, "num_prototypes": 128, "top_k": 30,
    "mem_every": 5, "deep_update_every": -1, "benchmark": True, "size": -1,
}


def is_official_checkout(path: str | Path) -> bool:
    path = Path(path)
    return (path / "inference" / "inference_core.py").is_file() and (path / "model" / "network.py").is_file()


def _import_offline(repo: Path, dinov2: Path):
    """Import the official network and inference core with their downloads redirected to local files."""
    import torch
    import torch.hub
    import torch.utils.model_zoo

    if not (dinov2 / "hubconf.py").is_file():
        raise SystemExit(f"--dinov2 must be a checkout of facebookresearch/dinov2 (no hubconf.py in {dinov2})")
    hub_load = torch.hub.load
    torch.hub.load = lambda _repo, name, *a, **k: hub_load(str(dinov2), name, source="local", pretrained=False)
    torch.utils.model_zoo.load_url = lambda *a, **k: {}   # ImageNet weights: replaced by the checkpoint's
    sys.path.insert(0, str(repo))
    from model import resnet

    resnet.load_weights_add_extra_dim = lambda *a, **k: None
    from inference.inference_core import InferenceCore
    from model.network import ColorMNet

    return ColorMNet, InferenceCore


def _as_pth(checkpoint: Path, folder: Path) -> Path:
    """The official constructor torch.loads its checkpoint: give it a .pth (converted from safetensors)."""
    if checkpoint.suffix != ".safetensors":
        return checkpoint
    import torch
    from safetensors.torch import load_file

    out = folder / (checkpoint.stem + ".pth")
    torch.save(load_file(str(checkpoint)), out)
    return out


def measure(args) -> dict:
    import clip
    import numpy as np
    import torch
    from skimage import color

    repo = Path(args.repo).resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision != "float32" or args.key_batch != 1 or args.compile or args.size != "official":
        raise SystemExit("the official code is measured in fp32, key batch 1, no compile, official size only")
    ColorMNet, InferenceCore = _import_offline(repo, Path(args.dinov2).resolve())
    width, height = map(int, args.resolution.split("x"))
    source, frames, exemplar = clip.load((width, height))

    def lab(rgb_uint8: torch.Tensor) -> torch.Tensor:   # 3 x H x W uint8 -> normalised Lab (official ranges)
        lab = color.rgb2lab(rgb_uint8.permute(1, 2, 0).numpy() / 255.0).astype(np.float32)
        lab = torch.from_numpy(lab).permute(2, 0, 1)
        return (lab - torch.tensor([50.0, 0, 0]).view(3, 1, 1)) / torch.tensor([50.0, 110, 110]).view(3, 1, 1)

    config = dict(OFFICIAL_CONFIG)
    config["enable_long_term_count_usage"] = (
        args.frames / (config["max_mid_term_frames"] - config["min_mid_term_frames"]) * config["num_prototypes"]
        >= config["max_long_term_elements"])
    wall, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        network = ColorMNet(config, str(_as_pth(Path(args.checkpoint), Path(tmp)))).eval()
        processor = InferenceCore(network, config=config)
        processor.set_all_labels(list(range(1, 3)))
        exemplar_ab = lab(exemplar)[1:3]
        for index, frame in enumerate(clip.play(frames, args.frames)):
            image = lab(frame)
            ab = processor.step(image[:1].repeat(3, 1, 1), exemplar_ab if index == 0 else None,
                                range(1, 3) if index == 0 else None, end=index == args.frames - 1)
            out = torch.cat([image[:1], ab], 0) * torch.tensor([50.0, 110, 110]).view(3, 1, 1)
            out[0] += 50
            color.lab2rgb(out.permute(1, 2, 0).numpy())
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
    timed = args.frames - args.warm
    first = args.warm - 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "repo": str(repo), "official": True, "source": source, "frames": args.frames, "warm": args.warm,
        "resolution": args.resolution, "size": args.size, "processing": f"{width}x{height}",
        "precision": "float32", "key_batch": 1, "compile": False, "device": "cpu",
        "device_name": platform.processor() or "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "s_per_frame": round((wall[-1] - wall[first]) / timed, 4) if timed > 0 else None,
        "cpu_s_per_frame": round((cpu[-1] - cpu[first]) / timed, 4) if timed > 0 else None,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "minor_faults": usage.ru_minflt,
    }
    result["fps"] = round(1 / result["s_per_frame"], 3) if result["s_per_frame"] else None
    return result
