"""Weight download/cache against a loopback HTTP server: success (file and zip), wrong hash, 404, no server."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from functools import partial

import pytest

from posekit.runtime.cards import WeightsSpec, load_card
from posekit.runtime.download import DownloadError, download_file, resolve_weights

PAYLOAD = bytes(range(256)) * 300  # 76.8 kB, several read blocks


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.onnx").write_bytes(PAYLOAD)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("rtmo-x/deploy.json", "{}")
        zf.writestr("rtmo-x/end2end.onnx", PAYLOAD[::-1])
    (root / "bundle.zip").write_bytes(buf.getvalue())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "cache"
    monkeypatch.setenv("POSEKIT_HOME", str(h))
    return h


def test_download_success_then_cache_hit(server, home):
    url, root = server
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    spec = WeightsSpec(url=f"{url}/model.onnx", sha256=sha, file="m.onnx")
    p = resolve_weights(spec, progress=False)
    assert p == home / "m.onnx" and p.read_bytes() == PAYLOAD
    assert [f.name for f in home.iterdir()] == ["m.onnx"]  # no temp file left
    (root / "model.onnx").unlink()  # a second resolve must not touch the network
    assert resolve_weights(spec, progress=False) == p


def test_zip_bundle_extracts_end2end(server, home):
    url, root = server
    z = (root / "bundle.zip").read_bytes()
    spec = WeightsSpec(url=f"{url}/bundle.zip", sha256_prefix=hashlib.sha256(z).hexdigest()[:8])
    p = resolve_weights(spec, progress=False)
    assert p.name == "bundle.onnx" and p.read_bytes() == PAYLOAD[::-1]
    assert sorted(f.name for f in home.iterdir()) == ["bundle.onnx"]


def test_wrong_hash_is_not_kept(server, home):
    url, _ = server
    spec = WeightsSpec(url=f"{url}/model.onnx", sha256="0" * 64, file="m.onnx")
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        resolve_weights(spec, progress=False)
    assert f"{url}/model.onnx" in str(e.value) and str(home / "m.onnx") in str(e.value)
    assert not any(home.iterdir())
    with pytest.raises(DownloadError, match="does not start with"):
        download_file(f"{url}/model.onnx", home / "m.onnx", sha256_prefix="ffffffff", progress=False)
    assert not any(home.iterdir())


def test_http_404(server, home):
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        resolve_weights(WeightsSpec(url=f"{url}/nope.zip"), progress=False)
    assert f"{url}/nope.zip" in str(e.value) and "end2end.onnx" in str(e.value)
    assert not any(home.iterdir())


def test_connection_refused(home):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/model.onnx"
    with pytest.raises(DownloadError, match="failed") as e:
        resolve_weights(WeightsSpec(url=url, file="m.onnx"), progress=False)
    assert url in str(e.value) and str(home / "m.onnx") in str(e.value)


def test_card_without_url_says_which_file_to_put_where(home, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights(load_card("tfpose-mnv2"))
    msg = str(e.value)
    assert "openpose_mobilenet_v2_small_432x368.onnx" in msg and str(home) in msg and "--weights" in msg
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resolve_weights(load_card("tfpose-mnv2"), weights=tmp_path / "none.onnx")
    (home).mkdir()
    (home / "openpose_mobilenet_v2_small_432x368.onnx").write_bytes(b"x")
    assert resolve_weights(load_card("tfpose-mnv2")) == home / "openpose_mobilenet_v2_small_432x368.onnx"
