"""The NPU engine feeding the runtime token ids (a model with a tokenizer), on the C double of
every ABI family, under every runtime behaviour the public evidence leaves open (the double's
FAKE_RKLLM_* switches): the engine must answer right under each. Driven through the daemon by
the official ollama and openai clients."""

import json
import os
import socket
import time

import ollama
import openai
import pytest
import requests
from helpers import ThreadServer, register_fake
from npu_tokenizer import THINK_CLOSE_ID, register_with_tokenizer

from rkollama.config import Settings
from rkollama.models.store import ModelStore
from rkollama.server.serve import build

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]

BEHAVIOURS = {
    "well-behaved": {},
    "finish-at-think-always, waiting-null": {"FAKE_RKLLM_THINK_FINISH": "always", "FAKE_RKLLM_WAITING": "null"},
    "finish-at-think-enabled, waiting-repeat, tail-pending": {
        "FAKE_RKLLM_THINK_FINISH": "enabled", "FAKE_RKLLM_WAITING": "repeat", "FAKE_RKLLM_KV_TAIL": "pending"},
    "abort-minus1, max-new-ignored": {"FAKE_RKLLM_ABORT": "minus1", "FAKE_RKLLM_MAX_NEW": "ignore"},
    "abort-error, reuse-prefix, finish-at-think-always": {
        "FAKE_RKLLM_ABORT": "error", "FAKE_RKLLM_REUSE": "prefix", "FAKE_RKLLM_THINK_FINISH": "always"},
}
FAMILIES = ["1.2", "1.3", "1.3.1"]


@pytest.fixture(scope="module", params=[(f, b) for f in FAMILIES for b in BEHAVIOURS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def npu(request, fake_runtime, tmp_path_factory):
    """(url, recorder, family, behaviour) of a daemon whose NPU model has a tokenizer."""
    family, behaviour = request.param
    tmp = tmp_path_factory.mktemp("npu-tokens")
    record = tmp / "record.json"
    env = {"FAKE_RKLLM_RECORD": str(record), **BEHAVIOURS[behaviour]}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the runner process is spawned with these
    store = ModelStore(tmp / "models")
    source = {"path": "model.rkllm", "format": "rkllm", "platform": "rk3588"}
    register_with_tokenizer(store, "qwen-tok", tmp / "tokenizer", source=source,
                            capabilities=["completion", "tools", "thinking"],
                            rkllm={"max_context_len": 512})
    register_fake(store, "text-only", source=source)
    settings = Settings.from_env({}, models=tmp / "models", rkllm_lib=str(fake_runtime[family]),
                                 platform="rk3588")
    app, scheduler = build(settings)
    server = ThreadServer(app)
    yield server.url, (lambda: json.loads(record.read_text())), family, behaviour
    server.close()
    scheduler.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def chat(url, messages, **kwargs):
    return ollama.Client(host=url).chat(model="qwen-tok", messages=messages, **kwargs)


def test_the_prompt_goes_as_token_ids_rendered_by_the_models_template(npu):
    url, last, _, _ = npu
    reply = chat(url, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "one two"}],
                 think=False)
    seen = last()
    assert seen["input_type"] == 1  # RKLLM_INPUT_TOKEN
    assert seen["template"] == ["", "", ""]  # the runtime's own template is out of the way
    assert seen["prompt"].endswith("<|im_start|>user\none two<|im_end|>\n<|im_start|>assistant\n"
                                   "<think>\n\n</think>\n\n")
    assert reply.message.content == "one two"
    # prompt_eval_count is exact: every token of the rendered prompt
    rendered = ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\none two<|im_end|>\n"
                "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert reply.prompt_eval_count == _count(rendered)


def _count(text: str) -> int:
    """Tokens of `text` in the tests' byte-level tokenizer: one per byte, one per special."""
    from npu_tokenizer import SPECIALS

    count = 0
    while text:
        special = next((s for s in SPECIALS if text.startswith(s)), None)
        if special:
            text = text[len(special):]
        else:
            count += len(text[0].encode()) - 1
            text = text[1:]
        count += 1
    return count


@pytest.mark.parametrize("think", [True, False])
def test_a_thinking_model_answers_with_thinking_on_and_off(npu, think):
    """Under "FINISH at </think>" the engine runs again from the thinking plus </think>, so the
    answer is never empty."""
    url, last, _, behaviour = npu
    before = last()["think_finishes"] if os.path.exists(os.environ["FAKE_RKLLM_RECORD"]) else 0
    reply = chat(url, [{"role": "user", "content": "__think__ what is six times seven?"}], think=think)
    assert reply.message.content == "The answer is 42."
    assert reply.message.thinking == ("Let me think." if think else None)
    finishes = last()["think_finishes"] - before
    if think and "finish-at-think-always" in behaviour:
        assert finishes == 1  # the runtime did end the run at </think>, and the answer came anyway


def test_a_follow_up_turn_prefills_only_the_new_tokens(npu):
    url, last, _, _ = npu
    first = [{"role": "user", "content": "alpha beta gamma"}]
    one = chat(url, first)  # thinking on: the template then renders the turn the same next time
    assert one.message.content == "alpha beta gamma"
    history = first + [{"role": "assistant", "content": one.message.content},
                       {"role": "user", "content": "delta"}]
    two = chat(url, history)
    seen = last()
    assert two.message.content == "delta"
    new_part = "<|im_end|>\n<|im_start|>user\ndelta<|im_end|>\n<|im_start|>assistant\n"
    # The cache held the first prompt and answer (less its last token on a runtime that leaves
    # the last sampled token unevaluated): only the rest is sent and prefilled.
    assert seen["sent_tokens"] in (_count(new_part), _count(new_part) + 1)
    assert seen["prefilled"] == seen["sent_tokens"]
    assert two.prompt_eval_count > seen["sent_tokens"]  # Ollama counts the whole prompt
    clears = seen["clears"]
    three = chat(url, [{"role": "user", "content": "unrelated"}], think=False)
    assert three.message.content == "unrelated" and last()["clears"] == clears + 1


def test_utf8_split_across_waiting_callbacks_comes_out_whole(npu):
    url, _, _, _ = npu
    reply = chat(url, [{"role": "user", "content": "héllo wörld € 😀"}], think=False)
    assert reply.message.content == "héllo wörld € 😀"
    streamed = "".join(p.message.content for p in ollama.Client(host=url).chat(
        model="qwen-tok", stream=True, think=False, messages=[{"role": "user", "content": "naïve ☃"}]))
    assert streamed == "naïve ☃"


def test_num_predict_ends_with_length_and_never_an_error(npu):
    """Whether the runtime stops at max_new_tokens itself or must be aborted, and whatever an
    abort looks like, a limit is a `length` answer of exactly that many tokens."""
    url, _, _, _ = npu
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    reply = client.chat.completions.create(model="qwen-tok", max_tokens=3, reasoning_effort="none",
                                           messages=[{"role": "user", "content": "abcdefgh"}])
    assert reply.choices[0].message.content == "abc" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    # The model keeps serving, and the next answer is whole.
    assert chat(url, [{"role": "user", "content": "next one"}], think=False).message.content == "next one"


def test_a_client_that_leaves_aborts_the_run_and_the_next_answer_is_right(npu):
    url, last, _, _ = npu
    chat(url, [{"role": "user", "content": "warm up"}], think=False)
    aborts = last()["aborts"]
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    body = json.dumps({"model": "qwen-tok", "think": False,
                       "messages": [{"role": "user", "content": "__slow__"}]}).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    buffer = b""
    while buffer.count(b'"content"') < 8:  # a few tokens of the answer have streamed
        chunk = sock.recv(4096)
        assert chunk, buffer
        buffer += chunk
    sock.close()
    deadline = time.monotonic() + 10
    while last()["aborts"] == aborts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last()["aborts"] > aborts
    reply = chat(url, [{"role": "user", "content": "still here"}], think=False)
    assert reply.message.content == "still here"


def test_a_prompt_over_the_window_is_fitted_as_on_the_cpu_engine(npu):
    url, last, _, _ = npu
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"question {i} " + "x" * 60},
                    {"role": "assistant", "content": f"answer {i}"}]
    history.append({"role": "user", "content": "last words"})
    reply = chat(url, history, think=False)
    assert reply.message.content == "last words"
    assert reply.prompt_eval_count <= 512  # the window
    assert "question 0 " not in last()["prompt"]  # the oldest turns were dropped
    refused = requests.post(f"{url}/api/chat", json={"model": "qwen-tok", "stream": False, "truncate": False,
                                                     "messages": history})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


def test_tools_are_rendered_into_the_prompt_and_the_call_is_parsed(npu):
    url, last, _, _ = npu
    reply = chat(url, [{"role": "system", "content": "Be helpful."},
                       {"role": "user", "content": "__tool__ weather in Paris?"}], tools=TOOLS, think=False)
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert '"name": "get_weather"' in last()["prompt"] and "Be helpful." in last()["prompt"]


def test_generate_returns_a_context_that_continues(npu):
    url, _, _, _ = npu
    client = ollama.Client(host=url)
    first = client.generate(model="qwen-tok", prompt="tell me", think=False)
    assert first.response == "tell me" and first.context
    again = client.generate(model="qwen-tok", prompt="more", context=first.context, think=False)
    assert again.response == "more"
    assert again.prompt_eval_count > len(first.context)


def test_the_tests_tokenizer_and_the_double_agree_on_the_special_tokens():
    import re
    from pathlib import Path

    from npu_tokenizer import SPECIALS

    source = (Path(__file__).parent / "fakes" / "fake_rkllm.c").read_text()
    table = re.search(r"SPECIALS\[\] = \{(.*?)\};", source, re.S).group(1)
    assert re.findall(r'"([^"]+)"', table) == SPECIALS
    assert f"#define THINK_CLOSE_ID {THINK_CLOSE_ID}" in source


def test_show_says_which_path_a_models_prompts_take(npu):
    url, _, _, _ = npu
    client = ollama.Client(host=url)
    assert client.show("qwen-tok").modelinfo["rkollama.npu.prompts"].startswith("token ids")
    text = client.show("text-only").modelinfo["rkollama.npu.prompts"]
    assert text.startswith("text (no tokenizer") and "prompt fitting" in text
    from test_cli import rk

    shown = rk(["show", "text-only"], url=url)
    assert "prompts sent as" in shown.stdout and "no tokenizer" in shown.stdout, shown.stderr


def test_a_follow_up_that_shares_only_a_prefix_is_resent_for_the_runtime_to_reuse(npu):
    """Thinking off, the template puts an empty think block after the prompt but not after the
    earlier answer, so the next prompt shares only a prefix with the cache: the whole prompt goes
    with keep_history=0, and a runtime that reuses prefixes prefills only the rest."""
    url, last, _, behaviour = npu
    first = [{"role": "user", "content": "a question long enough to share a real prefix with the next"}]
    one = chat(url, first, think=False)
    history = first + [{"role": "assistant", "content": one.message.content},
                       {"role": "user", "content": "and then?"}]
    two = chat(url, history, think=False)
    seen = last()
    assert two.message.content == "and then?"
    assert seen["keep_history"] == 0 and seen["sent_tokens"] == two.prompt_eval_count
    if "reuse-prefix" in behaviour:
        assert seen["prefilled"] < seen["sent_tokens"] - 60  # the first turn was not prefilled again
    else:
        assert seen["prefilled"] == seen["sent_tokens"]


@pytest.mark.parametrize("pieces,expected", [
    ([(b"\xe2", True), (b"\x82", True), (b"\xac", False)], "€"),            # partial bytes
    ([(None, True), (None, True), (b"\xe2\x82\xac", False)], "€"),           # NULL
    ([(b"\xe2", True), (b"\xe2\x82", True), (b"\xe2\x82\xac", False)], "€"),  # the bytes so far
    ([(b"\xe2", True), (b"\x82", True), (b"\xe2\x82\xac", False)], "€"),      # repeated by NORMAL
    ([(b"a", False), (b"\xc3", True), (b"\xa9b", False)], "aéb"),
])
def test_waiting_bytes_are_joined_whichever_way_the_runtime_fills_them(pieces, expected):
    from rkollama.backends.rkllm.runs import Utf8Joiner

    joiner = Utf8Joiner()
    assert "".join(joiner.feed(raw, waiting) for raw, waiting in pieces) + joiner.finish() == expected


def test_the_token_cache_believes_only_what_the_runtime_confirms():
    from rkollama.backends.rkllm.token_cache import SHARED_PREFIX_MIN, TokenCache

    cache = TokenCache()
    prompt = list(range(100))
    first = cache.plan(prompt)
    assert (first.send, first.keep_history, first.clear) == (prompt, True, False)
    cache.settle(prompt, [500, 501], kv_size=102)
    extended = cache.plan(prompt + [500, 501, 7, 8])
    assert (extended.send, extended.cached, extended.keep_history) == ([7, 8], 102, True)
    cache.settle(prompt, [500, 501], kv_size=101)  # the last sampled token was not evaluated
    assert cache.plan(prompt + [500, 501, 9]).send == [501, 9]
    shared = cache.plan(prompt[:SHARED_PREFIX_MIN] + [999])  # a prefix, then different
    assert (shared.keep_history, shared.clear) == (False, False)
    cache.settle(prompt, [500], kv_size=57)  # a count that fits nothing: not believed
    unknown = cache.plan(prompt + [500, 1])
    assert (unknown.send, unknown.keep_history, unknown.clear) == (prompt + [500, 1], True, True)
    cache.cleared()
    cache.settle(prompt, None, kv_size=101)  # ids that did not spell the answer
    assert cache.plan(prompt + [1]).clear
