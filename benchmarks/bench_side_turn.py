"""A chat's next turn after a side request, rkollama beside llama-server, one slot each (Ollama's
default OLLAMA_NUM_PARALLEL): a conversation of ~1.3k tokens answers a question, then a short
request that shares nothing with it arrives (Open WebUI's title or follow-ups request), then the
conversation's next turn. Prints that turn's time to first token on each side, and the same
turn's without the side request between (the plain next turn), medians of the runs.

    .venv/bin/python benchmarks/bench_side_turn.py [--llama-server PATH] [--runs 5]
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_peer import _turn, llama_server_path, side_by_side, side_by_side_options  # noqa: E402

TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat "
              "history.\n### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
              "### Chat History:\n<chat_history>\nUSER: {question}\nASSISTANT: {answer}\n</chat_history>")


def conversation(tag: str) -> list[dict[str, str]]:
    """~1.3k tokens of history ending in a question."""
    facts = " ".join(f"Fact {i}: the lighthouse at cape {i} was built in {1800 + i}." for i in range(60))
    return [{"role": "user", "content": f"Conversation {tag}. {facts}"},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Which cape is first?"}]


def next_turn_after(port: int, model: str, tag: str, side: bool) -> float:
    """Seconds to the first token of the conversation's second turn, with or without a side
    request between the two turns."""
    history = conversation(tag)
    _turn(port, model, history, 8)
    if side:
        title = TITLE_TASK.replace("{question}", "Which cape is first?").replace("{answer}", "Cape 0.")
        _turn(port, model, [{"role": "user", "content": title}], 16)
    return _turn(port, model, history + [{"role": "assistant", "content": "Cape 0."},
                                         {"role": "user", "content": "And the last?"}], 8)


def main() -> None:
    parser = side_by_side_options(__doc__, 5)
    args = parser.parse_args()
    server = llama_server_path(args.llama_server)
    with side_by_side("rkollama-side-", args.threads, 1, server) as sides:
        times: dict[tuple[str, bool], list[float]] = {}
        for run in range(args.runs):
            for side in (True, False):
                for name, port, model in sides.in_turn(run):
                    sides.quiet()
                    seconds = next_turn_after(port, model, f"{run}-{side}", side)
                    times.setdefault((name, side), []).append(seconds)
                    print(f"{run:>3}  {name:<12} {'after a side request' if side else 'plain':<21} "
                          f"{seconds * 1000:7.0f} ms", flush=True)
        print()
        for side in (True, False):
            ours = statistics.median(times[("rkollama", side)]) * 1000
            theirs = statistics.median(times[("llama-server", side)]) * 1000
            what = "next turn after a side request" if side else "plain next turn"
            print(f"{what}: time to first token {ours:.0f} vs {theirs:.0f} ms (rkollama vs llama-server, "
                  f"one slot each, median of {args.runs})")


if __name__ == "__main__":
    main()
