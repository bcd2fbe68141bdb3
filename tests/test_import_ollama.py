"""`rkollama import-ollama` against a store the test builds in Ollama's layout: models are
registered without copying their weights, with their parameters, system prompt and messages."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rkollama.models.store import ModelStore

pytestmark = pytest.mark.live  # it needs a real GGUF: the session's SmolLM2


def blob(root, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return f"sha256:{digest}"


def ollama_store(tmp_path, gguf_path):
    root = tmp_path / "ollama-models"
    (root / "blobs").mkdir(parents=True)
    digest = "sha256:" + gguf_path.name.removeprefix("sha256-")
    os.link(gguf_path, root / "blobs" / gguf_path.name)
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": gguf_path.stat().st_size},
        {"mediaType": "application/vnd.ollama.image.template", "digest": blob(root, b"{{ .Prompt }}")},
        {"mediaType": "application/vnd.ollama.image.system", "digest": blob(root, b"You are a pirate.")},
        {"mediaType": "application/vnd.ollama.image.params",
         "digest": blob(root, json.dumps({"temperature": 0.3, "stop": ["<|im_end|>"], "mirostat": 1}).encode())},
        {"mediaType": "application/vnd.ollama.image.messages",
         "digest": blob(root, json.dumps([{"role": "user", "content": "Ahoy"}]).encode())},
        {"mediaType": "application/vnd.ollama.image.projector", "digest": blob(root, b"projector weights")},
    ]
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "pirate" / "latest"
    manifest.parent.mkdir(parents=True)
    config = {"model_format": "gguf", "renderer": "qwen3-coder", "parser": "qwen3 coder", "requires": "0.12.10"}
    manifest.write_text(json.dumps({"schemaVersion": 2, "config": {"digest": blob(root, json.dumps(config).encode())},
                                    "layers": layers}))
    broken = root / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    return root


def test_import_registers_ollamas_models_without_copying_weights(tmp_path, smollm2_store):
    gguf = ModelStore(smollm2_store).resolve("smollm2:135m").model_path
    root = ollama_store(tmp_path, gguf)
    env = dict(os.environ, RKOLLAMA_MODELS=str(tmp_path / "store"))
    run = subprocess.run([sys.executable, "-m", "rkollama", "import-ollama", "--from", str(root)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "pirate:latest" in run.stdout and "imported" in run.stdout
    assert "broken:latest" in run.stdout and "skipped" in run.stdout
    spec = ModelStore(tmp_path / "store").resolve("pirate")
    assert spec.model_path.stat().st_ino == gguf.stat().st_ino  # a hard link, not a copy
    assert spec.projector_path.read_bytes() == b"projector weights" and "vision" in spec.capabilities
    mf = spec.modelfile
    assert mf.system == "You are a pirate." and mf.parameters == {"temperature": 0.3, "stop": ["<|im_end|>"]}
    assert [(m.role, m.content) for m in mf.messages] == [("user", "Ahoy")] and mf.template == "builtin"
    assert mf.details.family == "llama" and mf.model_info["llama.block_count"] == 30
    # the config's names as Ollama keeps them; one outside the names' grammar is left out
    assert (mf.renderer, mf.parser, mf.requires) == ("qwen3-coder", "", "0.12.10")
    again = subprocess.run([sys.executable, "-m", "rkollama", "import-ollama", "--from", str(root)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert "exists" in again.stdout


def test_import_without_an_ollama_store_says_where_it_looked(tmp_path):
    env = dict(os.environ, RKOLLAMA_MODELS=str(tmp_path / "store"))
    run = subprocess.run([sys.executable, "-m", "rkollama", "import-ollama", "--from", str(tmp_path / "none")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "no Ollama models at" in run.stderr
