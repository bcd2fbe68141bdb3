"""A model's own Hugging Face tokenizer (tokenizer.json + tokenizer_config.json), kept in the
store beside an .rkllm file: the NPU engine renders the chat template and tokenizes the prompt
itself, then feeds the runtime token ids (RKLLM_INPUT_TOKEN).

`tokenizers` (Rust, no torch) is imported lazily: a model without a tokenizer never needs it.
"""

import json
from pathlib import Path
from typing import Any

from rkollama.core.prompt import CHATML, ChatTemplate, chat_template_of
from rkollama.errors import LoadFailed

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


def _special(value: Any) -> str:
    """tokenizer_config's bos/eos entries: a string, or {"content": …} (AddedToken)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


class HFTokenizer:
    """Encode and decode with a model's tokenizer.json; the template comes from its config."""

    def __init__(self, tokenizer: Any, config: dict[str, Any]):
        self._tok = tokenizer
        self.config = config
        self.bos_token = _special(config.get("bos_token"))
        self.eos_token = _special(config.get("eos_token"))
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values(), default=-1) + 1
        # Byte-level and SentencePiece vocabularies spell a byte with one or more characters, so
        # the UTF-8 length of a token's spelling bounds the bytes it stands for from above.
        self.max_token_bytes = max((len(t.encode("utf-8")) for t in vocab), default=1)

    @classmethod
    def open(cls, tokenizer_path: Path, config_path: Path | None) -> "HFTokenizer":
        """Read both files; LoadFailed naming the file when one is unreadable."""
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise LoadFailed(f"the `tokenizers` package is not installed: {exc}") from None
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # the Rust side raises plain Exceptions for bad files
            raise LoadFailed(f"cannot read the model's tokenizer {tokenizer_path}: {exc}") from None
        config: dict[str, Any] = {}
        if config_path is not None:
            try:
                loaded = json.loads(Path(config_path).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise LoadFailed(f"cannot read the model's {CONFIG_FILE} {config_path}: {exc}") from None
            config = loaded if isinstance(loaded, dict) else {}
        return cls(tokenizer, config)

    def template(self, modelfile_template: str) -> ChatTemplate:
        """The Modelfile's own template when it names one, else the tokenizer's, else ChatML."""
        source = modelfile_template if modelfile_template and modelfile_template != "builtin" \
            else (chat_template_of(self.config) or CHATML)
        return ChatTemplate(source, bos_token=self.bos_token, eos_token=self.eos_token)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it are special tokens. The
        tokenizer's post-processor adds BOS unless the text already starts with it."""
        if add_bos and self.bos_token and text.startswith(self.bos_token):
            add_bos = False
        return list(self._tok.encode(text, add_special_tokens=add_bos).ids)

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=skip_special))

    def token_id(self, text: str) -> int | None:
        """The id of a single token spelled `text` (e.g. "</think>"), or None."""
        found = self._tok.token_to_id(text)
        return None if found is None else int(found)
