"""Anthropic's Messages API (`/v1/messages`, as Ollama serves it for Claude Code and the official
`anthropic` SDK) translated to and from the same core `Request` and events as the other dialects.

Requests: `system` (string or text blocks), messages whose content is a string or blocks (`text`,
`image` with a base64 source, `tool_use`, `tool_result`, `thinking`), `max_tokens` (→ num_predict),
`temperature`, `top_p`, `top_k`, `stop_sequences`, `tools` (`input_schema`), `tool_choice`
(`auto`, `any`, `tool`, `none`), `thinking` (`enabled`/`disabled`) and `output_config.effort`.
Replies: a `message` with thinking, text and tool_use blocks, `stop_reason` and `usage`; streams
as server-sent events `message_start`, `content_block_start`/`_delta`/`_stop`, `message_delta`,
`message_stop`.
"""

import json
import secrets
from collections.abc import Sequence
from typing import Any

from rkollama.anthropic import types as wire
from rkollama.api.fields import Fields
from rkollama.core.collect import Completion
from rkollama.core.images import declared_matches, is_base64
from rkollama.core.request import THINK_LEVELS, Request, validate_tools
from rkollama.core.types import Done, DoneReason, JSONObject, Message, NamedEvent, TokenLogprob, ToolCall
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}


def new_id(prefix: str) -> str:
    """`msg_…`, `toolu_…`, `req_…`: 24 hex digits, as Ollama makes them."""
    return f"{prefix}_{secrets.token_hex(12)}"


def error_body(message: str, status: int) -> wire.ErrorBody:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": message}, "request_id": new_id("req")}


def from_messages_request(body: JSONObject) -> Request:
    f = Fields(body, "MessagesRequest")
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    max_tokens = f.get("max_tokens", int)
    if max_tokens is None:
        raise BadRequest("max_tokens is required")
    if max_tokens < 1:  # 0 or less would be no limit at all
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    options: dict[str, Any] = {"num_predict": max_tokens}
    for name, option in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if f.has(name):
            options[option] = f.get(name, (int, float))
    stops = f.get("stop_sequences", list, [])
    if not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop_sequences must be an array of strings")
    if stops:
        options["stop"] = stops
    items = f.get("messages", list)
    if not items:
        raise BadRequest("messages is required")
    messages = _system(f.raw("system")) + _messages(items)
    tools = validate_tools([_tool(t) for t in f.get("tools", list, [])])
    tools, choice = _tool_choice(f.get("tool_choice", dict), tools)
    req = Request(model=model, stream=f.get("stream", bool, False), options=options,
                  keep_alive=keep_alive_seconds(f.raw("keep_alive")), messages=messages,
                  tools=tools, think=_think(f), tool_choice=choice)
    return req


def _system(value: object) -> list[Message]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [Message("system", value)]
    if isinstance(value, list):
        text = "".join(b.get("text", "") for b in value
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        return [Message("system", text)] if text else []
    raise BadRequest("system must be a string or an array of text blocks")


def _messages(items: list[Any]) -> list[Message]:
    names: dict[str, str] = {}  # tool_use id -> tool name, to name the results that answer them
    out: list[Message] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"messages[{index}] must be an object")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages[{index}].role must be \"user\" or \"assistant\"")
        content = item.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise BadRequest(f"messages[{index}].content must be a string or an array of blocks")
        turn = _Turn(role)
        for block in blocks:
            turn.add(block, names)
        out += turn.messages()
    return out


class _Turn:
    """One Anthropic message's blocks, gathered into core messages: the text, images, tool
    calls and thinking of the turn, and the tool results it carries (each its own message)."""

    def __init__(self, role: str):
        self.role = role
        self.text: list[str] = []
        self.images: list[str] = []
        self.calls: list[JSONObject] = []
        self.thinking = ""
        self.results: list[Message] = []

    def add(self, block: object, names: dict[str, str]) -> None:
        if not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise BadRequest("a text block needs a string \"text\"")
            self.text.append(block["text"])
        elif kind == "image":
            self.images.append(_image(block.get("source")))
        elif kind == "tool_use":
            self.calls.append(_tool_use_call(block, names))
        elif kind == "tool_result":
            answered = block.get("tool_use_id")
            name = names.get(answered, "") if isinstance(answered, str) else ""
            self.results.append(Message("tool", _result_text(block.get("content")), tool_name=name))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            self.thinking = block["thinking"]
        # other block kinds (server tools, documents) carry nothing a local model can use

    def messages(self) -> list[Message]:
        """A user's tool results come before its text (they answer the previous turn)."""
        own = [Message(self.role, "".join(self.text), images=self.images, tool_calls=self.calls,
                       thinking=self.thinking)] \
            if self.text or self.images or self.calls or self.thinking else []
        return self.results + own if self.role == "user" else own + self.results


def _tool_use_call(block: JSONObject, names: dict[str, str]) -> JSONObject:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest("tool_use block missing required 'id' field")
    if not isinstance(name, str) or not name:
        raise BadRequest("tool_use block missing required 'name' field")
    arguments = block.get("input") or {}
    if not isinstance(arguments, dict):
        raise BadRequest("tool_use input must be an object")
    names[call_id] = name
    return {"type": "function", "id": call_id, "function": {"name": name, "arguments": arguments}}


def _result_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    raise BadRequest("tool_result content must be a string or an array of blocks")


def _image(source: Any) -> str:
    if not isinstance(source, dict) or source.get("type") != "base64":
        kind = source.get("type") if isinstance(source, dict) else source
        raise BadRequest(f"invalid image source type: {kind}. Only base64 images are supported.")
    data = source.get("data")
    if not data or not isinstance(data, str) or not is_base64(data):
        raise BadRequest("invalid base64 image data")
    media_type = source.get("media_type")
    if isinstance(media_type, str) and not declared_matches(media_type, data):
        raise BadRequest(f"invalid image: the data is not of its media_type {media_type}")
    return data


def _tool(tool: object) -> JSONObject:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise BadRequest("each tool needs a name")
    schema = tool.get("input_schema") or {"type": "object"}
    if not isinstance(schema, dict):
        raise BadRequest(f"invalid input_schema for tool \"{tool['name']}\"")
    return {"type": "function", "function": {"name": tool["name"],
                                             "description": tool.get("description", ""),
                                             "parameters": schema}}


def _tool_choice(choice: JSONObject | None, tools: list[JSONObject]) -> tuple[list[JSONObject], str | None]:
    kind = (choice or {}).get("type", "auto")
    if kind == "auto":
        return tools, None
    if kind == "none":
        return [], None
    if kind == "any":
        return tools, "required"
    if kind == "tool":
        name = (choice or {}).get("name")
        if name not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"tool_choice names '{name}', which is not in tools")
        return tools, name
    raise BadRequest(f"invalid tool_choice type: {kind!r}")


def _think(f: Fields) -> bool | str | None:
    thinking = f.get("thinking", dict, {})
    if thinking.get("type") == "enabled":
        return True
    if thinking.get("type") == "disabled":
        return False
    effort = str(f.get("output_config", dict, {}).get("effort", "")).strip().lower()
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in THINK_LEVELS else None


# -- replies ---------------------------------------------------------------------------------------
def stop_reason(done: Done, has_calls: bool) -> str:
    """Anthropic's stop_reason: a tool call, a matched stop sequence (Ollama's own mapping cannot
    tell one from the end of a turn; Anthropic's API names it), the token limit, else end_turn."""
    if has_calls:
        return "tool_use"
    if done.stop_sequence:
        return "stop_sequence"
    return {DoneReason.STOP: "end_turn", DoneReason.LENGTH: "max_tokens"}.get(done.reason, "end_turn")


def _stop_sequence(done: Done, has_calls: bool) -> str | None:
    return done.stop_sequence if done.stop_sequence and not has_calls else None


def tool_use(call: ToolCall) -> wire.ToolUseBlock:
    return {"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name,
            "input": call.arguments}


def to_message(req: Request, completion: Completion, mid: str) -> wire.MessageReply:
    content: list[wire.ContentBlock] = []
    if completion.thinking:
        content.append({"type": "thinking", "thinking": completion.thinking, "signature": ""})
    if completion.content:
        content.append({"type": "text", "text": completion.content})
    content += [tool_use(c) for c in completion.tool_calls]
    done = completion.done
    return {"id": mid, "type": "message", "role": "assistant", "model": req.model,
            "content": content, "stop_reason": stop_reason(done, bool(completion.tool_calls)),
            "stop_sequence": _stop_sequence(done, bool(completion.tool_calls)),
            "usage": {"input_tokens": done.prompt_tokens, "output_tokens": done.eval_tokens}}


class StreamWriter:
    """Core events → Anthropic stream events (name, data). Blocks open and close in order:
    thinking, text, then one block per tool call."""

    def __init__(self, req: Request, mid: str):
        self.req, self.mid = req, mid
        self.index = 0
        self.open: str | None = None  # "thinking" or "text"
        self.calls = 0

    def start(self) -> list[NamedEvent]:
        shell: wire.MessageReply = {
            "id": self.mid, "type": "message", "role": "assistant", "model": self.req.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": shell})]

    def _close(self) -> list[NamedEvent]:
        if self.open is None:
            return []
        self.open = None
        self.index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index - 1})]

    def _ensure(self, kind: str) -> list[NamedEvent]:
        if self.open == kind:
            return []
        events = self._close()
        self.open = kind
        block: wire.ContentBlock = {"type": "thinking", "thinking": "", "signature": ""} \
            if kind == "thinking" else {"type": "text", "text": ""}
        events.append(("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block}))
        return events

    def token(self, text: str, thinking: bool, scored: Sequence[TokenLogprob] = ()) -> list[NamedEvent]:
        # Anthropic's Messages API has no log-probabilities; `_scored` is the writers' shared signature.
        if not text:
            return []
        kind = "thinking" if thinking else "text"
        delta = {"type": "thinking_delta", "thinking": text} if thinking \
            else {"type": "text_delta", "text": text}
        return self._ensure(kind) + [("content_block_delta", {"type": "content_block_delta",
                                                              "index": self.index, "delta": delta})]

    def call(self, call: ToolCall) -> list[NamedEvent]:
        events = self._close()
        block = tool_use(call)
        block["input"] = {}  # the arguments follow as an input_json_delta
        events += [("content_block_start", {"type": "content_block_start", "index": self.index,
                                            "content_block": block}),
                   ("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                            "delta": {"type": "input_json_delta",
                                                      "partial_json": json.dumps(call.arguments)}}),
                   ("content_block_stop", {"type": "content_block_stop", "index": self.index})]
        self.index += 1
        self.calls += 1
        return events

    def done(self, done: Done) -> list[NamedEvent]:
        return self._close() + [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason(done, self.calls > 0),
                                         "stop_sequence": _stop_sequence(done, self.calls > 0)},
                               "usage": {"input_tokens": done.prompt_tokens,
                                         "output_tokens": done.eval_tokens}}),
            ("message_stop", {"type": "message_stop"})]


def count_tokens(body: JSONObject) -> wire.TokenCount:
    """Ollama's estimate for `/v1/messages/count_tokens`: characters / 4, at least 1."""
    f = Fields(body, "CountTokensRequest")
    total = len(json.dumps(f.raw("system", ""))) if f.has("system") else 0
    for message in f.get("messages", list, []):
        if isinstance(message, dict):
            total += len(str(message.get("role", ""))) + len(json.dumps(message.get("content", "")))
    for tool in f.get("tools", list, []):
        if isinstance(tool, dict):
            total += len(json.dumps(tool))
    return {"input_tokens": max(1, total // 4) if f.has("messages") else total // 4}
