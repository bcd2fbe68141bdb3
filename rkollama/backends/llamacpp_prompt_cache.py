"""Slots' KV caches kept in RAM when another request takes their slot, and put back when their
conversation returns (what llama-server calls its host-memory prompt cache, `--cache-ram`).

Why: with one slot (Ollama's default) Open WebUI's title, tags and follow-ups requests take the
slot between two turns of a chat, so each next turn read its whole history again — seconds of
prefill on a board's CPU. A saved state is put back with one copy (`llama_state_seq_set_data`)
and only what follows it is read. A state is a few tens of kilobytes a token, so the cache is
bounded in bytes (RKOLLAMA_PROMPT_CACHE_MB) and by the memory available when it saves; the
oldest entry goes first.
"""

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rkollama.core.fitting import common_prefix
from rkollama.meminfo import available_bytes

log = logging.getLogger("rkollama.llamacpp")

SAVE_MIN_TOKENS = 64
"""Fewest tokens of a slot's cache worth keeping when a request would throw them away: fewer
read again in well under a second."""


@dataclass(eq=False)  # an entry is itself, whatever it holds
class Saved:
    """One slot's KV cache, as llama.cpp serialises a sequence."""

    tokens: list[int]
    """What it holds, in order."""
    data: Any
    """The state (a ctypes byte array of len(data) bytes)."""


class PromptCache:
    """States saved from slots, oldest first, at most `limit_bytes` together."""

    def __init__(self, lib: Any, ctx: Any, limit_bytes: int,
                 available: Callable[[], int] = available_bytes):
        self.lib, self.ctx, self.limit = lib, ctx, limit_bytes
        self.entries: list[Saved] = []
        self.available = available
        """() -> bytes of memory available now (0: unknown)."""

    @property
    def bytes(self) -> int:
        return sum(len(entry.data) for entry in self.entries)

    def best(self, tokens: list[int]) -> tuple[int, "Saved | None"]:
        """(how many of `tokens` the entry that holds the longest start of them holds, that entry)."""
        found: tuple[int, Saved | None] = (0, None)
        for entry in self.entries:
            shared = common_prefix(entry.tokens, tokens)
            if shared > found[0]:
                found = (shared, entry)
        return found

    def save(self, slot: int, tokens: list[int]) -> bool:
        """Keep what `slot`'s cache holds (`tokens`), unless an entry already holds it all or it
        cannot fit; entries it holds all of go (they are its start). True when kept."""
        if not self.limit or len(tokens) < SAVE_MIN_TOKENS:
            return False
        if any(entry.tokens[:len(tokens)] == tokens for entry in self.entries):
            return False
        size = self.lib.llama_state_seq_get_size(self.ctx, slot)
        available = self.available()
        if size > self.limit or (available and size > available // 2):
            log.info("prompt cache: a slot's %d tokens (%.0f MiB) are not kept: %s", len(tokens),
                     size / 2**20, "over RKOLLAMA_PROMPT_CACHE_MB" if size > self.limit
                     else "more than half the memory available")
            return False
        data = (ctypes.c_uint8 * size)()
        written = self.lib.llama_state_seq_get_data(self.ctx, data, size, slot)
        if written != size:
            log.warning("prompt cache: llama.cpp wrote %d of a state's %d bytes; not kept", written, size)
            return False
        self.entries = [e for e in self.entries if tokens[:len(e.tokens)] != e.tokens]
        while self.entries and self.bytes + size > self.limit:
            gone = self.entries.pop(0)
            log.debug("prompt cache: dropped the oldest entry, %d tokens", len(gone.tokens))
        self.entries.append(Saved(list(tokens), data))
        log.debug("prompt cache: kept a slot's %d tokens (%.1f MiB; %d entries, %.1f MiB)",
                  len(tokens), size / 2**20, len(self.entries), self.bytes / 2**20)
        return True

    def take(self, entry: Saved) -> None:
        """`entry` out of the cache: a slot is to hold it (nearly) all again (`restore`)."""
        self.entries.remove(entry)

    def restore(self, entry: Saved, slot: int) -> bool:
        """Put `entry` back into `slot`, whatever the slot held; in the cache or taken out of it
        (`take`). False when llama.cpp could not (the slot is then empty)."""
        read = self.lib.llama_state_seq_set_data(self.ctx, entry.data, len(entry.data), slot)
        if read != len(entry.data):
            log.warning("prompt cache: llama.cpp could not put back a state of %d tokens", len(entry.tokens))
            self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), slot, -1, -1)
            return False
        log.debug("prompt cache: slot %d holds %d saved tokens again", slot, len(entry.tokens))
        return True
