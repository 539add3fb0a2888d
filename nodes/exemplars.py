"""Exemplar nodes: gather colour exemplars (chainable) and encode them for colorization."""

from __future__ import annotations

from ..colormnet_core.errors import InputError
from ..colormnet_core.exemplar_checks import check_exemplars
from ..colormnet_core.exemplars import EncodedExemplars, Exemplar
from . import host
from .search import SEARCH_ALIASES
from .tensors import to_bchw

NOT_A_FRAME = -1
MAX_FRAME = 10_000_000
ROLES = ["pin", "reference"]


def parse_frame_list(text: str, count: int) -> list[int]:
    """'0, 24, 48' -> [0, 24, 48]; must give one index per image of the batch."""
    try:
        frames = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"batch_frames must be comma-separated whole numbers (e.g. 0, 24, 48), got {text!r}.") from None
    if len(frames) != count:
        raise InputError(f"batch_frames lists {len(frames)} frame indices but the image batch has {count} images; "
                         f"give one index per image (-1 for a reference that is not a frame).")
    return frames


class ColorMNetLoadExemplar:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("A colour exemplar: the colour version of one frame of the video (frame = its index, from 0), "
                   "or a reference picture that is not a frame (frame = -1). Chain several through 'exemplars' "
                   "to pin colours at several frames. With role 'reference' (CMNET2's schedule) the image is "
                   "given at 'frame' instead: it joins a permanent memory tagged with that frame, and the frame "
                   "itself is still colorized from memory. A pinned exemplar should have the frames' aspect ratio (it "
                   "is stretched to them); a reference may have any size. Greyscale or tiny images are flagged.")
    RETURN_TYPES = ("COLORMNET_EXEMPLARS",)
    RETURN_NAMES = ("exemplars",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The exemplar: from Load Image, an image model, or a video frame."}),
                "frame": ("INT", {"default": 0, "min": NOT_A_FRAME, "max": MAX_FRAME,
                                  "tooltip": "Video frame this image is the colour version of (0 = first). "
                                             "-1: a reference that is not a frame of the video."}),
            },
            "optional": {
                "exemplars": ("COLORMNET_EXEMPLARS", {"tooltip": "Exemplars from another Load Exemplar node."}),
                "batch_frames": ("STRING", {"default": "", "tooltip": "For an image batch: one frame index per "
                                            "image, comma-separated (e.g. 0, 120, 240). Empty: use 'frame'."}),
                "role": (ROLES, {"default": "pin", "tooltip": "pin (default): the frame's output takes this "
                                 "image's colours (frame -1: a reference before the first frame, official). "
                                 "reference: CMNET2's way - the image joins a permanent memory tagged with "
                                 "'frame' (-1: the first frame) when the video gets there, and that frame is "
                                 "colorized from memory too; use with Memory's proximity_bias when several "
                                 "references look alike but differ in colour."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def add(self, image, frame, exemplars=None, batch_frames="", role="pin", unique_id=None):
        images = to_bchw(image, "the exemplar image")
        if batch_frames.strip():
            frames = parse_frame_list(batch_frames, images.shape[0])
        elif images.shape[0] == 1:
            frames = [frame]
        else:
            raise InputError(f"the exemplar input is a batch of {images.shape[0]} images; set batch_frames to one "
                             f"frame index per image, or pick one image with Image From Batch.")
        reference = role == "reference"
        added = tuple(Exemplar(img.clone(), None if f == NOT_A_FRAME else f, reference)
                      for img, f in zip(images, frames))
        # Tiny or colourless images: legal, but say so here, on the node that holds them (and in the log).
        host.show_text(unique_id, check_exemplars(added))
        # A new tuple: the upstream node's cached output is never modified.
        return (tuple(exemplars or ()) + added,)


class ColorMNetEncode:
    CATEGORY = "ColorMNet"
    SEARCH_ALIASES = SEARCH_ALIASES
    DESCRIPTION = ("Prepares the exemplars for colorization with this model. The result is reusable: "
                   "several videos can be colorized from one encoding.")
    RETURN_TYPES = ("COLORMNET_ENCODED",)
    RETURN_NAMES = ("encoded",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("COLORMNET_MODEL",),
            "exemplars": ("COLORMNET_EXEMPLARS",),
        }}

    def encode(self, model, exemplars):
        return (EncodedExemplars(tuple(exemplars)),)
