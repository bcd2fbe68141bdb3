"""What one hostile request costs the daemon in memory and time: a fresh `rkollama serve` (scripted
engine, so only the daemon's own work counts) per body shape, each body just within the limit.

    .venv/bin/python benchmarks/bench_request_memory.py [--limit-mib 4]

Prints, per shape, the status, the seconds to the answer and the growth of the daemon's peak
resident memory (VmHWM) as MB and as a multiple of the body limit; the bound docs/security.md
states (5 x limit + 64 MiB) is checked by tests/test_memory_bounds.py.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def shapes(limit: int) -> dict[str, tuple[str, dict]]:
    """(path, body) per shape, each body just within `limit` bytes."""
    n = limit // 40
    tiny = [{"role": "user", "content": "a"}] * n
    chat = {"model": "tiny", "stream": False}
    huge = [{"role": "user", "content": "x" * (limit - 200)}]
    properties = {f"p{i}": {"type": "string"} for i in range(limit // 40)}
    return {
        "one huge string": ("/api/chat", dict(chat, messages=huge)),
        "tiny messages": ("/api/chat", dict(chat, messages=tiny)),
        "tiny messages, OpenAI": ("/v1/chat/completions", {"model": "tiny", "messages": tiny}),
        "tiny messages, Anthropic": ("/v1/messages", {"model": "tiny", "max_tokens": 4, "messages": tiny}),
        "many embedding inputs": ("/api/embed", {"model": "tiny", "input": ["ab"] * (limit // 7)}),
        "a long context": ("/api/generate", dict(chat, prompt="x", context=[123456] * (limit // 9))),
        "many schema properties": ("/api/chat", dict(chat, messages=tiny[:1],
                                                     format={"type": "object", "properties": properties})),
    }


def main() -> None:
    import requests
    from helpers import peak_rss, register_fake, start_daemon

    from rkollama.models.store import ModelStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-mib", type=float, default=4)
    limit = int(parser.parse_args().limit_mib * 1024 * 1024)
    for label, (path, body) in shapes(limit).items():
        work = Path(tempfile.mkdtemp(prefix="rkollama-memory-"))
        store = ModelStore(work / "models")
        store.prepare()
        register_fake(store, "tiny")
        process, url = start_daemon({"RKOLLAMA_BACKEND": "fake", "RKOLLAMA_MODELS": str(work / "models"),
                                     "RKOLLAMA_MAX_BODY_BYTES": str(limit)}, work / "serve.log")
        try:
            warm = {"model": "tiny", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
            requests.post(f"{url}/api/chat", json=warm, timeout=30)
            base = peak_rss(process.pid)
            data = json.dumps(body).encode()
            started = time.monotonic()
            reply = requests.post(url + path, data=data, headers={"Content-Type": "application/json"},
                                  timeout=600)
            seconds = time.monotonic() - started
            grown = peak_rss(process.pid) - base
            print(f"{label:<26} body {len(data) / 1e6:5.1f} MB  {reply.status_code}  {seconds:6.2f} s  "
                  f"+{grown / 1e6:6.1f} MB ({grown / limit:4.1f}x the limit)")
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
