"""How the CPU engine picks each sequence's next token: llama.cpp's sampler chain, in
llama-cpp-python's order, or for greedy decoding without a grammar the same choice made directly
on the logits.

Why two: llama.cpp's `llama_sampler_sample` copies the whole vocabulary into a candidate array
for every token, then walks it once per sampler. For greedy decoding that is all work for an
argmax: 45 µs a token on SmolLM2's 49,152 tokens when the machine is idle, 120 µs in the slot
loop while the engine's other threads spin (measured, about 1.3% of a decode step on 2 cores).
`Greedy` applies the same repetition penalties to the few tokens they touch, with llama.cpp's
float32 arithmetic, and takes the first highest logit as llama.cpp's greedy sampler does: the
same token, in a few microseconds.
"""

import ctypes
import random
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rkollama.core.types import SamplingOptions

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar


class Sampler(Protocol):
    def sample(self, ctx: Any, row: int) -> int:
        """The next token from the logits of batch row `row` of `ctx`; it then counts as
        generated (repetition penalties see it)."""
        ...

    def close(self) -> None: ...


def penalty_window(opts: SamplingOptions, n_ctx: int) -> int:
    """Tokens the repetition penalties look back on: Ollama's repeat_last_n, where -1 means the
    window and no value asks for more than the window (llama.cpp allocates the whole history up
    front)."""
    return n_ctx if opts.repeat_last_n < 0 else min(opts.repeat_last_n, n_ctx)


def penalties_apply(opts: SamplingOptions, last_n: int) -> bool:
    """Whether the penalties change any logit (llama.cpp's own test)."""
    return last_n > 0 and not (opts.repeat_penalty == 1.0 and opts.frequency_penalty == 0.0
                               and opts.presence_penalty == 0.0)


MAX_VIEWS = 1024
"""Logits rows LogitRows keeps a view of (a context has a few: one per sequence a step samples)."""


class LogitRows:
    """numpy views of a context's rows of logits, each made once per address: making one
    (`np.ctypeslib.as_array`) cost ~30 µs a token in the slot loop, a quarter of its time between
    two decodes. A view is only used for the address llama.cpp has just returned, so one whose
    buffer was reallocated elsewhere is never read."""

    def __init__(self, lib: Any, n_vocab: int):
        self.lib, self.n_vocab = lib, n_vocab
        self.views: dict[int, np.ndarray[Any, np.dtype[np.float32]]] = {}

    def __call__(self, ctx: Any, row: int) -> "np.ndarray[Any, np.dtype[np.float32]]":
        """The logits of batch row `row` of `ctx` (llama.cpp's memory: read, never keep)."""
        pointer = self.lib.llama_get_logits_ith(ctx, row)
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
        view = self.views.get(address)
        if view is None:
            if len(self.views) >= MAX_VIEWS:
                self.views.clear()
            view = self.views[address] = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        return view


def make_sampler(lib: Any, vocab: Any, rows: LogitRows, opts: SamplingOptions, n_ctx: int,
                 grammar: "LlamaGrammar | None") -> Sampler:
    """The sampler for one request: `Greedy` when the answer is an argmax, else llama.cpp's
    chain. `lib` is the llama_cpp module; `vocab` the model's llama_vocab pointer; `rows` the
    context's logits."""
    if opts.temperature <= 0 and grammar is None:
        return Greedy(rows, opts, penalty_window(opts, n_ctx))
    return Chain(lib, vocab, rows.n_vocab, opts, n_ctx, grammar)


class Chain:
    """llama.cpp's sampler chain (llama-cpp-python's `Llama._init_sampler` order): penalties,
    grammar, then greedy, or top-k, typical, top-p, min-p, temperature and a seeded draw."""

    def __init__(self, lib: Any, vocab: Any, n_vocab: int, opts: SamplingOptions, n_ctx: int,
                 grammar: "LlamaGrammar | None"):
        self.lib = lib
        chain = self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        add(lib.llama_sampler_init_penalties(n_vocab, penalty_window(opts, n_ctx), opts.repeat_penalty,
                                             opts.frequency_penalty, opts.presence_penalty))
        if grammar is not None:
            add(lib.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode()))
        if opts.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return
        seed = opts.seed & 0xFFFFFFFF if opts.seed >= 0 else random.randrange(2**31)
        add(lib.llama_sampler_init_top_k(opts.top_k))
        add(lib.llama_sampler_init_typical(opts.typical_p, 1))
        add(lib.llama_sampler_init_top_p(opts.top_p, 1))
        add(lib.llama_sampler_init_min_p(opts.min_p, 1))
        add(lib.llama_sampler_init_temp(opts.temperature))
        add(lib.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any, row: int) -> int:
        return int(self.lib.llama_sampler_sample(self.chain, ctx, row))

    def close(self) -> None:
        if self.chain is not None:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None


class Greedy:
    """The highest logit after llama.cpp's repetition penalties, which it reproduces: each of
    the last `last_n` generated tokens, counted c times there, has its logit multiplied by
    repeat_penalty when ≤ 0 and divided by it otherwise, then lowered by c·frequency_penalty +
    presence_penalty, in float32."""

    def __init__(self, rows: LogitRows, opts: SamplingOptions, last_n: int):
        self.rows = rows
        self.penalised = penalties_apply(opts, last_n)
        self.repeat = np.float32(opts.repeat_penalty)
        self.frequency = np.float32(opts.frequency_penalty)
        self.presence = np.float32(opts.presence_penalty)
        self.recent: deque[int] = deque(maxlen=max(last_n, 1))
        self.counts: Counter[int] = Counter()

    def sample(self, ctx: Any, row: int) -> int:
        token = self.pick(self.rows(ctx, row))
        self.accept(token)
        return token

    def pick(self, logits: "np.ndarray[Any, np.dtype[np.float32]]") -> int:
        """The chosen token of a row of float32 logits (left as it was: the penalised values
        are written in place for the argmax, then the originals back, rather than copying the
        whole vocabulary)."""
        if not self.penalised or not self.counts:
            return int(logits.argmax())
        ids = np.fromiter(self.counts.keys(), dtype=np.intp, count=len(self.counts))
        counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
        original = logits[ids]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            values = np.where(original <= 0, original * self.repeat, original / self.repeat)
            values -= counts * self.frequency + self.presence
        logits[ids] = values
        try:
            return int(logits.argmax())
        finally:
            logits[ids] = original

    def accept(self, token: int) -> None:
        if not self.penalised:
            return
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
        self.recent.append(token)
        self.counts[token] += 1

    def close(self) -> None:
        pass
