"""A bounded load test on loopback against a real daemon with SmolLM2 on the CPU: many streaming
clients at once, idle connections held open, and control routes probed during the load.

    .venv/bin/python benchmarks/bench_load.py [--clients 64] [--tokens 16] [--max-queue 32]
                                              [--idle 1000] [--threads 2]

Prints clients served, 503s (the queue limit), p50/p95 time to first token, the latency of
`/api/tags`, `/api/ps` and `/` during the load (target < 100 ms), whether a request still gets an
answer with `--idle` idle connections open, and the daemon's RSS before and after.
"""

import argparse
import http.client
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (the runners), in MB."""
    import subprocess

    total = 0
    pids = [str(pid)] + subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                       text=True).stdout.split()
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def stream_one(port: int, tokens: int, index: int, results: list) -> None:
    body = json.dumps({"model": "smollm2:135m", "prompt": f"Client {index}: say something.",
                       "options": {"num_predict": tokens, "temperature": 0}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        response.read()
        results.append(("refused", response.status, None))
        return
    first = None
    for line in response:
        if first is None:
            first = time.perf_counter() - start
        if json.loads(line).get("done"):
            break
    results.append(("served", 200, first))
    conn.close()


def probe(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    conn.request("GET", path)
    conn.getresponse().read()
    conn.close()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=32)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 256)), hard))

    from helpers import start_smollm2_daemon

    daemon, url, _, _ = start_smollm2_daemon("rkollama-load-", args.threads,
                                             OLLAMA_MAX_QUEUE=str(args.max_queue))
    port = int(url.rsplit(":", 1)[1])
    try:
        stream_one(port, 2, -1, [])  # load the model
        before = rss_mb(daemon.pid)
        results: list = []
        clients = [threading.Thread(target=stream_one, args=(port, args.tokens, i, results))
                   for i in range(args.clients)]
        started = time.perf_counter()
        for client in clients:
            client.start()
        latencies: dict[str, list[float]] = {"/api/tags": [], "/api/ps": [], "/": []}
        while any(c.is_alive() for c in clients):
            for path in latencies:
                latencies[path].append(probe(port, path))
            time.sleep(0.05)
        for client in clients:
            client.join()
        wall = time.perf_counter() - started
        served = [r for r in results if r[0] == "served"]
        refused = [r for r in results if r[0] == "refused"]
        ttfts = [r[2] * 1000 for r in served if r[2] is not None]
        print(f"{args.clients} streaming clients, {args.tokens} tokens each, OLLAMA_MAX_QUEUE "
              f"{args.max_queue}: {len(served)} served, {len(refused)} refused "
              f"({sorted({r[1] for r in refused})}), {wall:.1f} s")
        print(f"time to first token: p50 {statistics.median(ttfts):.0f} ms, p95 {pct(ttfts, 0.95):.0f} ms")
        for path, values in latencies.items():
            print(f"{path:<10} during the load: p50 {statistics.median(values):.1f} ms, "
                  f"p95 {pct(values, 0.95):.1f} ms, max {max(values):.1f} ms ({len(values)} probes)")
        idle = []
        for _ in range(args.idle):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append(sock)
        start = time.perf_counter()
        answered = probe(port, "/api/tags")
        reply: list = []
        stream_one(port, 4, 10_000, reply)
        print(f"with {len(idle)} idle half-sent connections open: /api/tags in {answered:.1f} ms, "
              f"a generation {reply[0][0]} in {(time.perf_counter() - start) * 1000:.0f} ms")
        for sock in idle:
            sock.close()
        time.sleep(1)
        print(f"RSS (daemon + runner): {before:.0f} MB before the load, {rss_mb(daemon.pid):.0f} MB after")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
