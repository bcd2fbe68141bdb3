"""The CPU engine's slots (OLLAMA_NUM_PARALLEL of them; one by default): continuous batching of up to N
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
cache) instead of read again; what a request would throw away of a slot's cache is first kept
in RAM and put back when a prompt it starts returns (llamacpp_prompt_cache; the choice and each
start: llamacpp_slot_start). While nothing runs, the start of a chat's next turn is read ahead
(llamacpp_read_ahead). Cancelling ends a sequence at the next step and frees its slot;
a long prompt step whose request is cancelled stops at once and is undone (`_decode`).

An image in a prompt (a run of stand-in ids, core.media) is read in a step of its own, after
the batch: the projector encodes it and its embeddings go into the sequence's KV cache. No
reuse, shift or cut ever splits one.
"""

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Emit
from rkollama.backends.llamacpp_prompt_cache import SAVE_MIN_TOKENS, PromptCache, Saved
from rkollama.backends.llamacpp_read_ahead import READ_AHEAD_MAX, Answered, answered, background_request
from rkollama.backends.llamacpp_sampling import LogitRows, make_sampler
from rkollama.backends.llamacpp_slot_start import Request, Seq, SlotStarts
from rkollama.core import media
from rkollama.core.types import Done, DoneReason, Token, TokenLogprob
from rkollama.errors import BackendFailed

if TYPE_CHECKING:
    from rkollama.backends.llamacpp_vision import Vision

log = logging.getLogger("rkollama.llamacpp")

GATHER_S = 0.02
"""Longest a step from idle waits for requests that arrived with its own (SlotLoop._gather):
measured, four simultaneous clients' requests are all submitted within ~10 ms."""
IDLE_KEEP_S = 1.0
"""How long the loop must have had nothing to run before it reads chats' next turns ahead and
copies ended slots into the prompt cache, in seconds: a client's next request usually comes
sooner (an agent's next call, Open WebUI's title request, a benchmark's next turn) and must not
wait for work it may not need (measured: copying at once put 16 ms on a next turn that throws
nothing away); a person reading an answer takes longer."""
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
    read_ahead: bool = True
    """Read a chat's guessed next turn while idle (llamacpp_read_ahead)."""


class SlotLoop(SlotStarts):
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
        self.cuttable = not recurrent  # Mamba, RWKV; hybrids such as LFM2 or Granite 4-H: no
        self.copy_min = copy_min if self.cuttable else None  # no copies, no undone steps there
        self.prompt_cache = PromptCache(llama_cpp, self.ctx, layout.cache_bytes)
        self.vocab = llm._model.vocab
        self.rows = LogitRows(llama_cpp, llm.n_vocab())
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, slots)
        self.pieces: dict[int, bytes] = {}
        """Each generated token's bytes (at most the vocabulary)."""
        self.cached = [[] for _ in range(slots)]
        self.used = [0.0] * slots
        self.free = list(range(slots))
        self.ended: list[int] = []
        """Slots whose request ended and that `_keep_idle` has not kept yet (nor a request taken)."""
        ahead = READ_AHEAD_MAX if layout.read_ahead and self.cuttable else 0
        self.answered: deque[Answered] = deque(maxlen=ahead)
        """Chat answers whose next turn `_keep_idle` has not read ahead yet, oldest first."""
        self.active = []
        self.waiting: deque[Seq] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.preparing = 0
        """Requests announced (`expect`) and not yet submitted: their prompts are being fitted."""
        self.held = False
        """The daemon is running a request (of any model): no idle work starts (`hold`)."""
        self.prompt_token_s = 0.0
        """What a prompt token has cost lately, in seconds (0: not measured yet)."""
        self.watched: list[Seq] = []
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
            if change > 0:
                self._give_way()
            self.cond.notify_all()

    def hold(self, busy: bool) -> None:
        """The daemon is (True) or is no longer running a request of any model: read-aheads
        give way, and no idle work starts while it is, so that it never slows another model."""
        with self.cond:
            self.held = busy
            if busy:
                self._give_way()
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
            if not request.background:
                self._give_way()
            self.waiting.append(Seq(request, emit))
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
                    self.cond.wait(self._keep_idle())
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
                    self._forget(seq.slot)  # what the failed step left in it is unknown
                    seq.emit(BackendFailed(f"generation failed: {exc}"))

    def _keep_idle(self) -> float | None:
        """(Lock held, nothing to run.) Once the loop has had nothing to run for IDLE_KEEP_S,
        and while the daemon runs nothing either (`hold`), queue the read-ahead of one chat
        answer's next turn (llamacpp_read_ahead) unless a request is on its way, else keep one
        ended slot in the prompt cache, so that a request that later throws it away does not
        wait for the copy before its prefill. Returns how long to wait before asking again, in
        seconds (None: until woken)."""
        ahead = bool(self.answered) and not self.preparing
        if self.held or (not self.ended and not ahead):
            return None
        due = max(self.used) + IDLE_KEEP_S - time.monotonic()
        if due > 0:
            return due
        if ahead:
            request = background_request(self.answered.popleft(), self.cached, self.n_ctx)
            if request is not None:
                log.debug("reading ahead %d tokens of a chat's next turn", len(request.tokens))
                self.waiting.append(Seq(request, _nobody))
            return 0.0
        try:
            self._keep(self.ended.pop(), 0)
        except Exception:  # an allocation refused, say: the cache goes without, never the loop
            log.exception("prompt cache: a slot could not be kept")
        return 0.0

    def _give_way(self) -> None:
        """(Lock held.) A request is coming: read-aheads end at the next step, or within a graph
        node of the running one (`_decode`)."""
        for seq in [*self.active, *self.waiting]:
            if seq.request.background:
                seq.request.cancel.set()

    def _forget(self, slot: int) -> None:
        """Empty `slot`: its cache and its record."""
        self.lib.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self.cached[slot] = []
        if slot in self.ended:
            self.ended.remove(slot)

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
                    self._forget(seq.slot)
                    self.free.append(seq.slot)
                seq.emit(BackendFailed(f"generation failed: {exc}"))

    def _place(self, seq: Seq) -> None:
        """Start `seq` in the free slot `_choose` picks, from what that slot can start with."""
        tokens = seq.request.tokens
        slot, reuse, source = self._choose(tokens)
        self.free.remove(slot)
        seq.slot = slot
        if slot in self.ended:
            self.ended.remove(slot)
        if isinstance(source, Saved) and len(source.tokens) - reuse < SAVE_MIN_TOKENS:
            self.prompt_cache.take(source)  # it lives in the slot again (a start of it: a copy)
        self._keep(slot, reuse if source == slot else 0)
        reuse = self._start(slot, reuse, source, len(tokens))
        seq.window, seq.fed = list(tokens), reuse
        seq.offset = sum(seq.request.pictures[key].positions - seq.request.pictures[key].count
                         for _, key in media.image_starts(tokens[:reuse]))
        if not seq.request.background:
            seq.sampler = make_sampler(self.lib, self.vocab, self.rows, seq.request.gen.options,
                                       self.n_ctx, seq.request.grammar)
        seq.started = time.perf_counter()
        self.active.append(seq)

    def _end_or_shift(self) -> None:
        """Cancelled sequences end; a full window (its last token not read yet) shifts or ends
        with LENGTH, so prompt + answer never pass num_ctx."""
        for seq in list(self.active):
            if seq.request.cancel.is_set():
                self._finish(seq, DoneReason.CANCELLED)
            elif len(seq.window) >= self.n_ctx and seq.fed == len(seq.window) - 1 \
                    and not self._shift(seq):
                self._finish(seq, DoneReason.LENGTH)

    def _plan(self) -> tuple[list[tuple[Seq, int]], list[Seq]]:
        """(each sequence in this step and how many tokens it adds, those reading their prompt):
        every generating sequence's next token first, then the prompts in turn, a chunk of
        text at a time, up to n_batch (less beside answering sequences: `_prompt_room`)."""
        plan: list[tuple[Seq, int]] = []
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
                if seq.row >= 0 and seq.request.background:  # read ahead: nothing to answer
                    self._finish(seq, DoneReason.STOP)
                elif seq.row >= 0:
                    self._sample(seq)
                elif seq in reading:  # a prompt chunk read: the runner's stall watchdog hears work
                    seq.emit(Token(""))
        seeing = next((seq for seq in self.active if seq not in reading and not seq.produced
                       and seq.fed < len(seq.window) and media.is_image(seq.window[seq.fed])), None)
        if seeing is not None:  # one image a step, so the others go on between images
            self._see(seeing)

    def _decode(self, plan: list[tuple[Seq, int]], reading: list[Seq]) -> bool:
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
        background = any(seq.request.background for seq in reading)  # to stop as soon as work comes
        watched = self.cuttable and (read >= ABORT_MIN_TOKENS or background)
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
            cancelled = [seq for seq in reading if seq.request.cancel.is_set()]
            if cancelled and all(seq.request.background for seq in cancelled):
                log.debug("a read-ahead gave way to a request within its step")  # routine, not news
            else:
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

    def _text_run(self, seq: Seq, limit: int) -> int:
        """Unread tokens of `seq` before its next image, at most `limit`."""
        window, run = seq.window, 0
        while run < limit and seq.fed + run < len(window) and not media.is_image(window[seq.fed + run]):
            run += 1
        return run

    def _see(self, seq: Seq) -> None:
        """Read the image that starts at `seq`'s next unread token (never its last: the
        engine's tokenizer puts text after a trailing image)."""
        picture = seq.request.pictures[media.image_key(seq.window[seq.fed])]
        assert self.vision is not None, "a prompt with images reached an engine without a projector"
        assert seq.fed + picture.count < len(seq.window), "a prompt ends with an image"
        self.vision.decode(self.ctx, picture, seq.fed + seq.offset, seq.slot, self.n_batch)
        seq.fed += picture.count
        seq.offset += picture.positions - picture.count
        seq.emit(Token(""))  # the runner's stall watchdog hears work

    def _add(self, n: int, seq: Seq, count: int) -> int:
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

    def _sample(self, seq: Seq) -> None:
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

    def _shift(self, seq: Seq) -> bool:
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

    def _finish(self, seq: Seq, reason: DoneReason) -> None:
        tail = seq.decoder.decode(b"", final=True)
        if tail and reason is not DoneReason.CANCELLED:
            seq.emit(Token(tail))
        end = time.perf_counter()
        first = seq.first or end
        done = answered(seq.request, reason, seq.window, seq.fed)
        if done is not None:
            self.answered.append(done)
        self._release(seq)
        seq.emit(Done(reason, len(seq.request.tokens), (first - seq.started) * 1000.0, seq.produced,
                         (end - first) * 1000.0, tuple(t for t in seq.window if not media.is_image(t))))

    def _release(self, seq: Seq) -> None:
        self.cached[seq.slot] = seq.window[:seq.fed]
        if not seq.request.background:  # the user's activity: what IDLE_KEEP_S counts from
            self.used[seq.slot] = time.monotonic()
        self.free.append(seq.slot)
        self.ended.append(seq.slot)
        self.active.remove(seq)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None


def _nobody(event: object) -> None:
    """Where a read-ahead's events go: nobody waits for them."""
