"""The wire types in rkollama/api/types.py describe what the server really writes: every key a
reply carries is declared, and every required key is there (so code typed against them, the
CLI included, reads real replies)."""

import json
import types
import typing

import typing_extensions

from rkollama.api import types as wire


def conforms(obj, kind, where: str = "$") -> list[str]:
    """Problems of `obj` against the TypedDict `kind`, nested TypedDicts and lists included."""
    if not isinstance(obj, dict):
        return [f"{where} is not an object"]
    hints = typing_extensions.get_type_hints(kind)
    problems = [f"{where}.{k} is not declared in {kind.__name__}" for k in obj if k not in hints]
    problems += [f"{where}.{k} is missing" for k in kind.__required_keys__ if k not in obj]
    for key, value in obj.items():
        hint = hints.get(key)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        for inner in typing.get_args(hint) if union else (hint,):
            if typing_extensions.is_typeddict(inner):
                problems += conforms(value, inner, f"{where}.{key}")
            elif typing.get_origin(inner) is list and typing.get_args(inner) \
                    and typing_extensions.is_typeddict(typing.get_args(inner)[0]):
                for index, item in enumerate(value):
                    problems += conforms(item, typing.get_args(inner)[0], f"{where}.{key}[{index}]")
    return problems


def ndjson(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_chat_and_generate_replies_match_their_types(http, script, store):
    from helpers import register_fake

    register_fake(store, "agent", capabilities=["completion", "tools"])
    script.enqueue(["<think>hm</think>", "Hi"])
    script.enqueue(['<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'])
    script.enqueue(["Hello"])
    script.enqueue(["Hello"])
    replies = ndjson(http.post("/api/chat", json={"model": "thinker:1b", "think": True,
                                                  "messages": [{"role": "user", "content": "x"}]}))
    replies += [http.post("/api/chat", json={"model": "agent", "stream": False, "tools": TOOLS,
                                             "messages": [{"role": "user", "content": "x"}]}).get_json()]
    assert replies[-1]["message"]["tool_calls"]  # the call is part of what is checked
    generated = ndjson(http.post("/api/generate", json={"model": "tiny", "prompt": "x"}))
    generated += [http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}).get_json()]
    problems = [p for r in replies for p in conforms(r, wire.ChatResponse)]
    problems += [p for r in generated for p in conforms(r, wire.GenerateResponse)]
    assert problems == []


def test_model_listings_and_show_match_their_types(http, script):
    script.enqueue(["x"])
    http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    tags = http.get("/api/tags").get_json()["models"]
    ps = http.get("/api/ps").get_json()["models"]
    show = http.post("/api/show", json={"model": "tiny"}).get_json()
    assert tags and ps
    problems = [p for m in tags for p in conforms(m, wire.ListModel)]
    problems += [p for m in ps for p in conforms(m, wire.ProcessModel)]
    problems += conforms(show, wire.ShowResponse)
    assert problems == []


def test_embed_and_progress_replies_match_their_types(http, store):
    embed = http.post("/api/embed", json={"model": "embedder", "input": ["a b"]}).get_json()
    created = ndjson(http.post("/api/create", json={"model": "copy-of-tiny", "from": "tiny"}))
    problems = conforms(embed, wire.EmbedResponse)
    problems += [p for line in created for p in conforms(line, wire.ProgressResponse)]
    problems += conforms(http.post("/api/show", json={"model": "nope"}).get_json(), wire.ErrorResponse)
    assert created[-1] == {"status": "success"} and problems == []
