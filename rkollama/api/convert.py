"""Ollama requests → core `Generation`, and core events → Ollama response objects."""

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol, cast

from rkollama.api import types as wire
from rkollama.api.fields import Fields
from rkollama.core.images import declared_matches, is_base64, split_data_uri
from rkollama.core.request import (
    THINK_LEVELS,
    Request,
    check_top_logprobs,
    normalise_tool_calls,
    validate_tools,
)
from rkollama.core.types import Done, DoneReason, Message, TokenLogprob, ToolCall
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest, ModelNotFound, RkollamaError


def _common(body: dict[str, Any], type_name: str, no_model: RkollamaError) -> tuple[Fields, Request]:
    """The fields chat and generate share, checked in Ollama's order: field types first, then
    a missing model (`no_model`: the two handlers answer it differently)."""
    f = Fields(body, type_name)
    model = f.get("model", str, "")
    options = f.get("options", dict)
    check_top_logprobs(f.raw("top_logprobs"))
    keep_alive = f.raw("keep_alive")
    if keep_alive is not None and (isinstance(keep_alive, bool)
                                   or not isinstance(keep_alive, (int, float, str))):
        raise BadRequest(f"json: cannot unmarshal {type(keep_alive).__name__} into Go struct field "
                         f"{type_name}.keep_alive of type Duration")
    req = Request(model=model, stream=f.get("stream", bool, True), options=options,
                  keep_alive=keep_alive_seconds(keep_alive), format=_format(f.raw("format")),
                  think=_think(f.raw("think")), tools=validate_tools(f.get("tools", list, [])),
                  truncate=f.get("truncate", bool, True), shift=f.get("shift", bool, True),
                  debug_render_only=f.get("_debug_render_only", bool, False),
                  logprobs=f.get("logprobs", bool, False), top_logprobs=f.get("top_logprobs", int, 0))
    if not model:
        raise no_model
    return f, req


def parse_chat(body: dict[str, Any]) -> Request:
    f, req = _common(body, "ChatRequest", BadRequest("model is required"))
    req.messages = [_message(m, i) for i, m in enumerate(f.get("messages", list, []))]
    return req


def parse_generate(body: dict[str, Any]) -> Request:
    # Ollama's generate handler parses the empty name and answers 404 (its chat handler: 400).
    f, req = _common(body, "GenerateRequest", ModelNotFound("model '' not found"))
    req.prompt = f.get("prompt", str, "")
    req.system = f.get("system", str)
    req.raw = f.get("raw", bool, False)
    req.suffix = f.get("suffix", str, "")
    req.images = [_image(i) for i in f.get("images", list, [])]
    context = f.get("context", list, [])
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in context):
        raise BadRequest("json: cannot unmarshal context: expected an array of token ids")
    req.context = context
    if req.raw and (f.has("template") or f.has("system") or f.has("context")):
        raise BadRequest("raw mode does not support template, system, or context")
    return req


def _message(data: object, index: int) -> Message:
    if not isinstance(data, dict):
        raise BadRequest(f"json: cannot unmarshal {type(data).__name__} into Go struct field "
                         f"ChatRequest.messages of type api.Message")
    f = Fields(data, "Message")
    role = f.get("role", str, "").lower()
    if not role:
        raise BadRequest(f"messages[{index}]: role is required")
    tool_calls = normalise_tool_calls(f.get("tool_calls", list, []))
    return Message(role=role, content=f.get("content", str, ""),
                   images=[_image(i) for i in f.get("images", list, [])],
                   tool_calls=tool_calls, tool_name=f.get("tool_name", str, ""),
                   thinking=f.get("thinking", str, ""))


def _image(value: object) -> str:
    """Accept plain base64 (Ollama) or a data URI; return plain base64."""
    if not isinstance(value, str):
        raise BadRequest("json: cannot unmarshal images: expected base64 strings")
    header, text = split_data_uri(value)
    if not is_base64(text):
        raise BadRequest("illegal base64 data in images")
    media_type = header.removeprefix("data:").partition(";")[0]
    if not declared_matches(media_type, text):
        raise BadRequest(f"invalid image: the data is not of its type {media_type}")
    return text


def _format(value: object) -> str | dict[str, Any] | None:
    if value in (None, ""):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise BadRequest(f'invalid format: {value!r}; expected "json" or a valid JSON Schema object')


def _think(value: object) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    raise BadRequest(f"invalid think value: {value!r} (must be true, false, or one of "
                     f"{', '.join(THINK_LEVELS)})")


# -- responses ---------------------------------------------------------------------------------
def created_at() -> str:
    """UTC RFC 3339 with fractional seconds and `Z`, as Ollama writes `created_at`."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp(value: datetime | None) -> str:
    """Local-offset RFC 3339 (modified_at, expires_at); None → Go's zero time."""
    if value is None:
        return "0001-01-01T00:00:00Z"
    return value.isoformat()


def metrics(done: Done, load_s: float, total_s: float) -> wire.Metrics:
    """Final-object metrics in integer nanoseconds; zero values omitted (Go omitempty)."""
    values = {
        "total_duration": int(total_s * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": int(done.prompt_tokens),
        "prompt_eval_duration": int(done.prompt_ms * 1e6),
        "eval_count": int(done.eval_tokens),
        "eval_duration": int(done.eval_ms * 1e6),
    }
    return cast(wire.Metrics, {k: v for k, v in values.items() if v > 0})  # the keys above are its fields


def logprob(scored: TokenLogprob, always_top: bool = False) -> wire.Logprob:
    """A token's log-probability in Ollama's shape (`top_logprobs` left out when empty); in
    OpenAI's with `always_top` (an empty list is still written)."""
    out: wire.Logprob = {"token": scored.token, "logprob": scored.logprob, "bytes": list(scored.bytes)}
    if scored.top or always_top:
        out["top_logprobs"] = [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)}
                               for t in scored.top]
    return out


def done_reason(reason: DoneReason) -> str:
    """Ollama keeps `stop` after tool calls (OpenAI says `tool_calls`)."""
    return "stop" if reason is DoneReason.TOOL_CALLS else reason.value


def tool_calls(calls: Iterable[ToolCall]) -> list[wire.ToolCall]:
    """Native tool calls: arguments as an object, `index` inside `function`."""
    return [{"id": c.id, "function": {"index": c.index, "name": c.name, "arguments": c.arguments}}
            for c in calls]


Reply = wire.ChatResponse | wire.GenerateResponse
"""One object of a chat or generate answer."""


class ChunkBuilder(Protocol):
    """`chat_chunk` or `generate_chunk`: one answer object, the text in the endpoint's field."""

    def __call__(self, model: str, text: str = "", thinking: str = "", done: bool = False,
                 calls: Iterable[ToolCall] = ()) -> Reply: ...


def chat_chunk(model: str, text: str = "", thinking: str = "", done: bool = False,
               calls: Iterable[ToolCall] = ()) -> wire.ChatResponse:
    message: wire.Message = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = tool_calls(calls)
    return {"model": model, "created_at": created_at(), "message": message, "done": done}


def generate_chunk(model: str, text: str = "", thinking: str = "", done: bool = False,
                   calls: Iterable[ToolCall] = ()) -> wire.GenerateResponse:
    """`calls` is accepted for the same signature as chat_chunk; /api/generate has no tool calls."""
    if thinking:
        return {"model": model, "created_at": created_at(), "response": text, "thinking": thinking,
                "done": done}
    return {"model": model, "created_at": created_at(), "response": text, "done": done}
