"""What the runtime's KV cache holds when the NPU engine feeds it token ids, as far as the
runtime itself confirms it.

Every run uses keep_history=1, so the runtime keeps the prompt and the answer. A request whose
tokens extend exactly what the cache holds sends only the new tokens; anything else clears the
cache and sends the whole prompt. What the cache holds after a run is believed only when
rkllm_get_kv_cache_size agrees: with the tokens sent and generated, or with one fewer (a
runtime that does not evaluate the last token it sampled). Any other count, an unreadable
count, a run that failed, or generated ids that do not spell the generated text leave the
cache untrusted, and the next request clears it. So the engine is right whatever the runtime
does with its cache, and fast where it keeps it.
"""

import logging
from dataclasses import dataclass, field

log = logging.getLogger("rkollama.rkllm")


@dataclass
class TokenCache:
    ids: list[int] = field(default_factory=list)
    """The token ids the KV cache holds, when trusted."""
    dirty: bool = False
    """The cache may hold something rkollama cannot vouch for: clear before the next run."""

    def plan(self, tokens: list[int]) -> tuple[list[int], int]:
        """(tokens to send, tokens already cached) for a run whose whole input is `tokens`. When
        nothing is reused the caller clears the cache first if `needs_clear`."""
        held = len(self.ids)
        if not self.dirty and held and len(tokens) > held and tokens[:held] == self.ids:
            return tokens[held:], held
        return tokens, 0

    @property
    def needs_clear(self) -> bool:
        return self.dirty or bool(self.ids)

    def cleared(self) -> None:
        self.ids, self.dirty = [], False

    def settle(self, whole: list[int], generated: list[int] | None, kv_size: int | None) -> None:
        """After a run whose whole input was `whole`: what the cache holds now. `generated` is
        None when the answer's ids are not known exactly; `kv_size` None when unreadable."""
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
