"""Every endpoint, fed systematically wrong shapes on every field: never a 500, never a traceback."""

import json
import random

import pytest

WRONG = [None, True, 0, -1, 1.5, "", "x", [], [1], ["a"], {}, {"a": 1}, [{}], [None], "\u0000", 10**30]

BASES = {
    "/api/generate": {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2},
                      "format": "json", "keep_alive": "1m", "think": False, "system": "s", "raw": False,
                      "images": [], "suffix": "", "context": [1]},
    "/api/chat": {"model": "tiny", "messages": [{"role": "user", "content": "hi", "images": [],
                                                 "tool_calls": [], "tool_name": ""}],
                  "stream": False, "options": {"temperature": 0.1}, "tools": [], "keep_alive": 5},
    "/api/embed": {"model": "tiny", "input": ["a"], "truncate": True, "dimensions": 2, "options": {}},
    "/api/embeddings": {"model": "tiny", "prompt": "a", "options": {}},
    "/api/show": {"model": "tiny", "verbose": False},
    "/api/copy": {"source": "tiny", "destination": "tiny-copy"},
    "/api/pull": {"model": "tiny", "stream": False},
    "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                             "max_tokens": 2, "temperature": 0.5, "top_p": 0.9, "stop": ["x"], "seed": 1,
                             "stream": False, "stream_options": {"include_usage": True},
                             "response_format": {"type": "json_object"}, "tools": [], "tool_choice": "auto",
                             "reasoning_effort": "none", "n": 1, "user": "u"},
    "/v1/completions": {"model": "tiny", "prompt": "hi", "max_tokens": 2, "stream": False, "suffix": ""},
    "/v1/embeddings": {"model": "tiny", "input": "hi", "encoding_format": "float", "dimensions": 2},
}


def mutations():
    rng = random.Random(7)
    for path, base in BASES.items():
        for key in base:
            for wrong in WRONG:
                yield path, {**base, key: wrong}
        nested = [(k, v) for k, v in base.items() if isinstance(v, (dict, list)) and v]
        for key, value in nested:
            for _ in range(6):
                if isinstance(value, dict):
                    inner = dict(value)
                    inner[rng.choice(list(value))] = rng.choice(WRONG)
                else:
                    item = value[0]
                    inner = [{**item, rng.choice(list(item)): rng.choice(WRONG)} if isinstance(item, dict) else rng.choice(WRONG)]
                yield path, {**base, key: inner}


@pytest.mark.parametrize("path", sorted(BASES))
def test_no_malformed_request_is_a_server_error(http, script, path):
    for body_path, body in mutations():
        if body_path != path:
            continue
        reply = http.post(path, data=json.dumps(body), content_type="application/json")
        text = reply.get_data(as_text=True)
        assert reply.status_code < 500, (path, body, reply.status_code, text)
        assert "Traceback" not in text
