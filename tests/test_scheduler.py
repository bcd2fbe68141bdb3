"""The scheduler on the fake backend with an injected clock."""

import threading

import pytest

from rkollama.core.types import Done, DoneReason, Generation, LoadOptions, Message, SamplingOptions, Token
from rkollama.errors import Cancelled, LoadFailed, QueueFull
from rkollama.scheduler import Scheduler


def gen(text="hello there"):
    return Generation(messages=[Message("user", text)], options=SamplingOptions())


def drain(stream):
    return list(stream)


def loaded(scheduler):
    return [m.spec.name.display() for m in scheduler.ps()]


def closes_reach(script, count, timeout=5.0):
    """Unloads finish off the scheduler's lock: wait for the engine's close to have run."""
    import time

    deadline = time.monotonic() + timeout
    while script.closes < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return script.closes == count


def test_idle_model_unloads_when_keep_alive_expires(scheduler, store, clock, script):
    spec = store.resolve("tiny")
    drain(scheduler.submit(spec, gen(), LoadOptions(), keep_alive=60))
    clock.advance(59)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]
    clock.advance(2)
    scheduler.reap()
    assert loaded(scheduler) == [] and closes_reach(script, 1)


def test_default_keep_alive_comes_from_settings(scheduler, store, clock):
    drain(scheduler.submit(store.resolve("tiny"), gen(), LoadOptions()))
    clock.advance(299)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]
    clock.advance(2)
    scheduler.reap()
    assert loaded(scheduler) == []


def test_negative_keep_alive_keeps_the_model_forever(scheduler, store, clock):
    scheduler.load(store.resolve("tiny"), LoadOptions(), keep_alive=float("inf"))
    clock.advance(10**9)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]
    assert scheduler.ps()[0].expires_at.year > 2300


def test_expiry_timer_starts_only_when_the_request_ends(scheduler, store, clock):
    stream = scheduler.submit(store.resolve("tiny"), gen(), LoadOptions(), keep_alive=10)
    assert scheduler.ps()[0].expires_at is None  # busy: Go's zero time on the wire
    clock.advance(100)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]
    drain(stream)
    clock.advance(9)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]


def test_later_request_without_keep_alive_keeps_the_previous_one(scheduler, store, clock):
    spec = store.resolve("tiny")
    scheduler.load(spec, LoadOptions(), keep_alive=3600)
    drain(scheduler.submit(spec, gen(), LoadOptions()))
    clock.advance(1000)
    scheduler.reap()
    assert loaded(scheduler) == ["tiny:latest"]


def test_least_recently_used_idle_model_is_evicted(scheduler, store, clock, script):
    scheduler.load(store.resolve("tiny"), LoadOptions())
    clock.advance(1)
    scheduler.load(store.resolve("other:7b"), LoadOptions())
    assert loaded(scheduler) == ["other:7b"]  # max_loaded_models defaults to 1


def test_two_models_stay_loaded_when_allowed(settings, store, script, clock):
    from dataclasses import replace

    from rkollama.backends.fake import factory

    sched = Scheduler(replace(settings, max_loaded_models=2), backend_factory=factory(script), clock=clock)
    sched.load(store.resolve("tiny"), LoadOptions())
    clock.advance(1)
    sched.load(store.resolve("other:7b"), LoadOptions())
    clock.advance(1)
    sched.load(store.resolve("thinker:1b"), LoadOptions())
    assert sorted(loaded(sched)) == ["other:7b", "thinker:1b"]
    sched.shutdown()
    assert loaded(sched) == []


def test_changing_num_ctx_reloads_the_model(scheduler, store, script):
    spec = store.resolve("tiny")
    scheduler.load(spec, LoadOptions(num_ctx=2048))
    scheduler.load(spec, LoadOptions(num_ctx=4096))
    assert [opts.num_ctx for _, opts in script.loads] == [2048, 4096]
    assert scheduler.ps()[0].context_length == 4096


def test_sampling_changes_do_not_reload(scheduler, store, script):
    spec = store.resolve("tiny")
    scheduler.load(spec, LoadOptions(num_ctx=2048))
    hot = Generation(messages=[Message("user", "x")], options=SamplingOptions(temperature=1.5))
    drain(scheduler.submit(spec, hot, LoadOptions(num_ctx=2048)))
    assert len(script.loads) == 1


def test_a_request_without_num_ctx_does_not_inherit_the_last_ones(scheduler, store, script):
    spec = store.resolve("tiny")
    scheduler.load(spec, LoadOptions(num_ctx=10))
    drain(scheduler.submit(spec, gen(), LoadOptions()))
    assert [opts.num_ctx for _, opts in script.loads] == [10, None]  # reloaded at the default


def test_failed_load_leaves_nothing_loaded(scheduler, store, script):
    script.fail_on_load = "no memory"
    with pytest.raises(LoadFailed):
        scheduler.submit(store.resolve("tiny"), gen(), LoadOptions())
    assert scheduler.ps() == []
    script.fail_on_load = ""
    drain(scheduler.submit(store.resolve("tiny"), gen(), LoadOptions()))
    assert loaded(scheduler) == ["tiny:latest"]


def test_unexpected_engine_exception_on_load_becomes_load_failed(settings, store, clock):
    class Broken:
        def __call__(self, spec, opts, settings):
            raise ValueError("bad gguf")

        def engine_class(self, spec, settings):
            from rkollama.backends.fake import ScriptedBackend
            return ScriptedBackend

    sched = Scheduler(settings, backend_factory=Broken(), clock=clock)
    with pytest.raises(LoadFailed, match="bad gguf"):
        sched.load(store.resolve("tiny"), LoadOptions())


def test_cancelled_stream_frees_the_model_for_the_next_request(scheduler, store, script):
    script.enqueue(["a", "b", "c", "d"])
    script.hold_after = 0  # the engine produces "a", then waits (it could otherwise run ahead)
    spec = store.resolve("tiny")
    stream = scheduler.submit(spec, gen(), LoadOptions())
    assert next(stream) == Token("a")
    stream.close()
    script.hold_after = None
    script.enqueue(["z"])
    assert [e for e in drain(scheduler.submit(spec, gen(), LoadOptions())) if isinstance(e, Token)] == [Token("z")]
    assert script.finished[0] == (DoneReason.CANCELLED, 1)


def test_requests_for_a_busy_model_wait_their_turn_in_order(scheduler, store, script):
    spec = store.resolve("tiny")
    first = scheduler.submit(spec, gen("one"), LoadOptions())
    order = []

    def later(label):
        stream = scheduler.submit(spec, gen(label), LoadOptions())
        order.append(label)
        drain(stream)

    threads = []
    for label in ("two", "three"):
        thread = threading.Thread(target=later, args=(label,))
        thread.start()
        threads.append(thread)
        # let it reach the queue before the next one arrives
        for _ in range(200):
            if scheduler._waiting == len(threads):
                break
            threading.Event().wait(0.005)
    assert order == []  # both wait while "one" runs
    drain(first)
    for thread in threads:
        thread.join(5)
    assert order == ["two", "three"]


def test_full_queue_is_rejected(settings, store, script, clock):
    from dataclasses import replace

    from rkollama.backends.fake import factory

    sched = Scheduler(replace(settings, max_queue=1), backend_factory=factory(script), clock=clock)
    spec = store.resolve("tiny")
    busy = sched.submit(spec, gen(), LoadOptions())
    waiter = threading.Thread(target=lambda: drain(sched.submit(spec, gen(), LoadOptions())))
    waiter.start()
    for _ in range(400):
        if sched._waiting == 1:
            break
        threading.Event().wait(0.005)
    with pytest.raises(QueueFull) as error:
        sched.submit(spec, gen(), LoadOptions())
    assert error.value.status == 503
    drain(busy)
    waiter.join(5)
    sched.shutdown()


def test_waiting_request_gives_up_when_its_client_disconnects(scheduler, store):
    spec = store.resolve("tiny")
    busy = scheduler.submit(spec, gen(), LoadOptions())
    gone = threading.Event()
    result = {}

    def waiter():
        try:
            scheduler.submit(spec, gen(), LoadOptions(), disconnected=gone.is_set)
        except Cancelled as exc:
            result["error"] = exc

    thread = threading.Thread(target=waiter)
    thread.start()
    gone.set()
    thread.join(5)
    assert result["error"].status == 499
    drain(busy)


def test_unload_of_a_busy_model_waits_for_the_request(scheduler, store, script):
    spec = store.resolve("tiny")
    stream = scheduler.submit(spec, gen(), LoadOptions())
    scheduler.unload(spec)
    assert loaded(scheduler) == ["tiny:latest"] and script.closes == 0
    events = drain(stream)
    assert isinstance(events[-1], Done)
    assert loaded(scheduler) == [] and closes_reach(script, 1)


def test_a_model_with_two_slots_serves_two_requests_at_once(scheduler, store, script):
    script.slots = 2
    spec = store.resolve("tiny")
    first = scheduler.submit(spec, gen("one"), LoadOptions())
    second = scheduler.submit(spec, gen("two"), LoadOptions())  # does not wait for the first
    assert scheduler.ps()[0].expires_at is None
    third_started = threading.Event()

    def third():
        drain(scheduler.submit(spec, gen("three"), LoadOptions()))
        third_started.set()

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not third_started.wait(0.3)  # both slots taken
    drain(first)
    assert third_started.wait(5)
    drain(second)
    waiter.join(5)
    assert len(script.loads) == 1 and scheduler.ps()[0].expires_at is not None


def test_a_slow_unload_never_holds_the_scheduler(scheduler, store, script, monkeypatch):
    """A runner that takes long to stop (a stuck engine is waited for, then killed) is closed
    off the scheduler's lock: /api/ps answers meanwhile, and the next load waits for it."""
    import time

    from rkollama.backends.fake import ScriptedBackend

    release = threading.Event()
    original = ScriptedBackend.close
    monkeypatch.setattr(ScriptedBackend, "close", lambda self: (release.wait(5), original(self)))
    spec = store.resolve("tiny")
    drain(scheduler.submit(spec, gen(), LoadOptions()))
    scheduler.unload(spec)
    started = time.monotonic()
    assert loaded(scheduler) == [] and time.monotonic() - started < 1.0
    other = threading.Thread(target=lambda: drain(scheduler.submit(store.resolve("other:7b"), gen(),
                                                                   LoadOptions())))
    other.start()
    time.sleep(0.3)
    assert [name for name, _ in script.loads] == ["tiny:latest"]  # waits: memory never overlaps
    release.set()
    other.join(5)
    assert [name for name, _ in script.loads] == ["tiny:latest", "other:7b"] and closes_reach(script, 1)


def test_weights_rewritten_in_place_are_loaded_afresh(scheduler, store, script):
    """A pull that repairs a damaged blob writes a new file at the same path: the engine that
    mapped the damaged one must not keep answering."""
    import os

    spec = store.resolve("tiny")
    drain(scheduler.submit(spec, gen(), LoadOptions()))
    fresh = spec.model_path.with_suffix(".repaired")
    fresh.write_bytes(spec.model_path.read_bytes())
    os.replace(fresh, spec.model_path)
    drain(scheduler.submit(store.resolve("tiny"), gen(), LoadOptions()))
    assert len(script.loads) == 2
    drain(scheduler.submit(store.resolve("tiny"), gen(), LoadOptions()))
    assert len(script.loads) == 2  # and only once
