"""The one place that talks to ComfyUI: devices, model folders, progress, interruption.

Every ComfyUI module is imported lazily inside a function, so this file (and every node module)
imports without ComfyUI; standalone, it falls back to plain PyTorch behaviour.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MODEL_FOLDER = "colormnet"
FILMS_FOLDER = "colormnet_films"
FINETUNE_FOLDER = "colormnet_finetune"
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".safetensors", ".sft", ".ckpt"}
BACKBONE_FOLDER = "dinov3-vitb16"   # CMNET2's extracted backbone zip: support files, not a checkpoint


def _comfy(module: str):
    """Import a ComfyUI module, or None when not running inside ComfyUI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


def in_comfyui() -> bool:
    return _comfy("comfy.model_management") is not None and _comfy("folder_paths") is not None


# -- devices -----------------------------------------------------------------------------------

def torch_device() -> torch.device:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    mm = _comfy("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    mm = _comfy("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def supports_bf16(device: torch.device) -> bool:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        try:
            return bool(mm.should_use_bf16(device))
        except Exception:   # signature differences between ComfyUI versions: fall back below
            pass
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def soft_empty_cache() -> None:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_memory_for(bytes_needed: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its own models if our run needs the room."""
    mm = _comfy("comfy.model_management")
    if mm is not None and device.type != "cpu":
        mm.free_memory(bytes_needed, device)


# -- interruption and progress -----------------------------------------------------------------

def interrupted() -> bool:
    mm = _comfy("comfy.model_management")
    return bool(mm is not None and mm.processing_interrupted())


def raise_if_interrupted() -> None:
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def progress(total: int, node_id: str | None = None) -> Callable[[int], None]:
    """A callback `update(done)` that reports absolute progress (a websocket message per call in
    ComfyUI, which is also an interruption point there); a no-op standalone."""
    utils = _comfy("comfy.utils")
    if utils is None:
        return lambda done: None
    bar = utils.ProgressBar(total, node_id=node_id) if node_id else utils.ProgressBar(total)
    return lambda done: bar.update_absolute(done, total)


TEXT_WIDTH = 44   # characters a line: what a 330 px node shows in the preview's 12 px type


def node_text(warnings: list[str], notes: list[str] = ()) -> str:
    """The text shown on a node: each warning, then each note, wrapped to TEXT_WIDTH characters a line
    (the frontend's preview would otherwise cut a long line at the node's edge)."""
    import textwrap

    paragraphs = [f"Warning: {w}" for w in warnings] + [f"Note: {n}" for n in notes]
    return "\n\n".join(textwrap.fill(p, TEXT_WIDTH, break_long_words=False) for p in paragraphs)


def show_text(node_id: str | None, lines: list[str], notes: list[str] = ()) -> None:
    """Show warnings (`lines`) and `notes` as text on the node `node_id` in the ComfyUI frontend (the
    text preview that API nodes use for status); no-op standalone or without a node id. Each call
    replaces the node's text."""
    if lines or notes:
        _send_text(node_id, node_text(list(lines), list(notes)))


def show_status(node_id: str | None, lines: list[str]) -> None:
    """Show `lines` as plain status text on the node `node_id` (e.g. a film's summary); no-op standalone."""
    if lines:
        _send_text(node_id, "\n".join(lines))


def _send_text(node_id: str | None, text: str) -> None:
    """Text for the node `node_id` to the prompt's own client only: ComfyUI's send_progress_text without
    a sid goes to every browser connected, which on a shared server shows one user's film on another's
    screen. A prompt queued without a client id (API scripts) has no browser to show it to."""
    if node_id is None:
        return
    server = _comfy("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    send = getattr(instance, "send_progress_text", None)
    client = getattr(instance, "client_id", None)   # set by ComfyUI from the prompt's client_id while it runs
    if send is None or client is None:
        return
    try:
        send(text, node_id, client)
    except Exception:   # a display nicety must never fail a run (e.g. no client connected)
        log.debug("could not show text on node %s", node_id, exc_info=True)


def execution_blocker(message: str | None = None):
    """ComfyUI's ExecutionBlocker: the nodes fed from it do not run (silently when message is None, else
    they fail with it). Standalone: None."""
    utils = _comfy("comfy_execution.graph_utils")
    blocker = getattr(utils, "ExecutionBlocker", None)
    return blocker(message) if blocker is not None else None


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (Linux MemAvailable, else psutil), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:   # psutil missing or unsupported platform
        return None


# -- model files -------------------------------------------------------------------------------

def _standalone_models_dir() -> Path:
    return Path(os.environ.get("COLORMNET_MODELS_DIR", Path.home() / ".cache" / "colormnet" / "models"))


def register_model_folder() -> None:
    """Declare models/colormnet to ComfyUI (extra_model_paths.yaml entries `colormnet:` then work)."""
    fp = _comfy("folder_paths")
    if fp is None:
        return
    default = os.path.join(fp.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in fp.folder_names_and_paths:
        paths, _ = fp.folder_names_and_paths[MODEL_FOLDER]
        if default not in paths:
            paths.insert(0, default)
        fp.folder_names_and_paths[MODEL_FOLDER] = (paths, set(CHECKPOINT_SUFFIXES))
    else:
        fp.folder_names_and_paths[MODEL_FOLDER] = ([default], set(CHECKPOINT_SUFFIXES))


def model_dirs() -> list[Path]:
    fp = _comfy("folder_paths")
    if fp is None:
        return [_standalone_models_dir()]
    register_model_folder()
    return [Path(p) for p in fp.get_folder_paths(MODEL_FOLDER)]


def download_dir() -> Path:
    """Where downloads go: the first model folder (ComfyUI's models/colormnet)."""
    return model_dirs()[0]


def list_checkpoints() -> list[str]:
    """Checkpoint files in the model folders; not the files inside an extracted CMNET2 backbone folder
    (dinov3-vitb16/), which the checkpoint beside it uses and which are no network of their own."""
    fp = _comfy("folder_paths")
    if fp is not None:
        register_model_folder()
        return sorted(n for n in fp.get_filename_list(MODEL_FOLDER)
                      if Path(n).parts[0] != BACKBONE_FOLDER)
    found = []
    for folder in model_dirs():
        if folder.is_dir():
            found += [p.name for p in folder.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    return sorted(found)


def checkpoint_path(name: str) -> Path | None:
    fp = _comfy("folder_paths")
    if fp is not None:
        register_model_folder()
        full = fp.get_full_path(MODEL_FOLDER, name)
        return Path(full) if full else None
    for folder in model_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_checkpoint(name: str) -> Path | None:
    """`name` as listed, or - when it is not there - a file with the same stem and another checkpoint
    extension (workflows name the .safetensors the download node writes; users often drop in the
    official .pth, and the reverse). None when neither exists."""
    path = checkpoint_path(name)
    if path is not None:
        return path
    stem = Path(name).stem if Path(name).suffix.lower() in CHECKPOINT_SUFFIXES else name
    parent = Path(name).parent
    for suffix in (".safetensors", ".pth", ".sft", ".pt", ".ckpt"):
        candidate = str(parent / f"{stem}{suffix}") if str(parent) != "." else f"{stem}{suffix}"
        path = checkpoint_path(candidate)
        if path is not None:
            return path
    return None


def input_dir() -> Path:
    fp = _comfy("folder_paths")
    return Path(fp.get_input_directory()) if fp is not None else Path.cwd()


def output_dir() -> Path:
    fp = _comfy("folder_paths")
    return Path(fp.get_output_directory()) if fp is not None else Path.cwd() / "output"


def films_dir() -> Path:
    """Where film projects live: ComfyUI's output folder / colormnet_films (one folder per project)."""
    return output_dir() / FILMS_FOLDER


def finetune_dir() -> Path:
    """Where Fine-tune keeps the weights it tuned, by content key: ComfyUI's output folder /
    colormnet_finetune (it survives a restart, unlike temp; the Model Loader does not list it)."""
    return output_dir() / FINETUNE_FOLDER


def temp_dir() -> Path:
    """ComfyUI's temp folder (emptied when ComfyUI starts; Save Video copies from it), else the system's."""
    fp = _comfy("folder_paths")
    if fp is not None:
        return Path(fp.get_temp_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "colormnet"


def video_from_file(path: Path):
    """ComfyUI's VIDEO object for a file (what Load Video returns), or None outside ComfyUI."""
    for module in ("comfy_api.latest", "comfy_api.input_impl"):   # newest first; input_impl since 0.3.3x
        api = _comfy(module)
        impl = getattr(api, "InputImpl", api) if api is not None else None
        if impl is not None and hasattr(impl, "VideoFromFile"):
            return impl.VideoFromFile(str(path))
    return None


def annotated_input_path(name: str) -> Path:
    fp = _comfy("folder_paths")
    if fp is not None:
        return Path(fp.get_annotated_filepath(name))
    return input_dir() / name
