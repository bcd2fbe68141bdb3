"""The real daemon with the real CPU engine off the happy path: hostile options, a runner that
dies, clients that leave, SIGTERM in the middle of a stream."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import ollama
import pytest
import requests
from helpers import smollm2_engine, start_daemon

pytestmark = pytest.mark.live
MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def daemon(smollm2_store, tmp_path_factory):
    """(base URL, process) of a daemon of this module's own: its runner gets killed."""
    log = tmp_path_factory.mktemp("hardening-log") / "serve.log"
    process, url = start_daemon({"RKOLLAMA_MODELS": str(smollm2_store), "RKOLLAMA_NUM_THREADS": "2",
                                 "RKOLLAMA_CONTEXT_LENGTH": "2048"}, log)
    yield url, process
    process.terminate()
    process.wait(timeout=30)


def runners(process) -> list[int]:
    """Pids of the daemon's runner processes."""
    out = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout
    pids = []
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
            pids.append(int(pid))
    return pids


def ask(url: str, **options) -> requests.Response:
    return requests.post(f"{url}/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "What is 2 + 2?", "stream": False,
        "options": {"temperature": 0, "num_predict": 8, **options}})


@pytest.mark.parametrize("options", [{"num_thread": 1_000_000}, {"num_batch": -1},
                                     {"num_ctx": -1}, {"num_batch": 10**9}])
def test_hostile_load_options_are_a_400_and_the_daemon_keeps_serving(daemon, options):
    url, process = daemon
    reply = ask(url, **options)
    assert reply.status_code == 400, reply.text
    assert process.poll() is None
    assert ask(url).status_code == 200


def test_a_num_ctx_beyond_the_training_context_is_capped_not_an_error(daemon):
    url, process = daemon
    reply = requests.post(f"{url}/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "hi", "stream": False, "template": "",
        "options": {"num_ctx": 1 << 20, "num_predict": 1}})
    # SmolLM2 trains on 8192 tokens: the context is capped there, so this one fits and answers.
    assert reply.status_code == 200 and process.poll() is None


def test_a_runner_that_dies_fails_its_request_and_the_next_one_reloads(daemon):
    url, process = daemon
    assert ask(url).status_code == 200
    (pid,) = runners(process)
    client = ollama.Client(host=url)
    stream = client.generate(model=MODEL, prompt="Tell me a very long story.", stream=True,
                             options={"num_predict": 2000})
    next(stream)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ollama.ResponseError) as error:
        for _ in stream:
            pass
    assert "crashed" in error.value.error
    assert process.poll() is None
    assert ask(url).status_code == 200
    assert len(runners(process)) == 1 and runners(process) != [pid]


def test_a_runner_killed_while_idle_is_loaded_again_by_the_next_request(daemon):
    """Nobody reads an idle runner's pipe: its death is seen from its process, not its pipe."""
    url, process = daemon
    assert ask(url).status_code == 200
    (pid,) = runners(process)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    reply = ask(url)
    assert reply.status_code == 200, reply.text
    assert len(runners(process)) == 1 and runners(process) != [pid]


def test_unloading_ends_the_runner_and_returns_its_memory(daemon):
    url, process = daemon
    assert ask(url).status_code == 200
    assert len(runners(process)) == 1
    requests.post(f"{url}/api/generate", json={"model": MODEL, "keep_alive": 0}, timeout=30)
    deadline = time.monotonic() + 15
    while runners(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runners(process) == []


def test_a_client_that_leaves_a_long_non_streaming_answer_frees_the_model(daemon):
    url, _ = daemon
    ask(url)
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"model": MODEL, "prompt": "Write a very long essay about the sea.",
                       "stream": False, "options": {"num_predict": 4000, "temperature": 0.7}}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(1.0)
    sock.close()
    started = time.monotonic()
    reply = ask(url)
    # 4000 tokens take about 40 s here; the next user waits for the cancel, not for them.
    assert reply.status_code == 200 and time.monotonic() - started < 15


def test_sigterm_ends_streams_with_an_error_line_answers_queued_requests_and_exits(
        smollm2_store, tmp_path):
    process, url = start_daemon({"RKOLLAMA_MODELS": str(smollm2_store), "RKOLLAMA_NUM_THREADS": "2",
                                 "RKOLLAMA_CONTEXT_LENGTH": "2048"}, tmp_path / "serve.log")
    try:
        assert ask(url).status_code == 200
        lines: list[dict] = []
        queued: list[requests.Response] = []

        def stream():
            # A string of at least 10,000 characters: the answer cannot end before the signal.
            with requests.post(f"{url}/api/generate", stream=True, timeout=60, json={
                    "model": MODEL, "prompt": "Tell me a long story.",
                    "format": {"type": "string", "minLength": 10_000},
                    "options": {"num_predict": 4000}}) as reply:
                for raw in reply.iter_lines():
                    lines.append(json.loads(raw))

        def waiting():
            queued.append(ask(url))

        streamer = threading.Thread(target=stream)
        streamer.start()
        while len(lines) < 3:
            time.sleep(0.05)
        waiter = threading.Thread(target=waiting)
        waiter.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        streamer.join(20)
        waiter.join(20)
        assert process.wait(timeout=20) == 0
        assert lines[-1] == {"error": "server is shutting down"}
        assert queued and queued[0].status_code == 503
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def engine(smollm2_store):
    """SmolLM2 loaded in this process with small prefill chunks."""
    backend = smollm2_engine(smollm2_store, 2048, num_batch=32)
    yield backend
    backend.close()


def test_a_cancel_during_prefill_stops_at_the_next_chunk(engine):
    from rkollama.core.types import Done, DoneReason, Generation, Message, Token

    cancel = threading.Event()
    calls = []
    loop = engine.loop
    original = loop.decode

    def decode_then_cancel(ctx, batch):
        calls.append(batch.n_tokens)
        code = original(ctx, batch)
        cancel.set()  # the client leaves during the first chunk
        return code

    loop.decode = decode_then_cancel
    try:
        text = " ".join(f"word{i}" for i in range(300))
        gen = Generation(messages=[Message("user", text)])
        events = list(engine.generate(gen, cancel))
    finally:
        loop.decode = original
    assert calls == [32]
    assert isinstance(events[-1], Done) and events[-1].reason is DoneReason.CANCELLED
    # Before the Done, only the empty Token the engine sends per prefill batch (its sign of work
    # for the runner's stall watchdog): no answer text.
    assert events[-1].eval_tokens == 0 and events[:-1] == [Token("")]


def test_trimming_a_long_history_renders_it_a_logarithmic_number_of_times(engine):
    from rkollama.core.types import Generation, Message

    history = [Message("user" if i % 2 == 0 else "assistant", f"message {i} " + "lorem ipsum " * 150)
               for i in range(300)]
    history.append(Message("user", "What is the last number you saw?"))
    renders = []
    original = engine.template.render

    def counting(*args, **kwargs):
        renders.append(1)
        return original(*args, **kwargs)

    engine.template.render = counting
    try:
        tokens = engine._prompt_tokens(Generation(messages=history))
    finally:
        del engine.template.render
    assert len(tokens) < engine.n_ctx
    assert len(renders) <= 12  # 300 messages: a bounded skip, then a binary search
