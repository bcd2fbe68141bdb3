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


class LlamaCppBackend(Backend):
    kind = "llamacpp"
    device = "cpu"
    constrains_format = True

    def __init__(self, spec, llm, template: ChatTemplate):
        self.spec, self.llm, self.template = spec, llm, template
        self.context_length = llm.n_ctx()
        self.memory_bytes = spec.size
        self._embedder = None
        self._closed = False

    @classmethod
    def load(cls, spec, opts, settings) -> "LlamaCppBackend":
        """Load the GGUF at `spec.model_path`; num_ctx is capped at the model's training context."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LoadFailed(f"the CPU engine (llama-cpp-python) is not installed: {exc}")
        if not os.path.isfile(spec.model_path):
            raise LoadFailed(f"model file missing: {spec.model_path}; pull {spec.name.display()} again")
        threads = opts.num_thread or settings.threads
        n_ctx = opts.num_ctx or settings.context_length
        train_ctx = spec.modelfile.details.get("context_length") or 0
        if train_ctx:
            n_ctx = min(n_ctx, train_ctx)
        try:
            llm = Llama(model_path=str(spec.model_path), n_ctx=n_ctx, n_batch=opts.num_batch or 512,
                        n_threads=threads, n_threads_batch=threads,
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
        return cls(spec, llm, template)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=self.llm._model.add_bos_token(), special=True)

    def _tokens(self, text: str) -> list[int]:
        add_bos = self.llm._model.add_bos_token()
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    def _prompt_tokens(self, gen) -> list[int]:
        """The prompt's tokens. Chat history that does not fit `num_ctx` loses its oldest
        messages first, keeping system messages and the last message (as Ollama does)."""
        if gen.prompt is not None:
            return self._tokens(gen.prompt)
        extra = {}
        if gen.tools:
            extra["tools"] = gen.tools
        if gen.parse_thinking:  # Qwen3-style templates switch reasoning with this
            extra["enable_thinking"] = gen.think not in (False, None)
        messages = list(gen.messages)
        while True:
            try:
                text = self.template.render(messages, add_generation_prompt=True, **extra)
            except TemplateRenderError as exc:
                raise BadRequest(f"chat template failed: {exc}")
            tokens = self._tokens(text)
            if len(tokens) < self.llm.n_ctx():
                return tokens
            droppable = [i for i, m in enumerate(messages[:-1]) if m.role != "system"]
            if not droppable:
                return tokens  # generate() reports that the input exceeds the context
            del messages[droppable[0]]

    def generate(self, gen, cancel):
        import llama_cpp

        opts = gen.options
        tokens = self._prompt_tokens(gen)
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise BadRequest(
                f"the input length ({len(tokens)} tokens) exceeds the context length ({n_ctx})")
        self.llm.set_seed(opts.seed if opts.seed >= 0 else random.randrange(2**31))
        limit = opts.num_predict if opts.num_predict >= 0 else n_ctx
        budget = min(limit, n_ctx - len(tokens))
        grammar = _grammar(gen.format or _forced_call_schema(gen))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self.llm._model.vocab
        start = time.perf_counter()
        first = None
        produced = 0
        reason = DoneReason.STOP
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
    except (ValueError, RuntimeError, TypeError) as exc:
        raise BadRequest(f"invalid format: {exc}")
