"""Rendering chat messages with a Hugging Face-style Jinja2 chat template (GGUF or Modelfile)."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NoReturn

from rkollama.core.types import JSONObject, Message

# Used when a GGUF carries no chat template and the Modelfile gives none: ChatML.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


MAX_RANGE_ITEMS = 1_000_000
"""Items all of one render's range() calls may produce together."""


class ChatTemplate:
    """A compiled chat template. `render()` returns the prompt text for the engine to tokenize."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                           extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token
        self._template = env.from_string(source)

    def render(self, messages: Iterable[Message], add_generation_prompt: bool = True,
               **extra: Any) -> str:
        from jinja2 import TemplateError

        left = [MAX_RANGE_ITEMS]

        def bounded_range(*args: int) -> range:
            """range() with one budget for the whole render: nested loops cannot multiply into
            hours of work (the sandbox bounds each range, not their product)."""
            items = range(*args)
            left[0] -= len(items)
            if left[0] < 0:
                raise TemplateError(f"the template loops more than {MAX_RANGE_ITEMS} times")
            return items

        try:
            return self._template.render(
                messages=[_as_dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, **extra, range=bounded_range)
        except TemplateError as exc:
            raise TemplateRenderError(str(exc)) from exc


def chat_template_of(config: JSONObject) -> str:
    """The template of a tokenizer_config.json: a string, or the `default` of a named list."""
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": …}, …]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else ""


class TemplateRenderError(Exception):
    pass


def _raise(message: str) -> NoReturn:
    from jinja2 import TemplateError

    raise TemplateError(message)


def _as_dict(message: Message) -> JSONObject:
    data: dict[str, object] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        data["tool_calls"] = message.tool_calls
    if message.tool_name:
        data["name"] = message.tool_name
    return data
