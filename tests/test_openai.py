"""OpenAI's /v1 API on the fake backend: shapes, streaming, tools, reasoning, errors, and parity
with the native API (one core, two translators)."""

import base64
import json
import struct

import openai
import pytest
import requests
from helpers import png_b64

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>'


@pytest.fixture
def oai(fake_server):
    return openai.OpenAI(base_url=fake_server.url + "/v1", api_key="ignored")


@pytest.fixture
def tooly(store):
    from helpers import register_fake

    register_fake(store, "tooly", capabilities=["completion", "tools", "thinking"])


def sse(response):
    assert response.content_type.startswith("text/event-stream")
    frames = [f for f in response.get_data(as_text=True).split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    return [json.loads(f[6:]) for f in frames[:-1]]


def test_chat_completion_shape_and_usage(oai, script):
    script.enqueue(["Hel", "lo"])
    reply = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi there"}])
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert reply.choices[0].message.content == "Hello" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 2 and reply.usage.total_tokens == 4
    assert reply.system_fingerprint == "fp_ollama" and reply.id.startswith("chatcmpl-")


def test_openai_defaults_override_the_modelfile_temperature(oai, script):
    oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert script.history[-1].options.temperature == 1.0 and script.history[-1].options.top_p == 1.0
    oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=0.3,
                                max_completion_tokens=7, stop="END", seed=5)
    options = script.history[-1].options
    assert (options.temperature, options.num_predict, options.stop, options.seed) == (0.3, 7, ["END"], 5)


def test_stream_has_a_role_chunk_content_a_finish_chunk_usage_and_done(http, script):
    script.enqueue(["a", "b"])
    frames = sse(http.post("/v1/chat/completions", json={
        "model": "tiny", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "x"}]}))
    deltas = [f["choices"][0]["delta"] if f["choices"] else None for f in frames]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "a"}, {"content": "b"}, {}, None]
    assert frames[3]["choices"][0]["finish_reason"] == "stop"
    assert frames[4]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert len({f["id"] for f in frames}) == 1 and len({f["created"] for f in frames}) == 1


def test_streamed_text_through_the_openai_client(oai, script):
    script.enqueue(["one ", "two"])
    stream = oai.chat.completions.create(model="tiny", stream=True, messages=[{"role": "user", "content": "x"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_length_finish_reason(oai, script):
    script.enqueue(["a", "b", "c"])
    reply = oai.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content == "ab"


def test_tool_call_round_trip(oai, script, tooly):
    script.enqueue(list(CALL))
    reply = oai.chat.completions.create(model="tooly", tools=TOOLS, messages=[{"role": "user", "content": "weather?"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Tokyo"}
    assert call.id.startswith("call_") and len(call.id) == 13 and call.type == "function"
    script.enqueue(["Sunny", "."])
    follow = oai.chat.completions.create(model="tooly", tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
    assert follow.choices[0].message.content == "Sunny."
    sent = script.history[-1]
    assert sent.tools == TOOLS
    assert sent.messages[1].tool_calls[0]["function"] == {"name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert (sent.messages[2].role, sent.messages[2].tool_name, sent.messages[2].content) == ("tool", "get_weather", "18C")


def test_streamed_tool_call_is_one_complete_delta(oai, script, tooly):
    script.enqueue(["Checking. "] + list(CALL))
    chunks = list(oai.chat.completions.create(model="tooly", tools=TOOLS, stream=True,
                                              messages=[{"role": "user", "content": "w"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert text == "Checking. " and len(calls) == 1
    assert json.loads(calls[0].function.arguments) == {"city": "Tokyo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_hides_the_tools(oai, script, tooly):
    oai.chat.completions.create(model="tooly", tools=TOOLS, tool_choice="none", messages=[{"role": "user", "content": "w"}])
    assert script.history[-1].tools == [] and script.history[-1].tool_choice is None
    oai.chat.completions.create(model="tooly", tools=TOOLS, tool_choice="required", messages=[{"role": "user", "content": "w"}])
    assert script.history[-1].tool_choice == "required"


def test_reasoning_is_split_out_as_it_streams(oai, script, tooly):
    script.enqueue(["<th", "ink>plan", "ning</think>", "\n\nAnswer"])
    reply = oai.chat.completions.create(model="tooly", messages=[{"role": "user", "content": "q"}])
    message = reply.choices[0].message
    assert message.content == "Answer" and message.model_extra["reasoning"] == "planning"
    script.enqueue(["<think>plan</think>", "Answer"])
    chunks = list(oai.chat.completions.create(model="tooly", stream=True, messages=[{"role": "user", "content": "q"}]))
    reasoning = [c.choices[0].delta.model_extra.get("reasoning") for c in chunks]
    assert "plan" in reasoning


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", "low"), ("high", "high"), ("xhigh", "max")])
def test_reasoning_effort_maps_to_think(oai, script, tooly, effort, think):
    oai.chat.completions.create(model="tooly", reasoning_effort=effort, messages=[{"role": "user", "content": "q"}])
    assert script.history[-1].think == think


def test_image_parts_become_images_and_http_urls_are_refused(http, script, seer):
    pixel = png_b64()
    reply = http.post("/v1/chat/completions", json={"model": "seer", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}}]}]})
    assert reply.status_code == 200 and script.history[-1].messages[0].images == [pixel]
    reply = http.post("/v1/chat/completions", json={"model": "seer", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert reply.status_code == 400
    assert reply.get_json()["error"]["message"] == "image URLs are not currently supported, please use base64 encoded data instead"


def test_legacy_completions(oai, script):
    script.enqueue(["four"])
    reply = oai.completions.create(model="tiny", prompt="2+2=", max_tokens=5)
    assert reply.object == "text_completion" and reply.choices[0].text == "four"
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens == 1
    script.enqueue(["a", "b"])
    chunks = list(oai.completions.create(model="tiny", prompt="x", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "ab" and chunks[-1].choices[0].finish_reason == "stop"


def test_models_list_and_retrieve(oai):
    ids = {m.id for m in oai.models.list().data}
    assert {"tiny:latest", "thinker:1b", "other:7b"} <= ids
    assert oai.models.retrieve("tiny:latest").owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_embeddings_in_both_encodings_are_normalised(oai, http):
    floats = oai.embeddings.create(model="tiny", input=["a b", "hello"], encoding_format="float")
    default = oai.embeddings.create(model="tiny", input=["a b", "hello"])  # the SDK asks for base64
    for item, other in zip(floats.data, default.data, strict=True):
        assert item.embedding == pytest.approx(other.embedding, abs=1e-6)
        assert sum(x * x for x in item.embedding) == pytest.approx(1.0)
    raw = http.post("/v1/embeddings", json={"model": "tiny", "input": "a", "encoding_format": "base64"}).get_json()
    vector = struct.unpack("<4f", base64.b64decode(raw["data"][0]["embedding"]))
    assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-5)
    short = oai.embeddings.create(model="tiny", input="a b c", dimensions=2, encoding_format="float")
    assert len(short.data[0].embedding) == 2


def test_native_embed_normalises_and_legacy_does_not(http):
    reply = http.post("/api/embed", json={"model": "tiny", "input": ["a b", "c"]}).get_json()
    assert len(reply["embeddings"]) == 2 and reply["prompt_eval_count"] == 3
    assert sum(x * x for x in reply["embeddings"][0]) == pytest.approx(1.0)
    legacy = http.post("/api/embeddings", json={"model": "tiny", "prompt": "a b"}).get_json()
    assert legacy["embedding"] == [2.0, 3.0, 1.0, 1.0]
    assert http.post("/api/embed", json={"model": "tiny", "input": []}).get_json() == {"model": "tiny", "embeddings": []}
    assert http.post("/api/embeddings", json={"model": "tiny", "prompt": ""}).get_json() == {"embedding": []}
    missing = http.post("/api/embed", json={"model": "nope", "input": "x"})
    assert missing.status_code == 404 and missing.get_json() == {"error": 'model "nope" not found, try pulling it first'}
    assert http.post("/api/embed", json={"model": "tiny", "input": [1, 2]}).get_json() == {"error": "invalid input type"}


def test_one_script_through_both_dialects_gives_the_same_answer(http, script, tooly):
    tokens = ["<think>", "why", "</think>", "Sure. "] + list(CALL)
    script.enqueue(tokens)
    native = http.post("/api/chat", json={"model": "tooly", "stream": False, "tools": TOOLS,
                                          "messages": [{"role": "user", "content": "go now"}]}).get_json()
    script.enqueue(tokens)
    oa = http.post("/v1/chat/completions", json={"model": "tooly", "tools": TOOLS,
                                                 "messages": [{"role": "user", "content": "go now"}]}).get_json()
    message = oa["choices"][0]["message"]
    assert native["message"]["content"] == message["content"] == "Sure. "
    assert native["message"]["thinking"] == message["reasoning"] == "why"
    (n_call,), (o_call,) = native["message"]["tool_calls"], message["tool_calls"]
    assert n_call["function"]["arguments"] == json.loads(o_call["function"]["arguments"]) == {"city": "Tokyo"}
    assert n_call["function"]["name"] == o_call["function"]["name"] == "get_weather"
    assert native["done_reason"] == "stop" and oa["choices"][0]["finish_reason"] == "tool_calls"
    assert native["prompt_eval_count"] == oa["usage"]["prompt_tokens"]
    assert native["eval_count"] == oa["usage"]["completion_tokens"] == len(tokens)


def test_native_streamed_tool_call_has_object_arguments(http, script, tooly):
    script.enqueue(list(CALL))
    lines = [json.loads(line) for line in http.post("/api/chat", json={
        "model": "tooly", "tools": TOOLS, "messages": [{"role": "user", "content": "w"}]}).get_data(as_text=True).splitlines()]
    calls = [line["message"]["tool_calls"] for line in lines if "tool_calls" in line["message"]]
    assert calls == [[{"id": calls[0][0]["id"], "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}]]
    assert all(line["message"]["role"] == "assistant" for line in lines)


OPENAI_BAD = [
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "[] is too short - 'messages'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model is required"),
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model 'nope' not found"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "huge"}, 400, None),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, 400, None),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}, 400, "invalid tool call arguments"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[" * 5000 + "]" * 5000}}]}]}, 400, "invalid tool call arguments"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400, None),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 400, None),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, None),
    ("/v1/completions", {"model": "tiny", "prompt": ["a", "b"]}, 400, None),
    ("/v1/embeddings", {"model": "tiny", "input": []}, 400, "invalid input"),
    ("/v1/embeddings", {"model": "tiny", "input": [[1, 2]]}, 400, "invalid input"),
    ("/v1/embeddings", {"model": "tiny", "input": "x", "encoding_format": "hex"}, 400, None),
    ("/v1/chat/completions", None, 400, "missing request body"),
]


@pytest.mark.parametrize("path,body,status,message", OPENAI_BAD)
def test_openai_errors_have_openais_shape(http, path, body, status, message):
    reply = http.post(path, json=body) if body is not None else http.post(path, data=b"", content_type="application/json")
    assert reply.status_code == status
    error = reply.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}[status]
    if message:
        assert error["message"] == message


def test_mid_stream_failure_is_an_error_frame(http, script):
    script.enqueue(["a", "b", "c"])
    script.fail_at_token = 2
    frames = http.post("/v1/chat/completions", json={"model": "tiny", "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]}).get_data(as_text=True)
    assert frames.rstrip().endswith('data: {"error":{"message":"scripted failure","type":"api_error","param":null,"code":null}}')


def test_format_on_an_engine_that_cannot_constrain_is_validated_and_retried(http, script):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    script.enqueue(["not json"])
    script.enqueue(['{"n": "three"}'])
    script.enqueue(['{"n": 3}'])
    reply = http.post("/api/chat", json={"model": "tiny", "stream": False, "format": schema,
                                         "messages": [{"role": "user", "content": "count"}]}).get_json()
    assert reply["message"]["content"] == '{"n": 3}' and reply["eval_count"] == 3
    first, second, third = script.history[-3:]
    assert first.messages[-1].content.startswith("count\n\nReply with a single JSON value")
    assert "not valid JSON" in second.messages[-1].content
    assert "$.n: 'three' is not of type 'integer'" in third.messages[-1].content


def test_format_failure_after_the_retries_is_reported(http, script):
    for _ in range(3):
        script.enqueue(["nope"])
    reply = http.post("/v1/chat/completions", json={"model": "tiny", "response_format": {"type": "json_object"},
                                                    "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 422  # not a 5xx: clients would retry it, tripling the cost
    assert reply.get_json()["error"]["message"].startswith("the model did not produce the requested format after 3 attempts")


def test_a_pattern_that_backtracks_without_end_is_cut_off_not_run(http, script):
    """A hostile `pattern` ((a|a)+$ takes exponential time on a backtracking matcher) is matched
    under a time limit: the request ends with the format error instead of holding the daemon."""
    answer = '"' + "a" * 40 + 'b"'
    for _ in range(3):
        script.enqueue([answer])
    schema = {"type": "string", "pattern": "(a|a)+$"}
    reply = http.post("/api/chat", json={"model": "tiny", "stream": False, "format": schema,
                                         "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 422
    assert "matching '(a|a)+$' took longer than 0.1 s" in reply.get_json()["error"]
    # The limit is per match: ordinary patterns are still checked (and retried) as before.
    script.enqueue(['"abc"'])
    script.enqueue(['"123"'])
    digits = http.post("/api/chat", json={"model": "tiny", "stream": False, "messages": [{"role": "user", "content": "x"}],
                                          "format": {"type": "string", "pattern": "^[0-9]+$"}}).get_json()
    assert digits["message"]["content"] == '"123"'
    assert "'abc' does not match '^[0-9]+$'" in script.history[-1].messages[-1].content


def test_validated_format_streams_too(http, script):
    script.enqueue(['{"ok": true}'])
    lines = [json.loads(line) for line in http.post("/api/generate", json={
        "model": "tiny", "prompt": "x", "format": "json"}).get_data(as_text=True).splitlines()]
    assert lines[0]["response"] == '{"ok": true}' and lines[-1]["done"] is True


# -- /v1/responses ---------------------------------------------------------------------------------
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.parametrize("items", [
    [{"type": "function_call_output", "call_id": [], "output": "x"}],
    [{"type": "function_call", "call_id": {}, "name": "f", "arguments": "{}"}],
])
def test_a_call_id_that_is_not_a_string_is_never_an_internal_error(http, script, items):
    script.enqueue(["ok"])
    reply = http.post("/v1/responses", json={"model": "tiny", "input": items})
    assert reply.status_code in (200, 400), reply.get_data(as_text=True)


def test_responses_answer_with_one_message_item_and_usage(oai, script):
    script.enqueue(["Hello", " there"])
    reply = oai.responses.create(model="tiny", input="Say hello", instructions="Be brief.",
                                 max_output_tokens=32)
    assert reply.object == "response" and reply.status == "completed" and reply.id.startswith("resp_")
    assert reply.output_text == "Hello there" and reply.output[0].type == "message"
    assert reply.usage.output_tokens == 2 and reply.usage.total_tokens == reply.usage.input_tokens + 2
    assert reply.instructions == "Be brief."
    sent = script.history[-1]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be brief."), ("user", "Say hello")]
    assert sent.options.num_predict == 32 and sent.options.temperature == 1.0


def test_responses_function_call_round_trip(oai, script, tooly):
    script.enqueue([CALL])
    first = oai.responses.create(model="tooly", input="Weather in Tokyo?", tools=[RESPONSES_TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Tokyo"}
    script.enqueue(["It is 18C."])
    second = oai.responses.create(model="tooly", tools=[RESPONSES_TOOL], input=[
        {"role": "user", "content": "Weather in Tokyo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert second.output_text == "It is 18C."
    sent = script.history[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[2].content == "18C" and sent[2].tool_name == "get_weather"


def test_responses_reasoning_comes_back_as_a_reasoning_item(oai, script, tooly):
    script.enqueue(["<think>plan</think>", "Answer"])
    reply = oai.responses.create(model="tooly", input="Think", reasoning={"effort": "high"})
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.output[0].summary[0].text == "plan" and reply.output_text == "Answer"
    assert script.history[-1].think == "high"
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="tooly", input="x", reasoning={"effort": "extreme"})


def test_responses_stream_their_event_sequence(oai, script, tooly):
    script.enqueue(["<think>plan</think>", "Hel", "lo"])
    events = list(oai.responses.create(model="tooly", input="x", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds and "response.output_text.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello" and events[-1].response.output_text == "Hello"


def test_chat_logprobs_in_openais_shape(oai, script):
    script.enqueue(["Hel", "lo"])
    reply = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                        logprobs=True, top_logprobs=1)
    content = reply.choices[0].logprobs.content
    assert [c.token for c in content] == ["Hel", "lo"] and content[1].top_logprobs[0].token == "alt0"
    script.enqueue(["a", "b"])
    chunks = list(oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                              logprobs=True, stream=True))
    tokens = [c.token for ch in chunks if ch.choices and ch.choices[0].logprobs
              for c in ch.choices[0].logprobs.content]
    assert tokens == ["a", "b"]
    assert oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}]).choices[0].logprobs is None


def test_completions_logprobs_in_the_legacy_columns_and_ollamas_list(oai, script):
    script.enqueue(["Hel", "lo"])
    reply = oai.completions.create(model="tiny", prompt="x", logprobs=2)
    lp = reply.choices[0].logprobs
    assert lp.tokens == ["Hel", "lo"] and lp.text_offset == [0, 3]
    assert lp.token_logprobs == pytest.approx([-0.1, -0.2])
    assert [list(top) for top in lp.top_logprobs] == [["alt0", "alt1"], ["alt0", "alt1"]]
    assert lp.top_logprobs[1]["alt0"] == pytest.approx(-1.2)
    assert [c["token"] for c in lp.model_extra["content"]] == ["Hel", "lo"]
    script.enqueue(["a", "bc", "d"])
    chunks = [c for c in oai.completions.create(model="tiny", prompt="x", logprobs=1, stream=True)
              if c.choices and c.choices[0].logprobs]
    assert [c.choices[0].logprobs.tokens for c in chunks] == [["a"], ["bc"], ["d"]]
    assert [c.choices[0].logprobs.text_offset for c in chunks] == [[0], [1], [3]]
    script.enqueue(["a"])
    assert oai.completions.create(model="tiny", prompt="x", logprobs=0).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be between 0 and 20"):
        oai.completions.create(model="tiny", prompt="x", logprobs=21)


def test_responses_logprobs_when_included(oai, script, tooly):
    script.enqueue(["<think>plan</think>", "Hel", "lo"])
    reply = oai.responses.create(model="tooly", input="x", include=["message.output_text.logprobs"],
                                 top_logprobs=1)
    text = reply.output[-1].content[0]
    assert [lp.token for lp in text.logprobs] == ["Hel", "lo"]  # the answer's, not the reasoning's
    assert text.logprobs[0].top_logprobs[0].token == "alt0" and reply.top_logprobs == 1
    script.enqueue(["a", "b"])
    events = list(oai.responses.create(model="tiny", input="x", stream=True,
                                       include=["message.output_text.logprobs"]))
    deltas = [lp.token for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert deltas == ["a", "b"]
    done = next(e for e in events if e.type == "response.output_text.done")
    assert [lp.token for lp in done.logprobs] == ["a", "b"]
    script.enqueue(["a"])
    assert oai.responses.create(model="tiny", input="x").output[-1].content[0].logprobs == []
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be between 0 and 20"):
        oai.responses.create(model="tiny", input="x", top_logprobs=30)


@pytest.mark.parametrize("body,message", [
    ({"reasoning_effort": "extreme"}, 'invalid reasoning value: "extreme" (must be "minimal", "low", "medium", '
                                      '"high", "xhigh", "ultra", "max", or "none")'),
    ({"reasoning_effort": 'a"b\n'}, 'invalid reasoning value: "a\\"b\\n" (must be "minimal", "low", "medium", '
                                   '"high", "xhigh", "ultra", "max", or "none")'),  # Go's %q
    ({"messages": [{"role": "user", "content": 5}]}, "invalid message content type: float64"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "invalid message format"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "UklGRg=="}]}]},
     "invalid input_audio format"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"format": "wav"}}]}]},
     "invalid input_audio format: missing data"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%"}}]}]},
     "invalid input_audio base64 data: Only base64 data is allowed"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg=="}}]}]},
     "registry.ollama.ai/library/tiny:latest does not support audio"),  # no model here hears
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,abc"}}]}]},
     "invalid image input"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "data:image/gif;base64,R0lGODlh"}}]}]},
     "invalid image input"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%"}}]}]},
     "invalid image input"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]},
     "image URLs are not currently supported, please use base64 encoded data instead"),
])
def test_openai_error_texts_match_ollamas(http, body, message):
    """Ollama's words (openai/openai.go): its effort list, Go's %q, the image types it takes."""
    reply = http.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], **body})
    assert reply.status_code == 400 and reply.get_json()["error"]["message"] == message


def test_stop_entries_that_are_not_strings_are_skipped_by_chat_and_refused_by_completions(http, script):
    assert http.post("/v1/chat/completions", json={"model": "tiny", "stop": ["a", 5],
                                                   "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    assert script.history[-1].options.stop == ["a"]
    reply = http.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stop": ["a", 5]})
    assert reply.status_code == 400
    assert reply.get_json()["error"]["message"] == "invalid type for 'stop' field: float64"


def test_a_null_body_is_asked_for_its_model(http):
    for path in ("/api/chat", "/v1/chat/completions"):
        reply = http.post(path, data="null")
        assert reply.status_code == 400 and "model is required" in reply.get_data(as_text=True)


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh", "ultra", "max", "none"])
def test_every_reasoning_effort_ollama_takes_is_taken(http, effort):
    reply = http.post("/v1/chat/completions", json={"model": "thinker:1b", "reasoning_effort": effort,
                                                    "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 200, reply.get_data(as_text=True)


def test_an_unknown_encoding_format_is_ollamas_400(http):
    reply = http.post("/v1/embeddings", json={"model": "embedder", "input": "x", "encoding_format": "json"})
    assert reply.status_code == 400
    assert reply.get_json()["error"]["message"] == \
        "Invalid value for 'encoding_format' = json. Supported values: ['float', 'base64']."


def test_the_model_routes_answer_plain_application_json_as_ollama(fake_server):
    import requests

    for path in ("/v1/models", "/v1/models/tiny"):
        reply = requests.get(fake_server.url + path, timeout=10)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json", path


def test_an_unknown_reasoning_effort_reaches_the_openai_client_in_ollamas_words(fake_server):
    client = openai.OpenAI(base_url=fake_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match='invalid reasoning value: "turbo" \\(must be "minimal"'):
        client.chat.completions.create(model="tiny", reasoning_effort="turbo",
                                       messages=[{"role": "user", "content": "x"}])


def test_transcriptions_check_the_form_as_ollama_does_and_no_model_here_hears(fake_server, oai, script):
    url = f"{fake_server.url}/v1/audio/transcriptions"
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    for files, data, status, message in [
        (None, None, 400, "failed to parse multipart form: request Content-Type isn't multipart/form-data"),
        ({"file": ("a.wav", wav)}, {}, 400, "model is required"),
        (None, {"model": "tiny"}, 400,  # a form, but not multipart: Go's parser says so too
         "failed to parse multipart form: request Content-Type isn't multipart/form-data"),
        ({"model": (None, "tiny")}, None, 400, "file is required: http: no such file"),
        ({"file": ("a.wav", b"")}, {"model": "tiny"}, 400, "audio file is empty"),
        ({"file": ("a.wav", wav)}, {"model": "nothing"}, 404, None),
        ({"file": ("a.wav", wav)}, {"model": "tiny", "language": "en"}, 400,
         "registry.ollama.ai/library/tiny:latest does not support audio")]:
        reply = requests.post(url, files=files, data=data) if files or data else requests.post(url, json={"x": 1})
        assert reply.status_code == status, reply.text
        assert message is None or reply.json()["error"]["message"] == message
    with pytest.raises(openai.BadRequestError, match="does not support audio"):  # the official client's form
        oai.audio.transcriptions.create(model="tiny", file=("clip.wav", wav))
    assert not script.history  # no engine was asked
