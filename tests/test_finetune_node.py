"""ColorMNet Fine-tune, the node called directly (no server), on the fixture checkpoint at size 112 and a
couple of steps: its input spec, a tuned model that colorizes like a loaded one, the input model left as it
was, per-step progress, Cancel, the disk cache after a restart, save_as for the Model Loader, and errors."""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pytest
import torch

from . import golden
from .clips import frame_pixels
from .plugin import load_plugin, submodule

STEPS = 2
SIZE = 112


def colour_pictures(count: int, height: int = 96, width: int = 128) -> torch.Tensor:
    """An IMAGE batch (B x H x W x 3, float in [0, 1]) of distinct colourful pictures."""
    return torch.from_numpy(np.stack([frame_pixels(40 * i, height, width) for i in range(count)])).float() / 255


def weights_digest(network) -> str:
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def node_cls():
    return load_plugin().NODE_CLASS_MAPPINGS["ColorMNetFinetune"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, golden_checkpoint):
    """A private ComfyUI-like tree (models/ with the fixture checkpoint, output/, temp/) for this module."""
    root = tmp_path_factory.mktemp("finetune_node")
    (root / "models").mkdir()
    (root / "models" / "fixture.safetensors").symlink_to(golden_checkpoint)
    for name in ("output", "temp"):
        (root / name).mkdir()
    host = submodule("nodes.host")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORMNET_MODELS_DIR", str(root / "models"))
        mp.setattr(host, "output_dir", lambda: root / "output")
        mp.setattr(host, "temp_dir", lambda: root / "temp")
        yield root


def loaded_model():
    (model,) = load_plugin().NODE_CLASS_MAPPINGS["ColorMNetModelLoader"]().load("fixture.safetensors", "fp32")
    return model


def settings(**changes) -> dict:
    # Nothing held out: scoring costs two colorizations of every held-out picture (the core's tests score).
    return {"steps": STEPS, "learning_rate": 1e-4, "size": SIZE, "holdout": 0.0, "tuning_seed": 3, "batch_size": 1,
            **changes}


@pytest.fixture(scope="module")
def tuned(tree, node_cls):
    """One real tuning: 3 pictures, 2 steps. Records the progress and the status text."""
    host, model_mod = submodule("nodes.host"), submodule("nodes.model")
    model_mod._CACHE.clear()
    updates, texts = [], []
    # As in ComfyUI, which runs every node under inference mode: the loader's weights are inference tensors.
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        model = loaded_model()
        assert next(model_mod.load_cached(model.path).parameters()).is_inference()
        file_sha = hashlib.sha256(model.path.read_bytes()).hexdigest()
        before = weights_digest(model_mod.load_cached(model.path))
        # The core's up-front estimate times two extra steps; the node only shows it (the core's tests check it).
        mp.setattr(submodule("colormnet_core.training"), "estimate_finetune_seconds", lambda *_, **__: 42.0)
        mp.setattr(host, "progress", lambda total, node_id=None: lambda done: updates.append((done, total)))
        mp.setattr(host, "_send_text", lambda node_id, text: texts.append((node_id, text)))
        out = node_cls().tune(model, images=colour_pictures(3), unique_id="7", **settings())
    return {"model": model, "out": out, "file_sha": file_sha, "before": before, "updates": updates, "texts": texts}


def test_input_spec_and_registration(node_cls):
    plugin = load_plugin()
    assert plugin.NODE_DISPLAY_NAME_MAPPINGS["ColorMNetFinetune"] == "ColorMNet Fine-tune"
    spec = node_cls.INPUT_TYPES()
    assert list(spec["required"]) == ["model", "steps", "learning_rate"]
    assert list(spec["optional"]) == ["exemplars", "images", "size", "holdout", "tuning_seed", "batch_size",
                                      "colour_clip", "save_as"]
    assert spec["required"]["model"][0] == "COLORMNET_MODEL"
    assert spec["optional"]["exemplars"][0] == "COLORMNET_EXEMPLARS" and spec["optional"]["images"][0] == "IMAGE"
    assert node_cls.RETURN_TYPES == ("COLORMNET_MODEL",) and node_cls.OUTPUT_NODE
    defaults = submodule("colormnet_core.training").FinetuneConfig()
    for group in ("required", "optional"):
        for name, (_kind, *rest) in spec[group].items():
            assert rest and len(rest[0]["tooltip"]) > 30, name
            assert "control_after_generate" not in rest[0], name   # a randomized seed would tune on every Run
            if name in ("steps", "learning_rate", "size", "holdout", "tuning_seed", "batch_size"):
                assert rest[0]["default"] == getattr(defaults, name.removeprefix("tuning_")), name
                assert rest[0]["min"] <= rest[0]["default"] <= rest[0]["max"], name
    assert spec["hidden"] == {"unique_id": "UNIQUE_ID"}


@pytest.mark.slow
def test_tuned_model_colorizes_like_a_loaded_one_and_the_input_is_untouched(tuned, tree):
    nodes = load_plugin().NODE_CLASS_MAPPINGS
    model_mod = submodule("nodes.model")
    model, out = tuned["model"], tuned["out"]
    (result,) = out["result"]
    assert isinstance(result, model_mod.ColorMNetModel) and result.precision == model.precision
    assert result.path.parent == tree / "output" / "colormnet_finetune" and result.path.suffix == ".safetensors"
    assert "fine-tuned" in result.family
    # Per-step progress, and the status on the prompt's node.
    assert tuned["updates"] == [(step, STEPS) for step in range(1, STEPS + 1)]
    assert tuned["texts"][0] == ("7", "Fine-tuning 2 steps on 3 pictures: about\n42\u00a0s on the CPU.")
    assert max(len(line) for _, text in tuned["texts"] for line in text.split("\n")) <= 44   # the node's width
    assert [node for node, _ in tuned["texts"]] == ["7", "7"] and "Tuned: 2 steps on 3 pictures" in out["ui"]["text"][0]
    assert "Nothing held out" in out["ui"]["text"][2]
    # The input: file and loaded weights as they were; the tuned weights differ.
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == tuned["file_sha"]
    assert weights_digest(model_mod.load_cached(model.path)) == tuned["before"]
    assert weights_digest(model_mod.load_cached(result.path)) != tuned["before"]
    # The tuned model drives the unchanged rest of the graph.
    frames = golden.frames()[:2].permute(0, 2, 3, 1).float() / 255
    exemplar = golden.load_png(golden.GOLDEN / "inputs" / "exemplar.png")[None].permute(0, 2, 3, 1).float() / 255
    (exemplars,) = nodes["ColorMNetLoadExemplar"]().add(exemplar, 0)

    (encoded,) = nodes["ColorMNetEncode"]().encode(result, exemplars)
    (memory,) = nodes["ColorMNetMemory"]().build(encoded, 5, 5, 10, 128, 10000, 30, True, True)
    colorized = nodes["ColorMNetColorize"]().colorize(result, memory, frames, "custom", True, 1, custom_size=112)[0]
    assert colorized.shape == frames.shape and torch.isfinite(colorized).all()
    assert colorized.min() >= 0 and colorized.max() <= 1 and (colorized[..., 0] - colorized[..., 2]).abs().mean() > 0.01


@pytest.mark.slow
def test_same_inputs_after_a_restart_load_the_kept_weights(tuned, node_cls, monkeypatch):
    """A fresh node, empty in-memory caches (a restarted server): the weights come from the disk cache."""
    model_mod, film, training = submodule("nodes.model"), submodule("nodes.film"), submodule("colormnet_core.training")
    model_mod._CACHE.clear()
    film._SHA_CACHE.clear()

    def never(*_, **__):
        raise AssertionError("tuned again")

    monkeypatch.setattr(training, "finetune_network", never)
    monkeypatch.setattr(training, "estimate_finetune_seconds", never)
    record = tuned["out"]["result"][0].path.with_suffix(".json")
    os.utime(record, (1e9, 1e9))
    out = node_cls().tune(loaded_model(), images=colour_pictures(3), **settings())
    (result,) = out["result"]
    assert result == tuned["out"]["result"][0]
    assert record.stat().st_mtime > 1e9 + 1        # used now: the cache keeps what was used last
    assert out["ui"]["text"][0].startswith("Tuned earlier with these inputs")
    assert out["ui"]["text"][1:] == tuned["out"]["ui"]["text"][1:]
    # Another setting is another tuning.
    with pytest.raises(AssertionError, match="tuned again"):
        node_cls().tune(loaded_model(), images=colour_pictures(3), **settings(tuning_seed=4))


@pytest.mark.slow
def test_save_as_writes_a_checkpoint_the_loader_lists_and_loads(tuned, tree, node_cls):
    nodes = load_plugin().NODE_CLASS_MAPPINGS
    errors = submodule("colormnet_core.errors")
    out = node_cls().tune(loaded_model(), images=colour_pictures(3), save_as="my film tuned", **settings())
    saved = tree / "models" / "my film tuned.safetensors"
    record = json.loads(out["result"][0].path.with_suffix(".json").read_text())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == record["sha256"]
    assert (tree / "models" / "my film tuned.safetensors.sha256").read_text().split()[0] == record["sha256"]
    assert "my film tuned.safetensors" in nodes["ColorMNetModelLoader"].INPUT_TYPES()["required"]["checkpoint"][0]
    (loaded,) = nodes["ColorMNetModelLoader"]().load("my film tuned.safetensors", "auto")
    assert "fine-tuned" not in loaded.family   # the loader describes the family it recognises
    assert any("Saved as my film tuned.safetensors" in line for line in out["ui"]["text"])
    # Saving again under its own name is fine; a checkpoint it did not write is never replaced, and a name
    # that is not a plain file name is refused, both before any tuning.
    stamp = saved.stat().st_mtime_ns
    node_cls().tune(loaded_model(), images=colour_pictures(3), save_as="my film tuned.safetensors", **settings())
    assert saved.stat().st_mtime_ns == stamp
    for name, message in (("fixture", "did not write"), ("../elsewhere", "not a plain file name"),
                          ("a/b", "not a plain file name")):
        with pytest.raises(errors.InputError, match=message):
            node_cls().tune(loaded_model(), images=colour_pictures(3), save_as=name, **settings(tuning_seed=9))
    assert (tree / "models" / "fixture.safetensors").is_symlink()


def test_cancel_stops_and_keeps_nothing(tree, node_cls, monkeypatch):
    """Cancel (ComfyUI's interrupt flag, polled by the core before every step): Cancelled, no weights, no
    record and no partial file kept, the input model as it was."""
    host, model_mod = submodule("nodes.host"), submodule("nodes.model")
    errors = submodule("colormnet_core.errors")
    model = loaded_model()
    before = weights_digest(model_mod.load_cached(model.path))
    folder = tree / "output" / "colormnet_finetune"
    kept = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    steps = []
    monkeypatch.setattr(submodule("colormnet_core.training"), "estimate_finetune_seconds", lambda *_, **__: 42.0)
    monkeypatch.setattr(host, "progress", lambda total, node_id=None: steps.append)
    monkeypatch.setattr(host, "interrupted", lambda: True)
    with pytest.raises(errors.Cancelled, match="after 0 of 5 steps; nothing was saved"):
        node_cls().tune(model, images=colour_pictures(3), **settings(steps=5, tuning_seed=11))
    assert steps == []
    assert (sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []) == kept
    assert weights_digest(model_mod.load_cached(model.path)) == before


def test_cancel_during_the_estimate_stops_before_any_step(tree, node_cls, monkeypatch):
    host, errors = submodule("nodes.host"), submodule("colormnet_core.errors")
    trainer = submodule("colormnet_core.training.trainer").Trainer
    monkeypatch.setattr(trainer, "step", lambda self: pytest.fail("a training step ran after Cancel"))
    monkeypatch.setattr(host, "interrupted", lambda: True)
    with pytest.raises(errors.Cancelled, match="before its first step; nothing was saved"):
        node_cls().tune(loaded_model(), images=colour_pictures(3), **settings(steps=5, tuning_seed=12))


def test_the_cache_keeps_the_most_recently_used_tunings(tmp_path):
    finetune = submodule("nodes.finetune")
    now = time.time()
    keys = [f"{i:064x}" for i in range(6)]

    def entry(key: str, age_s: float, record: bool = True) -> None:
        files = [tmp_path / f"{key}.safetensors", tmp_path / f"{key}.safetensors.sha256"]
        files += [tmp_path / f"{key}.json"] if record else []
        for path in files:
            path.write_text(key)
            os.utime(path, (now - age_s, now - age_s))

    for i, key in enumerate(keys[:4]):
        entry(key, age_s=4000 - 1000 * i)            # keys[3] was used last
    entry(keys[4], age_s=7200, record=False)         # weights whose record never came: a crash, 2 h ago
    entry(keys[5], age_s=10, record=False)           # ... or a tuning being written right now
    others = ["notes.json", "mine.safetensors", f".{keys[0]}.safetensors.partial-1"]
    for name in others:
        (tmp_path / name).write_text("not the cache's")
    assert finetune.prune_cache(tmp_path, keep=2) == 2
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*others, *(f"{k}{suffix}" for k in keys[2:4]
                                      for suffix in (".json", ".safetensors", ".safetensors.sha256")),
                           f"{keys[5]}.safetensors", f"{keys[5]}.safetensors.sha256"])
    assert finetune.prune_cache(tmp_path, keep=2) == 0


def test_a_model_whose_file_is_gone_says_what_to_do(tree):
    model_mod, errors = submodule("nodes.model"), submodule("colormnet_core.errors")
    with pytest.raises(errors.CheckpointError, match="Run the Fine-tune node again.*save_as"):
        model_mod.load_cached(tree / "output" / "colormnet_finetune" / f"{0:064x}.safetensors")
    with pytest.raises(errors.CheckpointError, match="gone since it was loaded.*Model Loader"):
        model_mod.load_cached(tree / "models" / "removed.safetensors")


def test_bad_inputs_say_what_to_do(tree, node_cls):
    errors = submodule("colormnet_core.errors")
    model = loaded_model()
    node = node_cls()
    with pytest.raises(errors.InputError, match="no pictures to learn from"):
        node.tune(model, **settings())
    grey = colour_pictures(3).mean(dim=-1, keepdim=True).expand(-1, -1, -1, 3)
    with pytest.raises(errors.InputError, match="no colour"):
        node.tune(model, images=grey, **settings())
    with pytest.raises(errors.InputError, match="multiple of 112"):
        node.tune(model, images=colour_pictures(3), **settings(size=100))
    with pytest.raises(errors.InputError, match="too little to learn from"):
        node.tune(model, images=colour_pictures(1), **settings())
    with pytest.raises(errors.InputError, match="IMAGE batch"):
        node.tune(model, images=torch.rand(8, 8), **settings())


def test_exemplars_and_images_both_count_and_every_input_keys_the_cache():
    finetune, training = submodule("nodes.finetune"), submodule("colormnet_core.training")
    exemplars = submodule("colormnet_core.exemplars")
    images = colour_pictures(3)
    chain = (exemplars.Exemplar(images[0].permute(2, 0, 1), 0), exemplars.Exemplar(images[1].permute(2, 0, 1)))
    pictures = finetune.gather_pictures(chain, images[2:])
    assert len(pictures) == 3 and all(p.shape == (3, 96, 128) and p.dtype == torch.float32 for p in pictures)
    assert torch.equal(pictures[2], images[2].permute(2, 0, 1))
    config = training.FinetuneConfig(steps=10, size=SIZE)
    key = finetune.tune_key("a" * 64, pictures, config)
    assert key == finetune.tune_key("a" * 64, [p.clone() for p in pictures], config)
    changed_pixel = [p.clone() for p in pictures]
    changed_pixel[1][0, 5, 5] += 0.01
    clip = finetune.colour_clip_frames(colour_pictures(3))
    assert clip.shape == (3, 3, 96, 128)
    others = [finetune.tune_key("b" * 64, pictures, config), finetune.tune_key("a" * 64, changed_pixel, config),
              finetune.tune_key("a" * 64, pictures[::-1], config),
              finetune.tune_key("a" * 64, [*pictures, clip], config),
              finetune.tune_key("a" * 64, pictures, training.FinetuneConfig(steps=11, size=SIZE)),
              finetune.tune_key("a" * 64, pictures, training.FinetuneConfig(steps=10, size=SIZE, holdout=0.0))]
    assert len({key, *others}) == 7


def test_a_damaged_cache_entry_is_removed_and_tuned_again(tree):
    finetune = submodule("nodes.finetune")
    key = "d" * 64
    weights, record = finetune.cache_paths(key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"not a checkpoint")
    record.write_text(json.dumps({"sha256": "0" * 64}))
    assert finetune.cached_tuning(key) is None
    assert not weights.exists() and not record.exists()
    weights.write_bytes(b"weights without their record: an unfinished tuning")
    assert finetune.cached_tuning(key) is None


def test_status_reports_the_held_out_scores():
    finetune = submodule("nodes.finetune")
    record = {"steps_done": 300, "pictures": 10, "seconds": 754.0, "first_loss": 0.25, "last_loss": 0.125,
              "before": {"psnr": 27.5, "ssim": 0.91, "cdc": 0.0042, "pictures": 2},
              "after": {"psnr": 29.25, "ssim": 0.93, "cdc": 0.0039, "pictures": 2}}
    lines = finetune.report(record, False, None)
    assert lines == ["Tuned: 300 steps on 10 pictures in 13\u00a0min.", "Loss 0.2500 -> 0.1250.",
                     "Held out 2 pictures: PSNR 27.50 -> 29.25 dB, SSIM 0.910 -> 0.930, CDC 0.0042 -> 0.0039 "
                     "(lower is steadier)."]


def test_film_exemplars_gives_the_projects_exemplars_of_a_run_of_shots(tree, tmp_path):
    """Three shots; shots 0 and 2 hold exemplars, plus a reference: Film Exemplars of shots 0-1 gives shot 0's
    and the reference, and says that shot 1 has none yet."""
    from .clips import make_shot_clip

    nodes = load_plugin().NODE_CLASS_MAPPINGS
    film_core, video = submodule("colormnet_core.film"), submodule("nodes.video")
    errors = submodule("colormnet_core.errors")
    clip = make_shot_clip(tmp_path / "three.mp4", shots=(4, 4, 4), size=(112, 64), fps=12)
    out = nodes["ColorMNetFilmProject"]().open_film("tune film", 0.2, 2, video=video.VideoFile(clip))
    (film,) = out["result"]
    assert len(film.shots) == 3
    project = film_core.FilmProject.open(film.dir)
    pictures = (colour_pictures(3, 64, 112) * 255).round().to(torch.uint8).permute(0, 3, 1, 2)
    node = nodes["ColorMNetFilmExemplars"]()
    with pytest.raises(errors.InputError, match="have no exemplar yet: render them first"):
        node.gather(film, 0, 8)
    project.save_exemplar(film.shots[0][0], pictures[0])
    project.save_exemplar(film.shots[2][0], pictures[1])
    (project.dir / "exemplars" / "reference.png").write_bytes(
        submodule("colormnet_core.film.project").png_bytes(pictures[2]))
    out = node.gather(film, 0, 2, unique_id="3")
    (exemplars,) = out["result"]
    assert [e.frame for e in exemplars] == [film.shots[0][0], None]
    assert torch.equal((exemplars[0].image * 255).round().to(torch.uint8), pictures[0])
    assert out["ui"]["text"] == ["1 exemplar of shots 0-1 and 1 reference.",
                                 "Shots without an exemplar yet: 1. Once they have one, Fine-tune tunes again."]
    (everything,) = node.gather(film, 0, 8)["result"]
    assert [e.frame for e in everything] == [film.shots[0][0], film.shots[2][0], None]
    with pytest.raises(errors.InputError, match="first_shot 3 is past them"):
        node.gather(film, 3, 1)
    spec = nodes["ColorMNetFilmExemplars"].INPUT_TYPES()["required"]
    assert list(spec) == ["film", "first_shot", "shots"] and nodes["ColorMNetFilmExemplars"].RETURN_TYPES == (
        "COLORMNET_EXEMPLARS",)


def test_encodings_are_not_reused_for_another_network_that_got_the_same_id(monkeypatch):
    """A fine-tuned network loaded where the original was freed can get its id: the encodings cache of a
    shared Encode output must not hand it the original's encodings."""
    exemplars_mod, preprocess = submodule("colormnet_core.exemplars"), submodule("colormnet_core.preprocess")
    encoded = exemplars_mod.EncodedExemplars((exemplars_mod.Exemplar(torch.rand(3, 32, 48), 0),))
    geometry = preprocess.Geometry.plan(32, 48, preprocess.ProcessingSize())
    first, second = torch.nn.Module(), torch.nn.Module()
    monkeypatch.setattr(exemplars_mod, "id", lambda obj: 1, raising=False)   # every network "at one address"
    prepared = encoded.prepare(first, geometry, torch.device("cpu"))
    assert encoded.prepare(first, geometry, torch.device("cpu")) is prepared
    assert encoded.prepare(second, geometry, torch.device("cpu")) is not prepared
