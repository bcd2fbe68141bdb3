"""LlamaCppBackend: the CPU engine, llama.cpp through llama-cpp-python (imported lazily)."""

import codecs
import json
import os
import random
import time

from rkollama.backends.base import Backend
from rkollama.core.prompt import CHATML, ChatTemplate, TemplateRenderError
from rkollama.core.types import Done, DoneReason, Token
from rkollama.errors import BackendFailed, BadRequest, LoadFailed
from rkollama.models.options import DEFAULT_NUM_BATCH


class LlamaCppBackend(Backend):
    kind = "llamacpp"
    device = "cpu"
    constrains_format = True

    def __init__(self, spec, llm, template: ChatTemplate, max_token_bytes: int = 64):
        self.spec, self.llm, self.template = spec, llm, template
        self.max_token_bytes = max(1, max_token_bytes)
        """Longest token of the vocabulary in UTF-8 bytes: text of B bytes has at least
        B / max_token_bytes tokens, which refuses or drops what cannot fit without tokenizing."""
        self.context_length = llm.n_ctx()
        self.memory_bytes = spec.size
        self._embedder = None
        self._closed = False

    @classmethod
    def load(cls, spec, opts, settings) -> "LlamaCppBackend":
        """Load the GGUF at `spec.model_path`. num_ctx is capped at the model's training context
        and refused (BadRequest) when its KV cache cannot fit in the available memory."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LoadFailed(f"the CPU engine (llama-cpp-python) is not installed: {exc}")
        if not os.path.isfile(spec.model_path):
            raise LoadFailed(f"model file missing: {spec.model_path}; pull {spec.name.display()} again")
        threads = opts.num_thread or settings.threads
        try:
            # The vocabulary and metadata only: the context is sized from them before any
            # KV cache is allocated.
            probe = Llama(model_path=str(spec.model_path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}")
        try:
            shape = _KVShape.from_metadata(probe.metadata)
            max_token_bytes = _max_token_bytes(probe)
        finally:
            probe.close()
        n_ctx = opts.num_ctx or settings.context_length
        train_ctx = shape.train_ctx or spec.modelfile.details.get("context_length") or 0
        if train_ctx:
            n_ctx = min(n_ctx, train_ctx)
        _check_memory(spec, shape, n_ctx)
        n_batch = min(opts.num_batch or DEFAULT_NUM_BATCH, n_ctx)
        try:
            llm = Llama(model_path=str(spec.model_path), n_ctx=n_ctx, n_batch=n_batch,
                        n_ubatch=n_batch, n_threads=threads, n_threads_batch=threads,
                        use_mmap=True if opts.use_mmap is None else opts.use_mmap, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}")
        source = spec.modelfile.template
        if source == "builtin":
            source = llm.metadata.get("tokenizer.chat_template") or CHATML
        model = llm._model
        try:
            template = ChatTemplate(source, bos_token=model.token_get_text(model.token_bos()),
                                    eos_token=model.token_get_text(model.token_eos()))
        except Exception as exc:  # jinja2 syntax errors in a Modelfile template
            llm.close()
            raise LoadFailed(f"invalid chat template for {spec.name.display()}: {exc}")
        return cls(spec, llm, template, max_token_bytes)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=self.llm._model.add_bos_token(), special=True)

    def _tokens(self, text: str) -> list[int]:
        add_bos = self.llm._model.add_bos_token()
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    def _min_tokens(self, text: str) -> int:
        """A lower bound of the tokens of `text`, from its length alone."""
        return -(-len(text.encode("utf-8", "surrogatepass")) // self.max_token_bytes)

    def _prompt_tokens(self, gen) -> list[int]:
        """The prompt's tokens. Chat history that does not fit `num_ctx` loses its oldest
        messages first, keeping system messages and the last message (as Ollama does).

        Linear in the history: messages that cannot fit by their length alone are dropped
        without rendering, then a binary search finds how many of the oldest to drop (each probe
        renders and tokenizes once)."""
        n_ctx = self.llm.n_ctx()
        if gen.prompt is not None:
            self._refuse_if_too_long(self._min_tokens(gen.prompt))
            return self._tokens(gen.prompt)
        extra = {}
        if gen.tools:
            extra["tools"] = gen.tools
        if gen.parse_thinking:  # Qwen3-style templates switch reasoning with this
            extra["enable_thinking"] = gen.think not in (False, None)
        messages = list(gen.messages)
        kept = [i for i, m in enumerate(messages) if m.role == "system" or i == len(messages) - 1]
        self._refuse_if_too_long(sum(self._min_tokens(messages[i].content) for i in kept))
        droppable = [i for i in range(len(messages) - 1) if messages[i].role != "system"]
        floor = sum(self._min_tokens(m.content) for m in messages)
        skip = 0  # oldest droppable messages that cannot fit by their length alone
        while skip < len(droppable) and floor >= n_ctx:
            floor -= self._min_tokens(messages[droppable[skip]].content)
            skip += 1

        def render(dropped: int) -> list[int]:
            gone = set(droppable[:dropped])
            keep = [m for i, m in enumerate(messages) if i not in gone]
            try:
                text = self.template.render(keep, add_generation_prompt=True, **extra)
            except TemplateRenderError as exc:
                raise BadRequest(f"chat template failed: {exc}")
            return self._tokens(text)

        tokens = render(skip)
        if len(tokens) < n_ctx or skip == len(droppable):
            return tokens  # generate() reports an input that still exceeds the context
        low, high = skip + 1, len(droppable)  # the answer lies in [low, high]
        best = render(high)
        if len(best) >= n_ctx:
            return best
        while low < high:
            middle = (low + high) // 2
            candidate = render(middle)
            if len(candidate) < n_ctx:
                best, high = candidate, middle
            else:
                low = middle + 1
        return best

    def _refuse_if_too_long(self, min_tokens: int) -> None:
        n_ctx = self.llm.n_ctx()
        if min_tokens >= n_ctx:
            raise BadRequest(f"the input length (at least {min_tokens} tokens) exceeds the "
                             f"context length ({n_ctx})")

    def _prefill(self, tokens: list[int], cancel) -> bool:
        """Evaluate the prompt up to its last n_batch chunk, one chunk at a time, checking
        `cancel` between chunks and reusing the prefix already in the KV cache; False when
        cancelled. llama.cpp's own generate() then evaluates the last chunk (which yields the
        logits to sample from), so a short prompt costs no extra forward pass."""
        llm = self.llm
        cached = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens[: len(tokens) - 1]):
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
        return not cancel.is_set()

    def generate(self, gen, cancel):
        import llama_cpp

        opts = gen.options
        tokens = self._prompt_tokens(gen)
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise BadRequest(
                f"the input length ({len(tokens)} tokens) exceeds the context length ({n_ctx})")
        # llama.cpp seeds are 32-bit: a larger request seed keeps its low bits.
        self.llm.set_seed(opts.seed & 0xFFFFFFFF if opts.seed >= 0 else random.randrange(2**31))
        limit = opts.num_predict if opts.num_predict >= 0 else n_ctx
        budget = min(limit, n_ctx - len(tokens))
        grammar = _grammar(gen.format or _forced_call_schema(gen))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self.llm._model.vocab
        start = time.perf_counter()
        first = None
        produced = 0
        reason = DoneReason.STOP
        try:
            if not self._prefill(tokens, cancel):
                now = time.perf_counter()
                yield Done(DoneReason.CANCELLED, len(tokens), (now - start) * 1000.0, 0, 0.0)
                return
        except (RuntimeError, ValueError) as exc:
            raise BackendFailed(f"generation failed: {exc}")
        stream = self.llm.generate(
            tokens, top_k=opts.top_k, top_p=opts.top_p, min_p=opts.min_p, typical_p=opts.typical_p,
            temp=opts.temperature, repeat_penalty=opts.repeat_penalty,
            frequency_penalty=opts.frequency_penalty, presence_penalty=opts.presence_penalty,
            grammar=grammar)
        try:
            if budget <= 0:
                reason = DoneReason.LENGTH
            else:
                for token in stream:
                    if first is None:
                        first = time.perf_counter()
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        break
                    produced += 1
                    text = decoder.decode(self.llm.detokenize([token]))
                    if text:
                        yield Token(text)
                    if cancel.is_set():
                        reason = DoneReason.CANCELLED
                        break
                    if produced >= budget:
                        reason = DoneReason.LENGTH
                        break
        except (RuntimeError, ValueError) as exc:
            raise BackendFailed(f"generation failed: {exc}")
        finally:
            stream.close()
        tail = decoder.decode(b"", final=True)
        if tail and reason is not DoneReason.CANCELLED:
            yield Token(tail)
        end = time.perf_counter()
        first = first or end
        yield Done(reason, len(tokens), (first - start) * 1000.0, produced, (end - first) * 1000.0)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings (not normalised) of each text, and the tokens they used.

        A second llama.cpp context with embeddings enabled shares the mmapped weights, so a
        model serves chat and embeddings without a reload.
        """
        if self._embedder is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            self._embedder = Llama(model_path=str(self.spec.model_path), n_ctx=self.llm.n_ctx(),
                                   n_batch=self.llm.n_ctx(), n_ubatch=self.llm.n_ctx(),
                                   n_threads=self.llm.n_threads, embedding=True,
                                   pooling_type=LLAMA_POOLING_TYPE_MEAN, verbose=False)
        vectors, used = [], 0
        limit = self._embedder.n_ctx()
        for text in texts:
            if self._min_tokens(text) > limit:
                if not truncate:
                    raise BadRequest("the input length exceeds the context length")
                # Nothing past this many bytes can be within the first `limit` tokens.
                text = text.encode("utf-8", "replace")[: (limit + 1) * self.max_token_bytes].decode(
                    "utf-8", "ignore")
            count = len(self._embedder.tokenize(text.encode(), add_bos=True, special=False))
            if count > limit and not truncate:
                raise BadRequest("the input length exceeds the context length")
            used += min(count, limit)
            vectors.append(self._embedder.embed(text, normalize=False, truncate=True))
        return vectors, used

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.llm.close()
            if self._embedder is not None:
                self._embedder.close()
            _return_freed_memory()


class _KVShape:
    """What sizes a llama.cpp KV cache, from GGUF metadata."""

    def __init__(self, layers: int, kv_width: int, train_ctx: int):
        self.layers, self.kv_width, self.train_ctx = layers, kv_width, train_ctx

    @classmethod
    def from_metadata(cls, meta: dict) -> "_KVShape":
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


def _check_memory(spec, shape: _KVShape, n_ctx: int) -> None:
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


def _max_token_bytes(llm) -> int:
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


def _forced_call_schema(gen):
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


def _grammar(fmt):
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
