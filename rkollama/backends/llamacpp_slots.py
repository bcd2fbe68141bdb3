"""Parallel slots on the CPU engine (OLLAMA_NUM_PARALLEL above 1): continuous batching of up to N
sequences on one llama.cpp context, as llama.cpp's own server does it.

One thread runs the loop. Each step builds one `llama_batch`: the next token of every sequence
that is generating, then chunks of the prompts still being read, up to n_batch tokens (beside
answering sequences, as many as keep the step near ANSWERING_STEP_S), so a new request's prefill
delays the others by at most one such chunk. Requests join and leave between steps;
each has its own sampler chain (grammar, penalties, top-k/p, temperature, seed), its own KV
sequence (a slot of num_ctx tokens) and its own context shift. A slot keeps what its KV cache
holds after a request ends; the next request goes to the free slot where reusing it saves the
most, counting what it would evict against it (`_choose`), and reads only the rest. When another
slot (free or busy) holds a longer start of the prompt — a system prompt, tool definitions, a
document several requests ask about — that start is copied from it (llama.cpp copies the slot's
cache) instead of read again. Cancelling ends a sequence at the next step and frees its slot;
a long prompt step whose request is cancelled stops at once and is undone (`_decode`).

An image in a prompt (a run of stand-in ids, core.media) is read in a step of its own, after
the batch: the projector encodes it and its embeddings go into the sequence's KV cache. No
reuse, shift or cut ever splits one.
"""

import codecs
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Emit
from rkollama.backends.llamacpp_prompt_cache import SAVE_MIN_TOKENS, PromptCache, Saved
from rkollama.backends.llamacpp_sampling import Sampler, make_sampler
from rkollama.core import media
from rkollama.core.fitting import common_prefix
from rkollama.core.types import Done, DoneReason, Generation, Token, TokenLogprob
from rkollama.errors import BackendFailed

if TYPE_CHECKING:
    from rkollama.backends.llamacpp_vision import Picture, Vision

log = logging.getLogger("rkollama.llamacpp")

GATHER_S = 0.02
"""Longest a step from idle waits for requests that arrived with its own (SlotLoop._gather):
measured, four simultaneous clients' requests are all submitted within ~10 ms."""
EVICTION_WEIGHT = 0.1
"""What a cached token another request would throw away counts against a slot, against a
prompt token the slot saves from prefill: the chance it would have been reused."""
ANSWERING_STEP_S = 0.5
"""Longest a step that reads prompts should take while other sequences are answering (their
next token waits for it), in seconds: prompt chunks are sized to it from what prompt tokens
have cost (`SlotLoop._prompt_room`). Measured, SmolLM2 answering while a 1,816-token prompt
arrives: its longest wait for a token 2.1 s → 0.56–0.74 s, the prompt's first token 6.85 →
7.0 s (0.25 s gave 0.3 s waits but 9.5 s: smaller chunks read less efficiently). A whole
n_batch chunk of a 3B model on a board's CPU is tens of seconds."""
MIN_PROMPT_CHUNK = 128
"""Fewest prompt tokens a step beside answering sequences reads: smaller chunks read slower
(measured at depth 1,300, per token against a 512-token chunk: 128 tokens +10%, 64 +25%; under
64 llama.cpp's CPU flash attention goes row by row, 26-token chunks +100%)."""
ABORT_MIN_TOKENS = 64
"""Prompt tokens a step must read before it can be cut short when one of its prompts is
cancelled (`SlotLoop._decode`): llama.cpp then asks after every graph node, a Python call each
(a few µs; nothing on a step that reads fewer)."""
COPY_COST = 6.0
"""What copying one slot's KV cache into another costs, in prompt tokens read, per byte of a
slot's cache per byte of weights (a copy moves the whole slot; a token's prefill is work in
proportion to the weights). Measured on SmolLM2-135M (97 MB of weights, 2 threads): a 2,048-token
slot (47 MB) copies in 8 ms while a prompt token reads in 3 ms."""


def copy_threshold(slot_bytes: int, weight_bytes: int) -> int:
    """Fewest prompt tokens a copy from another slot must save to be worth it (`slot_bytes`:
    one slot's KV cache; `weight_bytes`: the model's weights)."""
    return max(1, math.ceil(COPY_COST * slot_bytes / max(1, weight_bytes)))


@dataclass(frozen=True)
class Layout:
    """How a SlotLoop's context is made."""

    slots: int
    n_ctx: int
    """Tokens each slot holds."""
    n_batch: int
    """Tokens a step reads at most."""
    flash_attention: int | None = None
    """llama.cpp's flash_attn_type; None: llama.cpp's own choice, as its server makes it."""
    copy_min: int | None = None
    """Fewest tokens a copy from another slot must save (copy_threshold); None: never copy."""
    cache_bytes: int = 0
    """Most bytes of the prompt cache (0: none)."""


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


@dataclass
class _Seq:
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


class SlotLoop:
    """Up to `slots` generations at once on one context of `slots × n_ctx` tokens."""

    def __init__(self, llm: Any, layout: Layout,
                 logprob: "Callable[[int, bytes, int, Any], TokenLogprob]", vision: "Vision | None" = None):
        import llama_cpp

        slots, n_ctx, n_batch = layout.slots, layout.n_ctx, layout.n_batch
        flash_attention, copy_min = layout.flash_attention, layout.copy_min
        # Every running sequence's next token must fit in one batch, whatever num_batch says.
        n_batch = max(n_batch, slots)
        self.lib, self.llm, self.slots, self.n_ctx, self.n_batch = llama_cpp, llm, slots, n_ctx, n_batch
        self.logprob = logprob
        """(token, piece, top, logits pointer) -> TokenLogprob: the engine's own measure."""
        self.vision = vision
        # The engine's own context's parameters (KV types, threads), sized for the slots, with
        # llama.cpp's choice of attention kernel unless told (`flash_attention`, a llama.cpp
        # flash_attn_type), as its own server makes it: flash attention on the CPU decodes ~10%
        # faster than llama-cpp-python's default, which turns it off.
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if flash_attention is None \
            else flash_attention
        params.n_ctx = n_ctx * slots
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = False  # each sequence its own n_ctx, as llama-server's slots
        self.ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise BackendFailed("llama.cpp could not make a context for the parallel slots")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.decode = llama_cpp.llama_decode
        """(ctx, batch) -> 0 on success: one forward pass (a seam tests can watch)."""
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(self.memory))
        model = llm._model.model
        recurrent = llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model)
        self.cuttable = not recurrent
        """Whether a slot's cache can be cut back to any earlier token: not a recurrent state
        (Mamba, RWKV; hybrids such as LFM2 or Granite 4-H), which keeps a few at most. There,
        nothing is copied and no step is undone."""
        self.copy_min = copy_min if self.cuttable else None
        """Fewest tokens a copy from another slot must save (copy_threshold); None: never copy."""
        self.prompt_cache = PromptCache(llama_cpp, self.ctx, layout.cache_bytes)
        """Slots' caches kept in RAM when another request takes their slot."""
        self.vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, slots)
        self.pieces: dict[int, bytes] = {}
        """Each generated token's bytes (at most the vocabulary)."""
        self.cached: list[list[int]] = [[] for _ in range(slots)]
        """What each slot's KV cache holds, in order."""
        self.used = [0.0] * slots
        """When each slot last ended a request (time.monotonic(); 0: never)."""
        self.free = list(range(slots))
        self.active: list[_Seq] = []
        self.waiting: deque[_Seq] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.preparing = 0
        """Requests announced (`expect`) and not yet submitted: their prompts are being fitted."""
        self.prompt_token_s = 0.0
        """What a prompt token has cost lately, in seconds (0: not measured yet)."""
        self.watched: list[_Seq] = []
        """Sequences whose cancelling cuts the running step short (see `_decode`)."""
        self.abort_check = llama_cpp.ggml_abort_callback(lambda _data: self._abort_wanted())
        self.no_abort_check = llama_cpp.ggml_abort_callback()  # NULL: llama.cpp asks nothing
        self.thread = threading.Thread(target=self._run, name="llamacpp-slots", daemon=True)
        self.thread.start()

    # -- the requester's side ----------------------------------------------------------------------
    def generate(self, request: Request) -> Iterator[Token | Done]:
        """Tokens, then Done, of `request`. It joins the loop at the first next() (a generator
        never read takes no slot); closing it cancels the request."""
        out: queue.SimpleQueue[Token | Done | Exception] = queue.SimpleQueue()
        self.submit(request, out.put)
        ended = False
        try:
            while True:
                item = out.get()
                if isinstance(item, Exception):
                    ended = True
                    raise item
                yield item
                if isinstance(item, Done):
                    ended = True
                    return
        finally:
            if not ended:  # the reader left: end the sequence at the next step
                request.cancel.set()
                with self.cond:
                    self.cond.notify_all()

    def expect(self, change: int) -> None:
        """`change` more (or, negative, fewer) requests are on their way to `submit`."""
        with self.cond:
            self.preparing = max(0, self.preparing + change)
            self.cond.notify_all()

    def submit(self, request: Request, emit: Emit, expected: bool = False) -> None:
        """Queue `request`; its events go to `emit` from the loop's thread as they are made (a
        runner sends each straight down its pipe: no thread hop per token). `expected`: it was
        announced by `expect`."""
        with self.cond:
            self.preparing = max(0, self.preparing - expected)
            if self.stopping:
                emit(BackendFailed("the engine is closing"))
                return
            self.waiting.append(_Seq(request, emit))
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(30)
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.active and not self.waiting and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    for seq in list(self.active) + list(self.waiting):
                        seq.emit(BackendFailed("the engine was closed"))
                    return
                self._admit()
                self._gather()
            if not self.active:
                continue
            try:
                self._step()
            except Exception as exc:  # a failed decode fails what was running, never the loop
                log.exception("parallel decode step failed")
                for seq in list(self.active):
                    self._release(seq)
                    seq.emit(BackendFailed(f"generation failed: {exc}"))

    def _gather(self) -> None:
        """(Lock held.) Before the first step from idle, wait up to GATHER_S for the requests
        announced and still having their prompts fitted (`preparing`): requests that reach the engine
        together are read in one batch, as llama-server's loop takes every queued request —
        otherwise the first one's prefill runs alone and the others wait a whole step for
        their first token. A lone request never waits (nothing is being prepared), nor does
        one that no free slot could take."""
        if self.preparing <= 0 or not self.active or any(seq.begun for seq in self.active):
            return
        deadline = time.monotonic() + GATHER_S
        while self.preparing > 0 and self.free and not self.stopping \
                and (left := deadline - time.monotonic()) > 0:
            self.cond.wait(left)
            self._admit()

    def _admit(self) -> None:
        """Waiting requests into free slots (the one sharing the longest prefix with each); a
        cancelled one ends at once, slot or not."""
        for seq in [seq for seq in self.waiting if seq.request.cancel.is_set()]:
            self.waiting.remove(seq)
            seq.emit(Done(DoneReason.CANCELLED, len(seq.request.tokens)))
        while self.waiting and self.free:
            seq = self.waiting.popleft()
            tokens = seq.request.tokens
            if not tokens:  # nothing to continue from (the routes never send this)
                seq.emit(Done(DoneReason.STOP))
                continue
            if len(tokens) >= self.n_ctx and not seq.request.may_shift:  # no room for an answer
                seq.emit(Done(DoneReason.LENGTH, len(tokens), 0.0, 0, 0.0, tuple(tokens)))
                continue
            try:
                self._place(seq)
            except Exception as exc:  # one request fails, never the loop (every other would hang)
                log.exception("a request could not start")
                if seq.slot >= 0:  # what its slot holds is unknown now: empty it
                    self.lib.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
                    self.cached[seq.slot] = []
                    self.free.append(seq.slot)
                seq.emit(BackendFailed(f"generation failed: {exc}"))

    def _place(self, seq: _Seq) -> None:
        """Start `seq` in the free slot `_choose` picks, from what that slot can start with."""
        tokens = seq.request.tokens
        slot, reuse, source = self._choose(tokens)
        self.free.remove(slot)
        seq.slot = slot
        if isinstance(source, Saved):  # out of the cache before the slot's own state goes in
            self.prompt_cache.take(source)
        self._keep(slot, reuse if source == slot else 0)
        reuse = self._start(slot, reuse, source, len(tokens))
        seq.window, seq.fed = list(tokens), reuse
        seq.offset = sum(seq.request.pictures[key].positions - seq.request.pictures[key].count
                         for _, key in media.image_starts(tokens[:reuse]))
        seq.sampler = make_sampler(self.lib, self.vocab, self.n_vocab, seq.request.gen.options,
                                   self.n_ctx, seq.request.grammar)
        seq.started = time.perf_counter()
        self.active.append(seq)

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

    def _end_or_shift(self) -> None:
        """Cancelled sequences end; a full window (its last token not read yet) shifts or ends
        with LENGTH, so prompt + answer never pass num_ctx."""
        for seq in list(self.active):
            if seq.request.cancel.is_set():
                self._finish(seq, DoneReason.CANCELLED)
            elif len(seq.window) >= self.n_ctx and seq.fed == len(seq.window) - 1 \
                    and not self._shift(seq):
                self._finish(seq, DoneReason.LENGTH)

    def _plan(self) -> tuple[list[tuple[_Seq, int]], list[_Seq]]:
        """(each sequence in this step and how many tokens it adds, those reading their prompt):
        every generating sequence's next token first, then the prompts in turn, a chunk of
        text at a time, up to n_batch (less beside answering sequences: `_prompt_room`)."""
        plan: list[tuple[_Seq, int]] = []
        for seq in self.active:
            seq.row = -1
            if seq.fed == len(seq.window) - 1 and seq.produced:
                plan.append((seq, 1))
        room = self._prompt_room(len(plan))
        reading = []
        for seq in self.active:
            if not seq.produced and seq.fed < len(seq.window) and room > 0:
                run = self._text_run(seq, room)
                if run:
                    plan.append((seq, run))
                    room -= run
                    reading.append(seq)
        return plan, reading

    def _prompt_room(self, answering: int) -> int:
        """Prompt tokens this step may read: the batch's room, or beside `answering` sequences
        as many as ANSWERING_STEP_S allows at what prompt tokens have cost (MIN_PROMPT_CHUNK at
        least; twice that before anything was measured)."""
        room = self.n_batch - answering
        if not answering:
            return room
        per_token = self.prompt_token_s
        fits = int(ANSWERING_STEP_S / per_token) if per_token > 0 else 2 * MIN_PROMPT_CHUNK
        return min(room, max(MIN_PROMPT_CHUNK, fits))

    def _step(self) -> None:
        self._end_or_shift()
        plan, reading = self._plan()
        n = 0
        # Written in slot order: llama.cpp puts only increasing, consecutive sequence ids in one
        # forward pass (split caches), so slots 1, 2, 3, 0 would take two passes a step.
        for seq, count in sorted(plan, key=lambda entry: entry[0].slot):
            n = self._add(n, seq, count)
        if n:
            self.batch.n_tokens = n
            if not self._decode(plan, reading):
                return
            for seq in list(self.active):
                if seq.row >= 0:
                    self._sample(seq)
                elif seq in reading:  # a prompt chunk read: the runner's stall watchdog hears work
                    seq.emit(Token(""))
        seeing = next((seq for seq in self.active if seq not in reading and not seq.produced
                       and seq.fed < len(seq.window) and media.is_image(seq.window[seq.fed])), None)
        if seeing is not None:  # one image a step, so the others go on between images
            self._see(seeing)

    def _decode(self, plan: list[tuple[_Seq, int]], reading: list[_Seq]) -> bool:
        """Run the step's batch; False when it was cut short, and then undone.

        A long prompt step (ABORT_MIN_TOKENS) stops within a graph node of one of its prompts
        being cancelled (Stop in Open WebUI, a client gone) or of the engine closing, instead
        of reading the rest of its chunk first (a 512-token chunk is ~2 s of SmolLM2 here, and
        tens of seconds of a 3B model on a board's CPU). llama.cpp keeps the ubatches it
        finished and drops the one it stopped in; the step is undone whole (each sequence's
        tokens of it removed from its cache), the cancelled ones end at the next step and the
        others read again. A step that reads enough prompt also measures what a prompt token
        costs (`_prompt_room`)."""
        read = sum(count for seq, count in plan if seq in reading)
        watched = self.cuttable and read >= ABORT_MIN_TOKENS
        if watched:
            self.watched = reading
            self.lib.llama_set_abort_callback(self.ctx, self.abort_check, None)
        started = time.perf_counter()
        try:
            code = self.decode(self.ctx, self.batch)
        finally:
            if watched:
                self.lib.llama_set_abort_callback(self.ctx, self.no_abort_check, None)
                self.watched = []
        if code == 2 and watched:
            for seq, count in plan:
                seq.fed -= count
                seq.row = -1
                self.lib.llama_memory_seq_rm(self.memory, seq.slot, seq.fed + seq.offset, -1)
            log.info("a prompt step was cut short: a request reading in it was cancelled")
            return False
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        if read >= MIN_PROMPT_CHUNK:  # what a prompt token costs now (it grows with depth)
            cost = (time.perf_counter() - started) / self.batch.n_tokens
            self.prompt_token_s = cost if not self.prompt_token_s else 0.5 * (self.prompt_token_s + cost)
        return True

    def _abort_wanted(self) -> bool:
        """(llama.cpp's thread, after each graph node of a watched step.)"""
        return self.stopping or any(seq.request.cancel.is_set() for seq in self.watched)

    def _text_run(self, seq: _Seq, limit: int) -> int:
        """Unread tokens of `seq` before its next image, at most `limit`."""
        window, run = seq.window, 0
        while run < limit and seq.fed + run < len(window) and not media.is_image(window[seq.fed + run]):
            run += 1
        return run

    def _see(self, seq: _Seq) -> None:
        """Read the image that starts at `seq`'s next unread token (never its last: the
        engine's tokenizer puts text after a trailing image)."""
        picture = seq.request.pictures[media.image_key(seq.window[seq.fed])]
        assert self.vision is not None, "a prompt with images reached an engine without a projector"
        assert seq.fed + picture.count < len(seq.window), "a prompt ends with an image"
        self.vision.decode(self.ctx, picture, seq.fed + seq.offset, seq.slot, self.n_batch)
        seq.fed += picture.count
        seq.offset += picture.positions - picture.count
        seq.emit(Token(""))  # the runner's stall watchdog hears work

    def _add(self, n: int, seq: _Seq, count: int) -> int:
        """`count` unread tokens of `seq` into the batch at row `n`; logits for the window's last."""
        seq.begun = True
        for _ in range(count):
            self.batch.token[n] = seq.window[seq.fed]
            self.batch.pos[n] = seq.fed + seq.offset
            self.batch.n_seq_id[n] = 1
            self.batch.seq_id[n][0] = seq.slot
            last = seq.fed == len(seq.window) - 1
            self.batch.logits[n] = last
            if last:
                seq.row = n
            seq.fed += 1
            n += 1
        return n

    def _sample(self, seq: _Seq) -> None:
        lib = self.lib
        assert seq.sampler is not None  # set when the sequence was admitted
        token = seq.sampler.sample(self.ctx, seq.row)
        now = time.perf_counter()
        seq.first = seq.first or now
        if lib.llama_vocab_is_eog(self.vocab, token):
            self._finish(seq, DoneReason.STOP)
            return
        seq.produced += 1
        seq.window.append(token)
        piece = self.pieces.get(token)
        if piece is None:  # a token's bytes never change: each is asked of llama.cpp once
            piece = self.pieces[token] = self.llm.detokenize([token])
        text = seq.decoder.decode(piece)
        scored: tuple[TokenLogprob, ...] = ()
        if seq.request.gen.logprobs:
            logits = lib.llama_get_logits_ith(self.ctx, seq.row)
            scored = (self.logprob(token, piece, seq.request.gen.top_logprobs, logits),)
        if text or scored:
            seq.emit(Token(text, logprobs=scored))
        if seq.produced >= seq.request.limit:
            self._finish(seq, DoneReason.LENGTH)

    def _shift(self, seq: _Seq) -> bool:
        """Make room as the sequential engine does: keep the first `keep` tokens, drop half of
        the rest (an image on either edge goes whole), and move what follows back (llama.cpp
        shifts the cached keys). Not under M-RoPE positions (`offset`), which do not shift."""
        if not (seq.request.may_shift and self.can_shift) or seq.offset:
            return False
        lib, slot = self.lib, seq.slot
        keep = media.back_to_edge(seq.window, seq.request.keep)
        discard = media.on_to_edge(seq.window, keep + max(1, (len(seq.window) - keep) // 2)) - keep
        end = min(keep + discard, seq.fed)  # the dropped tokens that are in the KV cache
        if keep < end:
            lib.llama_memory_seq_rm(self.memory, slot, keep, end)
            lib.llama_memory_seq_add(self.memory, slot, end, -1, keep - end)
            seq.fed -= end - keep
        seq.window = seq.window[:keep] + seq.window[keep + discard:]
        if seq.fed > len(seq.window) - 1:  # the unread last token went too: read the new last again
            lib.llama_memory_seq_rm(self.memory, slot, len(seq.window) - 1, -1)
            seq.fed = len(seq.window) - 1
        return True

    def _finish(self, seq: _Seq, reason: DoneReason) -> None:
        tail = seq.decoder.decode(b"", final=True)
        if tail and reason is not DoneReason.CANCELLED:
            seq.emit(Token(tail))
        end = time.perf_counter()
        first = seq.first or end
        self._release(seq)
        seq.emit(Done(reason, len(seq.request.tokens), (first - seq.started) * 1000.0, seq.produced,
                         (end - first) * 1000.0, tuple(t for t in seq.window if not media.is_image(t))))

    def _release(self, seq: _Seq) -> None:
        self.cached[seq.slot] = seq.window[:seq.fed]
        self.used[seq.slot] = time.monotonic()
        self.free.append(seq.slot)
        self.active.remove(seq)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
