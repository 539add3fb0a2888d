"""Session behaviour beyond the golden configurations: exemplars anywhere, full-resolution output,
bounded memory, precision, and the errors users can cause."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from colormnet_core import allocator
from colormnet_core.color import rgb_to_lab
from colormnet_core.config import MemoryConfig, NetworkConfig
from colormnet_core.errors import Cancelled, InputError, ResolutionError
from colormnet_core.exemplars import EncodedExemplars, Exemplar
from colormnet_core.network import ColorMNet
from colormnet_core.preprocess import Geometry, ProcessingSize
from colormnet_core.session import ColorizeSession

from . import golden

SMALL = ProcessingSize("short_side", 112)


def colorize(network, frames, exemplars, **options):
    options.setdefault("size", SMALL)
    session = ColorizeSession(network, EncodedExemplars(tuple(exemplars)), options.pop("memory", None), **options)
    return list(session.run(frames)), session


@pytest.fixture(scope="module")
def clip():
    return golden.frames()[:8]                                 # 8 x 3 x 185 x 321 uint8


@pytest.fixture(scope="module")
def exemplar0():
    return golden.load_png(golden.GOLDEN / "inputs" / "exemplar.png")


def ab_distance(result_ab, exemplar, size):
    target = F.interpolate(rgb_to_lab(exemplar[None].double() / 255).float()[:, 1:], size=size,
                           mode="bilinear", align_corners=False, antialias=True)[0] / 110
    return (result_ab - target).abs().mean().item()


@pytest.mark.slow
def test_second_pinned_exemplar_changes_nothing_before_its_frame_and_pulls_colours_after(
        golden_network, clip, exemplar0):
    k = 4
    recoloured = exemplar0[[2, 0, 1]]                           # a visibly different palette for frame k
    single, _ = colorize(golden_network, clip, [Exemplar(exemplar0, 0)])
    double, _ = colorize(golden_network, clip, [Exemplar(exemplar0, 0), Exemplar(recoloured, k)])
    for i in range(k):
        assert torch.equal(single[i].ab, double[i].ab), f"frame {i} before the second exemplar changed"
    size = tuple(single[k].ab.shape[-2:])
    for i in (k, k + 1, k + 3):
        near = ab_distance(double[i].ab, recoloured, size)
        far = ab_distance(single[i].ab, recoloured, size)
        assert near < far, f"frame {i}: {near:.4f} not closer to exemplar {k} than without it ({far:.4f})"


@pytest.mark.slow
@pytest.mark.parametrize("height,width", [(720, 1280), (480, 853), (187, 333)])
def test_output_keeps_input_size_and_luminance(golden_network, exemplar0, height, width):
    torch.manual_seed(height)
    base = F.interpolate(torch.rand(2, 3, 24, 40), size=(height, width), mode="bicubic").clamp(0, 1)
    results, session = colorize(golden_network, base, [Exemplar(exemplar0, 0)], gamut="keep_luminance")
    assert session.geometry.processing_size[0] == 112 and session.geometry.resized
    for frame, result in zip(base, results):
        assert result.rgb.shape == (3, height, width)
        assert result.rgb.min() >= 0 and result.rgb.max() <= 1
        l_out = rgb_to_lab(result.rgb[None].double())[0, 0]
        l_in = rgb_to_lab(frame[None].double())[0, 0]
        assert (l_out - l_in).abs().max() <= 0.5
    # Colour really arrived: the output is not grey.
    assert rgb_to_lab(results[1].rgb[None].double())[0, 1:].abs().mean() > 1


@pytest.mark.slow
def test_memory_stays_within_the_configured_stores_frame_after_frame(golden_network):
    """A stress configuration fills the long-term store within a few frames; over 60 frames it is then
    consolidated and pruned about fifty times each, and neither store may ever pass its bound."""
    stress = MemoryConfig(mem_every=1, min_mid_term_frames=2, max_mid_term_frames=3, num_prototypes=16,
                          max_long_term_elements=64, top_k=8)
    torch.manual_seed(0)
    frames = (torch.rand(60, 1, 1, 1) * 0.6 + 0.2 + torch.rand(60, 3, 112, 112) * 0.1).clamp(0, 1)
    events = []
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(frames[0], 0),)), stress,
                              size=ProcessingSize(), key_batch=1, on_memory_event=lambda kind, _: events.append(kind))
    peak = [0, 0]

    def check(result):
        s = session.memory.stats
        assert s.permanent + s.working <= stress.max_mid_term_frames * s.frame_elements
        assert s.long_term <= stress.max_long_term_elements
        peak[0] = max(peak[0], s.permanent + s.working)
        peak[1] = max(peak[1], s.long_term)

    assert sum(1 for _ in session.run(frames, on_frame=check)) == 60
    assert peak[1] > stress.max_long_term_elements - stress.num_prototypes   # the long-term store filled
    assert events.count("consolidate") >= 50 and events.count("prune") >= 45, (events.count("consolidate"),
                                                                                events.count("prune"))


@pytest.mark.slow
def test_bfloat16_on_cpu_stays_close_to_float32(golden_network, clip, exemplar0):
    fp32, _ = colorize(golden_network, clip[:4], [Exemplar(exemplar0, 0)])
    bf16, _ = colorize(golden_network, clip[:4], [Exemplar(exemplar0, 0)], precision="bfloat16")
    for a, b in zip(fp32[1:], bf16[1:]):
        diff = (a.ab - b.ab).abs()
        # Stated in the README: bf16 autocast moves normalised ab by < 0.02 on average and < 0.15 anywhere
        # (measured on the 12 golden frames at full size: <= 0.0104 and <= 0.061).
        assert diff.mean() < 0.02 and diff.max() < 0.15


def test_one_and_four_channel_frames_equal_grey_rgb(golden_network, exemplar0):
    torch.manual_seed(1)
    grey = torch.rand(2, 1, 64, 96)
    rgb, _ = colorize(golden_network, grey.expand(-1, 3, -1, -1), [Exemplar(exemplar0, 0)])
    one, _ = colorize(golden_network, grey, [Exemplar(exemplar0, 0)])
    four, _ = colorize(golden_network, torch.cat([grey.expand(-1, 3, -1, -1), torch.ones(2, 1, 64, 96)], 1),
                       [Exemplar(exemplar0, 0)])
    for a, b, c in zip(rgb, one, four):
        assert torch.equal(a.rgb, b.rgb) and torch.equal(a.rgb, c.rgb)


@pytest.mark.parametrize("frames,match", [
    ([], "no frames"),
    ([torch.rand(3, 64, 64), torch.rand(3, 64, 80)], "one size"),
    ([torch.full((3, 64, 64), float("nan"))], "NaN"),
    ([torch.rand(2, 64, 64)], "1 \\(grey\\), 3 \\(RGB\\) or 4"),
])
def test_bad_frames_raise_with_the_fix(golden_network, exemplar0, frames, match):
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar0, 0),)), size=SMALL)
    with pytest.raises(InputError, match=match):
        list(session.run(frames))


def test_exemplar_past_the_end_is_reported_before_any_work(golden_network, exemplar0):
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar0, 0), Exemplar(exemplar0, 9))))
    with pytest.raises(InputError, match=r"frame\(s\) \[9\].*has 3 frames \(0-2\)"):
        next(session.run(torch.rand(3, 3, 64, 64)))


def test_exemplar_problems_are_explained(exemplar0):
    with pytest.raises(InputError, match="at least one"):
        EncodedExemplars(())
    with pytest.raises(InputError, match="one exemplar per frame"):
        EncodedExemplars((Exemplar(exemplar0, 2), Exemplar(exemplar0, 2)))
    with pytest.raises(InputError, match="frames 0-4 have no colour source"):
        ColorizeSession(None, EncodedExemplars((Exemplar(exemplar0, 5),)))


def test_absurd_resolution_suggests_a_processing_size():
    with pytest.raises(ResolutionError, match="processing size"):
        Geometry.plan(4320, 7680, ProcessingSize())
    assert Geometry.plan(4320, 7680, ProcessingSize("short_side", 720)).processing_size == (720, 1280)


def test_a_cpu_run_reuses_freed_memory_while_it_lasts(golden_network, exemplar0):
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar0, 0),)), size=SMALL)
    depths = [allocator._depth for _ in session.run(torch.rand(3, 3, 64, 64))]
    assert depths == [1, 1, 1] and allocator._depth == 0


def test_callbacks_cancel(golden_network, exemplar0):
    frames = torch.rand(6, 3, 64, 64)
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar0, 0),)), size=SMALL, key_batch=2)
    seen = []

    def stop_at_third(result):
        seen.append(result.index)
        return len(seen) < 3

    with pytest.raises(Cancelled, match="after 3 frames"):
        list(session.run(frames, on_frame=stop_at_third))
    assert seen == [0, 1, 2]
    assert allocator._depth == 0        # the CPU run's allocation policy ends with the run, cancelled or not
    polls = []
    session = ColorizeSession(golden_network, EncodedExemplars((Exemplar(exemplar0, 0),)), size=SMALL, key_batch=4)
    with pytest.raises(Cancelled, match="after 2 frames"):
        list(session.run(frames, should_stop=lambda: polls.append(1) or len(polls) > 2))


def test_shared_exemplars_are_encoded_afresh_for_another_precision(golden_network, clip, exemplar0):
    # A reference is encoded once per geometry and cached in the (shared, ComfyUI-cached) EncodedExemplars.
    # The cache once ignored the precision: a float32 session after a bfloat16 one read bfloat16 keys and
    # failed ("expected m1 and m2 to have the same dtype"); a float16 one after a float32 one used float32 keys.
    shared = EncodedExemplars((Exemplar(exemplar0, None),))
    for precision in ("bfloat16", "float32"):
        session = ColorizeSession(golden_network, shared, size=SMALL, precision=precision)
        reused = [r.ab for r in session.run(clip[:2])]
    fresh = colorize(golden_network, clip[:2], [Exemplar(exemplar0, None)])[0]
    assert all(torch.equal(a, r.ab) for a, r in zip(reused, fresh))


def test_a_compiling_session_does_not_keep_its_network_alive(exemplar0):
    # The torch.compile views were once cached per network in a module-level dict, which kept every network
    # ever used with compile=True alive (on a GPU: its VRAM) after its owner had let it go. Making the view
    # compiles nothing yet (torch.compile is lazy), so this costs only the network's construction.
    network = ColorMNet(NetworkConfig(key_dim=8, value_dim=16, hidden_dim=8))
    gone = weakref.ref(network)
    session = ColorizeSession(network, EncodedExemplars((Exemplar(exemplar0, 0),)), compile=True)
    del network, session
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("text,expected", [
    (None, ProcessingSize()), ("480", ProcessingSize("short_side", 480)),
    ("long:854", ProcessingSize("long_side", 854)),
    ("0.5mp", ProcessingSize("megapixels", 0.5)), ("official", ProcessingSize()),
])
def test_processing_size_parsing(text, expected):
    assert ProcessingSize.parse(text) == expected


def test_processing_size_keeps_aspect_and_never_upscales():
    assert ProcessingSize("short_side", 480).resolve(1080, 1920) == (480, 853)
    assert ProcessingSize("long_side", 854).resolve(1080, 1920) == (480, 854)
    assert ProcessingSize("short_side", 4000).resolve(480, 832) == (480, 832)
    h, w = ProcessingSize("megapixels", 0.5).resolve(1080, 1920)
    assert abs(h * w - 5e5) < 2e3 and abs(w / h - 1920 / 1080) < 0.01
    with pytest.raises(InputError, match="cannot read"):
        ProcessingSize.parse("big")
