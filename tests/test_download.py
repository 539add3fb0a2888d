"""The weights downloader against local HTTP servers started by the test (never the internet)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from colormnet_core.download import download_official
from colormnet_core.errors import Cancelled, CheckpointError, InputError

from .plugin import submodule

OFFICIAL_PTH = "DINOv2FeatureV6_LocalAtten_s2_154000.pth"


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


STALL_LIMIT = 20.0   # a stalling handler gives up by itself after this many seconds


@pytest.fixture
def stalling_server():
    """127.0.0.1 server whose /body sends headers and 1000 of 10^7 bytes, and whose /headers sends
    nothing, then both stall until the test ends (or STALL_LIMIT). Yields (url, events)."""
    release = threading.Event()
    stalled = {"body": threading.Event(), "headers": threading.Event()}
    finished = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/body":
                self.send_response(200)
                self.send_header("Content-Length", str(10**7))
                self.end_headers()
                self.wfile.write(b"\x00" * 1000)
                self.wfile.flush()
            stalled["body" if self.path == "/body" else "headers"].set()
            release.wait(STALL_LIMIT)
            finished.set()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", stalled, finished
    release.set()
    httpd.shutdown()


def small_official_checkpoint(path):
    checkpoint = submodule("colormnet_core.checkpoint")
    torch.save({checkpoint.OFFICIAL_SENTINEL: torch.ones(1, 1, 4), "decoder.pred.bias": torch.tensor([0.5])}, path)


def test_download_converts_records_sha_and_reuses(server, tmp_path):
    url, www, requests = server
    small_official_checkpoint(www / OFFICIAL_PTH)
    models = tmp_path / "models"
    source = f"{url}/{OFFICIAL_PTH}"
    target = download_official(models, accept_license=True, url=source)
    assert target == models / "DINOv2FeatureV6_LocalAtten_s2_154000.safetensors" and target.is_file()
    record = (models / (target.name + ".sha256")).read_text()
    assert submodule("colormnet_core.checkpoint").sha256_file(target) in record and "CC BY-NC-SA 4.0" in record
    assert not list(models.glob(".partial-*"))
    from safetensors.torch import load_file

    assert torch.equal(load_file(target)["decoder.pred.bias"], torch.tensor([0.5]))   # official names kept
    # Second time: the file is reused, nothing is fetched.
    fetched = len(requests)
    download_official(models, accept_license=True, url=source)
    assert len(requests) == fetched
    # A damaged file no longer matches its recorded sha256; the message leads with what to do.
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="sha256") as e:
        download_official(models, accept_license=True, url=source)
    assert "download it again" in str(e.value)[:200]


def test_download_node_validates_and_loads_once(server, tmp_path, monkeypatch, golden_checkpoint):
    url, www, _ = server
    # The fixture is safetensors; served under the official .pth name, it is recognised by content.
    (www / OFFICIAL_PTH).symlink_to(golden_checkpoint)
    models = tmp_path / "models"
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(models))
    model_nodes = submodule("nodes.model")
    node = model_nodes.ColorMNetDownloadModel()
    (model,) = node.download(True, "github_release", f"{url}/{OFFICIAL_PTH}", "", OFFICIAL_PTH, "fp32")
    assert model.path == models / "DINOv2FeatureV6_LocalAtten_s2_154000.safetensors"
    assert str(model.path) in model_nodes._CACHE   # validated and loaded at this node


def test_download_needs_the_licence_and_reports_http_errors(server, tmp_path, monkeypatch):
    url, _, _ = server
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path / "models"))
    node = submodule("nodes").NODE_CLASS_MAPPINGS["ColorMNetDownloadModel"]()
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.InputError, match="CC BY-NC-SA 4.0"):
        node.download(False, "github_release", f"{url}/x.pth", "", "x.pth", "auto")
    with pytest.raises(errors.CheckpointError, match="Cannot download .*404"):
        node.download(True, "github_release", f"{url}/missing.pth", "", "x.pth", "auto")
    assert not list((tmp_path / "models").glob("*"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/w.pth", "/tmp/w.pth", "https://"])
def test_only_http_urls_are_fetched(tmp_path, url):
    with pytest.raises(InputError, match="must start with https://"):
        download_official(tmp_path, accept_license=True, url=url)
    assert not list(tmp_path.iterdir())


def test_empty_huggingface_repo_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORMNET_MODELS_DIR", str(tmp_path / "models"))
    node = submodule("nodes").NODE_CLASS_MAPPINGS["ColorMNetDownloadModel"]()
    errors = submodule("colormnet_core.errors")
    with pytest.raises(errors.InputError, match="hf_repo_id is empty"):
        node.download(True, "huggingface", "https://example.org/unused.pth", "  ", OFFICIAL_PTH, "auto")


@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_cancel_stops_a_stalled_download(stalling_server, tmp_path, path):
    url, stalled, finished = stalling_server
    polls = []

    def should_stop():
        polls.append(stalled["body" if path == "/body" else "headers"].is_set())
        return sum(polls) >= 3   # cancel once the server has been stalling for three polls

    with pytest.raises(Cancelled):
        download_official(tmp_path, accept_license=True, url=url + path, should_stop=should_stop, timeout=60)
    # Cancelled while the server was still stalling (it gives up only after STALL_LIMIT or at teardown),
    # with the stop check asked repeatedly while no byte came; nothing is left behind.
    assert not finished.is_set() and sum(polls) == 3
    assert not list(tmp_path.iterdir())


def test_a_stall_longer_than_the_timeout_is_an_error(stalling_server, tmp_path):
    url, _, _ = stalling_server
    with pytest.raises(CheckpointError, match="stalled: no data for 1 s after 1000 bytes"):
        download_official(tmp_path, accept_license=True, url=url + "/body", timeout=1)
    assert not list(tmp_path.iterdir())


def test_huggingface_source_goes_through_hf_hub_download(tmp_path, monkeypatch):
    import huggingface_hub

    cached = tmp_path / "hub.pth"
    small_official_checkpoint(cached)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: calls.append((repo_id, filename)) or str(cached))
    path = download_official(tmp_path / "models", accept_license=True, hf_repo_id=" someone/colormnet ",
                             hf_filename="weights.pth")
    assert calls == [("someone/colormnet", "weights.pth")] and path.is_file()
