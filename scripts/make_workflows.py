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
import math
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
# row, 24 px a widget, plus the title); media nodes get room for their preview, the colorize nodes about
# 100 px for the warnings and notes they show after a run. Widths grow further to fit
# the widgets' labels and values (see `fitted_size`).
SIZES = {
    "ColorMNetModelLoader": [400, 82], "ColorMNetDownloadModel": [420, 178], "ColorMNetLoadExemplar": [300, 102],
    "ColorMNetEncode": [260, 54], "ColorMNetMemory": [330, 226], "ColorMNetColorize": [330, 360],
    "ColorMNetVideo": [330, 380], "ColorMNetDetectShots": [290, 162],
    # Fine-tune shows its scores (four or five wrapped lines) under its widgets after a run.
    "ColorMNetFinetune": [340, 400],
    # Render Shot shows its segment (a 16:9 film at the node's width) and its notes after a run: room for
    # both, so the node does not grow out of its group then.
    "ColorMNetRenderShot": [340, 600],
    "LoadVideo": [300, 300], "LoadImage": [300, 300], "SaveVideo": [360, 330], "PreviewImage": [380, 300],
    "GetVideoComponents": [240, 74], "CreateVideo": [240, 82], "ImageFromBatch": [260, 82],
    "CheckpointLoaderSimple": [340, 98], "CLIPTextEncode": [360, 160], "VAEEncode": [220, 46],
    "VAEDecode": [220, 46], "KSampler": [320, 262], "UNETLoader": [360, 82], "DualCLIPLoader": [360, 130],
    "VAELoader": [320, 58], "FluxKontextImageScale": [260, 26], "ReferenceLatent": [240, 46],
    "FluxGuidance": [260, 58], "ConditioningZeroOut": [240, 26],
}
DEFAULT_SIZE = [300, 120]
# Frontend 1.27 geometry (litegraph): title bar, socket row and widget row heights, the group title bar
# (font 24 px), and text widths measured on its screenshots (a widget's label and value in 12 px type,
# a title in 14 px type).
TITLE_H, SLOT_H, WIDGET_H = 30, 20, 24
GROUP_TITLE_H, GROUP_PAD, GROUP_FONT = 34, 6, 24   # title + pad = the fit margin above a title bar
WIDGET_CHAR_W, WIDGET_MARGIN, TITLE_CHAR_W, TITLE_MARGIN, GROUP_CHAR_W = 7, 80, 7.5, 40, 13
COLUMN_GAP, ROW_GAP = 30, 30   # between the columns of a stage / the nodes stacked in a column
STAGE_GAP, LANE = 34, 12       # between stage groups; one routed wire's lane in the gap below a row
# The view a workflow opens with (extra.ds, which the frontend restores on load): the whole graph centred in
# the canvas the frontend 1.27 shows in a 1920x1080 window (the canvas starts right of the 65 px side bar
# and below the 78 px tab and menu bars), FIT_MARGIN canvas px around it, at most 100 %. Litegraph draws
# no text below MIN_ZOOM (its low-quality threshold), so every shipped workflow must open at or above it.
VIEW, FIT_MARGIN, MIN_ZOOM = (1855, 1002), 20, 0.6
STAGE_COLOR = "#3f789e"
# "control after generate" of INT widgets that have one (default fixed): Film Shot steps through the shots,
# so a batch count of N queues shots 0..N-1.
CONTROL_MODES = {"ColorMNetFilmShot": "increment"}


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
    """A workflow under construction: nodes with widget values and links by input name, each node in the
    stage (a titled group on the canvas) that was opened last with `stage`."""

    def __init__(self, defs: dict) -> None:
        self.defs = defs
        self.nodes: list[dict] = []
        self.stages: list[dict] = []

    def stage(self, title: str, *, new_row: bool = False) -> None:
        """Open a stage: the nodes added next form a titled group. Stages run left to right and wrap into
        rows (the wrap that shows the workflow largest at fit-to-view); `new_row` forces a row to start
        here (and then only forced rows are used)."""
        self.stages.append({"title": title, "new_row": new_row})

    def numbered_stage(self, title: str, **options) -> None:
        """`stage` titled "<n> · title", n counting from 1 (for builders that add stages of their own)."""
        self.stage(f"{len(self.stages) + 1} · {title}", **options)

    def add(self, node_type: str, title: str | None = None, **inputs) -> int:
        if node_type not in self.defs:
            raise KeyError(f"unknown node type {node_type}")
        if not self.stages:
            raise ValueError("open a stage with Graph.stage(title) before adding nodes")
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": node_type, "title": title, "inputs": inputs,
                           "stage": len(self.stages) - 1})
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
        for n in self.nodes:
            d = self.defs[n["type"]]
            sockets, widgets, labels = [], [], []
            for name, spec in ordered(d):
                is_widget = kind(spec) in WIDGET_TYPES and not options(spec).get("forceInput")
                value = n["inputs"].get(name)
                if not is_widget or isinstance(value, tuple):
                    link = next((l[0] for l in links if l[3] == n["id"] and l[4] == name), None)
                    entry = {"name": name, "type": kind(spec), "link": link}
                    if is_widget:
                        entry["widget"] = {"name": name}
                    sockets.append(entry)
                if is_widget:
                    default = options(spec).get("default")
                    if default is None and kind(spec) == "COMBO":
                        choices = spec[0] if isinstance(spec[0], list) else options(spec).get("options", [])
                        default = choices[0] if choices else ""
                    shown = value if value is not None and not isinstance(value, tuple) else default
                    widgets.append(shown)
                    if not options(spec).get("multiline"):
                        labels.append(f"{name}{shown}")
                    if kind(spec) == "INT" and (options(spec).get("control_after_generate") or name in ("seed",)):
                        widgets.append(CONTROL_MODES.get(n["type"], "fixed"))
                    if options(spec).get("image_upload") or options(spec).get("video_upload"):
                        widgets.append("image")
            outputs = [{"name": (d.get("output_name") or d["output"])[i], "type": t,
                        "links": outgoing.get((n["id"], i), []), "slot_index": i} for i, t in enumerate(d["output"])]
            node = {"id": n["id"], "type": n["type"], "pos": [0, 0],
                    "size": fitted_size(n["type"], n["title"] or n["type"], labels),
                    "flags": {}, "order": n["id"] - 1, "mode": 0, "inputs": sockets, "outputs": outputs,
                    "properties": {"Node name for S&R": n["type"]}, "widgets_values": widgets}
            if n["title"]:
                node["title"] = n["title"]
            ui_nodes.append(node)
        for link in links:   # target slot index instead of the input name
            target = ui_nodes[link[3] - 1]
            link[4] = next(i for i, s in enumerate(target["inputs"]) if s["name"] == link[4])
        groups, reroutes, extensions = lay_out_stages(ui_nodes, links, [n["stage"] for n in self.nodes], self.stages)
        extra = {}
        if reroutes:
            extra.update(reroutes=reroutes, linkExtensions=extensions)
        extra["ds"] = opening_view({"nodes": ui_nodes, "groups": groups, "extra": extra})
        return {"last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
                "groups": groups, "config": {}, "extra": extra, "version": 0.4}


# -- layout: stages as titled groups, wires that would pass behind a node routed along a lane ----------

def fitted_size(node_type: str, title: str, labels: list[str]) -> list[int]:
    """The node's size from SIZES, widened so its title and every one-line widget (label + value) show
    whole instead of being cut with an ellipsis."""
    width, height = SIZES.get(node_type, DEFAULT_SIZE)
    needed = max([TITLE_MARGIN + TITLE_CHAR_W * len(title)]
                 + [WIDGET_MARGIN + WIDGET_CHAR_W * len(text) for text in labels])
    return [max(width, 10 * math.ceil(needed / 10)), height]


def socket_y(node: dict, index: int, output: bool) -> float:
    """Canvas y of a socket's centre: sockets in rows from the top; an input that is a linked widget sits
    on its widget's row, below the socket rows."""
    top = node["pos"][1]
    if output:
        return top + (index + 0.7) * SLOT_H
    plain = [s for s in node["inputs"] if "widget" not in s]
    socket = node["inputs"][index]
    if "widget" not in socket:
        return top + (plain.index(socket) + 0.7) * SLOT_H
    rows = max(len(plain), len(node["outputs"]))
    names = [s["name"] for s in node["inputs"] if "widget" in s]
    return top + rows * SLOT_H + 6 + names.index(socket["name"]) * WIDGET_H + WIDGET_H / 2


def node_rect(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) with the title bar."""
    x, y = node["pos"]
    return x, y - TITLE_H, x + node["size"][0], y + node["size"][1]


def _sample(points: list[tuple[float, float]], steps: int = 40):
    """Points along a wire as the frontend draws it: a direct wire is litegraph's spline leaving and
    entering horizontally (control points a quarter of the distance out); a wire through reroutes is
    taken as the polyline through them (the frontend bends it smoothly at each reroute)."""
    if len(points) > 2:
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            for i in range(steps + 1):
                yield x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
        return
    (x0, y0), (x1, y1) = points
    reach = 0.25 * math.dist((x0, y0), (x1, y1))
    c0, c1 = (x0 + reach, y0), (x1 - reach, y1)
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        yield (u ** 3 * x0 + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t ** 3 * x1,
               u ** 3 * y0 + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t ** 3 * y1)


def wire_points(graph: dict, link: list) -> list[tuple[float, float]]:
    """A link's path: its output socket, its reroutes (extra.reroutes, from the output's end), its input."""
    by_id = {n["id"]: n for n in graph["nodes"]}
    source, target = by_id[link[1]], by_id[link[3]]
    start = (source["pos"][0] + source["size"][0], socket_y(source, link[2], True))
    end = (target["pos"][0], socket_y(target, link[4], False))
    reroutes = {r["id"]: r for r in graph.get("extra", {}).get("reroutes", [])}
    parent = {e["id"]: e["parentId"] for e in graph.get("extra", {}).get("linkExtensions", [])}.get(link[0])
    middle = []
    while parent is not None:
        middle.insert(0, tuple(reroutes[parent]["pos"]))
        parent = reroutes[parent].get("parentId")
    return [start, *middle, end]


def wires_behind_nodes(graph: dict) -> list[str]:
    """Links of a UI graph that pass behind a node (the few pixels next to their own sockets excepted)."""
    found = []
    for link in graph["links"]:
        points = wire_points(graph, link)
        for node in graph["nodes"]:
            left, top, right, bottom = node_rect(node)
            hit = next((p for p in _sample(points) if left + 2 < p[0] < right - 2 and top + 2 < p[1] < bottom - 2
                        and min(math.dist(p, points[0]), math.dist(p, points[-1])) > 12), None)
            if hit:
                found.append(f"link {link[0]} ({link[1]} -> {link[3]}) passes behind node {node['id']} "
                             f"{node['type']} at {hit[0]:.0f},{hit[1]:.0f}")
    return found


def graph_bounds(graph: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of everything drawn: nodes with their title bars, groups, reroutes."""
    boxes = [node_rect(n) for n in graph["nodes"]]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in graph["groups"]]
    boxes += [(*r["pos"], *r["pos"]) for r in graph.get("extra", {}).get("reroutes", [])]
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def fit_scale(graph: dict) -> float:
    """The zoom at which the whole graph (nodes, groups, routed wires) plus FIT_MARGIN fills the canvas VIEW
    (at most 1): what the workflow opens at (see `opening_view`)."""
    left, top, right, bottom = graph_bounds(graph)
    return min(1.0, VIEW[0] / (right - left + 2 * FIT_MARGIN), VIEW[1] / (bottom - top + 2 * FIT_MARGIN))


def opening_view(graph: dict) -> dict:
    """extra.ds of a UI workflow: `fit_scale`, and the offset that centres the graph in VIEW (litegraph draws
    canvas point p at (p + offset) * scale)."""
    scale = fit_scale(graph)
    left, top, right, bottom = graph_bounds(graph)
    offset = [VIEW[0] / (2 * scale) - (left + right) / 2, VIEW[1] / (2 * scale) - (top + bottom) / 2]
    return {"scale": round(scale, 4), "offset": [round(v, 1) for v in offset]}


def lay_out_stages(nodes: list[dict], links: list[list], stage_of: list[int], stages: list[dict]):
    """Places `nodes` (UI form, sizes set) in one titled group per stage. Stages run left to right in rows;
    without forced rows the wrap that gives the largest fit-to-view scale wins. Inside a row, a column
    that a wire would cross is lowered below that wire's ends (a spline with horizontal ends stays between
    them); a wire between rows runs along a lane below its output's row (native reroutes).
    Returns (groups, reroutes, link extensions) and sets each node's "pos"."""
    columns = [_stage_columns(nodes, links, [n["id"] for n, s in zip(nodes, stage_of) if s == i])
               for i in range(len(stages))]
    forced = [i for i, s in enumerate(stages) if s["new_row"] and i]
    if forced:
        candidates = [[0, *forced]]
    else:
        candidates = [[0] + [i for i in range(1, len(stages)) if mask >> (i - 1) & 1]   # every way to wrap
                      for mask in range(2 ** (len(stages) - 1))]
    best = None
    for starts in candidates:
        result = _place(nodes, links, stage_of, stages, columns, starts)
        clear = not wires_behind_nodes({"nodes": nodes, "links": links, "extra": {
            "reroutes": result[2], "linkExtensions": result[3]}})
        if best is None or (clear, result[0]) > best[0]:
            best = (clear, result[0]), *result[1:]
    _, groups, reroutes, extensions, positions = best
    for node in nodes:
        node["pos"] = positions[node["id"]]
    return groups, reroutes, extensions


def _stage_columns(nodes: list[dict], links: list[list], members: list[int]) -> list[list[int]]:
    """A stage's nodes in columns by depth along the stage's own links, in the order they were added."""
    inside = set(members)
    depth: dict[int, int] = {}
    for node_id in members:   # nodes are added in dependency order
        sources = [l[1] for l in links if l[3] == node_id and l[1] in inside]
        depth[node_id] = 1 + max((depth[s] for s in sources), default=-1)
    return [[i for i in members if depth[i] == d] for d in sorted(set(depth.values()))]


def _place(nodes, links, stage_of, stages, columns, starts):
    by_id = {n["id"]: n for n in nodes}
    rows = [list(range(a, b)) for a, b in zip(starts, [*starts[1:], len(stages)])]
    row_of = {index: r for r, row in enumerate(rows) for index in row}
    crossing = [l for l in links if row_of[stage_of[l[1] - 1]] != row_of[stage_of[l[3] - 1]]]
    row_a, row_b = (lambda l: row_of[stage_of[l[1] - 1]]), (lambda l: row_of[stage_of[l[3] - 1]])
    # Lanes in the gap below row r: one per output with a wire leaving row r, one per output whose wire
    # comes down the left margin from a higher row into row r + 1.
    far = {(l[1], l[2]): l for l in crossing if row_b(l) > row_a(l) + 1}
    below = [len({(l[1], l[2]) for l in crossing if row_a(l) == r})
             + len({key for key, l in far.items() if row_b(l) == r + 1}) for r in range(len(rows))]
    above = [0] * len(rows)
    blocked: list[list] = []
    for _ in range(2):   # the second pass makes room for the lanes of the wires the first found blocked
        groups, row_bottom, row_lane, top = [], [], [], 40
        for r, row in enumerate(rows):
            x, bottom = 40, top
            content_top = top + GROUP_TITLE_H + GROUP_PAD + above[r] * LANE
            row_lane.append(top + GROUP_TITLE_H + GROUP_PAD / 2)
            for index in row:
                left = x + GROUP_PAD
                for column in columns[index]:
                    y = content_top + TITLE_H
                    width = max(by_id[i]["size"][0] for i in column)
                    for node_id in column:   # one width a column: every output on its right edge
                        by_id[node_id]["pos"] = [left, y]
                        by_id[node_id]["size"][0] = width
                        y += by_id[node_id]["size"][1] + ROW_GAP + TITLE_H
                    bottom = max(bottom, y - ROW_GAP - TITLE_H + GROUP_PAD)
                    left += width + COLUMN_GAP
                right = max(left - COLUMN_GAP + GROUP_PAD, x + GROUP_CHAR_W * len(stages[index]["title"]))
                groups.append({"id": index + 1, "title": stages[index]["title"], "bounding": [x, top, right - x, 0],
                               "color": STAGE_COLOR, "font_size": GROUP_FONT, "flags": {}})
                x = right + STAGE_GAP
            for group in groups[-len(row):]:
                group["bounding"][3] = bottom - top
            row_bottom.append(bottom)
            top = bottom + STAGE_GAP + below[r] * LANE
        if blocked:
            break
        graph = {"nodes": nodes, "links": [l for l in links if l not in crossing], "groups": groups}
        ids = {int(text.split()[1]) for text in wires_behind_nodes(graph)}
        blocked = [l for l in links if l[0] in ids]
        above = [len({(l[1], l[2]) for l in blocked if row_of[stage_of[l[1] - 1]] == r}) for r in range(len(rows))]
        if not blocked:
            break
    reroutes, extensions, lane_of, margin_of = [], [], {}, {}
    gap_used = [0] * len(rows)   # lanes taken in the gap below each row

    def reroute(x, y, parent=None):
        reroutes.append({"id": len(reroutes) + 1, "linkIds": [], "pos": [x, y]}
                        | ({"parentId": parent["id"]} if parent else {}))
        return reroutes[-1]

    for link in [*blocked, *crossing]:
        source, target = by_id[link[1]], by_id[link[3]]
        r = row_a(link)
        key = (link[1], link[2], link in crossing)
        if key not in lane_of:
            if key[2]:
                lane_y = row_bottom[r] + STAGE_GAP / 2 + gap_used[r] * LANE
                gap_used[r] += 1
            else:
                lane_y = row_lane[r] + sum(1 for k in lane_of if row_of[stage_of[k[0] - 1]] == r and not k[2]) * LANE
            lane_of[key] = reroute(source["pos"][0] + source["size"][0] + COLUMN_GAP / 2, lane_y)
        first = lane_of[key]
        first["linkIds"].append(link[0])
        if key[2] and row_b(link) > r + 1:   # down the left margin to the gap above the target's row
            if key not in margin_of:
                t = row_b(link) - 1
                x = 20 - 10 * len(margin_of)
                top = reroute(x, first["pos"][1], first)
                margin_of[key] = reroute(x, row_bottom[t] + STAGE_GAP / 2 + gap_used[t] * LANE, top)
                gap_used[t] += 1
            bend = margin_of[key]
            for point in (bend, next(x for x in reroutes if x["id"] == bend["parentId"])):
                point["linkIds"].append(link[0])
            first = bend
        last = {"id": len(reroutes) + 1, "parentId": first["id"], "linkIds": [link[0]],
                "pos": [target["pos"][0] - COLUMN_GAP / 2, first["pos"][1]]}
        reroutes.append(last)
        extensions.append({"id": link[0], "parentId": last["id"]})
    graph = {"nodes": nodes, "groups": groups, "extra": {"reroutes": reroutes}}
    return fit_scale(graph), groups, reroutes, extensions, {n["id"]: list(n["pos"]) for n in nodes}


MEMORY_DEFAULTS = {"mem_every": 5, "min_mid_term_frames": 5, "max_mid_term_frames": 10, "num_prototypes": 128,
                   "max_long_term_elements": 10000, "top_k": 30, "long_term": True, "permanent_exemplars": True}


def colorize_chain(g: Graph, exemplars: int, frames=None, video=None, size="480"):
    model = g.add("ColorMNetModelLoader", checkpoint=CHECKPOINT, precision="auto")
    encoded = g.add("ColorMNetEncode", model=(model, 0), exemplars=(exemplars, 0))
    memory = g.add("ColorMNetMemory", encoded=(encoded, 0), **MEMORY_DEFAULTS)
    common = {"processing_size": size, "keep_luminance": True, "key_batch": 1}
    if video is not None:   # a VIDEO socket: streamed one frame at a time, sound kept
        return g.add("ColorMNetVideo", model=(model, 0), memory=(memory, 0), video=video, **common, crf=18)
    return g.add("ColorMNetColorize", model=(model, 0), memory=(memory, 0), frames=frames, **common)


def save_video(g: Graph, images: int, components: int, prefix: str, stage: str) -> None:
    g.stage(stage)
    video = g.add("CreateVideo", images=(images, 0), fps=(components, 2))
    g.add("SaveVideo", video=(video, 0), filename_prefix=prefix, format="auto", codec="auto")


def video_workflow(defs, prefix: str, exemplar_stage: str, add_exemplars, video: str = VIDEO) -> Graph:
    """Load Video -> components -> Colorize (exemplars from `add_exemplars(graph, components)`, in the stage
    `exemplar_stage`) -> Save Video."""
    g = Graph(defs)
    g.stage("1 · Load the video")
    clip = g.add("LoadVideo", file=video)
    parts = g.add("GetVideoComponents", video=(clip, 0))
    g.stage(exemplar_stage)
    exemplars = add_exemplars(g, parts)
    g.stage("3 · Colorize")
    out = colorize_chain(g, exemplars, frames=(parts, 0))
    save_video(g, out, parts, prefix, "4 · Save the video")
    return g


def basic(defs):
    def exemplar(g, parts):
        image = g.add("LoadImage", "Exemplar: colour version of frame 0", image=EXEMPLAR)
        return g.add("ColorMNetLoadExemplar", image=(image, 0), frame=0)

    return video_workflow(defs, "colormnet/basic", "2 · The exemplar", exemplar)


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

    g = video_workflow(defs, "colormnet/keyframes", "2 · One exemplar per shot", two_keyframes, video=TWO_SHOTS)
    # Shots found here (memory starts afresh at the cut) and bidirectional propagation: with more keyframes
    # in a shot, colours glide into each of them instead of jumping there.
    colorize = next(n for n in g.nodes if n["type"] == "ColorMNetColorize")
    colorize["inputs"].update(shots="auto", propagation="bidirectional")
    return g


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

    return video_workflow(defs, "colormnet/image_model_exemplar", "2 · An image model colours frame 0", generated)


def long_video(defs):
    """Load Video -> ColorMNet Colorize Video (frame by frame, flat memory, sound kept) -> Save Video."""
    g = Graph(defs)
    g.stage("1 · The video and its exemplar")
    clip = g.add("LoadVideo", file=VIDEO)
    image = g.add("LoadImage", "Exemplar: colour version of frame 0", image=EXEMPLAR)
    ex = g.add("ColorMNetLoadExemplar", image=(image, 0), frame=0)
    g.stage("2 · Colorize frame by frame")
    out = colorize_chain(g, ex, video=(clip, 0))
    g.stage("3 · Save the video")
    g.add("SaveVideo", video=(out, 0), filename_prefix="colormnet/long_video", format="auto", codec="auto")
    return g


def finetune(defs):
    """The keyframes workflow with a Fine-tune step: the model learns the film's two exemplars first, and the
    tuned model colorizes (the same Encode -> Memory -> Colorize chain as with a loaded model)."""
    g = Graph(defs)
    g.stage("1 · Load the video")
    clip = g.add("LoadVideo", file=TWO_SHOTS)
    parts = g.add("GetVideoComponents", video=(clip, 0))
    g.stage("2 · One exemplar per shot")
    previous = None
    for frame, picture in ((0, EXEMPLAR), (12, EXEMPLAR_MIRRORED)):
        image = g.add("LoadImage", f"Keyframe: colour version of frame {frame}", image=picture)
        extra = {"exemplars": (previous, 0)} if previous else {}
        previous = g.add("ColorMNetLoadExemplar", image=(image, 0), frame=frame, **extra)
    g.stage("3 · Fine-tune the model on them")
    loaded = g.add("ColorMNetModelLoader", checkpoint=CHECKPOINT, precision="auto")
    # Two pictures only: nothing to spare for held-out scores (a real film gives one per shot: keep 0.2).
    tuned = g.add("ColorMNetFinetune", model=(loaded, 0), exemplars=(previous, 0), steps=300, learning_rate=1e-5,
                  size=448, holdout=0.0, tuning_seed=14159265, batch_size=1, save_as="")
    g.stage("4 · Colorize with the tuned model")
    encoded = g.add("ColorMNetEncode", model=(tuned, 0), exemplars=(previous, 0))
    memory = g.add("ColorMNetMemory", encoded=(encoded, 0), **MEMORY_DEFAULTS)
    out = g.add("ColorMNetColorize", model=(tuned, 0), memory=(memory, 0), frames=(parts, 0), processing_size="480",
                keep_luminance=True, key_batch=1, shots="auto")
    save_video(g, out, parts, "colormnet/finetune", "5 · Save the video")
    return g


# -- shots: an image model colours the first frame of every shot, in one batch ---------------------

SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
KONTEXT = {"unet": "flux1-dev-kontext_fp8_scaled.safetensors", "clip_l": "clip_l.safetensors",
           "t5": "t5xxl_fp8_e4m3fn_scaled.safetensors", "vae": "ae.safetensors"}
KONTEXT_PROMPT = ("Colorize this black and white photograph with natural, realistic colours. Keep the composition, "
                  "the people, the lighting and every detail exactly as they are.")


def shots_workflow(defs, prefix: str, colour_keyframes) -> Graph:
    """Load Video -> Detect Shots -> keyframes coloured by `colour_keyframes(graph, keyframes)` (one batch,
    in stages it opens) -> Load Exemplar (batch + the shots' frame indices) -> Colorize per shot -> Save
    Video, plus previews of the coloured keyframes and of the confidence plot."""
    g = Graph(defs)
    g.stage("1 · Find the shots")
    clip = g.add("LoadVideo", file=TWO_SHOTS)
    parts = g.add("GetVideoComponents", video=(clip, 0))
    shots = g.add("ColorMNetDetectShots", frames=(parts, 0), threshold=0.2, min_shot_length=10)
    coloured = colour_keyframes(g, (shots, 1))
    g.add("PreviewImage", "Coloured keyframes", images=(coloured, 0))
    g.numbered_stage("Colorize every shot")
    exemplars = g.add("ColorMNetLoadExemplar", image=(coloured, 0), frame=0, batch_frames=(shots, 2))
    out = colorize_chain(g, exemplars, frames=(parts, 0))
    g.nodes[out - 1]["inputs"].update(shots="from input", shot_list=(shots, 0))
    g.add("PreviewImage", "Match confidence (add exemplars where it drops)", images=(out, 1))
    save_video(g, out, parts, prefix, f"{len(g.stages) + 1} · Save the video")
    return g


def sd15_img2img(g: Graph, images, stage: str | None = None) -> int:
    """Light variant: SD 1.5 img2img (any SD 1.5 checkpoint) at denoise 0.6 keeps the pictures' layout.
    stage: open a numbered stage of that title first (else the nodes join the open stage)."""
    if stage:
        g.numbered_stage(stage)
    ckpt = g.add("CheckpointLoaderSimple", "Any SD 1.5 checkpoint", ckpt_name=SD15_CHECKPOINT)
    positive = g.add("CLIPTextEncode", "Describe the colours", clip=(ckpt, 1),
                     text="a colour photograph, natural colours, realistic skin tones, detailed")
    negative = g.add("CLIPTextEncode", clip=(ckpt, 1), text="black and white, monochrome, grayscale, sepia")
    latent = g.add("VAEEncode", pixels=images, vae=(ckpt, 2))
    sampled = g.add("KSampler", model=(ckpt, 0), seed=7, steps=20, cfg=6.0, sampler_name="euler",
                    scheduler="normal", positive=(positive, 0), negative=(negative, 0),
                    latent_image=(latent, 0), denoise=0.6)
    return g.add("VAEDecode", samples=(sampled, 0), vae=(ckpt, 2))


def kontext_colorize(g: Graph, images, stage: str | None = None) -> int:
    """Best-quality variant: FLUX.1 Kontext [dev], an instruction-editing model, told to colorize.
    stage: the loaders get a numbered stage of their own, then the colouring one titled `stage`."""
    if stage:
        g.numbered_stage("Load FLUX.1 Kontext")
    unet = g.add("UNETLoader", "FLUX.1 Kontext [dev]", unet_name=KONTEXT["unet"], weight_dtype="default")
    clip = g.add("DualCLIPLoader", clip_name1=KONTEXT["clip_l"], clip_name2=KONTEXT["t5"], type="flux",
                 device="default")
    vae = g.add("VAELoader", vae_name=KONTEXT["vae"])
    if stage:
        g.numbered_stage(stage)
    scaled = g.add("FluxKontextImageScale", image=images)
    latent = g.add("VAEEncode", pixels=(scaled, 0), vae=(vae, 0))
    prompt = g.add("CLIPTextEncode", "Instruction", clip=(clip, 0), text=KONTEXT_PROMPT)
    reference = g.add("ReferenceLatent", conditioning=(prompt, 0), latent=(latent, 0))
    guided = g.add("FluxGuidance", conditioning=(reference, 0), guidance=2.5)
    negative = g.add("ConditioningZeroOut", conditioning=(prompt, 0))
    sampled = g.add("KSampler", model=(unet, 0), seed=7, steps=20, cfg=1.0, sampler_name="euler",
                    scheduler="simple", positive=(guided, 0), negative=(negative, 0),
                    latent_image=(latent, 0), denoise=1.0)
    return g.add("VAEDecode", samples=(sampled, 0), vae=(vae, 0))


SHOTS_COLOUR_STAGE = "Colour every shot's first frame"


def shots_sd15(defs):
    return shots_workflow(defs, "colormnet/shots_sd15", lambda g, k: sd15_img2img(g, k, SHOTS_COLOUR_STAGE))


def shots_flux_kontext(defs):
    return shots_workflow(defs, "colormnet/shots_flux_kontext",
                          lambda g, k: kontext_colorize(g, k, SHOTS_COLOUR_STAGE))

# -- films: one shot per queued prompt (Film Shot's `shot` increments) ---------------------------------

FILM_PROJECT = "colormnet_example"


def film_workflow(defs, colour: str, colour_keyframes) -> Graph:
    """Load Video -> Film Project -> Film Shot -> its keyframe coloured by `colour_keyframes(graph, images)`
    -> Load Exemplar at the shot's first frame -> Encode -> Memory -> Render Shot (+ its confidence plot)."""
    g = Graph(defs)
    g.stage("1 · Pick the shot")
    clip = g.add("LoadVideo", file=TWO_SHOTS)
    film = g.add("ColorMNetFilmProject", project=FILM_PROJECT, threshold=0.2, min_shot_length=5, video=(clip, 0))
    shot = g.add("ColorMNetFilmShot", film=(film, 0), shot=0)
    g.stage(f"2 · Colour its keyframe ({colour})")
    coloured = colour_keyframes(g, (shot, 0))
    g.stage("3 · Render the shot")
    exemplar = g.add("ColorMNetLoadExemplar", image=(coloured, 0), frame=0, batch_frames=(shot, 1))
    model = g.add("ColorMNetModelLoader", checkpoint=CHECKPOINT, precision="auto")
    encoded = g.add("ColorMNetEncode", model=(model, 0), exemplars=(exemplar, 0))
    memory = g.add("ColorMNetMemory", encoded=(encoded, 0), **MEMORY_DEFAULTS)
    render = g.add("ColorMNetRenderShot", film=(film, 0), model=(model, 0), memory=(memory, 0), shot=(shot, 4),
                   processing_size="480", keep_luminance=True, key_batch=1, crf=18, done_shot="skip")
    # Previews fed from Render Shot, not from the image model: an output node on the image model's picture
    # would run the image model on every prompt, which Render Shot's lazy memory input exists to avoid.
    g.add("PreviewImage", "Exemplar of the shot", images=(render, 2))
    g.add("PreviewImage", "Match confidence of the shot", images=(render, 1))
    return g


def film_sd15(defs):
    return film_workflow(defs, "SD 1.5", sd15_img2img)


def film_flux_kontext(defs):
    return film_workflow(defs, "FLUX.1 Kontext", kontext_colorize)


def film_assemble(defs):
    """Film Project (by name: the project the film workflow rendered) -> Assemble Film -> Save Video."""
    g = Graph(defs)
    g.stage("1 · Open the film")
    film = g.add("ColorMNetFilmProject", project=FILM_PROJECT, threshold=0.2, min_shot_length=5)
    g.stage("2 · Join the shots")
    joined = g.add("ColorMNetAssembleFilm", film=(film, 0))
    g.stage("3 · Save the film")
    g.add("SaveVideo", video=(joined, 0), filename_prefix="colormnet/film", format="auto", codec="auto")
    return g


def film_finetune(defs):
    """Film Project (by name) -> Film Exemplars (its first shots') -> Fine-tune, saved as a checkpoint that the
    film workflow's Model Loader then picks: tune once on the first shots, then render the film with it."""
    g = Graph(defs)
    g.stage("1 · Open the film")
    film = g.add("ColorMNetFilmProject", project=FILM_PROJECT, threshold=0.2, min_shot_length=5)
    g.stage("2 · Its first shots' exemplars")
    exemplars = g.add("ColorMNetFilmExemplars", film=(film, 0), first_shot=0, shots=8)
    g.stage("3 · Fine-tune and save")
    loaded = g.add("ColorMNetModelLoader", checkpoint=CHECKPOINT, precision="auto")
    # The example film has two shots, so nothing is held out; with eight or more exemplars keep 0.2 for scores.
    g.add("ColorMNetFinetune", model=(loaded, 0), exemplars=(exemplars, 0), steps=300, learning_rate=1e-5, size=448,
          holdout=0.0, tuning_seed=14159265, batch_size=1, save_as=f"{FILM_PROJECT}_tuned")
    return g


WORKFLOWS = {
    "colormnet_basic": basic,
    "colormnet_keyframes": keyframes,
    "colormnet_image_model_exemplar": image_model_exemplar,
    "colormnet_long_video": long_video,
    "colormnet_finetune": finetune,
    "colormnet_shots_sd15": shots_sd15,
    "colormnet_shots_flux_kontext": shots_flux_kontext,
    "colormnet_film_sd15": film_sd15,
    "colormnet_film_flux_kontext": film_flux_kontext,
    "colormnet_film_assemble": film_assemble,
    "colormnet_film_finetune": film_finetune,
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
