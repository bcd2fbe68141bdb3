"""What the worker-process boundary costs per token on the NPU engine, measured side by side on
the C test double of librkllmrt.so (which answers as fast as it can, so only overhead remains):
RKLLMBackend in the daemon's process versus the same behind RunnerBackend (a runner process).

    .venv/bin/python benchmarks/bench_npu_worker.py [--tokens 5000] [--runs 5] [--family 1.3]

Compare the added microseconds per token with a decode step on the NPU (~30 ms for a 1.5B model).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def per_token_us(backend, gen) -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    for _event in backend.generate(gen, threading.Event()):
        count += 1
    return (time.perf_counter() - start) / max(count, 1) * 1e6, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--family", default="1.3", choices=["1.2", "1.3"])
    args = parser.parse_args()

    from helpers import register_fake

    from rkollama.backends.rkllm.backend import RKLLMBackend
    from rkollama.backends.runner import RunnerBackend
    from rkollama.config import Settings
    from rkollama.core.types import Generation, LoadOptions, SamplingOptions
    from rkollama.models.store import ModelStore

    work = Path(tempfile.mkdtemp(prefix="rkollama-npu-bench-"))
    lib = work / "librkllmrt.so"
    flags = ["-DRKLLM_ABI_13"] if args.family == "1.3" else []
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-pthread", *flags,
                    str(ROOT / "tests" / "fakes" / "fake_rkllm.c"), "-o", str(lib)], check=True)
    store = ModelStore(work / "models")
    spec = register_fake(store, "bench", source={"path": "m.rkllm", "format": "rkllm"},
                         rkllm={"max_context_len": 65536, "max_new_tokens": 65536})
    settings = Settings.from_env({}, models=work / "models", rkllm_lib=str(lib))
    prompt = " ".join(f"w{i}" for i in range(args.tokens))
    gen = Generation(prompt=prompt, options=SamplingOptions(num_predict=-1))

    direct = RKLLMBackend.load(spec, LoadOptions(), settings)
    worker = RunnerBackend.load(spec, LoadOptions(), settings, backend_cls=RKLLMBackend)
    rows = []
    for _ in range(args.runs):
        d_us, d_n = per_token_us(direct, gen)
        w_us, w_n = per_token_us(worker, gen)
        rows.append((d_us, w_us))
        print(f"in process {d_us:7.1f} µs/token   worker process {w_us:7.1f} µs/token   ({d_n}/{w_n} events)")
    direct.close()
    worker.close()
    added = statistics.median(w - d for d, w in rows)
    print(f"\nmedian added by the process boundary: {added:.1f} µs per token "
          f"({added / 30000 * 100:.2f} % of a 30 ms NPU decode step)")


if __name__ == "__main__":
    main()
