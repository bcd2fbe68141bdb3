"""Loading an .rkllm model: what rkllm_init gets (the runtime's defaults, the Modelfile's
parameters, its rkllm section, this board's CPU mask), the checks before it, and the model's
own tokenizer and template."""

import ctypes
import logging
from typing import Any

from rkollama.backends.native_output import CapturedOutput
from rkollama.backends.rkllm import abi, runtime_words, vision_input
from rkollama.backends.rkllm.runs import RunTable
from rkollama.backends.rkllm.runtime import Runtime
from rkollama.backends.rkllm.tokenizer import HFTokenizer
from rkollama.config import Settings
from rkollama.core.options import DEFAULTS
from rkollama.core.prompt import ChatTemplate
from rkollama.core.types import LoadOptions
from rkollama.errors import LoadFailed
from rkollama.models.rkllm_section import RKLLMSection
from rkollama.models.store import ModelSpec
from rkollama.platform import NPU_ENGINE_PLATFORMS, driver_problem, driver_warning, platform_defaults

log = logging.getLogger("rkollama.rkllm")


def check_target(spec: ModelSpec, machine: str) -> None:
    """Refuse an .rkllm built for another NPU: a model converted for RK3576 does not run on an
    RK3588 (and the reverse). The target comes from the Modelfile source's platform, else from
    the file's name (rkllm-toolkit builds carry it there by convention)."""
    if machine not in NPU_ENGINE_PLATFORMS:
        return
    source = spec.modelfile.source
    target = source.platform
    if target not in NPU_ENGINE_PLATFORMS:
        name = (source.file or source.url or source.path).lower()
        target = next((p for p in NPU_ENGINE_PLATFORMS if p in name.rsplit("/", 1)[-1]), "")
    if target and target != machine:
        raise LoadFailed(f"{spec.name.display()} was converted for {target.upper()}, and this board "
                         f"is {machine.upper()}: pull the {machine} build instead (a Modelfile "
                         f"source for {machine}, or hf.co/OWNER/REPO with its {machine} file)")


def init_captured(rt: Runtime, param: Any, third: Any) -> tuple[abi.LLMHandle, int, list[str]]:
    """rkllm_init with the runtime's printed lines captured (and logged at their level)."""
    handle = abi.LLMHandle()
    with CapturedOutput() as out:
        rc = rt.rkllm_init(ctypes.byref(handle), ctypes.byref(param), third)
    runtime_words.log_lines(out.lines)
    return handle, rc, out.lines


def open_tokenizer(spec: ModelSpec) -> HFTokenizer | None:
    """The model's tokenizer from the store, or None (the text path) when it has none or it
    cannot be read (said in the log: the model still answers, through the runtime's template)."""
    if spec.tokenizer_path is None:
        return None
    try:
        return HFTokenizer.open(spec.tokenizer_path, spec.tokenizer_config_path)
    except LoadFailed as exc:
        log.warning("%s: %s; prompts go to the runtime as text", spec.name.display(), exc.message)
        return None


def compile_template(spec: ModelSpec) -> ChatTemplate | None:
    """The Modelfile's Jinja template, or None for the runtime's built-in one."""
    source = spec.modelfile.template
    if not source or source == "builtin":
        return None
    try:
        return ChatTemplate(source)
    except Exception as exc:  # jinja2 syntax errors in a Modelfile template
        raise LoadFailed(f"invalid chat template for {spec.name.display()}: {exc}") from None


def init_param(rt: Runtime, spec: ModelSpec, rk: RKLLMSection, opts: LoadOptions, settings: Settings,
                path: bytes, machine: str) -> tuple[Any, int, int]:
    """(RKLLMParam, context length in tokens, n_batch) for rkllm_init: the runtime's defaults,
    then the Modelfile's `parameters`, then its `rkllm` section (which wins). Sampling set here is
    what 1.2.x runtimes use for every run; 1.3 takes it per run as well."""
    param = rt.default_param()
    param.model_path = path
    ctx = opts.num_ctx or rk.max_context_len or settings.context_length
    param.max_context_len = ctx
    param.max_new_tokens = ctx if rk.max_new_tokens is None else rk.max_new_tokens
    param.n_keep = rk.n_keep
    sampling = {**DEFAULTS, **spec.modelfile.parameters}
    for name, kind in (("top_k", int), ("top_p", float), ("temperature", float), ("repeat_penalty", float),
                       ("frequency_penalty", float), ("presence_penalty", float)):
        own = getattr(rk, name)
        setattr(param, name, kind(sampling[name] if own is None else own))
    param.mirostat, param.mirostat_tau, param.mirostat_eta = rk.mirostat, rk.mirostat_tau, rk.mirostat_eta
    param.skip_special_token = rk.skip_special_token
    if "img_start" in {name for name, *_ in type(param)._fields_}:  # 1.2.x: a vision model's tags
        param.img_start, param.img_end, param.img_content = vision_input.tags(rk)
    param.is_async = False
    if rt.family.callback_struct:
        param.ignore_eos_token = rk.ignore_eos_token
    ext = param.extend_param
    ext.base_domain_id = (opts.npu_domain or 0) if rk.base_domain_id is None else rk.base_domain_id
    ext.embed_flash = 1 if rk.embed_flash else 0
    mask = rk.enabled_cpus_mask
    # The model's platform, else this board's (a model made with `create` names none): never the
    # little cores' mask on a board with big ones.
    target = spec.modelfile.source.platform
    target = target if target in NPU_ENGINE_PLATFORMS else machine
    ext.enabled_cpus_mask = platform_defaults(target)["cpus_mask"] if mask is None else mask
    ext.enabled_cpus_num = rk.enabled_cpus_num or bin(ext.enabled_cpus_mask).count("1")
    n_batch = rk.n_batch
    if n_batch > 1 and not rt.identity.version:
        raise LoadFailed(
            f"n_batch {n_batch} needs the exact runtime version (1.3.0 and 1.3.1 lay out "
            f"RKLLMInput arrays differently) and {rt.identity.path} could not be identified "
            "beyond its ABI family: install an official build (recognised by its checksum) "
            "or set rkllm.n_batch to 1 in the Modelfile")
    ext.n_batch = n_batch
    ext.use_cross_attn = 0
    return param, ctx, n_batch


def check_driver() -> None:
    """Refuse a known-broken NPU driver; warn about an old one (RKOLLAMA_NPU_DRIVER_CHECK)."""
    problem = driver_problem()
    if problem is not None:
        raise LoadFailed(f"{problem}; `rkollama doctor` shows the details")
    warning = driver_warning()
    if warning is not None:
        log.warning("%s", warning)


def callbacks(fam: Any, runs: RunTable) -> tuple[Any, list[Any]]:
    """rkllm_init's third argument for this ABI family (the result callback itself on 1.2.x, a
    pointer to an RKLLMCallback struct holding it on 1.3.x) and the ctypes objects that must
    outlive the handle."""
    result_cb = fam.LLMResultCallback(runs.on_result)
    if not fam.callback_struct:
        return result_cb, [result_cb]
    struct = fam.RKLLMCallback()
    struct.result_callback = result_cb
    struct.result_userdata = None
    return ctypes.byref(struct), [result_cb, struct]
