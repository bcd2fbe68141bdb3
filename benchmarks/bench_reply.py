"""A chat's next turn as a chat client sends it, rkollama beside llama-server, one slot each
(Ollama's default OLLAMA_NUM_PARALLEL): a conversation of ~1.3k tokens answers a question; the
client sends that answer back with the next question, at once (an agent, a script) or after
the user has read it (`--pause` seconds). Prints the next turn's time to first token on each
side for both, medians of the runs.

    .venv/bin/python benchmarks/bench_reply.py [--llama-server PATH] [--runs 5] [--pause 3]
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_peer import chat_turn, llama_server_path, side_by_side, side_by_side_options  # noqa: E402
from bench_side_turn import conversation  # noqa: E402


def reply(port: int, model: str, tag: str, pause: float) -> float:
    """Seconds to the first token of the conversation's next turn, which sends the first
    turn's answer back `pause` seconds after it ended."""
    history = conversation(tag)
    _, text = chat_turn(port, model, history, 24)
    time.sleep(pause)
    return chat_turn(port, model, history + [{"role": "assistant", "content": text},
                                             {"role": "user", "content": "And the last?"}], 8)[0]


def main() -> None:
    parser = side_by_side_options(__doc__, 5)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds the user reads the answer")
    args = parser.parse_args()
    server = llama_server_path(args.llama_server)
    pauses = (0.0, args.pause)
    with side_by_side("rkollama-reply-", args.threads, 1, server) as sides:
        times: dict[tuple[str, float], list[float]] = {}
        for run in range(args.runs):
            for pause in pauses:
                for name, port, model in sides.in_turn(run):
                    sides.quiet()
                    seconds = reply(port, model, f"{run}-{pause}", pause)
                    times.setdefault((name, pause), []).append(seconds)
                    print(f"{run:>3}  {name:<12} pause {pause:4.1f} s {seconds * 1000:7.0f} ms", flush=True)
        print()
        for pause in pauses:
            ours = statistics.median(times[("rkollama", pause)]) * 1000
            theirs = statistics.median(times[("llama-server", pause)]) * 1000
            print(f"next turn {pause:.1f} s after the answer: time to first token {ours:.0f} vs {theirs:.0f} "
                  f"ms (rkollama vs llama-server, one slot each, median of {args.runs})")


if __name__ == "__main__":
    main()
