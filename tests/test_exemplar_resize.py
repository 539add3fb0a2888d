"""An exemplar of another size than the frames, on the official path: resized exactly as the official
reader does (PIL BILINEAR on 8-bit RGB), so the output equals a run given the PIL-resized exemplar,
i.e. the same-size path that the golden fixture checks against the official pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from colormnet_core.exemplars import EncodedExemplars, Exemplar
from colormnet_core.preprocess import Geometry, ProcessingSize, as_rgb, resize, resize_like_official
from colormnet_core.session import ColorizeSession

from . import golden


def other_size(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 `3 x H x W` -> the same picture at width x height (bicubic), uint8."""
    hwc = image.permute(1, 2, 0).numpy()
    return torch.from_numpy(cv2.resize(hwc, (width, height), interpolation=cv2.INTER_CUBIC)).permute(2, 0, 1)


def pil_resized(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """What the official reader feeds rgb2lab: PIL open -> RGB -> resize((W, H), BILINEAR)."""
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB").resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def test_official_resize_is_pils_and_float_resize_is_not():
    big = other_size(golden.exemplar(), 517, 298)
    expected = pil_resized(big, 321, 185).double() / 255
    ours = resize_like_official(as_rgb(big[None]), (185, 321))[0]
    assert torch.equal(ours, expected)
    # The float resize has PIL's kernel but no 8-bit steps: up to a level away on many pixels, which the
    # network amplifies (top-k choices flip) to tens of levels in the output. The official path must be PIL's.
    floated = resize(as_rgb(big[None]), (185, 321))[0]
    assert (floated - expected).abs().max() * 255 > 0.5
    assert ((floated * 255).round() != expected * 255).float().mean() > 0.01
    # Float exemplars holding 8-bit values (ComfyUI's LoadImage: k / 255) give the same bytes.
    assert torch.equal(resize_like_official(big[None].float() / 255, (185, 321))[0], expected)


def run(network, frames, exemplar, frame):
    session = ColorizeSession(network, EncodedExemplars((Exemplar(exemplar, frame),)), size=ProcessingSize())
    return torch.stack([r.rgb for r in session.run(frames)])


@pytest.mark.slow
@pytest.mark.parametrize(("frame", "size"), [(None, (517, 298)), (0, (240, 139))], ids=["reference", "pinned"])
def test_exemplar_of_another_size_matches_the_official_path(golden_network, frame, size):
    frames = golden.frames()[:3]
    reference = golden.load_png(golden.GOLDEN / "inputs" / "exemplar_mirrored.png") if frame is None \
        else golden.exemplar()
    odd = other_size(reference, *size)
    official = run(golden_network, frames, pil_resized(odd, 321, 185), frame)   # same-size path (golden-checked)
    ours = run(golden_network, frames, odd, frame)
    levels = ((ours - official).abs() * 255).max()
    assert levels <= 2, f"differs from the official exemplar path by {levels:.1f} levels"
    # Same 8-bit exemplar after the resize, so in fact the same computation: bit-identical.
    assert torch.equal(ours, official)


def test_own_processing_sizes_keep_the_float_resize():
    geometry = Geometry.plan(185, 321, ProcessingSize("short_side", 112))
    assert geometry.resized
    exemplars = EncodedExemplars((Exemplar(other_size(golden.exemplar(), 517, 298), 0),))
    (prepared,) = exemplars.prepare(None, geometry, torch.device("cpu"))
    expected = resize(as_rgb(exemplars.exemplars[0].image[None]), geometry.processing_size)
    from colormnet_core.preprocess import normalized_lab

    assert torch.equal(prepared.lab, geometry.padding.pad(normalized_lab(expected.clamp(0, 1))))
