"""Images on the simulated board: the NPU engine with the C doubles of librkllmrt.so (every ABI
family) and librknnrt.so (the vision encoder). A picture goes through the encoder (its pixels,
padded and resized, reach the double: the embeddings it returns carry their mean), and the
language model gets one RKLLM_INPUT_MULTIMODAL run with `<image>` where each picture goes, the
embeddings of every picture and the model's image tags, from every client."""

import ctypes
import json
import os
import subprocess
import sys

import anthropic
import ollama
import openai
import pytest
from helpers import npu_daemon, png, png_b64

from rkollama.backends.rkllm import abi, rknn

TAGS = {"img_start": "<img>", "img_end": "</img>", "img_content": "<IMG_CONTEXT>"}
TOKENS, DIM, SIDE = 4, 8, 28  # the RKNN double's defaults


def embedding_sum(*colours) -> float:
    """What the double's embeddings of solid square pictures of `colours` add up to."""
    return sum(TOKENS * DIM * (sum(colour) / 3) / 255 for colour in colours)


@pytest.fixture(params=["1.2", "1.3", "1.3.1"])
def board(request, fake_runtime, fake_rknn, tmp_path, monkeypatch):
    """(URL, what the RKLLM double saw, family) of a daemon on a simulated RK3588 with a vision
    model (.rkllm + .rknn) and a text-only one."""
    models = {"vlm-npu": {"projector": b"an .rknn vision encoder", "rkllm": {"max_context_len": 1024, **TAGS}},
              "plain-npu": {}}
    with npu_daemon(tmp_path, monkeypatch, fake_runtime[request.param], models,
                    rknn_lib=str(fake_rknn)) as (url, last):
        yield url, last, request.param


def test_a_picture_reaches_the_language_model_as_the_encoders_embeddings(board):
    url, last, family = board
    reply = ollama.Client(url).chat(model="vlm-npu", messages=[
        {"role": "user", "content": "what is this", "images": [png(40, 40, (255, 0, 0))]}])
    seen = last()
    assert seen["input_type"] == 3  # RKLLM_INPUT_MULTIMODAL
    assert "<image>" in seen["prompt"] and "what is this" in seen["prompt"] and "[img-0]" not in seen["prompt"]
    images = seen["images"]
    assert (images["n_image"], images["n_image_tokens"], images["width"], images["height"]) == (1, TOKENS, SIDE, SIDE)
    assert images["sum"] == pytest.approx(embedding_sum((255, 0, 0)), abs=1e-3)
    assert (images["start"], images["end"], images["content"]) == ("<img>", "</img>", "<IMG_CONTEXT>")
    assert reply.prompt_eval_count == 3 + TOKENS  # the runtime's count: words and embeddings
    assert seen["param"]["base_domain_id"] >= 1  # the encoder has domain 0 to itself


def test_two_pictures_in_one_message_and_the_order_of_their_placeholders(board):
    url, last, _ = board
    ollama.Client(url).chat(model="vlm-npu", messages=[
        {"role": "user", "content": "compare [img] and that", "images": [png(10, 10, (0, 0, 255)), png(12, 12)]}])
    seen = last()
    assert seen["images"]["n_image"] == 2
    assert seen["images"]["sum"] == pytest.approx(embedding_sum((0, 0, 255), (200, 30, 30)), abs=1e-3)
    assert "<image>compare <image> and that" in seen["prompt"]


def test_a_wide_picture_is_padded_to_a_square_before_it_is_resized(board):
    url, last, _ = board
    ollama.Client(url).chat(model="vlm-npu", messages=[
        {"role": "user", "content": "x", "images": [png(40, 20, (255, 255, 255))]}])
    # half the square is the picture (white), half the grey it is padded with (127)
    assert last()["images"]["sum"] == pytest.approx(TOKENS * DIM * (255 + 127) / 2 / 255, abs=0.05)


def test_the_openai_and_anthropic_clients_send_pictures_to_the_npu(board):
    url, last, _ = board
    picture = png_b64(16, 16, (0, 255, 0))
    openai.OpenAI(base_url=f"{url}/v1", api_key="x").chat.completions.create(model="vlm-npu", messages=[
        {"role": "user", "content": [{"type": "text", "text": "what"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}]}])
    assert last()["images"]["sum"] == pytest.approx(embedding_sum((0, 255, 0)), abs=1e-3)
    anthropic.Anthropic(base_url=url, api_key="x").messages.create(model="vlm-npu", max_tokens=8, messages=[
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": png_b64(16, 16, (0, 0, 0))}},
                                     {"type": "text", "text": "what"}]}])
    assert last()["images"]["n_image"] == 1 and last()["images"]["sum"] == pytest.approx(0.0, abs=1e-3)


def test_text_still_goes_as_text_and_a_model_without_an_encoder_refuses_pictures(board):
    url, last, _ = board
    client = ollama.Client(url)
    client.chat(model="vlm-npu", messages=[{"role": "user", "content": "just words"}])
    assert last()["input_type"] != 3
    assert "vision" in client.show("vlm-npu").capabilities and "vision" not in client.show("plain-npu").capabilities
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="plain-npu", messages=[{"role": "user", "content": "x", "images": [png()]}])
    assert refused.value.status_code == 400 and refused.value.error.endswith("does not support vision")


def test_the_repl_sends_a_picture_to_the_npu(board, tmp_path):
    url, last, _ = board
    picture = tmp_path / "pic.png"
    picture.write_bytes(png(20, 20, (255, 0, 0)))
    done = subprocess.run([sys.executable, "-m", "rkollama", "run", "vlm-npu", f"what is in {picture}"],
                          capture_output=True, text=True, env=dict(os.environ, OLLAMA_HOST=url), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Added image '{picture}'" in done.stderr
    assert last()["images"]["sum"] == pytest.approx(embedding_sum((255, 0, 0)), abs=1e-3)


def test_a_model_serving_parallel_slots_runs_a_picture_on_its_own(fake_runtime, fake_rknn, tmp_path, monkeypatch):
    """With rkllm.n_batch above 1 requests share runs; one with a picture is a multimodal run
    of its own."""
    models = {"vlm-npu": {"projector": b"encoder", "rkllm": {"n_batch": 2, **TAGS}}}
    with npu_daemon(tmp_path, monkeypatch, fake_runtime["1.3.1"], models,
                    rknn_lib=str(fake_rknn)) as (url, last):
        ollama.Client(url).chat(model="vlm-npu", messages=[
            {"role": "user", "content": "what", "images": [png(16, 16, (255, 0, 0))]}])
        seen = last()
        assert seen["input_type"] == 3 and seen["images"]["sum"] == pytest.approx(embedding_sum((255, 0, 0)), abs=1e-3)


def test_an_encoder_the_runtime_refuses_is_a_load_error_that_says_so(fake_runtime, fake_rknn, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RKNN_INIT", "fail")
    models = {"vlm-npu": {"projector": b"not an encoder", "rkllm": TAGS}}
    with npu_daemon(tmp_path, monkeypatch, fake_runtime["1.3"], models,
                    rknn_lib=str(fake_rknn)) as (url, _):
        with pytest.raises(ollama.ResponseError) as failed:
            ollama.Client(url).chat(model="vlm-npu", messages=[{"role": "user", "content": "hi"}])
        assert "vision encoder" in failed.value.error


def test_the_encoder_structs_match_the_measured_layouts(fake_rknn):
    """The ctypes declarations, the C double and the layouts measured from the public
    rknn_api.h agree, field by field."""
    from pathlib import Path

    measured = json.loads((Path(__file__).parent / "data" / "rknn_abi_layouts.json").read_text())["structs"]
    lib = ctypes.CDLL(str(fake_rknn))
    lib.fake_rknn_layout_json.restype = ctypes.c_char_p
    double = json.loads(lib.fake_rknn_layout_json())
    for name, cls in rknn.STRUCTS.items():
        assert ctypes.sizeof(cls) == measured[name]["size"] == double[name]["size"], name
        ours = {field: list(place) for field, place in abi.layout(cls).items()}
        assert ours == measured[name]["fields"] == double[name]["fields"], name
