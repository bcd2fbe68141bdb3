"""Off the happy path, through real HTTP on Waitress with the scripted engine: hostile options,
web pages, malformed bodies, abandoned requests, a full queue, a damaged store."""

import json
import socket
import threading
import time

import openai
import pytest
import requests
from helpers import ThreadServer, register_fake

from rkollama.backends.fake import factory
from rkollama.config import Settings
from rkollama.core.types import DoneReason
from rkollama.models.catalog import Catalog
from rkollama.models.store import ModelStore
from rkollama.scheduler import Scheduler
from rkollama.server.app import create_app


def serve(tmp_path, script, **overrides):
    settings = Settings.from_env({}, models=tmp_path / "models", **overrides)
    store = ModelStore(settings.models)
    register_fake(store, "tiny")
    scheduler = Scheduler(settings, backend_factory=factory(script))
    server = ThreadServer(create_app(settings, scheduler, store, Catalog(), "cpu"))
    return server, scheduler


@pytest.fixture
def daemon(tmp_path, script):
    server, scheduler = serve(tmp_path, script)
    yield server.url
    server.close()
    scheduler.shutdown()


def chat(url, options=None, **body):
    body = {"model": "tiny", "stream": False, "messages": [{"role": "user", "content": "hi there"}],
            **body}
    if options is not None:
        body["options"] = options
    return requests.post(f"{url}/api/chat", json=body, timeout=10)


@pytest.mark.parametrize("options,needle", [
    ({"num_thread": 1_000_000}, "num_thread"), ({"num_batch": -1}, "num_batch"),
    ({"num_ctx": -1}, "num_ctx"), ({"num_batch": 10**9}, "num_batch"),
    ({"top_p": 2}, "top_p"), ({"seed": 2**70}, "seed"), ({"num_predict": -3}, "num_predict"),
    ({"stop": ["x"] * 1000}, "stop"), ({"temperature": "hot"}, "temperature"),
])
def test_out_of_range_options_are_refused_with_400_before_any_engine_work(daemon, script, options, needle):
    reply = chat(daemon, options)
    assert reply.status_code == 400 and needle in reply.json()["error"]
    assert script.loads == [] and script.history == []
    assert chat(daemon).status_code == 200  # and the daemon serves the next request


def test_out_of_range_openai_fields_are_openai_errors(daemon):
    client = openai.OpenAI(base_url=f"{daemon}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                       temperature=-1)
    assert "temperature" in error.value.body["message"]


def test_a_num_thread_up_to_the_machine_cores_is_accepted(daemon, script):
    assert chat(daemon, {"num_thread": 1}).status_code == 200
    assert script.loads[-1][1].num_thread == 1


def test_a_request_without_load_options_runs_at_the_defaults_not_the_last_requests(daemon, script):
    assert requests.post(f"{daemon}/api/embed", json={"model": "tiny", "input": "x",
                                                     "options": {"num_ctx": 10}}).status_code == 200
    assert chat(daemon).status_code == 200
    assert [opts.num_ctx for _, opts in script.loads] == [10, None]


def test_a_tiny_num_ctx_gets_ollamas_floor(daemon, script):
    assert chat(daemon, {"num_ctx": 1}).status_code == 200
    assert script.loads[-1][1].num_ctx == 4


def test_a_cross_origin_simple_request_from_a_web_page_is_refused(daemon, script):
    reply = requests.post(f"{daemon}/api/chat", timeout=5,
                          data=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}]}),
                          headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert reply.status_code == 403 and reply.json() == {"error": "forbidden"}
    for method, path in (("GET", "/api/tags"), ("DELETE", "/api/delete"), ("POST", "/api/copy")):
        assert requests.request(method, f"{daemon}{path}", timeout=5,
                                headers={"Origin": "http://attacker.test"}).status_code == 403
    assert script.history == [] and script.loads == []


def test_local_origins_and_configured_origins_are_allowed(tmp_path, script):
    server, scheduler = serve(tmp_path, script, origins="https://webui.example")
    try:
        for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "https://webui.example"):
            reply = requests.get(f"{server.url}/api/tags", headers={"Origin": origin}, timeout=5)
            assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"] == origin
    finally:
        server.close()
        scheduler.shutdown()


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_lone_surrogate_in_a_message_is_not_a_server_error(daemon, path):
    body = ('{"model": "tiny", "stream": false, "messages": [{"role": "system", "content": "s\\ud800"},'
            ' {"role": "user", "content": "a \\udfff b"}]}')
    reply = requests.post(f"{daemon}{path}", data=body, timeout=10)
    assert reply.status_code == 200
    text = reply.json()["message"]["content"] if path == "/api/chat" else \
        reply.json()["choices"][0]["message"]["content"]
    assert text == "a \ufffd b"


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/v1/chat/completions", "/api/show"])
def test_ten_thousand_levels_of_nesting_are_a_400(daemon, path):
    body = '{"model": "tiny", "options": ' + "[" * 10000 + "]" * 10000 + "}"
    reply = requests.post(f"{daemon}{path}", data=body, timeout=10)
    assert reply.status_code == 400 and "nested" in reply.text


def test_a_huge_keep_alive_means_forever_and_ps_keeps_working(daemon):
    assert chat(daemon, keep_alive=1e12).status_code == 200
    reply = requests.get(f"{daemon}/api/ps", timeout=5)
    assert reply.status_code == 200
    assert int(reply.json()["models"][0]["expires_at"][:4]) > 2300  # "forever": 292 years on


@pytest.mark.parametrize("path", ["/nope", "/api//tags", "/api/", "/v1/nope", "/api/chat/"])
def test_unknown_routes_answer_a_plain_404(daemon, path):
    reply = requests.get(f"{daemon}{path}", timeout=5, allow_redirects=False)
    assert reply.status_code == 404 and reply.text == "404 page not found"
    assert reply.headers["Content-Type"].startswith("text/plain")


def test_a_body_over_the_limit_is_refused_in_each_dialect(tmp_path, script):
    server, scheduler = serve(tmp_path, script, max_body_bytes=10_000)
    try:
        big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 20_000}]}
        native = requests.post(f"{server.url}/api/chat", json=big, timeout=10)
        assert native.status_code == 413 and "too large" in native.json()["error"]
        oai = requests.post(f"{server.url}/v1/chat/completions", json=big, timeout=10)
        assert oai.status_code == 413 and "too large" in oai.json()["error"]["message"]
        assert script.history == []
    finally:
        server.close()
        scheduler.shutdown()


def _held(script):
    script.hold_after = 0
    script.release.clear()


def test_the_queue_limit_answers_503_with_ollamas_text(tmp_path, script):
    _held(script)
    server, scheduler = serve(tmp_path, script, max_queue=2)
    replies = []

    def one():
        replies.append(chat(server.url))

    threads = [threading.Thread(target=one) for _ in range(6)]
    try:
        threads[0].start()
        while not script.history:  # the first one generates (held) before the others arrive
            time.sleep(0.02)
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 5
        while len(replies) < 3 and time.monotonic() < deadline:  # 1 running + 2 queued
            time.sleep(0.05)
        refused = [r for r in replies if r.status_code == 503]
        assert len(refused) == 3
        assert refused[0].json()["error"] == \
            "server busy, please try again.  maximum pending requests exceeded"
        script.release.set()
        for thread in threads:
            thread.join(10)
        assert sorted(r.status_code for r in replies) == [200, 200, 200, 503, 503, 503]
    finally:
        script.release.set()
        server.close()
        scheduler.shutdown()


def test_control_routes_answer_while_many_requests_wait(tmp_path, script):
    _held(script)
    server, scheduler = serve(tmp_path, script)
    threads = [threading.Thread(target=chat, args=(server.url,), kwargs={"stream": True})
               for _ in range(40)]
    try:
        for thread in threads:
            thread.start()
        while len(script.history) < 1:
            time.sleep(0.02)
        time.sleep(0.3)  # all 40 are in: one generating, 39 queued, each holding a thread
        for path in ("/", "/api/tags", "/api/ps", "/api/version"):
            started = time.monotonic()
            assert requests.get(f"{server.url}{path}", timeout=5).status_code == 200
            assert time.monotonic() - started < 2.0  # not behind the 40 (they never finish)
    finally:
        script.release.set()
        for thread in threads:
            thread.join(10)
        server.close()
        scheduler.shutdown()


def _raw_request(url: str, body: dict) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return sock


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_has_its_generation_cancelled(daemon, script, stream):
    _held(script)
    sock = _raw_request(daemon, {"model": "tiny", "stream": stream,
                                 "messages": [{"role": "user", "content": "one two three"}]})
    deadline = time.monotonic() + 5
    while not script.history and time.monotonic() < deadline:
        time.sleep(0.02)
    assert script.history, "the generation did not start"
    sock.close()
    while not script.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert script.finished and script.finished[0][0] is DoneReason.CANCELLED
    script.release.set()
    assert chat(daemon).status_code == 200  # the model is free for the next user


def test_a_client_that_leaves_while_queued_never_runs(daemon, script):
    _held(script)
    first = _raw_request(daemon, {"model": "tiny", "messages": [{"role": "user", "content": "a b"}]})
    while not script.history:
        time.sleep(0.02)
    queued = _raw_request(daemon, {"model": "tiny", "messages": [{"role": "user", "content": "queued"}]})
    time.sleep(0.3)
    queued.close()
    time.sleep(0.3)
    first.close()
    script.release.set()
    time.sleep(0.3)
    assert [g.messages[-1].content for g in script.history] == ["a b"]


# -- the store -------------------------------------------------------------------------------------
@pytest.fixture
def store_daemon(tmp_path, script):
    server, scheduler = serve(tmp_path, script)
    yield server.url, ModelStore(tmp_path / "models")
    server.close()
    scheduler.shutdown()


def test_a_corrupt_manifest_is_reported_and_can_still_be_removed(store_daemon):
    url, store = store_daemon
    register_fake(store, "broken")
    manifest = next(p for p in store.manifests.rglob("*") if p.is_file() and p.parent.name == "broken")
    manifest.write_text("{not json")
    shown = requests.post(f"{url}/api/show", json={"model": "broken"}, timeout=5)
    assert "damaged" in shown.json()["error"] and "Traceback" not in shown.text
    assert [m["name"] for m in requests.get(f"{url}/api/tags").json()["models"]] == ["tiny:latest"]
    assert requests.delete(f"{url}/api/delete", json={"model": "broken"}, timeout=5).status_code == 200
    assert not manifest.exists()


def test_copy_onto_an_existing_name_replaces_it_but_a_name_differing_in_case_is_taken(store_daemon):
    url, store = store_daemon
    register_fake(store, "other")
    assert requests.post(f"{url}/api/copy", json={"source": "tiny", "destination": "other"}).status_code == 200
    assert store.resolve("other").model_path == store.resolve("tiny").model_path
    reply = requests.post(f"{url}/api/copy", json={"source": "tiny", "destination": "TINY"})
    assert reply.status_code == 400 and reply.json()["error"] == "a model with that name already exists"
    names = [m["name"] for m in requests.get(f"{url}/api/tags").json()["models"]]
    assert sorted(names) == ["other:latest", "tiny:latest"]


@pytest.mark.parametrize("name", ["mine\n", "mi\nne", "mine:1\n", "a\tb", "x\x00y", "caf\u00e9"])
def test_names_with_control_or_foreign_characters_are_refused(store_daemon, name):
    url, _ = store_daemon
    reply = requests.post(f"{url}/api/copy", json={"source": "tiny", "destination": name})
    assert reply.status_code == 400


def test_a_refused_origin_gets_the_openai_error_shape_under_v1(daemon):
    reply = requests.post(f"{daemon}/v1/chat/completions", timeout=5, data="{}",
                          headers={"Content-Type": "text/plain", "Origin": "null"})
    assert reply.status_code == 403 and reply.json()["error"]["message"] == "forbidden"


@pytest.mark.parametrize("path,body,words", [
    ("/v1/chat/completions", {"max_tokens": -5}, "Invalid 'max_tokens': integer below minimum value"),
    ("/v1/chat/completions", {"max_tokens": 0}, "Expected a value >= 1, but got 0 instead."),
    ("/v1/chat/completions", {"max_completion_tokens": -1}, "Invalid 'max_completion_tokens'"),
    ("/v1/messages", {"max_tokens": -1}, "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/responses", {"max_output_tokens": 0}, "Invalid 'max_output_tokens'"),
])
def test_a_token_limit_below_one_is_refused_not_unlimited(fake_server, path, body, words):
    import requests

    base = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    if path == "/v1/responses":
        base = {"model": "tiny", "input": "x"}
    if path == "/v1/messages":
        base["max_tokens"] = 5
    reply = requests.post(fake_server.url + path, json={**base, **body}, timeout=10)
    assert reply.status_code == 400 and words in reply.text, reply.text


def test_reads_and_writes_racing_deletes_of_one_name_are_never_a_500(fake_server, store):
    """copy and delete of one name from four threads, with reads alongside: losing a race is a
    404 (the store's own answers stay whole)."""
    import threading

    import requests

    statuses: list[int] = []
    stop = time.monotonic() + 4

    def churn(kind: str) -> None:
        while time.monotonic() < stop:
            if kind == "copy":
                reply = requests.post(f"{fake_server.url}/api/copy", json={"source": "tiny", "destination": "twin"})
            elif kind == "delete":
                reply = requests.delete(f"{fake_server.url}/api/delete", json={"model": "twin"})
            elif kind == "show":
                reply = requests.post(f"{fake_server.url}/api/show", json={"model": "twin"})
            else:
                reply = requests.get(f"{fake_server.url}/api/tags")
            statuses.append(reply.status_code)

    threads = [threading.Thread(target=churn, args=(k,)) for k in ("copy", "delete", "delete", "show", "tags")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {200, 404}, sorted(set(statuses))
    assert 404 in statuses and 200 in statuses


def test_a_name_that_is_not_in_the_store_answers_at_once_whatever_it_looks_like(fake_server):
    import requests

    for name in ("h.com:99999/n/m", "hf.co/a/b:c", "registry.example:1/x/y:latest"):
        started = time.monotonic()
        reply = requests.post(f"{fake_server.url}/api/chat", json={
            "model": name, "messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert reply.status_code in (400, 404) and time.monotonic() - started < 1.0, (name, reply.text)


def test_http_1_0_without_host_is_answered_on_loopback_as_ollama_does(fake_server):
    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", fake_server.port), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return data

    answer = raw(b"GET /api/version HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") and b'"version"' in answer, answer
    missing = raw(b"GET /api/version HTTP/1.1\r\nConnection: close\r\n\r\n")  # HTTP/1.1 needs one
    assert missing.startswith(b"HTTP/1.1 400") and b"missing required Host header" in missing, missing
    foreign = raw(b"GET /api/version HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert foreign.startswith(b"HTTP/1.1 403"), foreign


def test_an_embedding_of_many_texts_stops_when_its_client_leaves(fake_server, script):
    script.delay_s = 0.005
    body = json.dumps({"model": "embedder", "input": [f"text {i}" for i in range(4000)]}).encode()
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=5) as sock:
        sock.sendall(b"POST /api/embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 5
        while script.embedded < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(0.5)  # the client is gone: the work stops within one chunk
    stopped_at = script.embedded
    time.sleep(0.5)
    assert script.embedded == stopped_at and stopped_at < 400, stopped_at


@pytest.mark.parametrize("schema,words", [
    ({"type": "string", "minLength": 1_000_000_000}, "format.minLength 1e+09 is more than an answer can hold"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000_000}, "format.minItems"),
    ({"type": "object", "properties": {"s": {"type": "string", "maxLength": 10_000_000}}}, "format.maxLength"),
    ({"enum": list(range(100_000))}, "more than 2000 enum values"),
])
def test_a_format_whose_grammar_would_be_unbounded_is_refused_at_once(fake_server, schema, words):
    import requests

    started = time.monotonic()
    reply = requests.post(f"{fake_server.url}/api/chat", json={
        "model": "tiny", "format": schema, "stream": False, "messages": [{"role": "user", "content": "x"}]},
        timeout=30)
    assert reply.status_code == 400 and words in reply.json()["error"], reply.text
    assert time.monotonic() - started < 2.0


def test_models_that_share_weights_share_a_runner_only_when_nothing_else_differs(fake_server, store, script):
    """`cp` names share one loaded engine; a model created from the same weights with its own
    template gets its own, so neither answers with the other's template."""
    import requests

    from rkollama.models.names import ModelName

    base = store.resolve("tiny")
    digest = base.model_path.name.split("-", 1)[1]
    store.copy("tiny", "tiny-alias")
    pirate = type(base.modelfile)(**{**base.modelfile.to_dict(), "name": "pirate", "tag": "1",
                                     "template": "{{ messages[-1]['content'] }} arr"})
    store.register(ModelName.parse("pirate:1"), pirate, digest, base.size)

    def ask(model: str) -> None:
        reply = requests.post(f"{fake_server.url}/api/generate", json={"model": model, "prompt": "x",
                                                                       "stream": False}, timeout=10)
        assert reply.status_code == 200, reply.text

    ask("tiny")
    ask("tiny-alias")
    assert [name for name, _ in script.loads] == ["tiny:latest"]  # one engine for both names
    ask("pirate:1")
    assert [name for name, _ in script.loads] == ["tiny:latest", "pirate:1"]


def test_concurrent_verbose_shows_read_the_header_once(fake_server, monkeypatch):
    """Eight clients asking for one model's verbose header cost one read (each read is a large
    model's whole vocabulary), one at a time."""
    import requests

    from rkollama.models import gguf_facts

    reads: list[int] = []
    running: list[int] = []

    def slow_read(path):
        running.append(1)
        assert len(running) == 1  # one at a time
        reads.append(1)
        time.sleep(0.2)
        running.pop()
        return {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a", "b"]}, []

    monkeypatch.setattr(gguf_facts, "verbose", slow_read)

    def show() -> None:
        reply = requests.post(f"{fake_server.url}/api/show", json={"model": "tiny", "verbose": True}, timeout=20)
        assert reply.status_code == 200 and reply.json()["model_info"]["tokenizer.ggml.tokens"] == ["a", "b"]

    threads = [threading.Thread(target=show) for _ in range(8)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    tags = requests.get(f"{fake_server.url}/api/tags", timeout=20)
    assert tags.status_code == 200 and time.monotonic() - started < 1.0  # tags never wait for them
    for thread in threads:
        thread.join()
    assert len(reads) == 1


@pytest.mark.parametrize("schema,words", [
    ({"enum": []}, "format.enum is empty"), ({"not": {}}, "format.not matches everything"),
])
def test_a_format_no_answer_can_match_is_a_400_not_three_generations(fake_server, script, schema, words):
    import requests

    reply = requests.post(f"{fake_server.url}/api/chat", json={
        "model": "tiny", "format": schema, "stream": False, "messages": [{"role": "user", "content": "x"}]},
        timeout=30)
    assert reply.status_code == 400 and words in reply.json()["error"], reply.text
    assert script.history == []  # no engine work at all
