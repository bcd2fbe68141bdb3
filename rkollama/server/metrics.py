"""What the daemon is doing, in Prometheus' text format (`GET /metrics`).

One `Metrics` per app, with its own registry (never prometheus_client's global one): counters
and histograms updated by the routes and the scheduler's observer hooks, and gauges read at
scrape time from the scheduler and the board.
"""

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from rkollama import board
from rkollama.core.types import Done
from rkollama.scheduler import Observer, Scheduler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds from a request reaching the scheduler to its first token (queue and load included)."""
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
"""Seconds per generated token: NPU decode steps are 20-100 ms, a small CPU model's ~10 ms."""


class Metrics(Observer):
    """The daemon's metrics; also the scheduler's observer (`generation_finished`, `runner_died`)."""

    def __init__(self, scheduler: Scheduler, sysfs_root: Path = Path("/")):
        self.registry = CollectorRegistry()
        self.requests = Counter("rkollama_http_requests", "HTTP requests answered, by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.ttft = Histogram("rkollama_time_to_first_token_seconds",
                              "Seconds from a request reaching the scheduler to its first token "
                              "(queue and load included)", ["model"], buckets=TTFT_BUCKETS,
                              registry=self.registry)
        self.token_latency = Histogram("rkollama_token_latency_seconds",
                                       "Mean seconds per generated token, one observation per generation",
                                       ["model"], buckets=TOKEN_BUCKETS, registry=self.registry)
        self.generated = Counter("rkollama_generated_tokens", "Tokens generated", ["model"],
                                 registry=self.registry)
        self.prompt = Counter("rkollama_prompt_tokens", "Prompt tokens evaluated", ["model"],
                              registry=self.registry)
        self.crashes = Counter("rkollama_runner_crashes", "Runner processes that died (the next request "
                               "loads the model again)", ["model"], registry=self.registry)
        self.pulls = Counter("rkollama_pulls", "Pulls finished, by outcome", ["outcome"],
                             registry=self.registry)
        self.registry.register(_Live(scheduler, sysfs_root))

    # -- scheduler observer ----------------------------------------------------------------------
    def generation_finished(self, model: str, done: Done, first_token_s: float | None) -> None:
        if first_token_s is not None:
            self.ttft.labels(model).observe(first_token_s)
        if done.eval_tokens > 0:
            self.token_latency.labels(model).observe(done.eval_ms / 1000.0 / done.eval_tokens)
        self.generated.labels(model).inc(done.eval_tokens)
        self.prompt.labels(model).inc(done.prompt_tokens)

    def runner_died(self, model: str) -> None:
        self.crashes.labels(model).inc()

    # -- routes ----------------------------------------------------------------------------------
    def request(self, route: str, method: str, status: int) -> None:
        self.requests.labels(route, method, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """Gauges read when scraped: queue, loaded models and their memory, the board."""

    def __init__(self, scheduler: Scheduler, sysfs_root: Path):
        self.scheduler, self.root = scheduler, sysfs_root

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("rkollama_queue_depth", "Requests waiting for a model")
        queue.add_metric([], self.scheduler.waiting)
        yield queue
        loaded = self.scheduler.ps()
        count = GaugeMetricFamily("rkollama_loaded_models", "Models loaded now")
        count.add_metric([], len(loaded))
        yield count
        memory = GaugeMetricFamily("rkollama_model_memory_bytes", "Memory of each loaded model "
                                   "(as /api/ps reports it)", labels=["model"])
        for model in loaded:
            memory.add_metric([model.spec.name.display()], model.size)
        yield memory
        readings = board.read(self.root)
        for name, text, label, values in (
                ("rkollama_npu_load_percent", "NPU load per core", "core", readings.npu_load),
                ("rkollama_temperature_celsius", "Thermal zone temperatures", "zone", readings.temperatures),
                ("rkollama_cpu_frequency_hertz", "Current CPU frequencies", "cpu", readings.cpu_freq_hz)):
            if values:  # absent where the kernel does not expose it, rather than a zero
                family = GaugeMetricFamily(name, text, labels=[label])
                for key, value in values.items():
                    family.add_metric([key], value)
                yield family
        if readings.npu_freq_hz is not None:
            yield GaugeMetricFamily("rkollama_npu_frequency_hertz", "Current NPU frequency",
                                    value=readings.npu_freq_hz)
