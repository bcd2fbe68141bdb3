"""LlamaCppBackend: the CPU engine, llama.cpp through llama-cpp-python (imported lazily)."""

import codecs
import json
import logging
import os
import random
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Backend
from rkollama.core.fitting import INPUT_TOO_LONG, PromptFitter
from rkollama.core.options import DEFAULT_NUM_BATCH
from rkollama.core.prompt import CHATML, ChatTemplate
from rkollama.core.types import Done, DoneReason, Generation, LoadOptions, Token, TokenLogprob
from rkollama.errors import BackendFailed, BadRequest, LoadFailed

if TYPE_CHECKING:
    from rkollama.backends.llamacpp_slots import SlotLoop
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec

UNBOUNDED_WINDOWS = 4
"""num_predict -1 generates until the model ends its answer, at most this many windows of
num_ctx tokens (rkollama's guard against a model that never stops; Ollama has none)."""

log = logging.getLogger("rkollama.llamacpp")


class LlamaCppBackend(Backend):
    kind = "llamacpp"
    title = "the CPU engine (llama.cpp)"
    device = "cpu"
    constrains_format = True

    def __init__(self, spec: "ModelSpec", llm: Any, template: ChatTemplate, max_token_bytes: int,
                 n_ctx: int):
        self.spec, self.llm, self.template = spec, llm, template
        self.n_ctx = n_ctx
        """The window in tokens, as requested (llama.cpp pads its own to a multiple of 256)."""
        self.max_token_bytes = max(1, max_token_bytes)
        """Longest token of the vocabulary in UTF-8 bytes: text of B bytes has at least
        B / max_token_bytes tokens, which refuses or drops what cannot fit without tokenizing."""
        self.context_length = n_ctx
        self.memory_bytes = spec.size
        self.fitter = PromptFitter(n_ctx, template, self._tokens, self.max_token_bytes,
                                   vocab_size=llm.n_vocab())
        self._embedder: Any = None  # a second Llama with embedding=True, made on first use
        self._closed = False
        self._parallel: SlotLoop | None = None
        """With OLLAMA_NUM_PARALLEL above 1: the loop that batches the generations."""

    @classmethod
    def load(cls, spec: "ModelSpec", opts: LoadOptions, settings: "Settings") -> "LlamaCppBackend":
        """Load the GGUF at `spec.model_path`. num_ctx is capped at the model's training context
        and refused (BadRequest) when its KV cache cannot fit in the available memory."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LoadFailed(f"the CPU engine (llama-cpp-python) is not installed: {exc}") from None
        if not os.path.isfile(spec.model_path):
            raise LoadFailed(f"model file missing: {spec.model_path}; pull {spec.name.display()} again")
        threads = opts.num_thread or settings.threads
        try:
            # The vocabulary and metadata only: the context is sized from them before any
            # KV cache is allocated.
            probe = Llama(model_path=str(spec.model_path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}") from exc
        try:
            shape = _KVShape.from_metadata(probe.metadata)
            max_token_bytes = _max_token_bytes(probe)
        finally:
            probe.close()
        n_ctx = opts.num_ctx or settings.context_length
        train_ctx = shape.train_ctx or spec.modelfile.details.context_length
        if train_ctx:
            n_ctx = min(n_ctx, train_ctx)
        slots = settings.num_parallel
        _check_memory(spec, shape, n_ctx * slots)  # a KV cache of num_ctx per slot, as Ollama's
        n_batch = min(opts.num_batch or DEFAULT_NUM_BATCH, n_ctx)
        try:
            # With slots, generation has a context of its own (SlotLoop): this one only needs
            # to hold a batch (sequential generation never runs on it).
            llm = Llama(model_path=str(spec.model_path), n_ctx=n_ctx if slots == 1 else max(n_batch, 256),
                        n_batch=n_batch, n_ubatch=n_batch, n_threads=threads, n_threads_batch=threads,
                        use_mmap=True if opts.use_mmap is None else opts.use_mmap, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}") from exc
        source = spec.modelfile.template
        if source == "builtin":
            source = llm.metadata.get("tokenizer.chat_template") or CHATML
        model = llm._model
        try:
            template = ChatTemplate(source, bos_token=model.token_get_text(model.token_bos()),
                                    eos_token=model.token_get_text(model.token_eos()))
        except Exception as exc:  # jinja2 syntax errors in a Modelfile template
            llm.close()
            raise LoadFailed(f"invalid chat template for {spec.name.display()}: {exc}") from None
        backend = cls(spec, llm, template, max_token_bytes, n_ctx)
        if slots > 1:
            from rkollama.backends.llamacpp_slots import SlotLoop

            backend._parallel = SlotLoop(llm, slots, n_ctx, n_batch, threads, backend._logprob)
            backend.slots, backend.continuous = slots, True
            log.info("%s: %d parallel slots of %d tokens each (OLLAMA_NUM_PARALLEL)",
                     spec.name.display(), slots, n_ctx)
        return backend

    def _tokens(self, text: str, bos: bool = True) -> list[int]:
        add_bos = bos and self.llm._model.add_bos_token()
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS
        return list(self.llm.tokenize(text.encode(), add_bos=add_bos, special=True))

    def _min_tokens(self, text: str) -> int:
        """A lower bound of the tokens of `text`, from its length alone."""
        return self.fitter.min_tokens(text)

    def _prompt_tokens(self, gen: Generation) -> list[int]:
        """The prompt's tokens, fitted to `num_ctx` as Ollama fits them (core.fitting)."""
        return self.fitter.prompt_tokens(gen)

    def render(self, gen: Generation) -> str:
        """The whole prompt text (no truncation), for `_debug_render_only`."""
        return self.fitter.whole_text(gen)

    def _prefill(self, tokens: list[int], cancel: threading.Event) -> Generator[Token, None, bool]:
        """Evaluate the prompt up to its last n_batch chunk, one chunk at a time, checking
        `cancel` between chunks and reusing the prefix already in the KV cache; False when
        cancelled. llama.cpp's own generate() then evaluates the last chunk (which yields the
        logits to sample from), so a short prompt costs no extra forward pass. Each chunk done
        yields an empty Token: the runner's stall watchdog hears the engine is working."""
        llm = self.llm
        cached = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens[: len(tokens) - 1], strict=False):
            if a != b:
                break
            cached += 1
        last_chunk = cached + (len(tokens) - 1 - cached) // llm.n_batch * llm.n_batch
        if last_chunk <= cached:
            return not cancel.is_set()
        llm.n_tokens = cached
        for start in range(cached, last_chunk, llm.n_batch):
            if cancel.is_set():
                return False
            llm.eval(tokens[start:start + llm.n_batch])
            yield Token("")
        return not cancel.is_set()

    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        """Tokens of the answer, then Done. When the window fills before `num_predict`, the
        context shifts as Ollama's does (the first num_keep tokens stay, half of the rest goes)
        unless `shift` is false or a grammar is active; then it ends with LENGTH."""
        opts = gen.options
        tokens = self.fitter.prompt_tokens(gen)
        grammar = _grammar(gen.format or _forced_call_schema(gen))
        if self._parallel is not None:
            from rkollama.backends.llamacpp_slots import Request

            yield from self._parallel.generate(Request(
                gen, cancel, tokens, _token_limit(opts.num_predict, self.n_ctx, len(tokens)),
                gen.shift and grammar is None and opts.num_predict != -2,
                self.fitter.num_keep(gen, len(tokens)), grammar))
            return
        # llama.cpp seeds are 32-bit: a larger request seed keeps its low bits.
        self.llm.set_seed(opts.seed & 0xFFFFFFFF if opts.seed >= 0 else random.randrange(2**31))
        run = _Run(window=list(tokens), limit=_token_limit(opts.num_predict, self.n_ctx, len(tokens)),
                   may_shift=gen.shift and grammar is None and opts.num_predict != -2,
                   keep=self.fitter.num_keep(gen, len(tokens)))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        start = time.perf_counter()
        try:
            while run.reason is None:
                room = yield from self._next_window(run, cancel)
                if room > 0:
                    yield from self._decode(run, room, gen, grammar, decoder, cancel)
        except (RuntimeError, ValueError) as exc:
            raise BackendFailed(f"generation failed: {exc}") from exc
        tail = decoder.decode(b"", final=True)
        if tail and run.reason is not DoneReason.CANCELLED:
            yield Token(tail)
        end = time.perf_counter()
        first = run.first or end
        yield Done(run.reason, len(tokens), (first - start) * 1000.0, run.produced, (end - first) * 1000.0,
                   tuple(run.window))

    def _next_window(self, run: "_Run", cancel: threading.Event) -> Generator[Token, None, int]:
        """Make room in the window (shifting it when allowed) and prefill it; how many tokens
        may be decoded before the next look, or 0 with `run.reason` set when the answer ends."""
        if run.produced >= run.limit:
            run.reason = DoneReason.LENGTH
            return 0
        if len(run.window) >= self.n_ctx:
            if not run.may_shift:
                run.reason = DoneReason.LENGTH
                return 0
            discard = max(1, (len(run.window) - run.keep) // 2)  # always room for one more
            run.window = run.window[:run.keep] + run.window[run.keep + discard:]
        if not (yield from self._prefill(run.window, cancel)):
            run.reason = DoneReason.CANCELLED
            return 0
        return min(self.n_ctx - len(run.window), run.limit - run.produced)

    def _decode(self, run: "_Run", room: int, gen: Generation, grammar: Any,
                decoder: codecs.IncrementalDecoder, cancel: threading.Event) -> Iterator[Token]:
        """Up to `room` tokens sampled after the prefilled window; sets `run.reason` when the
        answer ends (end of generation, cancelled) rather than the window filling."""
        import llama_cpp

        opts, vocab = gen.options, self.llm._model.vocab
        stream = self.llm.generate(
            run.window, top_k=opts.top_k, top_p=opts.top_p, min_p=opts.min_p,
            typical_p=opts.typical_p, temp=opts.temperature,
            repeat_penalty=opts.repeat_penalty, frequency_penalty=opts.frequency_penalty,
            presence_penalty=opts.presence_penalty, grammar=grammar)
        try:
            for token in stream:
                if run.first is None:
                    run.first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    run.reason = DoneReason.STOP
                    return
                run.produced += 1
                run.window.append(token)
                piece = self.llm.detokenize([token])
                text = decoder.decode(piece)
                scored = (self._logprob(token, piece, gen.top_logprobs),) if gen.logprobs else ()
                if text or scored:
                    yield Token(text, logprobs=scored)
                if cancel.is_set():
                    run.reason = DoneReason.CANCELLED
                    return
                room -= 1
                if room <= 0:
                    return
        finally:
            stream.close()

    def _logprob(self, token: int, piece: bytes, top: int, row: Any = None) -> TokenLogprob:
        """The log-probability of `token` under the logits it was sampled from (raw logits, as
        Ollama reports them, before temperature), and the `top` most likely tokens. `row`: those
        logits (a parallel slot's); else the last of the engine's own context."""
        import llama_cpp
        import numpy as np

        vocab = self.llm.n_vocab()
        if row is None:
            row = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(row, shape=(vocab,)).astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))

        def entry(tid: int, raw: bytes | None = None) -> TokenLogprob:
            data = self.llm.detokenize([tid]) if raw is None else raw
            return TokenLogprob(data.decode("utf-8", "replace"), float(logprobs[tid]), tuple(data))

        best = np.argpartition(-logprobs, top)[:top] if 0 < top < vocab else np.array([], dtype=int)
        best = best[np.argsort(-logprobs[best])]
        chosen = entry(token, piece)
        return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes,
                            tuple(entry(int(t)) for t in best))

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings (not normalised) of each text, and the tokens they used.

        A second llama.cpp context with embeddings enabled shares the mmapped weights, so a
        model serves chat and embeddings without a reload.
        """
        if self._embedder is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            # A pooled batch of 257-511 tokens trips a GGML_ASSERT in this llama.cpp (measured:
            # 300, 320 and 384 abort the runner; 255, 256 and 512 work): the embedding context
            # is sized in whole 256-token blocks, and texts are cut to num_ctx tokens here.
            size = -(-self.n_ctx // 256) * 256
            self._embedder = Llama(model_path=str(self.spec.model_path), n_ctx=size, n_batch=size,
                                   n_ubatch=size, n_threads=self.llm.n_threads, embedding=True,
                                   pooling_type=LLAMA_POOLING_TYPE_MEAN, verbose=False)
        vectors, used = [], 0
        limit = self.n_ctx
        for text in texts:
            if self._min_tokens(text) > limit:
                if not truncate:
                    raise BadRequest(INPUT_TOO_LONG)
                # Nothing past this many bytes can be within the first `limit` tokens.
                text = text.encode("utf-8", "replace")[: (limit + 1) * self.max_token_bytes].decode(
                    "utf-8", "ignore")
            tokens = self._embedder.tokenize(text.encode(), add_bos=False, special=False)
            bos = 1 if self._embedder._model.add_bos_token() else 0
            if not tokens and not bos:  # llama.cpp cannot decode an empty batch
                raise BadRequest("cannot embed an empty input: it has no tokens")
            if len(tokens) + bos > limit:
                if not truncate:
                    raise BadRequest(INPUT_TOO_LONG)
                tokens = tokens[: limit - bos]
                text = self._embedder.detokenize(tokens).decode("utf-8", "ignore")
            used += min(len(tokens) + bos, limit)
            vectors.append(self._embedder.embed(text, normalize=False, truncate=True))
        return vectors, used

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._parallel is not None:
                self._parallel.close()
            self.llm.close()
            if self._embedder is not None:
                self._embedder.close()
            _return_freed_memory()


class _KVShape:
    """What sizes a llama.cpp KV cache, from GGUF metadata."""

    def __init__(self, layers: int, kv_width: int, train_ctx: int):
        self.layers, self.kv_width, self.train_ctx = layers, kv_width, train_ctx

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "_KVShape":
        arch = meta.get("general.architecture", "")

        def number(key: str) -> int:
            try:
                return int(meta.get(f"{arch}.{key}", 0))
            except ValueError:
                return 0

        heads = number("attention.head_count") or 1
        kv_heads = number("attention.head_count_kv") or heads
        head_dim = number("attention.key_length") or number("embedding_length") // heads
        return cls(number("block_count"), kv_heads * head_dim, number("context_length"))

    def kv_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 K and V cache for `n_ctx` tokens."""
        return 2 * 2 * self.layers * self.kv_width * n_ctx


def _check_memory(spec: "ModelSpec", shape: _KVShape, n_ctx: int) -> None:
    """Refuse a context whose KV cache (plus the weights) exceeds the memory available now."""
    available = _available_memory()
    needed = shape.kv_bytes(n_ctx) + spec.size
    if available and needed > available:
        raise BadRequest(f"num_ctx {n_ctx} needs about {needed / 2**30:.1f} GiB of memory for "
                         f"{spec.name.display()}; {available / 2**30:.1f} GiB are available")


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes; 0 when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _max_token_bytes(llm: Any) -> int:
    """The longest token of the vocabulary, in bytes."""
    model = llm._model
    longest = 1
    for token in range(model.n_vocab()):
        longest = max(longest, len(model.token_get_text(token).encode("utf-8", "replace")))
    return longest


def _return_freed_memory() -> None:
    """Give the freed model and KV buffers back to the OS (glibc keeps them otherwise: an idle
    daemon measured 92 MB resident after unloading SmolLM2, 65 MB with this)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass
class _Run:
    """One generation's progress across context windows."""

    window: list[int]
    """The tokens in the context: prompt, then the answer so far (after any shift)."""
    limit: int
    """Tokens the answer may have."""
    may_shift: bool
    keep: int
    """Tokens a shift keeps at the start (num_keep)."""
    produced: int = 0
    first: float | None = None
    """perf_counter() when the first answer token came."""
    reason: DoneReason | None = None
    """Why the answer ended; None while it goes on."""


def _token_limit(num_predict: int, n_ctx: int, prompt_tokens: int) -> int:
    """Answer tokens allowed: num_predict; -2 fills the context; -1 is bounded by
    UNBOUNDED_WINDOWS windows (no request decides an endless generation)."""
    if num_predict >= 0:
        return num_predict
    if num_predict == -2:
        return n_ctx - prompt_tokens
    return UNBOUNDED_WINDOWS * n_ctx


def _forced_call_schema(gen: Generation) -> dict[str, Any] | None:
    """With tool_choice required (or one named tool), a JSON schema that admits only a call:
    {"name": <a tool>, "arguments": <its parameters>}. The output parser reads it as a call."""
    if not gen.tool_choice or not gen.tools:
        return None
    options = []
    for tool in gen.tools:
        function = tool["function"]
        if gen.tool_choice not in ("required", function["name"]):
            continue
        parameters = function.get("parameters") or {"type": "object"}
        options.append({"type": "object", "properties": {"name": {"const": function["name"]},
                                                         "arguments": parameters},
                        "required": ["name", "arguments"]})
    return options[0] if len(options) == 1 else {"anyOf": options}


def _grammar(fmt: object) -> Any:
    """A llama.cpp grammar for Ollama's `format` ("json" or a JSON schema), else None."""
    if not fmt:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if fmt == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
    except Exception as exc:  # the schema converter's errors are of any type: all are the schema's fault
        raise BadRequest(f"invalid format: {type(exc).__name__}: {exc}") from None
