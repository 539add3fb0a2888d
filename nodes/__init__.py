"""ComfyUI node declarations (classic node API). The maths lives in colormnet_core."""

from __future__ import annotations

from .colorize import ColorMNetColorize
from .exemplars import ColorMNetEncode, ColorMNetLoadExemplar
from .film import ColorMNetAssembleFilm, ColorMNetFilmProject, ColorMNetFilmShot, ColorMNetRenderShot
from .finetune import ColorMNetFilmExemplars, ColorMNetFinetune
from .memory import ColorMNetMemory
from .model import ColorMNetDownloadModel, ColorMNetModelLoader
from .shots import ColorMNetDetectShots
from .video import ColorMNetColorizeVideo, ColorMNetVideo

NODE_CLASS_MAPPINGS = {
    "ColorMNetModelLoader": ColorMNetModelLoader,
    "ColorMNetDownloadModel": ColorMNetDownloadModel,
    "ColorMNetLoadExemplar": ColorMNetLoadExemplar,
    "ColorMNetEncode": ColorMNetEncode,
    "ColorMNetMemory": ColorMNetMemory,
    "ColorMNetFinetune": ColorMNetFinetune,
    "ColorMNetColorize": ColorMNetColorize,
    "ColorMNetColorizeVideo": ColorMNetColorizeVideo,
    "ColorMNetVideo": ColorMNetVideo,
    "ColorMNetDetectShots": ColorMNetDetectShots,
    "ColorMNetFilmProject": ColorMNetFilmProject,
    "ColorMNetFilmShot": ColorMNetFilmShot,
    "ColorMNetRenderShot": ColorMNetRenderShot,
    "ColorMNetAssembleFilm": ColorMNetAssembleFilm,
    "ColorMNetFilmExemplars": ColorMNetFilmExemplars,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ColorMNetModelLoader": "ColorMNet Model Loader",
    "ColorMNetDownloadModel": "ColorMNet Download Model",
    "ColorMNetLoadExemplar": "ColorMNet Load Exemplar",
    "ColorMNetEncode": "ColorMNet Encode Exemplars",
    "ColorMNetMemory": "ColorMNet Memory",
    "ColorMNetFinetune": "ColorMNet Fine-tune",
    "ColorMNetColorize": "ColorMNet Colorize (colourise)",
    "ColorMNetColorizeVideo": "ColorMNet Colorize Video File (deprecated)",
    "ColorMNetVideo": "ColorMNet Colorize Video",
    "ColorMNetDetectShots": "ColorMNet Detect Shots",
    "ColorMNetFilmProject": "ColorMNet Film Project",
    "ColorMNetFilmShot": "ColorMNet Film Shot",
    "ColorMNetRenderShot": "ColorMNet Render Shot",
    "ColorMNetAssembleFilm": "ColorMNet Assemble Film",
    "ColorMNetFilmExemplars": "ColorMNet Film Exemplars",
}
