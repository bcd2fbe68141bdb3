"""ctypes layouts of the RKLLM runtime's public structs, per ABI family.

Supported families (see docs/npu.md and the fact sheet's release map):
  * "1.2" — runtime 1.2.1, 1.2.2, 1.2.3 (one ABI): int-returning result callback passed directly
    to rkllm_init; RKLLMInput starts with role + enable_thinking; sampling fixed at init.
  * "1.3" — runtime 1.3.0: rkllm_init takes an RKLLMCallback struct; RKLLMParam loses the img_*
    strings and gains ignore_eos_token; RKLLMInferParam gains sampling_params and max_new_tokens;
    multimodal input splits into image/video sub-structs.
  * "1.3.1" — runtime 1.3.1: as 1.3.0, but an `audio` member closes RKLLMMultiModalInput, so
    RKLLMInput grows from 160 to 208 bytes (the stride of n_batch input arrays).
Older runtimes (1.0.x, 1.1.x, 1.2.0, 1.2.1b1) are refused: their layouts differ incompatibly.

Written from the field tables (no Rockchip header is copied). `family("1.3").RKLLMParam` etc.
give the classes; tests compare every size and offset with the measured layouts file.
"""

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_bool,
    c_char_p,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from functools import cache
from typing import Any

FAMILIES = ("1.2", "1.3", "1.3.1")

# enum LLMCallState (1.2.0+)
RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING, RKLLM_RUN_FINISH, RKLLM_RUN_ERROR = 0, 1, 2, 3
# enum RKLLMInputType
RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL = 0, 1, 2, 3
# enum RKLLMInferMode
RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_INFER_GET_LOGITS = 0, 1, 2

LLMHandle = c_void_p


@dataclass(frozen=True)
class Family:
    """The struct classes and callback types of one ABI family (C names as attributes)."""

    name: str
    structs: dict[str, Any]
    callback_struct: bool
    """rkllm_init takes an RKLLMCallback struct and sampling is per run (1.3.x)."""
    # ctypes types made at run time for the family: Any, as mypy cannot follow them.
    LLMResultCallback: Any
    LLMTokenizerCallback: Any
    LLMGetEmbedCallback: Any

    def __getattr__(self, item: str) -> Any:
        try:
            return self.structs[item]
        except KeyError:
            raise AttributeError(f"ABI family {self.name} has no {item}") from None


@cache
def family(name: str) -> Family:
    """The layouts of ABI family "1.2", "1.3" or "1.3.1"."""
    if name not in FAMILIES:
        raise ValueError(f"unsupported RKLLM ABI family {name!r}; supported: {', '.join(FAMILIES)}")
    v13 = name in ("1.3", "1.3.1")
    audio = name == "1.3.1"

    class RKLLMExtendParam(Structure):
        _fields_ = [("base_domain_id", c_int32), ("embed_flash", c_int8),
                    ("enabled_cpus_num", c_int8), ("enabled_cpus_mask", c_uint32),
                    ("n_batch", c_uint8), ("use_cross_attn", c_int8), ("reserved", c_uint8 * 104)]

    param_fields: list[Any] = [("model_path", c_char_p), ("max_context_len", c_int32),
                    ("max_new_tokens", c_int32), ("top_k", c_int32), ("n_keep", c_int32),
                    ("top_p", c_float), ("temperature", c_float), ("repeat_penalty", c_float),
                    ("frequency_penalty", c_float), ("presence_penalty", c_float),
                    ("mirostat", c_int32), ("mirostat_tau", c_float), ("mirostat_eta", c_float),
                    ("skip_special_token", c_bool)]
    if v13:
        param_fields += [("ignore_eos_token", c_bool), ("is_async", c_bool)]
    else:
        param_fields += [("is_async", c_bool), ("img_start", c_char_p), ("img_end", c_char_p),
                         ("img_content", c_char_p)]
    param_fields += [("extend_param", RKLLMExtendParam)]

    class RKLLMParam(Structure):
        _fields_ = param_fields

    class RKLLMLoraAdapter(Structure):
        _fields_ = [("lora_adapter_path", c_char_p), ("lora_adapter_name", c_char_p),
                    ("scale", c_float)]

    class RKLLMEmbedInput(Structure):
        _fields_ = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]

    class RKLLMTokenInput(Structure):
        _fields_ = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]

    structs: dict[str, Any] = {}
    if v13:
        class RKLLMImageInput(Structure):  # unnamed in C: RKLLMMultiModalInput.image
            _fields_ = [("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t),
                        ("n_image", c_size_t), ("image_start", c_char_p), ("image_end", c_char_p),
                        ("image_content", c_char_p), ("image_width", c_size_t),
                        ("image_height", c_size_t)]

        class RKLLMVideoInput(Structure):  # unnamed in C: RKLLMMultiModalInput.video
            _fields_ = [("video_embed", POINTER(c_float)), ("n_frame_tokens", c_size_t),
                        ("n_frame_per_video", c_size_t), ("n_video", c_size_t),
                        ("video_start", c_char_p), ("video_end", c_char_p),
                        ("video_content", c_char_p), ("frame_width", c_size_t),
                        ("frame_height", c_size_t)]

        class RKLLMAudioInput(Structure):  # unnamed in C: RKLLMMultiModalInput.audio (1.3.1)
            _fields_ = [("audio_embed", POINTER(c_float)), ("n_audio_tokens", c_size_t),
                        ("n_audio", c_size_t), ("audio_start", c_char_p), ("audio_end", c_char_p),
                        ("audio_content", c_char_p)]

        media = [("image", RKLLMImageInput), ("video", RKLLMVideoInput)]
        if audio:
            media.append(("audio", RKLLMAudioInput))

        class RKLLMMultiModalInput(Structure):
            _fields_ = [("prompt", c_char_p), *media]
    else:
        class RKLLMMultiModalInput(Structure):  # type: ignore[no-redef]  # the 1.2 layout
            _fields_ = [("prompt", c_char_p), ("image_embed", POINTER(c_float)),
                        ("n_image_tokens", c_size_t), ("n_image", c_size_t),
                        ("image_width", c_size_t), ("image_height", c_size_t)]
        structs["RKLLMMultiModelInput"] = RKLLMMultiModalInput  # its name before 1.2.3

    class _InputUnion(Union):
        _fields_ = [("prompt_input", c_char_p), ("embed_input", RKLLMEmbedInput),
                    ("token_input", RKLLMTokenInput), ("multimodal_input", RKLLMMultiModalInput)]

    class RKLLMInput(Structure):
        _anonymous_ = ("_u",)
        _fields_ = [("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int),
                    ("_u", _InputUnion)]

    class RKLLMLoraParam(Structure):
        _fields_ = [("lora_adapter_name", c_char_p)]

    class RKLLMPromptCacheParam(Structure):
        _fields_ = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]

    class RKLLMCrossAttnParam(Structure):
        _fields_ = [("encoder_k_cache", POINTER(c_float)), ("encoder_v_cache", POINTER(c_float)),
                    ("encoder_mask", POINTER(c_float)), ("encoder_pos", POINTER(c_int32)),
                    ("num_tokens", c_int)]

    class RKLLMSamplingParam(Structure):  # 1.3.0 only
        _fields_ = [("top_k", c_int32), ("top_p", c_float), ("temperature", c_float),
                    ("repeat_penalty", c_float), ("frequency_penalty", c_float),
                    ("presence_penalty", c_float), ("mirostat", c_int32),
                    ("mirostat_tau", c_float), ("mirostat_eta", c_float)]

    infer_fields: list[Any] = [("mode", c_int), ("lora_params", POINTER(RKLLMLoraParam)),
                    ("prompt_cache_params", POINTER(RKLLMPromptCacheParam))]
    if v13:
        infer_fields += [("sampling_params", POINTER(RKLLMSamplingParam)), ("keep_history", c_int),
                         ("max_new_tokens", c_int32)]
    else:
        infer_fields += [("keep_history", c_int)]

    class RKLLMInferParam(Structure):
        _fields_ = infer_fields

    class RKLLMResultLastHiddenLayer(Structure):
        _fields_ = [("hidden_states", POINTER(c_float)), ("embd_size", c_int), ("num_tokens", c_int)]

    class RKLLMResultLogits(Structure):
        _fields_ = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]

    class RKLLMPerfStat(Structure):
        _fields_ = [("prefill_time_ms", c_float), ("prefill_tokens", c_int),
                    ("generate_time_ms", c_float), ("generate_tokens", c_int),
                    ("memory_usage_mb", c_float)]

    class RKLLMResult(Structure):
        _fields_ = [("text", c_char_p), ("token_id", c_int32),
                    ("last_hidden_layer", RKLLMResultLastHiddenLayer),
                    ("logits", RKLLMResultLogits), ("perf", RKLLMPerfStat)]

    # typedef int (*LLMResultCallback)(RKLLMResult* result, void* userdata, LLMCallState state);
    # int, not void: a void callback leaves garbage in the return register, read as "pause".
    result_cb = CFUNCTYPE(c_int, POINTER(RKLLMResult), c_void_p, c_int)
    tokenizer_cb: Any = None
    embed_cb: Any = None
    structs.update(RKLLMExtendParam=RKLLMExtendParam, RKLLMParam=RKLLMParam,
                   RKLLMLoraAdapter=RKLLMLoraAdapter, RKLLMEmbedInput=RKLLMEmbedInput,
                   RKLLMTokenInput=RKLLMTokenInput, RKLLMMultiModalInput=RKLLMMultiModalInput,
                   RKLLMInput=RKLLMInput, RKLLMLoraParam=RKLLMLoraParam,
                   RKLLMPromptCacheParam=RKLLMPromptCacheParam,
                   RKLLMCrossAttnParam=RKLLMCrossAttnParam, RKLLMInferParam=RKLLMInferParam,
                   RKLLMResultLastHiddenLayer=RKLLMResultLastHiddenLayer,
                   RKLLMResultLogits=RKLLMResultLogits, RKLLMPerfStat=RKLLMPerfStat,
                   RKLLMResult=RKLLMResult)
    if v13:
        # typedef int (*LLMTokenizerCallback)(void* userdata, const char* text, int32_t text_len,
        #                                     int32_t* tokens, int32_t n_tokens_max);
        tokenizer_cb = CFUNCTYPE(c_int, c_void_p, c_char_p, c_int32, POINTER(c_int32), c_int32)
        # typedef int (*LLMGetEmbedCallback)(void* userdata, int32_t* tokens, uint64_t num_tokens,
        #                                    void* embed, uint64_t len);
        embed_cb = CFUNCTYPE(c_int, c_void_p, POINTER(c_int32), c_uint64, c_void_p, c_uint64)

        class RKLLMCallback(Structure):
            _fields_ = [("result_callback", result_cb), ("result_userdata", c_void_p),
                        ("tokenizer_callback", tokenizer_cb), ("tokenizer_userdata", c_void_p),
                        ("embed_callback", embed_cb), ("embed_userdata", c_void_p)]

        structs.update(RKLLMSamplingParam=RKLLMSamplingParam, RKLLMCallback=RKLLMCallback)
    return Family(name, structs, v13, result_cb, tokenizer_cb, embed_cb)


def layout(cls: Any) -> dict[str, tuple[int, int]]:
    """{field: (offset, size)} of a ctypes struct, nested members as `parent.child`, anonymous
    union members at the top level, as the layouts file writes them."""
    out = {}
    for name, ctype, *_ in cls._fields_:
        descriptor = getattr(cls, name)
        if name in getattr(cls, "_anonymous_", ()):
            for sub, (offset, size) in layout(ctype).items():
                out[sub] = (descriptor.offset + offset, size)
            continue
        out[name] = (descriptor.offset, descriptor.size)
        if issubclass(ctype, Structure) and name in ("image", "video", "audio"):
            for sub, (offset, size) in layout(ctype).items():
                out[f"{name}.{sub}"] = (descriptor.offset + offset, size)
    return out


def sizeof(cls: Any) -> int:
    return ctypes.sizeof(cls)


def alignment(cls: Any) -> int:
    return ctypes.alignment(cls)
