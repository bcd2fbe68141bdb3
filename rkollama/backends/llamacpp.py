"""LlamaCppBackend: the CPU engine, llama.cpp through llama-cpp-python (imported lazily)."""

import functools
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Backend, Emit
from rkollama.core import media
from rkollama.core.fitting import INPUT_TOO_LONG, PromptFitter
from rkollama.core.options import DEFAULT_NUM_BATCH
from rkollama.core.prompt import CHATML, ChatTemplate
from rkollama.core.types import Done, Generation, LoadOptions, Token, TokenLogprob
from rkollama.errors import BadRequest, LoadFailed
from rkollama.meminfo import available_bytes

if TYPE_CHECKING:
    from rkollama.backends.llamacpp_slot_start import Request
    from rkollama.backends.llamacpp_slots import SlotLoop
    from rkollama.backends.llamacpp_vision import Vision
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec

UNBOUNDED_WINDOWS = 4
"""num_predict -1 generates until the model ends its answer, at most this many windows of
num_ctx tokens (rkollama's guard against a model that never stops; Ollama has none)."""

ONE_SLOT_ARCHITECTURES = frozenset({
    "mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "qwen3next", "lfm2", "lfm2moe",
    "nemotron_h", "nemotron_h_moe", "nemotron_h_omni"})
"""Architectures (GGUF `general.architecture`) Ollama runs one request at a time whatever
OLLAMA_NUM_PARALLEL says (its server/sched.go, ollama#4165); a drop-in does the same."""

log = logging.getLogger("rkollama.llamacpp")


def slot_count(requested: int, architecture: str, capabilities: list[str]) -> int:
    """The requests a model answers at once: OLLAMA_NUM_PARALLEL, except one for a model that
    only embeds and for ONE_SLOT_ARCHITECTURES, as Ollama's scheduler chooses."""
    if requested > 1 and "completion" not in capabilities:
        return 1
    if requested > 1 and architecture in ONE_SLOT_ARCHITECTURES:
        log.warning("%s: this architecture answers one request at a time (as in Ollama); "
                    "OLLAMA_NUM_PARALLEL=%d is not applied", architecture, requested)
        return 1
    return max(1, requested)


class LlamaCppBackend(Backend):
    kind = "llamacpp"
    title = "the CPU engine (llama.cpp)"
    device = "cpu"
    constrains_format = True

    def __init__(self, spec: "ModelSpec", llm: Any, template: ChatTemplate, max_token_bytes: int,
                 n_ctx: int, vision: "Vision | None" = None):
        self.spec, self.llm, self.template = spec, llm, template
        self.n_ctx = n_ctx
        """The window in tokens, as requested (llama.cpp pads its own to a multiple of 256)."""
        self.max_token_bytes = max(1, max_token_bytes)
        """Longest token of the vocabulary in UTF-8 bytes: text of B bytes has at least
        B / max_token_bytes tokens, which refuses or drops what cannot fit without tokenizing."""
        self.context_length = n_ctx
        self.memory_bytes = spec.size
        self.vision = vision
        """The model's projector, when it reads images."""
        self.fitter = PromptFitter(n_ctx, template, self._tokens, self.max_token_bytes,
                                   vocab_size=llm.n_vocab(),
                                   tokenize_images=self._tokens_with_images if vision else None)
        self._embedder: Any = None  # a second Llama with embedding=True, made on first use
        self._closed = False
        self.loop: SlotLoop | None = None
        """Where generations run, on a context of its own (set by load())."""

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
        threads, told = ((opts.num_thread, f"{opts.num_thread} (the request's num_thread)") if opts.num_thread
                         else settings.thread_choice())
        log.info("%s: CPU threads %s", spec.name.display(), told)
        try:
            # The vocabulary and metadata only: the context is sized from them before any
            # KV cache is allocated.
            probe = Llama(model_path=str(spec.model_path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}") from exc
        try:
            shape = _KVShape.from_metadata(probe.metadata)
            max_token_bytes = _max_token_bytes(probe)
            architecture = str(probe.metadata.get("general.architecture", ""))
        finally:
            probe.close()
        n_ctx = opts.num_ctx or settings.context_length
        train_ctx = shape.train_ctx or spec.modelfile.details.context_length
        if train_ctx:
            n_ctx = min(n_ctx, train_ctx)
        slots = slot_count(settings.num_parallel, architecture, spec.capabilities)
        memory = _check_memory(spec, shape, n_ctx * slots)  # a KV cache of num_ctx per slot, as Ollama's
        n_batch = min(opts.num_batch or DEFAULT_NUM_BATCH, n_ctx)
        try:
            # Generation has a context of its own (SlotLoop): this one, for the vocabulary and
            # the metadata, only needs to hold a batch.
            llm = Llama(model_path=str(spec.model_path), n_ctx=max(n_batch, 256),
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
        vision = _load_vision(spec, llm, threads)
        backend = cls(spec, llm, template, max_token_bytes, n_ctx, vision)
        backend.memory_bytes = memory  # what /api/ps reports: Ollama's size counts the KV cache too
        from rkollama.backends.llamacpp_slot_start import copy_threshold
        from rkollama.backends.llamacpp_slots import Layout, SlotLoop

        layout = Layout(slots, n_ctx, n_batch, _flash_attention(settings.flash_attention),
                        copy_threshold(shape.kv_bytes(n_ctx), spec.size), settings.prompt_cache_mb * 2**20)
        backend.loop = SlotLoop(llm, layout, backend._logprob, vision)
        if slots > 1:
            backend.slots, backend.continuous = slots, True
            log.info("%s: %d parallel slots of %d tokens each (OLLAMA_NUM_PARALLEL)",
                     spec.name.display(), slots, n_ctx)
        return backend

    def _tokens(self, text: str, bos: bool = True) -> list[int]:
        add_bos = bos and self.llm._model.add_bos_token()
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS
        return list(self.llm.tokenize(text.encode(), add_bos=add_bos, special=True))

    def _tokens_with_images(self, text: str, bos: bool, images: list[str]) -> list[int]:
        assert self.vision is not None
        return self.vision.tokenize(text, bos, images, self._tokens)

    def _min_tokens(self, text: str) -> int:
        """A lower bound of the tokens of `text`, from its length alone."""
        return self.fitter.min_tokens(text)

    def _prompt_tokens(self, gen: Generation) -> list[int]:
        """The prompt's tokens, fitted to `num_ctx` as Ollama fits them (core.fitting)."""
        return self.fitter.prompt_tokens(gen)

    def render(self, gen: Generation) -> str:
        """The whole prompt text (no truncation), for `_debug_render_only`."""
        return self.fitter.whole_text(gen)

    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        """Tokens of the answer, then Done, from the slot loop (llamacpp_slots.py). When the
        window fills before `num_predict`, the context shifts as Ollama's does (the first
        num_keep tokens stay, half of the rest goes) unless `shift` is false or a grammar is
        active; then it ends with LENGTH."""
        assert self.loop is not None, "generate() on an engine that load() did not make"
        return self.loop.generate(self._request(gen, cancel))

    def stream(self, gen: Generation, cancel: threading.Event, emit: Emit) -> None:
        """As generate(), but the slot loop's thread hands each event to `emit`; returns once the
        request is queued (or refused, through `emit`)."""
        assert self.loop is not None, "stream() on an engine that load() did not make"
        try:
            request = self._request(gen, cancel)
        except Exception as exc:  # a prompt that cannot fit, a bad schema: the request's own error
            self.loop.expect(-1)
            emit(exc)
            return
        self.loop.submit(request, emit, expected=True)

    def expect(self, change: int) -> None:
        if self.loop is not None:
            self.loop.expect(change)

    def daemon_busy(self, busy: bool) -> None:
        if self.loop is not None:
            self.loop.hold(busy)

    def _request(self, gen: Generation, cancel: threading.Event) -> "Request":
        """What the slot loop runs for `gen`: its fitted tokens, limits, grammar and images."""
        from rkollama.backends.llamacpp_slot_start import Request

        opts = gen.options
        tokens = self.fitter.prompt_tokens(gen)
        grammar = _grammar(gen.format or _forced_call_schema(gen))
        pictures = {}
        if self.vision is not None and any(media.is_image(t) for t in tokens):
            pictures = self.vision.pictures(media.images_of(gen), tokens)
        return Request(gen, cancel, tokens, _token_limit(opts.num_predict, self.n_ctx, len(tokens)),
                       gen.shift and grammar is None and opts.num_predict != -2,
                       self.fitter.num_keep(gen, len(tokens)), grammar, pictures,
                       functools.partial(self._next_turn, gen)
                       if not pictures and self.fitter.fits_whole(gen) else None)

    def _next_turn(self, gen: Generation, answer: list[int]) -> list[int]:
        """What a chat client's next turn after the answer `answer` (tokens) most likely starts
        with (llamacpp_read_ahead)."""
        return self.fitter.next_turn_start(gen, self.llm.detokenize(answer).decode("utf-8", "replace"))

    def _logprob(self, token: int, piece: bytes, top: int, row: Any) -> TokenLogprob:
        """The log-probability of `token` under the logits it was sampled from (`row`, raw, as
        Ollama reports them, before temperature), and the `top` most likely tokens."""
        import numpy as np

        vocab = self.llm.n_vocab()
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
            if self.loop is not None:
                self.loop.close()
            if self.vision is not None:
                self.vision.close()
            self.llm.close()
            if self._embedder is not None:
                self._embedder.close()
            _return_freed_memory()


def _load_vision(spec: "ModelSpec", llm: Any, threads: int) -> "Vision | None":
    """The model's projector, when it has one; LoadFailed (and `llm` closed) when it cannot load."""
    if spec.projector_path is None:
        return None
    from rkollama.backends.llamacpp_vision import Vision

    try:
        vision = Vision(llm._model.model, spec.projector_path, threads)
    except LoadFailed:
        llm.close()
        raise
    log.info("%s: vision projector loaded", spec.name.display())
    return vision


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


def _check_memory(spec: "ModelSpec", shape: _KVShape, n_ctx: int) -> int:
    """The bytes the weights and a KV cache of `n_ctx` tokens take; BadRequest when that
    exceeds the memory available now."""
    available = available_bytes()
    needed = shape.kv_bytes(n_ctx) + spec.size
    if available and needed > available:
        raise BadRequest(f"num_ctx {n_ctx} needs about {needed / 2**30:.1f} GiB of memory for "
                         f"{spec.name.display()}; {available / 2**30:.1f} GiB are available")
    return needed


def _max_token_bytes(llm: Any) -> int:
    """The longest token of the vocabulary, in bytes."""
    model = llm._model
    longest = 1
    for token in range(model.n_vocab()):
        longest = max(longest, len(model.token_get_text(token).encode("utf-8", "replace")))
    return longest


def _flash_attention(setting: str) -> int:
    """llama.cpp's flash attention type for OLLAMA_FLASH_ATTENTION's value (auto, true or false:
    config.py's auto_bool)."""
    import llama_cpp

    if setting == "auto":
        return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO)
    on = setting == "true"
    return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if on else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)


def _return_freed_memory() -> None:
    """Give the freed model and KV buffers back to the OS (glibc keeps them otherwise: an idle
    daemon measured 92 MB resident after unloading SmolLM2, 65 MB with this)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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
