"""Go's strconv.Quote (the `%q` verb), for error texts and values Ollama writes with it."""

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """`text` in double quotes with Go's escapes: printable characters as they are, the usual
    backslash escapes, other ASCII controls as \\xNN, other unprintable runes as \\uNNNN or
    \\UNNNNNNNN, and lone surrogates (invalid UTF-8 in Go) as \\ufffd."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif char == " " or (char.isprintable() and not char.isspace()):
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
