"""The whole daemon on the C test double of librkllmrt.so, for both ABI families, driven by the
official ollama and openai clients."""

import json
import socket
import time

import ollama
import openai
import pytest
import requests
from helpers import ThreadServer, npu_daemon, register_fake

from rkollama.config import Settings
from rkollama.models.store import ModelStore
from rkollama.server.serve import build

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(params=["1.2", "1.3", "1.3.1"])
def npu(request, fake_runtime, tmp_path, monkeypatch):
    """(base URL, recorder, family) of a daemon whose NPU engine is the double of one ABI family,
    running (as in production) in a worker process; the double writes what it saw to a file."""
    models = {"qwen-npu": {"capabilities": ["completion", "tools", "thinking"],
                           "rkllm": {"max_context_len": 1024, "n_keep": -1}},
              "plain-npu": {}}
    with npu_daemon(tmp_path, monkeypatch, fake_runtime[request.param], models) as (url, last):
        yield url, last, request.param


def test_streaming_joins_utf8_split_across_waiting_callbacks(npu):
    url, last, _ = npu
    parts = list(ollama.Client(host=url).chat(model="plain-npu", stream=True,
                                              messages=[{"role": "user", "content": "__utf8__"}]))
    assert "".join(p.message.content for p in parts) == "héllo wörld €"
    final = parts[-1]
    assert final.done and final.eval_count == 9 and final.eval_duration == 9 * 30 * 1_000_000


def test_init_parameters_reach_the_runtime(npu):
    url, last, family = npu
    ollama.Client(host=url).generate(model="qwen-npu", prompt="hello there", think=False)
    param = last()["param"]
    assert param["max_context_len"] == 1024 and param["n_keep"] == -1
    assert param["enabled_cpus_mask"] == 0xF0 and param["enabled_cpus_num"] == 4
    assert param["embed_flash"] == 1 and param["n_batch"] == 1 and param["is_async"] == 0
    assert last()["userdata"] != 0
    assert last()["reserved_nonzero"] == 0  # no stack garbage from the defaults' return buffer


def test_a_second_chat_turn_sends_only_the_new_message_with_history_kept(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    first = client.chat(model="plain-npu", messages=[{"role": "user", "content": "one two three"}])
    assert last()["keep_history"] == 1 and first.prompt_eval_count == 3
    clears = last()["clears"]
    second = client.chat(model="plain-npu", messages=[
        {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": first.message.content},
        {"role": "user", "content": "four five"}])
    assert last()["prompt"] == "four five" and last()["keep_history"] == 1
    assert last()["clears"] == clears  # the cache was kept
    assert second.prompt_eval_count == 3 + 3 + 2  # cached turn and answer, plus the new words
    client.chat(model="plain-npu", messages=[{"role": "user", "content": "unrelated"}])
    assert last()["clears"] == clears + 1 and last()["prompt"] == "unrelated"


def test_tools_and_thinking_flags_reach_the_runtime(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    reply = client.chat(model="qwen-npu", tools=TOOLS, messages=[
        {"role": "system", "content": "Be helpful."}, {"role": "user", "content": "__tool__ weather?"}])
    recorded = last()
    assert recorded["tools"] == ["Be helpful.", json.dumps(TOOLS), "tool_response"]
    assert recorded["enable_thinking"] == 1 and recorded["role"] == "user"
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    client.chat(model="qwen-npu", tools=TOOLS, messages=[
        {"role": "system", "content": "Be helpful."}, {"role": "user", "content": "__tool__ weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"sky": "clear"}', "tool_name": "get_weather"}])
    assert last()["role"] == "tool" and last()["prompt"] == '{"sky": "clear"}'
    client.chat(model="qwen-npu", think=False, messages=[{"role": "user", "content": "hi"}])
    assert last()["enable_thinking"] == 0


def test_thinking_is_split_out(npu):
    url, _, _ = npu
    reply = ollama.Client(host=url).chat(model="qwen-npu", messages=[{"role": "user", "content": "__think__"}])
    assert reply.message.thinking == "Let me think." and reply.message.content == "The answer is 42."


def test_runtime_error_is_reported(npu):
    url, _, _ = npu
    with pytest.raises(ollama.ResponseError) as error:
        ollama.Client(host=url).generate(model="plain-npu", prompt="__error__")
    assert "NPU runtime reported an error" in error.value.error


def test_disconnect_aborts_the_run_and_the_model_keeps_serving(npu):
    url, last, _ = npu
    ollama.Client(host=url).generate(model="plain-npu", prompt="warm up")
    aborts = last()["aborts"]
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    body = json.dumps({"model": "plain-npu", "prompt": "__slow__"}).encode()
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    buffer = b""
    while b"w2 " not in buffer:
        buffer += sock.recv(4096)
    sock.close()
    deadline = time.monotonic() + 10
    while last()["aborts"] == aborts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last()["aborts"] > aborts
    reply = ollama.Client(host=url).generate(model="plain-npu", prompt="still here")
    assert reply.response == "still here"


def test_openai_client_and_sampling_per_request(npu):
    url, last, family = npu
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    reply = client.chat.completions.create(model="plain-npu", temperature=0.3, max_tokens=2,
                                           messages=[{"role": "user", "content": "a b c d"}])
    assert reply.choices[0].message.content == "a b" and reply.choices[0].finish_reason == "length"
    sampling = last()["sampling"]
    if family.startswith("1.3"):
        assert sampling["present"] == 1 and sampling["temperature"] == pytest.approx(0.3)
        assert last()["max_new_tokens_run"] == 2
    else:
        assert sampling["present"] == 0  # 1.2.x: sampling is fixed at init


def test_the_modelfiles_mirostat_holds_for_every_run(npu, tmp_path):
    """Ollama's options have no mirostat: each 1.3 run keeps the Modelfile's, as init got it."""
    url, last, family = npu
    register_fake(ModelStore(tmp_path / "npu-models"), "miro-npu", rkllm={"mirostat": 2},
                  source={"path": "model.rkllm", "format": "rkllm", "platform": "rk3588"})
    ollama.Client(host=url).generate(model="miro-npu", prompt="a b", options={"temperature": 0.5})
    if family.startswith("1.3"):
        assert last()["sampling"]["present"] == 1 and last()["sampling"]["mirostat"] == 2
    else:
        assert last()["sampling"]["present"] == 0


def test_unloading_destroys_the_handle(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    client.generate(model="plain-npu", prompt="x")
    destroys = last()["destroys"]
    client.generate(model="plain-npu", prompt="", keep_alive=0)
    deadline = time.monotonic() + 10  # the unload finishes off the scheduler's lock
    while last()["destroys"] == destroys and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last()["destroys"] == destroys + 1


def test_a_runtime_crash_fails_the_request_and_the_next_one_reloads(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    assert client.generate(model="plain-npu", prompt="before").response == "before"
    with pytest.raises(ollama.ResponseError) as error:
        client.generate(model="plain-npu", prompt="__crash__")
    assert error.value.status_code == 500 and "NPU runtime crashed" in error.value.error
    assert client.ps().models == []  # the dead worker was dropped
    assert client.generate(model="plain-npu", prompt="after crash").response == "after crash"
    assert last()["inits"] == 1  # a fresh worker process: its recorder starts again
    assert [m.model for m in client.ps().models] == ["plain-npu:latest"]


def test_lora_adapter_and_prompt_cache_from_the_modelfile(npu, tmp_path):
    url, last, _ = npu
    adapter, cache = tmp_path / "style.rkllm-lora", tmp_path / "system.cache"
    adapter.write_bytes(b"lora")
    cache.write_bytes(b"cache")
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "npu-models")
    register_fake(store, "lora-npu", source={"path": "m.rkllm", "format": "rkllm"},
                  rkllm={"lora": [{"path": str(adapter), "name": "style", "scale": 0.5}],
                         "prompt_cache": str(cache)})
    ollama.Client(host=url).generate(model="lora-npu", prompt="hi")
    recorded = last()
    assert recorded["loaded_lora"] == f"style@{adapter}*0.50" and recorded["lora"] == "style"
    assert recorded["loaded_prompt_cache"] == str(cache)


def test_models_loaded_side_by_side_get_distinct_npu_domains(fake_runtime, tmp_path, monkeypatch):
    from dataclasses import replace

    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RKLLM_RECORD", str(record))
    store = ModelStore(tmp_path / "m")
    source = {"path": "m.rkllm", "format": "rkllm"}
    register_fake(store, "first", source=source)
    register_fake(store, "second", source=source)
    settings = replace(Settings.from_env({}, models=tmp_path / "m", rkllm_lib=str(fake_runtime["1.3"])),
                       max_loaded_models=2)
    app, scheduler = build(settings)
    server = ThreadServer(app)
    try:
        client = ollama.Client(host=server.url)
        client.generate(model="first", prompt="a")
        assert json.loads(record.read_text())["param"]["base_domain_id"] == 0
        client.generate(model="second", prompt="b")
        assert json.loads(record.read_text())["param"]["base_domain_id"] == 1
        assert len(client.ps().models) == 2
    finally:
        server.close()
        scheduler.shutdown()


def test_system_prompt_goes_through_the_runtime_template_when_its_pieces_are_known(npu, tmp_path):
    url, last, _ = npu
    store = ModelStore(tmp_path / "npu-models")
    register_fake(store, "chatml-npu", source={"path": "m.rkllm", "format": "rkllm"},
                  rkllm={"system_template": "<|im_start|>system\n{system}<|im_end|>\n",
                         "prompt_prefix": "<|im_start|>user\n",
                         "prompt_postfix": "<|im_end|>\n<|im_start|>assistant\n"})
    client = ollama.Client(host=url)
    client.chat(model="chatml-npu", messages=[{"role": "system", "content": "Be terse."},
                                              {"role": "user", "content": "hi"}])
    recorded = last()
    assert recorded["template"] == ["<|im_start|>system\nBe terse.<|im_end|>\n", "<|im_start|>user\n",
                                    "<|im_end|>\n<|im_start|>assistant\n"]
    assert recorded["prompt"] == "hi"
    client.chat(model="plain-npu", messages=[{"role": "system", "content": "Be terse."},
                                             {"role": "user", "content": "hi"}])
    assert last()["prompt"] == "Be terse.\n\nhi"  # pieces unknown: the system text leads the message


def test_embeddings_come_from_the_last_hidden_layer(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    raw = client.embeddings(model="plain-npu", prompt="ab cdef").embedding
    assert raw == pytest.approx([0.5, 3.0, 1, 1, 1, 1, 1, 1])  # the double: index, length, 1s
    normalised = client.embed(model="plain-npu", input=["ab cdef", "x"]).embeddings
    assert len(normalised) == 2 and sum(v * v for v in normalised[0]) == pytest.approx(1.0)


def test_n_batch_serves_concurrent_requests_in_one_forward_pass(npu, tmp_path):
    import threading

    url, last, _ = npu
    store = ModelStore(tmp_path / "npu-models")
    register_fake(store, "batch-npu", source={"path": "m.rkllm", "format": "rkllm"},
                  rkllm={"n_batch": 2, "batch_window_ms": 1000})  # ample, so both always meet
    client = ollama.Client(host=url)
    client.generate(model="batch-npu", prompt="")  # load it, so both requests meet a loaded model
    answers, runs_before = [], last()["runs"]

    def ask(word):
        answers.append(ollama.Client(host=url).generate(model="batch-npu", prompt=word).response)

    threads = [threading.Thread(target=ask, args=(w,)) for w in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(answers) == ["b0-0 ", "b1-0 b1-1 "]  # the double's per-slot output, one run
    assert last()["runs"] == runs_before + 1 and last()["n_batch"] == 2
    assert last()["param"]["n_batch"] == 2
    assert [m.model for m in client.ps().models] == ["batch-npu:latest"]
    assert client.generate(model="batch-npu", prompt="alone").response == "b0-0 "  # spare slot dropped


def test_logprobs_on_the_npu_engine_are_a_clear_400(npu):
    url, _, _ = npu
    reply = requests.post(f"{url}/api/chat", json={"model": "plain-npu", "stream": False, "logprobs": True,
                                                   "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 400 and "NPU engine" in reply.json()["error"]


def test_a_new_system_prompt_with_the_same_tools_reaches_the_runtime(npu):
    url, last, _ = npu
    client = ollama.Client(host=url)
    for system in ("Be helpful.", "Answer in French."):
        client.chat(model="qwen-npu", tools=TOOLS, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": "__tool__ weather?"}])
        assert last()["tools"][0] == system


def test_a_runtime_that_stops_calling_back_is_stopped_and_the_model_reloads(fake_runtime, tmp_path,
                                                                             monkeypatch):
    """A wedged NPU (rkllm_run neither calls back nor returns, nor heeds an abort): after
    RKOLLAMA_STALL_TIMEOUT the request fails, its runner is killed, and the next request loads
    the model again and is answered."""
    wedged = tmp_path / "wedged"
    wedged.touch()
    monkeypatch.setenv("FAKE_RKLLM_RUN_HANG", str(wedged))
    models = tmp_path / "npu-models"
    register_fake(ModelStore(models), "plain-npu",
                  source={"path": "model.rkllm", "format": "rkllm", "platform": "rk3588"})
    settings = Settings.from_env({}, models=models, rkllm_lib=str(fake_runtime["1.3.1"]),
                                 platform="rk3588", stall_timeout="2s")
    app, scheduler = build(settings)
    server = ThreadServer(app)
    try:
        started = time.monotonic()
        reply = requests.post(f"{server.url}/api/generate", json={
            "model": "plain-npu", "prompt": "hello", "stream": False}, timeout=60)
        assert reply.status_code == 500 and "stopped answering" in reply.json()["error"]
        assert time.monotonic() - started < 20
        wedged.unlink()
        again = requests.post(f"{server.url}/api/generate", json={
            "model": "plain-npu", "prompt": "after", "stream": False}, timeout=60)
        assert again.status_code == 200 and again.json()["response"] == "after"
    finally:
        server.close()
        scheduler.shutdown()
