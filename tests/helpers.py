"""Shared test helpers: a fake clock, model registration, and servers on free ports."""

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

from rkollama.models.modelfile import Modelfile
from rkollama.models.names import ModelName


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def register_fake(store, name: str, payload: bytes = b"weights", projector: bytes = b"", **fields):
    """Put a model with a small dummy blob into `store` (for the fake backend); with
    `projector`, a vision projector blob beside it."""
    from rkollama.models.store import PROJECTOR_TYPE

    parsed = ModelName.parse(name)
    digest = store.write_blob_bytes(payload + name.encode())
    fields.setdefault("source", {"path": "/dev/null"})
    modelfile = Modelfile(name=parsed.model, tag=parsed.tag, **fields)
    extra = ((PROJECTOR_TYPE, store.write_blob_bytes(projector), len(projector)),) if projector else ()
    return store.register(parsed, modelfile, digest, len(payload), extra)


def png(width: int = 4, height: int = 3, color=(200, 30, 30), kind: str = "PNG") -> bytes:
    """A real image file of one colour."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, kind)
    return out.getvalue()


def png_b64(width: int = 4, height: int = 3, color=(200, 30, 30), kind: str = "PNG") -> str:
    import base64

    return base64.b64encode(png(width, height, color, kind)).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """Waitress serving `app` in a daemon thread on a free port, configured like `serve`."""

    def __init__(self, app):
        from rkollama.server.serve import create_server

        self.app_deps = app.config["RKOLLAMA"]
        self.server = create_server(app, self.app_deps.settings, "127.0.0.1", 0)
        self.port = self.server.effective_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.server.run()
        except Exception:
            if not self.closing:  # the loop may trip over its closed socket during teardown
                raise

    def close(self):
        self.closing = True
        self.server.close()


@contextlib.contextmanager
def npu_daemon(tmp_path, monkeypatch, rkllm_lib, models: dict, **settings):
    """(URL, what the RKLLM double saw last) of a daemon on a simulated RK3588 whose store
    (tmp_path/npu-models) holds `models`, each an .rkllm (name: register_fake's other arguments)."""
    import json

    from rkollama.config import Settings
    from rkollama.models.store import ModelStore
    from rkollama.server.serve import build

    record = tmp_path / "rkllm-record.json"
    monkeypatch.setenv("FAKE_RKLLM_RECORD", str(record))
    root = tmp_path / "npu-models"
    store = ModelStore(root)
    for name, fields in models.items():
        register_fake(store, name, source={"path": "model.rkllm", "format": "rkllm", "platform": "rk3588"},
                      **fields)
    app, scheduler = build(Settings.from_env({}, models=root, rkllm_lib=str(rkllm_lib), platform="rk3588",
                                             **settings))
    server = ThreadServer(app)
    try:
        yield server.url, (lambda: json.loads(record.read_text()))
    finally:
        server.close()
        scheduler.shutdown()


def wait_for(url: str, process=None, timeout: float = 60.0) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
            conn.request("HEAD", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url}")


def start_daemon(env_overrides: dict, log_path):
    """`rkollama serve` as a real subprocess; returns (process, base URL)."""
    port = free_port()
    env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", **env_overrides)
    env.pop("RKOLLAMA_HOST", None)
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "rkollama", "serve"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(url, process)
    return process, url


def wait_for_http(url: str, process=None, timeout: float = 120.0) -> None:
    """Wait until GET `url` answers 200 (a server that is not rkollama, e.g. a benchmark peer)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered at {url}")


def smollm2_engine(store_root, num_ctx: int, num_batch: int | None = None, slots: int = 1):
    """SmolLM2 loaded by the CPU engine in this process, as a runner process loads it (2 threads,
    `slots` of `num_ctx` tokens)."""
    from rkollama.backends.llamacpp import LlamaCppBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    spec = ModelStore(store_root).resolve("smollm2:135m")
    return LlamaCppBackend.load(spec, LoadOptions(num_ctx=num_ctx, num_batch=num_batch),
                                Settings.from_env({}, num_threads=2, num_parallel=slots))


def start_smollm2_daemon(prefix: str, threads: int, **env):
    """For benchmarks: SmolLM2 pulled into a new temporary store and `rkollama serve` on it with
    `threads` engine threads, a 2048-token context and no keep-alive expiry.

    Returns (process, base URL, model file path, work directory)."""
    import tempfile
    from pathlib import Path

    from rkollama.models.catalog import Catalog
    from rkollama.models.pull import pull
    from rkollama.models.store import ModelStore

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    store = ModelStore(workdir / "models")
    for _ in pull(store, Catalog(), "smollm2:135m", "cpu"):
        pass
    model_path = str(store.resolve("smollm2:135m").model_path)
    env = {"RKOLLAMA_MODELS": str(workdir / "models"), "RKOLLAMA_NUM_THREADS": str(threads),
           "RKOLLAMA_CONTEXT_LENGTH": "2048", "RKOLLAMA_KEEP_ALIVE": "-1", **env}
    process, url = start_daemon(env, workdir / "serve.log")
    return process, url, model_path, workdir


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM, Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and header claiming a size, with no pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def image_bodies(picture: str, uri_type: str = "png") -> dict[str, dict]:
    """One request per dialect carrying `picture` (base64)."""
    uri = f"data:image/{uri_type};base64,{picture}"
    return {
        "/api/chat": {"model": "seer", "stream": False,
                      "messages": [{"role": "user", "content": "what", "images": [picture]}]},
        "/api/generate": {"model": "seer", "stream": False, "prompt": "what", "images": [picture]},
        "/v1/chat/completions": {"model": "seer", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": uri}}]}]},
        "/v1/responses": {"model": "seer", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what"}, {"type": "input_image", "image_url": uri}]}]},
        "/v1/messages": {"model": "seer", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": f"image/{uri_type}", "data": picture}},
            {"type": "text", "text": "what"}]}]},
    }


TOOLS_TEMPLATE = ("{% for m in messages %}{{ m.content }}{% endfor %}"
                  "{% if tools %}{{ tools | tojson }}{% endif %}")


def write_gguf(path, template: str = TOOLS_TEMPLATE, fill: int = 0, pooling: bool = False) -> bytes:
    """A small valid GGUF header (llama architecture, `template` as its chat template, one
    tensor of `fill`; a pooling type when `pooling`, as embedding models have) at `path`; its
    bytes. Not a model an engine can run: for create's tests."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("demo")
    writer.add_context_length(2048)
    writer.add_embedding_length(8)
    writer.add_chat_template(template)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tensor("token_embd.weight", np.full((16, 8), fill, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()
