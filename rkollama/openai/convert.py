"""OpenAI requests → core `Request`, and core events → OpenAI objects (chat, completions,
models, embeddings). Shapes and defaults follow Ollama's OpenAI layer."""

import base64
import json
import random
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rkollama.api.convert import logprob
from rkollama.api.fields import Fields
from rkollama.core.collect import Completion
from rkollama.core.goquote import go_quote
from rkollama.core.images import declared_matches, is_base64
from rkollama.core.request import Request, check_top_logprobs, normalise_tool_calls, validate_tools
from rkollama.core.types import Done, DoneReason, JSONObject, Message, TokenLogprob, ToolCall
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest
from rkollama.models.store import ModelSpec
from rkollama.openai import types as wire

FINGERPRINT = "fp_ollama"
EFFORTS: dict[str, bool | str] = {"minimal": "low", "low": "low", "medium": "medium", "high": "high",
                                  "xhigh": "max", "ultra": "max", "max": "max", "none": False}
"""OpenAI reasoning efforts and Ollama's think values for them (Ollama clamps the tiers past
its own: minimal to low, xhigh and ultra to max)."""


def error_body(message: str, status: int) -> wire.ErrorBody:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            422: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def at_least_one(name: str, value: int) -> int:
    """A token limit as OpenAI bounds it: 0 or less would mean no limit at all (a request that
    decides its own unbounded cost), so it is OpenAI's 400."""
    if value < 1:
        raise BadRequest(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                         f"but got {value} instead.")
    return value


def _go_type(value: object) -> str:
    """How Go's %T names a decoded JSON value, for Ollama's error texts."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def _sampling(f: Fields, strict_stop: bool = False) -> dict[str, Any]:
    """OpenAI sampling fields as Ollama options; temperature and top_p default to 1.0."""
    options = {"temperature": f.get("temperature", (int, float), 1.0),
               "top_p": f.get("top_p", (int, float), 1.0) or 1.0}
    for name in ("seed", "frequency_penalty", "presence_penalty"):
        if f.has(name):
            options[name] = f.get(name, (int, float))
    for name in ("max_completion_tokens", "max_tokens"):
        limit = f.get(name, int)
        if limit is not None:
            options["num_predict"] = at_least_one(name, limit)
            break
    stop = f.raw("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        # As Ollama: chat skips entries that are not strings, completions refuses them.
        bad = next((item for item in stop if not isinstance(item, str)), "")
        if strict_stop and not isinstance(bad, str):
            raise BadRequest(f"invalid type for 'stop' field: {_go_type(bad)}")
        options["stop"] = [item for item in stop if isinstance(item, str)]
    return options


def _common(body: JSONObject, type_name: str) -> tuple[Fields, Request]:
    f = Fields(body, type_name)
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    check_top_logprobs(f.raw("top_logprobs"))
    stream_options = f.get("stream_options", dict, {})
    req = Request(model=model, stream=f.get("stream", bool, False),
                  options=_sampling(f, strict_stop=type_name == "CompletionRequest"),
                  keep_alive=keep_alive_seconds(f.raw("keep_alive")))
    req.include_usage = bool(stream_options.get("include_usage"))
    wanted = f.raw("logprobs")
    if isinstance(wanted, int) and not isinstance(wanted, bool):  # /v1/completions' legacy count
        check_top_logprobs(wanted)
        req.logprobs, req.top_logprobs = wanted > 0, wanted  # Ollama: 0 asks for none
    else:
        req.logprobs = f.get("logprobs", bool, False)
        req.top_logprobs = f.get("top_logprobs", int, 0)
    return f, req


def from_chat_request(body: JSONObject) -> Request:
    f, req = _common(body, "ChatCompletionRequest")
    messages = f.get("messages", list)
    if not messages:
        raise BadRequest("[] is too short - 'messages'")
    clips: list[int] = []
    req.messages = _messages(messages, clips)
    req.audio = len(clips)
    req.format = _response_format(f.get("response_format", dict))
    req.think = _effort(f)
    tools = validate_tools(f.get("tools", list, []))
    req.tools, req.tool_choice = _tool_choice(f.raw("tool_choice"), tools)
    return req


def _tool_choice(choice: object, tools: list[JSONObject]) -> tuple[list[JSONObject], str | None]:
    """`none` hides the tools; `auto` (default) lets the model choose; `required` or a named
    function forces a call."""
    if choice in (None, "auto"):
        return tools, None
    if choice == "none":
        return [], None
    if choice == "required":
        return tools, "required"
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise BadRequest("invalid tool_choice: use none, auto, required or a function")
    if name not in {t["function"]["name"] for t in tools}:
        raise BadRequest(f"tool_choice names '{name}', which is not in tools")
    return tools, name


def from_completion_request(body: JSONObject) -> Request:
    f, req = _common(body, "CompletionRequest")
    prompt = f.raw("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest("invalid type for 'prompt': only a single string is supported")
    req.prompt = prompt
    req.suffix = f.get("suffix", str, "")
    return req


def _effort(f: Fields) -> bool | str | None:
    reasoning = f.get("reasoning", dict, {})
    effort = f.get("reasoning_effort", str) or reasoning.get("effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        allowed = ", ".join(f'"{e}"' for e in list(EFFORTS)[:-1])
        raise BadRequest(f"invalid reasoning value: {go_quote(effort)} (must be {allowed}, or "
                         f'"{list(EFFORTS)[-1]}")')
    return EFFORTS[effort]


def _response_format(value: Any) -> str | JSONObject | None:
    if not value or value.get("type") in (None, "text"):
        return None
    if value["type"] == "json_object":
        return "json"
    if value["type"] == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format json_schema needs json_schema.schema (an object)")
        return schema
    raise BadRequest(f"invalid response_format type: {value['type']!r}")


def _messages(items: list[Any], clips: list[int]) -> list[Message]:
    """OpenAI messages → core messages: parts merged, data-URI images kept, tool-call arguments
    parsed, tool results named after the call they answer; each sound's bytes (`input_audio`,
    checked, not kept: no model here hears) counted into `clips`."""
    names_by_id: dict[str, str] = {}
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"messages[{index}] must be an object")
        f = Fields(item, "Message")
        role = f.get("role", str, "")
        if not role:
            raise BadRequest(f"messages[{index}]: role is required")
        content, images = message_content(f.raw("content", ""), clips)
        message = Message(role=role.lower(), content=content, images=images,
                          thinking=f.get("reasoning", str, "") or f.get("reasoning_content", str, ""))
        message.tool_calls = normalise_tool_calls(f.get("tool_calls", list, []), json_arguments=True)
        for call in message.tool_calls:
            if call.get("id"):
                names_by_id[call["id"]] = call["function"]["name"]
        if message.role == "tool":
            message.tool_name = names_by_id.get(f.get("tool_call_id", str, ""), "") or f.get("name", str, "")
        out.append(message)
    return out


def message_content(value: object, clips: list[int] | None = None) -> tuple[str, list[str]]:
    """A message's text and base64 images from OpenAI content (a string or text/image_url
    parts), with Ollama's error texts; shared by chat completions and the Responses API. With
    `clips`, `input_audio` parts are taken too (checked as Ollama checks them, each one's size in
    bytes appended there); without, they are an invalid part."""
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        raise BadRequest(f"invalid message content type: {_go_type(value)}")
    texts, images = [], []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise BadRequest("invalid message format")
            images.append(_data_uri(url))
        elif kind == "input_audio" and clips is not None:
            clips.append(len(_audio(part.get("input_audio"))))
        else:
            raise BadRequest("invalid message format")  # Ollama's words for any other part
    return "\n".join(texts), images


def _audio(clip: object) -> bytes:
    """An `input_audio` part's sound, with Ollama's words for each fault."""
    if not isinstance(clip, dict):
        raise BadRequest("invalid input_audio format")
    data = clip.get("data")
    if not isinstance(data, str):
        raise BadRequest("invalid input_audio format: missing data")
    try:
        return base64.b64decode(data.replace("\r", "").replace("\n", ""), validate=True)  # as Go's decoder
    except ValueError as exc:
        raise BadRequest(f"invalid input_audio base64 data: {exc}") from None


IMAGE_URI_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp")) \
    + ("data:;base64,",)
"""The data URIs Ollama's OpenAI layer takes (a blank type too, as /api/chat takes bare base64)."""


def _data_uri(url: object) -> str:
    if not isinstance(url, str) or url.startswith(("http://", "https://")):
        raise BadRequest("image URLs are not currently supported, please use base64 encoded data instead")
    prefix = next((p for p in IMAGE_URI_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        raise BadRequest("invalid image input")  # gif, svg, any other type, not a data URI
    data = url[len(prefix):]
    if not is_base64(data) or not declared_matches(prefix[len("data:"):].partition(";")[0], data):
        raise BadRequest("invalid image input")  # a data URI whose type is not its content's too
    return data


# -- responses ---------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{random.randint(0, 998)}"


def finish_reason(reason: DoneReason) -> str:
    return {DoneReason.LENGTH: "length", DoneReason.TOOL_CALLS: "tool_calls"}.get(reason, "stop")


def usage(done: Done) -> wire.Usage:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.eval_tokens,
            "total_tokens": done.prompt_tokens + done.eval_tokens}


def tool_calls(calls: Iterable[ToolCall]) -> list[wire.ToolCall]:
    """OpenAI tool calls: arguments as a JSON string, `index` at the top level."""
    return [{"id": c.id, "index": c.index, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in calls]


def to_chat_completion(req: Request, completion: Completion, cid: str, created: int) -> wire.ChatCompletion:
    message: wire.ChatMessage = {"role": "assistant", "content": completion.content}
    if completion.thinking:
        message["reasoning"] = completion.thinking
    if completion.tool_calls:
        message["tool_calls"] = tool_calls(completion.tool_calls)
    return {"id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message,
                         "logprobs": logprobs(completion.logprobs) if req.logprobs else None,
                         "finish_reason": finish_reason(completion.done.reason)}],
            "usage": usage(completion.done)}


def chat_chunk(req: Request, cid: str, created: int, delta: wire.Delta, finish: str | None = None,
               scored: Sequence[TokenLogprob] = ()) -> wire.ChatCompletionChunk:
    choice: wire.ChunkChoice = {"index": 0, "delta": delta, "finish_reason": finish}
    if scored:
        choice["logprobs"] = logprobs(scored)
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT, "choices": [choice]}


def logprobs(scored: Sequence[TokenLogprob]) -> wire.ChatLogprobs:
    """OpenAI's `choices[].logprobs`: every token with its alternatives."""
    return {"content": [logprob(lp, always_top=True) for lp in scored], "refusal": None}


def usage_chunk(req: Request, cid: str, created: int, obj: str, done: Done) -> wire.ChatCompletionChunk:
    return {"id": cid, "object": obj, "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(done)}


def to_completion(req: Request, completion: Completion, cid: str, created: int) -> wire.Completion:
    choice: wire.CompletionChoice = {"text": completion.content, "index": 0,
              "finish_reason": finish_reason(completion.done.reason)}
    if req.logprobs:
        choice["logprobs"] = completion_logprobs(completion.answer_logprobs, 0)
    return {"id": cid, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT, "choices": [choice], "usage": usage(completion.done)}


def completion_chunk(req: Request, cid: str, created: int, text: str, finish: str | None = None,
                     scored: Sequence[TokenLogprob] = (), offset: int = 0) -> wire.Completion:
    choice: wire.CompletionChoice = {"text": text, "index": 0, "finish_reason": finish}
    if scored:
        choice["logprobs"] = completion_logprobs(scored, offset)
    return {"id": cid, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT, "choices": [choice]}


def completion_logprobs(scored: Sequence[TokenLogprob], offset: int) -> wire.CompletionLogprobs:
    """`/v1/completions` log-probabilities in both shapes a client may read: OpenAI's legacy
    columns (`tokens`, `token_logprobs`, `top_logprobs` as {token: logprob}, `text_offset` in
    characters from the start of the completion, `offset` being where this chunk starts) and
    Ollama's `content` list."""
    offsets = []
    for lp in scored:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in scored],
            "token_logprobs": [lp.logprob for lp in scored],
            "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in scored],
            "text_offset": offsets,
            "content": [logprob(lp, always_top=True) for lp in scored]}


def model_entry(spec: ModelSpec) -> wire.Model:
    return {"id": spec.name.display(), "object": "model",
            "created": int(spec.modified_at.timestamp()), "owned_by": spec.name.namespace}


def parse_embedding_request(body: JSONObject) -> tuple[str, list[str], str, int | None]:
    f = Fields(body, "EmbedRequest")
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    value = f.raw("input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = value
    else:
        raise BadRequest("invalid input")
    given = f.get("encoding_format", str, "") or "float"
    encoding = given.lower()
    if encoding not in ("float", "base64"):
        raise BadRequest(f"Invalid value for 'encoding_format' = {given}. "
                         "Supported values: ['float', 'base64'].")
    return model, texts, encoding, f.get("dimensions", int)


def to_embeddings(model: str, vectors: list[list[float]], encoding: str, tokens: int) -> wire.EmbeddingList:
    data: list[wire.Embedding] = []
    for index, vector in enumerate(vectors):
        value: str | list[float]
        if encoding == "base64":  # little-endian float32, as the openai SDK decodes it
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            value = vector
        data.append({"object": "embedding", "embedding": value, "index": index})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def now() -> int:
    return int(time.time())
