"""Which slot a request takes and what it starts from (SlotLoop._choose): its own cache, a copy
of another slot's (free or busy) when that saves more than the copy costs, never the last token,
never half an image; and what a step writes (row order, prompt chunk sizes, a step cut short
undone, a recurrent state emptied); how many slots a model gets. No engine: the policy alone, on token lists and a scripted
memory."""

import logging
import threading

import pytest

from rkollama.backends.llamacpp import ONE_SLOT_ARCHITECTURES, slot_count
from rkollama.backends.llamacpp_prompt_cache import PromptCache
from rkollama.backends.llamacpp_slot_start import Seq, copy_threshold
from rkollama.backends.llamacpp_slots import SlotLoop
from rkollama.core import media
from rkollama.core.types import Generation, Message

SYSTEM = list(range(100, 140))  # a 40-token system prompt


def loop(cached: dict[int, list[int]], busy: dict[int, list[int]] | None = None, copy_min: int | None = 4):
    """A SlotLoop's choosing state: `cached` free slots, `busy` slots holding what they read."""
    state = SlotLoop.__new__(SlotLoop)
    state.free = sorted(cached)
    state.cached = [cached.get(slot, []) for slot in range(4)]
    state.used = [0.0] * 4
    state.copy_min, state.cuttable, state.n_ctx = copy_min, copy_min is not None, 2048
    state.prompt_cache = PromptCache(None, None, 0)
    state.active = [_seq(slot, tokens, len(tokens), 1) for slot, tokens in (busy or {}).items()]
    return state


def test_a_start_only_a_busy_slot_holds_is_copied_into_a_free_one():
    prompt = SYSTEM + [1, 2, 3]
    choice = loop({1: [], 2: [], 3: []}, busy={0: SYSTEM + [7, 8, 9, 10]})._choose(prompt)
    assert choice[1:] == (40, 0)
    assert choice[0] in (1, 2, 3)


def test_a_slot_that_holds_the_start_itself_needs_no_copy():
    prompt = SYSTEM + [1, 2, 3]
    state = loop({1: SYSTEM + [5], 2: []}, busy={0: SYSTEM + [7]})
    assert state._choose(prompt) == (1, 40, 1)


def test_a_copy_that_saves_less_than_it_costs_is_not_made():
    prompt = SYSTEM + [1, 2, 3]
    state = loop({1: SYSTEM[:38], 2: []}, busy={0: SYSTEM + [1]}, copy_min=4)
    assert state._choose(prompt) == (1, 38, 1)  # a copy would save 3 more tokens, and costs 4
    state = loop({1: SYSTEM[:30], 2: []}, busy={0: SYSTEM + [1]}, copy_min=4)
    slot, start, source = state._choose(prompt)
    assert (start, source) == (41, 0)


def test_an_engine_that_cannot_copy_reads_what_no_free_slot_holds():
    prompt = SYSTEM + [1, 2, 3]
    slot, start, source = loop({1: [], 2: []}, busy={0: SYSTEM}, copy_min=None)._choose(prompt)
    assert (start, source) == (0, slot)


def test_the_last_token_is_always_read_and_an_image_never_cut():
    prompt = SYSTEM + [1, 2, 3]
    assert loop({1: []}, busy={0: prompt + [4]})._choose(prompt) == (1, len(prompt) - 1, 0)
    picture = media.image_tokens(media.key_of(b"png"), 6)
    prompt = SYSTEM + picture + [1]
    held = SYSTEM + picture[:4]  # the busy slot is still reading the image
    assert loop({1: []}, busy={0: held})._choose(prompt) == (1, 40, 0)


def test_the_longest_start_wins_among_several_holders():
    prompt = SYSTEM + [1, 2, 3, 4, 5]
    state = loop({2: SYSTEM[:10], 3: []}, busy={0: SYSTEM + [1], 1: SYSTEM + [1, 2, 3, 9]})
    slot, start, source = state._choose(prompt)
    assert (start, source) == (43, 1) and slot in (2, 3)


def test_the_copy_threshold_grows_with_the_slot_and_shrinks_with_the_model():
    small = copy_threshold(47_000_000, 97_000_000)
    assert 2 <= small <= 4  # measured: a 47 MB slot copies in ~3 prompt tokens' time
    assert copy_threshold(16 * 47_000_000, 97_000_000) > 10 * small
    assert copy_threshold(117_000_000, 1_000_000_000) == 1


class _Memory:
    """llama.cpp's memory calls, on a record of what each sequence holds: a KV cache cuts
    anywhere; a recurrent state (`recurrent`) only empties, or keeps all it has."""

    def __init__(self, held: dict[int, int] | None = None, recurrent: bool = False):
        self.held, self.recurrent, self.calls = dict(held or {}), recurrent, []
        self.abort_checks = []

    def llama_memory_seq_rm(self, memory, seq: int, start: int, end: int) -> bool:
        self.calls.append(("rm", seq, start, end))
        if start <= 0:
            self.held[seq] = 0
        elif start < self.held.get(seq, 0):
            if self.recurrent:
                return False
            self.held[seq] = start
        return True

    def llama_memory_seq_cp(self, memory, source: int, target: int, start: int, end: int) -> None:
        self.calls.append(("cp", source, target))
        self.held[target] = self.held.get(source, 0)

    def llama_set_abort_callback(self, ctx, callback, data) -> None:
        self.abort_checks.append(callback)


def _stepping(n_batch: int, seqs: list[Seq], code: int = 0):
    """A SlotLoop that steps `seqs` with a batch of plain lists, recording each decode's rows as
    (sequence id, position); each decode returns `code`."""
    from types import SimpleNamespace

    state = SlotLoop.__new__(SlotLoop)
    state.n_batch, state.n_ctx, state.active, state.vision = n_batch, 1024, list(seqs), None
    state.batch = SimpleNamespace(token=[0] * n_batch, pos=[0] * n_batch, n_seq_id=[0] * n_batch,
                                  seq_id=[[0] for _ in range(n_batch)], logits=[0] * n_batch, n_tokens=0)
    state.lib, state.memory, state.cuttable, state.stopping, state.watched = _Memory(), None, True, False, []
    state.abort_check, state.no_abort_check, state.prompt_token_s = "check", None, 1e-6
    decoded = []

    def decode(ctx, batch):
        decoded.append([(batch.seq_id[i][0], batch.pos[i]) for i in range(batch.n_tokens)])
        return code

    state.ctx, state.decode = None, decode
    state._sample = lambda seq: None
    return state, decoded


def _seq(slot: int, window: list[int], fed: int, produced: int) -> Seq:
    from rkollama.backends.llamacpp_slot_start import Request

    request = Request(Generation(messages=[Message("user", "x")]), threading.Event(), window, 100, False, 0)
    return Seq(request, lambda event: None, slot=slot, window=list(window), fed=fed, produced=produced)


def test_a_step_writes_its_rows_in_slot_order_whatever_order_the_requests_came_in():
    """llama.cpp reads only increasing, consecutive sequence ids in one forward pass: requests
    admitted as slots 2, 0, 1 must still be written 0, 1, 2, or each step takes two passes."""
    state, decoded = _stepping(16, [_seq(2, [5, 6, 7], 2, 1), _seq(0, [1, 2, 3, 4], 1, 0), _seq(1, [8, 9], 1, 1)])
    state._step()
    assert decoded == [[(0, 1), (0, 2), (0, 3), (1, 1), (2, 2)]]


def test_generating_sequences_keep_their_token_when_prompts_fill_the_batch():
    state, decoded = _stepping(3, [_seq(0, list(range(10)), 0, 0), _seq(3, [5, 6], 1, 1), _seq(1, [7, 8], 1, 1)])
    state._step()
    assert decoded == [[(0, 0), (1, 1), (3, 1)]]


def test_a_cut_short_step_is_undone_for_every_sequence_in_it():
    """llama.cpp returns 2 when the abort check stops a step (a prompt being read was
    cancelled); what the step wrote is removed from each slot and nobody samples."""
    reading = _seq(1, list(range(200)), 10, 0)
    generating = _seq(0, [1, 2, 3, 4], 3, 1)
    state, decoded = _stepping(512, [generating, reading], code=2)
    sampled = []
    state._sample = sampled.append
    state._step()
    assert len(decoded[0]) == 1 + 190
    assert state.lib.abort_checks == ["check", None]  # watched for this step only
    assert (generating.fed, reading.fed) == (3, 10) and sampled == []
    assert ("rm", 0, 3, -1) in state.lib.calls and ("rm", 1, 10, -1) in state.lib.calls


def test_a_short_step_is_not_watched():
    state, decoded = _stepping(512, [_seq(0, list(range(20)), 0, 0)])
    state._step()
    assert state.lib.abort_checks == [] and len(decoded[0]) == 20


def test_a_recurrent_state_that_cannot_go_back_is_emptied_and_the_prompt_read_whole():
    """A Mamba-style state keeps no earlier position: a prompt sharing only the start of what
    the slot holds is read from token 0, not from a start the state no longer has."""
    state = loop({1: SYSTEM + [7, 8]}, copy_min=None)
    state.lib, state.memory = _Memory({1: 42}, recurrent=True), None
    assert state._start(1, 40, 1, 43) == 0
    assert state.lib.held[1] == 0
    state.lib = _Memory({1: 42})  # a KV cache cuts where it is asked to
    assert state._start(1, 40, 1, 43) == 40 and state.lib.held[1] == 40


def test_a_prompt_beside_answering_sequences_is_read_in_chunks_sized_to_keep_them_flowing():
    """While others answer, a step reads as many prompt tokens as fit in ANSWERING_STEP_S at
    what prompt tokens have cost; alone, a prompt is read a whole batch at a time."""
    from rkollama.backends.llamacpp_slots import ANSWERING_STEP_S, MIN_PROMPT_CHUNK

    def rows(prompt_token_s: float, answering: bool) -> int:
        seqs = [_seq(1, list(range(600)), 0, 0)] + ([_seq(0, [1, 2, 3], 2, 1)] if answering else [])
        state, decoded = _stepping(512, seqs)
        state.prompt_token_s = prompt_token_s
        state._step()
        return sum(1 for seq_id, _ in decoded[0] if seq_id == 1)

    assert rows(0.002, answering=True) == int(ANSWERING_STEP_S / 0.002)  # 250 tokens of 2 ms
    assert rows(1.0, answering=True) == MIN_PROMPT_CHUNK  # a slow model still gets on
    assert rows(0.0, answering=True) == 2 * MIN_PROMPT_CHUNK  # nothing measured yet
    assert rows(0.002, answering=False) == 512


@pytest.mark.parametrize("architecture", sorted(ONE_SLOT_ARCHITECTURES))
def test_architectures_ollama_runs_one_at_a_time_get_one_slot_and_say_so(architecture, caplog):
    with caplog.at_level(logging.WARNING, logger="rkollama.llamacpp"):
        assert slot_count(4, architecture, ["completion", "tools"]) == 1
    assert "OLLAMA_NUM_PARALLEL=4 is not applied" in caplog.text


def test_other_models_get_what_ollama_num_parallel_asks_and_embedding_models_one(caplog):
    with caplog.at_level(logging.WARNING, logger="rkollama.llamacpp"):
        assert slot_count(4, "llama", ["completion"]) == 4
        assert slot_count(3, "qwen3", ["completion", "tools", "thinking"]) == 3
        assert slot_count(1, "lfm2", ["completion"]) == 1
    assert caplog.text == ""  # nothing to warn about
    assert slot_count(4, "bert", ["embedding"]) == 1
    assert slot_count(4, "qwen3next", ["embedding"]) == 1
