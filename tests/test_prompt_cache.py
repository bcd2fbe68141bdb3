"""The prompt cache (backends/llamacpp_prompt_cache): what a slot held is kept in RAM when a
request takes the slot, found again by the prompts it starts, put back exactly, and bounded —
by its byte limit (oldest first), by half the memory available, and never twice; and when the
slot loop keeps a slot's cache and starts a request from an entry. On a scripted
llama.cpp whose sequence states are the tokens they hold; the live test is
test_live_parallel.test_a_chats_next_turn_after_a_side_request_at_one_slot_is_not_read_again."""

import ctypes
import logging
import threading
import time
from collections import deque

from rkollama.backends.llamacpp_prompt_cache import SAVE_MIN_TOKENS, PromptCache, Saved
from rkollama.backends.llamacpp_slots import IDLE_KEEP_S, SlotLoop

CHAT = list(range(1000, 1300))  # a 300-token conversation
TITLE = list(range(5000, 5080))  # a side request that shares nothing with it


class _States:
    """llama.cpp's sequence state calls, on a record of what each sequence holds: a state is its
    tokens as int32s."""

    def __init__(self, held: dict[int, list[int]]):
        self.held = {seq: list(tokens) for seq, tokens in held.items()}
        self.short_write = self.refuse_read = False

    def llama_state_seq_get_size(self, ctx, seq: int) -> int:
        return 4 * len(self.held.get(seq, []))

    def llama_state_seq_get_data(self, ctx, data, size: int, seq: int) -> int:
        tokens = self.held.get(seq, [])
        ctypes.memmove(data, (ctypes.c_int32 * len(tokens))(*tokens), 4 * len(tokens))
        return size - 4 if self.short_write else size

    def llama_state_seq_set_data(self, ctx, data, size: int, seq: int) -> int:
        if self.refuse_read:
            return 0
        self.held[seq] = list((ctypes.c_int32 * (size // 4)).from_buffer(data))
        return size

    def llama_get_memory(self, ctx) -> None:
        return None

    def llama_memory_seq_rm(self, memory, seq: int, start: int, end: int) -> bool:
        self.held[seq] = self.held.get(seq, [])[:max(0, start)]
        return True


def cache(held: dict[int, list[int]], limit: int = 2**20, available: int = 2**30) -> tuple[PromptCache, _States]:
    lib = _States(held)
    return PromptCache(lib, None, limit, available=lambda: available), lib


def test_a_slots_state_is_kept_found_by_the_prompts_it_starts_and_put_back_exactly():
    kept, lib = cache({0: CHAT})
    assert kept.save(0, CHAT)
    lib.held[0] = TITLE  # the side request took the slot
    assert kept.best(TITLE + [1]) == (0, None)
    shared, entry = kept.best(CHAT + [7, 8, 9])  # the chat's next turn
    assert shared == len(CHAT) and entry is not None
    kept.take(entry)
    assert kept.restore(entry, 0)
    assert lib.held[0] == CHAT
    assert kept.entries == []  # it lives in the slot again


def test_the_entry_holding_the_longest_start_is_found():
    kept, lib = cache({0: CHAT[:100], 1: CHAT[:200] + [1] * 50})
    assert kept.save(0, CHAT[:100]) and kept.save(1, lib.held[1])
    shared, entry = kept.best(CHAT)
    assert shared == 200 and entry is not None and entry.tokens == lib.held[1]


def test_small_states_nothing_and_a_state_already_kept_are_not_saved():
    kept, lib = cache({0: CHAT[:SAVE_MIN_TOKENS - 1], 1: CHAT, 2: CHAT[:150]})
    assert not kept.save(0, lib.held[0])
    assert kept.save(1, CHAT)
    assert not kept.save(2, CHAT[:150])  # the entry of slot 1 holds it all
    assert len(kept.entries) == 1
    off, _ = cache({0: CHAT}, limit=0)
    assert not off.save(0, CHAT)  # RKOLLAMA_PROMPT_CACHE_MB=0


def test_a_longer_state_replaces_the_entries_it_starts_with():
    kept, lib = cache({0: CHAT[:150], 1: CHAT})
    assert kept.save(0, CHAT[:150])
    assert kept.save(1, CHAT)
    assert [len(entry.tokens) for entry in kept.entries] == [len(CHAT)]


def test_the_byte_limit_drops_the_oldest_first_and_refuses_a_state_larger_than_itself(caplog):
    chats = [[seq * 10_000 + i for i in range(100)] for seq in range(4)]
    kept, lib = cache(dict(enumerate(chats)), limit=3 * 400)  # room for three 100-token states
    for seq, chat in enumerate(chats):
        assert kept.save(seq, chat)
    assert [entry.tokens[0] for entry in kept.entries] == [10_000, 20_000, 30_000]
    assert kept.bytes <= 3 * 400
    big, lib = cache({0: list(range(500))}, limit=1000)
    with caplog.at_level(logging.INFO, logger="rkollama.llamacpp"):
        assert not big.save(0, lib.held[0])
    assert "over RKOLLAMA_PROMPT_CACHE_MB" in caplog.text


def test_a_state_larger_than_half_the_memory_available_is_not_kept(caplog):
    kept, _ = cache({0: CHAT}, available=2 * 4 * len(CHAT) - 4)
    with caplog.at_level(logging.INFO, logger="rkollama.llamacpp"):
        assert not kept.save(0, CHAT)
    assert "half the memory available" in caplog.text
    roomy, _ = cache({0: CHAT}, available=2 * 4 * len(CHAT))
    assert roomy.save(0, CHAT)


def test_a_state_llama_cpp_wrote_short_is_not_kept_and_one_it_cannot_read_leaves_the_slot_empty():
    kept, lib = cache({0: CHAT})
    lib.short_write = True
    assert not kept.save(0, CHAT) and kept.entries == []
    lib.short_write = False
    assert kept.save(0, CHAT)
    lib.held[0], lib.refuse_read = TITLE, True
    entry = kept.entries[0]
    kept.take(entry)
    assert not kept.restore(entry, 0)
    assert lib.held[0] == [] and kept.entries == []  # nothing half put back; the entry is gone


def slots(held: dict[int, list[int]], cuttable: bool = True) -> tuple[SlotLoop, _States]:
    """A SlotLoop's choosing state: free slots holding `held`, one prompt cache on the same lib."""
    lib = _States(held)
    state = SlotLoop.__new__(SlotLoop)
    state.lib, state.memory, state.ctx, state.n_ctx = lib, None, None, 2048
    state.free, state.active, state.used, state.ended = sorted(held), [], [0.0] * 4, []
    state.answered, state.preparing, state.held = deque(), 0, False
    state.cached = [held.get(slot, []) for slot in range(4)]
    state.cuttable, state.copy_min = cuttable, 4 if cuttable else None
    state.prompt_cache = PromptCache(lib, None, 2**20, available=lambda: 2**30)
    return state, lib


def test_a_request_that_would_throw_away_a_slots_cache_keeps_it_first():
    state, lib = slots({0: CHAT})
    slot, reuse, source = state._choose(TITLE)
    assert (slot, reuse, source) == (0, 0, 0)
    state._keep(slot, 0)
    assert [entry.tokens for entry in state.prompt_cache.entries] == [CHAT]
    state._keep(slot, len(CHAT) - SAVE_MIN_TOKENS + 1)  # a follow-up that drops a short tail
    assert len(state.prompt_cache.entries) == 1


def test_a_prompt_a_kept_state_starts_is_put_back_into_the_slot_and_only_the_rest_is_read():
    state, lib = slots({0: CHAT + [7] * 20})
    state._keep(0, 0)
    lib.held[0] = state.cached[0] = TITLE  # the title request ran in the slot
    prompt = CHAT + [1, 2, 3]
    slot, reuse, source = state._choose(prompt)
    assert (slot, reuse) == (0, len(CHAT)) and isinstance(source, Saved)
    state.prompt_cache.take(source)
    state._keep(slot, 0)  # the title request's 80 tokens are kept in turn
    assert state._start(slot, reuse, source, len(prompt)) == len(CHAT)
    assert lib.held[0] == CHAT  # put back, then cut where the prompt leaves it
    assert [entry.tokens for entry in state.prompt_cache.entries] == [TITLE]


def test_a_slot_that_holds_as_much_as_the_cache_is_used_as_it_is():
    state, lib = slots({0: TITLE, 1: CHAT})
    state.prompt_cache.entries.append(Saved(list(CHAT), bytearray(4 * len(CHAT))))
    assert state._choose(CHAT + [1]) == (1, len(CHAT), 1)  # putting back costs; the slot has it


def test_a_recurrent_state_is_put_back_only_when_the_prompt_continues_all_of_it():
    state, lib = slots({0: TITLE}, cuttable=False)
    state.prompt_cache.entries.append(Saved(CHAT + [7] * 20, bytearray(4 * 320)))
    assert state._choose(CHAT + [1, 2]) == (0, 0, 0)  # it would have to be cut back: read it all
    slot, reuse, source = state._choose(CHAT + [7] * 20 + [1, 2])
    assert (slot, reuse) == (0, 320) and isinstance(source, Saved)
    state._keep(0, 60)  # a KV cache would lose 20 tokens, not worth keeping; a recurrent state
    assert [entry.tokens for entry in state.prompt_cache.entries][-1] == TITLE  # loses all 80


def _waiting(state: SlotLoop, *prompts: list[int]) -> list[list[object]]:
    """Queue a request for each prompt; returns what each one is sent."""
    from rkollama.backends.llamacpp_slot_start import Request, Seq
    from rkollama.core.types import Generation, Message

    state.waiting, state.vocab, state.rows = deque(), None, None
    events: list[list[object]] = []
    for prompt in prompts:
        events.append([])
        request = Request(Generation(messages=[Message("user", "x")]), threading.Event(), prompt, 10, False, 0)
        state.waiting.append(Seq(request, events[-1].append))
    return events


def test_the_entry_a_request_starts_from_survives_keeping_the_state_it_replaces(monkeypatch):
    """The slot's own state is kept before the entry is put back; keeping it must not drop the
    entry (a cache with room for one state would have)."""
    import rkollama.backends.llamacpp_slots as slot_module

    monkeypatch.setattr(slot_module, "make_sampler", lambda *args: None)
    state, lib = slots({0: CHAT})
    state._keep(0, 0)
    lib.held[0] = state.cached[0] = TITLE
    state.prompt_cache.limit = 4 * len(CHAT)  # room for the chat's state alone
    _waiting(state, CHAT + [1, 2])
    state._admit()
    assert lib.held[0] == CHAT and state.active[0].fed == len(CHAT)
    assert [entry.tokens for entry in state.prompt_cache.entries] == [TITLE]


def test_a_request_that_cannot_start_fails_alone_and_the_next_one_gets_the_slot(monkeypatch):
    import rkollama.backends.llamacpp_slots as slot_module

    calls = []

    def sampler(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("no sampler")

    monkeypatch.setattr(slot_module, "make_sampler", sampler)
    state, lib = slots({0: CHAT})
    first, second = _waiting(state, CHAT + [1], CHAT + [2])
    state._admit()
    assert len(first) == 1 and "no sampler" in str(first[0])  # BackendFailed, not a dead loop
    assert [seq.fed for seq in state.active] == [0]  # the slot was emptied: nothing is trusted
    assert second == [] and state.free == []


def test_a_request_that_uses_only_the_start_of_a_kept_state_leaves_it_kept(monkeypatch):
    """Open WebUI's next chat turn after a title request shares a template header with an older
    entry: putting it back saves those tokens, but the entry itself stays for its conversation."""
    import rkollama.backends.llamacpp_slots as slot_module

    monkeypatch.setattr(slot_module, "make_sampler", lambda *args: None)
    state, lib = slots({0: CHAT})
    state._keep(0, 0)
    lib.held[0] = state.cached[0] = TITLE
    _waiting(state, CHAT[:100] + [1, 2])  # another conversation with the same first 100 tokens
    state._admit()
    assert lib.held[0] == CHAT[:100] and state.active[0].fed == 100
    assert [entry.tokens for entry in state.prompt_cache.entries] == [CHAT, TITLE]
    shared, entry = state.prompt_cache.best(CHAT + [3])
    assert shared == len(CHAT)  # the first conversation's next turn still finds all of it


def test_a_slot_is_kept_while_the_loop_is_idle_so_the_request_that_takes_it_does_not_wait(monkeypatch):
    """A request that throws away a slot's cache would wait for the copy before its prefill;
    made once nothing has run for IDLE_KEEP_S, the copy is already there when it comes."""
    import rkollama.backends.llamacpp_slots as slot_module

    monkeypatch.setattr(slot_module, "make_sampler", lambda *args: None)
    state, lib = slots({0: CHAT})
    state.ended = [0]  # the chat's answer ended
    state.used[0] = time.monotonic()
    assert 0 < state._keep_idle() <= IDLE_KEEP_S  # a next request usually comes sooner: wait
    assert state.prompt_cache.entries == []
    state.used[0] -= IDLE_KEEP_S
    assert state._keep_idle() == 0.0 and state._keep_idle() is None
    assert [entry.tokens for entry in state.prompt_cache.entries] == [CHAT]
    copies = []
    read = lib.llama_state_seq_get_data
    lib.llama_state_seq_get_data = lambda *args: copies.append(args) or read(*args)
    _waiting(state, TITLE)
    state._admit()
    assert copies == [] and state.active[0].slot == 0  # nothing copied on the request's way in
    assert [entry.tokens for entry in state.prompt_cache.entries] == [CHAT]


def test_a_slot_that_cannot_be_kept_while_idle_leaves_the_loop_running(caplog):
    state, lib = slots({0: CHAT})
    state.ended, state.used[0] = [0], 0.0

    def refuse(*args):
        raise MemoryError

    lib.llama_state_seq_get_data = refuse
    with caplog.at_level(logging.ERROR, logger="rkollama.llamacpp"):
        assert state._keep_idle() == 0.0
    assert "could not be kept" in caplog.text and state._keep_idle() is None
