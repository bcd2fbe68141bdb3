"""Hardware tests, for a real RK3588/RK3576 board with the RKLLM runtime installed.

    RKOLLAMA_TEST_NPU=1 RKOLLAMA_TEST_NPU_MODEL=/path/to/model.rkllm .venv/bin/python -m pytest tests/hw

With RKOLLAMA_TEST_NPU_VLM=model.rkllm,encoder.rknn a vision model is tested too (librknnrt.so
installed by install.sh).

Skipped everywhere else. They check what the C double cannot: that the real runtime loads, that
the ABI family is identified, that the CPU engine's default threads go to the big cores, that
answers stream, that a second turn reuses the KV cache, that abort lands, and that `doctor` sees
the board.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.npu,
              pytest.mark.skipif(os.environ.get("RKOLLAMA_TEST_NPU") != "1",
                                 reason="set RKOLLAMA_TEST_NPU=1 on a Rockchip board")]


@pytest.fixture(scope="module")
def board_daemon(tmp_path_factory):
    import ollama
    from helpers import start_daemon

    from rkollama.models.modelfile import Modelfile
    from rkollama.models.names import ModelName
    from rkollama.models.store import ModelStore
    from rkollama.platform import detect_soc

    model = Path(os.environ["RKOLLAMA_TEST_NPU_MODEL"])
    root = tmp_path_factory.mktemp("hw-models")
    store = ModelStore(root)
    with open(model, "rb") as handle:
        digest, size = store.write_blob_stream(iter(lambda: handle.read(1 << 20), b""))
    store.register(ModelName.parse("board-test"),
                   Modelfile(name="board-test", tag="latest", capabilities=["completion"],
                             rkllm={"max_context_len": 2048},
                             source={"path": str(model), "format": "rkllm", "platform": detect_soc()}),
                   digest, size)
    process, url = start_daemon({"RKOLLAMA_MODELS": str(root)}, root / "serve.log")
    yield ollama.Client(host=url, timeout=300)
    process.terminate()
    process.wait(30)


def test_the_runtime_is_found_and_identified():
    from rkollama.backends.rkllm.runtime import identify
    from rkollama.platform import find_library

    found = identify(find_library(os.environ.get("RKOLLAMA_RKLLM_LIB", "")))
    assert found.family in ("1.2", "1.3", "1.3.1") and found.version


def test_the_cpu_engine_defaults_to_the_big_cores_the_npu_runtime_is_given():
    from rkollama.cpu_cores import choose
    from rkollama.platform import detect_soc, platform_defaults

    choice = choose()
    assert sum(1 << cpu for cpu in choice.cpus) == platform_defaults(detect_soc())["cpus_mask"], \
        choice.describe()


def test_doctor_sees_the_board():
    out = subprocess.run([sys.executable, "-m", "rkollama", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0 and "platform           rk35" in out.stdout


def test_an_answer_streams_with_npu_metrics(board_daemon):
    parts = list(board_daemon.generate(model="board-test", prompt="What is the capital of France?",
                                       stream=True, options={"num_predict": 32}))
    assert "".join(p.response for p in parts).strip()
    final = parts[-1]
    assert final.eval_count > 0 and final.eval_duration > 0 and final.prompt_eval_count > 0


def test_a_second_turn_prefills_only_the_new_message(board_daemon):
    first = board_daemon.chat(model="board-test", messages=[{"role": "user", "content": "Name a colour."}],
                              options={"num_predict": 16})
    second = board_daemon.chat(model="board-test", options={"num_predict": 16}, messages=[
        {"role": "user", "content": "Name a colour."}, first.message.model_dump(exclude_none=True),
        {"role": "user", "content": "And another one?"}])
    # The cached turn counts in prompt_eval_count, but prefill time covers only the new tokens.
    assert second.prompt_eval_count > first.prompt_eval_count
    assert second.prompt_eval_duration < first.prompt_eval_duration * 2


def test_abort_lands_at_the_next_decode_step(board_daemon):
    start = time.monotonic()
    stream = board_daemon.generate(model="board-test", prompt="Write a very long story.", stream=True,
                                   options={"num_predict": 2000})
    next(stream)
    stream.close()
    reply = board_daemon.generate(model="board-test", prompt="Say hi.", options={"num_predict": 8})
    assert reply.response and time.monotonic() - start < 120


@pytest.mark.skipif(not os.environ.get("RKOLLAMA_TEST_NPU_THINKING_MODEL"),
                    reason="set RKOLLAMA_TEST_NPU_THINKING_MODEL to a thinking .rkllm (Qwen3)")
def test_a_thinking_model_answers_after_its_thinking_twice_in_a_row(tmp_path):
    """Runtime 1.3.0 was reported (by another RKLLM server) to send FINISH at </think>, swallow
    the </think> token, and end a second run early. This settles it on the first board run."""
    import ollama
    from helpers import start_daemon

    from rkollama.models.modelfile import Modelfile
    from rkollama.models.names import ModelName
    from rkollama.models.store import ModelStore
    from rkollama.platform import detect_soc

    model = Path(os.environ["RKOLLAMA_TEST_NPU_THINKING_MODEL"])
    store = ModelStore(tmp_path)
    with open(model, "rb") as handle:
        digest, size = store.write_blob_stream(iter(lambda: handle.read(1 << 20), b""))
    store.register(ModelName.parse("board-thinker"),
                   Modelfile(name="board-thinker", tag="latest",
                             capabilities=["completion", "thinking"], rkllm={"max_context_len": 2048},
                             source={"path": str(model), "format": "rkllm", "platform": detect_soc()}),
                   digest, size)
    process, url = start_daemon({"RKOLLAMA_MODELS": str(tmp_path)}, tmp_path / "serve.log")
    try:
        client = ollama.Client(host=url, timeout=300)
        for question in ("What is 2 + 2?", "What is 3 + 5?"):
            reply = client.chat(model="board-thinker", think=True, options={"num_predict": 512},
                                messages=[{"role": "user", "content": question}])
            assert reply.message.thinking, "no thinking came back"
            assert reply.message.content.strip(), "the answer after </think> is missing"
    finally:
        process.terminate()
        process.wait(30)


def test_the_npu_check_runs_on_the_board(tmp_path):
    """`doctor --npu-check` on the board's model (with RKOLLAMA_TEST_NPU_TOKENIZER, a directory
    holding its tokenizer.json and tokenizer_config.json, on the token path). The steps every
    model must pass are asserted; the others are what the report is for."""
    import json

    from rkollama.models.modelfile import Modelfile
    from rkollama.models.names import ModelName
    from rkollama.models.store import TOKENIZER_CONFIG_TYPE, TOKENIZER_TYPE, ModelStore
    from rkollama.platform import detect_soc

    model = Path(os.environ["RKOLLAMA_TEST_NPU_MODEL"])
    store = ModelStore(tmp_path / "models")
    with open(model, "rb") as handle:
        digest, size = store.write_blob_stream(iter(lambda: handle.read(1 << 20), b""))
    layers = []
    tokenizer = os.environ.get("RKOLLAMA_TEST_NPU_TOKENIZER")
    if tokenizer:
        for kind, name in ((TOKENIZER_TYPE, "tokenizer.json"), (TOKENIZER_CONFIG_TYPE, "tokenizer_config.json")):
            data = (Path(tokenizer) / name).read_bytes()
            layers.append((kind, store.write_blob_bytes(data), len(data)))
    store.register(ModelName.parse("board-check"),
                   Modelfile(name="board-check", tag="latest", capabilities=["completion", "tools", "thinking"],
                             rkllm={"max_context_len": 2048},
                             source={"path": str(model), "format": "rkllm", "platform": detect_soc()}),
                   digest, size, tuple(layers))
    out = subprocess.run([sys.executable, "-m", "rkollama", "doctor", "--npu-check", "--model", "board-check",
                          "--report-dir", str(tmp_path / "report")], capture_output=True, text=True,
                         env=dict(os.environ, RKOLLAMA_MODELS=str(tmp_path / "models")), timeout=900)
    assert out.returncode == 0, out.stderr
    data = json.loads(sorted((tmp_path / "report").glob("*.json"))[-1].read_text())
    assert data["load"]["ok"], data["load"]
    steps = {s["name"]: s for s in data["steps"]}
    for name in ("plain answer", "abort mid-answer", "num_predict stop", "prompt over the window"):
        assert steps[name]["passed"], (name, steps[name]["detail"])
    print(out.stdout)


@pytest.mark.skipif(not os.environ.get("RKOLLAMA_TEST_NPU_VLM"),
                    reason="set RKOLLAMA_TEST_NPU_VLM=model.rkllm,encoder.rknn (and RKOLLAMA_TEST_NPU_VLM_TAGS)")
def test_a_vision_model_names_the_colour_of_a_picture(tmp_path):
    """The real encoder and runtime: a picture that is one colour, and a question any small VLM
    answers reliably. RKOLLAMA_TEST_NPU_VLM_TAGS=start,end,content are the model's image tags
    (default InternVL's: <img>,</img>,<IMG_CONTEXT>)."""
    import io

    import ollama
    from helpers import start_daemon
    from PIL import Image

    from rkollama.models.modelfile import Modelfile
    from rkollama.models.names import ModelName
    from rkollama.models.store import PROJECTOR_TYPE, ModelStore
    from rkollama.platform import detect_soc

    model, encoder = (Path(p) for p in os.environ["RKOLLAMA_TEST_NPU_VLM"].split(","))
    start, end, content = os.environ.get("RKOLLAMA_TEST_NPU_VLM_TAGS", "<img>,</img>,<IMG_CONTEXT>").split(",")
    store = ModelStore(tmp_path / "models")
    blobs = []
    for path in (model, encoder):
        with open(path, "rb") as handle:
            blobs.append(store.write_blob_stream(iter(lambda h=handle: h.read(1 << 20), b"")))
    store.register(ModelName.parse("board-vlm"), Modelfile(
        name="board-vlm", tag="latest", rkllm={"max_context_len": 2048, "img_start": start, "img_end": end,
                                               "img_content": content},
        source={"path": str(model), "format": "rkllm", "platform": detect_soc()}),
        blobs[0][0], blobs[0][1], ((PROJECTOR_TYPE, blobs[1][0], blobs[1][1]),))
    process, url = start_daemon({"RKOLLAMA_MODELS": str(tmp_path / "models")}, tmp_path / "serve.log")
    try:
        picture = io.BytesIO()
        Image.new("RGB", (448, 448), (220, 20, 20)).save(picture, "PNG")
        reply = ollama.Client(host=url, timeout=600).chat(model="board-vlm", options={"temperature": 0}, messages=[
            {"role": "user", "content": "What colour is this picture? Answer with one word.",
             "images": [picture.getvalue()]}])
        assert "red" in reply.message.content.lower(), reply.message.content
        assert reply.prompt_eval_count > 64  # the picture's embeddings were read, not only the words
    finally:
        process.terminate()
        process.wait(30)
