"""The weights downloader against a local HTTP server started by the test (never the internet)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from .plugin import submodule


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base url, folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    httpd.shutdown()


def small_official_checkpoint(path):
    checkpoint = submodule("colormnet_core.checkpoint")
    torch.save({checkpoint.OFFICIAL_SENTINEL: torch.ones(1, 1, 4), "decoder.pred.bias": torch.tensor([0.5])}, path)


def test_download_converts_records_sha_and_reuses(server, tmp_path, monkeypatch):
    url, www, requests = server
    small_official_checkpoint(www / "DINOv2FeatureV6_LocalAtten_s2_154000.pth")
    models = tmp_path / "models"
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(models))
    nodes = submodule("nodes")
    node = nodes.NODE_CLASS_MAPPINGS["ColorMNetDownloadModel"]()
    source = f"{url}/DINOv2FeatureV6_LocalAtten_s2_154000.pth"
    (model,) = node.download(True, "github_release", source, "", "x.pth", "fp32")
    target = models / "DINOv2FeatureV6_LocalAtten_s2_154000.safetensors"
    assert model.path == target and target.is_file()
    record = (models / (target.name + ".sha256")).read_text()
    assert submodule("colormnet_core.checkpoint").sha256_file(target) in record and "CC BY-NC-SA 4.0" in record
    assert not list(models.glob(".partial-*"))
    from safetensors.torch import load_file

    assert torch.equal(load_file(target)["decoder.pred.bias"], torch.tensor([0.5]))   # official names kept
    # Second time: the file is reused, nothing is fetched.
    fetched = len(requests)
    node.download(True, "github_release", source, "", "x.pth", "fp32")
    assert len(requests) == fetched
    # A damaged file no longer matches its recorded sha256.
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.CheckpointError, match="sha256"):
        node.download(True, "github_release", source, "", "x.pth", "fp32")


def test_download_needs_the_licence_and_reports_http_errors(server, tmp_path, monkeypatch):
    url, _, _ = server
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path / "models"))
    node = submodule("nodes").NODE_CLASS_MAPPINGS["ColorMNetDownloadModel"]()
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.InputError, match="CC BY-NC-SA 4.0"):
        node.download(False, "github_release", f"{url}/x.pth", "", "x.pth", "auto")
    with pytest.raises(errors.CheckpointError, match="cannot download .*404"):
        node.download(True, "github_release", f"{url}/missing.pth", "", "x.pth", "auto")
    assert not list((tmp_path / "models").glob("*"))


def test_huggingface_source_goes_through_hf_hub_download(tmp_path, monkeypatch):
    import huggingface_hub

    cached = tmp_path / "hub.pth"
    small_official_checkpoint(cached)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: calls.append((repo_id, filename)) or str(cached))
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path / "models"))
    node = submodule("nodes").NODE_CLASS_MAPPINGS["ColorMNetDownloadModel"]()
    (model,) = node.download(True, "huggingface", "unused", " someone/colormnet ", "weights.pth", "auto")
    assert calls == [("someone/colormnet", "weights.pth")] and model.path.is_file()
