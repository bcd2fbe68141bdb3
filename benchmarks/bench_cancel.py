"""How soon the engine is free again after a client leaves in the middle of a long prompt (Stop
in Open WebUI during the prefill), rkollama beside llama-server: a streaming
`/v1/chat/completions` of ~1.9k prompt tokens is dropped 0.5 s in, a short request follows at
once, and its time to first content is printed (median of the runs) — with the short request's
own time alone, for reference. Target: the engine free within 0.5 s of the client leaving.

    .venv/bin/python benchmarks/bench_cancel.py [--llama-server PATH] [--runs 5] [--after 0.5]
"""

import json
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_peer import _turn, llama_server_path, side_by_side, side_by_side_options, tide_table  # noqa: E402


def dropped(port: int, model: str, prompt: str, after: float) -> None:
    """Start a streaming chat of `prompt`, then close the connection `after` seconds later."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": 16, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        time.sleep(after)


def main() -> None:
    parser = side_by_side_options(__doc__, 5)
    parser.add_argument("--after", type=float, default=0.5, help="seconds before the client leaves")
    args = parser.parse_args()
    server = llama_server_path(args.llama_server)
    document = tide_table(110)
    short = [{"role": "user", "content": "Say hello."}]
    with side_by_side("rkollama-cancel-", args.threads, 1, server) as sides:
        alone: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        freed: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        for i in range(args.runs):
            for name, port, model in sides.in_turn(i):
                sides.quiet()
                alone[name].append(_turn(port, model, short, 1))
                dropped(port, model, f"Run {i}. {document} Which pier is deepest?", args.after)
                freed[name].append(_turn(port, model, short, 1))
    print(f"client leaves {args.after:.1f} s into a ~1.9k-token prompt; SmolLM2, {args.threads} threads, "
          f"{args.runs} runs\n")
    for name in freed:
        print(f"{name:>12}: next request's first token {statistics.median(freed[name]) * 1000:6.0f} ms "
              f"after the client left (alone: {statistics.median(alone[name]) * 1000:4.0f} ms)")

if __name__ == "__main__":
    main()
