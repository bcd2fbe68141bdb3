"""`rkollama doctor --npu-check`: what the first board tells us.

Loads one NPU model in this process (not through the daemon: the report needs the runtime's
callbacks one by one), runs a scripted session — a plain answer, a second turn that should
reuse the KV cache, thinking on and off, a tool call and its result, an abort mid-answer, a
num_predict stop, a prompt longer than the window — and writes, for each step, pass or fail,
what was sent, the callback sequence (states, bytes, timings), time to first token and decode
rate; with the runtime's banner and log lines, the driver, the clocks and Rockchip's published
figure. A Markdown report and a JSON file; a crash midway leaves the steps done so far.
"""

import json
import platform as host_platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rkollama.backends.rkllm.backend import RKLLMBackend
from rkollama.config import Settings
from rkollama.core.parse import parse_output
from rkollama.core.types import (
    Done,
    DoneReason,
    Event,
    Generation,
    LoadOptions,
    Message,
    SamplingOptions,
    Token,
    ToolCall,
)
from rkollama.doctor import check
from rkollama.errors import RkollamaError
from rkollama.models.store import ModelSpec, ModelStore
from rkollama.platform import ROCKCHIP_DECODE, source_platform

STATES = {0: "NORMAL", 1: "WAITING", 2: "FINISH", 3: "ERROR"}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TRACE_LIMIT = 400
"""Callbacks kept per step in the report (the first ones; the count is always given)."""


@dataclass
class StepResult:
    name: str
    passed: bool = False
    detail: str = ""
    answer: str = ""
    thinking: str = ""
    done_reason: str = ""
    prompt_tokens: int = 0
    eval_tokens: int = 0
    ttft_ms: float | None = None
    decode_tps: float | None = None
    prompts_sent_as: str = ""
    sent: int = 0
    reused: int = 0
    continuations: int = 0
    callbacks: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list[Any])


@dataclass
class Outcome:
    report: Path
    data: Path
    steps: list[StepResult]


def pick_model(settings: Settings, name: str, progress: Callable[[str], None]) -> ModelSpec:
    """`name`, else the smallest pulled .rkllm model, else the first NPU text model the
    catalogue has for this board (the check asks text questions; a vision model, whose image
    tags say it is one, would also need its encoder), pulled now (its tokenizer with it)."""
    store = ModelStore(settings.models)
    if name:
        return store.resolve(name)
    npu = [spec for spec in store.list() if spec.format == "rkllm"]
    if npu:
        return min(npu, key=lambda spec: spec.size)
    from rkollama.models.catalog import Catalog
    from rkollama.models.hf import HubConfig
    from rkollama.models.pull import pull

    platform = source_platform(settings.platform, settings.rkllm_lib)
    catalog = Catalog(settings.modelfiles)
    offered = [tag for tag, entry in catalog.offered(platform)
               if entry.format == "rkllm" and not entry.rkllm.img_start]
    if not offered:
        raise RkollamaError(f"no NPU model is pulled and the catalogue has none for {platform}: "
                            "name one with --model")
    progress(f"pulling {offered[0]} (the catalogue's NPU model for {platform})")
    hub = HubConfig(settings.hf_endpoint, settings.hf_token)
    for line in pull(store, catalog, offered[0], platform, hub):
        if "total" not in line:
            progress(str(line.get("status", "")))
    return store.resolve(offered[0])


class _Session:
    """The loaded backend and one generation at a time, traced."""

    def __init__(self, backend: RKLLMBackend):
        self.backend = backend

    def ask(self, step: StepResult, gen: Generation,
            cancel_after: int | None = None) -> list[Event]:
        trace: list[tuple[float, int, bytes | None, int]] = []
        self.backend.trace_callbacks(trace)
        cancel = threading.Event()
        started = time.monotonic()
        events: list[Event] = []
        first: float | None = None
        tokens = 0
        try:
            for event in parse_output(self._raw(gen, cancel), gen):
                if isinstance(event, Token) and first is None:
                    first = time.monotonic()
                if isinstance(event, Token):
                    tokens += 1
                    if cancel_after is not None and tokens >= cancel_after:
                        cancel.set()
                events.append(event)
        finally:
            self.backend.trace_callbacks(None)
        facts = self.backend.last_run
        step.prompts_sent_as, step.sent, step.reused = facts.path, facts.sent, facts.reused
        step.continuations = facts.continuations
        step.callbacks = len(trace)
        step.trace = [{"ms": round((t - started) * 1000, 1), "state": STATES.get(s, str(s)),
                       "text": text.decode("utf-8", "backslashreplace") if text is not None else None,
                       "bytes": text.hex() if text is not None else None, "token_id": tid}
                      for t, s, text, tid in trace[:TRACE_LIMIT]]
        step.answer = "".join(e.text for e in events if isinstance(e, Token) and not e.thinking)
        step.thinking = "".join(e.text for e in events if isinstance(e, Token) and e.thinking)
        done = next((e for e in events if isinstance(e, Done)), None)
        if done is not None:
            step.done_reason, step.prompt_tokens, step.eval_tokens = done.reason.value, \
                done.prompt_tokens, done.eval_tokens
            if first is not None:
                step.ttft_ms = round((first - started) * 1000, 1)
            if done.eval_ms > 0:
                step.decode_tps = round(done.eval_tokens / (done.eval_ms / 1000), 2)
        return events

    def _raw(self, gen: Generation, cancel: threading.Event) -> Iterator[Event]:
        yield from self.backend.generate(gen, cancel)


def _chat(text: str, thinking: bool, think: bool = False, tools: list[Any] | None = None,
          options: SamplingOptions | None = None) -> Generation:
    return Generation(messages=[Message("user", text)], parse_thinking=thinking, think=think,
                      tools=tools or [], options=options or SamplingOptions())


def _steps(thinking: bool, window: int) -> list[tuple[str, Callable[[_Session, StepResult], None]]]:
    def plain(session: _Session, step: StepResult) -> None:
        session.ask(step, _chat("Say hello in one short sentence.", thinking))
        step.passed = bool(step.answer.strip()) and step.done_reason in ("stop", "length")
        step.detail = "a non-empty answer" if step.passed else "no answer"

    def second_turn(session: _Session, step: StepResult) -> None:
        first = StepResult("first turn")
        question = "Name one colour of the sky."
        think = thinking  # on for a thinking model, as clients ask one by default
        session.ask(first, _chat(question, thinking, think=think))
        gen = Generation(messages=[Message("user", question), Message("assistant", first.answer),
                                   Message("user", "And one more?")], parse_thinking=thinking, think=think)
        session.ask(step, gen)
        prefilled = session.backend.last_run.prefilled
        step.passed = bool(step.answer.strip()) and prefilled is not None and prefilled < step.prompt_tokens
        how = ("only the new tokens" if step.reused else
               "the whole prompt, keep_history=0" if not session.backend.last_run.keep_history else
               "the whole prompt")
        said = "an unknown number of" if prefilled is None else str(prefilled)
        step.detail = (f"prompt {step.prompt_tokens} tokens; sent {step.sent} ({how}); the runtime "
                       f"prefilled {said}: " + ("it reused the cache" if step.passed else "no reuse"))

    def think(on: bool) -> Callable[[_Session, StepResult], None]:
        def run(session: _Session, step: StepResult) -> None:
            session.ask(step, _chat("What is 17 times 3? Answer with the number.", True, think=on))
            step.passed = bool(step.answer.strip()) and bool(step.thinking) == on
            step.detail = (f"answer {len(step.answer)} chars, thinking {len(step.thinking)} chars, "
                           f"{step.continuations} run(s) added after the runtime stopped at </think>")
        return run

    def tool(session: _Session, step: StepResult) -> None:
        question = Message("user", "What is the weather in Paris? Use the tool.")
        gen = Generation(messages=[question], tools=WEATHER, parse_thinking=thinking, think=False)
        events = session.ask(step, gen)
        calls = [e for e in events if isinstance(e, ToolCall)]
        if not calls:
            step.detail = "the model did not call the tool"
            return
        follow = Generation(messages=[question, Message("assistant", "", tool_calls=[
            {"function": {"name": calls[0].name, "arguments": calls[0].arguments}}]),
            Message("tool", '{"sky": "clear", "celsius": 21}', tool_name=calls[0].name)],
            tools=WEATHER, parse_thinking=thinking, think=False)
        result = StepResult("tool result")
        session.ask(result, follow)
        step.passed = bool(result.answer.strip())
        step.detail = (f"called {calls[0].name}({json.dumps(calls[0].arguments)}); "
                       f"then: {result.answer[:80]!r}")

    def abort(session: _Session, step: StepResult) -> None:
        session.ask(step, _chat("Count from 1 to 200, one number per line.", thinking), cancel_after=5)
        after = StepResult("after abort")
        session.ask(after, _chat("Say yes.", thinking))
        step.passed = step.done_reason == DoneReason.CANCELLED.value and bool(after.answer.strip())
        step.detail = f"ended {step.done_reason!r}; the next answer: {after.answer[:40]!r}"

    def predict(session: _Session, step: StepResult) -> None:
        session.ask(step, _chat("Write a long story about a lighthouse.", thinking,
                                options=SamplingOptions(num_predict=8)))
        step.passed = step.done_reason == "length" and step.eval_tokens == 8
        step.detail = f"{step.eval_tokens} tokens, ended {step.done_reason!r}"

    def fitting(session: _Session, step: StepResult) -> None:
        text = "Remember this sentence. " * (window // 3) + "What did I ask you to remember?"
        session.ask(step, _chat(text, thinking))
        step.passed = bool(step.answer.strip()) and step.prompt_tokens <= window
        step.detail = f"{step.prompt_tokens} prompt tokens in a window of {window}"

    steps: list[tuple[str, Callable[[_Session, StepResult], None]]] = [
        ("plain answer", plain), ("second turn reuses the cache", second_turn)]
    if thinking:
        steps += [("thinking on", think(True)), ("thinking off", think(False))]
    steps += [("tool call and result", tool), ("abort mid-answer", abort), ("num_predict stop", predict),
              ("prompt over the window", fitting)]
    return steps


def run_check(settings: Settings, model: str, out_dir: Path,
              progress: Callable[[str], None] = lambda line: None) -> Outcome:
    """Load `model` (or the smallest pulled NPU model) and run the session; the report files."""
    spec = pick_model(settings, model, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    data_path, report_path = out_dir / f"npu-check-{stamp}.json", out_dir / f"npu-check-{stamp}.md"
    board = check(settings, None)
    soc = source_platform(settings.platform, settings.rkllm_lib)
    data: dict[str, Any] = {"model": spec.name.display(), "soc": soc, "machine": host_platform.machine(),
                  "board": dict(board.facts), "problems": [p for p, _ in board.problems], "steps": []}
    progress(f"loading {spec.name.display()} on the NPU")
    started = time.monotonic()
    try:
        backend = RKLLMBackend.load(spec, LoadOptions(), settings)
    except RkollamaError as exc:
        data["load"] = {"ok": False, "error": exc.message}
        _write(data_path, report_path, data)
        return Outcome(report_path, data_path, [])
    data["load"] = {"ok": True, "seconds": round(time.monotonic() - started, 2),
                    "runtime_lines": backend.init_lines, "context_length": backend.context_length,
                    "runtime": f"{backend.rt.identity.version or '?'} ({backend.rt.identity.family}, "
                               f"by {backend.rt.identity.how})"}
    steps: list[StepResult] = []
    try:
        session = _Session(backend)
        for name, action in _steps("thinking" in spec.capabilities, backend.context_length):
            step = StepResult(name)
            progress(f"step: {name}")
            try:
                action(session, step)
            except RkollamaError as exc:
                step.detail = f"error: {exc.message}"
            steps.append(step)
            data["steps"] = [asdict(s) for s in steps]
            _write(data_path, report_path, data)  # a crash later keeps what is done
    finally:
        backend.close()
    reference = ROCKCHIP_DECODE.get((spec.name.display().removesuffix(":latest"), data["soc"]))
    rates = [s.decode_tps for s in steps if s.decode_tps]
    data["decode_tps_median"] = sorted(rates)[len(rates) // 2] if rates else None
    data["rockchip_decode_tps"] = reference
    _write(data_path, report_path, data)
    return Outcome(report_path, data_path, steps)


def _write(data_path: Path, report_path: Path, data: dict[str, Any]) -> None:
    from rkollama.fsutil import write_bytes_atomic

    write_bytes_atomic(data_path, json.dumps(data, indent=2).encode())
    write_bytes_atomic(report_path, markdown(data).encode())


def markdown(data: dict[str, Any]) -> str:
    """The report a user attaches to a bug report."""
    lines = [f"# rkollama NPU check: {data['model']} on {data['soc']}", ""]
    load = data.get("load", {})
    if not load.get("ok", False):
        lines += [f"**Load failed:** {load.get('error', 'not reached')}", ""]
    else:
        lines += [f"- runtime: {load['runtime']}, context {load['context_length']}, "
                  f"loaded in {load['seconds']} s"]
    rate, reference = data.get("decode_tps_median"), data.get("rockchip_decode_tps")
    if rate:
        lines.append(f"- decode: {rate} tok/s (median of the steps)"
                     + (f", {rate / reference:.2f}× Rockchip's published {reference} tok/s"
                        if reference else ""))
    lines += ["", "| step | result | detail | TTFT ms | tok/s | sent as | sent | reused | callbacks |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in data.get("steps", []):
        lines.append(f"| {s['name']} | {'pass' if s['passed'] else 'FAIL'} | {s['detail']} | "
                     f"{s['ttft_ms'] or ''} | {s['decode_tps'] or ''} | {s['prompts_sent_as']} | "
                     f"{s['sent']} | {s['reused']} | {s['callbacks']} |")
    lines += ["", "## Board", ""] + [f"- {k}: {v}" for k, v in data.get("board", {}).items()]
    if data.get("problems"):
        lines += ["", "## Problems doctor sees", ""] + [f"- {p}" for p in data["problems"]]
    if load.get("runtime_lines"):
        lines += ["", "## What the runtime printed while loading", "", "```", *load["runtime_lines"], "```"]
    lines += ["", "The JSON file beside this report has every callback of every step (states, bytes, "
              "timings).", ""]
    return "\n".join(lines)
