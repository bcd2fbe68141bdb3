"""Images as the dialects send them: base64 text, plain or inside a `data:` URI. Only the
checks live here; each dialect words its own errors (they are part of its wire format)."""

import base64
import binascii


def is_base64(data: object) -> bool:
    """True when `data` is a string of valid standard base64 (padding included)."""
    if not isinstance(data, str):
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def split_data_uri(text: str) -> tuple[str, str]:
    """("data:image/png;base64", payload) of a data URI; ("", text) for anything else."""
    if text.startswith("data:") and "," in text:
        header, _, payload = text.partition(",")
        return header, payload
    return "", text
