"""One request's memory is bounded by a documented formula (docs/security.md): the daemon's peak
resident memory grows by at most BODY_FACTOR × RKOLLAMA_MAX_BODY_BYTES + FIXED_BYTES for any
body, however its bytes are shaped. Measured from /proc (VmHWM, the peak resident set) of a
real `rkollama serve` with the scripted engine, so only the daemon's own work is counted."""

import json
import sys

import pytest
import requests

from tests.helpers import peak_rss, register_fake, start_daemon

LIMIT = 8 * 1024 * 1024
BODY_FACTOR = 5
FIXED_BYTES = 64 * 1024 * 1024

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _chat(messages):
    return {"model": "tiny", "stream": False, "messages": messages}


HOSTILE = {
    # a body of the largest shapes the limits let through, and some they refuse after decoding
    "one huge string": ("/api/chat", _chat([{"role": "user", "content": "x" * (LIMIT - 200)}])),
    "as many tiny messages as allowed": ("/api/chat", _chat([{"role": "user", "content": "ab"}] * 49_000)),
    "as many values as allowed": ("/api/embed", {"model": "tiny", "input": ["ab"] * 290_000}),
    "a context of token ids": ("/api/generate", {"model": "tiny", "stream": False, "prompt": "x",
                                                 "context": [123456] * 290_000}),
    "too many objects": ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}] * 200_000}),
    "too many values": ("/v1/embeddings", {"model": "tiny", "input": ["ab"] * 1_000_000}),
    "a schema of many properties": ("/api/chat", dict(_chat([{"role": "user", "content": "a"}]), format={
        "type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(40_000)}})),
}


def test_one_requests_peak_memory_in_the_daemon_is_bounded_by_the_body_limit(tmp_path):
    from rkollama.models.store import ModelStore

    store = ModelStore(tmp_path / "models")
    store.prepare()
    register_fake(store, "tiny")
    process, url = start_daemon({"RKOLLAMA_BACKEND": "fake", "RKOLLAMA_MODELS": str(tmp_path / "models"),
                                 "RKOLLAMA_MAX_BODY_BYTES": str(LIMIT)}, tmp_path / "daemon.log")
    try:
        assert requests.post(f"{url}/api/chat", json=_chat([{"role": "user", "content": "hi"}]),
                             timeout=30).status_code == 200
        base = peak_rss(process.pid)
        bound = BODY_FACTOR * LIMIT + FIXED_BYTES
        for label, (path, body) in HOSTILE.items():
            data = json.dumps(body).encode()
            assert len(data) <= LIMIT, label
            reply = requests.post(url + path, data=data, headers={"Content-Type": "application/json"},
                                  timeout=120)
            assert reply.status_code in (200, 400), (label, reply.text[:200])
            grown = peak_rss(process.pid) - base
            assert grown <= bound, f"{label}: the daemon grew {grown / 1e6:.0f} MB (bound {bound / 1e6:.0f} MB)"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.live
def test_the_runners_peak_memory_is_fixed_at_load_and_a_request_adds_at_most_the_body_formula():
    """The CPU engine's runner: what a request adds to its peak, past what loading the model took
    (weights, the KV cache of num_ctx tokens, compute buffers), is within the same formula."""
    import shutil

    from tests.helpers import start_smollm2_daemon

    process, url, _, workdir = start_smollm2_daemon("rkollama-memory-", 2,
                                                    RKOLLAMA_MAX_BODY_BYTES=str(LIMIT))
    try:
        assert requests.post(f"{url}/api/generate", json={"model": "smollm2:135m", "prompt": "hi",
                                                          "stream": False, "options": {"num_predict": 2}},
                             timeout=120).status_code == 200
        runner = _runner_of(process.pid)
        loaded = peak_rss(runner)
        daemon_base = peak_rss(process.pid)
        long = ("lorem ipsum dolor " * (LIMIT // 18))[:LIMIT - 1024]  # a prompt of the whole limit
        reply = requests.post(f"{url}/api/chat", timeout=600, json={
            "model": "smollm2:135m", "stream": False, "options": {"num_predict": 2},
            "messages": [{"role": "user", "content": long}]})
        assert reply.status_code == 200, reply.text[:200]
        bound = BODY_FACTOR * LIMIT + FIXED_BYTES
        assert peak_rss(runner) - loaded <= bound
        assert peak_rss(process.pid) - daemon_base <= bound
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _runner_of(pid: int) -> int:
    """The daemon's runner process (its child running the engine)."""
    import os

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                command = cmd.read()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:  # not the resource tracker
            return int(entry)
    raise AssertionError("no runner process")
