"""Rendering a request into prompt tokens fitted to the window, as Ollama fits them: one home
for every engine that sees tokens (llama.cpp on the CPU, the RKLLM runtime fed token ids).

The engine supplies its chat template, how it tokenizes, and the length of its longest token;
everything else (which messages are dropped, where tokens are cut, when a prompt is refused)
is decided here, so the CPU and NPU engines answer a long conversation the same way.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rkollama.core import media
from rkollama.core.prompt import ChatTemplate, TemplateRenderError
from rkollama.core.types import Generation, Message
from rkollama.errors import BadRequest

INPUT_TOO_LONG = "the input length exceeds the context length"

log = logging.getLogger("rkollama.fitting")

Tokenize = Callable[[str, bool], list[int]]
"""(text, add_bos) -> token ids; special tokens written in the text become special tokens."""
TokenizeWithImages = Callable[[str, bool, list[str]], list[int]]
"""(text, add_bos, images) -> token ids, each `[img-N]` of the text replaced by the stand-in
ids of images[N] (core.media); raises BadRequest for an image the engine cannot read."""
NO_VISION = "this model cannot read images"
NEXT_MESSAGE = "\ue000next message\ue000"
"""Where a guessed next turn's user message would go (`next_turn_start`): private-use
characters, which no template writes itself."""


@dataclass
class PromptFitter:
    """One engine's view of the window: `n_ctx` tokens, its template and tokenizer."""

    n_ctx: int
    template: ChatTemplate
    tokenize: Tokenize
    max_token_bytes: int
    """Longest token of the vocabulary in UTF-8 bytes: text of B bytes has at least
    B / max_token_bytes tokens, which refuses or drops what cannot fit without tokenizing."""
    vocab_size: int = 0
    """Token ids of a request's `context` must be below this (0: not checked)."""
    tokenize_images: TokenizeWithImages | None = None
    """How the engine reads a prompt with images; None: it cannot."""

    def min_tokens(self, text: str) -> int:
        """A lower bound of the tokens of `text`, from its length alone."""
        return -(-len(text.encode("utf-8", "surrogatepass")) // max(1, self.max_token_bytes))

    def render(self, messages: list[Message], gen: Generation) -> str:
        """`messages` through the chat template, with the request's tools and think setting;
        images are `[img-N]` tags in it (core.media)."""
        return self._render(messages, gen)[0]

    def _render(self, messages: list[Message], gen: Generation) -> tuple[str, list[str]]:
        """The rendered text and its images, in the order of their tags."""
        messages, images = media.tagged(messages)
        extra: dict[str, Any] = {}
        if gen.tools:
            extra["tools"] = gen.tools
        if gen.parse_thinking:  # Qwen3-style templates switch reasoning with this
            extra["enable_thinking"] = gen.think not in (False, None)
            if isinstance(gen.think, str):
                extra["reasoning_effort"] = gen.think
        try:
            return self.template.render(messages, add_generation_prompt=True, **extra), images
        except TemplateRenderError as exc:
            raise BadRequest(f"chat template failed: {exc}") from None

    def _tokens(self, text: str, bos: bool, images: list[str]) -> list[int]:
        if not images:
            return self.tokenize(text, bos)
        if self.tokenize_images is None:
            raise BadRequest(NO_VISION)
        return self.tokenize_images(text, bos, images)

    def whole_text(self, gen: Generation) -> str:
        """The whole prompt text (no truncation), for `_debug_render_only`."""
        if gen.prompt is not None:
            return gen.prompt
        return self.render(list(gen.messages or []), gen)

    def fits_whole(self, gen: Generation, answer: str = "") -> bool:
        """Whether a chat and `answer` could fit the window whole, by their length alone (a
        lower bound of their tokens; nothing rendered or tokenized): a conversation that cannot
        is fitted differently at every turn, and holding it for a guess would hold up to a
        request body's bytes."""
        if gen.messages is None:
            return False
        texts = [answer, json.dumps(gen.tools) if gen.tools else ""]
        for message in gen.messages:
            calls = json.dumps(message.tool_calls) if message.tool_calls else ""
            texts += [message.content, message.thinking, calls]
        return sum(self.min_tokens(text) for text in texts) <= self.n_ctx

    def next_turn_start(self, gen: Generation, answer: str) -> list[int]:
        """The tokens a chat client's next turn after `answer` most likely starts with: the
        conversation with `answer` sent back as the assistant's message, up to where the user's
        next message goes (a turn-closing tag, the user's header). [] when the template does
        not show where that is, for a prompt that is not a chat, or for a conversation that
        cannot fit the window whole (`fits_whole`)."""
        if gen.messages is None or gen.context or not self.fits_whole(gen, answer):
            return []
        messages = [*gen.messages, Message("assistant", answer), Message("user", NEXT_MESSAGE)]
        text = self.render(messages, gen)
        at = text.find(NEXT_MESSAGE)
        if at < 0 or text.find(NEXT_MESSAGE, at + 1) >= 0:
            return []
        return self.tokenize(text[:at], True)

    def context(self, gen: Generation) -> list[int]:
        """The token ids of an earlier exchange this prompt continues (/api/generate `context`)."""
        for token in gen.context:  # ids of this vocabulary only (never an image's stand-ins)
            if media.is_image(token) or (self.vocab_size and token >= self.vocab_size):
                raise BadRequest(f"invalid context: token id {token} is not in the model's vocabulary")
        return list(gen.context)

    def prompt_tokens(self, gen: Generation) -> list[int]:
        """The prompt's tokens, fitted to `n_ctx` (`fit` applied).

        With `truncate` (the default) chat history that does not fit loses its oldest messages
        first, keeping system messages and the last message and never a tool result without the
        assistant turn that called it (Ollama's chatPrompt); what still does not fit is cut at
        the token level by `fit`. Without it nothing is dropped and an input that does not fit
        is refused. Linear in the history: messages that cannot fit by their length alone are
        dropped without rendering, then a binary search finds how many of the oldest to drop
        (each probe renders and tokenizes once)."""
        return self.fit(self._unfitted(gen), gen)

    def _unfitted(self, gen: Generation) -> list[int]:
        n_ctx = self.n_ctx
        context = self.context(gen)
        if gen.prompt is not None:
            return context + self._tokens(self._bounded(gen.prompt, gen), not context, gen.images)
        messages = list(gen.messages or [])

        def render(dropped: int) -> list[int]:
            gone = set(droppable[:_tool_block_start(messages, droppable, dropped)])
            keep = [m for i, m in enumerate(messages) if i not in gone]
            text, images = self._render(keep, gen)
            return context + self._tokens(self._bounded(text, gen), not context, images)

        droppable = [i for i in range(len(messages) - 1) if messages[i].role != "system"]
        if not gen.truncate:
            droppable = []
        floor = sum(self.min_tokens(m.content) for m in messages)
        if not gen.truncate and floor > n_ctx:
            raise BadRequest(INPUT_TOO_LONG)  # known from the text's length alone
        skip = 0  # oldest droppable messages that cannot fit by their length alone
        while skip < len(droppable) and floor > n_ctx:
            floor -= self.min_tokens(messages[droppable[skip]].content)
            skip += 1
        tokens = render(skip)
        if len(tokens) <= n_ctx or skip == len(droppable):
            return tokens
        low, high = skip + 1, len(droppable)  # the answer lies in [low, high]
        best = render(high)
        if len(best) > n_ctx:
            return best  # even system + the last message do not fit: fit() cuts tokens
        while low < high:
            middle = (low + high) // 2
            candidate = render(middle)
            if len(candidate) <= n_ctx:
                best, high = candidate, middle
            else:
                low = middle + 1
        return best

    def _bounded(self, text: str, gen: Generation) -> str:
        """`text`, or with `truncate` its middle cut out when it is far longer than the window:
        only its first num_keep and last n_ctx tokens can survive `fit`, so a 30 MB message
        costs no more tokenizing than a window's worth. Without `truncate`, a text that cannot
        fit by its length alone is refused before tokenizing."""
        if not gen.truncate:
            if self.min_tokens(text) > self.n_ctx:
                raise BadRequest(INPUT_TOO_LONG)
            return text
        data = text.encode("utf-8", "surrogatepass")
        keep = max(0, gen.options.num_keep) + 16
        head, tail = keep * self.max_token_bytes, (self.n_ctx + 16) * self.max_token_bytes
        if len(data) <= 2 * (head + tail):
            return text
        return (data[:head].decode("utf-8", "ignore") + data[-tail:].decode("utf-8", "ignore"))

    def fit(self, tokens: list[int], gen: Generation) -> list[int]:
        """Tokens that exceed the window keep the first num_keep and lose what follows them, as
        Ollama's runner truncates (an image on either cut goes whole); without `truncate` that
        is a 400."""
        n_ctx = self.n_ctx
        if len(tokens) <= n_ctx:
            return tokens
        if not gen.truncate:
            raise BadRequest(INPUT_TOO_LONG)
        keep = media.back_to_edge(tokens, self.num_keep(gen, len(tokens)))
        log.warning("truncating input prompt: limit %d, prompt %d, keep %d", n_ctx, len(tokens), keep)
        return tokens[:keep] + tokens[media.on_to_edge(tokens, len(tokens) - (n_ctx - keep)):]

    def num_keep(self, gen: Generation, prompt_tokens: int) -> int:
        """Tokens at the start of the window that a truncation or a shift never removes."""
        keep = gen.options.num_keep
        if keep < 0:
            keep = prompt_tokens
        return max(0, min(keep, self.n_ctx - 1))


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two sequences share from their start (what a KV cache can keep).
    Halving on slice comparisons, which run in C: the slot choice asks this of every slot and
    prompt cache entry for each request (a token-by-token loop was ~36 µs for 1,500 tokens)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    same, differs = 0, n  # a[:same] == b[:same]; a[:differs] != b[:differs]
    while differs - same > 1:
        middle = (same + differs) // 2
        if a[same:middle] == b[same:middle]:
            same = middle
        else:
            differs = middle
    return same


def _tool_block_start(messages: list[Message], droppable: list[int], dropped: int) -> int:
    """How many of the oldest droppable messages to drop so that the first kept one is not a
    tool result whose assistant tool-call turn was dropped (Ollama's toolBlockStartIndex)."""
    while 0 < dropped < len(droppable) and messages[droppable[dropped]].role == "tool":
        dropped -= 1
        if messages[droppable[dropped]].role == "assistant" and messages[droppable[dropped]].tool_calls:
            return dropped
    return dropped
