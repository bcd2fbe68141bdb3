"""OpenAI's Responses API (`/v1/responses`, as Ollama serves it for Codex-style clients) translated
to and from the core `Request` and events.

Requests: `input` (a string, or items: messages with `input_text`/`output_text`/`input_image`
parts, `function_call`, `function_call_output`, `reasoning`), `instructions` (a system message),
`temperature` (default 1.0), `top_p`, `max_output_tokens`, `reasoning.effort`, function `tools`,
`text.format` json_schema. Replies: a `response` object whose output holds a reasoning item, then
function calls or one assistant message; streams as `response.created`, `response.in_progress`,
`response.output_item.added` … `response.completed`, each with a `sequence_number`.
"""

import json
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from rkollama.api.convert import logprob
from rkollama.api.fields import Fields
from rkollama.api.types import Logprob
from rkollama.core.collect import Completion
from rkollama.core.request import THINK_LEVELS, Request, check_top_logprobs, validate_tools
from rkollama.core.types import Done, JSONObject, Message, NamedEvent, TokenLogprob, ToolCall
from rkollama.durations import keep_alive_seconds
from rkollama.errors import BadRequest
from rkollama.openai import types as wire
from rkollama.openai.convert import at_least_one, message_content

LOGPROBS_INCLUDE = "message.output_text.logprobs"
"""The `include` entry that asks for the answer's log-probabilities (OpenAI's name)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def from_responses_request(body: JSONObject) -> tuple[Request, wire.Echo]:
    """The core request, and what the reply echoes back (instructions, tools, sampling)."""
    f = Fields(body, "ResponsesRequest")
    model = f.get("model", str, "")
    if not model:
        raise BadRequest("model is required")
    options: dict[str, Any] = {"temperature": f.get("temperature", (int, float), 1.0)}
    if f.has("top_p"):
        options["top_p"] = f.get("top_p", (int, float))
    limit = f.get("max_output_tokens", int)
    if limit is not None:
        at_least_one("max_output_tokens", limit)
    if limit is not None:
        options["num_predict"] = limit
    instructions = f.get("instructions", str, "")
    messages = [Message("system", instructions)] if instructions else []
    value = f.raw("input", "")
    if isinstance(value, str):
        if value:
            messages.append(Message("user", value))
    elif isinstance(value, list):
        messages += _items(value)
    else:
        raise BadRequest("input must be a string or an array of items")
    raw_tools = f.get("tools", list, [])
    tools = validate_tools([_tool(t) for t in raw_tools])
    reasoning = f.get("reasoning", dict, {})
    text = f.get("text", dict, {})
    fmt = (text.get("format") or {}) if isinstance(text.get("format"), dict) else {}
    req = Request(model=model, stream=f.get("stream", bool, False), options=options,
                  keep_alive=keep_alive_seconds(f.raw("keep_alive")), messages=messages,
                  tools=tools, think=_effort(reasoning.get("effort")),
                  format=fmt.get("schema") if fmt.get("type") == "json_schema" else None)
    check_top_logprobs(f.raw("top_logprobs"))
    req.top_logprobs = f.get("top_logprobs", int, 0)
    include = f.get("include", list, [])
    req.logprobs = LOGPROBS_INCLUDE in include or req.top_logprobs > 0
    echo: wire.Echo = {"instructions": instructions or None, "tools": raw_tools,
            "temperature": options["temperature"], "top_p": options.get("top_p", 1.0),
            "max_output_tokens": limit, "text": {"format": fmt or {"type": "text"}},
            "reasoning": ({"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
                          if reasoning.get("effort") or reasoning.get("summary") else None),
            "truncation": f.get("truncation", str, "disabled"), "top_logprobs": req.top_logprobs}
    return req, echo


def _items(items: list[Any]) -> list[Message]:
    out: list[Message] = []
    names: dict[str, str] = {}
    pending_thinking = ""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{index}] must be an object")
        kind = item.get("type") or ("message" if item.get("role") else "")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise BadRequest(f"input[{index}].role must be user, system, developer or assistant")
            text, images = message_content(_parts(item.get("content", "")))
            message = Message("system" if role == "developer" else role, text, images=images)
            if role == "assistant" and pending_thinking:
                message.thinking, pending_thinking = pending_thinking, ""
            out.append(message)
        elif kind == "function_call":
            call = _function_call(item, index, names)
            if out and out[-1].role == "assistant":
                out[-1].tool_calls.append(call)
            else:
                out.append(Message("assistant", tool_calls=[call], thinking=pending_thinking))
            pending_thinking = ""
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else message_content(_parts(output))[0]
            answered = item.get("call_id")
            name = names.get(answered, "") if isinstance(answered, str) else ""
            out.append(Message("tool", text, tool_name=name))
        elif kind == "reasoning":
            pending_thinking = item.get("encrypted_content") or "".join(
                s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
        elif not kind:
            raise BadRequest(f"input[{index}] missing required 'type' field")
        else:
            raise BadRequest(f'unknown input item type: "{kind}"')
    if pending_thinking:
        out.append(Message("assistant", thinking=pending_thinking))
    return out


def _function_call(item: JSONObject, index: int, names: dict[str, str]) -> JSONObject:
    """A `function_call` input item as a core tool call; its call_id is remembered to name the
    `function_call_output` that answers it."""
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except (TypeError, ValueError, RecursionError):
        raise BadRequest("failed to parse function call arguments") from None
    if not isinstance(arguments, dict) or not isinstance(item.get("name"), str):
        raise BadRequest(f"input[{index}]: a function_call needs a name and object arguments")
    call_id = item.get("call_id", "")
    if not isinstance(call_id, str):
        raise BadRequest(f"input[{index}]: call_id must be a string")
    names[call_id] = item["name"]
    return {"type": "function", "id": call_id, "function": {"name": item["name"], "arguments": arguments}}


def _parts(content: object) -> object:
    """Responses content parts as chat-completions parts, for the shared content reader."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("content must be a string or an array")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            if part.get("image_url"):
                parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif kind == "input_file":
            raise BadRequest("file inputs are not currently supported")
        else:
            raise BadRequest(f"unknown content type: {kind}")
    return parts


def _tool(tool: object) -> JSONObject:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise BadRequest("only function tools are supported")
    return {"type": "function", "function": {"name": tool.get("name"),
                                             "description": tool.get("description") or "",
                                             "parameters": tool.get("parameters") or {"type": "object"}}}


def _effort(effort: object) -> bool | str | None:
    if not effort:
        return None
    if effort == "none":
        return False
    if effort in THINK_LEVELS:
        return effort
    raise BadRequest(f'invalid reasoning value: "{effort}" (must be "high", "medium", "low", '
                     f'"max", or "none")')


# -- replies ---------------------------------------------------------------------------------------
def response_object(rid: str, model: str, echo: wire.Echo, status: str, output: list[wire.OutputItem],
                    usage: wire.ResponseUsage | None) -> wire.Response:
    return {"id": rid, "object": "response", "created_at": int(time.time()),
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status, "incomplete_details": None, "model": model,
            "previous_response_id": None, "instructions": echo["instructions"], "output": output,
            "error": None, "tools": echo["tools"], "tool_choice": "auto",
            "truncation": echo["truncation"], "parallel_tool_calls": True, "text": echo["text"],
            "top_p": echo["top_p"], "presence_penalty": 0, "frequency_penalty": 0,
            "top_logprobs": echo["top_logprobs"], "temperature": echo["temperature"],
            "reasoning": echo["reasoning"],
            "usage": usage, "max_output_tokens": echo["max_output_tokens"], "max_tool_calls": None,
            "store": False, "background": False, "service_tier": "default", "metadata": {},
            "safety_identifier": None, "prompt_cache_key": None}


def usage(done: Done) -> wire.ResponseUsage:
    return {"input_tokens": done.prompt_tokens, "output_tokens": done.eval_tokens,
            "total_tokens": done.prompt_tokens + done.eval_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _reasoning_item(item_id: str, thinking: str) -> wire.ReasoningItem:
    return {"id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": thinking}], "encrypted_content": thinking}


def _call_item(item_id: str, call: ToolCall, status: str = "completed") -> wire.FunctionCallItem:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id,
            "name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}


def _message_item(item_id: str, text: str, status: str = "completed",
                  scored: Sequence[TokenLogprob] = ()) -> wire.MessageItem:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": _logprobs(scored)}]}


def _logprobs(scored: Sequence[TokenLogprob]) -> list[Logprob]:
    """OpenAI's output_text log-probabilities: token, logprob, bytes and top_logprobs."""
    return [logprob(lp, always_top=True) for lp in scored]


def to_response(req: Request, echo: wire.Echo, completion: Completion, rid: str) -> wire.Response:
    output: list[wire.OutputItem] = []
    if completion.thinking:
        output.append(_reasoning_item(f"rs_{rid}", completion.thinking))
    if completion.tool_calls:
        output += [_call_item(f"fc_{rid}_{i}", c) for i, c in enumerate(completion.tool_calls)]
    else:
        output.append(_message_item(new_id("msg"), completion.content, scored=completion.answer_logprobs))
    return response_object(rid, req.model, echo, "completed", output, usage(completion.done))


class StreamWriter:
    """Core events → Responses stream events, numbered in order."""

    def __init__(self, req: Request, echo: wire.Echo, rid: str):
        self.req, self.echo, self.rid = req, echo, rid
        self.sequence = 0
        self.index = 0  # output_index of the item being written
        self.reasoning_id = ""
        self.thinking = ""
        self.reasoning_done = False
        self.message_id = new_id("msg")
        self.text = ""
        self.scored: list[TokenLogprob] = []  # log-probabilities of the answer's tokens, when asked for
        self.text_started = False
        self.calls: list[wire.FunctionCallItem] = []

    def _event(self, kind: str, **data: object) -> NamedEvent:
        event: JSONObject = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return kind, event

    def start(self) -> list[NamedEvent]:
        shell = response_object(self.rid, self.req.model, self.echo, "in_progress", [], None)
        return [self._event("response.created", response=shell),
                self._event("response.in_progress", response=shell)]

    def _finish_reasoning(self) -> list[NamedEvent]:
        if not self.reasoning_id or self.reasoning_done:
            return []
        self.reasoning_done = True
        events = [self._event("response.reasoning_summary_text.done", item_id=self.reasoning_id,
                              output_index=self.index, summary_index=0, text=self.thinking),
                  self._event("response.output_item.done", output_index=self.index,
                              item=_reasoning_item(self.reasoning_id, self.thinking))]
        self.index += 1
        return events

    def token(self, text: str, thinking: bool, scored: Sequence[TokenLogprob] = ()) -> list[NamedEvent]:
        if not text:
            return []
        if thinking:
            events = []
            if not self.reasoning_id:
                self.reasoning_id = f"rs_{random.randrange(999999)}"
                events.append(self._event("response.output_item.added", output_index=self.index,
                                          item={"id": self.reasoning_id, "type": "reasoning", "summary": []}))
            self.thinking += text
            events.append(self._event("response.reasoning_summary_text.delta", item_id=self.reasoning_id,
                                      output_index=self.index, summary_index=0, delta=text))
            return events
        if self.calls:  # text after a tool call is not part of the answer (as Ollama does)
            return []
        events = self._finish_reasoning()
        if not self.text_started:
            self.text_started = True
            events += [self._event("response.output_item.added", output_index=self.index,
                                   item=dict(_message_item(self.message_id, "", "in_progress"), content=[])),
                       self._event("response.content_part.added", item_id=self.message_id,
                                   output_index=self.index, content_index=0,
                                   part={"type": "output_text", "text": "", "annotations": [],
                                         "logprobs": []})]
        self.text += text
        self.scored += scored
        events.append(self._event("response.output_text.delta", item_id=self.message_id,
                                  output_index=self.index, content_index=0, delta=text,
                                  logprobs=_logprobs(scored)))
        return events

    def call(self, call: ToolCall) -> list[NamedEvent]:
        events = self._finish_reasoning()
        item_id = f"fc_{random.randrange(999999)}_{len(self.calls)}"
        done = _call_item(item_id, call)
        self.calls.append(done)
        index = self.index + len(self.calls) - 1
        events += [self._event("response.output_item.added", output_index=index,
                               item=dict(done, status="in_progress", arguments="")),
                   self._event("response.function_call_arguments.delta", item_id=item_id,
                               output_index=index, delta=done["arguments"]),
                   self._event("response.function_call_arguments.done", item_id=item_id,
                               output_index=index, arguments=done["arguments"]),
                   self._event("response.output_item.done", output_index=index, item=done)]
        return events

    def done(self, done: Done) -> list[NamedEvent]:
        events = self._finish_reasoning()
        output: list[wire.OutputItem] = []
        if self.reasoning_id:
            output.append(_reasoning_item(self.reasoning_id, self.thinking))
        if self.calls:
            output += self.calls
        elif self.text_started:
            message = _message_item(self.message_id, self.text, scored=self.scored)
            events += [self._event("response.output_text.done", item_id=self.message_id,
                                   output_index=self.index, content_index=0, text=self.text,
                                   logprobs=message["content"][0]["logprobs"]),
                       self._event("response.content_part.done", item_id=self.message_id,
                                   output_index=self.index, content_index=0,
                                   part=message["content"][0]),
                       self._event("response.output_item.done", output_index=self.index, item=message)]
            output.append(message)
        final = response_object(self.rid, self.req.model, self.echo, "completed", output, usage(done))
        events.append(self._event("response.completed", response=final))
        return events
