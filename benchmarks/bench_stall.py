"""What a long prompt does to an answer already streaming, rkollama beside llama-server (two
slots each): one client streams a long answer; 2 s in, a second sends a ~1.8k-token document.
Prints the streaming client's longest wait for a token while the document is read, and the
document's time to first token (medians of the runs).

    .venv/bin/python benchmarks/bench_stall.py [--llama-server PATH] [--runs 3]
"""

import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_peer import _turn, llama_server_path, side_by_side, side_by_side_options, tide_table  # noqa: E402


def stream_times(port: int, model: str, prompt: str, tokens: int, out: list[float]) -> None:
    """Stream a chat answer, appending each content chunk's arrival time to `out`."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    for raw in conn.getresponse():
        line = raw.strip()
        if line.startswith(b"data:") and line != b"data: [DONE]":
            choices = json.loads(line[5:])["choices"]
            if choices and choices[0].get("delta", {}).get("content"):
                out.append(time.perf_counter())
    conn.close()


def one_run(port: int, model: str, run: int) -> tuple[float, float]:
    """(longest wait for a streamed token while the document was read, the document's time to
    first token), in seconds."""
    arrivals: list[float] = []
    answer = threading.Thread(target=stream_times, args=(port, model, f"Run {run}: write a very long "
                                                         "essay about the sea.", 400, arrivals))
    answer.start()
    while not arrivals:
        time.sleep(0.01)
    time.sleep(2.0)
    document = tide_table(100)
    sent = time.perf_counter()
    question = [{"role": "user", "content": f"Run {run}. {document} Which pier is deepest?"}]
    first = _turn(port, model, question, 4)
    answer.join()
    during = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)
              if later >= sent and earlier <= sent + first]
    return max(during, default=0.0), first


def main() -> None:
    parser = side_by_side_options(__doc__, 3)
    args = parser.parse_args()
    server = llama_server_path(args.llama_server)
    with side_by_side("rkollama-stall-", args.threads, 2, server) as sides:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in sides}
        for run in range(args.runs):
            for name, port, model in sides.in_turn(run):
                sides.quiet()
                results[name].append(one_run(port, model, run))
    print(f"a ~1.8k-token document arrives while another client streams; SmolLM2, 2 slots, "
          f"{args.threads} threads, {args.runs} runs\n")
    for name, runs in results.items():
        wait = statistics.median(r[0] for r in runs) * 1000
        first = statistics.median(r[1] for r in runs) * 1000
        print(f"{name:>12}: streaming client's longest wait {wait:6.0f} ms; document's first token "
              f"{first:6.0f} ms")

if __name__ == "__main__":
    main()
