"""Images inside a prompt: where the text puts them, and how they sit among its tokens.

Placement is Ollama's (server/prompt.go): each image of a message becomes a tag `[img-N]`, N
counting the images of the messages that are rendered, written before the message's text, or
in place of an `[img]` the text holds. The engine reads the tags back out of the rendered
prompt (`split`).

Among the prompt's tokens an image is a run of stand-in ids, one per embedding it becomes:
negative numbers that carry which image (40 bits of its sha256) and the place in it. So a
prompt stays a list of ints: two prompts with the same picture share that run in their common
prefix (the KV cache keeps it, the image is not encoded again), and every cut (a fitted
prompt, a context shift, a cache reuse) can see an image's edges and never splits one.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import replace

from rkollama.core.types import Generation, Message

_TAG = re.compile(r"\[img-(\d+)\]")
_PLACE_BITS = 20
"""An image becomes at most 2**20 embeddings."""


def tagged(messages: list[Message]) -> tuple[list[Message], list[str]]:
    """`messages` with their images as `[img-N]` tags in the text, and the images (base64) in
    the order of N (Ollama's imageTaggedMessages)."""
    images: list[str] = []
    out = []
    for message in messages:
        if not message.images:
            out.append(message)
            continue
        prefix, text = "", message.content
        for image in message.images:
            tag = f"[img-{len(images)}]"
            images.append(image)
            if "[img]" in text:
                text = text.replace("[img]", tag, 1)
            else:
                prefix += tag
        out.append(replace(message, content=prefix + text, images=[]))
    return out, images


def images_of(gen: Generation) -> list[str]:
    """Every image of a generation (base64) in order: a raw prompt's, then each message's."""
    return list(gen.images) + [image for m in gen.messages or [] for image in m.images]


def split(text: str, count: int) -> Iterator[str | int]:
    """The pieces of a rendered prompt: text, and the number N of each `[img-N]` tag below
    `count` (a tag the user typed for an image that was not sent stays text)."""
    start = 0
    for match in _TAG.finditer(text):
        number = int(match.group(1))
        if number >= count:
            continue
        if match.start() > start:
            yield text[start:match.start()]
        yield number
        start = match.end()
    if start < len(text):
        yield text[start:]


def key_of(data: bytes) -> int:
    """Which image `data` is, as the stand-in ids carry it."""
    return int.from_bytes(hashlib.sha256(data).digest()[:5], "big")


def image_tokens(key: int, count: int) -> list[int]:
    """The stand-in ids of image `key` becoming `count` embeddings."""
    if not 0 < count <= 1 << _PLACE_BITS:
        raise ValueError(f"an image of {count} embeddings")
    base = 1 + (key << _PLACE_BITS)
    return [-(base + place) for place in range(count)]


def is_image(token: int) -> bool:
    return token < 0


def image_key(token: int) -> int:
    """Which image a stand-in id belongs to."""
    return (-token - 1) >> _PLACE_BITS


def _place(token: int) -> int:
    return (-token - 1) & ((1 << _PLACE_BITS) - 1)


def image_starts(tokens: list[int]) -> Iterator[tuple[int, int]]:
    """(index, key) of the first stand-in of each image in `tokens`."""
    for index, token in enumerate(tokens):
        if is_image(token) and _place(token) == 0:
            yield index, image_key(token)


def back_to_edge(tokens: list[int], k: int) -> int:
    """`k` (a count of leading tokens kept) moved back to the start of an image it would cut."""
    if 0 <= k < len(tokens) and is_image(tokens[k]):
        return k - _place(tokens[k])
    return k


def on_to_edge(tokens: list[int], k: int) -> int:
    """`k` (the first of the tokens kept at the end) moved on past an image it would cut."""
    while 0 < k < len(tokens) and is_image(tokens[k]) and _place(tokens[k]) > 0:
        k += 1
    return k
