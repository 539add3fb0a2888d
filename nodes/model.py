"""Model nodes: load a checkpoint from models/colormnet (cached across prompts), or download the official one."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..colormnet_core.config import auto_precision, working_precision
from ..colormnet_core.download import MODEL_CHOICES
from ..colormnet_core.errors import CheckpointError
from . import host
from .search import SEARCH_ALIASES

log = logging.getLogger(__name__)

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
_AUTOCAST = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_CACHE: dict[str, tuple[tuple[float, int], object]] = {}
_LOCK = threading.Lock()


def load_cached(path: Path):
    """The network of `path`, validated fully and loaded once (sha256 record if any, keys, shapes).

    Kept on the CPU between runs, one checkpoint at a time; a changed file (mtime/size) is reloaded.
    Raises CheckpointError - at the node that calls it, so the loader node shows the problem."""
    from ..colormnet_core.checkpoint import load_model
    from ..colormnet_core.download import verify

    try:
        stat = path.stat()
    except FileNotFoundError:
        raise CheckpointError(_gone(path)) from None
    stamp = (stat.st_mtime, stat.st_size)
    with _LOCK:
        cached = _CACHE.get(str(path))
        if cached is None or cached[0] != stamp:
            _CACHE.clear()   # one ColorMNet at a time: 0.5 GB each
            verify(path)
            _CACHE[str(path)] = (stamp, load_model(path, device="cpu"))
        return _CACHE[str(path)][1]


def _gone(path: Path) -> str:
    if path.parent == host.finetune_dir():
        return (f"the fine-tuned weights {path.name} are no longer in {path.parent} (it keeps the most recently "
                "used tunings). Run the Fine-tune node again: change one of its inputs, or run the command "
                "'Unload Models and Execution Cache', then queue the prompt. To keep a tuning, give Fine-tune a "
                "save_as name.")
    return (f"the checkpoint {path} is gone since it was loaded. Put it back, or pick another one in the Model "
            "Loader and queue the prompt again.")


def keep_loaded(path: Path, network) -> None:
    """Take `network`, whose weights were just written to `path`, as that file's cached network (on the
    CPU), so the nodes that use it next do not read the file back."""
    stat = path.stat()
    with _LOCK:
        _CACHE.clear()   # one ColorMNet at a time, as in load_cached
        _CACHE[str(path)] = ((stat.st_mtime, stat.st_size), network.to("cpu").eval())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The autocast dtype name for a precision choice on `device`.

    fp16 on a CPU is about 30x slower than fp32 there (no fast half kernels), so it runs as fp32
    with a warning; auto is `auto_precision` (fp16 autocast on CUDA, the official default and 3x closer
    to fp32 than bf16 in 8-bit levels; fp32 elsewhere; bench/RESULTS.md)."""
    if precision != "auto":
        return working_precision(_AUTOCAST[precision], device.type)
    return auto_precision(device.type)


@dataclass(frozen=True)
class ColorMNetModel:
    """The COLORMNET_MODEL socket value: which checkpoint, where and how precisely to run it.

    The loader node validates and loads the network into a shared cache; this handle finds it there
    (and reloads it if another checkpoint took its place meanwhile)."""

    path: Path
    precision: str = "auto"
    family: str = ""          # e.g. "CMNET2, DINOv3 ViT-B/16 backbone (fine-tuned)"

    def network(self, device: torch.device):
        """The loaded network, moved to `device` (eval mode, float32 weights)."""
        return load_cached(self.path).to(device)

    def autocast(self, device: torch.device) -> str:
        return resolve_precision(self.precision, device)

    def offload(self) -> None:
        cached = _CACHE.get(str(self.path))
        if cached is not None:
            cached[1].to(host.offload_device())
        host.soft_empty_cache()


def _loaded(path: Path, precision: str, node_id) -> ColorMNetModel:
    """Load (every problem with the file surfaces on the calling node; the file is read once) and say on
    the node which family and backbone it holds."""
    from ..colormnet_core.checkpoint import describe_network

    family = describe_network(load_cached(path))
    host.show_status(node_id, [f"{path.name}: {family}"])
    log.info("ColorMNet: %s is %s", path.name, family)
    return ColorMNetModel(path, precision, family)


def _missing_message(name: str) -> str:
    from ..colormnet_core.checkpoint import OFFICIAL_FILENAME, OFFICIAL_URL

    folders = ", ".join(str(p) for p in host.model_dirs())
    stem = Path(name).stem if Path(name).suffix else name
    return (f"Checkpoint not found: put the official {OFFICIAL_FILENAME} in models/colormnet and refresh the page, "
            f"or use the 'ColorMNet Download Model' node. Looked for {stem}.pth and {stem}.safetensors in: "
            f"{folders}. Download: {OFFICIAL_URL} (weights licensed CC BY-NC-SA 4.0: non-commercial, "
            f"share-alike).")


class ColorMNetModelLoader:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("Loads a ColorMNet checkpoint from models/colormnet (.pth or .safetensors, recognised by "
                   "content) and checks it fully here: keys, shapes and the sha256 recorded at download. Two "
                   "families: the official release (DINOv2 backbone) and CMNET2's fine-tuned DINOv3 checkpoints "
                   "(a CMNET2 .pth without its backbone needs the extracted dinov3-vitb16 folder beside it); the "
                   "node shows which one it loaded. The model stays cached between runs and is moved off the GPU "
                   "after each use. ColorMNet colorizes (colourises) black-and-white video from colour exemplars.")
    RETURN_TYPES = ("COLORMNET_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = host.list_checkpoints() or ["(no checkpoint in models/colormnet)"]
        return {"required": {
            "checkpoint": (names, {"tooltip": "A file in ComfyUI/models/colormnet (also folders declared as "
                                              "'colormnet:' in extra_model_paths.yaml). A name ending .pth also "
                                              "finds the same name ending .safetensors, and the reverse."}),
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "Arithmetic precision. auto: bf16 on GPUs "
                                       "that support it (faster, colours differ by a level or two), else fp32. "
                                       "fp32 reproduces the official outputs. fp16 is for GPUs only (on a CPU "
                                       "it runs as fp32)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str):
        # Declaring `checkpoint` here makes ComfyUI skip its own "Value not in list" check, so a workflow
        # naming the .safetensors still runs with the official .pth (and the reverse).
        if host.resolve_checkpoint(checkpoint) is None:
            return _missing_message(checkpoint)
        return True

    def load(self, checkpoint: str, precision: str, unique_id=None):
        path = host.resolve_checkpoint(checkpoint)
        if path is None:
            raise CheckpointError(_missing_message(checkpoint))
        if path.name != checkpoint:
            log.info("ColorMNet: %r is not in models/colormnet; using %s", checkpoint, path)
        return (_loaded(path, precision, unique_id),)

    @classmethod
    def IS_CHANGED(cls, checkpoint: str, precision: str, unique_id=None):
        path = host.resolve_checkpoint(checkpoint)
        if path is None:
            return float("nan")
        stat = path.stat()
        return f"{path}:{stat.st_mtime}:{stat.st_size}:{precision}"


class ColorMNetDownloadModel:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("Downloads ColorMNet weights into models/colormnet (once; later runs reuse the file and check "
                   "its sha256) and loads them: the official release, or one of CMNET2's fine-tuned DINOv3 "
                   "checkpoints (model input). All are licensed CC BY-NC-SA 4.0 (non-commercial, share-alike): "
                   "set accept_license to agree.")
    RETURN_TYPES = ("COLORMNET_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "download"

    @classmethod
    def INPUT_TYPES(cls):
        from ..colormnet_core.checkpoint import OFFICIAL_FILENAME, OFFICIAL_URL

        return {"required": {
            "accept_license": ("BOOLEAN", {"default": False, "tooltip": "The weights are CC BY-NC-SA 4.0 "
                               "(non-commercial, share-alike): https://creativecommons.org/licenses/by-nc-sa/4.0/"}),
            "source": (["github_release", "huggingface"], {"default": "github_release", "tooltip": "Where to "
                       "download from: the URL below, or a Hugging Face repo (hf_repo_id + hf_filename)."}),
            "url": ("STRING", {"default": OFFICIAL_URL, "tooltip": "Used with source github_release; http(s) "
                               "only. Keep the default unless you host a copy of the official file."}),
            "hf_repo_id": ("STRING", {"default": "", "tooltip": "Used with source huggingface (required there): "
                                      "owner/name of the repo holding the checkpoint."}),
            "hf_filename": ("STRING", {"default": OFFICIAL_FILENAME, "tooltip": "Used with source huggingface: "
                                       "the checkpoint's file name in that repo."}),
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "As on the Model Loader: auto = bf16 on "
                                       "GPUs that support it, else fp32; fp16 is for GPUs only."}),
        }, "optional": {
            "model": (list(MODEL_CHOICES), {"default": "official", "tooltip": "official: the ColorMNet release "
                      "(DINOv2 backbone; source/url/hf inputs apply). cmnet2-dinov3-p374099: CMNET2's fine-tuned "
                      "DINOv3 ViT-B/16 checkpoint (760 MB; 38.46 dB against the official 37.68 on CMNET2's 131 "
                      "clips), checked against its published sha256; -p372402 and -p369412 are earlier releases. "
                      "CMNET2 weights: github.com/dan64/cmnet2/releases, same CC BY-NC-SA 4.0 licence."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def download(self, accept_license, source, url, hf_repo_id, hf_filename, precision, model="official",
                 unique_id=None):
        from ..colormnet_core.download import download_cmnet2, download_official
        from ..colormnet_core.errors import Cancelled

        update = host.progress(100)

        def progress(done, total):
            update(int(100 * done / total) if total else 0)

        try:
            if model == "official":
                path = download_official(
                    host.download_dir(), accept_license=accept_license, url=url,
                    hf_repo_id=hf_repo_id if source == "huggingface" else None, hf_filename=hf_filename.strip(),
                    progress=progress, should_stop=host.interrupted)
            else:
                path = download_cmnet2(host.download_dir(), accept_license=accept_license,
                                       release=model.removeprefix("cmnet2-dinov3-"), progress=progress,
                                       should_stop=host.interrupted)
        except Cancelled:
            host.raise_if_interrupted()   # ComfyUI's own interruption, so the UI shows "interrupted"
            raise
        return (_loaded(path, precision, unique_id),)
