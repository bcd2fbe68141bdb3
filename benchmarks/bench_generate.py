"""Decode speed and time to first token: rkollama's /api/generate (streaming, real daemon) versus
llama-cpp-python called directly, side by side in one run, same model, prompt, threads and greedy
sampling. Prints one line per run and a summary with the ratios the targets are stated in.

    .venv/bin/python benchmarks/bench_generate.py [--runs 9] [--tokens 256] [--threads 2]

Targets (issue #7, with the engine in a runner process): decode tokens/s ratio >= 0.98;
median added time to first token <= 5 ms.
"""

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

PROMPT = ("<|im_start|>user\nRun {i}: write a detailed essay about the history of astronomy, "
          "from ancient observers to modern space telescopes.<|im_end|>\n<|im_start|>assistant\n")


def direct_run(llm, prompt: str, tokens: int):
    """(time to first token s, decode tokens/s, tokens) calling llama-cpp-python directly."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for _chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_k=40,
                                        top_p=0.9, min_p=0.0, repeat_penalty=1.0, stream=True):
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
    return first - start, (count - 1) / (last - first), count


def server_run(host: str, port: int, prompt: str, tokens: int):
    """The same through rkollama: streaming /api/generate, raw prompt, greedy, timed by the client."""
    body = json.dumps({"model": "smollm2:135m", "prompt": prompt, "raw": True, "stream": True,
                       "options": {"temperature": 0, "num_predict": tokens, "top_k": 40,
                                   "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0}})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    first = last = None
    count = 0
    final = {}
    for line in response:
        obj = json.loads(line)
        now = time.perf_counter()
        if obj.get("done"):
            final = obj
            break
        first = first or now
        last = now
        count += 1
    conn.close()
    return first - start, (count - 1) / (last - first), count, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ttft-runs", type=int, default=31,
                        help="short (4-token) runs for time to first token")
    args = parser.parse_args()

    from helpers import start_smollm2_daemon
    from llama_cpp import Llama

    daemon, url, model_path, _ = start_smollm2_daemon("rkollama-bench-", args.threads)
    host, port = url.split("//")[1].split(":")
    port = int(port)
    try:
        llm = Llama(model_path=model_path, n_ctx=2048, n_batch=512, n_threads=args.threads,
                    n_threads_batch=args.threads, verbose=False)
        server_run(host, port, PROMPT.format(i="warm-up"), 8)  # load the model in the daemon
        direct_run(llm, PROMPT.format(i="warm-up"), 8)
        print(f"model {model_path}\nthreads {args.threads}, {args.tokens} tokens, greedy, {args.runs} runs"
              f" (alternating; a distinct prompt per run so no side reuses a cached prefix)\n")
        print(f"{'run':>3}  {'direct ttft':>11}  {'server ttft':>11}  {'added':>8}  "
              f"{'direct tok/s':>12}  {'server tok/s':>12}  {'ratio':>6}  tokens")
        rows = []
        for i in range(args.runs):
            prompt = PROMPT.format(i=i)
            d_ttft, d_rate, d_n = direct_run(llm, prompt, args.tokens)
            s_ttft, s_rate, s_n, final = server_run(host, port, prompt, args.tokens)
            rows.append((d_ttft, s_ttft, d_rate, s_rate))
            print(f"{i:>3}  {d_ttft * 1000:>9.1f}ms  {s_ttft * 1000:>9.1f}ms  "
                  f"{(s_ttft - d_ttft) * 1000:>6.1f}ms  {d_rate:>12.1f}  {s_rate:>12.1f}  "
                  f"{s_rate / d_rate:>6.3f}  {d_n}/{s_n}")
        d_med = statistics.median(r[2] for r in rows)
        s_med = statistics.median(r[3] for r in rows)
        pair = statistics.median(r[3] / r[2] for r in rows)
        print(f"\nmedian decode: direct {d_med:.1f} tok/s, rkollama {s_med:.1f} tok/s, "
              f"ratio {s_med / d_med:.3f} (target >= 0.98); median of per-run ratios {pair:.3f}")
        # Time to first token from short runs: a long decode just before a prompt (the other
        # side's run) leaves llama.cpp threads spinning and skews single first-token samples.
        added = []
        for i in range(args.ttft_runs):
            prompt = PROMPT.format(i=f"t{i}")
            d_ttft = direct_run(llm, prompt, 4)[0]
            s_ttft = server_run(host, port, prompt, 4)[0]
            added.append((s_ttft - d_ttft) * 1000)
        quartiles = statistics.quantiles(added, n=4)
        print(f"median added time to first token: {statistics.median(added):.1f} ms over "
              f"{args.ttft_runs} short runs (quartiles {quartiles[0]:.1f} / {quartiles[2]:.1f} ms; "
              f"target <= 5 ms)")
        print(f"server-reported eval rate of the last run: "
              f"{final['eval_count'] / final['eval_duration'] * 1e9:.1f} tok/s")
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)


if __name__ == "__main__":
    main()
