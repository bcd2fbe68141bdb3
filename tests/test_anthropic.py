"""Anthropic's Messages API (/v1/messages) through the official `anthropic` client: on the fake
backend for exact shapes (text, thinking, tool use round trip, streaming events, errors), and on
the real CPU model end to end."""

import anthropic
import pytest
import requests

TOOL = {"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>'


@pytest.fixture
def claude(fake_server):
    return anthropic.Anthropic(base_url=fake_server.url, api_key="ignored", max_retries=0)


@pytest.fixture
def tooly(store):
    from helpers import register_fake

    register_fake(store, "tooly", capabilities=["completion", "tools", "thinking"])


def test_a_message_gets_a_text_block_stop_reason_and_usage(claude, script):
    script.enqueue(["Hello", " there"])
    reply = claude.messages.create(model="tiny", max_tokens=64, system="Be brief.",
                                   messages=[{"role": "user", "content": "Say hello"}])
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text == "Hello there"
    assert reply.stop_reason == "end_turn" and reply.model == "tiny"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens == 2
    sent = script.history[-1]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be brief."), ("user", "Say hello")]
    assert sent.options.num_predict == 64


def test_max_tokens_maps_to_max_tokens_stop_reason(claude, script):
    script.enqueue(["a", "b", "c", "d"])
    reply = claude.messages.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 2


def test_a_matched_stop_sequence_is_named_as_anthropic_names_it(claude, script):
    script.enqueue(["one ", "two ", "END", " three"])
    reply = claude.messages.create(model="tiny", max_tokens=64, stop_sequences=["STOP", "END"],
                                   messages=[{"role": "user", "content": "x"}])
    assert reply.content[0].text == "one two "
    assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "END")
    script.enqueue(["one ", "EN", "D!"])
    with claude.messages.stream(model="tiny", max_tokens=64, stop_sequences=["END"],
                                messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, final.content[0].text) == ("stop_sequence", "END", "one ")
    script.enqueue(["no stop here"])
    plain = claude.messages.create(model="tiny", max_tokens=64, stop_sequences=["END"],
                                   messages=[{"role": "user", "content": "x"}])
    assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)


def test_thinking_comes_back_as_a_thinking_block(claude, script, tooly):
    script.enqueue(["<think>plan</think>", "Answer"])
    reply = claude.messages.create(model="tooly", max_tokens=64, thinking={"type": "enabled", "budget_tokens": 1024},
                                   messages=[{"role": "user", "content": "Think"}])
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "plan" and reply.content[1].text == "Answer"
    assert script.history[-1].think is True


def test_tool_use_round_trip(claude, script, tooly):
    script.enqueue([CALL])
    first = claude.messages.create(model="tooly", max_tokens=64, tools=[TOOL],
                                   messages=[{"role": "user", "content": "Weather in Tokyo?"}])
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Tokyo"} and use.id  # Ollama: call_…
    script.enqueue(["It is 18C."])
    second = claude.messages.create(model="tooly", max_tokens=64, tools=[TOOL], messages=[
        {"role": "user", "content": "Weather in Tokyo?"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}])
    assert second.content[0].text == "It is 18C."
    sent = script.history[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls[0]["function"] == {"name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert sent[2].content == "18C" and sent[2].tool_name == "get_weather"
    assert script.history[-1].tools[0]["function"]["parameters"] == TOOL["input_schema"]


def test_streaming_follows_anthropics_event_sequence(claude, script, tooly):
    script.enqueue(["<think>plan</think>", "Hel", "lo", CALL])
    with claude.messages.stream(model="tooly", max_tokens=64, tools=[TOOL],
                                messages=[{"role": "user", "content": "x"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "message_delta" in kinds and kinds.count("content_block_start") == 3
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[1].text == "Hello" and final.content[2].input == {"city": "Tokyo"}
    assert final.stop_reason == "tool_use"


def test_errors_have_anthropics_shape(claude, fake_server):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"
    reply = requests.post(f"{fake_server.url}/v1/messages", json={"model": "tiny", "messages": []})
    assert reply.status_code == 400
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["request_id"].startswith("req_")


def test_a_tool_result_answering_a_non_string_id_is_not_an_internal_error(fake_server, script):
    script.enqueue(["ok"])
    reply = requests.post(f"{fake_server.url}/v1/messages", json={
        "model": "tiny", "max_tokens": 8, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": [], "content": "x"}]}]})
    assert reply.status_code == 200, reply.text


def test_tool_choice_none_hides_the_tools_and_any_requires_a_call(claude, script, tooly):
    script.enqueue(["ok"])
    claude.messages.create(model="tooly", max_tokens=8, tools=[TOOL], tool_choice={"type": "none"},
                           messages=[{"role": "user", "content": "x"}])
    assert script.history[-1].tools == []
    script.enqueue([CALL])
    claude.messages.create(model="tooly", max_tokens=8, tools=[TOOL], tool_choice={"type": "any"},
                           messages=[{"role": "user", "content": "x"}])
    assert script.history[-1].tool_choice == "required"


def test_count_tokens_estimates(claude):
    counted = claude.messages.count_tokens(model="tiny", messages=[{"role": "user", "content": "hello " * 40}])
    assert 40 <= counted.input_tokens <= 80


@pytest.mark.live
def test_claude_clients_get_a_real_answer_from_the_cpu_model(live_daemon):
    client = anthropic.Anthropic(base_url=live_daemon, api_key="ignored", max_retries=0)
    reply = client.messages.create(model="smollm2:135m", max_tokens=48, extra_body={"temperature": 0},
                                   messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "paris" in reply.content[0].text.lower()
    with client.messages.stream(model="smollm2:135m", max_tokens=16, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
    assert text.strip()
