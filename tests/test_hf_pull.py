"""Models by name from Hugging Face, against a local stand-in for the Hub (`hf_standin.py`): the
file chosen for the platform, verified against the Hub's LFS sha256, resumed after a drop, gated
repositories, and the whole board path: `rkollama run qwen3` on a simulated RK3588."""

import contextlib
import hashlib
import os
import random
import threading

import hf_standin
import pytest
import requests
from helpers import ThreadServer

from rkollama.config import Settings
from rkollama.errors import ModelNotFound
from rkollama.models.catalog import Catalog
from rkollama.models.hf import HubConfig, RepoFile, pick
from rkollama.models.pull import pull
from rkollama.models.store import ModelStore
from rkollama.server.serve import build

NPU_REPO = "dulimov/Qwen3-0.6B-rk3588-1.2.1-unsloth-16k"  # the catalogue's qwen3:0.6b on rk3588
NPU_FILE = "Qwen3-0.6B-rk3588-w8a8-opt-1-hybrid-ratio-0.0.rkllm"
GATED = "standin-org/gated-npu"
TOKEN = "hf_standin_ok"
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                 "{% endfor %}{% if tools %}tools{% endif %}<|im_start|>assistant\n"
                 "{% if reasoning is defined and not reasoning %}<think>\n\n</think>\n{% endif %}")


@pytest.fixture
def hub(tmp_path):
    rnd = random.Random(7)
    root = tmp_path / "hub"
    files = {
        f"{NPU_REPO}/{NPU_FILE}": rnd.randbytes(2 << 20),
        f"{NPU_REPO}/Qwen3-0.6B-rk3588-w8a8_g256-opt-1-hybrid-ratio-0.5.rkllm": rnd.randbytes(3 << 20),
        f"{NPU_REPO}/tokenizer_config.json": ('{"chat_template": ' + __import__("json").dumps(
            QWEN_TEMPLATE) + "}").encode(),
        f"{NPU_REPO}/README.md": b"# Qwen3 0.6B for RK3588\n",
        "standin-org/npu-and-cpu/model-rk3576-w4a16.rkllm": rnd.randbytes(1 << 20),
        "standin-org/npu-and-cpu/model-rk3588-w4a16.rkllm": rnd.randbytes(1 << 20),
        "standin-org/npu-and-cpu/model-rk3588-w8a8.rkllm": rnd.randbytes(1 << 20),
        f"{GATED}/model-rk3588-w8a8.rkllm": rnd.randbytes(1 << 20),
        "standin-org/vlm-npu/vlm-rk3588-w8a8.rkllm": rnd.randbytes(1 << 20),
        "standin-org/vlm-npu/vlm_vision_rk3588.rknn": rnd.randbytes(300_000),
        "standin-org/vlm-npu/vlm_vision_rk3576.rknn": rnd.randbytes(200_000),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # The base model's repository, which the catalogue names for the tokenizer.
    from npu_tokenizer import write_tokenizer

    for path in write_tokenizer(root / "Qwen" / "Qwen3-0.6B"):
        files[f"Qwen/Qwen3-0.6B/{path.name}"] = path.read_bytes()
    srv = hf_standin.serve(str(root), gated={GATED: "manual"}, tokens={TOKEN: ["*"]})
    yield srv, files
    srv.shutdown()


@contextlib.contextmanager
def daemon_for(tmp_path, srv, platform, fake_runtime=None, token=""):
    """A daemon on `platform` pulling from the Hub stand-in `srv` (the server, while in use)."""
    overrides = {"models": tmp_path / "models", "platform": platform, "hf_endpoint": srv.url,
                 "hf_token": token}
    if fake_runtime is not None:
        overrides["rkllm_lib"] = str(fake_runtime["1.3"])
    app, scheduler = build(Settings.from_env({}, **overrides))
    server = ThreadServer(app)
    try:
        yield server
    finally:
        server.close()
        scheduler.shutdown()


def pull_lines(url, name):
    return [__import__("json").loads(line) for line in requests.post(
        f"{url}/api/pull", json={"model": name}, stream=True, timeout=60).iter_lines()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_platform_picks_the_file():
    files = [RepoFile(name, size, "") for name, size in (
        ("m-rk3576-w4a16.rkllm", 5), ("m-rk3588-w4a16.rkllm", 5), ("m-rk3588-w8a8.rkllm", 9),
        ("m-Q8_0.gguf", 8), ("m-Q4_K_M.gguf", 4), ("m-Q2_K.gguf", 2), ("mmproj-m-f16.gguf", 1))]
    assert pick(files, "latest", "rk3588", "r").name == "m-rk3588-w8a8.rkllm"
    assert pick(files, "latest", "rk3576", "r").name == "m-rk3576-w4a16.rkllm"
    assert pick(files, "latest", "cpu", "r").name == "m-Q4_K_M.gguf"
    assert pick(files, "w4a16", "rk3588", "r").name == "m-rk3588-w4a16.rkllm"
    assert pick(files, "q8_0", "rk3588", "r").name == "m-Q8_0.gguf"
    assert pick([f for f in files if "Q4" not in f.name], "latest", "cpu", "r").name == "m-Q8_0.gguf"
    assert pick(files[5:], "latest", "cpu", "r").name == "m-Q2_K.gguf"  # the smallest, not mmproj
    with pytest.raises(ModelNotFound, match="m-rk3588-w8a8.rkllm"):
        pick(files[:3], "latest", "cpu", "r")  # no GGUF on a CPU machine: says what there is
    with pytest.raises(ModelNotFound, match="matching 'iq1_s'"):
        pick(files, "iq1_s", "rk3588", "r")


def test_a_vision_model_on_a_board_comes_with_its_platforms_encoder(tmp_path, hub):
    srv, files = hub
    with daemon_for(tmp_path, srv, "rk3588") as server:
        name = "hf.co/standin-org/vlm-npu"
        lines = pull_lines(server.url, name)
        assert lines[-1] == {"status": "success"}
        encoder = sha(files["standin-org/vlm-npu/vlm_vision_rk3588.rknn"])
        assert any(line.get("digest") == f"sha256:{encoder}" for line in lines)  # verified as the model is
        assert "vision" in requests.post(f"{server.url}/api/show", json={"model": name}).json()["capabilities"]
        spec = ModelStore(tmp_path / "models").resolve(name)
        assert spec.projector_path.read_bytes() == files["standin-org/vlm-npu/vlm_vision_rk3588.rknn"]


def test_pull_by_name_on_a_board_takes_the_rkllm_and_verifies_it(tmp_path, hub):
    srv, files = hub
    with daemon_for(tmp_path, srv, "rk3588") as server:
        name = "hf.co/standin-org/npu-and-cpu"
        lines = pull_lines(server.url, name)
        assert lines[-1] == {"status": "success"}
        digest = sha(files["standin-org/npu-and-cpu/model-rk3588-w8a8.rkllm"])
        assert any(line.get("digest") == f"sha256:{digest}" for line in lines)
        tags = requests.get(f"{server.url}/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["hf.co/standin-org/npu-and-cpu:latest"]
        assert tags[0]["details"]["format"] == "rkllm"
        shown = requests.post(f"{server.url}/api/show", json={"model": name}).json()
        assert shown["details"]["quantization_level"] == "W8A8"


def test_a_tag_picks_a_quantization_and_a_missing_one_lists_the_files(tmp_path, hub):
    srv, files = hub
    with daemon_for(tmp_path, srv, "rk3588") as server:
        assert pull_lines(server.url, "huggingface.co/standin-org/npu-and-cpu:w4a16")[-1] == \
            {"status": "success"}
        store = ModelStore(tmp_path / "models")
        spec = store.resolve("huggingface.co/standin-org/npu-and-cpu:w4a16")
        assert spec.model_path.read_bytes() == files["standin-org/npu-and-cpu/model-rk3588-w4a16.rkllm"]
        reply = requests.post(f"{server.url}/api/pull", json={"model": "hf.co/standin-org/npu-and-cpu:q4_k_m"})
        assert reply.status_code == 404 and "model-rk3588-w8a8.rkllm" in reply.json()["error"]


def test_a_gated_repository_needs_hf_token(tmp_path, hub):
    srv, _ = hub
    store = ModelStore(tmp_path / "models")
    with pytest.raises(Exception, match="HF_TOKEN"):
        list(pull(store, Catalog(), f"hf.co/{GATED}", "rk3588", HubConfig(srv.url)))
    lines = list(pull(store, Catalog(), f"hf.co/{GATED}", "rk3588", HubConfig(srv.url, TOKEN)))
    assert lines[-1] == {"status": "success"}


def test_a_drop_mid_file_resumes_with_a_range_request(tmp_path, hub):
    srv, files = hub
    srv.set_faults(drop_after=700_000, drop_match=f"*{NPU_FILE}")
    store = ModelStore(tmp_path / "models")
    lines = list(pull(store, Catalog(), f"hf.co/{NPU_REPO}:{NPU_FILE}", "rk3588", HubConfig(srv.url)))
    assert lines[-1] == {"status": "success"}
    spec = store.resolve(f"hf.co/{NPU_REPO}:{NPU_FILE}")
    assert spec.model_path.read_bytes() == files[f"{NPU_REPO}/{NPU_FILE}"]
    ranged = [r for r in srv.requests if r.get("range")]
    assert ranged and ranged[-1]["range"].startswith("bytes=") and ranged[-1]["range"] != "bytes=0-"


def test_a_corrupted_byte_is_a_clear_error_and_nothing_is_registered(tmp_path, hub):
    srv, _ = hub
    srv.set_faults(corrupt_offset=12345)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(Exception, match="digest mismatch"):
        list(pull(store, Catalog(), f"hf.co/{NPU_REPO}", "rk3588", HubConfig(srv.url)))
    assert store.list() == []
    assert [p for p in store.blobs.iterdir() if p.name.startswith("sha256-")] == []


def test_concurrent_pulls_of_one_file_download_it_once(tmp_path, hub):
    srv, _ = hub
    srv.set_faults(rate=4 << 20)  # slow enough that the two pulls overlap
    store = ModelStore(tmp_path / "models")
    results = []

    def one(name):
        results.append(list(pull(store, Catalog(), name, "rk3588", HubConfig(srv.url)))[-1])

    threads = [threading.Thread(target=one, args=(f"hf.co/{NPU_REPO}:{tag}",))
               for tag in ("latest", NPU_FILE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [{"status": "success"}] * 2
    downloads = [r for r in srv.requests if NPU_FILE in r["path"] or "/cdn/" in r["path"]]
    bodies = [r for r in downloads if r.get("bytes")]
    assert len([r for r in bodies if r["bytes"] >= 2 << 20]) == 1


def test_rkollama_run_qwen3_on_a_board_pulls_the_npu_model_and_answers_from_it(
        tmp_path, hub, fake_runtime, monkeypatch):
    import json

    from test_cli import rk

    record = tmp_path / "rkllm-record.json"
    monkeypatch.setenv("FAKE_RKLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_RKLLM_THINK_FINISH", "always")  # as 1.3.x runtimes are reported to
    srv, files = hub
    with daemon_for(tmp_path, srv, "rk3588", fake_runtime) as server:
        result = rk(["run", "qwen3", "hello from the npu"], url=server.url, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(record.read_text())["runs"] >= 1  # answered by the NPU engine
        spec = ModelStore(tmp_path / "models").resolve("qwen3")
        assert spec.format == "rkllm" and spec.modelfile.source.revision != "main"
        assert spec.model_path.read_bytes() == files[f"{NPU_REPO}/{NPU_FILE}"]
        assert spec.modelfile.source.sha256 == sha(files[f"{NPU_REPO}/{NPU_FILE}"])
        # The conversion allows 16k tokens of context (its repository's name), not Qwen3's 40960.
        assert spec.modelfile.details.context_length == 16384
        # The repository's chat template renders the conversation; the runtime's is emptied.
        assert spec.modelfile.template == QWEN_TEMPLATE
        assert {"thinking", "tools"} <= set(spec.capabilities)
        seen = json.loads(record.read_text())
        assert seen["template"] == ["", "", ""]
        # The tokenizer came with the pull, from the base model's repository: prompts go as ids.
        assert spec.tokenizer_path is not None and spec.tokenizer_config_path is not None
        assert spec.tokenizer_path.read_bytes() == files["Qwen/Qwen3-0.6B/tokenizer.json"]
        assert seen["input_type"] == 1
        assert seen["prompt"].startswith("<|im_start|>user\nhello from the npu<|im_end|>")
        # Thinking on and off, on a runtime that ends the run at </think>: an answer either way.
        for think in ("--think=true", "--think=false"):
            answer = rk(["run", "qwen3", think, "__think__ six times seven?"], url=server.url, timeout=120)
            assert answer.returncode == 0, answer.stderr
            assert "The answer is 42." in answer.stdout
            assert ("Let me think." in answer.stdout) == (think == "--think=true")
        assert json.loads(record.read_text())["think_finishes"] >= 1  # and the answers came anyway
        # A repository without a template: the runtime's built-in one, and the double's echo.
        answer = rk(["run", "hf.co/standin-org/npu-and-cpu", "hello from the npu"], url=server.url,
                    timeout=120)
        assert answer.returncode == 0 and "hello from the npu" in answer.stdout, answer.stderr


@pytest.mark.live
def test_a_gguf_repository_on_the_cpu_gets_its_details_and_template_from_the_file(
        tmp_path, smollm2_store):
    gguf = ModelStore(smollm2_store).resolve("smollm2:135m").model_path
    root = tmp_path / "hub" / "standin-org" / "SmolLM2-135M-Instruct-GGUF"
    root.mkdir(parents=True)
    os.link(gguf, root / "SmolLM2-135M-Instruct-Q4_1.gguf")
    (root / "mmproj-SmolLM2-f16.gguf").write_bytes(b"GGUF" + bytes(100))
    srv = hf_standin.serve(str(tmp_path / "hub"))
    settings = Settings.from_env({}, models=tmp_path / "models", platform="cpu", hf_endpoint=srv.url,
                                 num_threads=2)
    app, scheduler = build(settings)
    server = ThreadServer(app)
    name = "hf.co/standin-org/SmolLM2-135M-Instruct-GGUF"
    try:
        lines = pull_lines(server.url, name)
        assert lines[-1] == {"status": "success"}
        assert {"status": "mmproj-SmolLM2-f16.gguf is not a vision projector (architecture unreadable): "
                          "the model is pulled without vision"} in lines
        shown = requests.post(f"{server.url}/api/show", json={"model": name}).json()
        assert "vision" not in shown["capabilities"] and "projector_info" not in shown
        assert shown["details"]["family"] == "llama" and shown["details"]["parameter_size"] == "135M"
        assert shown["details"]["quantization_level"] == "Q4_1"
        reply = requests.post(f"{server.url}/api/chat", timeout=120, json={
            "model": name, "stream": False, "options": {"temperature": 0, "seed": 1, "num_predict": 48},
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}).json()
        assert "paris" in reply["message"]["content"].lower()
    finally:
        server.close()
        scheduler.shutdown()
        srv.shutdown()


def test_a_busy_hub_is_retried_after_the_wait_it_asks_for(tmp_path, hub):
    """429 and 5xx answers are retried (urllib3's Retry), honouring Retry-After."""
    import time

    srv, files = hub
    srv.set_faults(fail_first=2, fail_status=429, retry_after=1, fail_match=f"*{NPU_FILE}")
    store = ModelStore(tmp_path / "models")
    started = time.monotonic()
    lines = list(pull(store, Catalog(), f"hf.co/{NPU_REPO}:{NPU_FILE}", "rk3588", HubConfig(srv.url)))
    waited = time.monotonic() - started
    assert lines[-1] == {"status": "success"}
    assert store.resolve(f"hf.co/{NPU_REPO}:{NPU_FILE}").model_path.read_bytes() == files[f"{NPU_REPO}/{NPU_FILE}"]
    refused = [r for r in srv.requests if r["status"] == 429]
    assert len(refused) == 2 and waited >= 2.0  # two answers asked for one second each


def test_a_hub_that_keeps_failing_is_a_clear_error(tmp_path, hub, monkeypatch):
    from rkollama.models import pull as pulling

    monkeypatch.setattr(pulling, "BACKOFF_S", 0.01)
    srv, _ = hub
    srv.set_faults(fail_first=100, fail_status=503, fail_match=f"*{NPU_FILE}")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(Exception, match="answered HTTP 503"):
        list(pull(store, Catalog(), f"hf.co/{NPU_REPO}:{NPU_FILE}", "rk3588", HubConfig(srv.url)))
    assert store.list() == []


def test_rkollama_run_qwen3_on_an_rk3576_uses_the_npu(tmp_path, hub, fake_runtime, monkeypatch):
    """The catalogue has an RK3576 conversion of qwen3:0.6b: an RK3576 board runs it on the NPU
    instead of falling back to the CPU."""
    import json

    from test_cli import rk

    record = tmp_path / "rkllm-record.json"
    monkeypatch.setenv("FAKE_RKLLM_RECORD", str(record))
    srv, _ = hub
    weights = random.Random(3).randbytes(1 << 20)
    repo = tmp_path / "hub" / "JiahaoLi" / "Qwen3-RK3576"
    repo.mkdir(parents=True)
    (repo / "Qwen3-0.6B-rk3576-w4a16.rkllm").write_bytes(weights)
    with daemon_for(tmp_path, srv, "rk3576", fake_runtime) as server:
        result = rk(["run", "qwen3:0.6b", "hello rk3576"], url=server.url, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "hello rk3576" in result.stdout
        spec = ModelStore(tmp_path / "models").resolve("qwen3:0.6b")
        assert spec.format == "rkllm" and spec.model_path.read_bytes() == weights
        assert spec.tokenizer_path is not None  # from Qwen/Qwen3-0.6B, as the catalogue says
        assert json.loads(record.read_text())["input_type"] == 1
        ps = rk(["ps"], url=server.url)
        assert "NPU" in ps.stdout and "CPU" not in ps.stdout, ps.stdout


@pytest.mark.parametrize("file,repo,context", [
    ("Qwen3-0.6B-rk3588-w8a8-opt-1-hybrid-ratio-0.0.rkllm", "dulimov/Qwen3-0.6B-rk3588-1.2.1-unsloth-16k", 16384),
    ("Qwen_Qwen3-0.6B-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588.rkllm", "", 16384),
    ("Qwen3-1.7B-w8a8-rk3588.rkllm", "GatekeeperZA/Qwen3-1.7B-RKLLM-v1.2.3", None),
])
def test_an_rkllms_context_comes_from_its_conversion_not_the_base_model(file, repo, context):
    from rkollama.models.hf import rkllm_details

    assert rkllm_details(file, repo).get("context_length") == context
