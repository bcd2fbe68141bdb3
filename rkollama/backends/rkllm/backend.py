"""RKLLMBackend: one .rkllm model on the NPU through the RKLLM runtime.

rkllm_run blocks until the answer is complete, so each generation runs it on a run thread of its
own; the result callback (called from a runtime thread) finds that generation's queue through
`userdata` and feeds it, and generate() yields from the queue on the engine thread. Cancelling
calls rkllm_abort and waits for rkllm_run to return. The handle is destroyed only when no run is
in flight.
"""

import codecs
import ctypes
import itertools
import json
import queue
import threading

from rkollama.backends.base import Backend
from rkollama.backends.rkllm import abi
from rkollama.backends.rkllm.runtime import open_runtime
from rkollama.core.prompt import ChatTemplate, TemplateRenderError
from rkollama.core.types import Done, DoneReason, Token
from rkollama.errors import BackendFailed, BadRequest, LoadFailed
from rkollama.platform import (NPU_ENGINE_PLATFORMS, driver_problem,
                               platform_defaults, source_platform)

_END = object()


class _Run:
    """Per-generation state reached from the callback through `userdata` (never a global)."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.perf = None
        self.error = False
        self.slot_decoders: list = []  # batch runs: one decoder per slot
        self.tokens = 0  # one NORMAL or WAITING callback per generated token
        self.hidden: list | None = None  # mean of the last hidden layer (embedding runs)


class RKLLMBackend(Backend):
    kind = "rkllm"
    device = "npu"

    def __init__(self, spec, runtime, handle, callback_refs, template, context_length: int):
        self.spec, self.rt, self.handle = spec, runtime, handle
        self._refs = callback_refs  # the CFUNCTYPE objects must outlive the handle
        self.template = template
        self.context_length = context_length
        self.memory_bytes = spec.size
        self._runs: dict[int, _Run] = {}
        self._ids = itertools.count(1)
        self._history: list = []   # messages the runtime holds in its KV cache
        self._cache_used = False   # a keep_history run may have left something in the KV cache
        self._tools_json = None
        self._system = None  # the system prompt last set through rkllm_set_chat_template
        self._lora = None
        self._closed = False

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec, opts, settings) -> "RKLLMBackend":
        problem = driver_problem()
        if problem is not None:
            raise LoadFailed(f"{problem}; `rkollama doctor` shows the details")
        _check_target(spec, source_platform(settings.platform, settings.rkllm_lib))
        rt = open_runtime(settings.rkllm_lib)
        fam = rt.family
        mf = spec.modelfile
        rk = dict(mf.rkllm)
        param = rt.default_param()
        path = str(spec.model_path).encode()
        param.model_path = path
        ctx = opts.num_ctx or rk.get("max_context_len") or settings.context_length
        param.max_context_len = ctx
        param.max_new_tokens = rk.get("max_new_tokens", ctx)
        param.n_keep = rk.get("n_keep", -1)
        sampling = {**mf.parameters}
        param.top_k = int(rk.get("top_k", sampling.get("top_k", 40)))
        param.top_p = float(rk.get("top_p", sampling.get("top_p", 0.9)))
        param.temperature = float(rk.get("temperature", sampling.get("temperature", 0.8)))
        param.repeat_penalty = float(rk.get("repeat_penalty", sampling.get("repeat_penalty", 1.1)))
        param.frequency_penalty = float(rk.get("frequency_penalty", sampling.get("frequency_penalty", 0.0)))
        param.presence_penalty = float(rk.get("presence_penalty", sampling.get("presence_penalty", 0.0)))
        param.mirostat = int(rk.get("mirostat", 0))
        param.mirostat_tau = float(rk.get("mirostat_tau", 5.0))
        param.mirostat_eta = float(rk.get("mirostat_eta", 0.1))
        param.skip_special_token = bool(rk.get("skip_special_token", True))
        param.is_async = False
        if rt.family.callback_struct:
            param.ignore_eos_token = bool(rk.get("ignore_eos_token", False))
        defaults = platform_defaults(spec.modelfile.source.get("platform", ""))
        ext = param.extend_param
        ext.base_domain_id = int(rk.get("base_domain_id", opts.npu_domain or 0))
        ext.embed_flash = 1 if rk.get("embed_flash", True) else 0
        ext.enabled_cpus_mask = int(rk.get("enabled_cpus_mask", defaults["cpus_mask"]))
        ext.enabled_cpus_num = int(rk.get("enabled_cpus_num", bin(ext.enabled_cpus_mask).count("1")))
        n_batch = max(1, min(8, int(rk.get("n_batch", 1))))
        if n_batch > 1 and not rt.identity.version:
            raise LoadFailed(
                f"n_batch {n_batch} needs the exact runtime version (1.3.0 and 1.3.1 lay out "
                f"RKLLMInput arrays differently) and {rt.identity.path} could not be identified "
                "beyond its ABI family: install an official build (recognised by its checksum) "
                "or set rkllm.n_batch to 1 in the Modelfile")
        ext.n_batch = n_batch
        ext.use_cross_attn = 0

        backend = cls.__new__(cls)
        result_cb = fam.LLMResultCallback(backend._on_result)
        refs = [result_cb, path]
        if rt.family.callback_struct:
            callbacks = fam.RKLLMCallback()
            callbacks.result_callback = result_cb
            callbacks.result_userdata = None
            refs.append(callbacks)
            third = ctypes.byref(callbacks)
        else:
            third = result_cb
        handle = abi.LLMHandle()
        rc = rt.rkllm_init(ctypes.byref(handle), ctypes.byref(param), third)
        if rc != 0 or not handle.value:
            raise LoadFailed(f"the RKLLM runtime could not load {spec.model_path} (rkllm_init returned "
                             f"{rc}); check that the model was converted for this platform and runtime")
        for adapter in rk.get("lora", []):
            lora = fam.RKLLMLoraAdapter(adapter["path"].encode(), adapter["name"].encode(),
                                        float(adapter.get("scale", 1.0)))
            if rt.rkllm_load_lora(handle, ctypes.byref(lora)) != 0:
                rt.rkllm_destroy(handle)
                raise LoadFailed(f"the RKLLM runtime could not load the LoRA adapter {adapter['path']}")
        if rk.get("prompt_cache") and rt.rkllm_load_prompt_cache(handle, rk["prompt_cache"].encode()) != 0:
            rt.rkllm_destroy(handle)
            raise LoadFailed(f"the RKLLM runtime could not load the prompt cache {rk['prompt_cache']}")
        template = None
        if mf.template and mf.template != "builtin":
            template = ChatTemplate(mf.template)
            # The prompt arrives fully rendered: no pieces of the built-in template around it.
            rt.rkllm_set_chat_template(handle, b"", b"", b"")
        cls.__init__(backend, spec, rt, handle, refs, template, ctx)
        backend.slots = n_batch
        adapters = rk.get("lora", [])
        backend._lora = fam.RKLLMLoraParam(adapters[0]["name"].encode()) if adapters else None
        return backend

    # -- the result callback (runtime thread) ----------------------------------------------------
    def _on_result(self, result, userdata, state) -> int:
        run = self._runs.get(userdata or 0)
        if run is None:
            return 0
        if run.slot_decoders:
            return self._on_batch_result(run, result, state)
        try:
            if state == abi.RKLLM_RUN_NORMAL and result and result.contents.last_hidden_layer.num_tokens > 0:
                layer = result.contents.last_hidden_layer
                if layer.hidden_states:  # valid only during this callback: pool it now
                    size, count = layer.embd_size, layer.num_tokens
                    values = (ctypes.c_float * (size * count)).from_address(
                        ctypes.addressof(layer.hidden_states.contents))
                    run.hidden = [sum(values[t * size + d] for t in range(count)) / count for d in range(size)]
                return 0
            if state in (abi.RKLLM_RUN_NORMAL, abi.RKLLM_RUN_WAITING):
                run.tokens += 1
                raw = result.contents.text if result else None
                if raw:  # bytes; WAITING pieces are incomplete UTF-8, the decoder joins them
                    text = run.decoder.decode(raw)
                    if text:
                        run.events.put((text, run.tokens))
            elif state == abi.RKLLM_RUN_FINISH:
                perf = result.contents.perf if result else None
                run.perf = (perf.prefill_tokens, perf.prefill_time_ms, perf.generate_tokens,
                            perf.generate_time_ms) if perf else None
            elif state == abi.RKLLM_RUN_ERROR:
                run.error = True
        except Exception:  # nothing may escape into the runtime's thread
            run.error = True
        return 0  # continue (1 would pause, 2 release buffers)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, gen, cancel):
        if gen.logprobs:
            raise BadRequest("log-probabilities are not available on the NPU engine (RKLLM): "
                             "ask without logprobs, or use the model's GGUF on the CPU engine")
        fam = self.rt.family
        prompt, role, keep_history = self._prepare(gen)
        data = prompt.encode()
        inp = fam.RKLLMInput()
        inp.role = role.encode()
        inp.enable_thinking = gen.think not in (False, None) if gen.parse_thinking else False
        inp.input_type = abi.RKLLM_INPUT_PROMPT
        inp.prompt_input = data
        infer = fam.RKLLMInferParam()
        infer.mode = abi.RKLLM_INFER_GENERATE
        infer.keep_history = 1 if keep_history else 0
        if self._lora is not None:  # the Modelfile's adapter applies to every run, as ADAPTER does
            infer.lora_params = ctypes.pointer(self._lora)
        sampling = None
        if self.rt.family.callback_struct:
            opts = gen.options
            sampling = fam.RKLLMSamplingParam(top_k=opts.top_k, top_p=opts.top_p,
                                              temperature=opts.temperature,
                                              repeat_penalty=opts.repeat_penalty,
                                              frequency_penalty=opts.frequency_penalty,
                                              presence_penalty=opts.presence_penalty,
                                              mirostat=0, mirostat_tau=5.0, mirostat_eta=0.1)
            infer.sampling_params = ctypes.pointer(sampling)
            infer.max_new_tokens = opts.num_predict if opts.num_predict > 0 else 0
        cached = self._kv_size() if keep_history else 0
        self._cache_used = self._cache_used or keep_history
        run_id, run, thread = self._launch(ctypes.pointer(inp), infer, keep=(data, sampling))
        texts = []
        reason = DoneReason.STOP
        # num_predict: 1.3.0 takes it per run; 1.2.x only at init, so the limit is also kept here.
        limit = gen.options.num_predict if gen.options.num_predict > 0 else None
        try:
            for item in self._poll(run):
                if item is not None and reason is DoneReason.STOP:
                    text, count = item
                    texts.append(text)
                    yield Token(text)
                    if limit is not None and count >= limit:
                        reason = DoneReason.LENGTH
                        self.rt.rkllm_abort(self.handle)
                if cancel.is_set() and reason is DoneReason.STOP:
                    reason = DoneReason.CANCELLED
                    self.rt.rkllm_abort(self.handle)  # lands at the next decode step
        finally:
            self._join(run_id, thread)
        if run.error:
            self._forget()
            raise BackendFailed("the NPU runtime reported an error during generation")
        tail = run.decoder.decode(b"", final=True)
        if tail:
            texts.append(tail)
            yield Token(tail)
        if reason is DoneReason.CANCELLED:
            self._forget()
        else:
            self._remember(gen, "".join(texts), keep_history)
        prefill, prefill_ms, generated, generate_ms = run.perf or (0, 0.0, run.tokens, 0.0)
        if limit is not None and generated >= limit and reason is DoneReason.STOP:
            reason = DoneReason.LENGTH
        yield Done(reason, cached + prefill, prefill_ms, min(generated, limit or generated), generate_ms)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Mean of the last hidden layer over each text's tokens (RKLLM_INFER_GET_LAST_HIDDEN_LAYER),
        each text on its own (the KV cache is cleared first)."""
        fam = self.rt.family
        vectors, used = [], 0
        self._clear()
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
            for _ in self._poll(run):
                pass
            self._join(run_id, thread)
            if run.error or run.hidden is None:
                raise BackendFailed("the NPU runtime returned no hidden states for the embedding")
            vectors.append(run.hidden)
            used += run.perf[0] if run.perf else len(text.split())
        return vectors, used

    def _on_batch_result(self, run, result, state) -> int:
        """n_batch > 1: `result` points to an array of n_batch results, one per slot; a slot whose
        token_id is negative has finished and carries no text."""
        try:
            if state in (abi.RKLLM_RUN_NORMAL, abi.RKLLM_RUN_WAITING) and result:
                for slot, decoder in enumerate(run.slot_decoders):
                    item = result[slot]
                    if item.token_id < 0 or not item.text:
                        continue
                    text = decoder.decode(item.text)
                    run.events.put((slot, text))
            elif state == abi.RKLLM_RUN_FINISH and result:
                perf = result[0].perf
                run.perf = (perf.prefill_tokens, perf.prefill_time_ms, perf.generate_tokens,
                            perf.generate_time_ms)
            elif state == abi.RKLLM_RUN_ERROR:
                run.error = True
        except Exception:  # nothing may escape into the runtime's thread
            run.error = True
        return 0

    def generate_batch(self, batch):
        """Run up to n_batch requests in one forward pass; yield (request_id, event).

        Each request is sent whole (its earlier turns replayed as context, no KV-cache reuse);
        spare slots repeat the first prompt and their output is dropped. A cancelled request ends
        at once; the run is aborted when no request is left.
        """
        fam = self.rt.family
        n = self.slots
        self._clear()
        first_gen = batch[0][1]
        self._set_tools("\n\n".join(m.content for m in first_gen.messages or [] if m.role == "system"),
                        first_gen.tools)
        inputs = (fam.RKLLMInput * n)()
        keep = []
        for slot in range(n):
            gen = batch[min(slot, len(batch) - 1)][1]
            text, role = self._whole_prompt(gen)
            data = text.encode()
            keep.append(data)
            inputs[slot].role = role.encode()
            inputs[slot].enable_thinking = gen.think not in (False, None) if gen.parse_thinking else False
            inputs[slot].input_type = abi.RKLLM_INPUT_PROMPT
            inputs[slot].prompt_input = data
        infer = fam.RKLLMInferParam()
        infer.mode = abi.RKLLM_INFER_GENERATE
        infer.keep_history = 0
        run_id, run, thread = self._launch(ctypes.cast(inputs, ctypes.POINTER(fam.RKLLMInput)), infer,
                                           keep=(inputs, keep), slots=n)
        counts = [0] * n
        ended = [False] * len(batch)
        reasons = [DoneReason.STOP] * len(batch)
        try:
            for item in self._poll(run):
                for index, (request_id, gen, cancel) in enumerate(batch):
                    if not ended[index] and cancel.is_set():
                        ended[index], reasons[index] = True, DoneReason.CANCELLED
                        yield request_id, Done(DoneReason.CANCELLED, 0, 0.0, counts[index], 0.0)
                if item is not None:
                    slot, text = item
                    if slot < len(batch) and not ended[slot]:
                        counts[slot] += 1
                        yield batch[slot][0], Token(text)
                        limit = batch[slot][1].options.num_predict
                        if limit > 0 and counts[slot] >= limit:
                            ended[slot], reasons[slot] = True, DoneReason.LENGTH
                if all(ended):
                    self.rt.rkllm_abort(self.handle)
        finally:
            self._join(run_id, thread)
        if run.error:
            raise BackendFailed("the NPU runtime reported an error during generation")
        prefill, prefill_ms, _, generate_ms = run.perf or (0, 0.0, 0, 0.0)
        for index, (request_id, gen, _) in enumerate(batch):
            if reasons[index] is DoneReason.CANCELLED:
                continue
            yield request_id, Done(reasons[index], prefill // n, prefill_ms, counts[index], generate_ms)

    def _whole_prompt(self, gen) -> tuple[str, str]:
        """The request as one self-contained prompt (for batch slots, which keep no history)."""
        if gen.prompt is not None:
            return gen.prompt, "user"
        if self.template is not None:
            try:
                return self.template.render(list(gen.messages), add_generation_prompt=True,
                                            **({"tools": gen.tools} if gen.tools else {})), "user"
            except TemplateRenderError as exc:
                raise BadRequest(f"chat template failed: {exc}") from None
        return _replay([m for m in gen.messages if m.role != "system"])

    def _launch(self, inputs, infer, keep, slots: int = 0):
        """Start rkllm_run on a run thread of its own; `keep` holds the buffers the runtime reads.
        With `slots`, the run is a batch and the callback receives an array of results."""
        run_id = next(self._ids)
        run = self._runs[run_id] = _Run()
        if slots:
            run.slot_decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(slots)]

        def target():
            try:
                if self.rt.rkllm_run(self.handle, inputs, ctypes.byref(infer), run_id) != 0:
                    run.error = True
            finally:
                run.events.put(_END)

        thread = threading.Thread(target=target, name="rkllm_run", daemon=True)
        thread.keep = (inputs, infer, keep)
        thread.start()
        return run_id, run, thread

    @staticmethod
    def _poll(run):
        """The run's events as they come, and None every 50 ms so callers can check cancellation."""
        while True:
            try:
                item = run.events.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is _END:
                return
            yield item

    def _join(self, run_id: int, thread) -> None:
        if thread.is_alive():  # never leave rkllm_run running behind us
            self.rt.rkllm_abort(self.handle)
            thread.join()
        self._runs.pop(run_id, None)

    def _prepare(self, gen) -> tuple[str, str, bool]:
        """(prompt text, role, keep_history) for this request.

        With the model's built-in template, a request that extends the conversation already in
        the KV cache sends only its new message (keep_history=1), so a second turn prefills only
        the new tokens; anything else clears the cache first.
        """
        if gen.prompt is not None:
            self._clear()
            return gen.prompt, "user", False
        messages = list(gen.messages)
        if self.template is not None:
            self._clear()
            try:
                return self.template.render(messages, add_generation_prompt=True,
                                            **({"tools": gen.tools} if gen.tools else {})), "user", False
            except TemplateRenderError as exc:
                raise BadRequest(f"chat template failed: {exc}") from None
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns = [m for m in messages if m.role != "system"]
        if not turns:
            raise BadRequest("nothing to answer: the conversation has no user message")
        self._set_tools(system, gen.tools)
        system_in_template = not gen.tools and self._set_system(system)
        key = _turn_keys(turns[:-1])
        last = turns[-1]
        if key and key == self._history:
            return last.content, "tool" if last.role == "tool" else "user", True
        self._clear()
        text, role = _replay(turns)  # a conversation the cache never saw: earlier turns as context
        if system and not gen.tools and not system_in_template:
            text = f"{system}\n\n{text}"
        return text, role, True

    def _set_tools(self, system: str, tools: list) -> None:
        tools_json = json.dumps(tools) if tools else None
        if tools_json != self._tools_json:
            # Tool definitions and the system prompt that goes with them; "tool_response" is the
            # tag the official servers use to mark tool results.
            self.rt.rkllm_set_function_tools(self.handle, system.encode(),
                                             (tools_json or "[]").encode(), b"tool_response")
            self._tools_json = tools_json
            self._clear()

    def _set_system(self, system: str) -> bool:
        """Put the system prompt into the runtime's template when the Modelfile describes the
        template's pieces (rkllm.system_template with {system}, prompt_prefix, prompt_postfix).
        Returns False when it cannot (the caller then puts it in front of the message)."""
        rk = self.spec.modelfile.rkllm
        if not system or "prompt_prefix" not in rk or "system_template" not in rk:
            return False
        if system != self._system:
            self.rt.rkllm_set_chat_template(self.handle, rk["system_template"].replace("{system}", system).encode(),
                                            rk["prompt_prefix"].encode(), rk.get("prompt_postfix", "").encode())
            self._system = system
            self._clear()
        return True

    def _remember(self, gen, _answer: str, keep_history: bool) -> None:
        if not keep_history or gen.messages is None:
            return
        turns = [m for m in gen.messages if m.role != "system"]
        self._history = _turn_keys(turns) + [("assistant", "")]

    def _forget(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._cache_used:
            # int rkllm_clear_kv_cache(handle, keep_system_prompt, NULL, NULL)
            self.rt.rkllm_clear_kv_cache(self.handle, 1, None, None)
            self._cache_used = False
        self._history = []

    def _kv_size(self) -> int:
        sizes = (ctypes.c_int * 8)()
        if self.rt.rkllm_get_kv_cache_size(self.handle, sizes) != 0:
            return 0
        return int(sizes[0])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.rt.rkllm_destroy(self.handle)


def _check_target(spec, machine: str) -> None:
    """Refuse an .rkllm built for another NPU: a model converted for RK3576 does not run on an
    RK3588 (and the reverse). The target comes from the Modelfile source's platform, else from
    the file's name (rkllm-toolkit builds carry it there by convention)."""
    if machine not in NPU_ENGINE_PLATFORMS:
        return
    source = spec.modelfile.source
    target = source.get("platform", "")
    if target not in NPU_ENGINE_PLATFORMS:
        name = (source.get("file") or source.get("url") or source.get("path") or "").lower()
        target = next((p for p in NPU_ENGINE_PLATFORMS if p in name.rsplit("/", 1)[-1]), "")
    if target and target != machine:
        raise LoadFailed(f"{spec.name.display()} was converted for {target.upper()}, and this board "
                         f"is {machine.upper()}: pull the {machine} build instead (a Modelfile "
                         f"source for {machine}, or hf.co/OWNER/REPO with its {machine} file)")


def _replay(turns) -> tuple[str, str]:
    """(prompt, role) for the last turn with the earlier ones in front as plain context: the
    built-in template cannot be given earlier assistant turns any other way."""
    if not turns:
        return "", "user"
    earlier = "".join(f"{m.role.capitalize()}: {m.content}\n" for m in turns[:-1])
    text = turns[-1].content
    if earlier:
        text = f"Earlier in this conversation:\n{earlier}\n{text}"
    return text, "tool" if turns[-1].role == "tool" else "user"


def _turn_keys(turns) -> list:
    """What identifies a conversation in the KV cache: user and tool turns by content, assistant
    turns by position only (clients send answers back post-processed: reasoning stripped, tool
    calls structured; the cache holds the runtime's own version anyway)."""
    return [(m.role, "" if m.role == "assistant" else m.content) for m in turns]
