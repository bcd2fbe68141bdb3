"""The requests of the CPU engine's slots, and where each one starts (SlotLoop's side of it):
which free slot it takes and what that slot starts with — its own cache, a copy of another
slot's, or a state the prompt cache kept — and what a slot held, kept before a request throws
it away."""

import codecs
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Emit
from rkollama.backends.llamacpp_prompt_cache import SAVE_MIN_TOKENS, PromptCache, Saved
from rkollama.core import media
from rkollama.core.fitting import common_prefix
from rkollama.core.types import Generation

if TYPE_CHECKING:
    from rkollama.backends.llamacpp_sampling import Sampler
    from rkollama.backends.llamacpp_vision import Picture

log = logging.getLogger("rkollama.llamacpp")

EVICTION_WEIGHT = 0.1
"""What a cached token another request would throw away counts against a slot, against a
prompt token the slot saves from prefill: the chance it would have been reused."""
COPY_COST = 6.0
"""What copying one slot's KV cache into another costs, in prompt tokens read, per byte of a
slot's cache per byte of weights (a copy moves the whole slot; a token's prefill is work in
proportion to the weights). Measured on SmolLM2-135M (97 MB of weights, 2 threads): a 2,048-token
slot (47 MB) copies in 8 ms while a prompt token reads in 3 ms."""


def copy_threshold(slot_bytes: int, weight_bytes: int) -> int:
    """Fewest prompt tokens a copy from another slot must save to be worth it (`slot_bytes`:
    one slot's KV cache; `weight_bytes`: the model's weights)."""
    return max(1, math.ceil(COPY_COST * slot_bytes / max(1, weight_bytes)))



@dataclass
class Request:
    """What the engine decided for one generation before it reaches a slot."""

    gen: Generation
    cancel: threading.Event
    tokens: list[int]
    """The prompt, fitted to one slot's window."""
    limit: int
    """Answer tokens allowed."""
    may_shift: bool
    keep: int
    """Tokens a shift keeps at the start."""
    grammar: Any = None
    """A llama_cpp LlamaGrammar, or None."""
    pictures: "dict[int, Picture]" = field(default_factory=dict)
    """The images `tokens` holds, by key (core.media)."""
    next_turn: "Callable[[list[int]], list[int]] | None" = None
    """Given the answer's tokens, what a client's next turn most likely starts with ([]: no
    guess); None when the engine does not guess (not a chat, images, a conversation that
    cannot fit the window whole)."""
    background: bool = False
    """A read-ahead of a guessed next turn (llamacpp_read_ahead): it reads its prompt, answers
    nothing and gives way to any request."""


@dataclass
class Seq:
    """A request in a slot: what it holds and has produced."""

    request: Request
    emit: Emit
    sampler: "Sampler | None" = None
    slot: int = -1
    window: list[int] = field(default_factory=list)
    """The prompt, then the answer so far (after any shift); its last token may be unread."""
    fed: int = 0
    """Tokens of `window` in the slot's KV cache."""
    offset: int = 0
    """Positions minus tokens in the KV cache (images under M-RoPE take fewer positions)."""
    begun: bool = False
    """It has been in a step."""
    row: int = -1
    """The batch row whose logits give this sequence's next token, this step; -1 none."""
    produced: int = 0
    started: float = 0.0
    first: float | None = None
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))


class SlotStarts:
    """SlotLoop's choice of a slot for each request, and its start there."""

    lib: Any
    memory: Any
    n_ctx: int
    free: list[int]
    """Slots no request holds."""
    cached: list[list[int]]
    """What each slot's KV cache holds, in order."""
    used: list[float]
    """When each slot last ended a request (time.monotonic(); 0: never)."""
    active: list[Seq]
    copy_min: int | None
    """Fewest tokens a copy from another slot must save (copy_threshold); None: never copy."""
    cuttable: bool
    """Whether a slot's cache can be cut back to any earlier token: not a recurrent state (Mamba,
    RWKV; hybrids such as LFM2 or Granite 4-H), which keeps a few at most. There, nothing is
    copied and no step is undone."""
    prompt_cache: PromptCache
    """Slots' caches kept in RAM when another request takes their slot."""

    def _keep(self, slot: int, kept: int) -> None:
        """Save what `slot`'s cache holds to the prompt cache when a request is about to throw
        away SAVE_MIN_TOKENS or more of it (it keeps the first `kept`; a recurrent state cut
        anywhere short of its end loses it all)."""
        held = self.cached[slot]
        if not self.cuttable and kept < len(held):
            kept = 0
        if len(held) - kept >= SAVE_MIN_TOKENS:
            self.prompt_cache.save(slot, held)

    def _start(self, slot: int, reuse: int, source: "int | Saved", length: int) -> int:
        """Make `slot`'s cache hold the prompt's first `reuse` tokens (of `length`), copied from
        `source`'s when that is another slot or put back from the prompt cache; returns how
        many it holds. A cache that cannot be cut there (a recurrent state asked to go back
        further than it keeps) is emptied: 0."""
        if isinstance(source, Saved):
            if not self.prompt_cache.restore(source, slot):
                return 0
            log.debug("slot %d: %d of the prompt's %d tokens put back from the prompt cache",
                      slot, reuse, length)
        elif source != slot:
            # Only whole slots copy (llama.cpp, split caches): the copy's tail goes next.
            # The data moves at the start of the next decode, before anything is written.
            self.lib.llama_memory_seq_cp(self.memory, source, slot, -1, -1)
            log.debug("slot %d: %d of the prompt's %d tokens copied from slot %d's cache",
                      slot, reuse, length, source)
        else:
            log.debug("slot %d: %d of the prompt's %d tokens are in its cache", slot, reuse, length)
        if self.lib.llama_memory_seq_rm(self.memory, slot, reuse, -1):
            return reuse
        self.lib.llama_memory_seq_rm(self.memory, slot, -1, -1)  # the whole sequence always goes
        log.debug("slot %d: its state cannot go back to token %d; the prompt is read from the start",
                  slot, reuse)
        return 0

    def _choose(self, tokens: list[int]) -> "tuple[int, int, int | Saved]":
        """(free slot, how many of `tokens` it starts with, where they come from: a slot or a
        prompt cache entry): the slot whose cache saves the most prefill now, less a tenth of
        what it would throw away (EVICTION_WEIGHT) — a follow-up turn goes back to its
        conversation, a prompt like the last one reuses what they share, and a request that
        shares only a system prompt with a long conversation (Open WebUI's title and tags beside
        a chat) takes another slot rather than evict it; the one used longest ago between
        equals. What a slot would copy from another, or put back from the prompt cache, counts
        less what that costs (copy_min, `_restore_cost`). The last token is always read; an
        image is never cut."""

        def usable(shared: int) -> int:
            return media.back_to_edge(tokens, min(shared, len(tokens) - 1))

        ram, entry = self.prompt_cache.best(tokens)
        ram = usable(ram)
        if entry is not None and not self.cuttable and ram < len(entry.tokens):
            entry = None  # a recurrent state is put back whole or not at all

        own = {slot: common_prefix(self.cached[slot], tokens) for slot in self.free}
        # What every slot's cache holds of `tokens`, best first: a busy slot holds what it has read.
        held = sorted([(usable(shared), slot) for slot, shared in own.items()]
                      + [(usable(min(seq.fed, common_prefix(seq.window, tokens))), seq.slot)
                         for seq in self.active], reverse=True)

        def start(slot: int) -> "tuple[int, int | Saved, int]":
            """(tokens `slot` would start with, where they come from, what getting them costs
            in prompt tokens)."""
            choice: tuple[int, int | Saved, int] = (usable(own[slot]), slot, 0)
            if self.copy_min is not None:
                best, source = next(((n, s) for n, s in held if s != slot), (0, slot))
                if best - self.copy_min >= choice[0]:
                    choice = (best, source, self.copy_min)
            if entry is not None and ram - (cost := self._restore_cost(entry)) > choice[0] - choice[2]:
                choice = (ram, entry, cost)
            return choice

        def worth(slot: int) -> tuple[float, float]:
            n, _, cost = start(slot)
            return n - cost - EVICTION_WEIGHT * (len(self.cached[slot]) - own[slot]), -self.used[slot]

        slot = max(self.free, key=worth)
        n, source, _ = start(slot)
        return slot, n, source

    def _restore_cost(self, entry: Saved) -> int:
        """What putting `entry` back costs, in prompt tokens: a copy of its bytes, as copying a
        whole slot (copy_min) of its length."""
        return math.ceil((self.copy_min or 1) * len(entry.tokens) / self.n_ctx)
