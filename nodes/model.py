"""Model nodes: load a checkpoint from models/colormnet (cached across prompts), or download the official one."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..colormnet_core.errors import CheckpointError
from . import host

log = logging.getLogger(__name__)

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
_AUTOCAST = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_CACHE: dict[str, tuple[tuple[float, int], object]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ColorMNetModel:
    """The COLORMNET_MODEL socket value: which checkpoint, where and how precisely to run it.

    The network itself is loaded on first use and shared by every handle of the same file."""

    path: Path
    precision: str = "auto"

    def network(self, device: torch.device):
        """The loaded network, moved to `device` (eval mode, float32 weights)."""
        from ..colormnet_core.checkpoint import load_model
        from ..colormnet_core.download import verify

        stat = self.path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        with _LOCK:
            cached = _CACHE.get(str(self.path))
            if cached is None or cached[0] != stamp:
                _CACHE.clear()   # one ColorMNet at a time: 0.5 GB each
                verify(self.path)
                _CACHE[str(self.path)] = (stamp, load_model(self.path, device="cpu"))
            net = _CACHE[str(self.path)][1]
        return net.to(device)

    def autocast(self, device: torch.device) -> str:
        if self.precision != "auto":
            return _AUTOCAST[self.precision]
        return "bfloat16" if device.type == "cuda" and host.supports_bf16(device) else "float32"

    def offload(self) -> None:
        cached = _CACHE.get(str(self.path))
        if cached is not None:
            cached[1].to(host.offload_device())
        host.soft_empty_cache()


def _missing_message() -> str:
    folders = ", ".join(str(p) for p in host.model_dirs())
    return (f"No ColorMNet checkpoint found in {folders}. Put DINOv2FeatureV6_LocalAtten_s2_154000.pth (or the "
            f".safetensors the ColorMNet Download Model node writes) there, or add a 'ColorMNet Download Model' "
            f"node to fetch it (weights licensed CC BY-NC-SA 4.0), then refresh the page.")


class ColorMNetModelLoader:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Loads a ColorMNet checkpoint from models/colormnet (.pth or .safetensors). The model stays "
                   "cached between runs and is moved off the GPU after each use.")
    RETURN_TYPES = ("COLORMNET_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = host.list_checkpoints() or ["(no checkpoint in models/colormnet)"]
        return {"required": {
            "checkpoint": (names, {"tooltip": "A file in ComfyUI/models/colormnet (also folders declared as "
                                              "'colormnet:' in extra_model_paths.yaml)."}),
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "Autocast precision. auto: bf16 on GPUs "
                                       "that support it, else fp32. fp32 reproduces the official outputs."}),
        }}

    def load(self, checkpoint: str, precision: str):
        path = host.checkpoint_path(checkpoint)
        if path is None:
            raise CheckpointError(_missing_message())
        from ..colormnet_core.checkpoint import read_state_dict

        # Validate now (clear error at this node), load the network lazily where it is used.
        read_state_dict(path)
        return (ColorMNetModel(path, precision),)

    @classmethod
    def IS_CHANGED(cls, checkpoint: str, precision: str):
        path = host.checkpoint_path(checkpoint)
        if path is None:
            return float("nan")
        stat = path.stat()
        return f"{path}:{stat.st_mtime}:{stat.st_size}:{precision}"


class ColorMNetDownloadModel:
    CATEGORY = "ColorMNet"
    DESCRIPTION = ("Downloads the official ColorMNet weights into models/colormnet (once; later runs reuse the "
                   "file and check its sha256) and loads them. The weights are licensed CC BY-NC-SA 4.0 "
                   "(non-commercial, share-alike): set accept_license to agree.")
    RETURN_TYPES = ("COLORMNET_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "download"

    @classmethod
    def INPUT_TYPES(cls):
        from ..colormnet_core.checkpoint import OFFICIAL_URL

        return {"required": {
            "accept_license": ("BOOLEAN", {"default": False, "tooltip": "The weights are CC BY-NC-SA 4.0: "
                               "https://creativecommons.org/licenses/by-nc-sa/4.0/"}),
            "source": (["github_release", "huggingface"], {"default": "github_release"}),
            "url": ("STRING", {"default": OFFICIAL_URL, "tooltip": "Used with source github_release."}),
            "hf_repo_id": ("STRING", {"default": "", "tooltip": "Used with source huggingface: owner/name."}),
            "hf_filename": ("STRING", {"default": "DINOv2FeatureV6_LocalAtten_s2_154000.pth"}),
            "precision": (PRECISIONS, {"default": "auto"}),
        }}

    def download(self, accept_license, source, url, hf_repo_id, hf_filename, precision):
        from ..colormnet_core.download import download_official

        update = host.progress(100)
        path = download_official(
            host.download_dir(), accept_license=accept_license, url=url,
            hf_repo_id=hf_repo_id.strip() if source == "huggingface" else None, hf_filename=hf_filename,
            progress=lambda done, total: update(int(100 * done / total) if total else 0))
        return (ColorMNetModel(path, precision),)
