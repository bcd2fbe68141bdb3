"""The tests' tokenizer for the NPU double: byte-level (ids 0-255 are the bytes themselves) plus
the special tokens the double knows (ids 256..262, in its SPECIALS order), with a Qwen3-style
chat template that switches thinking with `enable_thinking`. Written with `tokenizers`, as a
model's repository ships it (tokenizer.json + tokenizer_config.json)."""

import json
from pathlib import Path

SPECIALS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
            "<|endoftext|>"]
NOT_SPECIAL = {"<think>", "</think>", "<tool_call>", "</tool_call>"}  # as Qwen3 marks them
THINK_CLOSE_ID = 256 + SPECIALS.index("</think>")

TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% for m in messages if m.role == 'system' %}{{ m.content }}\n"
    "{% endfor %}# Tools\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' and tools %}"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of each byte, which the ByteLevel pre-tokenizer uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def write_tokenizer(directory: Path) -> tuple[Path, Path]:
    """tokenizer.json and tokenizer_config.json in `directory`; returns their paths."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    spelling = _bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={spelling[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    for text in SPECIALS:  # one at a time: the ids follow the double's order
        token = AddedToken(text, special=text not in NOT_SPECIAL, normalized=False)
        if text in NOT_SPECIAL:
            tok.add_tokens([token])
        else:
            tok.add_special_tokens([token])
    assert tok.token_to_id("<|endoftext|>") == 256 + len(SPECIALS) - 1
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer, config = directory / "tokenizer.json", directory / "tokenizer_config.json"
    tok.save(str(tokenizer))
    config.write_text(json.dumps({"chat_template": TEMPLATE, "eos_token": "<|im_end|>",
                                  "bos_token": None}))
    return tokenizer, config


def register_with_tokenizer(store, name: str, directory: Path, **fields):
    """register_fake, with the tests' tokenizer as the model's tokenizer layers."""
    from helpers import register_fake

    from rkollama.models.names import ModelName
    from rkollama.models.store import TOKENIZER_CONFIG_TYPE, TOKENIZER_TYPE

    tokenizer, config = write_tokenizer(directory)
    spec = register_fake(store, name, **fields)
    layers = tuple((kind, store.write_blob_bytes(path.read_bytes()), path.stat().st_size)
                   for kind, path in ((TOKENIZER_TYPE, tokenizer), (TOKENIZER_CONFIG_TYPE, config)))
    digest = spec.model_path.name.split("-", 1)[1]
    return store.register(ModelName.parse(name), spec.modelfile, digest, 7, layers)
