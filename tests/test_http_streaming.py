"""Through real Waitress: lines are flushed as they are produced, and a client that disconnects
stops its generation at the next token and frees the model."""

import json
import socket
import time

import requests

from rkollama.core.types import DoneReason


def open_stream(url: str, body: dict) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    buffer = b""
    while marker not in buffer:
        chunk = sock.recv(4096)
        assert chunk, "connection closed early"
        buffer += chunk
    return buffer


def test_first_line_arrives_while_the_engine_is_still_generating(fake_server, script):
    script.enqueue(["first", "second", "third"])
    script.hold_after = 0  # tokens after the first wait for `release`
    sock = open_stream(fake_server.url, {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    received = read_until(sock, b'"first"')
    assert b'"second"' not in received
    script.release.set()
    rest = read_until(sock, b'"done":true')
    assert b'"second"' in rest + received
    sock.close()


def test_disconnect_stops_generation_and_frees_the_model(fake_server, script):
    script.enqueue([f"t{i} " for i in range(1000)])
    script.delay_s = 0.01
    sock = open_stream(fake_server.url, {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    read_until(sock, b'"t3 "')
    sock.close()
    deadline = time.monotonic() + 10
    while not script.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    reason, produced = script.finished[-1]
    assert reason is DoneReason.CANCELLED and produced < 1000
    script.delay_s = 0
    script.enqueue(["next"])
    reply = requests.post(f"{fake_server.url}/api/chat", timeout=10, json={
        "model": "tiny", "stream": False, "messages": [{"role": "user", "content": "y"}]})
    assert reply.json()["message"]["content"] == "next"


def test_queue_full_is_503_with_ollamas_message(settings, store, script, clock):
    from dataclasses import replace

    from helpers import ThreadServer

    from rkollama.backends.fake import factory
    from rkollama.models.catalog import Catalog
    from rkollama.scheduler import Scheduler
    from rkollama.server.app import create_app

    sched = Scheduler(replace(settings, max_queue=0), backend_factory=factory(script), clock=clock)
    server = ThreadServer(create_app(settings, sched, store, Catalog()))
    try:
        reply = requests.post(f"{server.url}/api/generate", json={"model": "tiny", "prompt": "x"}, timeout=10)
        assert reply.status_code == 503
        assert reply.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    finally:
        server.close()
        sched.shutdown()
