"""The conversation the RKLLM runtime holds in its KV cache, and what to send for each request.

With the model's built-in template, a request that extends the conversation already in the KV
cache sends only its new message (keep_history=1), so a second turn prefills only the new
tokens; anything else clears the cache first. The system prompt and tool definitions live in the
runtime's template, set through rkllm_set_chat_template / rkllm_set_function_tools only when they
change (each change clears the cache).
"""

import json
from typing import Any

from rkollama.backends.rkllm import abi
from rkollama.backends.rkllm.runtime import Runtime
from rkollama.core.prompt import ChatTemplate, TemplateRenderError
from rkollama.core.types import Generation, Message
from rkollama.errors import BadRequest
from rkollama.models.rkllm_section import RKLLMSection

TurnKey = tuple[str, str]


class Conversation:
    """The KV-cache state of one loaded model (one handle). Not thread-safe: the engine thread
    owns it, as it owns every run."""

    def __init__(self, runtime: Runtime, handle: abi.LLMHandle, template: ChatTemplate | None,
                 rkllm: RKLLMSection):
        self._rt, self._handle = runtime, handle
        self.template = template
        """A Modelfile Jinja template (prompts arrive rendered), or None for the runtime's own."""
        self._rkllm = rkllm
        self._history: list[TurnKey] = []  # turns the runtime holds in its KV cache
        self._cache_used = False  # a keep_history run may have left something in the KV cache
        self._tools_json: str | None = None
        self._tools_system = ""  # the system prompt set with the tools
        self._system: str | None = None  # the system prompt last set through rkllm_set_chat_template

    def prepare(self, gen: Generation) -> tuple[str, str, bool]:
        """(prompt text, role, keep_history) for this request, clearing the cache when the
        request does not extend the conversation in it."""
        if gen.prompt is not None:
            self.clear()
            return gen.prompt, "user", False
        messages = list(gen.messages or [])
        if self.template is not None:
            self.clear()
            return self._render(gen, messages), "user", False
        system = _system_text(messages)
        turns = [m for m in messages if m.role != "system"]
        if not turns:
            raise BadRequest("nothing to answer: the conversation has no user message")
        self.set_tools(system, gen.tools)
        system_in_template = not gen.tools and self._set_system(system)
        last = turns[-1]
        if self._history and _turn_keys(turns[:-1]) == self._history:
            return last.content, _role_of(last), True
        self.clear()
        self._cache_used = True  # this run keeps its turns in the cache
        text, role = _replay(turns)  # a conversation the cache never saw: earlier turns as context
        if system and not gen.tools and not system_in_template:
            text = f"{system}\n\n{text}"
        return text, role, True

    def whole_prompt(self, gen: Generation) -> tuple[str, str]:
        """The request as one self-contained prompt (for batch slots, which keep no history)."""
        if gen.prompt is not None:
            return gen.prompt, "user"
        messages = list(gen.messages or [])
        if self.template is not None:
            return self._render(gen, messages), "user"
        return _replay([m for m in messages if m.role != "system"])

    def start_batch(self, first: Generation) -> None:
        """Before a batch run: an empty cache, and the first request's system prompt and tools
        (the runtime has one template for all slots)."""
        self.clear()
        self.set_tools(_system_text(list(first.messages or [])), first.tools)

    def remember(self, gen: Generation, keep_history: bool) -> None:
        """After a complete answer: the cache now holds these turns and an answer."""
        if not keep_history or gen.messages is None:
            return
        turns = [m for m in gen.messages if m.role != "system"]
        self._history = _turn_keys(turns) + [("assistant", "")]

    def set_tools(self, system: str, tools: list[Any]) -> None:
        """Tool definitions and the system prompt that goes with them, set again whenever either
        changes (a new system prompt with the same tools must reach the runtime too)."""
        tools_json = json.dumps(tools) if tools else None
        if (tools_json, system if tools_json else "") != (self._tools_json, self._tools_system):
            # Tool definitions and the system prompt that goes with them; "tool_response" is the
            # tag the official servers use to mark tool results.
            self._rt.rkllm_set_function_tools(self._handle, system.encode(),
                                              (tools_json or "[]").encode(), b"tool_response")
            self._tools_json, self._tools_system = tools_json, system if tools_json else ""
            self.clear()

    def clear(self) -> None:
        """Empty the KV cache (keeping the runtime's system prompt) if a run may have used it."""
        if self._cache_used:
            # int rkllm_clear_kv_cache(handle, keep_system_prompt, NULL, NULL)
            self._rt.rkllm_clear_kv_cache(self._handle, 1, None, None)
            self._cache_used = False
        self._history = []

    def _render(self, gen: Generation, messages: list[Message]) -> str:
        assert self.template is not None
        try:
            return self.template.render(messages, add_generation_prompt=True,
                                        **({"tools": gen.tools} if gen.tools else {}))
        except TemplateRenderError as exc:
            raise BadRequest(f"chat template failed: {exc}") from None

    def _set_system(self, system: str) -> bool:
        """Put the system prompt into the runtime's template when the Modelfile describes the
        template's pieces (rkllm.system_template with {system}, prompt_prefix, prompt_postfix).
        Returns False when it cannot (the caller then puts it in front of the message)."""
        rk = self._rkllm
        if not system or rk.system_template is None or rk.prompt_prefix is None:
            return False
        if system != self._system:
            self._rt.rkllm_set_chat_template(
                self._handle, rk.system_template.replace("{system}", system).encode(),
                rk.prompt_prefix.encode(), rk.prompt_postfix.encode())
            self._system = system
            self.clear()
        return True


def _system_text(messages: list[Message]) -> str:
    return "\n\n".join(m.content for m in messages if m.role == "system")


def _role_of(message: Message) -> str:
    """The RKLLMInput role: "tool" for a tool result, "user" for everything else."""
    return "tool" if message.role == "tool" else "user"


def _replay(turns: list[Message]) -> tuple[str, str]:
    """(prompt, role) for the last turn with the earlier ones in front as plain context: the
    built-in template cannot be given earlier assistant turns any other way."""
    if not turns:
        return "", "user"
    earlier = "".join(f"{m.role.capitalize()}: {m.content}\n" for m in turns[:-1])
    text = turns[-1].content
    if earlier:
        text = f"Earlier in this conversation:\n{earlier}\n{text}"
    return text, _role_of(turns[-1])


def _turn_keys(turns: list[Message]) -> list[TurnKey]:
    """What identifies a conversation in the KV cache: user and tool turns by content, assistant
    turns by position only (clients send answers back post-processed: reasoning stripped, tool
    calls structured; the cache holds the runtime's own version anyway)."""
    return [(m.role, "" if m.role == "assistant" else m.content) for m in turns]
