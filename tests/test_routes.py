"""Native API routes on the scripted fake backend: exact shapes, idioms and errors."""

import json
import re

import pytest
import requests

NS_FIELDS = ("total_duration", "load_duration")


def lines(response):
    assert response.content_type == "application/x-ndjson"
    body = response.get_data(as_text=True)
    assert body.endswith("\n") and "\n\n" not in body
    return [json.loads(line) for line in body.splitlines()]


def normalise(obj):
    """Replace the values that vary run to run (timestamps, wall-clock durations)."""
    obj = dict(obj)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", obj.pop("created_at"))
    for key in NS_FIELDS:
        if key in obj:
            assert isinstance(obj[key], int) and obj[key] >= 0
            obj[key] = "<ns>"
    return obj


def test_chat_streams_ndjson_by_default_with_role_on_every_object(http, script):
    script.enqueue(["Hel", "lo", "!"])
    response = http.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "say hi"}]})
    assert response.status_code == 200
    assert [normalise(line) for line in lines(response)] == [
        {"model": "tiny", "message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"model": "tiny", "message": {"role": "assistant", "content": "lo"}, "done": False},
        {"model": "tiny", "message": {"role": "assistant", "content": "!"}, "done": False},
        {"model": "tiny", "message": {"role": "assistant", "content": ""}, "done": True,
         "done_reason": "stop", "total_duration": "<ns>",
         "prompt_eval_count": 2, "prompt_eval_duration": 2_000_000, "eval_count": 3,
         "eval_duration": 30_000_000},
    ]


def test_chat_without_stream_returns_one_object_with_the_whole_answer(http, script):
    script.enqueue(["Hel", "lo", "!"])
    response = http.post("/api/chat", json={"model": "tiny", "stream": False,
                                            "messages": [{"role": "user", "content": "say hi"}]})
    assert response.content_type == "application/json; charset=utf-8"
    assert normalise(response.get_json()) == {
        "model": "tiny", "message": {"role": "assistant", "content": "Hello!"}, "done": True,
        "done_reason": "stop", "total_duration": "<ns>",
        "prompt_eval_count": 2, "prompt_eval_duration": 2_000_000, "eval_count": 3,
        "eval_duration": 30_000_000}


def test_generate_streams_response_fields_and_final_metrics(http, script):
    script.enqueue(["The", " sky"])
    response = http.post("/api/generate", json={"model": "tiny", "prompt": "why blue"})
    got = [normalise(line) for line in lines(response)]
    assert got[:2] == [{"model": "tiny", "response": "The", "done": False},
                       {"model": "tiny", "response": " sky", "done": False}]
    assert got[2]["done"] is True and got[2]["response"] == "" and got[2]["done_reason"] == "stop"
    assert got[2]["eval_count"] == 2


def test_generate_non_streaming_concatenates(http, script):
    script.enqueue(["a", "b", "c"])
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}).get_json()
    assert reply["response"] == "abc" and reply["done"] is True and reply["eval_count"] == 3


def test_thinking_tokens_go_to_the_thinking_field(http, script):
    script.enqueue(["<think>hmm</think>", "Yes"])
    got = lines(http.post("/api/chat", json={"model": "thinker:1b", "messages": [{"role": "user", "content": "q"}]}))
    assert got[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}
    assert got[1]["message"] == {"role": "assistant", "content": "Yes"}


def test_model_is_echoed_as_sent(http, script):
    reply = http.post("/api/generate", json={"model": "TINY:latest", "prompt": "x", "stream": False})
    assert reply.status_code == 200 and reply.get_json()["model"] == "TINY:latest"


def test_empty_messages_load_the_model(http, scheduler):
    reply = http.post("/api/chat", json={"model": "tiny", "messages": []})
    assert reply.content_type == "application/json; charset=utf-8"
    body = normalise(reply.get_json())
    assert body == {"model": "tiny", "message": {"role": "assistant", "content": ""}, "done": True,
                    "done_reason": "load"}
    assert [m.spec.name.display() for m in scheduler.ps()] == ["tiny:latest"]


def test_empty_prompt_with_keep_alive_zero_unloads(http, scheduler):
    http.post("/api/generate", json={"model": "tiny"})
    assert scheduler.ps()
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": 0}).get_json()
    assert reply["done_reason"] == "unload" and reply["response"] == ""
    assert scheduler.ps() == []


def test_unload_of_a_missing_model_is_404(http):
    reply = http.post("/api/generate", json={"model": "nope", "keep_alive": 0})
    assert reply.status_code == 404 and reply.get_json() == {"error": "model 'nope' not found"}


@pytest.mark.parametrize("keep_alive", [0, 0.0, "0", "0s"])
def test_keep_alive_zero_with_a_prompt_answers_then_unloads(http, scheduler, keep_alive):
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                             "keep_alive": keep_alive})
    assert reply.status_code == 200 and reply.get_json()["response"] == "hi"
    assert scheduler.ps() == []


def test_ps_reports_expiry_of_the_keep_alive(http, clock):
    http.post("/api/generate", json={"model": "tiny", "keep_alive": "10m"})
    (model,) = http.get("/api/ps").get_json()["models"]
    assert model["name"] == model["model"] == "tiny:latest"
    assert model["size_vram"] == 0 and isinstance(model["context_length"], int)
    assert re.search(r"[+-]\d\d:\d\d$|Z$", model["expires_at"])


def test_mid_stream_failure_ends_with_an_error_line(http, script):
    script.enqueue(["one", "two", "three"])
    script.fail_at_token = 2
    got = lines(http.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]}))
    assert [line.get("message", {}).get("content") for line in got[:2]] == ["one", "two"]
    assert got[-1] == {"error": "scripted failure"}


def test_failure_before_the_first_token_is_a_status_code(http, script):
    script.enqueue(["one"])
    script.fail_at_token = 0
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert reply.status_code == 500 and reply.get_json() == {"error": "scripted failure"}


def test_load_failure_is_a_500_with_the_message(http, script):
    script.fail_on_load = "out of memory"
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert reply.status_code == 500 and reply.get_json() == {"error": "out of memory"}


def test_options_precedence_and_unknown_options_ignored(http, script):
    http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                     "options": {"top_k": 7, "mirostat": 2, "tfs_z": 1.0, "low_vram": True,
                                                 "num_predict": 5.0}})
    options = script.history[-1].options
    assert options.temperature == 0.5  # from the Modelfile
    assert options.top_k == 7 and options.num_predict == 5  # request wins; float truncated
    assert options.top_p == 0.9  # Ollama's built-in default


def test_num_predict_ends_with_length(http, script):
    script.enqueue(["a", "b", "c", "d"])
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                             "options": {"num_predict": 2}}).get_json()
    assert reply["response"] == "ab" and reply["done_reason"] == "length"


def test_stop_sequences_are_cut_and_never_emitted(http, script):
    script.enqueue(["Hello", " wor", "ld", "<|e", "nd|>", "after"])
    reply = http.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                             "options": {"stop": ["<|end|>"]}}).get_json()
    assert reply["response"] == "Hello world" and reply["done_reason"] == "stop"


def test_modelfile_system_prompt_is_prepended_unless_the_request_has_one(http, script, store):
    from helpers import register_fake

    register_fake(store, "sys", system="You are terse.")
    http.post("/api/chat", json={"model": "sys", "stream": False, "messages": [{"role": "user", "content": "a"}]})
    assert [(m.role, m.content) for m in script.history[-1].messages] == [("system", "You are terse."), ("user", "a")]
    http.post("/api/chat", json={"model": "sys", "stream": False, "messages": [
        {"role": "system", "content": "Mine"}, {"role": "user", "content": "b"}]})
    assert [(m.role, m.content) for m in script.history[-1].messages] == [("system", "Mine"), ("user", "b")]


def test_thinking_model_thinks_by_default(http, script):
    http.post("/api/chat", json={"model": "thinker:1b", "stream": False, "messages": [{"role": "user", "content": "q"}]})
    assert script.history[-1].think is True
    http.post("/api/chat", json={"model": "thinker:1b", "stream": False, "think": False,
                                 "messages": [{"role": "user", "content": "q"}]})
    assert script.history[-1].think is False


def test_liveness_and_version(http):
    root = http.get("/")
    assert root.status_code == 200 and root.get_data(as_text=True) == "Ollama is running"
    assert http.head("/").status_code == 200
    version = http.get("/api/version").get_json()["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_tags_lists_every_model_with_name_and_model(http):
    models = http.get("/api/tags").get_json()["models"]
    names = {m["name"] for m in models}
    assert names == {"tiny:latest", "thinker:1b", "embedder:latest", "other:7b"}
    for m in models:
        assert m["model"] == m["name"] and len(m["digest"]) == 64 and isinstance(m["size"], int)
        assert isinstance(m["details"]["families"], list) and "modified_at" in m


def test_show_has_model_info_details_and_capabilities(http):
    body = http.post("/api/show", json={"model": "thinker:1b"}).get_json()
    assert body["model_info"] == {}  # present even when empty: clients index it
    assert body["capabilities"] == ["completion", "thinking"]
    assert "details" in body and "modified_at" in body and body["modelfile"].startswith("#")


def test_show_parameters_use_ollama_layout(http):
    body = http.post("/api/show", json={"name": "tiny"}).get_json()
    assert body["parameters"] == "temperature                    0.5"


def test_copy_then_delete(http):
    assert http.post("/api/copy", json={"source": "tiny", "destination": "mine/copy:v1"}).status_code == 200
    names = {m["name"] for m in http.get("/api/tags").get_json()["models"]}
    assert "mine/copy:v1" in names
    reply = http.delete("/api/delete", json={"model": "mine/copy:v1"})
    assert reply.status_code == 200 and reply.get_data() == b""
    names = {m["name"] for m in http.get("/api/tags").get_json()["models"]}
    assert "mine/copy:v1" not in names and "tiny:latest" in names


def test_delete_unloads_a_loaded_model(http, scheduler):
    http.post("/api/generate", json={"model": "other:7b"})
    assert scheduler.ps()
    assert http.delete("/api/delete", json={"model": "other:7b"}).status_code == 200
    assert scheduler.ps() == []


# -- bad input: always the documented status and {"error": …}, never a 500 -------------------
BAD = [
    ("/api/chat", None, 400, "missing request body"),
    ("/api/generate", b"{not json", 400, None),
    ("/api/chat", b"[1, 2]", 400, None),
    ("/api/chat", {"model": "tiny", "stream": "yes", "messages": []}, 400,
     "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"),
    ("/api/chat", {"model": "tiny", "messages": "hi"}, 400, None),
    ("/api/chat", {"model": "tiny", "messages": [42]}, 400, None),
    ("/api/chat", {"model": "tiny", "messages": [{"content": "no role"}]}, 400, None),
    ("/api/generate", {"model": 7, "prompt": "x"}, 400, None),
    ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),  # Ollama's generate handler
    ("/api/generate", {"model": None, "prompt": "x"}, 404, "model '' not found"),
    ("/api/chat", {"messages": []}, 400, "model is required"),  # and its chat handler
    ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
    ("/api/chat", {"model": "../../etc/passwd", "messages": []}, 400, "invalid model name"),
    ("/api/generate", {"model": "a/b/c/d", "prompt": "x"}, 400, "invalid model name"),
    ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"temperature": "hot"}}, 400,
     'option "temperature" must be of type number'),
    ("/api/generate", {"model": "tiny", "prompt": "x", "options": []}, 400, None),
    ("/api/generate", {"model": "tiny", "prompt": "x", "keep_alive": "forever"}, 400, None),
    ("/api/generate", {"model": "tiny", "prompt": "x", "keep_alive": True}, 400, None),
    ("/api/chat", {"model": "tiny", "messages": [], "keep_alive": "9999999999999999h"}, 400,
     'time: invalid duration "9999999999999999h"'),  # Go's ParseDuration: past time.Duration
    ("/api/generate", b'{"model": "tiny", "prompt": "x", "keep_alive": 1e400}', 400, None),  # past float64
    ("/api/generate", {"model": "tiny", "prompt": "x", "format": "xml"}, 400, None),
    ("/api/generate", {"model": "tiny", "prompt": "x", "think": "very"}, 400, None),
    ("/api/generate", {"model": "tiny", "prompt": "x", "think": True}, 400, '"tiny" does not support thinking'),
    ("/api/generate", {"model": "embedder", "prompt": "x"}, 400, '"embedder" does not support generate'),
    ("/api/chat", {"model": "embedder", "messages": [{"role": "user", "content": "x"}]}, 400,
     '"embedder" does not support chat'),
    ("/api/generate", {"model": "tiny", "prompt": "x", "raw": True, "system": "s"}, 400,
     "raw mode does not support template, system, or context"),
    ("/api/generate", {"model": "tiny", "prompt": "x", "images": ["%%%"]}, 400, None),
    ("/api/show", {}, 400, "model is required"),
    ("/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("/api/show", {"model": "Some/Nope:7B"}, 404, "model 'Some/Nope:7B' not found"),
    ("/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
    ("/api/copy", {"source": "tiny"}, 400, None),
    ("/api/copy", {"source": "tiny", "destination": "bad name"}, 400, "invalid model name"),
    ("/api/pull", {"model": "no-such-model"}, 404, None),
]


@pytest.mark.parametrize("path,body,status,message", BAD)
def test_bad_input_gets_a_clear_error(http, path, body, status, message):
    if body is None or isinstance(body, bytes):
        reply = http.post(path, data=body or b"", content_type="application/json")
    else:
        reply = http.post(path, json=body)
    assert reply.status_code == status
    error = reply.get_json()["error"]
    assert isinstance(error, str) and error
    if message:
        assert error == message


def test_delete_unknown_model_is_404(http):
    reply = http.delete("/api/delete", json={"model": "nope"})
    assert reply.status_code == 404 and reply.get_json() == {"error": "model 'nope' not found"}


def test_unknown_path_and_wrong_method_are_plain_text(http):
    missing = http.get("/api/nothing")
    assert missing.status_code == 404 and missing.get_data(as_text=True) == "404 page not found"
    wrong = http.get("/api/chat")
    assert wrong.status_code == 405 and wrong.get_data(as_text=True) == "405 method not allowed"


def test_unknown_request_fields_and_field_case_are_tolerated(http, script):
    reply = http.post("/api/generate", json={"Model": "tiny", "PROMPT": "a b", "Stream": False, "extra": 1})
    assert reply.status_code == 200 and reply.get_json()["response"] == "a b"


def test_dns_rebinding_guard_rejects_foreign_host_headers(http):
    assert http.get("/api/tags", headers={"Host": "evil.example.com"}).status_code == 403
    assert http.get("/api/tags", headers={"Host": "localhost:11434"}).status_code == 200


def test_cors_allows_local_origins(http):
    reply = http.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Access-Control-Allow-Origin" not in http.get("/api/tags", headers={"Origin": "https://evil.example"}).headers


def test_dns_rebinding_guard_understands_ipv6_hosts(http):
    assert http.get("/api/tags", headers={"Host": "[::1]:11434"}).status_code == 200


def test_shutdown_stops_a_running_generation(scheduler, store, script):
    from rkollama.core.types import DoneReason, Generation, LoadOptions, Message

    script.enqueue([f"t{i}" for i in range(100000)])
    script.hold_after = 0
    stream = scheduler.submit(store.resolve("tiny"), Generation(messages=[Message("user", "x")]), LoadOptions())
    next(stream)
    scheduler.shutdown()  # would hang if it waited for 100000 tokens
    assert script.finished[-1][0] is DoneReason.CANCELLED
    assert scheduler.ps() == []


def test_generate_returns_context_and_accepts_it_to_continue(http, script):
    first = http.post("/api/generate", json={"model": "tiny", "prompt": "one two", "stream": False}).get_json()
    assert isinstance(first["context"], list) and first["context"]
    keys = list(first)
    assert keys.index("done_reason") < keys.index("context") < keys.index("total_duration")
    http.post("/api/generate", json={"model": "tiny", "prompt": "three", "stream": False,
                                     "context": first["context"]})
    assert script.history[-1].context == first["context"]
    raw = http.post("/api/generate", json={"model": "tiny", "prompt": "x", "raw": True, "stream": False}).get_json()
    assert "context" not in raw
    bad = http.post("/api/generate", json={"model": "tiny", "prompt": "x", "context": ["a"]})
    assert bad.status_code == 400


def test_debug_render_only_returns_the_rendered_prompt_without_generating(http, script):
    reply = http.post("/api/chat", json={"model": "tiny", "_debug_render_only": True,
                                         "messages": [{"role": "user", "content": "hello"}]}).get_json()
    assert reply["_debug_info"] == {"rendered_template": "<user>hello\n<assistant>", "image_count": 0}
    assert reply["done"] is False and reply["message"] == {"role": "", "content": ""}
    generated = http.post("/api/generate", json={"model": "tiny", "prompt": "hi", "raw": True,
                                                 "_debug_render_only": True}).get_json()
    assert generated["_debug_info"]["rendered_template"] == "hi" and generated["response"] == ""
    assert script.history == []  # nothing ran


@pytest.mark.parametrize("path,body", [
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
    ("/api/generate", {"prompt": "x"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})])
def test_top_logprobs_outside_0_to_20_is_a_400(http, path, body):
    reply = http.post(path, json={"model": "tiny", "stream": False, "logprobs": True, "top_logprobs": 21, **body})
    assert reply.status_code == 400 and "top_logprobs must be between 0 and 20" in reply.get_data(as_text=True)
    ok = http.post(path, json={"model": "tiny", "stream": False, "logprobs": True, "top_logprobs": 5, **body})
    assert ok.status_code == 200


def test_context_survives_stop_sequences_and_tool_call_parsing(http, script):
    stopped = http.post("/api/generate", json={"model": "tiny", "prompt": "one two three", "stream": False,
                                               "options": {"stop": ["two"]}}).get_json()
    assert stopped["response"] == "one " and stopped["context"]


def test_logprobs_come_back_per_token_in_ollamas_shape(fake_server, script):
    import ollama

    script.enqueue(["Hel", "lo"])
    reply = ollama.Client(host=fake_server.url).chat(
        model="tiny", messages=[{"role": "user", "content": "x"}], logprobs=True, top_logprobs=2)
    assert [lp.token for lp in reply.logprobs] == ["Hel", "lo"]
    assert reply.logprobs[0].logprob == pytest.approx(-0.1)
    script.enqueue(["Hé"])
    raw = requests.post(f"{fake_server.url}/api/chat", json={
        "model": "tiny", "stream": False, "logprobs": True,
        "messages": [{"role": "user", "content": "x"}]}).json()
    assert raw["logprobs"] == [{"token": "Hé", "logprob": -0.1, "bytes": list("Hé".encode())}]
    # Go writes a ChatResponse's fields in their declared order: logprobs after done_reason.
    assert list(raw)[:6] == ["model", "created_at", "message", "done", "done_reason", "logprobs"]
    assert [t.token for t in reply.logprobs[1].top_logprobs] == ["alt0", "alt1"]
    script.enqueue(["a", "b"])
    parts = list(ollama.Client(host=fake_server.url).generate(model="tiny", prompt="x", stream=True,
                                                               logprobs=True))
    assert [lp.token for p in parts for lp in (p.logprobs or [])] == ["a", "b"]
    plain = ollama.Client(host=fake_server.url).generate(model="tiny", prompt="x")
    assert not plain.logprobs


def test_a_format_the_engine_cannot_enforce_loads_the_model_once(http, script):
    # The engine's class says it cannot constrain output before anything is loaded: no detour
    # through a stream opened only to ask (which, with keep_alive 0, loaded the model twice).
    script.enqueue(['{"ok": true}'])
    reply = http.post("/api/chat", json={"model": "tiny", "stream": False, "format": "json", "keep_alive": 0,
                                         "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 200 and reply.get_json()["message"]["content"] == '{"ok": true}'
    assert len(script.loads) == 1


@pytest.mark.parametrize("fmt,fault", [
    ({"properties": None}, "format.properties must be an object"),
    ({"type": "object", "properties": {"a": {"enum": 5}}}, "format.properties.a.enum must be a list"),
    ({"required": "a"}, "format.required must be a list of strings"),
    ({"anyOf": []}, "format.anyOf must be a non-empty list"),
    ({"type": 7}, "format.type must be a string or a list of strings"),
    ({"items": "x"}, "format.items must be an object"),
    ({"type": "integer", "minimum": "x"}, "format.minimum: 'x' is not of type 'number'"),
    ({"type": "string", "pattern": "(["}, "format.pattern: '([' is not a 'regex'"),
    ({"$ref": "https://example.com/schema.json"}, "format: $ref 'https://example.com/schema.json' does not point inside the schema"),
    ({"$ref": "#"}, "format: $ref '#' refers back to itself without reaching a value"),
    ({"$schema": {}, "type": "string"}, "format.$schema must be a string"),
    ({"$dynamicRef": "#/$defs/nowhere"}, "format: $dynamicRef '#/$defs/nowhere' does not point inside the schema"),
    ({"properties": {"const": {"$ref": "#/nowhere"}}}, "format: $ref '#/nowhere' does not point inside the schema"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
     "format: $ref '#/$defs/a' refers back to itself without reaching a value"),
    ({"$defs": {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(40)} | {"d40": {"type": "string"}},
      "$ref": "#/$defs/d0"}, "format: more than 32 references and combinators apply to one value"),
    ({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False},
     "format: unevaluatedProperties together with patternProperties is not supported"),
])
def test_a_malformed_schema_in_format_is_a_400_naming_the_keyword(http, script, fmt, fault):
    for path, body in (("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
                       ("/api/generate", {"prompt": "x"})):
        reply = http.post(path, json={"model": "tiny", "stream": False, "format": fmt, **body})
        assert (reply.status_code, reply.get_json()) == (400, {"error": f"invalid JSON schema in format: {fault}"})
    ok = http.post("/api/chat", json={"model": "tiny", "stream": False, "messages": [{"role": "user", "content": "x"}],
                                      "format": {"type": "object", "properties": {"a": True}, "items": False}})
    assert ok.status_code == 200


def test_show_and_tags_speak_ollamas_words(http, store):
    from helpers import register_fake

    register_fake(store, "headed", model_info={"general.name": "SmolLM2", "general.architecture": "llama",
                                               "tokenizer.chat_template": "{{ x }}",
                                               "llama.context_length": 8192, "llama.embedding_length": 576})
    shown = http.post("/api/show", json={"model": "headed"}).get_json()
    assert shown["modelfile"].startswith('# Modelfile generated by "ollama show"\n')
    assert shown["model_info"] == {"general.architecture": "llama", "llama.context_length": 8192,
                                   "llama.embedding_length": 576}
    tags = {m["name"]: m for m in http.get("/api/tags").get_json()["models"]}
    details = tags["headed:latest"]["details"]
    assert (details["context_length"], details["embedding_length"]) == (8192, 576)


def test_ollamas_not_found_words_reach_the_ollama_client(fake_server):
    import ollama

    client = ollama.Client(host=fake_server.url)
    with pytest.raises(ollama.ResponseError) as shown:
        client.show("no-such-model")
    assert (shown.value.status_code, shown.value.error) == (404, "model 'no-such-model:latest' not found")
    import requests  # the ollama client itself refuses an empty model name before sending

    generated = requests.post(f"{fake_server.url}/api/generate", json={"prompt": "x"}, timeout=10)
    assert (generated.status_code, generated.json()) == (404, {"error": "model '' not found"})


@pytest.mark.parametrize("path,method,body,shape", [
    ("/api/tags", "GET", None, lambda j: j == {"error": "internal error"}),
    ("/v1/models", "GET", None, lambda j: j["error"]["message"] == "internal error"
     and j["error"]["type"] == "api_error"),
    ("/v1/messages", "POST", {"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     lambda j: j["type"] == "error" and j["error"]["message"] == "internal error"),
])
def test_an_unexpected_error_answers_in_the_routes_dialect_without_internals(fake_server, app, monkeypatch,
                                                                           caplog, path, method, body, shape):
    import requests

    deps = app.config["RKOLLAMA"]

    def broken(*_args, **_kwargs):
        raise ValueError("secret detail of the daemon")

    monkeypatch.setattr(deps.store, "list", broken)
    monkeypatch.setattr(deps.store, "resolve", broken)
    reply = requests.request(method, fake_server.url + path, json=body, timeout=10)
    assert reply.status_code == 500
    assert shape(reply.json()), reply.text
    assert "secret" not in reply.text and "ValueError" not in reply.text
    assert "secret detail of the daemon" in caplog.text  # the operator still learns what happened
