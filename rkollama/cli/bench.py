"""`rkollama bench`: time to first token, prefill and decode speed, and how they hold up with
several clients, against any Ollama-compatible server (rkollama, Ollama, rkllama).

Figures come from the server's own counters (`prompt_eval_count/duration`, `eval_count/duration`,
`load_duration`) and from the wall clock (time to first token as the client sees it); memory from
`/api/ps`. The first run of each model is a warm-up (its load time is reported as cold load) and
is left out of the statistics.
"""

import json
import statistics
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.live import Live

from rkollama.api.types import GenerateRequest, GenerateResponse
from rkollama.cli import common, render
from rkollama.client import Client

PROMPTS = {
    "short": "Why is the sky blue?",
    "medium": ("Explain, step by step and with examples, how a transformer language model turns a "
               "sequence of tokens into a prediction of the next token: embeddings, positional "
               "information, self-attention with queries, keys and values, multiple heads, the "
               "feed-forward layers, residual connections, layer normalisation, and finally the "
               "projection to the vocabulary and the softmax. Then say how sampling settings such "
               "as temperature, top-k and top-p change which token is chosen, and why a key-value "
               "cache makes generation faster."),
    "long": " ".join(["Summarise the following notes in three sentences."] +
                     [f"Note {i}: the board ran model number {i} at a steady speed while the "
                      "fan stayed quiet and the temperature held below sixty degrees." for i in range(40)]),
}
QUALITY = (
    ("What is the capital of France? Answer with one word.", ("paris",)),
    ("What is 12 plus 30? Answer with the number only.", ("42",)),
    ("Which planet is the largest in the solar system? Answer with one word.", ("jupiter",)),
    ("What colour is a clear daytime sky? Answer with one word.", ("blue",)),
    ("Translate 'thank you' into French.", ("merci",)),
)
"""Quick sanity prompts with the words a right answer contains (case-insensitive): a speed figure
means little if the model (or a bad conversion) answers nonsense."""



@dataclass
class Run:
    model: str
    concurrency: int
    ttft_ms: float
    prefill_tps: float
    decode_tps: float
    prompt_tokens: int
    eval_tokens: int
    load_ms: float


@dataclass
class Report:
    host: str
    prompt: str
    runs: list[Run] = field(default_factory=list)
    cold_load_ms: dict[str, Any] = field(default_factory=dict[str, Any])
    memory_bytes: dict[str, Any] = field(default_factory=dict[str, Any])
    daemon_rss_bytes: dict[str, Any] = field(default_factory=dict[str, Any])
    """Resident memory of the server and its runner processes after each model's runs, when the
    server runs on this machine."""
    quality: dict[str, Any] = field(default_factory=dict[str, Any])  # model -> {"passed", "total", "answers"}
    aggregate_tps: dict[str, Any] = field(default_factory=dict[str, Any])  # "model@concurrency" -> tokens/s

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for model in dict.fromkeys(r.model for r in self.runs):
            for level in sorted({r.concurrency for r in self.runs if r.model == model}):
                runs = [r for r in self.runs if r.model == model and r.concurrency == level]
                row = {"model": model, "concurrency": level, "runs": len(runs)}
                for key in ("ttft_ms", "prefill_tps", "decode_tps"):
                    row[key] = _stats([getattr(r, key) for r in runs])
                row["aggregate_tps"] = self.aggregate_tps.get(f"{model}@{level}", 0.0)
                rows.append(row)
        return rows


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] if ordered else 0.0
    return {"mean": statistics.fmean(ordered) if ordered else 0.0,
            "median": statistics.median(ordered) if ordered else 0.0,
            "min": ordered[0] if ordered else 0.0, "max": ordered[-1] if ordered else 0.0, "p95": p95}


def one_run(cli: Client, model: str, prompt: str, num_predict: int, concurrency: int) -> Run:
    """One streaming /api/generate, timed by the client and by the server's counters."""
    start = time.perf_counter()
    first: float | None = None
    final: GenerateResponse | None = None
    body: GenerateRequest = {"model": model, "prompt": prompt,
                             "options": {"num_predict": num_predict, "temperature": 0}}
    for line in cli.generate(body):
        if first is None and (line.get("response") or line.get("thinking")):
            first = time.perf_counter()
        if line.get("done"):
            final = line
    if final is None or "eval_count" not in final:
        raise common.fail(f"{model}: the server did not report eval_count/eval_duration, so "
                          "there is nothing to measure")
    first = first or time.perf_counter()

    def rate(count: int, duration_ns: int) -> float:
        return count / (duration_ns / 1e9) if duration_ns else 0.0

    return Run(model, concurrency, (first - start) * 1000.0,
               rate(final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)),
               rate(final.get("eval_count", 0), final.get("eval_duration", 0)),
               final.get("prompt_eval_count", 0), final.get("eval_count", 0),
               final.get("load_duration", 0) / 1e6)


def quality(cli: Client, model: str) -> dict[str, Any]:
    """The QUALITY prompts, greedy and short: how many answers contain what they should."""
    answers, passed = [], 0
    for prompt, expected in QUALITY:
        text = "".join(line.get("response", "") for line in cli.generate(
            {"model": model, "prompt": prompt, "options": {"num_predict": 48, "temperature": 0}}))
        ok = any(word in text.lower() for word in expected)
        passed += ok
        answers.append({"prompt": prompt, "answer": text.strip(), "passed": ok})
    return {"passed": passed, "total": len(QUALITY), "answers": answers}


def local_rss(host: str) -> int | None:
    """Resident bytes of the server behind `host` when it listens on this machine."""
    from urllib.parse import urlsplit

    from rkollama.cli.procmem import listening_pid, tree_rss

    parts = urlsplit(host if "://" in host else f"http://{host}")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    pid = listening_pid(parts.port or 11434)
    return tree_rss(pid) if pid else None


def _work(cli: Client, model: str, prompt: str, num_predict: int, level: int, n: int,
          results: list[Run], errors: list[BaseException]) -> None:
    """One client thread of a concurrency level: run `n`, its result or error appended."""
    # A distinct first line per run: no run reuses another's cached prompt.
    try:
        results.append(one_run(cli, model, f"(run {n})\n{prompt}", num_predict, level))
    except BaseException as exc:  # reported after the threads end
        errors.append(exc)


@dataclass(frozen=True)
class Plan:
    """What a bench measures: each model, at each concurrency level, `runs` times."""

    models: list[str]
    prompt: str
    runs: int
    num_predict: int
    """Tokens to generate per run."""
    levels: list[int]
    """Concurrent clients per measurement."""
    check_quality: bool = False


def bench(cli: Client, host: str, plan: Plan,
          progress: Callable[[str, int, Run], None] | None = None) -> Report:
    report = Report(host=host, prompt=plan.prompt)
    for model in plan.models:
        warm = one_run(cli, model, plan.prompt, plan.num_predict, 1)  # loads the model; left out
        report.cold_load_ms[model] = warm.load_ms
        for level in plan.levels:
            started = time.perf_counter()
            results: list[Run] = []
            for index in range(plan.runs):
                results += _concurrent(cli, model, plan, level, index * level)
                if progress:
                    progress(model, level, results[-1])
            wall = time.perf_counter() - started
            report.runs += results
            report.aggregate_tps[f"{model}@{level}"] = sum(r.eval_tokens for r in results) / wall
        for loaded in cli.ps():
            if loaded.get("name") == model or loaded.get("model") == model:
                report.memory_bytes[model] = loaded.get("size", 0)
        rss = local_rss(host)
        if rss:
            report.daemon_rss_bytes[model] = rss
        if plan.check_quality:
            report.quality[model] = quality(cli, model)
    return report


def _concurrent(cli: Client, model: str, plan: Plan, level: int, first_seed: int) -> list[Run]:
    """`level` runs at once; the first error of any ends the bench."""
    results: list[Run] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_work, args=(cli, model, plan.prompt, plan.num_predict, level,
                                                   first_seed + k, results, errors))
               for k in range(level)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class LiveView:
    """Progress while the runs go: a live table on a terminal (rich), plain lines otherwise."""

    def __init__(self, runs: int):
        self.runs = runs
        self.rows: dict[tuple[str, int], list[Run]] = {}
        self.live: Live | None = None

    def __enter__(self) -> "LiveView":
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.__exit__(kind, exc, tb)

    def update(self, model: str, level: int, run: Run) -> None:
        done = self.rows.setdefault((model, level), [])
        done.append(run)
        if self.live is not None:
            self.live.update(self._table())
        else:
            print(f"{model} ×{level}: TTFT {run.ttft_ms:.0f} ms, prefill {run.prefill_tps:.1f} tok/s, "
                  f"decode {run.decode_tps:.1f} tok/s", file=sys.stderr)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table("model", "clients", "runs", "TTFT ms", "prefill tok/s", "decode tok/s",
                      title="rkollama bench")
        for (model, level), done in self.rows.items():
            last = done[-1]
            table.add_row(model, str(level), f"{len(done)}/{self.runs}", f"{last.ttft_ms:.0f}",
                          f"{last.prefill_tps:.1f}", f"{last.decode_tps:.1f}")
        return table


def markdown(report: Report) -> str:
    lines = [f"# rkollama bench — {report.host}", "",
             "| model | clients | runs | TTFT ms (median / p95) | prefill tok/s (median) | "
             "decode tok/s (median / min / max) | aggregate tok/s |", "|---|---|---|---|---|---|---|"]
    for row in report.summary():
        t, p, d = row["ttft_ms"], row["prefill_tps"], row["decode_tps"]
        lines.append(f"| {row['model']} | {row['concurrency']} | {row['runs']} | {t['median']:.0f} / "
                     f"{t['p95']:.0f} | {p['median']:.1f} | {d['median']:.1f} / {d['min']:.1f} / "
                     f"{d['max']:.1f} | {row['aggregate_tps']:.1f} |")
    for model, ms in report.cold_load_ms.items():
        memory = report.memory_bytes.get(model)
        rss = report.daemon_rss_bytes.get(model)
        lines.append(f"\n{model}: cold load {ms:.0f} ms" +
                     (f", {render.human_bytes(memory)} resident (/api/ps)" if memory else "") +
                     (f", server RSS {render.human_bytes(rss)}" if rss else ""))
        if model in report.quality:
            q = report.quality[model]
            lines.append(f"{model}: quality prompts {q['passed']}/{q['total']} answered right")
    return "\n".join(lines) + "\n"


def plot_png(report: Report, path: Path) -> None:
    """A bar chart of median decode tokens/s (blue) and TTFT (orange, scaled to the same
    height) per model and number of clients, as a PNG written without a plotting library."""
    rows = report.summary()
    width, height, bar, gap = max(200, 60 * len(rows) + 40), 220, 20, 20
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    top_decode = max((r["decode_tps"]["median"] for r in rows), default=1.0) or 1.0
    top_ttft = max((r["ttft_ms"]["median"] for r in rows), default=1.0) or 1.0
    for index, row in enumerate(rows):
        x = 20 + index * (2 * bar + gap)
        bars = ((row["decode_tps"]["median"], top_decode, (31, 119, 180)),
                (row["ttft_ms"]["median"], top_ttft, (255, 127, 14)))
        for offset, (value, top, colour) in enumerate(bars):
            h = int((height - 20) * value / top)
            for y in range(height - 10 - h, height - 10):
                for dx in range(bar - 2):
                    pixels[y][x + offset * bar + dx] = colour
    raw = b"".join(b"\x00" + bytes(c for px in line for c in px) for line in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path.write_bytes(png)


def command(models: list[str] = typer.Argument(..., help="Models to measure"),
            host: str = typer.Option("", "--host",
                                     help="Any Ollama-compatible server (default: OLLAMA_HOST)"),
            runs: int = typer.Option(3, "--runs", min=1, help="Measured runs per model and concurrency"),
            num_predict: int = typer.Option(128, "--num-predict", min=1, help="Tokens to generate per run"),
            prompt: str = typer.Option("medium", "--prompt",
                                       help="short, medium (~128 tokens), long, or your own text"),
            concurrency: str = typer.Option("1", "--concurrency",
                                            help="Comma-separated client counts, e.g. 1,2,4"),
            json_file: str = typer.Option("", "--json", help="Write the report as JSON"),
            markdown_file: str = typer.Option("", "--markdown", help="Write the report as Markdown"),
            plot_file: str = typer.Option("", "--plot", help="Write a PNG chart of decode tok/s and TTFT"),
            check_quality: bool = typer.Option(False, "--quality", help="Also ask a few quick questions "
                                               "with known answers and report how many come out right"),
            ) -> None:
    """Measure models on a server: TTFT, prefill and decode tokens/s, under concurrency."""
    try:
        levels = sorted({int(x) for x in concurrency.split(",") if x.strip()})
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        raise common.fail(f"invalid --concurrency {concurrency!r}: use numbers such as 1,2,4") from None
    cli = common.for_settings(common.settings(), host) if host else common.client(autostart=True)
    text = PROMPTS.get(prompt, prompt)

    view = LiveView(runs)
    with common.daemon_errors(host or "the server"), view:
        plan = Plan(models, text, runs, num_predict, levels, check_quality)
        report = bench(cli, host or common.settings().base_url(), plan, view.update)
    print(markdown(report), end="")
    from rkollama.platform import ROCKCHIP_DECODE, detect_soc

    soc = detect_soc()  # this machine's board: a ratio only means something measured here
    for row in report.summary():
        reference = ROCKCHIP_DECODE.get((row["model"], soc))
        if reference and row["concurrency"] == 1 and not host:
            print(f"{row['model']}: {row['decode_tps']['median'] / reference:.2f}× Rockchip's "
                  f"published {reference} tok/s ({soc.upper()})")
    if json_file:
        Path(json_file).write_text(json.dumps({"report": asdict(report), "summary": report.summary()},
                                              indent=2))
    if markdown_file:
        Path(markdown_file).write_text(markdown(report))
    if plot_file:
        plot_png(report, Path(plot_file))
