"""What the runtime's KV cache holds when the NPU engine feeds it token ids, as far as the
runtime itself confirms it, and so what each run sends.

A request whose tokens extend exactly what the cache holds sends only the new tokens, with
keep_history=1 (fast whether or not the runtime reuses prefixes by itself). One that shares a
long prefix with the cache but then differs (a thinking model's earlier answer, re-rendered
without its reasoning) resends the whole prompt with keep_history=0 and leaves the cache alone:
a runtime that reuses the matching prefix (as Rockchip's maintainer says it does) prefills only
the rest, one that does not prefills it all, and the answer is right either way. Anything else
clears the cache and sends the whole prompt with keep_history=1, so that the next turn extends.

What the cache holds after a run is believed only when rkllm_get_kv_cache_size agrees: with the
tokens sent and generated, or with one fewer (a runtime that does not evaluate the last token it
sampled); 0 after a keep_history=0 run means it kept nothing. Any other count, an unreadable
count, a failed run, or generated ids that do not spell the generated text leave the cache
untrusted, and the next request clears it.
"""

import logging
from dataclasses import dataclass, field

from rkollama.core.fitting import common_prefix

log = logging.getLogger("rkollama.rkllm")

SHARED_PREFIX_MIN = 32
"""Tokens a prompt must share with the cache before a whole resend leaves the cache for the
runtime to reuse, rather than clearing it."""


@dataclass(frozen=True)
class Plan:
    send: list[int]
    cached: int
    """Tokens of the prompt the cache holds (not sent)."""
    keep_history: bool
    clear: bool
    """Clear the cache before the run."""


@dataclass
class TokenCache:
    ids: list[int] = field(default_factory=list)
    """The token ids the KV cache holds, when trusted."""
    dirty: bool = False
    """The cache may hold something rkollama cannot vouch for: clear before the next run."""

    def plan(self, tokens: list[int]) -> "Plan":
        """What to send for a run whose whole input is `tokens`."""
        held = len(self.ids)
        if not self.dirty and held and len(tokens) > held and tokens[:held] == self.ids:
            return Plan(tokens[held:], held, keep_history=True, clear=False)
        if not self.dirty and common_prefix(self.ids, tokens) >= SHARED_PREFIX_MIN:
            return Plan(tokens, 0, keep_history=False, clear=False)
        return Plan(tokens, 0, keep_history=True, clear=self.dirty or bool(self.ids))

    @property
    def needs_clear(self) -> bool:
        """Whether the cache may hold anything (a batch or an embedding clears it first)."""
        return self.dirty or bool(self.ids)

    def cleared(self) -> None:
        self.ids, self.dirty = [], False

    def settle(self, whole: list[int], generated: list[int] | None, kv_size: int | None,
               kept: bool = True) -> None:
        """After a run whose whole input was `whole`: what the cache holds now. `generated` is
        None when the answer's ids are not known exactly; `kv_size` None when unreadable;
        `kept` False for a keep_history=0 run."""
        if not kept and kv_size == 0:
            self.ids, self.dirty = [], False
            return
        if generated is None or kv_size is None:
            self.forget("the answer's token ids or the cache size are unknown")
            return
        expected = whole + generated
        if kv_size == len(expected):
            self.ids, self.dirty = expected, False
        elif generated and kv_size == len(expected) - 1:  # the last sampled token not evaluated
            self.ids, self.dirty = expected[:-1], False
        else:
            self.forget(f"the runtime holds {kv_size} tokens where {len(expected)} were expected")

    def forget(self, why: str) -> None:
        if self.ids or not self.dirty:
            log.debug("KV cache not reused next time: %s", why)
        self.ids, self.dirty = [], True
