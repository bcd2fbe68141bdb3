"""RKLLMBackend: one .rkllm model on the NPU through the RKLLM runtime.

rkllm_run blocks until the answer is complete, so each generation runs it on a run thread of its
own; the result callback (called from a runtime thread) finds that generation's run through
`userdata` (runs.py) and feeds its queue, and generate() yields from the queue on the engine
thread. What to send for each request, given what the KV cache holds, is conversation.py's.
Cancelling calls rkllm_abort and waits for rkllm_run to return. The handle is destroyed only
when no run is in flight.
"""

import base64
import ctypes
import json
import logging
import signal
import threading
from collections.abc import Generator, Hashable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from rkollama.backends.base import Backend
from rkollama.backends.rkllm import abi, inputs, loading, rknn, runtime_words, vision_input
from rkollama.backends.rkllm.batching import BatchState
from rkollama.backends.rkllm.conversation import Conversation
from rkollama.backends.rkllm.runs import END, Run, RunFacts, RunTable
from rkollama.backends.rkllm.runtime import Runtime, open_runtime
from rkollama.backends.rkllm.token_cache import Plan, TokenCache
from rkollama.backends.rkllm.tokenizer import HFTokenizer
from rkollama.config import Settings
from rkollama.core import images, media
from rkollama.core.fitting import INPUT_TOO_LONG, PromptFitter
from rkollama.core.parse import THINK_CLOSE, THINK_OPEN
from rkollama.core.types import Done, DoneReason, Generation, JSONObject, LoadOptions, Token
from rkollama.errors import BackendFailed, BadRequest, LoadFailed
from rkollama.models.rkllm_section import RKLLMSection
from rkollama.models.store import ModelSpec
from rkollama.platform import source_platform

log = logging.getLogger("rkollama.rkllm")

MAX_THINK_CONTINUATIONS = 1
"""Runs added after a runtime ended an answer at </think> (1.3.x): one, for the answer."""


@dataclass
class Native:
    """What rkllm_init gave a model: the runtime, its handle, the table its callbacks report to,
    the ctypes objects that must outlive the handle, and the first LoRA adapter's
    RKLLMLoraParam (applied to every run, as Ollama's ADAPTER is), or None."""

    runtime: Runtime
    handle: abi.LLMHandle
    runs: RunTable
    keep: tuple[Any, ...] = ()
    lora: Any = None


class RKLLMBackend(Backend):
    kind = "rkllm"
    title = "the NPU runtime"
    device = "npu"
    own_npu_domain = True
    death_hints = {signal.SIGILL: "this runtime build uses instructions this CPU lacks; try runtime 1.2.3"}

    @classmethod
    def shaping(cls, spec: ModelSpec) -> JSONObject:
        """The RKLLM section, the platform, and the parameters: the runtime samples with what
        it was loaded with."""
        mf = spec.modelfile
        return {"rkllm": mf.rkllm.model_dump(mode="json"), "parameters": mf.parameters,
                "platform": mf.source.platform}

    @classmethod
    def first_npu_domain(cls, spec: ModelSpec) -> int:
        """1 for a model with a vision encoder: the RKNN runtime puts the encoder in NPU domain
        0, and Rockchip's multimodal demo moves the language model to another one."""
        return 1 if spec.projector_path is not None else 0

    def batch_key(self, gen: Generation) -> Hashable:
        """The same tools and system prompt (the runtime holds them per handle); a request with
        images shares its run with none (it is a multimodal run of its own)."""
        if _has_images(gen):
            return "images", id(gen)
        system = "\n".join(m.content for m in gen.messages or [] if m.role == "system")
        return json.dumps(gen.tools, sort_keys=True), system

    def __init__(self, spec: ModelSpec, native: Native, conversation: Conversation, rkllm: RKLLMSection,
                 context_length: int, slots: int = 1, tokenizer: HFTokenizer | None = None,
                 fitter: PromptFitter | None = None):
        self.spec, self.rt, self.handle = spec, native.runtime, native.handle
        self._native = native
        self._runs = native.runs
        self._conversation = conversation
        self.context_length = context_length
        self.memory_bytes = spec.size
        self.slots = slots
        self.batch_window_s = rkllm.batch_window_ms / 1000.0
        self._rkllm = rkllm
        self._closed = False
        self.tokenizer = tokenizer
        """The model's own tokenizer: prompts go to the runtime as token ids (None: as text)."""
        self._fitter = fitter
        self._cache = TokenCache()
        self.encoder: rknn.Encoder | None = None
        """The model's vision encoder (`.rknn`), when it reads images."""
        self.init_lines: list[str] = []
        """What the runtime printed while it loaded the model (banner, limits)."""
        self.last_run = RunFacts()
        """What the last generation sent and got (for `doctor --npu-check`)."""

    def trace_callbacks(self, trace: list[tuple[float, int, bytes | None, int]] | None) -> None:
        """Record every result callback into `trace` ((monotonic s, state, text bytes, token id)),
        or stop recording with None (`doctor --npu-check`)."""
        self._runs.trace = trace

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: ModelSpec, opts: LoadOptions, settings: Settings) -> "RKLLMBackend":
        if settings.npu_driver_check:
            loading.check_driver()
        machine = source_platform(settings.platform, settings.rkllm_lib)
        loading.check_target(spec, machine)
        tokenizer = loading.open_tokenizer(spec)
        # Before rkllm_init: a bad template holds no handle.
        template = (tokenizer.template(spec.modelfile.template) if tokenizer
                    else loading.compile_template(spec))
        rt = open_runtime(settings.rkllm_lib, settings.rkllm_abi)
        fam = rt.family
        rk = spec.modelfile.rkllm_section()
        path = str(spec.model_path).encode()
        param, ctx, n_batch = loading.init_param(rt, spec, rk, opts, settings, path, machine)
        runs = RunTable()
        third, keep = loading.callbacks(fam, runs)
        keep.append(path)
        keep.append(param)  # its strings (image tags) may be read by the runtime after init
        handle, rc, lines = loading.init_captured(rt, param, third)
        refused = runtime_words.context_refusal(lines)
        if (rc != 0 or not handle.value) and refused and refused[1] < ctx:
            # The file allows less context than asked: load it with what it allows.
            log.warning("%s allows %d tokens of context (max_context_limit): loading it with %d "
                        "instead of %d", spec.name.display(), refused[1], refused[1], ctx)
            if param.max_new_tokens == ctx:
                param.max_new_tokens = refused[1]
            ctx = param.max_context_len = refused[1]
            handle, rc, lines = loading.init_captured(rt, param, third)
        if rc != 0 or not handle.value:
            raise LoadFailed(runtime_words.refusal(lines, rc))
        with ExitStack() as undo:
            undo.callback(rt.rkllm_destroy, handle)  # any failure from here on frees the handle
            for adapter in rk.lora:
                lora = fam.RKLLMLoraAdapter(adapter.path.encode(), adapter.name.encode(), adapter.scale)
                if rt.rkllm_load_lora(handle, ctypes.byref(lora)) != 0:
                    raise LoadFailed(f"the RKLLM runtime could not load the LoRA adapter {adapter.path}")
            if rk.prompt_cache and rt.rkllm_load_prompt_cache(handle, rk.prompt_cache.encode()) != 0:
                raise LoadFailed(f"the RKLLM runtime could not load the prompt cache {rk.prompt_cache}")
            if template is not None:
                # The prompt arrives fully rendered: no pieces of the built-in template around it.
                rt.rkllm_set_chat_template(handle, b"", b"", b"")
            first_lora = fam.RKLLMLoraParam(rk.lora[0].name.encode()) if rk.lora else None
            fitter = None
            if tokenizer is not None and template is not None:
                fitter = PromptFitter(ctx, template, tokenizer.encode, tokenizer.max_token_bytes,
                                      vocab_size=tokenizer.vocab_size)
            native = Native(rt, handle, runs, tuple(keep), first_lora)
            backend = cls(spec, native, Conversation(rt, handle, None if tokenizer else template, rk),
                          rk, ctx, slots=n_batch, tokenizer=tokenizer, fitter=fitter)
            if spec.projector_path is not None:
                backend.encoder = rknn.Encoder(rknn.open_library(settings.rknn_lib), spec.projector_path)
                undo.callback(backend.encoder.close)
            undo.pop_all()
        backend.init_lines = lines
        log.info("%s on the NPU: prompts sent as %s, context %d, runtime %s (%s)", spec.name.display(),
                 "token ids" if fitter else "text (no tokenizer: the runtime's template applies)",
                 ctx, rt.identity.version or rt.identity.family, rt.identity.how)
        return backend

    # -- generation ------------------------------------------------------------------------------
    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        if gen.logprobs:
            raise BadRequest("log-probabilities are not available on the NPU engine (RKLLM): "
                             "ask without logprobs, or use the model's GGUF on the CPU engine")
        if _has_images(gen):
            yield from self._generate_images(gen, cancel)
        elif self._fitter is not None:
            yield from self._generate_tokens(gen, cancel, self._fitter)
        else:
            yield from self._generate_text(gen, cancel)

    def render(self, gen: Generation) -> str:
        """The prompt text `gen` becomes (`_debug_render_only`); the text path shows only the
        message the runtime's own template wraps."""
        if self._fitter is not None:
            return self._fitter.whole_text(gen)
        return self._conversation.whole_prompt(gen)[0]

    # -- prompts as token ids ----------------------------------------------------------------------
    def _generate_tokens(self, gen: Generation, cancel: threading.Event,
                         fitter: PromptFitter) -> Iterator[Token | Done]:
        """Render, tokenize and fit the prompt as the CPU engine does, send what the KV cache
        does not hold yet (token_cache.py), and when a 1.3.x runtime ends the run at </think>,
        run again from the thinking plus </think> so the answer follows."""
        assert self.tokenizer is not None
        tokens = fitter.prompt_tokens(gen)
        limit = _limit(gen, self.context_length - len(tokens))
        whole = list(tokens)
        produced, prompt_ms, eval_ms = 0, 0.0, 0.0
        reason = DoneReason.STOP
        thinking = gen.parse_thinking and self._opens_thinking(tokens)
        if thinking:  # the template opened the reasoning: the parser must see where it starts
            yield Token(THINK_OPEN)
        continuations = 0
        while True:
            plan = self._cache.plan(whole)
            if plan.clear:
                self._clear_cache()
            remaining = None if limit is None else limit - produced
            run, answer = yield from self._token_run(gen, plan, remaining, cancel, continuations)
            reason = run.stop_reason
            if run.error and not run.aborted:
                self._cache.forget("the run failed")
                raise BackendFailed("the NPU runtime reported an error during generation")
            generated = self._generated_ids(run.ids, answer)
            self._cache.settle(whole, generated, self._kv_size(), kept=plan.keep_history)
            count = run.perf[2] if run.perf and run.perf[2] else run.tokens
            produced += count if remaining is None else min(count, remaining)
            if run.perf:
                prompt_ms += run.perf[1] if not continuations else 0.0
                eval_ms += run.perf[3]
                if not continuations:
                    self.last_run = replace(self.last_run, prefilled=run.perf[0])
            whole += generated if generated is not None else self.tokenizer.encode(answer, add_bos=False)
            thinking = _still_thinking(thinking, answer)
            close = self.tokenizer.token_id(THINK_CLOSE)
            if (thinking and reason is DoneReason.STOP and run.finished and not run.aborted
                    and close is not None and continuations < MAX_THINK_CONTINUATIONS
                    and (limit is None or produced < limit)):
                # The runtime ended the run at </think> without passing it on (1.3.x with a
                # thinking model): the answer is still to come.
                log.info("the runtime ended the answer at %s: running again for the answer", THINK_CLOSE)
                continuations += 1
                thinking = False
                whole.append(close)
                yield Token(THINK_CLOSE)
                continue
            break
        if limit is not None and produced >= limit and reason is DoneReason.STOP:
            reason = DoneReason.LENGTH
        yield Done(reason, len(tokens), prompt_ms, produced, eval_ms, tuple(whole))

    def _token_run(self, gen: Generation, plan: Plan, remaining: int | None, cancel: threading.Event,
                   continuations: int) -> Generator[Token, None, tuple[Run, str]]:
        """One rkllm_run of the tokens `plan` sends; yields the answer's tokens as they come and
        returns the finished run and its whole text."""
        ids = inputs.token_array(plan.send)
        inp = self.rt.family.RKLLMInput()
        inputs.point_at_tokens(inp, ids)
        infer, sampling = self._infer(gen, keep_history=plan.keep_history, max_new=remaining)
        log.debug("rkllm_run: %d tokens sent (keep_history=%d), %d reused from the KV cache",
                  len(plan.send), plan.keep_history, plan.cached)
        self.last_run = RunFacts("tokens", len(plan.send), plan.cached, continuations,
                                 keep_history=plan.keep_history)
        run_id, run, thread = self._launch(ctypes.pointer(inp), infer, keep=(ids, sampling))
        text: list[str] = []
        try:
            for token in self._stream(run, remaining, cancel):
                text.append(token.text)
                yield token
        finally:
            self._join(run_id, thread)
        tail = run.decoder.finish()  # an incomplete character at the very end
        if tail and run.stop_reason is not DoneReason.CANCELLED:
            yield Token(tail)
        return run, "".join(text) + tail

    def _opens_thinking(self, tokens: list[int]) -> bool:
        """True when the rendered prompt leaves a <think> block open (templates that start the
        reasoning for the model)."""
        assert self.tokenizer is not None
        opened, closed = (self.tokenizer.token_id(t) for t in (THINK_OPEN, THINK_CLOSE))
        if opened is None:
            return False
        last_open = max((i for i, t in enumerate(tokens) if t == opened), default=-1)
        last_close = max((i for i, t in enumerate(tokens) if t == closed), default=-1)
        return last_open > last_close

    def _generated_ids(self, ids: list[int], answer: str) -> list[int] | None:
        """The answer's token ids as the callbacks gave them, when they spell the answer's text;
        None when they do not (a runtime that gives no ids, or ids of another meaning)."""
        assert self.tokenizer is not None
        if not answer and not ids:
            return []
        for skip in (False, True):
            if self.tokenizer.decode(ids, skip_special=skip) == answer:
                return list(ids)
        return None

    def _clear_cache(self) -> None:
        # int rkllm_clear_kv_cache(handle, keep_system_prompt, NULL, NULL): the runtime's own
        # system prompt is empty on this path, so nothing is kept.
        if self.rt.rkllm_clear_kv_cache(self.handle, 0, None, None) != 0:
            log.warning("rkllm_clear_kv_cache failed")
        self._cache.cleared()

    # -- prompts as text (no tokenizer) ------------------------------------------------------------
    def _generate_text(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        fam = self.rt.family
        prompt, role, keep_history = self._conversation.prepare(gen)
        data = prompt.encode()
        inp = fam.RKLLMInput()
        inp.role = role.encode()
        inp.enable_thinking = gen.think not in (False, None) if gen.parse_thinking else False
        inp.input_type = abi.RKLLM_INPUT_PROMPT
        inp.prompt_input = data
        limit = _limit(gen, self.context_length)
        infer, sampling = self._infer(gen, keep_history=keep_history, max_new=limit)
        cached = self._kv_size() if keep_history else 0
        self.last_run = RunFacts("text", len(data), cached, 0)
        run_id, run, thread = self._launch(ctypes.pointer(inp), infer, keep=(data, sampling))
        try:
            yield from self._stream(run, limit, cancel)
        finally:
            self._join(run_id, thread)
        yield from self._finish_text_run(run, gen, keep_history, cached, limit)

    def _finish_text_run(self, run: Run, gen: Generation, keep_history: bool, cached: int,
                         limit: int | None) -> Iterator[Token | Done]:
        """The end of a run sent as text: its last bytes, the conversation it leaves in the KV
        cache, and Done with the runtime's counts."""
        reason = run.stop_reason
        if run.error and not run.aborted:
            self._conversation.clear()
            raise BackendFailed("the NPU runtime reported an error during generation")
        tail = run.decoder.finish()
        if tail and reason is not DoneReason.CANCELLED:
            yield Token(tail)
        if reason is DoneReason.CANCELLED:
            self._conversation.clear()
        else:
            self._conversation.remember(gen, keep_history)
        prefill, prefill_ms, generated, generate_ms = run.perf or (0, 0.0, run.tokens, 0.0)
        if limit is not None and generated >= limit and reason is DoneReason.STOP:
            reason = DoneReason.LENGTH
        yield Done(reason, cached + prefill, prefill_ms, min(generated, limit or generated), generate_ms)

    # -- prompts with images -------------------------------------------------------------------------
    def _generate_images(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        """One RKLLM_INPUT_MULTIMODAL run: the prompt as text with `<image>` where each image
        goes (the whole conversation, rendered, when the model has a template; else what the
        conversation sends, its earlier images already in the KV cache), and the embeddings the
        vision encoder makes of the images that text names."""
        if self.encoder is None:
            raise BadRequest(f"{self.spec.name.full()} does not support vision")
        text, pictures, tagged, keep_history = self._image_prompt(gen)
        decoded = [images.decode(base64.b64decode(p)) for p in pictures]
        embedded = self.encoder.encode(decoded)
        data = text.encode()
        inp = inputs.multimodal_input(self.rt.family, data, embedded, self._rkllm)
        inp.enable_thinking = gen.think not in (False, None) if gen.parse_thinking else False
        limit = _limit(gen, self.context_length)
        infer, sampling = self._infer(gen, keep_history=keep_history, max_new=limit)
        cached = self._kv_size() if keep_history else 0
        self.last_run = RunFacts("images", len(data), cached, 0, keep_history=keep_history)
        run_id, run, thread = self._launch(ctypes.pointer(inp), infer, keep=(data, sampling, embedded))
        try:
            yield from self._stream(run, limit, cancel)
        finally:
            self._join(run_id, thread)
        yield from self._finish_text_run(run, tagged, keep_history, cached, limit)

    def _image_prompt(self, gen: Generation) -> tuple[str, list[str], Generation, bool]:
        """(prompt with placeholders, the images it names, the request with its images as
        tags, keep_history)."""
        every = media.images_of(gen)
        tagged = gen
        if gen.messages is not None:
            tagged = replace(gen, messages=media.tagged(list(gen.messages))[0])
        if gen.messages is not None and self._fitter is not None:
            # The whole conversation as the template writes it, with the images' tags in it.
            text, keep_history = self._fitter.render(list(gen.messages), gen), False
            if self.rt.rkllm_clear_kv_cache(self.handle, 0, None, None) != 0:
                log.warning("rkllm_clear_kv_cache failed")
            self._cache.cleared()
        else:
            text, _, keep_history = self._conversation.prepare(tagged)
        prompt, pictures = vision_input.placed(text, every)
        if self.tokenizer is not None and self.encoder is not None:
            needed = len(self.tokenizer.encode(prompt, False)) + len(pictures) * self.encoder.tokens
            if needed >= self.context_length:
                raise BadRequest(INPUT_TOO_LONG)
        return prompt, pictures, tagged, keep_history

    # -- what both paths share ---------------------------------------------------------------------
    def _infer(self, gen: Generation, keep_history: bool, max_new: int | None) -> tuple[Any, Any]:
        """(RKLLMInferParam, its RKLLMSamplingParam or None) for one run."""
        fam = self.rt.family
        infer = fam.RKLLMInferParam()
        infer.mode = abi.RKLLM_INFER_GENERATE
        infer.keep_history = 1 if keep_history else 0
        if self._native.lora is not None:  # the Modelfile's adapter applies to every run
            infer.lora_params = ctypes.pointer(self._native.lora)
        sampling = None
        if fam.callback_struct:
            opts = gen.options
            sampling = fam.RKLLMSamplingParam(top_k=opts.top_k, top_p=opts.top_p,
                                              temperature=opts.temperature,
                                              repeat_penalty=opts.repeat_penalty,
                                              frequency_penalty=opts.frequency_penalty,
                                              presence_penalty=opts.presence_penalty,
                                              # Ollama's options have no mirostat: each run
                                              # keeps the Modelfile's, as rkllm_init got it.
                                              mirostat=self._rkllm.mirostat,
                                              mirostat_tau=self._rkllm.mirostat_tau,
                                              mirostat_eta=self._rkllm.mirostat_eta)
            infer.sampling_params = ctypes.pointer(sampling)
            infer.max_new_tokens = max_new or 0  # <= 0: the init value
        return infer, sampling

    def _stream(self, run: Run, limit: int | None,
                cancel: threading.Event) -> Generator[Token, None, None]:
        """The run's text as it comes; sets `run.stop_reason`. A 1.3.x runtime stops at the
        run's max_new_tokens by itself, so it is aborted only if it runs past the limit (an
        abort racing its own stop could land on the next run); 1.2.x knows only the init limit,
        so it is aborted at the limit. Cancelling aborts at once."""
        own_stop = self.rt.family.callback_struct
        for item in run.poll():
            if item is not None and run.stop_reason is DoneReason.STOP:
                text, count = item
                if limit is None or count <= limit:
                    yield Token(text)
                if limit is not None and count >= limit:
                    run.stop_reason = DoneReason.LENGTH
                    if not own_stop or count > limit:
                        self._abort(run, "num_predict reached")
            elif item is not None and limit is not None and item[1] > limit and not run.aborted:
                self._abort(run, "the runtime ran past max_new_tokens")
            if cancel.is_set() and run.stop_reason is not DoneReason.CANCELLED:
                run.stop_reason = DoneReason.CANCELLED
                self._abort(run, "cancelled")  # lands at the next decode step

    def _abort(self, run: Run, why: str) -> None:
        log.debug("rkllm_abort: %s", why)
        run.aborted = True
        self.rt.rkllm_abort(self.handle)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Mean of the last hidden layer over each text's tokens (RKLLM_INFER_GET_LAST_HIDDEN_LAYER),
        each text on its own (the KV cache is cleared first)."""
        fam = self.rt.family
        vectors: list[list[float]] = []
        used = 0
        self._conversation.clear()
        if self._cache.needs_clear:
            self._clear_cache()
        self._cache.forget("embeddings ran")  # what a hidden-layer run leaves is not known
        for text in texts:
            data = text.encode()
            inp = fam.RKLLMInput()
            inp.role = b"user"
            inp.input_type = abi.RKLLM_INPUT_PROMPT
            inp.prompt_input = data
            infer = fam.RKLLMInferParam()
            infer.mode = abi.RKLLM_INFER_GET_LAST_HIDDEN_LAYER
            infer.keep_history = 0
            run_id, run, thread = self._launch(ctypes.pointer(inp), infer, keep=data)
            for _ in run.poll():
                pass
            self._join(run_id, thread)
            if run.error or run.hidden is None:
                raise BackendFailed("the NPU runtime returned no hidden states for the embedding")
            vectors.append(run.hidden)
            used += run.perf[0] if run.perf else len(text.split())
        return vectors, used

    def _batch_inputs(self, gens: list[Generation]) -> tuple[Any, list[Any]]:
        """One RKLLMInput per slot (token ids, or the text the runtime's template wraps), and the
        buffers they point into, which must live until the run ends."""
        inputs = (self.rt.family.RKLLMInput * len(gens))()
        keep: list[Any] = []
        for slot, gen in enumerate(gens):
            if self._fitter is not None:
                ids = inputs.token_array(self._fitter.prompt_tokens(gen))
                keep.append(ids)
                inputs.point_at_tokens(inputs[slot], ids)
                continue
            text, role = self._conversation.whole_prompt(gen)
            data = text.encode()
            keep.append(data)
            inputs[slot].role = role.encode()
            inputs[slot].enable_thinking = gen.think not in (False, None) if gen.parse_thinking else False
            inputs[slot].input_type = abi.RKLLM_INPUT_PROMPT
            inputs[slot].prompt_input = data
        return inputs, keep

    def generate_batch(self, batch: list[tuple[int, Generation, threading.Event]]
                       ) -> Iterator[tuple[int, Token | Done]]:
        """Run up to n_batch requests in one forward pass; yield (request_id, event).

        Each request is sent whole (its earlier turns replayed as context, no KV-cache reuse);
        spare slots repeat the first prompt and their output is dropped. A cancelled request ends
        at once; the run is aborted when no request is left.
        """
        if len(batch) == 1 and _has_images(batch[0][1]):  # alone, by its batch key
            request_id, gen, cancel = batch[0]
            for event in self.generate(gen, cancel):
                yield request_id, event
            return
        fam = self.rt.family
        n = self.slots
        if self._fitter is None:  # tools and system prompt live in the runtime's template
            self._conversation.start_batch(batch[0][1])
        if self._cache.needs_clear:
            self._clear_cache()
        self._cache.forget("a batch ran")
        inputs, keep = self._batch_inputs([batch[min(slot, len(batch) - 1)][1] for slot in range(n)])
        infer = fam.RKLLMInferParam()
        infer.mode = abi.RKLLM_INFER_GENERATE
        infer.keep_history = 0
        run_id, run, thread = self._launch(ctypes.cast(inputs, ctypes.POINTER(fam.RKLLMInput)), infer,
                                           keep=(inputs, keep), slots=n)
        state = BatchState(batch)
        try:
            for item in run.poll():
                yield from state.cancelled()
                if item is not None:
                    yield from state.token(*item)
                if all(state.ended):
                    self.rt.rkllm_abort(self.handle)
        finally:
            self._join(run_id, thread)
        if run.error:
            raise BackendFailed("the NPU runtime reported an error during generation")
        prefill, prefill_ms, _, generate_ms = run.perf or (0, 0.0, 0, 0.0)
        for index, (request_id, _, _) in enumerate(batch):
            if state.reasons[index] is not DoneReason.CANCELLED:
                yield request_id, Done(state.reasons[index], prefill // n, prefill_ms, state.counts[index],
                                       generate_ms)

    def _launch(self, inputs: Any, infer: Any, keep: Any,
                slots: int = 0) -> tuple[int, Run, threading.Thread]:
        """Start rkllm_run on a run thread of its own; `keep` holds the buffers the runtime reads.
        With `slots`, the run is a batch and the callback receives an array of results."""
        run_id, run = self._runs.start(slots, keep=(inputs, infer, keep))

        def target() -> None:
            try:
                if self.rt.rkllm_run(self.handle, inputs, ctypes.byref(infer), run_id) != 0:
                    run.error = True
            finally:
                run.events.put(END)

        thread = threading.Thread(target=target, name="rkllm_run", daemon=True)
        thread.start()
        return run_id, run, thread

    def _join(self, run_id: int, thread: threading.Thread) -> None:
        if thread.is_alive():  # never leave rkllm_run running behind us
            self.rt.rkllm_abort(self.handle)
            thread.join()
        self._runs.finish(run_id)

    def _kv_size(self) -> int:
        sizes = (ctypes.c_int * 8)()
        if self.rt.rkllm_get_kv_cache_size(self.handle, sizes) != 0:
            return 0
        return int(sizes[0])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.rt.rkllm_destroy(self.handle)
            if self.encoder is not None:
                self.encoder.close()


def _has_images(gen: Generation) -> bool:
    return bool(media.images_of(gen))


def _limit(gen: Generation, room: int) -> int | None:
    """Tokens a run may generate: num_predict, the rest of the window for -2, else no limit
    of rkollama's (the runtime's max_new_tokens applies)."""
    predict = gen.options.num_predict
    if predict > 0:
        return predict
    return max(1, room) if predict == -2 else None


def _still_thinking(thinking: bool, answer: str) -> bool:
    """Whether a <think> block is open after `answer`, given whether it was before."""
    opened, closed = answer.rfind(THINK_OPEN), answer.rfind(THINK_CLOSE)
    if opened < 0 and closed < 0:
        return thinking
    return opened > closed
