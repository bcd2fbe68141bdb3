"""CPU engine speed by thread count, on the machine it runs on: whether the default thread count
(one per physical core of the fastest kind: the big cores of an RK3588/RK3576) is the fastest.

Talks to a running daemon (`rkollama serve`) through /api/generate with `options.num_thread`
(each count reloads the model: a load option), and reads the server's own counters
(`eval_count/eval_duration`, `prompt_eval_count/prompt_eval_duration`). Each count's runs come in
two rounds, in opposite orders, so that a machine warming up or throttling weighs on every count
alike. The daemon's default is measured as a request without `num_thread`.

    .venv/bin/python benchmarks/bench_threads.py --model qwen2.5:0.5b [--threads 2,4,6,8]
        [--runs 3] [--tokens 64] [--host http://127.0.0.1:11434]

On a board, run it for a GGUF model (CPU engine) with the frequencies pinned
(`sudo rkollama doctor --pin-frequencies`); `rkollama doctor` says which cores the default uses.
"""

import argparse
import json
import os
import statistics
import urllib.request

PROMPT = ("Run {i}. Write a long, detailed essay about the history of lighthouses, their keepers, "
          "the lenses they used and the ships they saved, from antiquity to automation.")


def run(host: str, model: str, threads: int | None, tokens: int, i: int) -> tuple[float, float]:
    """(decode tokens/s, prompt tokens/s) of one greedy generation, by the server's counters."""
    options: dict[str, int | float] = {"temperature": 0, "num_predict": tokens}
    if threads is not None:
        options["num_thread"] = threads
    body = json.dumps({"model": model, "prompt": PROMPT.format(i=i), "stream": False,
                       "options": options, "keep_alive": "10m"}).encode()
    request = urllib.request.Request(f"{host}/api/generate", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        done = json.load(response)
    decode = done["eval_count"] / max(done["eval_duration"], 1) * 1e9
    prompt = done["prompt_eval_count"] / max(done["prompt_eval_duration"], 1) * 1e9
    return decode, prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default=os.environ.get("OLLAMA_HOST_URL", "http://127.0.0.1:11434"))
    parser.add_argument("--threads", default="", help="comma-separated counts (default: 1 to the cores)")
    parser.add_argument("--runs", type=int, default=3, help="runs per count and round")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    counts: list[int | None] = [None, *(int(t) for t in args.threads.split(",") if t)] if args.threads \
        else [None, *range(1, cores + 1)]
    decode: dict[int | None, list[float]] = {count: [] for count in counts}
    prompt: dict[int | None, list[float]] = {count: [] for count in counts}
    i = 0
    for order in (counts, counts[::-1]):
        for count in order:
            run(args.host, args.model, count, 4, i)  # loads the model with this count; not counted
            for _ in range(args.runs):
                i += 1
                tok_s, pp_s = run(args.host, args.model, count, args.tokens, i)
                decode[count].append(tok_s)
                prompt[count].append(pp_s)
    print(f"model {args.model}, {args.tokens} tokens, {2 * args.runs} runs per count in two rounds")
    for count in counts:
        name = "default" if count is None else f"{count} threads"
        print(f"{name:>12}: decode {statistics.median(decode[count]):6.1f} tok/s, "
              f"prompt {statistics.median(prompt[count]):7.1f} tok/s (medians)")
    best = max(counts[1:], key=lambda c: statistics.median(decode[c]))
    ratio = statistics.median(decode[None]) / statistics.median(decode[best])
    print(f"fastest count: {best} threads; the default decodes at {ratio:.3f}x of it")


if __name__ == "__main__":
    main()
