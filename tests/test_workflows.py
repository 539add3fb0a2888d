"""Every shipped workflow uses only node types and input names that exist: ours from our classes,
core ones from a real ComfyUI 0.3.64's /object_info."""

from __future__ import annotations

import importlib.util
import json

import pytest

from . import golden
from .plugin import load_plugin

WORKFLOWS = golden.REPO / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


@pytest.fixture(scope="module")
def known_inputs(spec_dir):
    core = json.loads((spec_dir / "comfyui_object_info.json").read_text())["nodes"]
    known = {name: {n for group in ("required", "optional") for n in d["input"].get(group, {})}
             for name, d in core.items()}
    for name, cls in load_plugin().NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        known[name] = {n for group in ("required", "optional") for n in spec.get(group, {})}
    return known


def test_every_workflow_ships_in_both_formats_with_thumbnails():
    stems = {p.stem for p in UI_FILES}
    assert stems == {"colormnet_basic", "colormnet_keyframes", "colormnet_image_model_exemplar", "colormnet_long_video",
                     "colormnet_finetune", "colormnet_shots_sd15", "colormnet_shots_flux_kontext",
                     "colormnet_film_sd15", "colormnet_film_flux_kontext", "colormnet_film_assemble",
                     "colormnet_film_finetune"}
    assert {p.stem for p in API_FILES} == stems
    for stem in stems:
        thumb = WORKFLOWS / f"{stem}.jpg"
        assert thumb.is_file() and thumb.read_bytes()[:2] == b"\xff\xd8", f"{thumb.name} missing or not a JPEG"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_nodes_and_inputs_exist(path, known_inputs):
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        assert node["class_type"] in known_inputs, f"{path.name} node {node_id}: unknown type {node['class_type']}"
        unknown = set(node["inputs"]) - known_inputs[node["class_type"]]
        assert not unknown, f"{path.name} node {node_id} ({node['class_type']}): unknown inputs {unknown}"
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt, f"{path.name}: link to missing node {value[0]}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_and_inputs_exist_and_match_the_api_twin(path, known_inputs):
    graph = json.loads(path.read_text())
    twin = json.loads((WORKFLOWS / "api" / path.name).read_text())
    real = [n for n in graph["nodes"] if n["type"] not in VIRTUAL]
    assert sorted(n["type"] for n in real) == sorted(n["class_type"] for n in twin.values())
    for node in real:
        assert node["type"] in known_inputs, f"{path.name}: unknown node type {node['type']}"
        names = {i["name"] for i in node.get("inputs", [])}
        assert names <= known_inputs[node["type"]], f"{path.name}: {node['type']} unknown inputs"
    link_ids = {link[0] for link in graph["links"]}
    for node in real:
        for socket in node.get("inputs", []):
            assert socket["link"] is None or socket["link"] in link_ids


def test_shipped_workflows_load_only_the_shipped_example_media():
    """Every video and picture a workflow loads ships in workflows/media (nothing to generate first),
    and the media README names each of them."""
    media = WORKFLOWS / "media"
    readme = (media / "README.md").read_text()
    loaded = set()
    for path in API_FILES:
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == "LoadVideo":
                loaded.add(node["inputs"]["file"])
            elif node["class_type"] == "LoadImage":
                loaded.add(node["inputs"]["image"])
    assert {"colormnet_example.mp4", "colormnet_example_exemplar.png"} <= loaded
    for name in loaded:
        assert (media / name).is_file() and (media / name).stat().st_size > 1000, f"{name} is not in workflows/media"
        assert f"`{name}`" in readme, f"workflows/media/README.md does not describe {name}"


def test_workflows_select_the_official_checkpoint_name():
    names = {node["inputs"]["checkpoint"] for path in API_FILES for node in json.loads(path.read_text()).values()
             if node["class_type"] == "ColorMNetModelLoader"}
    assert names == {"DINOv2FeatureV6_LocalAtten_s2_154000.safetensors"}   # the loader also takes the .pth


@pytest.fixture(scope="module")
def signatures(spec_dir):
    """node type -> (input name -> declared type, required input names, output types)."""
    core = json.loads((spec_dir / "comfyui_object_info.json").read_text())["nodes"]
    defs = {name: (d["input"], d["output"]) for name, d in core.items()}
    for name, cls in load_plugin().NODE_CLASS_MAPPINGS.items():
        defs[name] = (cls.INPUT_TYPES(), list(cls.RETURN_TYPES))
    result = {}
    for name, (inputs, outputs) in defs.items():
        types = {n: ("COMBO" if isinstance(spec[0], list) else spec[0])
                 for group in ("required", "optional") for n, spec in inputs.get(group, {}).items()}
        result[name] = (types, set(inputs.get("required", {})), outputs)
    return result


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_links_carry_the_right_types_and_required_inputs_are_set(path, signatures):
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        types, required, _ = signatures[node["class_type"]]
        missing = required - set(node["inputs"])
        assert not missing, f"{path.name} node {node_id} ({node['class_type']}): required inputs {missing} not set"
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                source = prompt[value[0]]["class_type"]
                produced = signatures[source][2][value[1]]
                assert produced in types[name].split(",") or "*" in (produced, types[name]), (
                    f"{path.name} node {node_id}.{name} expects {types[name]} but gets {produced} from {source}")


@pytest.mark.parametrize("stem", ["colormnet_shots_sd15", "colormnet_shots_flux_kontext"])
def test_shots_workflows_colour_every_keyframe_in_one_batch_and_reset_per_shot(stem):
    prompt = json.loads((WORKFLOWS / "api" / f"{stem}.json").read_text())
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append((node_id, node["inputs"]))
    [(shots_id, _)] = by_type["ColorMNetDetectShots"]
    [(_, exemplar)] = by_type["ColorMNetLoadExemplar"]
    [(colorize_id, colorize)] = by_type["ColorMNetColorize"]
    # Load Exemplar: the image model's batch, pinned at the indices Detect Shots computed.
    assert exemplar["batch_frames"] == [shots_id, 2]
    assert prompt[exemplar["image"][0]]["class_type"] == "VAEDecode"
    # One sampler, fed (through encoding) from the keyframes output of Detect Shots.
    [(_, sampler)] = by_type["KSampler"]
    upstream, frontier = set(), [sampler["latent_image"][0]]
    while frontier:
        node_id = frontier.pop()
        upstream.add(node_id)
        frontier += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
    assert shots_id in upstream
    assert colorize["shots"] == "from input" and colorize["shot_list"] == [shots_id, 0]
    previews = [inputs["images"] for _, inputs in by_type["PreviewImage"]]
    assert [colorize_id, 1] in previews                                   # the confidence plot
    [(_, create)] = by_type["CreateVideo"]
    assert create["images"] == [colorize_id, 0] and "SaveVideo" in by_type


@pytest.mark.parametrize("stem", ["colormnet_film_sd15", "colormnet_film_flux_kontext"])
def test_film_workflows_render_the_next_shot_per_queued_prompt(stem):
    """Film Shot's shot increments after every queued prompt (a batch count of N renders N shots); its
    keyframe feeds the image model, whose picture Load Exemplar pins at the frame Film Shot gives, and
    Render Shot renders that shot of the project Film Project opened."""
    prompt = json.loads((WORKFLOWS / "api" / f"{stem}.json").read_text())
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append((node_id, node["inputs"]))
    [(project_id, project)] = by_type["ColorMNetFilmProject"]
    [(shot_id, shot)] = by_type["ColorMNetFilmShot"]
    [(_, exemplar)] = by_type["ColorMNetLoadExemplar"]
    [(render_id, render)] = by_type["ColorMNetRenderShot"]
    assert prompt[project["video"][0]]["class_type"] == "LoadVideo" and shot == {"film": [project_id, 0], "shot": 0}
    assert exemplar["batch_frames"] == [shot_id, 1] and prompt[exemplar["image"][0]]["class_type"] == "VAEDecode"
    assert render["film"] == [project_id, 0] and render["shot"] == [shot_id, 4] and render["done_shot"] == "skip"
    # Only Render Shot's lazy memory input leads to the image model: no output node (a preview) hangs on the
    # image model's picture, which would run the image model for every queued prompt, done shots included.
    assert sorted(tuple(inputs["images"]) for _, inputs in by_type["PreviewImage"]) == [(render_id, 1),
                                                                                      (render_id, 2)]
    [(_, sampler)] = by_type["KSampler"]
    upstream, frontier = set(), [sampler["latent_image"][0]]
    while frontier:
        node_id = frontier.pop()
        upstream.add(node_id)
        frontier += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
    assert shot_id in upstream
    ui = json.loads((WORKFLOWS / f"{stem}.json").read_text())
    [film_shot] = [n for n in ui["nodes"] if n["type"] == "ColorMNetFilmShot"]
    assert film_shot["widgets_values"] == [0, "increment"]
    titles = [g["title"] for g in ui["groups"]]
    assert titles[0] == "1 · Pick the shot" and titles[1].startswith("2 · Colour its keyframe")
    assert titles[2] == "3 · Render the shot"
    # The assemble workflow opens the same project.
    assemble = json.loads((WORKFLOWS / "api" / "colormnet_film_assemble.json").read_text())
    kinds = sorted(n["class_type"] for n in assemble.values())
    assert kinds == ["ColorMNetAssembleFilm", "ColorMNetFilmProject", "SaveVideo"]
    [opened] = [n["inputs"] for n in assemble.values() if n["class_type"] == "ColorMNetFilmProject"]
    assert opened["project"] == project["project"] and "video" not in opened


def test_finetune_workflow_tunes_on_the_exemplars_and_colorizes_with_the_tuned_model():
    """Model Loader -> Fine-tune (on the chained exemplars) -> the tuned model everywhere the loader's went."""
    prompt = json.loads((WORKFLOWS / "api" / "colormnet_finetune.json").read_text())
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append((node_id, node["inputs"]))
    [(loader_id, _)] = by_type["ColorMNetModelLoader"]
    [(tune_id, tune)] = by_type["ColorMNetFinetune"]
    chained = [node_id for node_id, inputs in by_type["ColorMNetLoadExemplar"] if "exemplars" in inputs]
    assert tune["model"] == [loader_id, 0] and tune["exemplars"] == [chained[0], 0]
    assert tune["steps"] == 300 and tune["save_as"] == ""
    [(_, encode)] = by_type["ColorMNetEncode"]
    [(_, colorize)] = by_type["ColorMNetColorize"]
    assert encode["model"] == [tune_id, 0] and colorize["model"] == [tune_id, 0]
    assert [links for links in (v for node in prompt.values() for v in node["inputs"].values())
            if links == [loader_id, 0]] == [[loader_id, 0]]   # the loader feeds Fine-tune only


def test_film_finetune_workflow_tunes_on_the_projects_first_shots_and_saves_for_the_loader():
    prompt = json.loads((WORKFLOWS / "api" / "colormnet_film_finetune.json").read_text())
    by_type = {node["class_type"]: (node_id, node["inputs"]) for node_id, node in prompt.items()}
    assert sorted(by_type) == ["ColorMNetFilmExemplars", "ColorMNetFilmProject", "ColorMNetFinetune",
                               "ColorMNetModelLoader"]
    project_id, project = by_type["ColorMNetFilmProject"]
    film = json.loads((WORKFLOWS / "api" / "colormnet_film_sd15.json").read_text())
    [rendered] = [n["inputs"] for n in film.values() if n["class_type"] == "ColorMNetFilmProject"]
    assert project["project"] == rendered["project"] and "video" not in project   # the film workflow's project
    exemplars_id, exemplars = by_type["ColorMNetFilmExemplars"]
    assert exemplars == {"film": [project_id, 0], "first_shot": 0, "shots": 8}
    _, tune = by_type["ColorMNetFinetune"]
    assert tune["exemplars"] == [exemplars_id, 0] and tune["model"] == [by_type["ColorMNetModelLoader"][0], 0]
    assert tune["save_as"] == f"{rendered['project']}_tuned"


def test_shipped_workflows_are_up_to_date_with_the_node_definitions(spec_dir):
    """A UI workflow stores widget values by position, so a node whose inputs change order or gain one
    loads an older file with every later value shifted. The shipped files must be what the generator
    makes from today's node signatures: after changing a node, run scripts/make_workflows.py."""
    script = golden.REPO / "scripts" / "make_workflows.py"
    spec = importlib.util.spec_from_file_location("make_workflows_under_test", script)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    core = json.loads((spec_dir / "comfyui_object_info.json").read_text())["nodes"]
    expected = generator.render(core, generator.our_node_defs(load_plugin()))
    stale = [path for path, text in expected.items() if (WORKFLOWS / path).read_text() != text]
    assert not stale, f"out of date, run scripts/make_workflows.py: {stale}"


def test_ui_widget_values_follow_the_declared_input_order(known_inputs):
    """Independent of the generator: in every UI workflow, each of our nodes' widget values sits at the
    position of its input in INPUT_TYPES and equals the value its API twin gives that input."""
    classes = load_plugin().NODE_CLASS_MAPPINGS
    checked = 0
    for path in UI_FILES:
        twin = json.loads((WORKFLOWS / "api" / path.name).read_text())
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in classes:
                continue
            spec = classes[node["type"]].INPUT_TYPES()
            widgets = []
            for group in ("required", "optional"):
                for name, s in spec.get(group, {}).items():
                    if isinstance(s[0], list) or s[0] in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                        widgets.append(name)
                        if len(s) > 1 and s[1].get("control_after_generate"):   # its mode widget follows it
                            widgets.append(f"{name}:control")
            assert len(node["widgets_values"]) == len(widgets), f"{path.name}: {node['type']} widget count"
            api = twin[str(node["id"])]["inputs"]
            for name, value in zip(widgets, node["widgets_values"]):
                if name.endswith(":control"):
                    assert value in ("fixed", "increment", "decrement", "randomize"), f"{path.name}: {name}"
                if name in api and not isinstance(api[name], list):
                    assert value == api[name], f"{path.name}: {node['type']}.{name} is {value!r}, API {api[name]!r}"
                    checked += 1
    assert checked >= 30


@pytest.fixture(scope="module")
def generator():
    script = golden.REPO / "scripts" / "make_workflows.py"
    spec = importlib.util.spec_from_file_location("make_workflows_layout", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflows_are_titled_stage_groups_with_no_wire_behind_a_node(path, generator):
    """Every node sits inside one titled group (a stage: "1 · ..."), no wire (direct or through its
    reroutes) passes behind a node, and every one-line widget and title fits its node's width."""
    graph = json.loads(path.read_text())
    titles = [g["title"] for g in graph["groups"]]
    assert len(titles) >= 3 and [t.split(" · ")[0] for t in titles] == [str(i + 1) for i in range(len(titles))]
    for node in graph["nodes"]:
        left, top, right, bottom = generator.node_rect(node)
        inside = [g for g in graph["groups"] if (x := g["bounding"][0]) <= left and right <= x + g["bounding"][2]
                  and (y := g["bounding"][1]) <= top and bottom <= y + g["bounding"][3]]
        assert len(inside) == 1, f"{path.name}: node {node['id']} in {len(inside)} groups"
    assert generator.wires_behind_nodes(graph) == []
    # It opens (extra.ds, restored by the frontend) showing the whole graph at a zoom where the frontend draws
    # text: 60 % or more (scripts/workflow_zoom.py measures it in the real frontend).
    assert graph["extra"]["ds"] == generator.opening_view(graph)
    assert graph["extra"]["ds"]["scale"] >= generator.MIN_ZOOM == 0.6
    left, top, right, bottom = generator.graph_bounds(graph)
    scale, (dx, dy) = graph["extra"]["ds"]["scale"], graph["extra"]["ds"]["offset"]
    assert (left + dx) * scale >= 0 and (right + dx) * scale <= generator.VIEW[0]
    assert (top + dy) * scale >= 0 and (bottom + dy) * scale <= generator.VIEW[1]
    for node in graph["nodes"]:
        title = node.get("title", node["type"])
        assert node["size"][0] >= generator.TITLE_MARGIN + generator.TITLE_CHAR_W * len(title), node["type"]
        if node["type"] == "ColorMNetRenderShot":
            # After a run it shows a 16:9 segment at its width and its notes: sized for them from the start,
            # so it stays inside its group.
            assert node["size"][1] >= 180 + node["size"][0] * 9 / 16 + 8 * generator.WIDGET_H


def test_the_wire_check_finds_a_wire_behind_a_node(generator):
    """The check itself: a wire straight through a third node is found, and a reroute lane around it clears."""
    nodes = [{"id": i, "type": "X", "pos": [x, 100], "size": [100, 60], "inputs": [{"name": "a", "link": 1}],
              "outputs": [{"name": "o", "links": [1]}]} for i, x in ((1, 0), (2, 200), (3, 400))]
    graph = {"nodes": nodes, "links": [[1, 1, 0, 3, 0, "X"]], "extra": {}}
    assert len(generator.wires_behind_nodes(graph)) == 1
    graph["extra"] = {"reroutes": [{"id": 1, "pos": [120, 40]}, {"id": 2, "parentId": 1, "pos": [380, 40]}],
                      "linkExtensions": [{"id": 1, "parentId": 2}]}
    assert generator.wires_behind_nodes(graph) == []
