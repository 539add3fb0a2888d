"""Writes workflows/*.json (UI format for the frontend) and workflows/api/*.json (API format) from
compact graph descriptions, so the two stay consistent. Core node signatures come from a saved
/object_info (tests/data/spec/comfyui_object_info.json by default), ours from our node classes.
Inputs are the example media in workflows/media (copy them into ComfyUI/input).

    python scripts/make_workflows.py [--object-info PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
CHECKPOINT = "DINOv2FeatureV6_LocalAtten_s2_154000.safetensors"
VIDEO = "colormnet_example.mp4"
EXEMPLAR = "colormnet_example_exemplar.png"
TWO_SHOTS = "colormnet_example_two_shots.mp4"          # frames 0-11, then the same frames mirrored
EXEMPLAR_MIRRORED = "colormnet_example_exemplar_mirrored.png"   # the true colour version of its frame 12

# Node sizes [width, height] that fit each node's sockets and widgets (frontend 1.27: 20 px a socket
# row, 24 px a widget, plus the title); media nodes get room for their preview.
SIZES = {
    "ColorMNetModelLoader": [400, 82], "ColorMNetDownloadModel": [420, 178], "ColorMNetLoadExemplar": [300, 102],
    "ColorMNetEncode": [260, 54], "ColorMNetMemory": [330, 226], "ColorMNetColorize": [330, 238],
    "ColorMNetVideo": [330, 218], "ColorMNetDetectShots": [290, 162],
    "LoadVideo": [320, 340], "LoadImage": [320, 340], "SaveVideo": [400, 380], "PreviewImage": [420, 320],
    "GetVideoComponents": [240, 74], "CreateVideo": [240, 82], "ImageFromBatch": [260, 82],
    "CheckpointLoaderSimple": [340, 98], "CLIPTextEncode": [360, 160], "VAEEncode": [220, 46],
    "VAEDecode": [220, 46], "KSampler": [320, 262], "UNETLoader": [360, 82], "DualCLIPLoader": [360, 130],
    "VAELoader": [320, 58], "FluxKontextImageScale": [260, 26], "ReferenceLatent": [240, 46],
    "FluxGuidance": [260, 58], "ConditioningZeroOut": [240, 26],
}
DEFAULT_SIZE = [300, 120]
COLUMN_GAP, ROW_GAP = 40, 40
VIEW = (1860, 960)   # the canvas of a 1920x1080 browser window, for the fit-to-view scale


def our_node_defs(module=None) -> dict:
    """Signatures of our nodes, from the plugin `module` (default: import this repository as one)."""
    if module is None:
        spec = importlib.util.spec_from_file_location("colormnet_plugin", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["colormnet_plugin"] = module
        spec.loader.exec_module(module)
    defs = {}
    for name, cls in module.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        defs[name] = {"input": inputs, "output": list(cls.RETURN_TYPES),
                      "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                      "input_order": {k: list(v) for k, v in inputs.items() if k != "hidden"}}
    return defs


def kind(spec) -> str:
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def ordered(node_def):
    order = node_def.get("input_order", {})
    for group in ("required", "optional"):
        specs = node_def["input"].get(group, {})
        for name in order.get(group, list(specs)):
            yield name, specs[name]


class Graph:
    """A workflow under construction: nodes with widget values and links by input name."""

    def __init__(self, defs: dict) -> None:
        self.defs = defs
        self.nodes: list[dict] = []

    def add(self, node_type: str, title: str | None = None, **inputs) -> int:
        if node_type not in self.defs:
            raise KeyError(f"unknown node type {node_type}")
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": node_type, "title": title, "inputs": inputs})
        return node_id

    def api(self) -> dict:
        prompt = {}
        for n in self.nodes:
            inputs = {}
            for name, value in n["inputs"].items():
                inputs[name] = [str(value[0]), value[1]] if isinstance(value, tuple) else value
            prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs,
                                    "_meta": {"title": n["title"] or n["type"]}}
        return prompt

    def ui(self) -> dict:
        links, ui_nodes, outgoing = [], [], {}
        for n in self.nodes:
            for name, value in n["inputs"].items():
                if isinstance(value, tuple):
                    src, slot = value
                    src_def = self.defs[self.nodes[src - 1]["type"]]
                    link_id = len(links) + 1
                    links.append([link_id, src, slot, n["id"], name, src_def["output"][slot]])
                    outgoing.setdefault((src, slot), []).append(link_id)
        depth = {}
        for n in self.nodes:   # nodes are added in dependency order
            sources = [v[0] for v in n["inputs"].values() if isinstance(v, tuple)]
            depth[n["id"]] = 1 + max((depth[s] for s in sources), default=-1)
        # Columns by depth. A long chain wraps into rows (each starting below the tallest column of the row
        # above); the number of columns per row is the one that shows the graph largest at fit-to-view.
        widths: dict[int, int] = {}
        heights: dict[int, int] = {}
        for n in self.nodes:
            column = depth[n["id"]]
            width, height = SIZES.get(n["type"], DEFAULT_SIZE)
            widths[column] = max(widths.get(column, 0), width)
            heights[column] = heights.get(column, 0) + height + ROW_GAP + 30   # 30: the title bar
        columns = sorted(widths)

        def place(per_row: int) -> tuple[dict, dict, float]:
            lefts, tops, x, row_top, right = {}, {}, 40, 60, 0
            for i, column in enumerate(columns):
                if i and i % per_row == 0:
                    row_top += max(heights[c] for c in columns[i - per_row:i]) + ROW_GAP
                    x = 40
                lefts[column], tops[column] = x, row_top
                x += widths[column] + COLUMN_GAP
                right = max(right, x)
            bottom = max(tops[c] + heights[c] for c in columns)
            return lefts, tops, min(VIEW[0] / right, VIEW[1] / bottom)

        lefts, tops, _ = max((place(n) for n in range(len(columns), 1, -1)), key=lambda layout: layout[2])
        for n in self.nodes:
            d = self.defs[n["type"]]
            sockets, widgets = [], []
            for name, spec in ordered(d):
                is_widget = kind(spec) in WIDGET_TYPES and not options(spec).get("forceInput")
                value = n["inputs"].get(name)
                if not is_widget or isinstance(value, tuple):
                    link = next((l[0] for l in links if l[3] == n["id"] and l[4] == name), None)
                    entry = {"name": name, "type": kind(spec) if not is_widget else kind(spec), "link": link}
                    if is_widget:
                        entry["widget"] = {"name": name}
                    sockets.append(entry)
                if is_widget:
                    default = options(spec).get("default")
                    if default is None and kind(spec) == "COMBO":
                        choices = spec[0] if isinstance(spec[0], list) else options(spec).get("options", [])
                        default = choices[0] if choices else ""
                    widgets.append(value if value is not None and not isinstance(value, tuple) else default)
                    if kind(spec) == "INT" and (options(spec).get("control_after_generate") or name in ("seed",)):
                        widgets.append("fixed")
                    if options(spec).get("image_upload") or options(spec).get("video_upload"):
                        widgets.append("image")
            outputs = [{"name": (d.get("output_name") or d["output"])[i], "type": t,
                        "links": outgoing.get((n["id"], i), []), "slot_index": i} for i, t in enumerate(d["output"])]
            column = depth[n["id"]]
            size = list(SIZES.get(n["type"], DEFAULT_SIZE))
            top = tops[column]
            tops[column] = top + size[1] + ROW_GAP + 30   # 30: the title bar
            node = {"id": n["id"], "type": n["type"], "pos": [lefts[column], top], "size": size,
                    "flags": {}, "order": n["id"] - 1, "mode": 0, "inputs": sockets, "outputs": outputs,
                    "properties": {"Node name for S&R": n["type"]}, "widgets_values": widgets}
            if n["title"]:
                node["title"] = n["title"]
            ui_nodes.append(node)
        for link in links:   # target slot index instead of the input name
            target = ui_nodes[link[3] - 1]
            link[4] = next(i for i, s in enumerate(target["inputs"]) if s["name"] == link[4])
        return {"last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}}, "version": 0.4}


def colorize_chain(g: Graph, exemplars: int, frames=None, video=None, size="480"):
    model = g.add("ColorMNetModelLoader", checkpoint=CHECKPOINT, precision="auto")
    encoded = g.add("ColorMNetEncode", model=(model, 0), exemplars=(exemplars, 0))
    memory = g.add("ColorMNetMemory", encoded=(encoded, 0), mem_every=5, min_mid_term_frames=5,
                   max_mid_term_frames=10, num_prototypes=128, max_long_term_elements=10000, top_k=30,
                   long_term=True, permanent_exemplars=True)
    common = {"processing_size": size, "keep_luminance": True, "key_batch": 1}
    if video is not None:   # a VIDEO socket: streamed one frame at a time, sound kept
        return g.add("ColorMNetVideo", model=(model, 0), memory=(memory, 0), video=video, **common, crf=18)
    return g.add("ColorMNetColorize", model=(model, 0), memory=(memory, 0), frames=frames, **common)


def save_video(g: Graph, images: int, components: int, prefix: str) -> None:
    video = g.add("CreateVideo", images=(images, 0), fps=(components, 2))
    g.add("SaveVideo", video=(video, 0), filename_prefix=prefix, format="auto", codec="auto")


def video_workflow(defs, prefix: str, add_exemplars, video: str = VIDEO) -> Graph:
    """Load Video -> components -> Colorize (exemplars from `add_exemplars(graph, components)`) -> Save Video."""
    g = Graph(defs)
    clip = g.add("LoadVideo", file=video)
    parts = g.add("GetVideoComponents", video=(clip, 0))
    out = colorize_chain(g, add_exemplars(g, parts), frames=(parts, 0))
    save_video(g, out, parts, prefix)
    return g


def basic(defs):
    def exemplar(g, parts):
        image = g.add("LoadImage", "Exemplar: colour version of frame 0", image=EXEMPLAR)
        return g.add("ColorMNetLoadExemplar", image=(image, 0), frame=0)

    return video_workflow(defs, "colormnet/basic", exemplar)


def keyframes(defs):
    """Two keyframes on the two-shot example: each exemplar is the true colour version of its frame
    (frame 12 opens the mirrored shot, and its exemplar is the mirrored colour frame)."""
    def two_keyframes(g, parts):
        previous = None
        for frame, picture in ((0, EXEMPLAR), (12, EXEMPLAR_MIRRORED)):
            image = g.add("LoadImage", f"Keyframe: colour version of frame {frame}", image=picture)
            extra = {"exemplars": (previous, 0)} if previous else {}
            previous = g.add("ColorMNetLoadExemplar", image=(image, 0), frame=frame, **extra)
        return previous

    return video_workflow(defs, "colormnet/keyframes", two_keyframes, video=TWO_SHOTS)


def image_model_exemplar(defs):
    def generated(g, parts):
        first = g.add("ImageFromBatch", "Frame 0", image=(parts, 0), batch_index=0, length=1)
        ckpt = g.add("CheckpointLoaderSimple", "Any image model (SD 1.5 / SDXL)",
                     ckpt_name="v1-5-pruned-emaonly.safetensors")
        positive = g.add("CLIPTextEncode", "Describe the colours", clip=(ckpt, 1),
                         text="a black swan on a green pond, natural colours, photo")
        negative = g.add("CLIPTextEncode", clip=(ckpt, 1), text="black and white, monochrome, grayscale")
        latent = g.add("VAEEncode", pixels=(first, 0), vae=(ckpt, 2))
        sampled = g.add("KSampler", model=(ckpt, 0), seed=7, steps=20, cfg=6.0, sampler_name="euler",
                        scheduler="normal", positive=(positive, 0), negative=(negative, 0),
                        latent_image=(latent, 0), denoise=0.55)
        decoded = g.add("VAEDecode", samples=(sampled, 0), vae=(ckpt, 2))
        return g.add("ColorMNetLoadExemplar", image=(decoded, 0), frame=0)

    return video_workflow(defs, "colormnet/image_model_exemplar", generated)


def long_video(defs):
    """Load Video -> ColorMNet Colorize Video (frame by frame, flat memory, sound kept) -> Save Video."""
    g = Graph(defs)
    clip = g.add("LoadVideo", file=VIDEO)
    image = g.add("LoadImage", "Exemplar: colour version of frame 0", image=EXEMPLAR)
    ex = g.add("ColorMNetLoadExemplar", image=(image, 0), frame=0)
    out = colorize_chain(g, ex, video=(clip, 0))
    g.add("SaveVideo", video=(out, 0), filename_prefix="colormnet/long_video", format="auto", codec="auto")
    return g


# -- shots: an image model colours the first frame of every shot, in one batch ---------------------

SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
KONTEXT = {"unet": "flux1-dev-kontext_fp8_scaled.safetensors", "clip_l": "clip_l.safetensors",
           "t5": "t5xxl_fp8_e4m3fn_scaled.safetensors", "vae": "ae.safetensors"}
KONTEXT_PROMPT = ("Colorize this black and white photograph with natural, realistic colours. Keep the composition, "
                  "the people, the lighting and every detail exactly as they are.")


def shots_workflow(defs, prefix: str, colour_keyframes) -> Graph:
    """Load Video -> Detect Shots -> keyframes coloured by `colour_keyframes(graph, keyframes)` (one batch)
    -> Load Exemplar (batch + the shots' frame indices) -> Colorize per shot -> Save Video, plus previews of
    the coloured keyframes and of the confidence plot."""
    g = Graph(defs)
    clip = g.add("LoadVideo", file=TWO_SHOTS)
    parts = g.add("GetVideoComponents", video=(clip, 0))
    shots = g.add("ColorMNetDetectShots", frames=(parts, 0), threshold=0.2, min_shot_length=10)
    coloured = colour_keyframes(g, (shots, 1))
    g.add("PreviewImage", "Coloured keyframes", images=(coloured, 0))
    exemplars = g.add("ColorMNetLoadExemplar", image=(coloured, 0), frame=0, batch_frames=(shots, 2))
    out = colorize_chain(g, exemplars, frames=(parts, 0))
    g.nodes[out - 1]["inputs"].update(shots="from input", shot_list=(shots, 0))
    save_video(g, out, parts, prefix)
    g.add("PreviewImage", "Match confidence (add exemplars where it drops)", images=(out, 1))
    return g


def shots_sd15(defs):
    """Light variant: SD 1.5 img2img (any SD 1.5 checkpoint) at denoise 0.6 keeps the keyframes' layout."""
    def sd15(g, keyframes):
        ckpt = g.add("CheckpointLoaderSimple", "Any SD 1.5 checkpoint", ckpt_name=SD15_CHECKPOINT)
        positive = g.add("CLIPTextEncode", "Describe the colours", clip=(ckpt, 1),
                         text="a colour photograph, natural colours, realistic skin tones, detailed")
        negative = g.add("CLIPTextEncode", clip=(ckpt, 1), text="black and white, monochrome, grayscale, sepia")
        latent = g.add("VAEEncode", pixels=keyframes, vae=(ckpt, 2))
        sampled = g.add("KSampler", model=(ckpt, 0), seed=7, steps=20, cfg=6.0, sampler_name="euler",
                        scheduler="normal", positive=(positive, 0), negative=(negative, 0),
                        latent_image=(latent, 0), denoise=0.6)
        return g.add("VAEDecode", samples=(sampled, 0), vae=(ckpt, 2))

    return shots_workflow(defs, "colormnet/shots_sd15", sd15)


def shots_flux_kontext(defs):
    """Best-quality variant: FLUX.1 Kontext [dev], an instruction-editing model, told to colorize."""
    def kontext(g, keyframes):
        unet = g.add("UNETLoader", "FLUX.1 Kontext [dev]", unet_name=KONTEXT["unet"], weight_dtype="default")
        clip = g.add("DualCLIPLoader", clip_name1=KONTEXT["clip_l"], clip_name2=KONTEXT["t5"], type="flux",
                     device="default")
        vae = g.add("VAELoader", vae_name=KONTEXT["vae"])
        scaled = g.add("FluxKontextImageScale", image=keyframes)
        latent = g.add("VAEEncode", pixels=(scaled, 0), vae=(vae, 0))
        prompt = g.add("CLIPTextEncode", "Instruction", clip=(clip, 0), text=KONTEXT_PROMPT)
        reference = g.add("ReferenceLatent", conditioning=(prompt, 0), latent=(latent, 0))
        guided = g.add("FluxGuidance", conditioning=(reference, 0), guidance=2.5)
        negative = g.add("ConditioningZeroOut", conditioning=(prompt, 0))
        sampled = g.add("KSampler", model=(unet, 0), seed=7, steps=20, cfg=1.0, sampler_name="euler",
                        scheduler="simple", positive=(guided, 0), negative=(negative, 0),
                        latent_image=(latent, 0), denoise=1.0)
        return g.add("VAEDecode", samples=(sampled, 0), vae=(vae, 0))

    return shots_workflow(defs, "colormnet/shots_flux_kontext", kontext)


WORKFLOWS = {
    "colormnet_basic": basic,
    "colormnet_keyframes": keyframes,
    "colormnet_image_model_exemplar": image_model_exemplar,
    "colormnet_long_video": long_video,
    "colormnet_shots_sd15": shots_sd15,
    "colormnet_shots_flux_kontext": shots_flux_kontext,
}


def render(core: dict, ours: dict) -> dict[str, str]:
    """Every workflow file's text, by its path under workflows/, from core and our node signatures."""
    defs = {**core, **ours}
    files = {}
    for name, build in WORKFLOWS.items():
        graph = build(defs)
        files[f"{name}.json"] = json.dumps(graph.ui(), indent=1) + "\n"
        files[f"api/{name}.json"] = json.dumps(graph.api(), indent=1) + "\n"
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-info", default=REPO / "tests" / "data" / "spec" / "comfyui_object_info.json")
    args = parser.parse_args()
    core = json.loads(Path(args.object_info).read_text())["nodes"]
    out = REPO / "workflows"
    (out / "api").mkdir(parents=True, exist_ok=True)
    for path, text in render(core, our_node_defs()).items():
        (out / path).write_text(text)
        print(f"wrote workflows/{path}")


if __name__ == "__main__":
    main()
