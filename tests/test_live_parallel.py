"""Parallel slots on the CPU engine (OLLAMA_NUM_PARALLEL), with SmolLM2 through real HTTP: the
requests share one batch yet each answers its own prompt, a cancelled one frees its slot for a
queued request at once, and structured output and log-probabilities still work in a slot."""

import json
import threading
import time

import ollama
import pytest
import requests

from tests.helpers import smollm2_engine, start_daemon

pytestmark = pytest.mark.live
MODEL = "smollm2:135m"
WORDS = ["apple", "banana", "cherry", "dragon"]


@pytest.fixture(scope="module")
def parallel_daemon(smollm2_store, tmp_path_factory):
    log = tmp_path_factory.mktemp("parallel-log") / "serve.log"
    process, url = start_daemon({"RKOLLAMA_MODELS": str(smollm2_store), "RKOLLAMA_NUM_THREADS": "2",
                                 "RKOLLAMA_CONTEXT_LENGTH": "2048", "OLLAMA_NUM_PARALLEL": "2"}, log)
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_ps_counts_every_slots_kv_cache_in_the_models_size(parallel_daemon, smollm2_store):
    """Ollama's /api/ps `size` is what the loaded model takes, KV cache included: two slots of
    2,048 tokens of SmolLM2 (30 layers, 3 KV heads of 64, f16 keys and values) are 2 × 47 MB."""
    _ask(parallel_daemon, "apple")
    weights = requests.get(f"{parallel_daemon}/api/tags", timeout=10).json()["models"][0]["size"]
    loaded = requests.get(f"{parallel_daemon}/api/ps", timeout=10).json()["models"][0]
    assert loaded["context_length"] == 2048
    assert loaded["size"] == weights + 2 * (2 * 2 * 30 * 3 * 64 * 2048)


def test_a_model_that_only_embeds_loads_one_slot_whatever_ollama_num_parallel_says(smollm2_store):
    """As Ollama's scheduler: an embedding model is loaded with one slot (and one KV cache)."""
    import dataclasses

    from rkollama.backends.llamacpp import LlamaCppBackend
    from rkollama.config import Settings
    from rkollama.core.types import LoadOptions
    from rkollama.models.store import ModelStore

    spec = ModelStore(smollm2_store).resolve(MODEL)
    embedder = dataclasses.replace(spec, modelfile=spec.modelfile.model_copy(update={"capabilities": ["embedding"]}))
    settings = Settings.from_env({}, num_threads=2, num_parallel=4)
    backend = LlamaCppBackend.load(embedder, LoadOptions(num_ctx=512), settings)
    try:
        assert (backend.slots, backend.loop.slots) == (1, 1)
        assert backend.memory_bytes == spec.size + 2 * 2 * 30 * 3 * 64 * 512
        assert len(backend.embed(["apple"])[0][0]) == 576  # and it embeds
    finally:
        backend.close()


def _ask(url: str, word: str) -> str:
    """A streamed chat answer, joined."""
    parts = ollama.Client(host=url).chat(model=MODEL, stream=True, options={"temperature": 0, "num_predict": 20},
                                         messages=[{"role": "user", "content": f"Write the word {word} three times."}])
    return "".join(part.message.content for part in parts)


def test_four_concurrent_streams_each_answer_their_own_prompt(smollm2_store, tmp_path):
    process, url = start_daemon({"RKOLLAMA_MODELS": str(smollm2_store), "RKOLLAMA_NUM_THREADS": "2",
                                 "RKOLLAMA_CONTEXT_LENGTH": "2048", "OLLAMA_NUM_PARALLEL": "4"},
                                tmp_path / "serve.log")
    try:
        answers: dict[str, str] = {}
        threads = [threading.Thread(target=lambda w=w: answers.__setitem__(w, _ask(url, w))) for w in WORDS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(answers) == sorted(WORDS)
        for word, answer in answers.items():  # what only that prompt produces
            assert word in answer.lower(), (word, answer)
            assert not any(other in answer.lower() for other in WORDS if other != word), (word, answer)
        assert "4 parallel slots" in (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_cancelled_stream_frees_its_slot_for_a_queued_request_at_once(parallel_daemon):
    def endless(tag: str) -> requests.Response:
        # A string of at least 10,000 characters: the grammar lets the model end nowhere sooner.
        return requests.post(f"{parallel_daemon}/api/generate", stream=True, timeout=120, json={
            "model": MODEL, "prompt": f"Story {tag}", "format": {"type": "string", "minLength": 10_000},
            "options": {"num_predict": 100_000, "temperature": 0.8}})

    first, second = endless("one"), endless("two")
    # Both slots are generating. The line iterators are kept: one dropped is collected, and
    # collecting it closes the connection (a client that leaves).
    lines = [reply.iter_lines() for reply in (first, second)]
    for line in lines:
        assert b'"done":false' in next(line)
    seen: dict[str, float] = {}

    def queued() -> None:
        reply = endless("three")
        assert b'"done":false' in next(reply.iter_lines())
        seen["first token"] = time.monotonic()
        reply.close()

    thread = threading.Thread(target=queued)
    thread.start()
    time.sleep(1.5)
    assert "first token" not in seen  # no slot free: it waits its turn
    closed = time.monotonic()
    first.close()  # the client leaves: its generation ends and its slot takes the queued request
    thread.join(30)
    second.close()
    assert "first token" in seen and seen["first token"] - closed < 3


def test_structured_output_and_logprobs_work_in_a_slot(parallel_daemon):
    client = ollama.Client(host=parallel_daemon)
    answer = client.chat(model=MODEL, format={"type": "object", "properties": {"n": {"type": "integer"}},
                                                "required": ["n"]},
                         messages=[{"role": "user", "content": "Give me a number as JSON."}],
                         options={"temperature": 0, "num_predict": 40})
    assert isinstance(json.loads(answer.message.content)["n"], int)
    scored = client.generate(model=MODEL, prompt="The sky is", raw=True, logprobs=True, top_logprobs=2,
                             options={"temperature": 0, "num_predict": 3})
    assert len(scored.logprobs) == 3 and all(lp.logprob <= 0 for lp in scored.logprobs)
    assert all(len(lp.top_logprobs) == 2 for lp in scored.logprobs)


def test_a_side_request_does_not_evict_a_conversation_from_its_slot(parallel_daemon):
    """Open WebUI asks for a title and tags beside each chat: such a request shares only the
    system prompt with the conversation, and must take the other slot, so the conversation's
    next turn reads only its new message (measured by the engine's own prefill time)."""
    client = ollama.Client(host=parallel_daemon)
    options = {"temperature": 0, "num_predict": 4}
    history = [{"role": "user", "content": " ".join(f"Fact {i}: cape {i} was charted in {1800 + i}."
                                                    for i in range(40))}]
    first = client.chat(model=MODEL, messages=history, options=options)
    client.chat(model=MODEL, messages=[{"role": "user", "content": "Give this chat a title."}], options=options)
    following = client.chat(model=MODEL, options=options, messages=history + [
        {"role": "assistant", "content": first.message.content}, {"role": "user", "content": "And the last?"}])
    assert following.prompt_eval_count > first.prompt_eval_count
    assert following.prompt_eval_duration < first.prompt_eval_duration / 3


@pytest.fixture(scope="module")
def four_slots(smollm2_store):
    """SmolLM2 with four slots, in this process (the runner calls it the same way)."""
    backend = smollm2_engine(smollm2_store, 1024, slots=4)
    yield backend
    backend.close()


def test_requests_that_reach_the_engine_together_are_read_in_one_batch(four_slots):
    """The runner announces each request as it arrives; their prompts are fitted on threads of
    their own and submitted milliseconds apart, yet the first step reads all four."""
    from rkollama.core.types import Done, Generation, Message, SamplingOptions

    loop = four_slots.loop
    original, batches = loop.decode, []

    def watch(ctx, batch):
        batches.append({batch.seq_id[i][0] for i in range(batch.n_tokens)})
        return original(ctx, batch)

    loop.decode = watch
    ended = threading.Semaphore(0)

    def emit(event):
        if isinstance(event, (Done, Exception)):
            ended.release()

    def ask(index: int) -> None:
        time.sleep(0.003 * index)
        gen = Generation(messages=[Message("user", f"Request {index}: name a {WORDS[index]} dish.")],
                         options=SamplingOptions(temperature=0, num_predict=2))
        four_slots.stream(gen, threading.Event(), emit)

    try:
        four_slots.expect(4)  # what the runner does as each Generate arrives
        for index in range(4):
            threading.Thread(target=ask, args=(index,)).start()
        for _ in range(4):
            assert ended.acquire(timeout=60)
    finally:
        loop.decode = original
    assert batches[0] == {0, 1, 2, 3}, batches[:3]


def test_a_prompt_start_a_busy_slot_holds_is_copied_not_read_again(four_slots):
    """Agents send the same long system prompt with every request: one that arrives while
    another is answering starts from a copy of that slot's cache, reads only its own question,
    and answers it."""
    from rkollama.core.fitting import common_prefix
    from rkollama.core.types import Done, DoneReason, Generation, Message, SamplingOptions, Token

    manual = "You answer for the Harbour Office. " + " ".join(
        f"Rule {i}: berth {i} opens at {i % 12 + 1} o'clock." for i in range(30))

    def generation(question: str, limit: int) -> Generation:
        return Generation(messages=[Message("system", manual), Message("user", question)],
                          options=SamplingOptions(temperature=0, num_predict=limit))

    loop = four_slots.loop
    original, batches = loop.decode, []

    def watch(ctx, batch):
        counts: dict[int, int] = {}
        for i in range(batch.n_tokens):
            counts[batch.seq_id[i][0]] = counts.get(batch.seq_id[i][0], 0) + 1
        batches.append(counts)
        return original(ctx, batch)

    answers = {"apple": [], "banana": []}
    answering, ended = threading.Event(), threading.Semaphore(0)

    def collector(word: str):
        def emit(event):
            if isinstance(event, Token) and event.text:
                answers[word].append(event.text)
                answering.set()
            elif isinstance(event, (Done, Exception)):
                answers[word].append(event)
                ended.release()
        return emit

    first = generation("Tell a long story about an apple orchard.", 80)
    second = generation("Write the word banana three times.", 12)
    loop.decode = watch
    try:
        four_slots.stream(first, threading.Event(), collector("apple"))
        assert answering.wait(60)
        before = len(batches)
        four_slots.stream(second, threading.Event(), collector("banana"))
        for _ in range(2):
            assert ended.acquire(timeout=60)
    finally:
        loop.decode = original
    busy = next(iter(batches[0]))
    joined = next(counts for counts in batches[before:] if set(counts) - {busy})
    (slot, read), = ((s, n) for s, n in joined.items() if s != busy)
    tokens = four_slots._prompt_tokens(second)
    shared = common_prefix(four_slots._prompt_tokens(first), tokens)
    assert shared > 300  # the system prompt
    assert read == len(tokens) - shared, (slot, read, len(tokens), shared)
    assert all(isinstance(part, str) for part in answers["banana"][:-1])
    assert "banana" in "".join(answers["banana"][:-1]).lower()
    # The first one was answering all along: it ran to its limit after the second arrived.
    assert isinstance(answers["apple"][-1], Done) and answers["apple"][-1].reason is DoneReason.LENGTH


def test_a_prompt_cancelled_while_it_is_read_cuts_its_step_short_and_the_others_go_on(four_slots):
    """Stop during a long prefill: the step reading it stops within a graph node rather than
    finishing its chunk (llama.cpp's abort), is undone, and the sequence answering beside it
    goes on from a cache that holds exactly what each slot is recorded to hold."""
    from rkollama.core.types import Done, DoneReason, Generation, Message, SamplingOptions, Token

    loop = four_slots.loop
    original, codes = loop.decode, []
    reading = threading.Event()

    def watch(ctx, batch):
        if batch.n_tokens > 64:
            reading.set()
        code = original(ctx, batch)
        codes.append((batch.n_tokens, code))
        return code

    answers: dict[str, list] = {"apple": [], "long": []}
    answering, ended = threading.Event(), threading.Semaphore(0)

    def collector(name: str):
        def emit(event):
            answers[name].append(event)
            if isinstance(event, Token) and event.text:
                answering.set()
            if isinstance(event, (Done, Exception)):
                ended.release()
        return emit

    short = Generation(messages=[Message("user", "Write the word apple five times.")],
                       options=SamplingOptions(temperature=0, num_predict=30))
    document = " ".join(f"Line {i}: the tide table for pier {i} reads {i % 7} feet." for i in range(60))
    long = Generation(messages=[Message("user", document + " Which pier is deepest?")],
                      options=SamplingOptions(temperature=0, num_predict=8))
    cancel = threading.Event()
    loop.decode = watch
    try:
        four_slots.stream(short, threading.Event(), collector("apple"))
        assert answering.wait(60)
        four_slots.stream(long, cancel, collector("long"))
        assert reading.wait(60)  # the long step is watched from before its forward pass starts
        cancel.set()
        for _ in range(2):
            assert ended.acquire(timeout=120)
    finally:
        loop.decode = original
    assert any(n > 64 and code == 2 for n, code in codes), codes  # cut short, not read to its end
    assert answers["long"][-1].reason is DoneReason.CANCELLED
    assert not any(isinstance(e, Token) and e.text for e in answers["long"])
    done = answers["apple"][-1]
    assert isinstance(done, Done) and done.reason in (DoneReason.STOP, DoneReason.LENGTH)
    assert "apple" in "".join(e.text for e in answers["apple"] if isinstance(e, Token)).lower()
    for slot in range(loop.slots):  # what each slot is recorded to hold is what its cache holds
        held = four_slots.loop.lib.llama_memory_seq_pos_max(loop.memory, slot) + 1
        assert held == len(loop.cached[slot]), (slot, held, len(loop.cached[slot]))
