"""rkollama versus llama-cpp-python's own OpenAI server (what a CPU user would run instead), side by
side in one run: same GGUF, threads, context and greedy sampling, both through a streaming
`/v1/chat/completions`. Prints single-client decode tokens/s and time to first token, and the
aggregate tokens/s of N concurrent clients, with the ratios the targets are stated in.

    .venv/bin/pip install "llama-cpp-python[server]"   # the peer (not a test dependency)
    .venv/bin/python benchmarks/bench_peer.py [--runs 5] [--tokens 128] [--clients 4] [--threads 2]

Targets (issue #7): single-client decode >= 1.0x the peer; 4 clients >= 1.5x its aggregate.
The peer runs with `--interrupt_requests False`: its default drops a stream when another arrives.
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def chat_run(port: int, model: str, prompt: str, tokens: int):
    """(time to first content s, decode chunks/s, chunks) of one streaming chat completion."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    first = last = None
    count = 0
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        delta = json.loads(line[5:])["choices"]
        if delta and delta[0].get("delta", {}).get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    conn.close()
    if first is None:
        return float("nan"), 0.0, 0
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return first - start, rate, count


def concurrent(port: int, model: str, clients: int, tokens: int, tag: str) -> float:
    """Aggregate content chunks per second of `clients` simultaneous streams."""
    counts = [0] * clients

    def one(index: int) -> None:
        counts[index] = chat_run(port, model, f"Story {tag}-{index}: tell a long tale about a "
                                              f"lighthouse keeper.", tokens)[2]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def start_peer(model_path: str, threads: int, log_path: Path):
    from helpers import free_port, wait_for_http

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--n_ctx", "2048",
         "--n_threads", str(threads), "--n_threads_batch", str(threads), "--port", str(port),
         "--interrupt_requests", "False", "--model_alias", "peer"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    wait_for_http(f"http://127.0.0.1:{port}/v1/models", process)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"the peer is missing ({exc}): pip install 'llama-cpp-python[server]'") from None

    from helpers import start_smollm2_daemon

    daemon, url, model_path, workdir = start_smollm2_daemon("rkollama-peer-", args.threads)
    ours = int(url.rsplit(":", 1)[1])
    peer, theirs = start_peer(model_path, args.threads, workdir / "peer.log")
    sides = (("rkollama", ours, "smollm2:135m"), ("peer", theirs, "peer"))
    try:
        for _, port, model in sides:
            chat_run(port, model, "warm-up", 8)
        print(f"model {model_path}\nthreads {args.threads}, {args.tokens} tokens, greedy, "
              f"{args.runs} runs, alternating; distinct prompts\n")
        rows = []
        for i in range(args.runs):
            row = []
            for _name, port, model in sides:
                prompt = f"Run {i}: write a detailed essay about the history of astronomy."
                row.append(chat_run(port, model, prompt, args.tokens))
            rows.append(row)
            (o_ttft, o_rate, o_n), (p_ttft, p_rate, p_n) = row
            print(f"{i:>3}  ttft rkollama {o_ttft * 1000:7.1f} ms  peer {p_ttft * 1000:7.1f} ms   "
                  f"decode rkollama {o_rate:6.1f}  peer {p_rate:6.1f} tok/s  ({o_n}/{p_n} chunks)")
        o_rate = statistics.median(r[0][1] for r in rows)
        p_rate = statistics.median(r[1][1] for r in rows)
        added = statistics.median((r[0][0] - r[1][0]) * 1000 for r in rows)
        print(f"\nsingle client: decode {o_rate:.1f} vs {p_rate:.1f} tok/s, ratio {o_rate / p_rate:.3f} "
              f"(target >= 1.0); TTFT rkollama - peer {added:+.1f} ms (median)")
        aggregates = {name: [] for name, _, _ in sides}
        for i in range(max(1, args.runs // 2)):
            for name, port, model in sides:
                aggregates[name].append(concurrent(port, model, args.clients, args.tokens, f"{i}"))
        o_agg = statistics.median(aggregates["rkollama"])
        p_agg = statistics.median(aggregates["peer"])
        print(f"{args.clients} clients: aggregate {o_agg:.1f} vs {p_agg:.1f} tok/s, ratio "
              f"{o_agg / p_agg:.3f} (target >= 1.5)")
    finally:
        for process in (daemon, peer):
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
