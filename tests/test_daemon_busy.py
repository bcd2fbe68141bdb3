"""The daemon tells every loaded engine when it starts running requests (of any model) and when
it has none left (Backend.daemon_busy): the CPU engine's idle work — reading a chat's next turn
ahead — waits meanwhile, so it never takes CPU from another model's request. Through the
scheduler with scripted engines, and through a real runner process."""

import time
from dataclasses import replace

from rkollama.backends.fake import ScriptedBackend, factory
from rkollama.core.types import Generation, LoadOptions, Message, Token
from rkollama.scheduler import Scheduler


def gen(text: str = "hello there") -> Generation:
    return Generation(messages=[Message("user", text)])


def test_every_loaded_engine_hears_when_any_model_starts_and_stops_running(settings, store, script, clock):
    sched = Scheduler(replace(settings, max_loaded_models=2), backend_factory=factory(script), clock=clock)
    tiny, other = store.resolve("tiny"), store.resolve("other:7b")
    list(sched.submit(tiny, gen(), LoadOptions()))
    assert script.busy == [("tiny:latest", True), ("tiny:latest", False)]
    script.busy.clear()
    script.enqueue(["a", "b", "c"])
    script.hold_after = 0  # `other` answers "a", then waits
    stream = sched.submit(other, gen(), LoadOptions())
    assert next(stream) == Token("a")
    # `other` was loaded for this request; `tiny`, idle, was told before it.
    assert sorted(script.busy) == [("other:7b", True), ("tiny:latest", True)]
    script.release.set()
    list(stream)
    assert sorted(script.busy[2:]) == [("other:7b", False), ("tiny:latest", False)]
    script.busy.clear()
    embedded = sched.embed(tiny, LoadOptions(), ["some text"])
    assert embedded[0] and sorted(script.busy) == [("other:7b", False), ("other:7b", True),
                                                   ("tiny:latest", False), ("tiny:latest", True)]
    sched.shutdown()


def test_two_requests_at_once_are_one_busy_spell(settings, store, script, clock):
    script.slots = 2
    sched = Scheduler(settings, backend_factory=factory(script), clock=clock)
    tiny = store.resolve("tiny")
    script.hold_after = 0
    first = sched.submit(tiny, gen("one"), LoadOptions())
    second = sched.submit(tiny, gen("two"), LoadOptions())
    next(first), next(second)
    script.release.set()
    list(first)
    assert script.busy == [("tiny:latest", True)]  # the other request still runs
    list(second)
    assert script.busy == [("tiny:latest", True), ("tiny:latest", False)]
    sched.shutdown()


class Recording(ScriptedBackend):
    """A scripted engine in a runner process that writes what it is told to a file beside the
    models (the test reads it from its own process)."""

    @classmethod
    def load(cls, spec, opts, settings, script=None):
        backend = super().load(spec, opts, settings, script)
        backend.told = settings.models / "told.txt"
        return backend

    def daemon_busy(self, busy: bool) -> None:
        with open(self.told, "a") as told:
            told.write(f"{busy}\n")


def test_a_runner_process_passes_it_to_its_engine(settings, store):
    from rkollama.backends.runner import RunnerBackend

    backend = RunnerBackend.load(store.resolve("tiny"), LoadOptions(), settings, backend_cls=Recording)
    try:
        backend.daemon_busy(True)
        backend.daemon_busy(False)
        told = settings.models / "told.txt"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (told.exists() and told.read_text() == "True\nFalse\n"):
            time.sleep(0.05)
        assert told.read_text() == "True\nFalse\n"
    finally:
        backend.close()
    backend.daemon_busy(True)  # a runner that is gone: nothing to tell, nothing raised


def test_a_model_loaded_while_another_runs_is_told_at_once(settings, store, script, clock):
    sched = Scheduler(replace(settings, max_loaded_models=2), backend_factory=factory(script), clock=clock)
    script.enqueue(["a", "b"])
    script.hold_after = 0
    running = sched.submit(store.resolve("tiny"), gen(), LoadOptions())
    next(running)
    script.hold_after = None
    list(sched.submit(store.resolve("other:7b"), gen(), LoadOptions()))
    assert script.busy == [("tiny:latest", True), ("other:7b", True)]  # the daemon stays busy
    script.release.set()
    list(running)
    assert sorted(script.busy[2:]) == [("other:7b", False), ("tiny:latest", False)]
    sched.shutdown()
