"""Bodies bounded while Waitress reads them (server/body_limits.py), through real Waitress and raw
sockets: a client cannot make the daemon read or spool more than the body limit before it is
refused, whatever it announces, with or without the API key; a blob upload with the key may
send a model file."""

import json
import socket
import time

import pytest
import requests

from tests.test_hardening import serve

KEY = "sesame"


@pytest.fixture
def small(tmp_path, script):
    server, scheduler = serve(tmp_path, script, max_body_bytes=10_000, api_key=(KEY,))
    yield server
    server.close()
    scheduler.shutdown()


def _head_only(url: str, head: bytes, timeout: float = 3.0) -> tuple[int, bytes, float]:
    """Send only a request's head; return the status, the body and how long the answer took."""
    host, port = url.split("//")[1].split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    elapsed = time.monotonic() - started
    head_part, _, body = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1]) if head_part else 0
    return status, body, elapsed


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize("path,error_of", [
    ("/api/chat", lambda body: body["error"]),
    ("/v1/chat/completions", lambda body: body["error"]["message"]),
    ("/v1/messages", lambda body: body["error"]["message"]),
])
def test_a_huge_body_without_the_key_is_refused_before_it_is_read(small, path, error_of, tmp_path):
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {512 * 1024 * 1024}\r\n\r\n").encode()
    status, body, elapsed = _head_only(small.url, head)
    assert status == 413 and elapsed < 2.0
    assert "too large" in error_of(json.loads(body)) and "10000" in error_of(json.loads(body))


def test_a_huge_blob_upload_without_the_key_is_refused_before_it_is_read(small):
    head = (f"POST /api/blobs/sha256:{'0' * 64} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {8 * 1024 ** 3}\r\n\r\n").encode()
    status, _, elapsed = _head_only(small.url, head)
    assert status == 413 and elapsed < 2.0
    wrong = head.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer not-{KEY}\r\n\r\n".encode(), 1)
    assert _head_only(small.url, wrong)[0] == 413


def test_a_blob_upload_with_the_key_may_pass_the_body_limit(small):
    import hashlib

    data = bytes(range(256)) * 200  # 51,200 bytes: over the 10,000-byte body limit
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    reply = requests.post(f"{small.url}/api/blobs/{digest}", data=data,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert reply.status_code == 201
    assert requests.head(f"{small.url}/api/blobs/{digest}", headers={"Authorization": f"Bearer {KEY}"},
                         timeout=10).status_code == 200


def test_a_chunk_announcing_two_to_the_64_bytes_is_refused_at_once(small):
    head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\nffffffffffffffff\r\n")
    status, body, elapsed = _head_only(small.url, head)
    assert status == 413 and elapsed < 2.0 and "too large" in json.loads(body)["error"]


def test_a_chunked_body_within_the_limit_is_answered(small, script):
    script.enqueue(["hello"])
    data = json.dumps({"model": "tiny", "stream": False,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    chunked = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n")
    status, body, _ = _head_only(small.url, head + chunked, timeout=10)
    assert status == 200 and json.loads(body)["message"]["content"] == "hello"


def test_a_body_within_the_limit_without_the_key_is_still_a_401(small):
    reply = requests.post(f"{small.url}/api/chat", json={"model": "tiny"}, timeout=10)
    assert reply.status_code == 401


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}] * 100_000}),
    ("/v1/messages", {"model": "tiny", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "a"}] * 100_000}),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "a"}] * 100_000}),
])
def test_a_hundred_thousand_tiny_messages_are_refused_at_once(tmp_path, script, path, body):
    import time

    server, scheduler = serve(tmp_path, script)  # the default 32 MiB body limit: it fits
    try:
        started = time.monotonic()
        reply = requests.post(server.url + path, json=body, timeout=60)
        assert reply.status_code == 400 and "JSON arrays and objects" in reply.text
        assert time.monotonic() - started < 5 and script.history == []
    finally:
        server.close()
        scheduler.shutdown()
