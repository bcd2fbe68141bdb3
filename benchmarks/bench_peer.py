"""rkollama versus what a CPU user would run instead, side by side in one run, interleaved: same
GGUF, threads, context per request and greedy sampling, all through a streaming
`/v1/chat/completions`. Prints single-client decode tokens/s and time to first token, the
aggregate tokens/s and p95 time to first token of N concurrent clients, and the time to first
token of a next turn on ~1k tokens of history, with the ratios the targets are stated in.

Peers (`--peer`):
* `llama-server` (default): llama.cpp's own C++ server, built from the llama.cpp the pinned
  llama-cpp-python vendors by benchmarks/build_llama_server.sh (about 10 minutes, once), run with
  `--parallel` slots of the same context each; rkollama gets as many (OLLAMA_NUM_PARALLEL).
* `llama-cpp-python`: its Python OpenAI server (`pip install "llama-cpp-python[server]"`), run
  with `--interrupt_requests False` (its default drops a stream when another arrives).

    .venv/bin/python benchmarks/bench_peer.py [--peer llama-server] [--runs 5] [--tokens 128]
                                              [--clients 4] [--parallel 4] [--threads 2]
"""

import argparse
import contextlib
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


def concurrent(port: int, model: str, clients: int, tokens: int, tag: str) -> tuple[float, list[float]]:
    """Aggregate content chunks per second of `clients` simultaneous streams, and each one's
    time to first content in seconds."""
    runs: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * clients

    def one(index: int) -> None:
        runs[index] = chat_run(port, model, f"Story {tag}-{index}: tell a long tale about a "
                                            f"lighthouse keeper.", tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r[2] for r in runs) / (time.perf_counter() - start), [r[0] for r in runs]


def next_turn(port: int, model: str, tag: str) -> float:
    """Time to first content of a second turn whose history (~1k tokens) the first turn sent."""
    history = [{"role": "user", "content": f"Conversation {tag}. " + " ".join(
        f"Fact {i}: the lighthouse at cape {i} was built in {1800 + i}." for i in range(60))},
               {"role": "assistant", "content": "Noted."}]
    _turn(port, model, history + [{"role": "user", "content": "Which cape is first?"}], 8)
    return _turn(port, model, history + [{"role": "user", "content": "Which cape is first?"},
                                         {"role": "assistant", "content": "Cape 0."},
                                         {"role": "user", "content": "And the last?"}], 8)


def _turn(port: int, model: str, messages: list, tokens: int) -> float:
    return chat_turn(port, model, messages, tokens)[0]


def chat_turn(port: int, model: str, messages: list, tokens: int) -> tuple[float, str]:
    """(seconds to the first content, the answer's text) of one streamed greedy chat turn."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": tokens, "temperature": 0,
                       "messages": messages})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    first, text = None, []
    for raw in conn.getresponse():
        line = raw.strip()
        if line.startswith(b"data:") and line != b"data: [DONE]":
            choices = json.loads(line[5:])["choices"]
            content = choices[0].get("delta", {}).get("content") if choices else None
            if content:
                first = first or time.perf_counter()
                text.append(content)
    conn.close()
    return (first or time.perf_counter()) - start, "".join(text)


QUIET_S = 1.5
"""How long every server's processes must have used no CPU before a measured request: longer
than rkollama's idle work waits (IDLE_KEEP_S, then a read-ahead and a prompt cache copy), so
neither side's background work lands in the other's measurement."""


def quiet(roots: list[int], timeout: float = 20.0) -> None:
    """Wait until the processes `roots` and their descendants have used no CPU for QUIET_S."""

    def cpu() -> int:
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry.name)] = int(fields[1])
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
        tree = set(roots)
        while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
            tree |= grown
        return sum(ticks.get(pid, 0) for pid in tree)

    deadline = time.monotonic() + timeout
    last, since = cpu(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < QUIET_S:
        time.sleep(0.1)
        now = cpu()
        if now != last:
            last, since = now, time.monotonic()


def start_peer(kind: str, model_path: str, threads: int, parallel: int, server: str, log_path: Path,
               flash_attention: str = "auto"):
    from helpers import free_port, wait_for_http

    port = free_port()
    if kind == "llama-server":
        command = [server, "--model", model_path, "--ctx-size", str(CONTEXT * parallel),
                   "--parallel", str(parallel), "--threads", str(threads), "--threads-batch", str(threads),
                   "--flash-attn", {"true": "on", "false": "off"}.get(flash_attention, "auto"),
                   "--port", str(port), "--host", "127.0.0.1", "--alias", "peer"]
        health = f"http://127.0.0.1:{port}/health"
    else:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--n_ctx", str(CONTEXT),
                   "--n_threads", str(threads), "--n_threads_batch", str(threads), "--port", str(port),
                   "--interrupt_requests", "False", "--model_alias", "peer"]
        health = f"http://127.0.0.1:{port}/v1/models"
    process = subprocess.Popen(command, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    wait_for_http(health, process)
    return process, port


CONTEXT = 2048
"""Tokens of context per request on both sides (rkollama's RKOLLAMA_CONTEXT_LENGTH in the helper)."""


def side_by_side_options(doc: str, runs: int) -> argparse.ArgumentParser:
    """A parser with what every side-by-side benchmark takes: --llama-server, --runs, --threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--llama-server", default="", help="the binary (default: build it)")
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--threads", type=int, default=2)
    return parser


class Sides(tuple):
    """((name, port, model), …) of the servers side by side, and the processes that serve them."""

    roots: list[int]

    def __new__(cls, sides: tuple[tuple[str, int, str], ...], roots: list[int]) -> "Sides":
        made = super().__new__(cls, sides)
        made.roots = roots
        return made

    def quiet(self) -> None:
        """Wait until every side is idle (`quiet`)."""
        quiet(self.roots)

    def in_turn(self, run: int) -> tuple[tuple[str, int, str], ...]:
        """The sides in the order run number `run` measures them: reversed every other run, so
        that whatever the first of a pair meets (a cooler CPU, the other's idle work just ended)
        falls on both sides equally."""
        return tuple(self) if run % 2 == 0 else tuple(reversed(self))


@contextlib.contextmanager
def side_by_side(prefix: str, threads: int, slots: int, server: str):
    """rkollama (SmolLM2 pulled into a new store) and llama-server on the same GGUF, `slots`
    each, the model loaded on both (a one-token answer each); yields ((name, port, model), …)
    and stops both after."""
    from helpers import start_smollm2_daemon

    daemon, url, model_path, workdir = start_smollm2_daemon(prefix, threads, OLLAMA_NUM_PARALLEL=str(slots))
    peer, theirs = start_peer("llama-server", model_path, threads, slots, server, workdir / "peer.log")
    ours = int(url.rsplit(":", 1)[1])
    sides = Sides((("rkollama", ours, "smollm2:135m"), ("llama-server", theirs, "peer")),
                  [daemon.pid, peer.pid])
    try:
        for _, port, model in sides:  # loaded before anything is timed
            _turn(port, model, [{"role": "user", "content": "Say hello."}], 1)
        yield sides
    finally:
        for process in (daemon, peer):
            process.terminate()
            process.wait(timeout=20)


def tide_table(lines: int) -> str:
    """A long document of `lines` numbered lines (~17 tokens each) to ask about."""
    return " ".join(f"Line {i}: the tide table for pier {i} reads {i % 7} feet." for i in range(lines))


def llama_server_path(given: str) -> str:
    if given:
        return given
    script = ROOT / "benchmarks" / "build_llama_server.sh"
    print("building llama-server from the pinned llama.cpp (once; about 10 minutes)…", file=sys.stderr)
    return subprocess.run([str(script)], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=("llama-server", "llama-cpp-python"), default="llama-server")
    parser.add_argument("--llama-server", default="", help="the binary (default: build it)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=4,
                        help="slots on both sides (OLLAMA_NUM_PARALLEL, llama-server's --parallel)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flash-attention", choices=("auto", "true", "false"), default="auto",
                        help="on both sides (OLLAMA_FLASH_ATTENTION, llama-server's --flash-attn)")
    parser.add_argument("--isolation", choices=("true", "false"), default="true",
                        help="rkollama's RKOLLAMA_ISOLATION: false runs the engine in the daemon's "
                             "process, to measure what the runner process costs")
    args = parser.parse_args()
    server = ""
    if args.peer == "llama-server":
        server = llama_server_path(args.llama_server)
    else:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"the peer is missing ({exc}): pip install 'llama-cpp-python[server]'") from None

    from helpers import start_smollm2_daemon

    daemon, url, model_path, workdir = start_smollm2_daemon("rkollama-peer-", args.threads,
                                                            OLLAMA_NUM_PARALLEL=str(args.parallel),
                                                            OLLAMA_FLASH_ATTENTION=args.flash_attention,
                                                            RKOLLAMA_ISOLATION=args.isolation)
    ours = int(url.rsplit(":", 1)[1])
    peer, theirs = start_peer(args.peer, model_path, args.threads, args.parallel, server,
                              workdir / "peer.log", args.flash_attention)
    sides = Sides((("rkollama", ours, "smollm2:135m"), ("peer", theirs, "peer")), [daemon.pid, peer.pid])
    try:
        for _, port, model in sides:
            chat_run(port, model, "warm-up", 8)
        print(f"peer {args.peer}" + (f" ({args.parallel} slots)" if server else "") +
              f"\nmodel {model_path}\nflash attention {args.flash_attention}, runner process "
              f"{'yes' if args.isolation == 'true' else 'no'}, "
              f"threads {args.threads}, {args.tokens} tokens, greedy, {CONTEXT} "
              f"tokens of context per request, {args.runs} runs, alternating; distinct prompts\n")
        single_client(sides, args.runs, args.tokens)
        aggregates: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        firsts: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        for i in range(max(1, args.runs // 2)):
            for name, port, model in sides.in_turn(i):
                sides.quiet()
                rate, ttfts = concurrent(port, model, args.clients, args.tokens, f"{i}")
                aggregates[name].append(rate)
                firsts[name] += ttfts
        o_agg, p_agg = statistics.median(aggregates["rkollama"]), statistics.median(aggregates["peer"])
        o_p95, p_p95 = (_p95(firsts["rkollama"]) * 1000, _p95(firsts["peer"]) * 1000)
        print(f"{args.clients} clients: aggregate {o_agg:.1f} vs {p_agg:.1f} tok/s, "
              f"ratio {o_agg / p_agg:.3f} "
              f"(target >= 1.0); p95 TTFT {o_p95:.0f} vs {p_p95:.0f} ms")
        turns: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        for i in range(args.runs):
            for name, port, model in sides.in_turn(i):
                sides.quiet()
                turns[name].append(next_turn(port, model, f"{i}"))
        o_turn = statistics.median(turns["rkollama"]) * 1000
        p_turn = statistics.median(turns["peer"]) * 1000
        print(f"next turn on ~1k tokens of history: TTFT {o_turn:.0f} vs {p_turn:.0f} ms (median; "
              f"target: below the peer)")
    finally:
        for process in (daemon, peer):
            process.terminate()
            process.wait(timeout=20)


def single_client(sides: "Sides", runs: int, tokens: int) -> None:
    """Alternating single-client runs: decode tokens/s and time to first token, printed."""
    rows = []
    for i in range(runs):
        measured = {}
        for name, port, model in sides.in_turn(i):
            sides.quiet()
            prompt = f"Run {i}: write a detailed essay about the history of astronomy."
            measured[name] = chat_run(port, model, prompt, tokens)
        row = [measured[name] for name, _, _ in sides]
        rows.append(row)
        (o_ttft, o_rate, o_n), (p_ttft, p_rate, p_n) = row
        print(f"{i:>3}  ttft rkollama {o_ttft * 1000:7.1f} ms  peer {p_ttft * 1000:7.1f} ms   "
              f"decode rkollama {o_rate:6.1f}  peer {p_rate:6.1f} tok/s  ({o_n}/{p_n} chunks)")
    o_rate = statistics.median(r[0][1] for r in rows)
    p_rate = statistics.median(r[1][1] for r in rows)
    added = statistics.median((r[0][0] - r[1][0]) * 1000 for r in rows)
    # Each run's ratio to the peer run beside it cancels what drifts between pairs.
    ratios = [r[0][1] / r[1][1] for r in rows if r[1][1]]
    low, high = median_interval(ratios)
    print(f"\nsingle client: decode {o_rate:.1f} vs {p_rate:.1f} tok/s, ratio {o_rate / p_rate:.3f} "
          f"(target >= 1.0; median of each pair's ratio {statistics.median(ratios):.3f}, 90% interval "
          f"{low:.3f}-{high:.3f}); TTFT rkollama - peer {added:+.1f} ms (median)")


def median_interval(values: list[float], rounds: int = 2000) -> tuple[float, float]:
    """A 90% bootstrap interval of the median of `values`: how far the machine's noise alone
    could move it (an interval that holds 1.0 cannot tell the two sides apart)."""
    import random

    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.05 * rounds)], medians[int(0.95 * rounds) - 1]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


if __name__ == "__main__":
    main()
